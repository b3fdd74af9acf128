"""Pretraining in phases: the first at ``data.max_seq_length``, then, with ``pretrain.long_phase``, a last
phase at a longer window that starts from the first one's weights.

    for phase in pretraining_phases(cfg):      # what `mlm-pretrain pretrain` and `run` train, in order
        phase.name, phase.cfg, phase.layout    # "long phase (512)", a one-phase config, its folders

Each phase is an ordinary one-phase run of its own config (:func:`pretraining_phases` derives them), in its
own folder (:meth:`mlm_pretrain.layout.RunLayout.phase`): the first in ``pretrain/`` as a run without a long
phase, the long one in ``pretrain/long-<length>/`` (``checkpoints/``, ``final/``, ``metrics.jsonl``). So a
phase resumes from its own checkpoints, and a finished phase is not trained again. The long phase is
BERT's phase 2 made part of the recipe: ``model.init_from`` = the first phase's ``final/`` with
``model.extend_positions`` (:mod:`mlm_pretrain.positions`), a fresh optimizer and warmup, data prepared at
the longer length (its own cache key), and ``pretrain.long_phase.share`` of the budget. Its ``final/`` is
the run's encoder (``RunLayout.final``): what ``finetune`` starts from and what is pushed.

A later phase started from the first phase as it was: when the first phase trains again (a changed config
or input, ``resume=never``), the later phase's folder is moved aside (``long-512.superseded-<time>``, kept,
never deleted) so that it is neither resumed nor taken as finished.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import Config
from .identity import RunInputs, pretrain_fingerprint
from .layout import RunLayout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One pretraining phase: a one-phase config and the folders it trains in."""

    name: str
    cfg: Config
    layout: RunLayout


def _budgets(cfg: Config, share: float) -> tuple[dict, dict]:
    """The first phase's and the long phase's bounds: ``share`` of each bound of the run to the long phase."""
    p = cfg.pretrain
    first: dict = {}
    long: dict = {}
    if p.time_budget_minutes:
        first["pretrain.time_budget_minutes"] = p.time_budget_minutes * (1 - share)
        long["pretrain.time_budget_minutes"] = p.time_budget_minutes * share
    if p.max_steps:
        steps = max(1, round(p.max_steps * (1 - share)))
        first["pretrain.max_steps"], long["pretrain.max_steps"] = steps, max(1, p.max_steps - steps)
        long["pretrain.warmup_steps"] = round(p.warmup_steps * share)
    epochs = p.num_epochs or (None if p.max_steps or p.time_budget_minutes else 1.0)
    if epochs:  # epochs of each phase's own data (the long examples are fewer, about as many tokens)
        first["pretrain.num_epochs"], long["pretrain.num_epochs"] = epochs * (1 - share), epochs * share
    return first, long


def _resume(cfg: Config, long_checkpoints: Path) -> tuple[str, str]:
    """``pretrain.resume`` for each phase: a checkpoint folder goes to the phase whose checkpoints hold it
    (the other phase then resumes as ``auto``); ``auto`` and ``never`` go to both."""
    resume = cfg.pretrain.resume
    if resume in ("auto", "never"):
        return resume, resume
    in_long = Path(resume).resolve().parent == long_checkpoints.resolve()
    return ("auto", resume) if in_long else (resume, "auto")


def pretraining_phases(cfg: Config) -> list[Phase]:
    """The phases ``cfg`` pretrains in, in order: one, or with ``pretrain.long_phase.max_seq_length`` the
    first phase and the long one (see the module docstring)."""
    layout = RunLayout.of(cfg)
    lp = cfg.pretrain.long_phase
    if not lp.max_seq_length:
        return [Phase("pretrain", cfg, layout)]
    short, length, p = cfg.data.max_seq_length, lp.max_seq_length, cfg.pretrain
    first_layout, long_layout = layout.phase(layout.pretrain), layout.phase(layout.long_phase)
    first, long = _budgets(cfg, lp.share)
    first["pretrain.resume"], long["pretrain.resume"] = _resume(cfg, long_layout.checkpoints)
    first.update({"pretrain.long_phase.max_seq_length": None, "hub.push": False})  # the run pushes the last phase
    long.update({"pretrain.long_phase.max_seq_length": None, "data.max_seq_length": length,
                 "model.init_from": str(first_layout.final), "model.extend_positions": True,
                 "model.max_position_embeddings": max(length, cfg.model.max_position_embeddings),  # what it becomes
                 "pretrain.batch_size": lp.batch_size or max(1, p.batch_size * short // length),
                 "pretrain.learning_rate": lp.learning_rate or p.learning_rate, "pretrain.batch_ramp": 0.0})
    if cfg.model.init_from and not cfg.tokenizer.pretrained:  # continued pretraining: the run's tokenizer is the
        long["tokenizer.pretrained"] = str(layout.tokenizer)  # checkpoint's own, not one inside the run
    if cfg.masking.max_predictions_per_seq:  # BERT: 20 per 128 tokens, 80 per 512
        long["masking.max_predictions_per_seq"] = math.ceil(cfg.masking.max_predictions_per_seq * length / short)
    return [Phase(f"pretrain ({short})", cfg.replace(**first), first_layout),
            Phase(f"long phase ({length})", cfg.replace(**long), long_layout)]


def already_done(final: Path, cfg: Config, inputs: Optional[RunInputs]) -> bool:
    """``final/`` holds a finished run of this config, tokenizer and data (a changed corpus trains again)."""
    try:
        metrics = json.loads((final / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    if not metrics.get("completed") or metrics.get("config_fingerprint") != pretrain_fingerprint(cfg):
        return False
    return inputs is not None and all(metrics.get(k, v) == v for k, v in inputs.stamp().items())


def set_aside(later: list[Phase]) -> None:
    """The folders of the phases after one that trains now started from its earlier weights: move them aside
    (renamed, never deleted) so they are neither resumed nor taken as finished. The main process does it."""
    if os.environ.get("RANK", "0") != "0":
        return
    for phase in later:
        folder = phase.layout.pretrain
        if folder.is_dir() and any(folder.iterdir()):
            moved = folder.with_name(f"{folder.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
            folder.rename(moved)
            logger.warning("the %s in %s started from an earlier version of the phase before it, which trains "
                           "again now: moved to %s (delete it when it is no longer needed)", phase.name, folder, moved)


def end_accelerator(accelerator, *, keep_group: bool) -> None:
    """End a phase's ``Accelerator``: its trackers, and the process group unless ``keep_group`` (a later
    phase trains in it: accelerate sets the group up once per process, and would not set it up again)."""
    if not keep_group:
        accelerator.end_training()
        return
    for tracker in accelerator.trackers:
        tracker.finish()
