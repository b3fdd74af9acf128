"""F1 score (binary, macro, micro, weighted), numpy only, no network.

Shipped with mlm_pretrain and loaded by path (``evaluate.load(".../f1/f1.py")``); same inputs and
output key as the canonical ``evaluate-metric/f1`` and the same numbers as
``sklearn.metrics.f1_score`` (a class with no predicted and no true example scores 0).
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), per class, then averaged."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    average (str): ``binary`` (the ``pos_label`` class only, default), ``macro`` (unweighted mean over
        classes), ``micro`` (global counts), ``weighted`` (mean weighted by class support).
    pos_label (int): the positive class for ``average="binary"`` (default 1).
    labels (list of int): classes to average over (default: those present in predictions or references).
Returns:
    f1 (float)
"""


def _per_class(pred, ref, labels):
    tp = np.array([np.sum((pred == c) & (ref == c)) for c in labels], dtype=float)
    fp = np.array([np.sum((pred == c) & (ref != c)) for c in labels], dtype=float)
    fn = np.array([np.sum((pred != c) & (ref == c)) for c in labels], dtype=float)
    return tp, fp, fn


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, average="binary", pos_label=1, labels=None):
        pred, ref = np.asarray(predictions), np.asarray(references)
        if average == "binary":
            tp, fp, fn = _per_class(pred, ref, [pos_label])
            return {"f1": float(_f1(tp, fp, fn)[0])}
        if labels is None:
            labels = np.union1d(pred, ref)
        tp, fp, fn = _per_class(pred, ref, labels)
        if average == "micro":
            return {"f1": float(_f1(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0])}
        scores = _f1(tp, fp, fn)
        if average == "macro":
            return {"f1": float(scores.mean()) if len(scores) else 0.0}
        if average == "weighted":
            support = tp + fn
            return {"f1": float(np.sum(scores * support) / support.sum()) if support.sum() > 0 else 0.0}
        raise ValueError(f"average={average!r}: choose binary, macro, micro or weighted")
