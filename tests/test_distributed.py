"""Two processes under ``accelerate launch`` on a CPU: one gloo group, disjoint data, identical weights,
and the losses of a one-process run with the same global batch."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlm_pretrain.config import load_config
from mlm_pretrain.metrics_log import read_metrics

pytestmark = pytest.mark.slow

ARGS = ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
        "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0", "pretrain.max_steps=6",
        "pretrain.save_steps=3", "pretrain.eval_steps=3", "pretrain.logging_steps=1", "pretrain.warmup_steps=2",
        "pretrain.learning_rate=1e-3", "tracking.report_to=[]", "tracking.plots=false",
        "pretrain.mixed_precision=no"]  # fp32 on every CPU: one big batch and two halves must sum alike

# Runs pretrain() and records, per process, what the test checks: the process group, the rows each
# micro-batch took, and a checksum of the weights at the end.
PROBE = r'''
import hashlib, json, sys
import torch
import torch.distributed as dist
from mlm_pretrain import batches, pretrain as pt
from mlm_pretrain.config import load_config

out, overrides = sys.argv[1], sys.argv[2:]
rows = []
original_item = batches._MaskedBatches.__getitem__
def spy(self, key):
    rows.append(list(key[1]))
    return original_item(self, key)
batches._MaskedBatches.__getitem__ = spy

original_finish = pt._Run.finish
def finish(self, final):
    h = hashlib.sha256()
    for name, p in sorted(self.accelerator.unwrap_model(self.module).named_parameters()):
        h.update(name.encode() + p.detach().cpu().numpy().tobytes())
    record = {"rank": self.accelerator.process_index, "world": self.accelerator.num_processes,
              "group": dist.get_world_size() if dist.is_initialized() else 1,
              "backend": dist.get_backend() if dist.is_initialized() else None,
              "threads": torch.get_num_threads(), "rows": rows, "weights": h.hexdigest()}
    with open(f"{out}/rank{record['rank']}.json", "w") as f:
        json.dump(record, f)
    return original_finish(self, final)
pt._Run.finish = finish
pt.pretrain(load_config("tiny-bert", [f"output_dir={out}", *overrides]))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(probe: Path, out: Path, args: list[str], processes: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, str(probe), str(out), *args]
    else:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(probe), str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_two_processes_train_like_one_big_batch(tmp_path, tiny_tokenizer_dir):
    from mlm_pretrain.prepare import prepare_pretraining_data

    cache = tmp_path / "prepared"
    args = [f"tokenizer.pretrained={tiny_tokenizer_dir}", f"data.cache_dir={cache}", *ARGS]
    prepare_pretraining_data(load_config("tiny-bert", [f"output_dir={tmp_path / 'prep'}", *args]))
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)

    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    _launch(probe, two, [*args, "pretrain.batch_size=4"], processes=2)
    _launch(probe, one, [*args, "pretrain.batch_size=8"], processes=1)

    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in range(2)]
    single = json.loads((one / "rank0.json").read_text())
    # one process group of two (real data parallelism, not two lone processes)
    assert [(r["rank"], r["world"], r["group"], r["backend"]) for r in ranks] == [(0, 2, 2, "gloo"), (1, 2, 2, "gloo")]
    # disjoint data that together is the one-process global batch, step by step
    assert len(ranks[0]["rows"]) == len(ranks[1]["rows"]) == len(single["rows"]) == 6
    for a, b, big in zip(ranks[0]["rows"], ranks[1]["rows"], single["rows"]):
        assert not set(a) & set(b)
        assert sorted(a + b) == sorted(big)
    # identical weights on both processes
    assert ranks[0]["weights"] == ranks[1]["weights"]
    # the same losses as one process with the same global batch
    def losses(out):
        merged: dict[int, dict] = {}
        for record in read_metrics(out / "pretrain" / "metrics.jsonl"):
            merged.setdefault(record["step"], {}).update(record)
        return merged
    l2, l1 = losses(two), losses(one)
    assert sorted(l2) == sorted(l1) == [1, 2, 3, 4, 5, 6]
    for step in l1:
        for key in ("train/loss", "train/mlm_loss", "train/nsp_loss"):
            assert l2[step][key] == pytest.approx(l1[step][key], abs=1e-4), (step, key)
    for step in (3, 6):
        for key in ("eval/mlm_loss", "eval/mlm_accuracy", "eval/nsp_accuracy"):
            assert l2[step][key] == pytest.approx(l1[step][key], abs=1e-4), (step, key)
    assert json.loads((two / "pretrain" / "final" / "metrics.json").read_text())["step"] == 6


def test_a_sharded_launch_on_a_cpu_says_it_is_not_sharded(monkeypatch, caplog):
    """``accelerate launch --config_file scripts/accelerate/fsdp.yaml`` on a CPU machine trains unsharded
    (accelerate ignores FSDP with ``cpu=True``): the run says so instead of pretending. (DeepSpeed's
    config on a CPU fails in accelerate itself unless deepspeed is installed.)"""
    import logging

    from mlm_pretrain.hardware import make_accelerator

    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.hardware"):
        make_accelerator(cpu=True)
    assert "not sharded" not in caplog.text
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.hardware"):
        accelerator = make_accelerator(cpu=True)
    assert accelerator.distributed_type.value in ("NO", "MULTI_CPU")
    assert "the launch asked for FSDP, but this run is not sharded" in caplog.text
    assert "multi_cpu.yaml" in caplog.text
