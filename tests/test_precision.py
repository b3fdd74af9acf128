"""``mixed_precision: auto``: what it picks on GPUs and CPUs, the cached CPU probe, and the record a run keeps."""
from __future__ import annotations

import json

import pytest
import torch

from mlm_pretrain import training
from mlm_pretrain.training import resolve_mixed_precision


def test_explicit_values_are_kept():
    for value in ("no", "bf16", "fp16"):
        assert resolve_mixed_precision(value) == (value, "set explicitly")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    precision, reason = resolve_mixed_precision("auto")
    assert precision == expected and "NVIDIA Test GPU" in reason
    assert resolve_mixed_precision("auto", cpu=True)[0] in ("no", "bf16")  # cpu=True asks the CPU probe


@pytest.mark.parametrize("fp32, bf16, expected", [(100.0, 500.0, "bf16"),   # AMX: bf16 5x faster
                                                  (100.0, 10.0, "no"),      # AVX2 only: bf16 emulated
                                                  (100.0, 110.0, "no")])    # within the margin: fp32
def test_auto_on_a_cpu_follows_the_probe(monkeypatch, fp32, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "cpu_matmul_probe", lambda: {"cpu": "Test CPU (avx2)", "fp32_gflops": fp32,
                                                               "bf16_gflops": bf16})
    precision, reason = resolve_mixed_precision("auto")
    assert precision == expected
    assert f"bf16 matmul {bf16:.0f} GFLOP/s vs fp32 {fp32:.0f}" in reason and "Test CPU" in reason


def test_the_cpu_probe_is_measured_once_per_machine(monkeypatch, tmp_path):
    calls = []

    def fake_peak(precision, device, **kw):
        calls.append(precision)
        return {"fp32": 80e9, "bf16": 9e9}[precision]
    monkeypatch.setattr("mlm_pretrain.flops.measure_matmul_peak", fake_peak)
    first = training.cpu_matmul_probe(tmp_path)
    assert first["fp32_gflops"] == 80 and first["bf16_gflops"] == 9 and calls == ["fp32", "bf16"]
    assert training.cpu_matmul_probe(tmp_path) == first and calls == ["fp32", "bf16"]  # cached
    assert len(list(tmp_path.glob("cpu_matmul_*.json"))) == 1


def test_the_real_probe_takes_a_fraction_of_a_second(tmp_path):
    import time

    t0 = time.perf_counter()
    probe = training.cpu_matmul_probe(tmp_path)
    assert time.perf_counter() - t0 < 5.0  # well under a second on an idle machine
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0 and probe["cpu"]
