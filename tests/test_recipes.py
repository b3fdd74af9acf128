"""Every packaged recipe runs (2 steps, shrunk model) on the data it names, read from the local test Hub
server's stand-ins of the public datasets (the ``recipe_hub`` fixture), and `run` chains the stages and
skips done work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlm_pretrain.config import load_config, recipe_names

PRETRAIN_RECIPES = ["tiny", "tiny-bert", "cpu-1h", "cpu-1h-tapt", "cpu-1h-bert", "bert-base-gpu", "bert-base-multigpu"]
FINETUNE_RECIPES = ["sst2", "mrpc"]
CONTINUE_RECIPES = ["continue"]  # a public encoder from the Hub: test_continue_recipe_runs_every_stage...
SHRINK = ["model.num_hidden_layers=1", "model.hidden_size=32", "model.num_attention_heads=1",
          "model.intermediate_size=64", "tokenizer.vocab_size=800", "data.num_proc=1", "data.dupe_factor=1", "data.max_validation_examples=32",
          "pretrain.max_steps=2", "pretrain.time_budget_minutes=null", "pretrain.eval_steps=2", "pretrain.save_steps=2",
          "pretrain.dataloader_num_workers=0", "pretrain.batch_size=8", "pretrain.gradient_accumulation_steps=1",
          "tracking.report_to=none", "tracking.plots=false"]


def test_every_recipe_is_covered_here():
    assert set(recipe_names()) == set(PRETRAIN_RECIPES + FINETUNE_RECIPES + CONTINUE_RECIPES + ["bert-base-gpu-phase2"])


def _pretrain_dry_run(name: str, out: Path, *extra: str) -> Path:
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.tokenizer import train_tokenizer

    cfg = load_config(name, [f"output_dir={out}", *SHRINK, *extra])
    if cfg.pretrain.mixed_precision == "fp16":
        cfg = cfg.replace(**{"pretrain.mixed_precision": "no"})  # fp16 needs a GPU
    train_tokenizer(cfg)
    prepare_pretraining_data(cfg)
    final = pretrain(cfg)
    assert (final / "model.safetensors").is_file()
    return final


@pytest.mark.slow
@pytest.mark.parametrize("name", PRETRAIN_RECIPES)
def test_pretraining_recipe_dry_run(name, tmp_path, recipe_hub):
    cfg = load_config(name)
    final = _pretrain_dry_run(name, tmp_path / name)
    if cfg.corpus.hub_dataset:  # read from the (test) Hub, as a user's machine reads it
        assert recipe_hub.count("GET", f"/datasets/{cfg.corpus.hub_dataset}/resolve/") >= 1
    from mlm_pretrain.metrics_log import read_metrics

    probed = [r for r in read_metrics(tmp_path / name / "pretrain" / "metrics.jsonl") if "probe/accuracy" in r]
    assert probed, f"{name}: the downstream probe did not run on the recipe's task ({cfg.finetune.task_name})"
    if cfg.corpus.include_task_text:  # the corpus' documents, then one per training row of the task
        from mlm_pretrain.corpus import load_documents
        from mlm_pretrain.finetune_data import training_rows

        shrunk = load_config(name, [f"output_dir={tmp_path / name}", *SHRINK])
        stamp = json.loads((tmp_path / name / "tokenizer" / "mlm_pretrain_tokenizer.json").read_text())
        assert stamp["documents"] == len(load_documents(shrunk.corpus)) + len(training_rows(shrunk)) > 1000
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(final))
    assert config.max_position_embeddings == cfg.model.max_position_embeddings  # the recipe's, not the default
    assert config.num_hidden_layers == 1
    if cfg.pretrain.compile == "auto":  # cpu-1h: no dropout, so compiled wherever a C++ compiler is
        from mlm_pretrain.hardware import compile_toolchain

        metrics = json.loads((final / "metrics.json").read_text())
        assert metrics["compiled"] is (compile_toolchain("auto", "cpu")[1] is None), metrics["compile_reason"]


@pytest.mark.slow
def test_continue_recipe_runs_every_stage_from_the_public_encoder(tmp_path, recipe_hub, caplog):
    """all-MiniLM-L6-v2 from (the test) Hub, as sentence-transformers saves it: its own tokenizer (whose
    tokenizer.json truncates and pads at 128: read as saved, building examples failed), a new MLM head, a
    continuing rate (no warning), and the report's row for the public encoder fine-tuned as it is."""
    import logging

    from hub_data import MINILM
    from mlm_pretrain.model import SCRATCH_RATE
    from mlm_pretrain.pipeline import run_pipeline

    run = tmp_path / "run"  # beside the Hub cache (tmp_path/hf-home), not around it
    cfg = load_config("continue", [f"output_dir={run}", "data.num_proc=1", "data.dupe_factor=1",
                                   "pretrain.max_steps=2", "pretrain.time_budget_minutes=null", "pretrain.eval_steps=2",
                                   "pretrain.save_steps=2", "pretrain.batch_size=8", "tracking.report_to=none",
                                   "tracking.plots=false", "finetune.max_steps=2", "finetune.seeds=[1]"])
    assert cfg.model.init_from == MINILM and cfg.pretrain.learning_rate < SCRATCH_RATE
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.model"):
        run_pipeline(cfg)
    assert recipe_hub.count("GET", f"/{MINILM}/resolve/") >= 1
    assert "initialised" in caplog.text and "a rate for random weights" not in caplog.text
    final = json.loads((run / "pretrain" / "final" / "config.json").read_text())
    assert final["architectures"] == ["BertForPreTraining"] and final["hidden_size"] == 32
    assert not (run / "tokenizer" / "tokenizer.json").exists()  # the checkpoint's tokenizer, none trained
    assert json.loads((run / "tokenizer" / "report.json").read_text())["vocab_size"] == 800
    report = (run / "report.md").read_text()
    assert "| the starting encoder (model.init_from), fine-tuned as it is |" in report


@pytest.mark.slow
def test_phase2_continues_from_phase1_weights(tmp_path, recipe_hub):
    from safetensors.torch import load_file

    from mlm_pretrain.model import build_model
    from mlm_pretrain.tokenizer import load_tokenizer

    phase1 = _pretrain_dry_run("bert-base-gpu", tmp_path / "p1")
    over = [f"tokenizer.pretrained={tmp_path / 'p1' / 'tokenizer'}", f"model.init_from={phase1}"]
    cfg = load_config("bert-base-gpu-phase2", [f"output_dir={tmp_path / 'p2'}", *SHRINK, *over])
    assert (cfg.data.max_seq_length, cfg.model.init_from) == (512, str(phase1))
    model = build_model(cfg, load_tokenizer(cfg.tokenizer.pretrained))
    saved = load_file(str(phase1 / "model.safetensors"))
    state = model.state_dict()
    for k, v in saved.items():
        assert torch.equal(state[k], v), k
    final = _pretrain_dry_run("bert-base-gpu-phase2", tmp_path / "p2", *over)
    assert json.loads((final / "config.json").read_text())["max_position_embeddings"] == 512


def test_init_from_a_folder_without_weights_is_a_clear_error(tmp_path):
    from mlm_pretrain.model import ModelError, build_model

    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"model.init_from={tmp_path}"])
    with pytest.raises(ModelError, match="not a save_pretrained directory"):
        build_model(cfg, None)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return _pretrain_dry_run("tiny", tmp_path_factory.mktemp("enc"))


@pytest.mark.slow
@pytest.mark.parametrize("name", FINETUNE_RECIPES)
def test_finetune_recipe_dry_run(name, tmp_path, tiny_encoder, recipe_hub):
    from mlm_pretrain.finetune import finetune

    cfg = load_config(name, [f"output_dir={tmp_path}", f"finetune.model={tiny_encoder}", "finetune.max_steps=2",
                             "finetune.max_train_examples=64", "finetune.max_eval_examples=32", "finetune.seeds=[1]",
                             "finetune.eval_steps=2", "tracking.report_to=none"])
    final = finetune(cfg)
    config = json.loads((final / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(cfg.finetune.label_names)


@pytest.mark.slow
def test_run_chains_every_stage_then_skips_done_work(tmp_path, capsys):
    from mlm_pretrain.pipeline import run_pipeline

    over = [f"output_dir={tmp_path}", *SHRINK, "finetune.max_steps=3", "finetune.batch_size=16"]
    cfg = load_config("tiny", over)
    run_dir = run_pipeline(cfg)
    out = capsys.readouterr().out
    for stage in ("tokenizer", "prepare", "pretrain", "finetune"):
        assert f"| {stage}" in out
    report = (run_dir / "report.md").read_text()
    assert "| pretrain" in report and str(tmp_path / "pretrain" / "final") in report
    # what pretraining bought: the same fine-tuning from random weights and TF-IDF, on the same rows
    assert "| random init" in out and "| TF-IDF" in out
    assert "### Does pretraining pay? (sentiment, validation accuracy %, median ± std over 3 seed(s))" in report
    pretrained = json.loads((tmp_path / "finetune" / "sentiment" / "summary.json").read_text())
    random_init = json.loads((tmp_path / "finetune" / "sentiment-random-init" / "summary.json").read_text())
    assert pretrained["seeds"] == random_init["seeds"] == [1, 2, 3]
    assert pretrained["examples"] == random_init["examples"]
    assert random_init["init"] == "random"
    row = f"| fine-tuned from the pretrained encoder | {100 * pretrained['validation']['accuracy']['median']:.1f} ± "
    assert row in report and "| TF-IDF (1-2 grams) + logistic regression |" in report
    assert "Pretraining: validation MLM loss" in report and "unigram level" in report
    final_weights = (tmp_path / "pretrain" / "final" / "model.safetensors")
    before = final_weights.stat().st_mtime_ns
    run_pipeline(cfg)  # everything exists for the same inputs: nothing is retrained
    assert final_weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_readme_first_command_runs_the_tiny_pipeline(tmp_path):
    """`mlm-pretrain run` (the README's first command) as a process, shrunk to seconds."""
    exe = os.path.join(os.path.dirname(sys.executable), "mlm-pretrain")
    r = subprocess.run([exe, "run", f"output_dir={tmp_path}", *SHRINK, "finetune.max_steps=2"], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "finetune" / "sentiment" / "final" / "config.json").is_file()
    assert (tmp_path / "report.md").is_file()


@pytest.mark.parametrize("name, arch, layers, hidden, heads, ffn, vocab", [
    ("tiny", "modernbert", 2, 128, 2, 384, 4000),
    ("cpu-1h", "modernbert", 4, 128, 2, 384, 8000),
    ("cpu-1h-tapt", "modernbert", 4, 128, 2, 384, 8000),
    ("cpu-1h-bert", "bert", 4, 256, 4, 1024, 16000),  # BERT mini, not cpu-1h's narrow ModernBERT width
])
def test_cpu_recipes_build_the_documented_models(name, arch, layers, hidden, heads, ffn, vocab):
    """The model each CPU recipe's header and the studies' rows describe (a base recipe's later change
    must not silently resize a derived one)."""
    from mlm_pretrain.model import build_config

    cfg = load_config(name)
    config = build_config(cfg.model, cfg.tokenizer.vocab_size)
    got = (cfg.model.architecture, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
           config.intermediate_size, cfg.tokenizer.vocab_size)
    assert got == (arch, layers, hidden, heads, ffn, vocab)
