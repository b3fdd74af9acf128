"""AdamW with the usual no-decay groups, and the learning-rate schedule (``transformers.get_scheduler``,
or the same shapes over a wall-clock budget's progress).

    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    scheduler = make_scheduler("linear", optimizer, num_warmup_steps=100, num_training_steps=1000)
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch


logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------------------------
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "layernorm", "norm.weight")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on weights, none on biases and LayerNorm parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or any(k in name for k in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999),
                   eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW, fused where the device supports it (CUDA, and CPU on recent PyTorch)."""
    groups = param_groups(model, weight_decay)
    device = next(model.parameters()).device
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError, ValueError):  # an old PyTorch or a device without a fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def warmup_steps_for(total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 0.0) -> int:
    """Explicit warmup steps win; otherwise a ratio of the run."""
    return warmup_steps if warmup_steps > 0 else int(math.ceil(warmup_ratio * total_steps))


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, *, num_warmup_steps: int, num_training_steps: int):
    """A ``transformers.get_scheduler`` schedule (linear, cosine, constant, ...)."""
    from transformers import get_scheduler

    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=num_warmup_steps,
                         num_training_steps=max(num_training_steps, 1))


def make_progress_scheduler(name: str, optimizer: torch.optim.Optimizer, progress: Callable[[int], float], *,
                            warmup_fraction: float = 0.0, warmup_steps: int = 0,
                            resolution: int = 1_000_000) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``transformers.get_scheduler`` schedule driven by ``progress(step)`` in [0, 1] instead of the step
    count itself (``step`` = optimizer steps taken, as the scheduler counts them).

    For runs bounded by wall-clock time: with ``progress = elapsed / budget`` a "60 minutes" run warms
    up over ``warmup_fraction`` of the time and decays to its end in 60 minutes, however fast the steps
    are. The named schedule is evaluated at ``progress * resolution`` of ``resolution`` virtual steps.
    ``warmup_steps`` > 0 adds a linear warmup over the first optimizer steps instead of a fraction.
    Call ``scheduler.step()`` once per optimizer step, as usual.
    """
    from transformers import get_scheduler

    inner = get_scheduler(name, optimizer=optimizer, num_warmup_steps=0 if warmup_steps > 0 else
                          int(round(warmup_fraction * resolution)), num_training_steps=resolution)
    curves = inner.lr_lambdas

    def lr_lambda(step: int, curve=curves[0]) -> float:
        factor = curve(min(max(progress(step), 0.0), 1.0) * resolution)
        if warmup_steps > 0:
            factor *= min(1.0, step / warmup_steps)
        return factor

    for group in optimizer.param_groups:  # ``inner`` scaled the learning rates; start from the peak again
        group["lr"] = group["initial_lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
