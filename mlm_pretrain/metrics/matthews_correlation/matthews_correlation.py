"""Matthews correlation coefficient (binary and multiclass), numpy only, no network.

Shipped with mlm_pretrain and loaded by path; same inputs and output key as the canonical
``evaluate-metric/matthews_correlation`` and the same numbers as
``sklearn.metrics.matthews_corrcoef`` (Gorodkin's multiclass form; 0 when undefined).
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Matthews correlation: a balanced measure in [-1, 1] even when classes are skewed."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
Returns:
    matthews_correlation (float): +1 perfect, 0 no better than chance, -1 total disagreement;
        0 when a denominator is zero (all predictions or all references in one class).
"""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        pred, ref = np.asarray(predictions), np.asarray(references)
        classes = np.union1d(pred, ref)
        t = np.array([np.sum(ref == c) for c in classes], dtype=float)  # true count per class
        p = np.array([np.sum(pred == c) for c in classes], dtype=float)  # predicted count per class
        c = float(np.sum(pred == ref))
        s = float(len(ref))
        cov_ytyp = c * s - np.dot(t, p)
        cov_ypyp = s * s - np.dot(p, p)
        cov_ytyt = s * s - np.dot(t, t)
        if cov_ypyp * cov_ytyt == 0:
            return {"matthews_correlation": 0.0}
        return {"matthews_correlation": float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))}
