"""Spearman rank correlation, numpy only, no network.

Shipped with mlm_pretrain and loaded by path; same inputs and output key as the canonical
``evaluate-metric/spearmanr`` and the same numbers as ``scipy.stats.spearmanr`` (Pearson correlation
of the ranks, ties given their average rank; nan when an input is constant).
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Spearman correlation: the Pearson correlation of the ranks, in [-1, 1]."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted values.
    references (list of float): true values.
Returns:
    spearmanr (float): nan when either input is constant.
"""


def average_ranks(x):
    """Ranks 1..n with ties sharing their average rank (scipy.stats.rankdata 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(x, y):
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    return float("nan") if denom == 0 else float(np.clip(np.dot(dx, dy) / denom, -1.0, 1.0))


class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}))

    def _compute(self, predictions, references):
        return {"spearmanr": _pearson(average_ranks(predictions), average_ranks(references))}
