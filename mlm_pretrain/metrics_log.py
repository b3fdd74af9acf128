"""What a run logs: ``metrics.jsonl`` (every logged scalar, one JSON line per step), the ``accelerate``
trackers that are installed (TensorBoard, W&B, MLflow, trackio), and PNG plots of the curves.

    log = MetricsLog(layout.pretrain / "metrics.jsonl")
    log.write(step, {"train/loss": 2.5})
    plot_metrics(path, out_dir, {"loss": ["train/loss", "eval/mlm_loss"]})
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable

import torch

from .errors import UserError
from .textio import read_jsonl, write_jsonl

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Accelerator and trackers
# ----------------------------------------------------------------------------------------------
def available_trackers(report_to: Iterable[str]) -> list[str]:
    """The requested trackers that are installed; the others are skipped with a warning."""
    from accelerate.utils import imports

    checks = {"tensorboard": imports.is_tensorboard_available, "wandb": imports.is_wandb_available,
              "mlflow": imports.is_mlflow_available, "trackio": imports.is_trackio_available}
    out = []
    for name in report_to:
        if name in ("none", ""):
            continue
        check = checks.get(name)
        if check is None:
            raise UserError(f"tracking.report_to: unknown tracker {name!r}; choose from {', '.join(checks)} or none")
        if check():
            out.append(name)
        else:
            logger.warning("tracker %r is not installed; skipping it (metrics.jsonl is still written)", name)
    return out


# ----------------------------------------------------------------------------------------------
# Logging and plots
# ----------------------------------------------------------------------------------------------
class MetricsLog:
    """Append-only ``metrics.jsonl`` (always) and the Accelerate trackers (when configured).

    Only the main process writes. Each record: ``{"step": N, "time": seconds since start, key: value}``.
    """

    def __init__(self, path: Path, accelerator=None, *, append: bool = False):
        self.path = Path(path)
        self.accelerator = accelerator
        self.start = time.time()
        self.main = accelerator is None or accelerator.is_main_process
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a" if append else "w", encoding="utf-8")

    def log(self, step: int, values: dict) -> None:
        clean = {k: (float(v) if isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool) else v)
                 for k, v in values.items()}
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in clean.items() if isinstance(v, float)}, step=step)
        if self.main:
            self._f.write(json.dumps({"step": step, "time": round(time.time() - self.start, 3), **clean}) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self.main and not self._f.closed:
            self._f.close()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written after the checkpoint a resumed run restarts from), so
    ``metrics.jsonl`` of an interrupted-and-resumed run reads like one uninterrupted run."""
    path = Path(path)
    if not path.is_file():
        return
    write_jsonl(path, [r for r in read_jsonl(path) if r.get("step", 0) <= last_step])


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return read_jsonl(path)


def plot_metrics(path: Path, out_dir: Path, groups: dict[str, list[str]]) -> list[Path]:
    """One PNG per group of keys (e.g. ``{"loss": ["train/loss", "eval/mlm_loss"]}``) from metrics.jsonl.

    A plot is a picture of ``metrics.jsonl``, which keeps every value: a failure to draw one is a
    warning, never an error that could cost the run it follows."""
    try:
        return _plot_metrics(path, out_dir, groups)
    except Exception as e:  # noqa: BLE001
        logger.warning("could not draw the plots of %s (%s: %s); metrics.jsonl holds every value", path,
                       type(e).__name__, e)
        return []


def _plot_metrics(path: Path, out_dir: Path, groups: dict[str, list[str]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(path)
    written = []
    for name, keys in groups.items():
        series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float))] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, pts in series.items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=k, marker="o" if len(pts) < 20 else None)
        ax.set_xlabel("optimizer step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = Path(out_dir) / f"{name}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written
