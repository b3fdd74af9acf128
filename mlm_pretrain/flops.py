"""Model FLOPs and the measured matmul peak of a machine, for model FLOPs utilisation (MFU).

    python -c "from mlm_pretrain.flops import measure_matmul_peak; print(measure_matmul_peak('fp32'))"

MFU = (FLOPs the model needs per second) / (the best matmul FLOP/s this device reaches). The peak is
*measured* (a large square matmul), not read from a spec sheet: on a shared or throttled CPU the spec
is meaningless. Model FLOPs count only the work the model mathematically needs, the same for every
implementation (so two loops on the same model compare by throughput and MFU alike):

* 6 x (encoder-layer parameters) per token: forward 2, backward 4 (Kaplan et al. 2020); the
  prediction-head transform counts per masked token and the pooler per sequence, where they run;
* attention scores and weighted sum: 2 matmuls of seq x seq x hidden per layer, 6x for fwd + bwd
  = 12 x layers x seq x hidden per token (ModernBERT's sliding-window layers are counted as full
  attention: at sequence 128 and its 128-token window they nearly are);
* the vocabulary projection only where the loss needs it (masked positions): 6 x hidden x vocab per
  masked token. A head that scores every position does more work, but not more *useful* work.
* ELECTRA: the generator's encoder on every token and its head on the masked ones, plus the
  discriminator's encoder and its per-token head on every token (and any embedding projection).
"""
from __future__ import annotations

import time
from typing import Optional

import torch

_DTYPES = {"fp32": torch.float32, "no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def layer_params(config) -> int:
    """Parameters of one encoder layer: BERT / ELECTRA: q, k, v, o, the feed-forward pair, 2 LayerNorms;
    ModernBERT: the fused qkv and o (no biases), the GeGLU feed-forward (3 matrices) and 2 bias-free
    norms (its first layer has no attention norm: :func:`encoder_params` counts exactly)."""
    h, i = config.hidden_size, getattr(config, "intermediate_size", None) or config.hidden_dim  # DistilBERT: hidden_dim
    if config.model_type == "modernbert":
        bias = bool(config.attention_bias)
        attention = 3 * h * h + h * h + (4 * h if bias else 0)
        mlp = 2 * h * i + i * h + ((2 * i + h) if config.mlp_bias else 0)
        return attention + mlp + 2 * h * (2 if config.norm_bias else 1)
    return 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h


def encoder_params(config) -> int:
    """Parameters of all encoder layers."""
    total = config.num_hidden_layers * layer_params(config)
    if config.model_type == "modernbert":
        total -= config.hidden_size * (2 if config.norm_bias else 1)  # layer 0: no attention norm
    return total


def _head_transform_params(config) -> int:
    """The MLM head's transform before the vocabulary projection (dense + norm), per masked token."""
    h = config.hidden_size
    if config.model_type == "modernbert":
        return h * h + (h if config.classifier_bias else 0) + h * (2 if config.norm_bias else 1)
    if config.model_type == "electra":  # generator: hidden -> embedding_size, LayerNorm there
        e = config.embedding_size
        return h * e + e + 2 * e
    return h * h + 3 * h


def non_embedding_params(config) -> int:
    """Encoder layers + pooler (BERT) + prediction-head transform (embeddings and the tied vocabulary
    projection excluded)."""
    h = config.hidden_size
    pooler = (h * h + h) if config.model_type == "bert" else 0
    return encoder_params(config) + pooler + _head_transform_params(config)


def _encoder_flops(config, tokens: float, seq_len: float) -> float:
    h = config.hidden_size
    per_token = 6 * encoder_params(config) + 12 * config.num_hidden_layers * seq_len * h
    embedding_size = getattr(config, "embedding_size", h)
    if config.model_type == "electra" and embedding_size != h:
        per_token += 6 * (embedding_size * h + h)  # embeddings_project
    return per_token * tokens


def _mlm_head_flops(config, masked_tokens: float) -> float:
    """The head's two matmuls (transform, vocabulary projection) per masked token."""
    h = config.hidden_size
    width = config.embedding_size if config.model_type == "electra" else h
    return 6 * (h * width + width * config.vocab_size) * masked_tokens


def pretraining_flops(config, tokens: int, seq_len: int, masked_tokens: Optional[float] = None,
                      generator_config=None) -> float:
    """Training FLOPs (forward + backward) for ``tokens`` tokens in sequences of ``seq_len``; when
    ``masked_tokens`` is not given, 15% of the tokens are assumed masked. ``config`` is the model that
    pretraining saves; for ELECTRA it is the discriminator and ``generator_config`` the generator's (both
    count)."""
    if masked_tokens is None:
        masked_tokens = 0.15 * tokens
    h = config.hidden_size
    if generator_config is not None:  # ELECTRA: generator (MLM on masked tokens) + discriminator on all
        disc_head = 6 * (h * h + h + h + 1) * tokens
        return float(pretraining_flops(generator_config, tokens, seq_len, masked_tokens)
                     + _encoder_flops(config, tokens, seq_len) + disc_head)
    total = _encoder_flops(config, tokens, seq_len) + _mlm_head_flops(config, masked_tokens)
    if config.model_type == "bert":
        total += 6 * h * h * tokens / seq_len  # pooler on [CLS] of each sequence (NSP / SOP)
    return float(total)


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
