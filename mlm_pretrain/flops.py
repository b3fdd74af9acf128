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
    ``fp32`` / ``bf16`` / ``fp16``. ``seconds`` bounds the timing loop (after one warm-up product)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _DTYPES[precision]
    if n is None:
        n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Warm up (library dispatch, caches) and size the loop to roughly ``seconds``.
    t0 = time.perf_counter()
    torch.mm(a, b)
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(2, min(200, int(seconds / one)))
    best = float("inf")
    for _ in range(2):  # best of two rounds: other processes on the machine only ever slow us down
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2.0 * n ** 3 / best


def mfu(flops_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilisation as a fraction (0.5 = 50%)."""
    return flops_per_second / peak_flops if peak_flops > 0 else float("nan")
