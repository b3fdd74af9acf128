"""Exact resume in real processes: SIGKILL mid-run, or SIGTERM (save, then exit), then the same command
again gives the losses and final weights of an uninterrupted run, bit for bit (CPU, fp32)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlm_pretrain.config import load_config
from mlm_pretrain.metrics_log import read_metrics

pytestmark = pytest.mark.slow

STEPS = 12
ARGS = ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
        "pretrain.batch_size=8", f"pretrain.max_steps={STEPS}", "pretrain.save_steps=3", "pretrain.eval_steps=4",
        "pretrain.logging_steps=1", "pretrain.keep_last=2", "pretrain.warmup_ratio=0.2",
        "pretrain.learning_rate=1e-3", "tracking.report_to=[]", "tracking.plots=false"]


#: every architecture, with the objective it trains on (ELECTRA also restores the RNG its generator samples from)
ARCHS = {"bert": [], "modernbert": ["model.architecture=modernbert", "data.objective=mlm"],
         "electra": ["model.architecture=electra", "data.objective=mlm"],
         # the encoder compiled (pretrain.compile): a resumed process compiles again, and must still match
         "modernbert-compiled": ["model.architecture=modernbert", "data.objective=mlm", "pretrain.compile=true"]}


@pytest.fixture(scope="module", params=list(ARCHS))
def base_args(request, tmp_path_factory, tiny_tokenizer_dir):
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.hardware import compile_toolchain

    if request.param.endswith("-compiled") and compile_toolchain("auto", "cpu")[1]:
        pytest.skip("torch.compile on a CPU needs a C++ compiler")
    cache = tmp_path_factory.mktemp("prepared")
    args = [f"tokenizer.pretrained={tiny_tokenizer_dir}", f"data.cache_dir={cache}", *ARGS, *ARCHS[request.param]]
    prepare_pretraining_data(load_config("tiny-bert", [f"output_dir={cache / 'run'}", *args]))
    return args


def _command(out: Path, args: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlm_pretrain", "pretrain", f"output_dir={out}", *args, *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _run(out: Path, args: list[str], *extra: str) -> None:
    proc = subprocess.run(_command(out, args, *extra), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _start_and_signal(out: Path, args: list[str], sig: int, *extra: str) -> subprocess.CompletedProcess:
    """Start a run, send ``sig`` once its first checkpoint is complete, return the finished process."""
    proc = subprocess.Popen(_command(out, args, *extra), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    marker = out / "pretrain" / "checkpoints" / "step-3" / "checkpoint.json"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(out / "pretrain" / "metrics.jsonl") if "train/loss" in r}


def _evals(out: Path) -> dict[int, float]:
    return {r["step"]: r["eval/mlm_loss"] for r in read_metrics(out / "pretrain" / "metrics.jsonl")
            if "eval/mlm_loss" in r}


def _assert_same_run(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    la, lb = _losses(a), _losses(b)
    assert sorted(la) == list(range(1, STEPS + 1))
    assert la == lb  # every per-step loss, as floats: bit-identical
    assert _evals(a) == _evals(b)
    final = a / "pretrain" / "final"
    for sub in ["."] + (["generator"] if (final / "generator").is_dir() else []):  # ELECTRA: the generator too
        wa = load_file(str(a / "pretrain" / "final" / sub / "model.safetensors"))
        wb = load_file(str(b / "pretrain" / "final" / sub / "model.safetensors"))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, base_args):
    out = tmp_path_factory.mktemp("uninterrupted")
    _run(out, base_args)
    return out


def test_sigkill_then_resume_is_bit_identical(uninterrupted, base_args, tmp_path):
    out = tmp_path / "killed"
    killed = _start_and_signal(out, base_args, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "pretrain" / "final").exists()  # it really died mid-run
    _run(out, base_args)
    _assert_same_run(uninterrupted, out)


def test_sigterm_saves_then_exits_and_resumes_exactly_with_workers(uninterrupted, base_args, tmp_path, request):
    if request.node.callspec.params["base_args"] in ("modernbert", "modernbert-compiled"):
        pytest.skip("the signal and worker paths are shared: bert (NSP rows) and electra (MLM rows, sampling) cover them")
    out = tmp_path / "terminated"
    stopped = _start_and_signal(out, base_args, signal.SIGTERM, "pretrain.dataloader_num_workers=1")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr
    assert not (out / "pretrain" / "final").exists()
    steps = sorted(int(p.name[5:]) for p in (out / "pretrain" / "checkpoints").glob("step-*"))
    last_logged = max(_losses(out))
    assert steps[-1] == last_logged  # the checkpoint was written at the step where it stopped
    _run(out, base_args, "pretrain.dataloader_num_workers=1")
    _assert_same_run(uninterrupted, out)
