"""``pretrain.compile``: the encoder compiled for training (torch.compile, inductor), evaluation eager, the
same numbers as eager training, plain saved weights, and the choice ``auto`` makes and why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlm_pretrain.config import ConfigError, load_config
from mlm_pretrain.errors import UserError
from mlm_pretrain.hardware import _cxx_compiler, compile_encoders, compile_toolchain
from mlm_pretrain.metrics_log import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
        "pretrain.batch_size=8", "pretrain.max_steps=6", "pretrain.eval_steps=3", "pretrain.save_steps=0",
        "pretrain.logging_steps=1", "pretrain.warmup_steps=1", "pretrain.learning_rate=1e-3",
        "tracking.report_to=[]", "tracking.plots=false", "pretrain.probe_examples=0", "pretrain.mixed_precision=no",
        "model.architecture=modernbert", "data.objective=mlm",
        "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0"]

needs_compiler = pytest.mark.skipif(compile_toolchain("auto", "cpu")[1] is not None,
                                    reason="torch.compile on a CPU needs a C++ compiler")


def _compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None  # what nn.Module.compile() sets


def _model(tiny_tokenizer_dir, *overrides):
    """(config, model) of the tiny preset on the test tokenizer."""
    from mlm_pretrain.model import build_model
    from mlm_pretrain.tokenizer import load_tokenizer

    cfg = load_config("tiny-bert", ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64",
                                    *overrides])
    return cfg, build_model(cfg, load_tokenizer(tiny_tokenizer_dir))


@pytest.fixture
def config(tmp_path, tiny_tokenizer_dir):
    def make(*overrides: str, name: str = "run"):
        return load_config("tiny-bert", [f"output_dir={tmp_path / name}", f"tokenizer.pretrained={tiny_tokenizer_dir}",
                                         f"data.cache_dir={tmp_path / 'prepared'}", *FAST, *overrides])
    return make


def test_the_setting_is_true_false_or_auto():
    assert load_config("tiny").pretrain.compile is False
    assert load_config("tiny", ["pretrain.compile=auto"]).pretrain.compile == "auto"
    assert load_config("tiny", ["pretrain.compile=true"]).pretrain.compile is True
    assert load_config("cpu-1h").pretrain.compile == "auto"
    with pytest.raises(ConfigError, match="pretrain.compile"):
        load_config("tiny", ["pretrain.compile=sometimes"])


@needs_compiler
def test_auto_keeps_a_model_with_dropout_eager_on_a_cpu_and_true_compiles_it(tiny_tokenizer_dir):
    _, model = _model(tiny_tokenizer_dir)  # BERT with its dropout of 0.1
    compiled, reason = compile_encoders([model, None], "auto", "cpu")
    assert not compiled and "dropout 0.1" in reason and not _compiled(model.bert)
    assert compile_encoders([model], False, "cpu") == (False, "pretrain.compile=false")
    compiled, reason = compile_encoders([model], True, "cpu")
    assert compiled and reason.startswith("pretrain.compile=true") and _compiled(model.bert)
    assert not _compiled(model)  # the encoder only: the sparse head and the loss stay eager


@needs_compiler
def test_auto_compiles_every_encoder_of_a_model_without_dropout(tiny_tokenizer_dir):
    from mlm_pretrain.model import build_generator

    cfg, model = _model(tiny_tokenizer_dir, "model.architecture=modernbert-electra", "data.objective=mlm")
    generator = build_generator(cfg, model)
    compiled, reason = compile_encoders([model, generator], "auto", "cpu")
    assert compiled and reason.startswith("auto: torch.compile")
    assert _compiled(model.model) and _compiled(generator.model)


def test_without_a_compiler_auto_stays_eager_and_true_fails_before_any_data_work(config, monkeypatch, tmp_path,
                                                                                 tiny_tokenizer_dir):
    from mlm_pretrain import hardware
    from mlm_pretrain.pretrain import pretrain

    monkeypatch.setattr(hardware, "_cxx_compiler", lambda: None)
    assert compile_toolchain("auto", "cpu")[0] is None
    compiled, reason = compile_encoders([_model(tiny_tokenizer_dir, *FAST[-4:])[1]], "auto", "cpu")
    assert not compiled and "C++ compiler" in reason
    with pytest.raises(UserError, match=r"pretrain.compile=true needs a C\+\+ compiler.*pretrain.compile=false"):
        pretrain(config("pretrain.compile=true"))
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "run" / "pretrain" / "checkpoints").exists()


def test_the_compiler_follows_cxx(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert _cxx_compiler() is None
    monkeypatch.delenv("CXX")
    monkeypatch.setattr("shutil.which", lambda name: "/opt/bin/clang++" if name == "clang++" else None)
    assert _cxx_compiler() == "/opt/bin/clang++"


@pytest.mark.slow
@needs_compiler
def test_compiled_training_gives_eager_numbers_and_plain_weights(config, tmp_path):
    from safetensors.torch import load_file

    from mlm_pretrain.pretrain import pretrain

    torch._dynamo.reset()
    runs = {}
    for setting in ("false", "true"):
        final = pretrain(config(f"pretrain.compile={setting}", name=setting))
        records = read_metrics(final.parent / "metrics.jsonl")
        runs[setting] = {"final": final, "loss": {r["step"]: r["train/loss"] for r in records if "train/loss" in r},
                         "eval": {r["step"]: r["eval/mlm_loss"] for r in records if "eval/mlm_loss" in r}}
    eager, compiled = runs["false"], runs["true"]
    assert sorted(compiled["loss"]) == list(range(1, 7)) and sorted(compiled["eval"]) == [3, 6]
    for step, loss in eager["loss"].items():  # the same computation, kernels fused differently (fp32)
        assert compiled["loss"][step] == pytest.approx(loss, rel=1e-4, abs=1e-4), step
    for step, loss in eager["eval"].items():
        assert compiled["eval"][step] == pytest.approx(loss, rel=1e-4, abs=1e-4), step
    metrics = json.loads((compiled["final"] / "metrics.json").read_text())
    assert metrics["compiled"] is True and "torch.compile" in metrics["compile_reason"]
    assert json.loads((eager["final"] / "metrics.json").read_text())["compiled"] is False
    we, wc = (load_file(str(r["final"] / "model.safetensors")) for r in (eager, compiled))
    assert we.keys() == wc.keys() and not any("_orig_mod" in k for k in wc)  # a plain transformers folder
    for k in we:
        torch.testing.assert_close(wc[k], we[k], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@needs_compiler
def test_evaluation_and_the_probe_run_eager(config, monkeypatch):
    """No graph is compiled while evaluating (no_grad, other batch shapes): only training compiles."""
    from torch._dynamo.utils import counters

    from mlm_pretrain import pretrain as pt

    torch._dynamo.reset()
    graphs_during_eval = []
    original = pt.evaluate

    def spy(*args, **kwargs):
        before = counters["stats"]["unique_graphs"]
        out = original(*args, **kwargs)
        graphs_during_eval.append(counters["stats"]["unique_graphs"] - before)
        return out

    graphs_during_probe = []
    original_probe = pt._Run._probe

    def probe_spy(self):
        before = counters["stats"]["unique_graphs"]
        out = original_probe(self)
        graphs_during_probe.append((counters["stats"]["unique_graphs"] - before, "probe/accuracy" in out))
        return out

    monkeypatch.setattr(pt, "evaluate", spy)
    monkeypatch.setattr(pt._Run, "_probe", probe_spy)
    pt.pretrain(config("pretrain.compile=true", "pretrain.eval_steps=1", "pretrain.max_steps=3", "pretrain.threads=1",
                       "pretrain.probe_examples=64", "pretrain.probe_eval_examples=32"))
    assert counters["stats"]["unique_graphs"] >= 1  # training compiled
    assert graphs_during_eval == [0, 0, 0]
    assert graphs_during_probe == [(0, True)] * 3
