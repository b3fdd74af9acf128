"""Is the encoder becoming useful? A downstream probe while pretraining, and the baselines it is read against.

    probe = Probe.from_config(cfg, tokenizer, model.config)   # reads the recipe's fine-tuning task once
    probe(model)   # {"probe/accuracy": ..., "probe/random_init_accuracy": ..., "probe/tfidf_accuracy": ...}

The MLM loss says whether the encoder predicts tokens, not whether its features help the task a user
pretrains for. At each evaluation the pretraining loop (``pretrain.probe_examples > 0``) mean-pools the
frozen encoder's last hidden states over a few hundred labelled rows of the recipe's fine-tuning task
(``finetune.train_file``; a fixed split) and fits a logistic regression on them. The same probe on a
randomly initialised encoder of the same architecture (computed once) and a TF-IDF + logistic
regression on the same rows (once) are the two lines the probe must rise above.

The corpus side of the same question: :func:`mlm_pretrain.prepare.unigram_cross_entropy`, the validation MLM loss of a
model that knows only token frequencies. A validation loss at that level means the encoder has learnt
nothing beyond them (the plateau post-LN BERT sits on for its first thousands of steps).
"""
from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .config import Config
from .errors import FinetuneError
from .finetune_data import column, prepare_task
from .metrics import REGRESSION, compute_metrics

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Baselines (pure)
# ----------------------------------------------------------------------------------------------
def plateau_reading(mlm_loss: float, unigram: Optional[float]) -> str:
    """One line reading a validation MLM loss against the unigram level."""
    if unigram is None or not math.isfinite(mlm_loss):
        return ""
    gap = unigram - mlm_loss
    if gap < 0.1:
        return (f"validation MLM loss {mlm_loss:.2f} nats is still at the unigram level ({unigram:.2f}): the "
                "encoder knows token frequencies only")
    return f"validation MLM loss {mlm_loss:.2f} nats is {gap:.2f} nats below the unigram level ({unigram:.2f})"


def tfidf_accuracy(train: tuple[Sequence[str], Optional[Sequence[str]], Sequence],
                   test: tuple[Sequence[str], Optional[Sequence[str]], Sequence]) -> dict[str, float]:
    """Word 1-2-gram TF-IDF + logistic regression: ``(texts, pair texts or None, labels)`` for each split.
    For pairs the features are the products and absolute differences of the two texts' vectors.
    Returns accuracy (and F1 for two classes): the floor a useful encoder must beat."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    vec.fit(list(train[0]) + list(train[1] or []))

    def features(texts, pairs):
        if pairs is None:
            return vec.transform(list(texts))
        a, b = vec.transform(list(texts)), vec.transform(list(pairs))
        return hstack([a.multiply(b), abs(a - b)]).tocsr()

    y_train, y_test = [str(v) for v in train[2]], [str(v) for v in test[2]]
    clf = LogisticRegression(max_iter=2000, C=4.0).fit(features(train[0], train[1]), y_train)
    pred = clf.predict(features(test[0], test[1]))
    out = {"accuracy": float(accuracy_score(y_test, pred))}
    if len(set(y_train)) == 2:
        out["f1"] = float(f1_score(y_test, pred, pos_label=sorted(set(y_train))[-1]))
    return out


def task_tfidf(cfg: Config, tokenizer) -> dict[str, float]:
    """:func:`tfidf_accuracy` on the fine-tuning task of ``cfg``: the same cleaned and subsampled train
    and validation rows as ``finetune(cfg)`` (labels as its ``LabelSpec`` reads them)."""
    f = cfg.finetune
    task = prepare_task(cfg, tokenizer)

    def split(name: str):
        raw = task.raw[name]
        return (column(raw, f.text_column), column(raw, f.text_pair_column) if f.text_pair_column else None,
                [task.spec.encode(v) for v in column(raw, f.label_column)])

    return tfidf_accuracy(split("train"), split("validation"))


def tfidf_scores(cfg: Config, tokenizer, split: str = "validation") -> dict[str, float]:
    """Every metric of ``cfg``'s task (:func:`mlm_pretrain.metrics.compute_metrics`) for word 1-2-gram
    TF-IDF features (pairs: products and absolute differences of the two texts' vectors, as
    :func:`tfidf_accuracy`) with logistic regression, or ridge regression for a regression task; on the
    same cleaned and subsampled rows as ``finetune(cfg)``, fitted on train and scored on ``split``
    (whole texts: TF-IDF has no window): the floor the task suite reports."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    f = cfg.finetune
    task = prepare_task(cfg, tokenizer)
    if split not in task.raw:
        raise FinetuneError(f"task {f.task_name!r} has no {split} split to score TF-IDF on; give it a {split} file")
    raw = {name: task.raw[name] for name in ("train", split)}
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    vec.fit(column(raw["train"], f.text_column) + (column(raw["train"], f.text_pair_column) if f.text_pair_column else []))

    def features(ds):
        a = vec.transform(column(ds, f.text_column))
        if not f.text_pair_column:
            return a
        b = vec.transform(column(ds, f.text_pair_column))
        return hstack([a.multiply(b), abs(a - b)]).tocsr()

    y = {name: [task.spec.encode(v) for v in column(ds, f.label_column)] for name, ds in raw.items()}
    regression = task.spec.problem_type == REGRESSION
    model = Ridge(alpha=1.0) if regression else LogisticRegression(max_iter=2000, C=4.0)
    predictions = model.fit(features(raw["train"]), y["train"]).predict(features(raw[split]))
    return compute_metrics(task.spec.problem_type, predictions, y[split], task.spec.num_labels)


def linear_probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of a logistic regression on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=1000, C=0.1).fit(scaler.transform(x_train), y_train)
    return float((clf.predict(scaler.transform(x_test)) == y_test).mean())


# ----------------------------------------------------------------------------------------------
# Frozen features
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def pooled_features(model, batches: list[dict]) -> np.ndarray:
    """Mean of the last hidden states over the non-padding tokens, one row per example, from the
    encoder inside any pretraining or classification model (``model.base_model``)."""
    encoder = getattr(model, "base_model", model)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    accepted = inspect.signature(encoder.forward).parameters  # e.g. ModernBERT has no token_type_ids
    out = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if k in accepted}
        hidden = encoder(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu())
    encoder.train(was_training)
    return torch.cat(out).numpy()


@dataclass
class Probe:
    """The probe's fixed rows (tokenized once) and its two baselines (computed once)."""

    train_batches: list[dict]
    test_batches: list[dict]
    y_train: np.ndarray
    y_test: np.ndarray
    baselines: dict[str, float]
    task: str

    @classmethod
    def from_config(cls, cfg: Config, tokenizer, model_config, *, seed: Optional[int] = None) -> Optional["Probe"]:
        """The probe for ``cfg``'s fine-tuning task (files or a Hub dataset), or None (with the reason
        logged) when the recipe has no labelled task, the task is regression, or ``pretrain.probe_examples``
        is 0."""
        from transformers import AutoModel, DataCollatorWithPadding

        p = cfg.pretrain
        if not p.probe_examples:
            return None
        if not (cfg.finetune.train_file or cfg.finetune.hub_dataset):
            logger.info("no downstream probe: the recipe has no labelled task (finetune.train_file or hub_dataset)")
            return None
        max_length = min(cfg.finetune.max_length, cfg.data.max_seq_length,
                         getattr(model_config, "max_position_embeddings", 10**9))
        probe_cfg = cfg.replace(**{"finetune.max_train_examples": p.probe_examples,
                                   "finetune.max_eval_examples": p.probe_eval_examples,
                                   "finetune.max_length": max_length,
                                   "finetune.long_documents": "truncate"})  # one feature vector per row
        t0 = time.perf_counter()
        task = prepare_task(probe_cfg, tokenizer)
        if task.spec.problem_type == REGRESSION:
            logger.info("no downstream probe: %s is a regression task", cfg.finetune.task_name)
            return None
        collate = DataCollatorWithPadding(tokenizer)

        def batches(ds) -> list[dict]:
            rows = ds.remove_columns("labels")
            return [dict(collate([rows[i] for i in range(s, min(s + 64, len(rows)))]))
                    for s in range(0, len(rows), 64)]

        train, test = task.encoded["train"], task.encoded["validation"]
        probe = cls(batches(train), batches(test), np.asarray(train["labels"]), np.asarray(test["labels"]), {},
                    cfg.finetune.task_name)
        f = cfg.finetune
        raw = task.raw
        probe.baselines["probe/tfidf_accuracy"] = tfidf_accuracy(
            (raw["train"][f.text_column], raw["train"][f.text_pair_column] if f.text_pair_column else None,
             raw["train"][f.label_column]),
            (raw["validation"][f.text_column],
             raw["validation"][f.text_pair_column] if f.text_pair_column else None,
             raw["validation"][f.label_column]))["accuracy"]
        # Seeded, but on a forked RNG: built at a run's first evaluation, which comes at another step
        # after a resume, so touching the global RNG here would break exact resume (dropout, ELECTRA's samples).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1 if seed is None else seed)
            random_encoder = AutoModel.from_config(model_config)
        probe.baselines["probe/random_init_accuracy"] = probe.accuracy(random_encoder)
        majority = np.bincount(probe.y_test).max() / len(probe.y_test)
        probe.baselines["probe/majority_accuracy"] = float(majority)
        logger.info("downstream probe on %s: %d train / %d test rows; random-init encoder %.3f, TF-IDF %.3f, "
                    "majority class %.3f (%.1f s)", probe.task, len(probe.y_train), len(probe.y_test),
                    probe.baselines["probe/random_init_accuracy"], probe.baselines["probe/tfidf_accuracy"], majority,
                    time.perf_counter() - t0)
        return probe

    def accuracy(self, model) -> float:
        return linear_probe_accuracy(pooled_features(model, self.train_batches), self.y_train,
                                     pooled_features(model, self.test_batches), self.y_test)

    def __call__(self, model) -> dict[str, float]:
        """The probe on ``model``'s encoder now, beside the baselines, and its cost in seconds."""
        t0 = time.perf_counter()
        out = {"probe/accuracy": self.accuracy(model), **self.baselines}
        out["probe/seconds"] = time.perf_counter() - t0
        return out
