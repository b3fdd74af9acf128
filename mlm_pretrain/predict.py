"""Predict with a classifier directory and score it: ``mlm-pretrain evaluate``.

    mlm-pretrain evaluate --model runs/tiny/finetune/sentiment/final --file data/sentiment/validation.csv
    mlm-pretrain evaluate --model DIR --predict unlabelled.csv --output predictions.jsonl

The same functions write the fine-tuning stage's ``validation_predictions.jsonl``: a prediction row holds
the input text(s), ``label`` (the class name) and ``score`` (its probability; the predicted value for
regression), and ``reference`` when the file is labelled.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .config import Config, FinetuneConfig, resolve_path
from .errors import FinetuneError
from .finetune_data import (TASK_FILE, LabelSpec, as_numbers, column, drop_missing, encode_dataset, read_table,
                            take_lengths, text_columns)
from .metrics import CLASSIFICATION, REGRESSION, compute_metrics
from .model import load_model_tokenizer
from .textio import write_jsonl
from .windows import WINDOW_SETTINGS, WindowCollator, pool, window_logits

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "validation_predictions.jsonl"


def collator(tokenizer, f: FinetuneConfig):
    """The batches fine-tuning and prediction read: rows padded to the longest of each batch, rounded up to
    a multiple of 8; with ``long_documents=windows``, every window of the batch's documents
    (:class:`~mlm_pretrain.windows.WindowCollator`)."""
    from transformers import DataCollatorWithPadding

    if f.long_documents == "windows":
        return WindowCollator(tokenizer, pad_to_multiple_of=8)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


def make_loader(ds, tokenizer, batch_size: int, f: Optional[FinetuneConfig] = None):
    """Batches of ``ds`` in input order (:func:`collator`; ``f`` None: rows truncated to one window)."""
    from torch.utils.data import DataLoader

    return DataLoader(ds.with_format(None), batch_size=batch_size, shuffle=False,
                      collate_fn=collator(tokenizer, f or FinetuneConfig(long_documents="truncate")))


def score(spec: LabelSpec, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Loss and every metric of the task from logits and label ids (or values)."""
    if spec.problem_type == REGRESSION:
        preds = logits[:, 0]
        loss = torch.nn.functional.mse_loss(preds, labels.float()).item()
    else:
        preds = logits.argmax(-1)
        loss = torch.nn.functional.cross_entropy(logits, labels.long()).item()
    return {"loss": loss, **compute_metrics(spec.problem_type, preds.tolist(), labels.tolist(), spec.num_labels)}


def prediction_rows(spec: LabelSpec, logits: torch.Tensor) -> list[dict]:
    """``{"label": name, "score": probability}`` per example (regression: ``{"score": value}``)."""
    if spec.problem_type == REGRESSION:
        return [{"score": float(v)} for v in logits[:, 0]]
    probs = logits.softmax(-1)
    conf, ids = probs.max(-1)
    return [{"label": spec.names[i], "score": float(c)} for i, c in zip(ids.tolist(), conf)]


def write_rows(rows: list[dict], path: Path) -> Path:
    """Rows as .jsonl (default), .csv or .tsv, written atomically (csv fields holding line breaks are
    quoted; a JSON Lines record ends at ``\\n`` only, whatever characters its texts hold)."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv"):
        return write_jsonl(path, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows).to_csv(tmp, sep="\t" if suffix == ".tsv" else ",", index=False)
    tmp.replace(path)
    return path


def with_inputs(raw, f: FinetuneConfig, preds: list[dict], labels: bool) -> list[dict]:
    """Prediction rows with the input text(s) (and the reference label) in front."""
    cols = text_columns(f) + ([f.label_column] if labels else [])
    data = {c: column(raw, c) for c in cols}
    out = []
    for i, p in enumerate(preds):
        row = {c: data[c][i] for c in text_columns(f)}
        if labels:
            row["reference"] = data[f.label_column][i]
        out.append({**row, **p})
    return out


def _pick_column(ds, candidates: Sequence[Optional[str]], role: str, source: str) -> Optional[str]:
    for c in candidates:
        if c and c in ds.column_names:
            return c
    wanted = [c for c in candidates if c]
    raise FinetuneError(f"{source} has no {role} column ({' or '.join(map(repr, wanted))}); its columns are: "
                        f"{', '.join(ds.column_names)}. Set finetune.{role}_column")


@torch.no_grad()
def predict_logits(model, tokenizer, ds, f: FinetuneConfig, batch_size: int = 64) -> torch.Tensor:
    """Logits of a loaded classifier on the tokenized rows of ``ds`` (input order kept; windowed documents:
    one row per document, its windows pooled by ``f.window_pooling``)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for batch in make_loader(ds, tokenizer, batch_size, f):
        batch.pop("labels", None)
        counts = batch.pop("window_counts", None)
        logits = window_logits(model, {k: v.to(device) for k, v in batch.items()}, batch_size).float().cpu()
        out.append(logits if counts is None else pool(logits, counts, f.window_pooling))
    return torch.cat(out)


def evaluate_model(cfg: Config, model: str, file: Optional[str] = None, predict: Optional[str] = None,
                   output: Optional[str] = None):
    """Score a classifier directory on a labelled ``file`` and/or write predictions for ``predict``.

    Columns come from the model's ``task.json`` (what it was trained on), else from ``cfg.finetune``.
    Returns the metrics (``file``), the predictions file written (``predict``: default
    ``<predict stem>.predictions.jsonl`` beside it; .csv/.tsv/.jsonl by ``output``'s extension), or
    ``{"metrics": ..., "predictions": path}`` for both. Prediction rows: the input text(s), ``label``
    (the name) and ``score`` (its probability; the predicted value for regression).
    """
    from transformers import AutoModelForSequenceClassification

    if not file and not predict:
        raise FinetuneError("nothing to do: give --file LABELLED (to score) and/or --predict UNLABELLED")
    src = resolve_path(model)
    if not (src / "config.json").is_file():
        raise FinetuneError(f"--model {model!r} is not a model directory (no config.json); use "
                            "<output_dir>/finetune/<task>/final")
    tokenizer = load_model_tokenizer(str(src), cfg)
    clf = AutoModelForSequenceClassification.from_pretrained(str(src))
    if torch.cuda.is_available() and not cfg.finetune.cpu:
        clf = clf.cuda()
    saved = json.loads((src / TASK_FILE).read_text()) if (src / TASK_FILE).is_file() else {}
    if "labels" in saved:
        spec = LabelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["labels"].items()})
    elif clf.config.problem_type == REGRESSION or clf.config.num_labels == 1:
        spec = LabelSpec(REGRESSION)
    else:
        names = tuple(clf.config.id2label[i] for i in range(clf.config.num_labels))
        spec = LabelSpec(CLASSIFICATION, names, names)
    f = cfg.finetune
    if "long_documents" not in saved:  # a classifier trained before the setting, or elsewhere: it truncated
        saved["long_documents"] = "truncate"
        logger.info("%s does not record how it read long rows (no long_documents in its %s): reading them as "
                    "it was most likely trained, cut to the window", src, TASK_FILE)
    max_length = min(saved.get("max_length", f.max_length), getattr(clf.config, "max_position_embeddings", 10**9))
    result: Any = None

    def columns(ds, source, labelled):
        text = _pick_column(ds, [saved.get("text_column"), f.text_column], "text", source)
        pair_wanted = saved.get("text_pair_column", f.text_pair_column)
        pair = _pick_column(ds, [pair_wanted, f.text_pair_column], "text_pair", source) if pair_wanted else None
        label = _pick_column(ds, [saved.get("label_column"), f.label_column], "label", source) if labelled else None
        return dataclasses.replace(f, text_column=text, text_pair_column=pair, label_column=label or f.label_column,
                                   max_length=max_length, **{k: saved[k] for k in WINDOW_SETTINGS if k in saved})

    if file:
        ds = read_table(file, f.csv_quoting)
        fc = columns(ds, str(file), labelled=True)
        ds, n_label = drop_missing(ds, [fc.label_column])
        ds, n_text = drop_missing(ds, text_columns(fc))
        unknown = spec.unknown(as_numbers(column(ds, fc.label_column)))
        if unknown:
            first, count = next(iter(unknown.items()))
            raise FinetuneError(f"{file}: label {first!r} ({count} row(s)) is not one the model knows "
                                f"({', '.join(spec.names)})")
        enc, lengths = take_lengths(encode_dataset(ds, tokenizer, fc, spec), fc, str(file))
        logits = predict_logits(clf, tokenizer, enc, fc)
        metrics = score(spec, logits, torch.tensor(column(enc, "labels")))
        metrics.update(examples=len(ds), skipped_empty_text=n_text, skipped_missing_label=n_label, lengths=lengths)
        logger.info("%s on %s: %s", src, file, json.dumps(metrics))
        result = metrics
    if predict:
        ds = read_table(predict, f.csv_quoting)
        fc = columns(ds, str(predict), labelled=False)
        ds, n_text = drop_missing(ds, text_columns(fc))
        if n_text:
            logger.warning("%s: skipped %d row(s) with an empty text", predict, n_text)
        enc, _ = take_lengths(encode_dataset(ds, tokenizer, fc, None), fc, str(predict))
        logits = predict_logits(clf, tokenizer, enc, fc)
        out = Path(output) if output else resolve_path(predict).with_suffix(".predictions.jsonl")
        written = write_rows(with_inputs(ds, fc, prediction_rows(spec, logits), labels=False), out)
        logger.info("wrote %d predictions to %s", len(ds), out)
        result = {"metrics": result, "predictions": str(written)} if file else written
    return result
