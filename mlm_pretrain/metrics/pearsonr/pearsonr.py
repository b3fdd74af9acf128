"""Pearson correlation coefficient, numpy only, no network.

Shipped with mlm_pretrain and loaded by path; same inputs and output key as the canonical
``evaluate-metric/pearsonr`` and the same numbers as ``scipy.stats.pearsonr`` (nan when an input
is constant).
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Pearson correlation: the linear correlation of predictions and references, in [-1, 1]."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted values.
    references (list of float): true values.
Returns:
    pearsonr (float): nan when either input is constant (the correlation is undefined).
"""


def pearson(x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.dot(dx, dy) / denom, -1.0, 1.0))


class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}))

    def _compute(self, predictions, references):
        return {"pearsonr": pearson(predictions, references)}
