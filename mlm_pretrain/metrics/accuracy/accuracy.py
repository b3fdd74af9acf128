"""Accuracy: the fraction of predictions equal to the reference (numpy only, no network).

Shipped with mlm_pretrain and loaded by path (``evaluate.load(".../accuracy/accuracy.py")``), because
``evaluate.load("accuracy")`` downloads its script from the Hub. Same name, inputs and output key as
the canonical ``evaluate-metric/accuracy``.
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy = (TP + TN) / N: the fraction of predictions equal to their reference."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool): return the fraction (default) instead of the count of correct predictions.
    sample_weight (list of float): per-example weights (default: all 1).
Returns:
    accuracy (float): the fraction (or count) of correct predictions.
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        pred, ref = np.asarray(predictions), np.asarray(references)
        w = np.ones(len(ref)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        correct = float(np.sum(w * (pred == ref)))
        return {"accuracy": correct / float(np.sum(w)) if normalize else correct}
