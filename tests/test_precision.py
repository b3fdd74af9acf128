"""``mixed_precision: auto``: what it picks on GPUs and CPUs, the cached CPU probe, and the record a run keeps."""
from __future__ import annotations

import json

import pytest
import torch

from mlm_pretrain import hardware
from mlm_pretrain.hardware import resolve_mixed_precision


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
    monkeypatch.setattr(hardware, "cpu_matmul_probe", lambda: {"cpu": "Test CPU (avx2)", "fp32_gflops": fp32,
                                                               "bf16_gflops": bf16})
    precision, reason = resolve_mixed_precision("auto")
    assert precision == expected
    assert f"bf16 matmul {bf16:.0f} GFLOP/s vs fp32 {fp32:.0f}" in reason and "Test CPU" in reason


def test_the_cpu_probe_is_measured_once_per_machine(monkeypatch, tmp_path):
    calls = []

    def fake_peak(precision, device, **kw):
        calls.append(precision)
        return {"fp32": 80e9, "bf16": 9e9}[precision]
    monkeypatch.setattr("mlm_pretrain.hardware.measure_matmul_peak", fake_peak)
    first = hardware.cpu_matmul_probe(tmp_path)
    assert first["fp32_gflops"] == 80 and first["bf16_gflops"] == 9 and calls == ["fp32", "bf16"]
    assert hardware.cpu_matmul_probe(tmp_path) == first and calls == ["fp32", "bf16"]  # cached
    assert len(list(tmp_path.glob("cpu_matmul_*.json"))) == 1


def test_an_instruction_set_limit_is_measured_as_another_machine(monkeypatch, tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 (or MKL's / ATen's limit) makes bf16 matmuls slow on any CPU: the cached
    choice of the unlimited machine must not be reused, and the reason names the limit."""
    for var in hardware.CPU_ISA_LIMITS:
        monkeypatch.delenv(var, raising=False)
    peaks = iter([80e9, 300e9, 80e9, 9e9])  # fp32, bf16 unlimited; fp32, bf16 limited to AVX2
    monkeypatch.setattr("mlm_pretrain.hardware.measure_matmul_peak", lambda precision, device, **kw: next(peaks))
    full = hardware.cpu_matmul_probe(tmp_path)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    limited = hardware.cpu_matmul_probe(tmp_path)
    assert (full["bf16_gflops"], limited["bf16_gflops"]) == (300, 9)
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in limited["cpu"] and "ONEDNN" not in full["cpu"]
    assert len(list(tmp_path.glob("cpu_matmul_*.json"))) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_matmul_probe", lambda: limited)
    precision, reason = resolve_mixed_precision("auto")
    assert precision == "no" and "ONEDNN_MAX_CPU_ISA=AVX2" in reason


def test_the_real_probe_takes_a_fraction_of_a_second(tmp_path):
    import time

    t0 = time.perf_counter()
    probe = hardware.cpu_matmul_probe(tmp_path)
    assert time.perf_counter() - t0 < 5.0  # well under a second on an idle machine
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0 and probe["cpu"]


# ----------------------------------------------------------------------------------------------
# Attention kernels on a CPU: flash or math, measured
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flash, math_, expected", [(0.023, 0.013, "math"),   # AMX, bf16, sequence 128
                                                     (0.011, 0.014, None),     # fp32: flash is faster
                                                     (0.0105, 0.010, None)])   # within the margin: PyTorch's
def test_the_attention_probe_keeps_math_only_where_it_is_clearly_faster(monkeypatch, tmp_path, flash, math_,
                                                                         expected):
    from torch.nn.attention import SDPBackend

    calls = []

    def fake(backend, dtype, shape, reps=3):
        calls.append((backend, dtype, shape))
        return flash if backend == SDPBackend.FLASH_ATTENTION else math_
    monkeypatch.setattr(hardware, "sdpa_seconds", fake)
    backends, reason = hardware.cpu_attention_backends("bf16", batch=32, heads=4, seq=128, head_dim=64,
                                                       cache_dir=tmp_path)
    assert backends == ([SDPBackend.MATH] if expected else None)
    assert reason.startswith("math (" if expected else "PyTorch's choice, flash (")
    assert f"bf16 forward+backward at 8x4x128x64: flash {1e3 * flash:.1f} ms, math {1e3 * math_:.1f} ms" in reason
    assert {(d, s) for _, d, s in calls} == {(torch.bfloat16, (8, 4, 128, 64))} and len(calls) == 2
    # cached per machine and shape: a re-run (or a resume) makes the same choice without measuring
    assert hardware.cpu_attention_backends("bf16", batch=32, heads=4, seq=128, head_dim=64,
                                           cache_dir=tmp_path) == (backends, reason) and len(calls) == 2
    hardware.cpu_attention_backends("no", batch=32, heads=4, seq=128, head_dim=64, cache_dir=tmp_path)
    assert len(calls) == 4 and calls[-1][1] == torch.float32  # another precision is another probe


def test_the_real_attention_probe_is_short_and_leaves_the_global_rng_alone(tmp_path):
    import time

    state = torch.get_rng_state()
    t0 = time.perf_counter()
    backends, reason = hardware.cpu_attention_backends("no", batch=4, heads=2, seq=32, head_dim=16,
                                                       cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5.0
    assert torch.equal(torch.get_rng_state(), state)
    assert "fp32 forward+backward at 4x2x32x16: flash " in reason and " ms, math " in reason
    assert backends is None or reason.startswith("math (")


def test_math_and_flash_attention_train_alike():
    """The backend is a speed choice only: the same loss and gradients up to rounding."""
    from torch.nn.attention import SDPBackend
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    model = BertForMaskedLM(config).train()
    ids = torch.randint(5, 50, (4, 16))
    mask = torch.ones_like(ids)
    mask[:2, 12:] = 0

    def run(backends):
        model.zero_grad()
        with hardware.sdpa_backends(backends):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    (flash_loss, flash_grads), (math_loss, math_grads) = run([SDPBackend.FLASH_ATTENTION]), run([SDPBackend.MATH])
    assert flash_loss == pytest.approx(math_loss, rel=1e-5)
    for a, b in zip(flash_grads, math_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert hardware.sdpa_backends(None).__class__.__name__ == "nullcontext"
