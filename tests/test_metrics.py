"""The packaged evaluate metrics: same numbers as scikit-learn / scipy, and loadable with no network."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mlm_pretrain.metrics import (CLASSIFICATION, METRICS_DIR, REGRESSION, MetricError, available_metrics,
                                  compute_metrics, confusion_matrix, load_metric, metric_names,
                                  plot_confusion_matrix)

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")

CASES = [(seed, k, n) for seed in range(4) for k, n in ((2, 50), (3, 80), (5, 200))]


def test_packaged_metric_scripts():
    assert available_metrics() == ["accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr"]
    # package data only: no __init__.py anywhere, so Python never imports them as a package
    assert not list(METRICS_DIR.rglob("__init__.py"))


@pytest.mark.parametrize("seed,k,n", CASES)
def test_classification_metrics_equal_sklearn(seed, k, n):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.6, refs, rng.integers(0, k, n))  # correlated, imperfect
    got = compute_metrics(CLASSIFICATION, preds.tolist(), refs.tolist(), num_labels=k)
    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(refs, preds, average="macro"), abs=1e-12)
    assert got["matthews_correlation"] == pytest.approx(sklearn_metrics.matthews_corrcoef(refs, preds), abs=1e-12)
    if k == 2:
        assert got["f1"] == pytest.approx(sklearn_metrics.f1_score(refs, preds), abs=1e-12)
    else:
        assert "f1" not in got
    for avg in ("micro", "weighted"):
        ours = load_metric("f1").compute(predictions=preds, references=refs, average=avg)["f1"]
        assert ours == pytest.approx(sklearn_metrics.f1_score(refs, preds, average=avg), abs=1e-12)


def test_classification_edge_cases_match_sklearn():
    # a class never predicted, all predictions one class (MCC undefined -> 0), perfect and inverted
    cases = [([0, 0, 0, 0], [0, 1, 0, 1]), ([1, 1, 1], [1, 1, 1]), ([0, 1, 1, 0], [1, 0, 0, 1]),
             ([2, 2, 0, 1], [0, 2, 2, 1])]
    for preds, refs in cases:
        got = compute_metrics(CLASSIFICATION, preds, refs, num_labels=3)
        with np.errstate(all="ignore"):
            assert got["matthews_correlation"] == pytest.approx(sklearn_metrics.matthews_corrcoef(refs, preds), abs=1e-12)
        assert got["f1_macro"] == pytest.approx(
            sklearn_metrics.f1_score(refs, preds, average="macro", zero_division=0), abs=1e-12)
    # positive class absent from both: sklearn (zero_division=0) says 0
    assert compute_metrics(CLASSIFICATION, [0, 0], [0, 0], num_labels=2)["f1"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_regression_metrics_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=120)
    preds = refs + rng.normal(scale=0.8, size=120)
    refs_tied = np.round(refs * 2) / 2  # many ties: average ranks
    got = compute_metrics(REGRESSION, preds.tolist(), refs_tied.tolist(), num_labels=1)
    assert got["pearson"] == pytest.approx(scipy_stats.pearsonr(preds, refs_tied)[0], abs=1e-12)
    assert got["spearmanr"] == pytest.approx(scipy_stats.spearmanr(preds, refs_tied)[0], abs=1e-12)
    assert got["mse"] == pytest.approx(sklearn_metrics.mean_squared_error(refs_tied, preds), abs=1e-12)


def test_regression_constant_input_is_nan_like_scipy():
    got = compute_metrics(REGRESSION, [1.0, 1.0, 1.0], [0.0, 1.0, 2.0], num_labels=1)
    assert math.isnan(got["pearson"]) and math.isnan(got["spearmanr"])


def test_metric_names_and_unknown_metric():
    assert metric_names(CLASSIFICATION, 2) == ["accuracy", "f1_macro", "matthews_correlation", "f1"]
    assert metric_names(CLASSIFICATION, 3) == ["accuracy", "f1_macro", "matthews_correlation"]
    assert metric_names(REGRESSION, 1) == ["pearson", "spearmanr", "mse"]
    with pytest.raises(MetricError, match="accuracy, f1, matthews_correlation, pearsonr, spearmanr"):
        load_metric("bleu")


def test_confusion_matrix_equals_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    m = confusion_matrix(preds, refs, 4)
    np.testing.assert_array_equal(m, sklearn_metrics.confusion_matrix(refs, preds, labels=range(4)))
    png = plot_confusion_matrix(m, ["a", "b", "c", "d"], tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


OFFLINE_SCRIPT = r"""
import json, socket
attempts = []
def refuse(*a, **k):
    attempts.append(repr(a[:2]))
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from mlm_pretrain.metrics import compute_metrics, available_metrics, load_metric
for name in available_metrics():
    load_metric(name)
out = [compute_metrics("single_label_classification", [0, 1, 1, 0], [0, 1, 0, 0], 2),
       compute_metrics("regression", [0.1, 0.4, 0.3], [0.0, 0.5, 0.2], 1), len(attempts)]
import evaluate
try:  # the control: loading by Hub name does try the network, and the guard sees it
    evaluate.load("accuracy")
except Exception:
    pass
print(json.dumps(out + [len(attempts)]))
"""


@pytest.mark.slow
def test_metrics_load_with_every_socket_blocked_and_offline_flags_unset(tmp_path):
    """evaluate's load-by-path must not touch the network even when HF_HUB_OFFLINE is unset (a Hub
    lookup would raise here, through the patched socket functions, instead of silently waiting)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # a cold modules cache: nothing can come from a previous load
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cls, reg, attempts_ours, attempts_with_hub_name = json.loads(proc.stdout.strip().splitlines()[-1])
    assert attempts_ours == 0
    assert attempts_with_hub_name > 0  # the guard works: a Hub lookup is caught by it
    assert cls == {"accuracy": 0.75, "f1_macro": pytest.approx(0.7333333333333334), "matthews_correlation":
                   pytest.approx(0.5773502691896258), "f1": pytest.approx(0.6666666666666666)}
    assert reg["pearson"] == pytest.approx(scipy_stats.pearsonr([0.1, 0.4, 0.3], [0.0, 0.5, 0.2])[0])
    # the scripts really were loaded through evaluate's modules cache (by path), not imported directly
    assert list((tmp_path / "hf_home").rglob("accuracy.py"))
