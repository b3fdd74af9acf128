"""Dropout masks that a CPU draws fast: one 64-bit random word per four elements.

PyTorch's CPU dropout draws one Bernoulli sample per element from the Mersenne Twister, one element
at a time on one thread (about 5.5 ns each on the 2-core machines here, whatever the thread count).
At BERT's dropout of 0.1 that is a quarter of a ``mini`` pretraining step on a CPU
(``scripts/bench_pretrain.py --profile``: ``aten::bernoulli_`` 25% of a bf16 step on an AMX Xeon,
more than all the matmuls of the forward pass). Here the same generator (the global torch CPU RNG,
so seeding, checkpoints and resume behave as before) fills a quarter as many 64-bit words, read as
four 16-bit draws each, and an element is kept when its draw clears ``p`` (``p`` rounded to a
multiple of 1/65536: 0.1 becomes 0.100006): 2.8x faster forward and backward.

:func:`use_cpu_dropout` swaps a model's ``nn.Dropout`` modules for :class:`CPUDropout` and its SDPA
attention for :func:`cpu_dropout_attention` (registered with transformers' ``AttentionInterface``),
which computes attention itself, with such a mask on the probabilities, only while training with
attention dropout on a CPU, and calls transformers' own SDPA function otherwise. Neither changes
the weights, the saved config or what a model does outside training; on a GPU both are PyTorch's own.
"""
from __future__ import annotations

import torch
from torch import nn

#: The attention implementation :func:`use_cpu_dropout` registers (not saved in ``config.json``).
ATTENTION = "sdpa_cpu_dropout"


def dropout_noise(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of ``1 / (1 - p)`` where an element is kept and 0 where it is dropped, each
    dropped with probability ``round(p * 65536) / 65536``, from the global torch RNG."""
    n = 1
    for d in shape:
        n *= d
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)  # all 64 bits random
    draws = words.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
    threshold = round(p * 65536) - 32768
    return torch.where(draws >= threshold, torch.tensor(1.0 / (1.0 - p), dtype=dtype), torch.tensor(0.0, dtype=dtype))


def cpu_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with :func:`dropout_noise` masks on a CPU."""
    if not training or p <= 0.0 or x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    return x * dropout_noise(x.shape, p, x.dtype)


class CPUDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks come from :func:`dropout_noise`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_dropout(x, self.p, self.training)


def cpu_dropout_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          is_causal=None, **kwargs):
    """transformers' SDPA attention function, except while training with attention dropout on a CPU:
    there ``softmax(q k^T * scaling + mask) v`` with a :func:`dropout_noise` mask on the probabilities
    (SDPA would fall back to its math kernel and PyTorch's per-element Bernoulli draws)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (dropout <= 0.0 or query.device.type != "cpu" or is_causal or kwargs.get("output_attentions")
            or getattr(module, "num_key_value_groups", 1) > 1):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else query.size(-1) ** -0.5)
    if attention_mask is not None:  # SDPA's mask: True = attend (or an additive float mask)
        scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(cpu_dropout(probs, dropout), value)
    return out.transpose(1, 2).contiguous(), None


def attention_dropout(config) -> float:
    """The attention-probability dropout of a BERT / ELECTRA (``attention_probs_dropout_prob``) or
    ModernBERT (``attention_dropout``) config."""
    return float(getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", 0.0)) or 0.0)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, cpu_dropout_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets


def use_cpu_dropout(model: nn.Module) -> int:
    """Swap ``model``'s ``nn.Dropout`` modules (every transformers model inside it) for
    :class:`CPUDropout`, and its ``sdpa`` attention for :func:`cpu_dropout_attention`; returns how many
    dropout modules with ``p > 0`` it now has. Call it for CPU training only (it changes nothing on
    a GPU, where PyTorch's masks are cheap)."""
    from transformers import PreTrainedModel

    _register()
    active = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                swapped = CPUDropout(child.p, inplace=child.inplace)
                swapped.train(child.training)
                setattr(parent, name, swapped)
                active += child.p > 0
    for sub in model.modules():
        if isinstance(sub, PreTrainedModel) and getattr(sub.config, "_attn_implementation", None) == "sdpa":
            sub.set_attn_implementation(ATTENTION)
    return active
