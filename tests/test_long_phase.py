"""A longer window after pretraining (pretrain.long_phase, model.extend_positions): the position tables keep
their trained rows, rotary models get the base the window needs, and a run ends with a phase at the longer
length that resumes like any phase and exports the new window."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlm_pretrain.config import load_config
from mlm_pretrain.positions import WindowError, extend_positions, match_window, rope_theta_for, window

pytestmark = pytest.mark.usefixtures("one_thread")


def _bert(positions: int = 32):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    return BertForPreTraining(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                                         intermediate_size=64, max_position_embeddings=positions))


def _modernbert(positions: int = 32, **extra):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    return ModernBertForMaskedLM(ModernBertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=1, intermediate_size=64,
        max_position_embeddings=positions, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
        sep_token_id=2, **extra))


# ----------------------------------------------------------------------------------------------
# Extending a loaded model
# ----------------------------------------------------------------------------------------------
def test_a_learned_table_grows_by_repeating_its_trained_rows(tmp_path):
    from transformers import AutoModelForMaskedLM

    model = _bert(32)
    old = model.bert.embeddings.position_embeddings.weight.detach().clone()
    notes = extend_positions(model, 80)
    assert notes == ["extended the position table from 32 to 80 rows by tiling the trained rows"]
    new = model.bert.embeddings.position_embeddings.weight
    assert new.shape == (80, 32) and new.requires_grad
    for i in range(80):  # the hand check: row i of the new table is trained row i % 32
        assert torch.equal(new[i], old[i % 32]), i
    assert model.config.max_position_embeddings == 80 == window(model)
    assert model.bert.embeddings.position_ids.shape == (1, 80)
    out = model(torch.randint(5, 100, (2, 80)))  # runs at the new length
    assert out.prediction_logits.shape == (2, 80, 100)
    assert extend_positions(model, 64) == []  # already long enough: nothing changes
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["max_position_embeddings"] == 80
    AutoModelForMaskedLM.from_pretrained(str(tmp_path))  # loads with the new table


def test_roberta_keeps_the_rows_before_its_first_position():
    from transformers import RobertaConfig, RobertaForMaskedLM

    model = RobertaForMaskedLM(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                                             intermediate_size=64, max_position_embeddings=34, pad_token_id=1))
    assert window(model) == 32  # positions start at padding_idx + 1 = 2
    old = model.roberta.embeddings.position_embeddings.weight.detach().clone()
    extend_positions(model, 64)
    new = model.roberta.embeddings.position_embeddings.weight
    assert model.config.max_position_embeddings == 66 and new.shape[0] == 66
    assert torch.equal(new[:2], old[:2])
    assert all(torch.equal(new[2 + i], old[2 + i % 32]) for i in range(64))
    assert model(torch.randint(5, 100, (2, 64))).logits.shape == (2, 64, 100)


def test_modernbert_keeps_a_base_that_covers_the_window_and_raises_one_that_does_not(tmp_path):
    from transformers import AutoConfig

    model = _modernbert(32).eval()
    x = torch.randint(5, 100, (2, 32))
    before = model(x).logits
    theta = model.config.rope_parameters["full_attention"]["rope_theta"]
    notes = extend_positions(model, 64)
    assert notes[0] == f"rotary: max positions 32 -> 64, global rope theta {theta:g} kept (at least the 10000 that 64 tokens need)"
    assert "local attention window 128 tokens and local rope theta 10000 kept" in notes[1]
    assert model.config.max_position_embeddings == 64
    assert torch.allclose(model(x).logits, before)  # the base kept: the short sequences read as before
    assert model(torch.randint(5, 100, (2, 64))).logits.shape == (2, 64, 100)

    rope = {"full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}
    model = _modernbert(1024, rope_parameters=rope)  # ModernBERT's 1,024-token phase, extended to 8,192
    assert rope_theta_for(8192) == 160_000.0 and rope_theta_for(512) == 10_000.0
    notes = extend_positions(model, 8192)
    assert notes[0] == "rotary: max positions 1024 -> 8192, global rope theta 10000 -> 160000 (ModernBERT's schedule for 8192 tokens)"
    inv = model.model.rotary_emb.full_attention_inv_freq
    assert torch.allclose(inv, 1.0 / 160_000.0 ** (torch.arange(0, 64, 2).float() / 64))
    assert model.config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert model.config.local_attention == 128
    model.save_pretrained(tmp_path)
    saved = AutoConfig.from_pretrained(str(tmp_path))
    assert saved.max_position_embeddings == 8192 and saved.rope_parameters["full_attention"]["rope_theta"] == 160_000.0


def test_electra_generators_follow_the_discriminator():
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    from mlm_pretrain.model import share_embeddings

    config = dict(vocab_size=100, embedding_size=32, num_hidden_layers=1, intermediate_size=64, max_position_embeddings=32)
    disc = ElectraForPreTraining(ElectraConfig(hidden_size=32, num_attention_heads=1, **config))
    gen = ElectraForMaskedLM(ElectraConfig(hidden_size=16, num_attention_heads=1, **config))
    share_embeddings(gen, disc)
    extend_positions(disc, 64)
    assert match_window(gen, disc) == []  # the shared table is already extended: only the config follows
    assert gen.config.max_position_embeddings == 64
    assert gen(torch.randint(5, 100, (2, 64))).logits.shape == (2, 64, 100)
    rotary_disc, rotary_gen = _modernbert(32), _modernbert(32)
    extend_positions(rotary_disc, 64)
    match_window(rotary_gen, rotary_disc)
    assert rotary_gen.config.max_position_embeddings == 64


# ----------------------------------------------------------------------------------------------
# model.init_from at a longer data.max_seq_length
# ----------------------------------------------------------------------------------------------
def test_a_longer_window_than_the_checkpoint_is_refused_unless_extension_is_asked_for(tmp_path, tiny_tokenizer):
    from mlm_pretrain.model import build_model, check_model_settings

    src = tmp_path / "short"
    model = _bert(32)
    model.config.vocab_size = len(tiny_tokenizer)
    model.resize_token_embeddings(len(tiny_tokenizer))
    model.save_pretrained(src)
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"model.init_from={src}", "data.max_seq_length=64"])
    for check in (lambda: check_model_settings(cfg, tiny_tokenizer), lambda: build_model(cfg, tiny_tokenizer)):
        with pytest.raises(WindowError, match=r"data.max_seq_length=64 exceeds the 32 positions of model.init_from=.*"
                                              r"set model.extend_positions=true"):
            check()
    cfg = cfg.replace(**{"model.extend_positions": True})
    check_model_settings(cfg, tiny_tokenizer)
    model = build_model(cfg, tiny_tokenizer)
    assert model.config.max_position_embeddings == 64
    assert model.bert.embeddings.position_embeddings.weight.shape[0] == 64


def test_long_phase_settings_are_checked_before_any_work(tmp_path):
    from mlm_pretrain.config import ConfigError

    with pytest.raises(ConfigError, match="pretrain.long_phase.max_seq_length=64 must exceed data.max_seq_length=128"):
        load_config("tiny", ["pretrain.long_phase.max_seq_length=64"])
    with pytest.raises(ConfigError, match="pretrain.long_phase.share: must be in"):
        load_config("tiny", ["pretrain.long_phase.max_seq_length=512", "pretrain.long_phase.share=0"])


def test_the_phases_split_the_budget(tmp_path):
    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.phases import pretraining_phases

    cfg = load_config("tiny", [f"output_dir={tmp_path}", "pretrain.long_phase.max_seq_length=512",
                               "pretrain.time_budget_minutes=60", "pretrain.max_steps=1000", "pretrain.warmup_steps=100",
                               "masking.max_predictions_per_seq=20", "hub.repo_id=me/enc", "hub.push=true"])
    assert [p.name for p in pretraining_phases(load_config("tiny"))] == ["pretrain"]
    first, long = pretraining_phases(cfg)
    assert (first.name, long.name) == ("pretrain (128)", "long phase (512)")
    assert (first.cfg.pretrain.time_budget_minutes, long.cfg.pretrain.time_budget_minutes) == pytest.approx((54, 6))
    assert (first.cfg.pretrain.max_steps, long.cfg.pretrain.max_steps, long.cfg.pretrain.warmup_steps) == (900, 100, 10)
    assert (first.cfg.hub.push, long.cfg.hub.push) == (False, True)
    assert first.cfg.data.max_seq_length == 128 and long.cfg.data.max_seq_length == 512
    assert long.cfg.pretrain.batch_size == 16 * 128 // 512 and long.cfg.masking.max_predictions_per_seq == 80
    assert long.cfg.model.init_from == str(tmp_path / "pretrain" / "final") and long.cfg.model.extend_positions
    assert first.layout.final == tmp_path / "pretrain" / "final"
    assert long.layout.checkpoints == tmp_path / "pretrain" / "long-512" / "checkpoints"
    assert RunLayout.of(cfg).final == long.layout.final == tmp_path / "pretrain" / "long-512" / "final"
    assert not first.cfg.pretrain.long_phase.max_seq_length and not long.cfg.pretrain.long_phase.max_seq_length


def test_continued_pretraining_keeps_the_checkpoints_tokenizer_in_the_long_phase(tmp_path, tiny_encoder_dir):
    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.phases import pretraining_phases

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", f"model.init_from={tiny_encoder_dir}",
                                    "pretrain.long_phase.max_seq_length=256"])
    first, long = pretraining_phases(cfg)
    assert first.cfg.model.init_from == str(tiny_encoder_dir)
    assert long.cfg.model.init_from == str(tmp_path / "pretrain" / "final")
    tokenizer = RunLayout.of(cfg).tokenizer  # the checkpoint's own, for both phases
    assert RunLayout.of(long.cfg).tokenizer == long.layout.tokenizer == first.layout.tokenizer == tokenizer


# ----------------------------------------------------------------------------------------------
# A run with a long phase, end to end
# ----------------------------------------------------------------------------------------------
STEPS = 6
ARGS = ["model.architecture=modernbert", "data.objective=mlm", "model.preset=tiny", "model.max_position_embeddings=32",
        "data.max_seq_length=32", "data.dupe_factor=1", "pretrain.long_phase.max_seq_length=64",
        "pretrain.long_phase.share=0.5", "pretrain.batch_size=8", f"pretrain.max_steps={STEPS}",
        "pretrain.save_steps=1", "pretrain.eval_steps=0", "pretrain.probe_examples=0", "pretrain.logging_steps=1",
        "pretrain.keep_last=2", "pretrain.warmup_ratio=0.2", "pretrain.learning_rate=1e-3",
        "pretrain.mixed_precision=no", "tracking.report_to=[]", "tracking.plots=false"]


@pytest.fixture(scope="module")
def long_args(tmp_path_factory, tiny_tokenizer_dir):
    from mlm_pretrain.phases import pretraining_phases
    from mlm_pretrain.prepare import prepare_pretraining_data

    import shutil

    cache = tmp_path_factory.mktemp("prepared")
    tok = shutil.copytree(tiny_tokenizer_dir, cache / "tokenizer")  # one that says the first phase's length
    settings = json.loads((tok / "tokenizer_config.json").read_text())
    (tok / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 32}))
    args = [f"tokenizer.pretrained={tok}", f"data.cache_dir={cache}", *ARGS]
    for phase in pretraining_phases(load_config("tiny", [f"output_dir={cache / 'run'}", *args])):
        prepare_pretraining_data(phase.cfg)  # both lengths, once for the module
    return args


def _command(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "mlm_pretrain", "pretrain", "--config", "tiny", f"output_dir={out}", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _run(out: Path, args: list[str]) -> str:
    proc = subprocess.run(_command(out, args), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, long_args):
    out = tmp_path_factory.mktemp("long")
    return out, _run(out, long_args)


@pytest.mark.slow
def test_a_run_ends_with_the_long_phase_and_exports_its_window(uninterrupted, long_args):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.metrics_log import read_metrics

    out, log = uninterrupted
    final = out / "pretrain" / "long-64" / "final"
    assert RunLayout.of(load_config("tiny", [f"output_dir={out}", *long_args])).final == final
    assert json.loads((out / "pretrain" / "final" / "config.json").read_text())["max_position_embeddings"] == 32
    assert json.loads((final / "config.json").read_text())["max_position_embeddings"] == 64
    assert AutoTokenizer.from_pretrained(str(out / "pretrain" / "final")).model_max_length == 32
    assert AutoTokenizer.from_pretrained(str(final)).model_max_length == 64
    model = AutoModelForMaskedLM.from_pretrained(str(final))
    assert model(torch.randint(5, 100, (1, 64))).logits.shape[1] == 64
    assert "rotary: max positions 32 -> 64" in log
    steps = [r["step"] for r in read_metrics(out / "pretrain" / "long-64" / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3]  # half of the 6 steps, in its own folder
    assert json.loads((final / "metrics.json").read_text())["completed"]


def _start_and_kill(out: Path, args: list[str]) -> None:
    """Start a run and SIGKILL it once the long phase's first checkpoint is complete."""
    proc = subprocess.Popen(_command(out, args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    marker = out / "pretrain" / "long-64" / "checkpoints" / "step-1" / "checkpoint.json"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint of the long phase within 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)


@pytest.mark.slow
def test_an_interrupted_long_phase_resumes_without_redoing_the_first(uninterrupted, long_args, tmp_path):
    from safetensors.torch import load_file

    from mlm_pretrain.metrics_log import read_metrics

    out = tmp_path / "killed"
    _start_and_kill(out, long_args)
    assert not (out / "pretrain" / "long-64" / "final").exists()  # it died in the long phase
    first = out / "pretrain" / "final" / "metrics.json"
    written = first.stat().st_mtime_ns
    log = _run(out, long_args)
    assert first.stat().st_mtime_ns == written and "pretraining already finished" in log  # phase 1 not redone
    assert "resumed from" in log
    done, again = uninterrupted[0], out
    losses = [{r["step"]: r["train/loss"] for r in read_metrics(d / "pretrain" / "long-64" / "metrics.jsonl")
               if "train/loss" in r} for d in (done, again)]
    assert losses[0] == losses[1]
    wa = load_file(str(done / "pretrain" / "long-64" / "final" / "model.safetensors"))
    wb = load_file(str(again / "pretrain" / "long-64" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a first phase trained again (here: pretrain.resume=never) moves the long phase's folder aside, kept
    _run(out, [*long_args, "pretrain.resume=never"])
    assert len(list((out / "pretrain").glob("long-64.superseded-*"))) == 1


@pytest.mark.slow
def test_the_cost_benchmark_puts_both_lengths_in_one_table(tmp_path):
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(root / "scripts" / "bench_long_phase.py"), "--seqs", "32,64", "--batch", "8",
                           "--steps", "2", "--warmup", "1", "--vocab-size", "2000", "--threads", "1", "--precisions", "fp32",
                           "--corpus", str(root / "data" / "corpus.txt"), "--work-dir", str(tmp_path / "work"),
                           "--json", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=600, cwd=root,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout.split("what a longer window costs")[1]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| 32 ") or line.startswith("| 64 ")]
    assert [[c.strip() for c in r] for r in rows] == [["32", "8"], ["64", "4"]]  # the same tokens per step
    assert "a long phase of 10% of 60 minutes reads" in table
    saved = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [r["seq"] for r in saved] == [32, 64] and all(r["tokens_per_s"] > 0 for r in saved)


@pytest.mark.slow
def test_both_phases_train_in_one_process_group(long_args, tmp_path):
    """Under ``accelerate launch`` the long phase trains in the group the first phase set up (accelerate
    sets it up once per process: ending the first phase must not take it down)."""
    import shutil
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "mlm_pretrain", "pretrain", "--config",
           "tiny", f"output_dir={tmp_path}", *long_args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((tmp_path / "pretrain" / "long-64" / "final" / "config.json").read_text())[
        "max_position_embeddings"] == 64
