"""Classification and regression metrics with ``evaluate``, working with no network.

    from mlm_pretrain.metrics import compute_metrics
    compute_metrics("single_label_classification", predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)

``evaluate.load("accuracy")`` fetches the metric script from the Hub, so it fails offline. The metric
scripts live inside this package instead (``mlm_pretrain/metrics/<name>/<name>.py``: ``evaluate.Metric``
subclasses written for this project, numpy only, same names and output keys as the canonical
modules) and are loaded by file path. That path goes through evaluate's ``LocalEvaluationModuleFactory``,
which only copies the script into the modules cache and imports it: no Hub call, whatever
``HF_HUB_OFFLINE`` says (a test blocks every socket to prove it). There is no fallback: a missing
script is an installation error, reported as such.

The folder ``metrics/`` beside this file has no ``__init__.py`` on purpose: its scripts are package
data (``setup.cfg`` ships ``metrics/*/*.py``), imported by ``evaluate``, never by Python's import system.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError

METRICS_DIR = Path(__file__).resolve().parent / "metrics"

CLASSIFICATION = "single_label_classification"
REGRESSION = "regression"


class MetricError(UserError):
    """An unknown metric name (the message lists the valid ones)."""


def available_metrics() -> list[str]:
    """Names of the metric scripts shipped with the package."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    """``evaluate.load`` of the packaged script ``metrics/<name>/<name>.py`` (kept in memory: no cache
    files, and every process computes on already-gathered predictions)."""
    import evaluate

    script = METRICS_DIR / name / f"{name}.py"
    if not script.is_file():
        if METRICS_DIR.is_dir() and available_metrics():
            raise MetricError(f"no metric named {name!r}; the packaged metrics are {', '.join(available_metrics())}")
        raise RuntimeError(f"the metric scripts are missing from the installed package ({METRICS_DIR}); "
                           "reinstall mlm-pretrain (setup.cfg ships metrics/*/*.py as package data)")
    return evaluate.load(str(script), keep_in_memory=True)


def metric_names(problem_type: str, num_labels: int) -> list[str]:
    """The keys :func:`compute_metrics` returns (plus ``loss`` when evaluated by the training loop)."""
    if problem_type == REGRESSION:
        return ["pearson", "spearmanr", "mse"]
    names = ["accuracy", "f1_macro", "matthews_correlation"]
    return names + ["f1"] if num_labels == 2 else names


def default_metric(problem_type: str) -> str:
    """What ``metric_for_best: auto`` means: accuracy for classification, Pearson for regression."""
    return "pearson" if problem_type == REGRESSION else "accuracy"


def greater_is_better(metric: str) -> bool:
    return metric not in ("loss", "mse")


def compute_metrics(problem_type: str, predictions: Sequence, references: Sequence, num_labels: int) -> dict:
    """Every metric of the task on label ids (classification) or values (regression).

    Classification: accuracy, macro-F1, Matthews correlation, and for two classes the F1 of the
    positive class (label id 1). Regression: Pearson, Spearman and mean squared error.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if problem_type == REGRESSION:
        p = np.asarray(predictions, dtype=np.float64)
        r = np.asarray(references, dtype=np.float64)
        return {
            "pearson": load_metric("pearsonr").compute(predictions=p, references=r)["pearsonr"],
            "spearmanr": load_metric("spearmanr").compute(predictions=p, references=r)["spearmanr"],
            "mse": float(np.mean((p - r) ** 2)),
        }
    p = np.asarray(predictions, dtype=np.int64)
    r = np.asarray(references, dtype=np.int64)
    out = {
        "accuracy": load_metric("accuracy").compute(predictions=p, references=r)["accuracy"],
        "f1_macro": load_metric("f1").compute(predictions=p, references=r, average="macro")["f1"],
        "matthews_correlation": load_metric("matthews_correlation").compute(
            predictions=p, references=r)["matthews_correlation"],
    }
    if num_labels == 2:
        out["f1"] = load_metric("f1").compute(predictions=p, references=r, average="binary", pos_label=1)["f1"]
    return out


def confusion_matrix(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> np.ndarray:
    """Counts ``m[true, predicted]`` (rows: references)."""
    m = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(m, (np.asarray(references, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return m


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Path, title: str = "") -> Path:
    """A PNG of the confusion matrix with the counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if top and matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
