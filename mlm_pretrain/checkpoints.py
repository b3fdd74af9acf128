"""Atomic checkpoints of the pretraining loop: ``accelerate``'s full state (model, optimizer, scheduler,
scaler, RNG) plus the loop's own position, keep-last-K, and resume from the newest complete one.

    save_checkpoint(accelerator, layout.checkpoints, step, state, keep_last=2)
    state = resume_from_checkpoints(accelerator, layout.checkpoints, "auto", ...)

A checkpoint folder is complete once :data:`COMPLETE_MARKER` is written, last; an incomplete one (a run
killed while saving) is never resumed from.
"""
from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Optional


from .errors import UserError
from .textio import atomic_write_json

logger = logging.getLogger(__name__)


CHECKPOINT_PREFIX = "step-"
COMPLETE_MARKER = "checkpoint.json"  # written last: a folder without it is incomplete


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def checkpoint_step(path: Path) -> int:
    return int(Path(path).name[len(CHECKPOINT_PREFIX):])


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (folders without the marker are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if not (p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()):
            continue
        if not (p / COMPLETE_MARKER).is_file():
            logger.warning("skipping incomplete checkpoint %s (no %s; a save was interrupted)", p, COMPLETE_MARKER)
            continue
        found.append(p)
    return sorted(found, key=checkpoint_step)


def save_checkpoint(accelerator, root: Path, step: int, state: dict, *, keep_last: int,
                    protect: Callable[[Path], bool] = lambda p: False) -> Path:
    """Save the full training state (``accelerator.save_state``) plus ``state`` to ``root/step-N``.

    Written to a temporary folder and renamed once complete, so a crash mid-save never corrupts the
    last good checkpoint. Keeps the newest ``keep_last`` checkpoints; ``protect(path)`` keeps a folder
    that something still needs (e.g. a Hub push in flight). Every process must call this.
    """
    root = Path(root)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / COMPLETE_MARKER, {"step": step, "time": time.time(), **state})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(root)[:-keep_last]:
            if protect(old):
                logger.info("keeping %s until its push finishes", old)
                continue
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def find_resume_checkpoint(root: Path, resume: str) -> Optional[Path]:
    """``never`` -> None; ``auto`` -> the newest complete checkpoint (or None); else that directory."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(root)
        return found[-1] if found else None
    p = Path(resume)
    if not (p / COMPLETE_MARKER).is_file():
        raise UserError(f"pretrain.resume={resume!r} is not a complete checkpoint directory "
                        f"(no {COMPLETE_MARKER}); use resume=auto or a step-N folder")
    return p


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore the full training state from ``path``; returns the extra ``state`` saved with it."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / COMPLETE_MARKER).read_text())


def resume_from_checkpoints(accelerator, root: Path, resume: str,
                            check: Callable[[dict], None] = lambda state: None) -> tuple[Optional[Path], dict]:
    """Restore the newest usable checkpoint; returns ``(path, state)`` or ``(None, {})`` for a fresh start.

    ``resume=auto`` tries the complete checkpoints under ``root`` from newest to oldest: one that fails
    to load (a corrupt file) is skipped with a warning and the previous one is used. Every checkpoint
    being unloadable is an error (loading may have overwritten part of the model). An explicit
    directory must load. ``check(state)`` runs on the saved ``state`` before loading: it raises a
    ``UserError`` for a checkpoint that is readable but incompatible with this run (that is never
    taken for corruption).
    """
    if resume == "never":
        return None, {}

    def marker(path: Path) -> dict:
        state = json.loads((Path(path) / COMPLETE_MARKER).read_text())
        check(state)
        return state

    if resume != "auto":
        path = find_resume_checkpoint(root, resume)
        marker(path)
        try:
            return path, load_checkpoint(accelerator, path)
        except Exception as e:
            raise UserError(f"cannot resume from {path}: the checkpoint is unreadable ({type(e).__name__}: {e}); "
                            "pick another step-N folder or use resume=auto") from e
    candidates = list_checkpoints(root)
    for path in reversed(candidates):
        try:
            marker(path)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - an unreadable marker: try the previous checkpoint
            logger.warning("skipping checkpoint %s: unreadable %s (%s)", path, COMPLETE_MARKER, e)
            continue
        try:
            return path, load_checkpoint(accelerator, path)
        except Exception as e:  # noqa: BLE001 - any unreadable file means: try the previous one
            logger.warning("skipping checkpoint %s: it cannot be loaded (%s: %s); trying the previous one",
                           path, type(e).__name__, e)
    if candidates:
        raise UserError(f"no checkpoint under {root} can be loaded (all {len(candidates)} are corrupt); "
                        "delete them or set pretrain.resume=never to start over")
    return None, {}


class SignalStop:
    """While active, SIGTERM / SIGINT only set ``signum``; the loop saves a checkpoint and stops at the
    next step boundary (after an evaluation in progress). A second signal stops at once, unsaved."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            logger.warning("second %s: stopping now without a checkpoint", signal.Signals(signum).name)
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.signum = signum
        logger.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

    def __enter__(self) -> "SignalStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
