"""Model FLOPs and the measured matmul peak of a machine, for model FLOPs utilisation (MFU).

    python -c "from mlm_pretrain.flops import measure_matmul_peak; print(measure_matmul_peak('fp32'))"

MFU = (FLOPs the model needs per second) / (the best matmul FLOP/s this device reaches). The peak is
*measured* (a large square matmul), not read from a spec sheet: on a shared or throttled CPU the spec
is meaningless. Model FLOPs count only the work the model mathematically needs, the same for every
implementation (so two loops on the same model compare by throughput and MFU alike):

* 6 x (encoder-layer parameters) per token: forward 2, backward 4 (Kaplan et al. 2020); the
  prediction-head transform counts per masked token and the pooler per sequence, where they run;
* attention scores and weighted sum: 2 matmuls of seq x seq x hidden per layer, 6x for fwd + bwd
  = 12 x layers x seq x hidden per token;
* the vocabulary projection only where the loss needs it (masked positions): 6 x hidden x vocab per
  masked token. A head that scores every position does more work, but not more *useful* work.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

_DTYPES = {"fp32": torch.float32, "no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def layer_params(config) -> int:
    """Parameters of one encoder layer of a BERT config: q, k, v, o, the feed-forward pair, 2 LayerNorms."""
    h, i = config.hidden_size, config.intermediate_size
    return 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h


def non_embedding_params(config) -> int:
    """Encoder layers + pooler + prediction-head transform (embeddings and the tied vocabulary
    projection excluded)."""
    h = config.hidden_size
    return config.num_hidden_layers * layer_params(config) + (h * h + h) + (h * h + 3 * h)


def pretraining_flops(config, tokens: int, seq_len: int, masked_tokens: Optional[float] = None) -> float:
    """Training FLOPs (forward + backward) for ``tokens`` tokens in sequences of ``seq_len``; when
    ``masked_tokens`` is not given, 15% of the tokens are assumed masked."""
    if masked_tokens is None:
        masked_tokens = 0.15 * tokens
    h = config.hidden_size
    layers = 6 * config.num_hidden_layers * layer_params(config) * tokens
    attention = 12 * config.num_hidden_layers * seq_len * h * tokens
    head = 6 * (h * h + h * config.vocab_size) * masked_tokens  # transform + vocabulary projection
    pooler = 6 * h * h * tokens / seq_len  # [CLS] of each sequence (NSP / SOP)
    return float(layers + attention + head + pooler)


def measure_matmul_peak(precision: str = "fp32", device: Optional[str] = None, *, n: Optional[int] = None,
                        seconds: float = 1.0) -> float:
    """The matmul throughput (FLOP/s) this device reaches on a large square product, for ``precision``
    ``fp32`` / ``bf16`` / ``fp16``: the best of ``torch.mm`` and ``F.linear`` (on CPUs they take different
    kernels; bf16 ``mm`` can be 10x slower than bf16 ``linear``), best of two timed rounds (other
    processes on the machine only ever slow us down). ``seconds`` bounds each timing loop."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _DTYPES[precision]
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(op, x, y, reps: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            op(x, y)
        sync()
        return (time.perf_counter() - t0) / reps

    # Pick the faster kernel on a small product first (a slow fallback can take minutes at full size).
    small_a, small_b = a[:256, :256].contiguous(), b[:256, :256].contiguous()
    ops = (torch.mm, torch.nn.functional.linear)
    op = min(ops, key=lambda o: (timed(o, small_a, small_b, 1), timed(o, small_a, small_b, 3))[1])
    one = max(timed(op, a, b, 1), 1e-6)  # warm-up at full size; sizes the loop to ``seconds``
    reps = max(1, min(200, int(seconds / one)))
    best = min(timed(op, a, b, reps) for _ in range(2))
    return 2.0 * n ** 3 / best


def mfu(flops_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilisation as a fraction (0.5 = 50%)."""
    return flops_per_second / peak_flops if peak_flops > 0 else float("nan")
