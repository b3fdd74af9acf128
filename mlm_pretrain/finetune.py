"""Stage 5: fine-tune the encoder for sequence classification (or regression), one run per seed.

    mlm-pretrain finetune --config tiny                                  # data/sentiment, the run's pretrain/final
    mlm-pretrain finetune --config sst2 finetune.model=runs/mini/pretrain/final finetune.seeds=[1,2,3]
    mlm-pretrain finetune finetune.init=random                           # same architecture, no pretraining
    mlm-pretrain evaluate --model runs/tiny/finetune/sentiment/final --file data/sentiment/validation.csv
    mlm-pretrain evaluate --model DIR --predict unlabelled.csv --output predictions.jsonl

Data: csv / tsv / jsonl / parquet files (or a Hub dataset when online) with one or two text columns and
a label column. Integer or string labels make a classifier whose ``id2label`` holds the label names;
float labels make a regressor (one output; Pearson / Spearman). Without a validation file a seeded
``validation_fraction`` of train is held out (the same rows for every seed).

Output, under ``<output_dir>/finetune/<task>/``::

    seed-<s>/           one fine-tune per seed: best/ (model + tokenizer), checkpoints/, metrics.jsonl,
                        results.json, validation_predictions.jsonl, loss.png / eval.png
    summary.json        every seed's validation (and test) metrics, their median and standard deviation
    final/              the classifier of the *median* seed (see below), plus metrics.json,
                        validation_predictions.jsonl, confusion_matrix.png, task.json

``final/`` holds the best checkpoint (by ``metric_for_best``) of the seed whose validation score is the
median of the seeds (for an even count, the better of the two middle ones). Publishing the best seed
would report the luckiest draw; the median seed is the model whose score the summary's median
describes. ``final/`` loads with ``AutoModelForSequenceClassification`` and
``pipeline("text-classification")`` returns the label names.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .config import Config, FinetuneConfig, resolve_path, save_resolved, to_dict
from .errors import UserError
from .textio import read_jsonl, write_jsonl
from .metrics import (CLASSIFICATION, REGRESSION, compute_metrics, confusion_matrix, default_metric,
                      greater_is_better, metric_names, plot_confusion_matrix)
from .training import (atomic_write_json, check_writable, find_resume_checkpoint, load_checkpoint,
                       make_accelerator, make_optimizer, make_scheduler, MetricsLog, plot_metrics,
                       save_checkpoint, warmup_steps_for)

logger = logging.getLogger(__name__)

TASK_FILE = "task.json"  # in a classifier directory: columns, labels and max_length it was trained with


class FinetuneError(UserError):
    """Bad fine-tuning input (data, labels, model directory); the message names the problem and the fix."""


# ----------------------------------------------------------------------------------------------
# Reading labelled files
# ----------------------------------------------------------------------------------------------
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def read_table(path: str | Path, csv_quoting: str = "auto"):
    """One file as a ``datasets.Dataset`` (csv, tsv, jsonl/json, parquet).

    csv/tsv cells are read as written (``na_filter=False``): an empty cell is an empty string, never a
    NaN that would turn an integer label column into floats, and texts like "NA" stay text. GLUE-style
    tsv files use no quoting, so ``auto`` reads quotes as text in .tsv files.
    """
    import datasets

    p = resolve_path(path)
    if not p.is_file():
        raise FinetuneError(f"data file {str(path)!r} does not exist; fix finetune.train_file / validation_file / "
                            "test_file (relative paths are looked up in the working directory, then the checkout)")
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise FinetuneError(f"{p}: unsupported file type {suffix!r}; use one of {', '.join(FORMATS)}")
    kwargs: dict[str, Any] = {}
    if FORMATS[suffix] == "csv":
        quoting = csv_quoting if csv_quoting != "auto" else ("none" if suffix == ".tsv" else "csv")
        kwargs = {"sep": "\t" if suffix == ".tsv" else ",", "na_filter": False,
                  "quoting": 3 if quoting == "none" else 0}  # csv.QUOTE_NONE / QUOTE_MINIMAL
    try:
        return datasets.load_dataset(FORMATS[suffix], data_files=str(p), split="train", **kwargs)
    except Exception as e:  # pandas / arrow parse errors: name the file
        raise FinetuneError(f"cannot read {p} as {FORMATS[suffix]}: {e}") from e


def check_columns(ds, needed: dict[str, Optional[str]], source: str) -> None:
    """Every configured column (``{"finetune.text_column": "text", ...}``) exists in ``ds``."""
    for key, col in needed.items():
        if col is not None and col not in ds.column_names:
            raise FinetuneError(f"{key}={col!r} is not a column of {source}; its columns are: "
                                f"{', '.join(ds.column_names)}. Set {key} to one of them")


def is_missing(value: Any) -> bool:
    """An empty cell: None, NaN, or a blank string."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def column(ds, name: str) -> list:
    """A whole column as a Python list, in one Arrow conversion (``ds[name]`` formats row by row:
    seconds on SST-2's 67k rows)."""
    return ds.select_columns([name])[:][name]


def drop_missing(ds, columns: Sequence[str]):
    """Rows whose ``columns`` are all present; returns ``(dataset, number of rows dropped)``."""
    keep = [i for i, row in enumerate(zip(*(column(ds, c) for c in columns))) if not any(is_missing(v) for v in row)]
    dropped = len(ds) - len(keep)
    return (ds.select(keep) if dropped else ds), dropped


# ----------------------------------------------------------------------------------------------
# Labels (pure)
# ----------------------------------------------------------------------------------------------
def _label_key(value: Any) -> str:
    """Canonical text of a class label: 1, 1.0, "1" and " 1.0" are the same class (a csv column of integral
    floats is read as text when one of its cells is empty)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    key = str(value).strip()
    return key.split(".")[0] if _INTEGRAL_FLOAT.fullmatch(key) else key


_INTEGRAL_FLOAT = re.compile(r"-?\d+\.0+")


def _numeric(values: Sequence[Any]) -> list:
    """Strings that all parse as integers (or all as floats) become numbers (csv cells are text when
    a column has an empty cell)."""
    if not values or not all(isinstance(v, str) for v in values):
        return list(values)
    for cast in (int, float):
        try:
            return [cast(v) for v in values]
        except ValueError:
            continue
    return list(values)


@dataclass(frozen=True)
class LabelSpec:
    """How labels map to model outputs: ``keys[i]`` (a label as written in the data) is class ``i``,
    called ``names[i]``. Regression has no classes."""

    problem_type: str
    keys: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.keys)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def encode(self, value: Any):
        if self.problem_type == REGRESSION:
            return float(value)
        i = self._lookup(_label_key(value))
        if i is None:
            raise KeyError(value)
        return i

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        index = {k: i for i, k in enumerate(self.keys)}
        index.update({n: i for i, n in enumerate(self.names)})  # names are accepted too
        return index

    @functools.cached_property
    def _folded(self) -> dict[str, int]:
        """Case-insensitive spellings that name exactly one class (``Positive`` for ``positive``)."""
        classes: dict[str, set[int]] = {}
        for k, i in self._index.items():
            classes.setdefault(k.casefold(), set()).add(i)
        return {k: next(iter(ids)) for k, ids in classes.items() if len(ids) == 1}

    def _lookup(self, key: str) -> Optional[int]:
        i = self._index.get(key)
        return self._folded.get(key.casefold()) if i is None else i

    def unknown(self, values: Sequence[Any]) -> dict[str, int]:
        """Labels in ``values`` that are not classes, with their counts."""
        if self.problem_type == REGRESSION:
            return {}
        out: dict[str, int] = {}
        for v in values:
            k = _label_key(v)
            if self._lookup(k) is None:
                out[k] = out.get(k, 0) + 1
        return out

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def infer_label_spec(values: Sequence[Any], *, problem_type: str = "auto", label_names: Sequence[str] = (),
                     column: str = "label") -> LabelSpec:
    """The classes (or regression) implied by the training labels ``values`` (missing ones removed).

    Floats mean regression under ``auto``. Classes are sorted (numerically when they are numbers).
    ``label_names`` names integer classes 0..K-1, or fixes the order of string classes.
    """
    values = _numeric([v for v in values if not is_missing(v)])
    if not values:
        raise FinetuneError(f"the training data has no labels in column {column!r}")
    floats = any(isinstance(v, float) and not float(v).is_integer() for v in values)
    if problem_type == "regression" or (problem_type == "auto" and floats):
        if label_names:
            raise FinetuneError("finetune.label_names is set but this is a regression task (float labels); "
                                "remove label_names, or set finetune.problem_type=classification")
        try:
            [float(v) for v in values]
        except (TypeError, ValueError):
            raise FinetuneError(f"finetune.problem_type=regression needs numeric labels, but column {column!r} "
                                f"holds values like {values[0]!r}") from None
        return LabelSpec(REGRESSION)
    if floats:
        raise FinetuneError(f"column {column!r} holds fractional labels (e.g. {next(v for v in values if isinstance(v, float))}) "
                            "but finetune.problem_type=classification; use problem_type=regression or auto")
    if not label_names:
        values = _merge_case_variants([_label_key(v) for v in values], column)
    keys = sorted({_label_key(v) for v in values},
                  key=lambda k: (0, int(k), "") if k.lstrip("-").isdigit() else (1, 0, k))
    if label_names:
        names = tuple(label_names)
        if all(k.lstrip("-").isdigit() for k in keys):  # integer labels 0..K-1 named by label_names
            bad = [k for k in keys if not 0 <= int(k) < len(names)]
            if bad:
                raise FinetuneError(f"label {bad[0]} is outside 0..{len(names) - 1}, the ids that finetune.label_names "
                                    f"({', '.join(names)}) names; add a name or fix the data")
            return LabelSpec(CLASSIFICATION, tuple(str(i) for i in range(len(names))), names)
        missing = [k for k in keys if k not in names]
        if missing:
            raise FinetuneError(f"label {missing[0]!r} is not in finetune.label_names ({', '.join(names)}); "
                                "list every class there, or leave label_names empty")
        return LabelSpec(CLASSIFICATION, names, names)
    if len(keys) < 2:
        raise FinetuneError(f"the training labels in column {column!r} have a single class ({keys[0]!r}); "
                            "a classifier needs at least two")
    return LabelSpec(CLASSIFICATION, tuple(keys), tuple(keys))


def _merge_case_variants(keys: list[str], column: str) -> list[str]:
    """Labels that differ only in case (``positive`` / ``Positive``, hand-labelled or merged data) are one
    class, spelled as most rows spell it; logged, since ``label_names`` is how to keep them apart."""
    counts: dict[str, Counter] = {}
    for k in keys:
        counts.setdefault(k.casefold(), Counter())[k] += 1
    canon = {}
    for spellings in counts.values():
        name = min(spellings, key=lambda s: (-spellings[s], s))
        canon.update({s: name for s in spellings})
        if len(spellings) > 1:
            logger.warning("labels %s in column %r differ only in case: treated as one class %r (to keep them "
                           "apart, list them in finetune.label_names)",
                           ", ".join(f"{s!r} ({n} rows)" for s, n in sorted(spellings.items())), column, name)
    return [canon[k] for k in keys]


# ----------------------------------------------------------------------------------------------
# The task: splits, labels, tokenization
# ----------------------------------------------------------------------------------------------
@dataclass
class Task:
    """Tokenized splits (``labels`` column), the raw splits (for prediction files) and the labels."""

    spec: LabelSpec
    raw: dict                     # split -> datasets.Dataset with the original columns
    encoded: dict                 # split -> datasets.Dataset with input_ids, ..., labels
    skipped: dict = field(default_factory=dict)   # split -> {"empty_text": n, "missing_label": n}


def _text_columns(f: FinetuneConfig) -> list[str]:
    return [f.text_column] + ([f.text_pair_column] if f.text_pair_column else [])


def _hub_splits(f: FinetuneConfig) -> dict:
    import datasets

    try:
        dd = datasets.load_dataset(f.hub_dataset, f.hub_config)
    except Exception as e:
        raise FinetuneError(f"cannot load Hub dataset {f.hub_dataset!r} ({f.hub_config}): {e}. It needs network "
                            "access; offline, use finetune.train_file / validation_file") from e
    out = {"train": dd["train"]}
    for split in ("validation", "test"):
        if split in dd:
            ds = dd[split]
            if f.label_column in ds.column_names:  # GLUE test splits carry label -1: unlabelled
                ds = ds.filter(lambda x: x != -1, input_columns=f.label_column)
            if len(ds):
                out[split] = ds
    return out


def load_splits(cfg: Config) -> dict:
    """``{"train"[, "validation", "test"]}`` datasets with their original columns, checked."""
    f = cfg.finetune
    if f.hub_dataset:
        splits = _hub_splits(f)
        sources = {s: f"{f.hub_dataset} [{s}]" for s in splits}
    else:
        if not f.train_file:
            raise FinetuneError("no training data: set finetune.train_file (or finetune.hub_dataset)")
        files = {"train": f.train_file, "validation": f.validation_file, "test": f.test_file}
        splits = {s: read_table(p, f.csv_quoting) for s, p in files.items() if p}
        sources = {s: str(resolve_path(p)) for s, p in files.items() if p}
    for split, ds in splits.items():
        check_columns(ds, {"finetune.text_column": f.text_column, "finetune.text_pair_column": f.text_pair_column,
                           "finetune.label_column": f.label_column}, sources[split])
    return splits


def _subsample(ds, n: Optional[int], seed: int):
    return ds if n is None or n >= len(ds) else ds.shuffle(seed=seed).select(range(n))


def prepare_task(cfg: Config, tokenizer) -> Task:
    """Read, check, clean and tokenize the splits; infer the labels from train."""
    import datasets

    f = cfg.finetune
    splits = load_splits(cfg)
    skipped: dict[str, dict[str, int]] = {}
    for split in list(splits):
        ds, n_label = drop_missing(splits[split], [f.label_column])
        ds, n_text = drop_missing(ds, _text_columns(f))
        skipped[split] = {"empty_text": n_text, "missing_label": n_label}
        if n_text:
            logger.warning("%s: skipped %d row(s) with an empty %s", split, n_text, " or ".join(_text_columns(f)))
        if n_label:
            logger.warning("%s: skipped %d row(s) with no %s", split, n_label, f.label_column)
        if len(ds) == 0:
            raise FinetuneError(f"the {split} data has no usable rows (all {n_text + n_label} rows have an empty "
                                f"text or label); check finetune.text_column / label_column")
        splits[split] = ds
    if "validation" not in splits:  # after cleaning: the fraction is of usable rows
        parts = splits["train"].train_test_split(test_size=f.validation_fraction, seed=cfg.seed)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
        logger.info("no validation file: held out %d of %d training rows (finetune.validation_fraction=%g, seed %d)",
                    len(parts["test"]), len(parts["train"]) + len(parts["test"]), f.validation_fraction, cfg.seed)
    splits["train"] = _subsample(splits["train"], f.max_train_examples, cfg.seed)
    for split in ("validation", "test"):
        if split in splits:
            splits[split] = _subsample(splits[split], f.max_eval_examples, cfg.seed)

    feature = splits["train"].features[f.label_column]
    if isinstance(feature, datasets.ClassLabel):  # Hub datasets name their classes
        spec = LabelSpec(CLASSIFICATION, tuple(str(i) for i in range(feature.num_classes)),
                         tuple(f.label_names) or tuple(feature.names))
    else:
        spec = infer_label_spec(column(splits["train"], f.label_column), problem_type=f.problem_type,
                                label_names=f.label_names, column=f.label_column)
    for split in ("validation", "test"):
        if split in splits:
            unknown = spec.unknown(_numeric(column(splits[split], f.label_column)))
            if unknown:
                first, count = next(iter(unknown.items()))
                raise FinetuneError(f"{split} label {first!r} ({count} row(s)) never occurs in the training data, whose "
                                    f"labels are: {', '.join(spec.keys)}; add training examples of it, remove those "
                                    "rows, or name every class with finetune.label_names")

    encoded = {split: encode_dataset(ds, tokenizer, f, spec) for split, ds in splits.items()}
    return Task(spec=spec, raw=splits, encoded=encoded, skipped=skipped)


def encode_dataset(ds, tokenizer, f: FinetuneConfig, spec: Optional[LabelSpec]):
    """Tokenize (truncated to ``max_length``, not padded: the collator pads each batch) and encode
    labels as ``labels`` (when ``spec`` is given). Cached by ``datasets`` on the dataset's fingerprint."""
    text, pair, label, max_length = f.text_column, f.text_pair_column, f.label_column, f.max_length

    def fn(batch):
        enc = tokenizer([str(t) for t in batch[text]], [str(t) for t in batch[pair]] if pair else None,
                        truncation=True, max_length=max_length)
        if spec is not None:
            values = _numeric(batch[label]) if spec.problem_type == REGRESSION else batch[label]
            enc["labels"] = [spec.encode(v) for v in values]
        return dict(enc)

    return ds.map(fn, batched=True, remove_columns=ds.column_names, desc="tokenizing")


# ----------------------------------------------------------------------------------------------
# Model and tokenizer
# ----------------------------------------------------------------------------------------------
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def model_source(cfg: Config) -> Optional[str]:
    """The encoder to start from: a local directory or (online) a Hub id; None when ``init=random`` and
    there is no model directory (the architecture then comes from ``cfg.model``)."""
    f = cfg.finetune
    src = f.model or str(cfg.run_dir / "pretrain" / "final")
    p = resolve_path(src)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FinetuneError(f"finetune.model={src!r} has no config.json: it is not a save_pretrained model "
                                "directory; point it at one (e.g. <output_dir>/pretrain/final)")
        from .model import check_finetuning_source

        check_finetuning_source(p)  # an ELECTRA generator folder: name the discriminator's instead
        return str(p)
    if f.model and not Path(src).is_absolute() and src.count("/") == 1 and not src.startswith("."):
        return src  # a Hub id (``user/name``): needs network access
    if f.init == "random" and not f.model:
        return None
    raise FinetuneError(f"no encoder at {src!r}: run `mlm-pretrain pretrain` first, set finetune.model to a model "
                        "directory (or a Hub id when online), or use finetune.init=random")


def load_model_tokenizer(src: Optional[str], cfg: Config):
    """The tokenizer saved with the model (or ``tokenizer.pretrained`` when set); for a random model
    without directory, the run's tokenizer."""
    from .tokenizer import load_tokenizer, tokenizer_dir

    if src is None:
        return load_tokenizer(tokenizer_dir(cfg))
    p = Path(src)
    if p.is_dir():
        if not any((p / name).is_file() for name in TOKENIZER_FILES):
            if cfg.tokenizer.pretrained:
                return load_tokenizer(cfg.tokenizer.pretrained)
            raise FinetuneError(f"model directory {p} has no tokenizer ({' / '.join(TOKENIZER_FILES)}); save one "
                                f"there with tokenizer.save_pretrained({str(p)!r}), or set tokenizer.pretrained=DIR")
        return load_tokenizer(p)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src)


def _is_classifier(config) -> bool:
    return any("ForSequenceClassification" in a for a in (getattr(config, "architectures", None) or []))


def build_classifier(src: Optional[str], cfg: Config, spec: LabelSpec, tokenizer, *, seed: int):
    """``AutoModelForSequenceClassification`` with this task's labels, from ``src``'s weights
    (``init=pretrained``) or freshly initialised with the same architecture (``init=random``).

    A checkpoint that already has a classification head for another number of labels gets a new head
    (``ignore_mismatched_sizes``), with a warning.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    f = cfg.finetune
    if src is None:
        from .model import build_config, token_ids

        config = build_config(cfg.model, len(tokenizer), **token_ids(tokenizer))  # model.architecture's encoder
    else:
        config = AutoConfig.from_pretrained(src)
    old_labels = list(config.id2label.values()) if _is_classifier(config) else None
    if spec.problem_type == REGRESSION:
        config.num_labels = 1
    else:
        config.id2label = spec.id2label
        config.label2id = {n: i for i, n in spec.id2label.items()}
    config.problem_type = spec.problem_type
    if f.classifier_dropout is not None:
        config.classifier_dropout = f.classifier_dropout
    if getattr(config, "vocab_size", len(tokenizer)) < len(tokenizer):
        raise FinetuneError(f"the tokenizer has {len(tokenizer)} entries but the model's vocab_size is "
                            f"{config.vocab_size}; use the tokenizer saved with the model")
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos is not None and f.max_length > max_pos:
        raise FinetuneError(f"finetune.max_length={f.max_length} exceeds the model's max_position_embeddings="
                            f"{max_pos}; set finetune.max_length to {max_pos} or less")
    torch.manual_seed(seed)  # the new head (and, for init=random, every weight) depends on the seed
    if f.init == "random":
        return AutoModelForSequenceClassification.from_config(config)
    if old_labels is not None and len(old_labels) != spec.num_labels:
        logger.warning("%s has a classification head for %d label(s) (%s) but this task has %d (%s): the head is "
                       "re-initialised", src, len(old_labels), ", ".join(map(str, old_labels)), spec.num_labels,
                       ", ".join(spec.names) or "regression")
    elif old_labels is not None and spec.problem_type != REGRESSION and list(old_labels) != list(spec.names):
        logger.warning("%s's head was trained for labels %s; they are renamed %s (same number, weights kept)",
                       src, old_labels, list(spec.names))
    try:
        return AutoModelForSequenceClassification.from_pretrained(src, config=config, ignore_mismatched_sizes=True)
    except OSError as e:
        raise FinetuneError(f"cannot load model weights from {src}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
class EpochSampler(torch.utils.data.Sampler):
    """A permutation drawn from ``(seed, epoch)`` alone, so a resumed run sees the same order; with
    ``lengths``, examples of similar length are batched together (transformers' length grouping)."""

    def __init__(self, n: int, seed: int, lengths: Optional[list[int]] = None, batch_size: int = 1):
        self.n, self.seed, self.lengths, self.batch_size, self.epoch = n, seed, lengths, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.lengths is None:
            return iter(torch.randperm(self.n, generator=g).tolist())
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))


def make_loader(ds, tokenizer, batch_size: int, *, seed: Optional[int] = None, group_by_length: bool = False):
    """Dynamic padding to a multiple of 8; shuffled by :class:`EpochSampler` when ``seed`` is given."""
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    ds = ds.with_format(None)
    if seed is None:
        return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    lengths = [len(x) for x in column(ds, "input_ids")] if group_by_length else None
    sampler = EpochSampler(len(ds), seed, lengths, batch_size)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def gather_logits(accelerator, model, loader) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits (float32, CPU) and labels of every example of ``loader``, gathered across processes
    (``gather_for_metrics`` drops the duplicates that pad the last batch)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in loader:
        y = batch.pop("labels", None)
        out = model(**batch).logits.float()
        logits.append(accelerator.gather_for_metrics(out).cpu())
        if y is not None:
            labels.append(accelerator.gather_for_metrics(y).cpu())
    model.train(was_training)
    return torch.cat(logits), (torch.cat(labels) if labels else None)


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


# ----------------------------------------------------------------------------------------------
# One fine-tune
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything besides weights/optimizer/RNG that a resumed run needs (saved in the checkpoint)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0                  # batches of the current epoch already consumed
    best: Optional[float] = None
    best_step: Optional[int] = None
    bad_evals: int = 0
    examples: int = 0
    train_seconds: float = 0.0


def _better(value: float, best: Optional[float], metric: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if greater_is_better(metric) else value < best


def _save_model(accelerator, model, tokenizer, out: Path, extra: dict) -> None:
    """``save_pretrained`` (safetensors) + tokenizer + ``task.json``, atomically (tmp then rename)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / TASK_FILE, extra)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    accelerator.wait_for_everyone()


def _task_json(cfg: Config, spec: LabelSpec) -> dict:
    f = cfg.finetune
    return {"task_name": f.task_name, "text_column": f.text_column, "text_pair_column": f.text_pair_column,
            "label_column": f.label_column, "max_length": f.max_length, "labels": spec.to_json()}


def _hparams(cfg: Config) -> dict:
    """Flat scalar config for the trackers (TensorBoard's hparams accept only scalars and strings)."""
    out = {}
    for k, v in to_dict(cfg.finetune).items():
        out[f"finetune.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def train_one_seed(cfg: Config, task: Task, tokenizer, src: Optional[str], seed: int, seed_dir: Path,
                   fingerprint: str) -> dict:
    """Fine-tune once with ``seed``; returns its results (also written to ``seed_dir/results.json``).

    Evaluates every ``eval_steps`` (default: each epoch), keeps the best model by ``metric_for_best`` in
    ``seed_dir/best``, stops early after ``early_stopping_patience`` evaluations without improvement,
    checkpoints the full state at each evaluation and resumes from it.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    f, spec = cfg.finetune, task.spec
    metric = resolve_metric(f.metric_for_best, spec)
    set_seed(seed)
    model = build_classifier(src, cfg, spec, tokenizer, seed=seed)
    accelerator = make_accelerator(mixed_precision=f.mixed_precision, cpu=f.cpu, project_dir=seed_dir,
                                   report_to=cfg.tracking.report_to,
                                   gradient_accumulation_steps=f.gradient_accumulation_steps)
    train_loader = make_loader(task.encoded["train"], tokenizer, f.batch_size, seed=seed,
                               group_by_length=f.group_by_length)
    eval_loaders = {s: make_loader(task.encoded[s], tokenizer, f.batch_size) for s in ("validation", "test")
                    if s in task.encoded}
    optimizer = make_optimizer(model, lr=f.learning_rate, weight_decay=f.weight_decay)
    model, optimizer, train_loader, *prepared = accelerator.prepare(model, optimizer, train_loader,
                                                                    *eval_loaders.values())
    eval_loaders = dict(zip(eval_loaders, prepared))
    steps_per_epoch = math.ceil(len(train_loader) / f.gradient_accumulation_steps)
    total = f.max_steps or math.ceil(f.num_epochs * steps_per_epoch)
    # Not prepared by accelerate (which would step it once per process): stepped once per optimizer step.
    scheduler = make_scheduler(f.lr_scheduler, optimizer, num_training_steps=total,
                               num_warmup_steps=warmup_steps_for(total, 0, f.warmup_ratio))
    accelerator.register_for_checkpointing(scheduler)
    eval_every = f.eval_steps or steps_per_epoch

    state, ckpt_root = TrainState(), seed_dir / "checkpoints"
    resume = find_resume_checkpoint(ckpt_root, "auto") if f.resume == "auto" else None
    if resume is not None:
        saved = load_checkpoint(accelerator, resume)
        state = TrainState(**{k: saved[k] for k in dataclasses.asdict(state) if k in saved})
        logger.info("seed %d: resumed from %s (step %d, epoch %d)", seed, resume, state.step, state.epoch)
    log = MetricsLog(seed_dir / "metrics.jsonl", accelerator, append=resume is not None)
    if accelerator.trackers == [] and cfg.tracking.report_to:
        accelerator.init_trackers(f"{cfg.tracking.project_name}-{f.task_name}-seed{seed}", config=_hparams(cfg))
    bar = tqdm(total=total, initial=state.step, desc=f"finetune {f.task_name} seed {seed}", unit="step",
               disable=not accelerator.is_local_main_process)
    stop, t0, running = state.step >= total, time.perf_counter(), []
    model.train()
    while not stop:
        train_loader.set_epoch(state.epoch)
        batches = accelerator.skip_first_batches(train_loader, state.batch) if state.batch else train_loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and f.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), f.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch += 1
            state.examples += batch["input_ids"].shape[0] * accelerator.num_processes
            running.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.step += 1
            bar.update(1)
            if state.step % f.logging_steps == 0 or state.step == total:
                train_loss = accelerator.gather(torch.stack(running).mean()).mean().item()
                running = []
                log.log(state.step, {"train/loss": train_loss, "train/lr": scheduler.get_last_lr()[0],
                                     "train/epoch": state.epoch + state.batch / len(train_loader)})
                bar.set_postfix(loss=f"{train_loss:.4f}")
            if state.step % eval_every == 0 or state.step == total:
                state.train_seconds += time.perf_counter() - t0
                stop = _evaluate_and_save(accelerator, model, tokenizer, eval_loaders["validation"], spec, metric,
                                          state, log, seed_dir, cfg, fingerprint, ckpt_root) or state.step >= total
                t0 = time.perf_counter()
            if stop:
                break
        else:  # the epoch ran to its end
            state.epoch, state.batch = state.epoch + 1, 0
    bar.close()

    # The best weights, evaluated once more (validation and test) and kept as this seed's result.
    _load_best(seed_dir / "best", accelerator.unwrap_model(model))
    results = {"seed": seed, "best_step": state.best_step, "steps": state.step, "epochs_completed": state.epoch,
               "train_examples_seen": state.examples, "train_seconds": round(state.train_seconds, 3),
               "train_examples_per_second": round(state.examples / max(state.train_seconds, 1e-9), 2),
               "metric_for_best": metric, "fingerprint": fingerprint}
    logits = {}
    for split, loader in eval_loaders.items():
        logits[split], labels = gather_logits(accelerator, model, loader)  # prepared: same autocast as in training
        results[split] = score(spec, logits[split], labels)
    log.log(state.step, {f"final/{s}/{k}": v for s in eval_loaders for k, v in results[s].items()})
    log.close()
    if accelerator.is_main_process:
        # The seed is done once results.json is written: a re-run reuses it. What follows is derived
        # from best/ and can be made again without training (see _ensure_predictions).
        atomic_write_json(seed_dir / "results.json", results)
        shutil.rmtree(ckpt_root, ignore_errors=True)  # only needed to resume this seed, which is done
        with keep_trained(seed_dir.parent):
            rows = _with_inputs(task.raw["validation"], cfg.finetune, prediction_rows(spec, logits["validation"]),
                                labels=True)
            write_rows(rows, seed_dir / PREDICTIONS_FILE)
        if cfg.tracking.plots:
            plot_metrics(seed_dir / "metrics.jsonl", seed_dir,
                         {"loss": ["train/loss", "eval/loss"],
                          "eval": [f"eval/{k}" for k in metric_names(spec.problem_type, spec.num_labels)]})
    for tracker in accelerator.trackers:  # not end_training(): it would destroy the process group the next seed needs
        tracker.finish()
    accelerator.wait_for_everyone()
    return results


def _evaluate_and_save(accelerator, model, tokenizer, loader, spec, metric, state, log, seed_dir, cfg,
                       fingerprint, ckpt_root) -> bool:
    """Validation metrics; keep the best model; checkpoint; returns True to stop early."""
    f = cfg.finetune
    logits, labels = gather_logits(accelerator, model, loader)
    metrics = score(spec, logits, labels)
    log.log(state.step, {f"eval/{k}": v for k, v in metrics.items()})
    if _better(metrics[metric], state.best, metric):
        state.best, state.best_step, state.bad_evals = metrics[metric], state.step, 0
        _save_model(accelerator, model, tokenizer, seed_dir / "best", _task_json(cfg, spec))
    else:
        state.bad_evals += 1
        if state.best_step is None:  # a NaN score (e.g. Pearson of constant predictions): keep a model anyway
            state.best_step = state.step
            _save_model(accelerator, model, tokenizer, seed_dir / "best", _task_json(cfg, spec))
    if accelerator.is_main_process:
        logger.info("step %d: %s (best %s %s at step %s)", state.step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
                    metric, "nan" if state.best is None else f"{state.best:.4f}", state.best_step)
    if f.save_checkpoints:
        save_checkpoint(accelerator, ckpt_root, state.step, {**dataclasses.asdict(state), "fingerprint": fingerprint},
                        keep_last=1)
    if f.early_stopping_patience is not None and state.bad_evals >= f.early_stopping_patience:
        logger.info("early stopping: %d evaluations without a better %s", state.bad_evals, metric)
        return True
    return False


def _load_best(best_dir: Path, model):
    """``model`` with the weights saved in ``best_dir`` (always written by the first evaluation)."""
    from transformers import AutoModelForSequenceClassification

    if not best_dir.is_dir():
        raise RuntimeError(f"{best_dir} is missing: no evaluation produced a finite {best_dir.parent.name} score")
    saved = AutoModelForSequenceClassification.from_pretrained(str(best_dir))
    model.load_state_dict(saved.state_dict())
    return model


def _with_inputs(raw, f: FinetuneConfig, preds: list[dict], labels: bool) -> list[dict]:
    """Prediction rows with the input text(s) (and the reference label) in front."""
    cols = _text_columns(f) + ([f.label_column] if labels else [])
    data = {c: column(raw, c) for c in cols}
    out = []
    for i, p in enumerate(preds):
        row = {c: data[c][i] for c in _text_columns(f)}
        if labels:
            row["reference"] = data[f.label_column][i]
        out.append({**row, **p})
    return out


def resolve_metric(name: str, spec: LabelSpec) -> str:
    """``metric_for_best`` checked against the task's metrics (``auto`` -> accuracy / pearson)."""
    if name == "auto":
        return default_metric(spec.problem_type)
    name = name.removeprefix("eval/").removeprefix("eval_")
    valid = ["loss", *metric_names(spec.problem_type, spec.num_labels)]
    if name not in valid:
        kind = "regression" if spec.problem_type == REGRESSION else f"{spec.num_labels}-class classification"
        raise FinetuneError(f"finetune.metric_for_best={name!r} is not a metric of this {kind} task; choose one of "
                            f"{', '.join(valid)} (or auto)")
    return name


# ----------------------------------------------------------------------------------------------
# Seeds, summary and the stage
# ----------------------------------------------------------------------------------------------
def summarise(results: list[dict], metric: str) -> dict:
    """Each seed's validation/test metrics with their median and standard deviation (sample, ddof=1;
    0 for one seed), and the seed whose best model becomes ``final/`` (the median seed)."""
    out: dict[str, Any] = {"metric_for_best": metric, "seeds": [r["seed"] for r in results], "runs": results}
    for split in ("validation", "test"):
        if not all(split in r for r in results):
            continue
        keys = [k for k in results[0][split] if all(k in r[split] for r in results)]
        vals = {k: np.array([r[split][k] for r in results], dtype=float) for k in keys}
        out[split] = {k: {"median": float(np.median(v)), "mean": float(np.mean(v)),
                          "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                          "min": float(np.min(v)), "max": float(np.max(v))} for k, v in vals.items()}
    out["selected_seed"] = median_seed(results, metric)
    return out


def median_seed(results: list[dict], metric: str) -> int:
    """The seed at the median of ``validation[metric]`` (the better middle one for an even count)."""
    sign = 1.0 if greater_is_better(metric) else -1.0

    def quality(r):
        v = r["validation"][metric]
        return -math.inf if v is None or math.isnan(v) else sign * v

    ranked = sorted(results, key=quality)  # worst first; stable, so ties keep seed order
    return ranked[len(ranked) // 2]["seed"]


def format_summary(summary: dict, task: str) -> str:
    """The printed table: one row per seed, then median and std."""
    runs = summary["runs"]
    splits = [s for s in ("validation", "test") if s in summary]
    cols = [(s, k) for s in splits for k in summary[s] if k != "loss"]
    short = {"validation": "val", "test": "test", "matthews_correlation": "mcc"}
    head = ["seed", "best step", *[f"{short[s]} {short.get(k, k)}" for s, k in cols], "train ex/s"]
    rows = [[str(r["seed"]) + ("*" if r["seed"] == summary["selected_seed"] else ""), str(r["best_step"]),
             *[f"{r[s][k]:.4f}" for s, k in cols], f"{r['train_examples_per_second']:.1f}"] for r in runs]
    for stat in ("median", "std"):
        rows.append([stat, "", *[f"{summary[s][k][stat]:.4f}" for s, k in cols], ""])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [f"finetune {task}: {len(runs)} seed(s), best checkpoint by validation {summary['metric_for_best']}; "
           f"* = median seed, in final/", line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(r) for r in rows])


def _fingerprint(cfg: Config, src: Optional[str]) -> str:
    """What a finished seed's result depends on (not the list of seeds nor resume/logging knobs)."""
    f = {k: v for k, v in to_dict(cfg.finetune).items() if k not in ("seeds", "resume", "logging_steps")}
    files = {}
    for name in ("train_file", "validation_file", "test_file"):
        p = getattr(cfg.finetune, name)
        if p and resolve_path(p).is_file():
            st = resolve_path(p).stat()
            files[name] = [str(resolve_path(p).resolve()), st.st_size, st.st_mtime_ns]
    model_stamp = None
    if src and (Path(src) / "config.json").is_file():
        st = max(((p.stat().st_mtime_ns, p.stat().st_size) for p in Path(src).iterdir() if p.is_file()), default=None)
        model_stamp = [str(Path(src).resolve()), st]
    blob = json.dumps({"finetune": f, "seed": cfg.seed, "model": src, "model_stamp": model_stamp, "files": files,
                       "model_cfg": to_dict(cfg.model) if src is None else None}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _same_settings(seed_dir: Path, fingerprint: str) -> bool:
    stamp = seed_dir / "fingerprint.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint


def _finished(seed_dir: Path, fingerprint: str, resume: str) -> Optional[dict]:
    """The results of a seed already fine-tuned with the same settings (``resume=auto``), else None."""
    results = seed_dir / "results.json"
    if resume == "auto" and _same_settings(seed_dir, fingerprint) and results.is_file() and (seed_dir / "best").is_dir():
        return json.loads(results.read_text())
    return None


def _prepare_seed_dir(seed_dir: Path, fingerprint: str, resume: str) -> None:
    """Keep a seed folder made with the same settings (finished: reused; unfinished: resumed from its
    checkpoint); otherwise clear what a different run left there."""
    if resume == "auto" and _same_settings(seed_dir, fingerprint):
        return
    if seed_dir.exists():
        if resume == "auto":
            logger.warning("%s was made with other settings; starting this seed afresh", seed_dir)
        shutil.rmtree(seed_dir)
    seed_dir.mkdir(parents=True)
    atomic_write_json(seed_dir / "fingerprint.json", {"fingerprint": fingerprint})


def finetune(cfg: Config) -> Path:
    """Stage function: fine-tune once per seed, summarise, and write ``finetune/<task>/final``.

    Returns the ``final/`` directory (the best checkpoint of the median seed). Runs unchanged under
    ``accelerate launch``: the main process writes the files, the others wait for it.
    """
    from accelerate import PartialState

    f = cfg.finetune
    dist = PartialState(cpu=f.cpu or not torch.cuda.is_available())  # cpu=True: gloo DDP on CPUs
    task_dir = cfg.run_dir / "finetune" / f.task_name
    if dist.is_main_process:
        check_writable(task_dir)
        if cfg.hub.push:  # ---- Hub call site (mlm_pretrain/hub.py): credentials and repo before any work
            from .hub import preflight

            preflight(cfg)
    src = model_source(cfg)
    tokenizer = load_model_tokenizer(src, cfg)
    with dist.main_process_first():  # one process fills the datasets cache, the others read it
        task = prepare_task(cfg, tokenizer)
    metric = resolve_metric(f.metric_for_best, task.spec)  # before any training: a typo fails now
    fingerprint = _fingerprint(cfg, src)
    if dist.is_main_process:
        save_resolved(cfg, task_dir / "config.yaml")
    logger.info("task %s: %s, %d train / %d validation%s examples, model %s (init=%s)", f.task_name,
                "regression" if task.spec.problem_type == REGRESSION else f"{task.spec.num_labels} classes "
                f"({', '.join(task.spec.names)})", len(task.encoded["train"]), len(task.encoded["validation"]),
                f" / {len(task.encoded['test'])} test" if "test" in task.encoded else "", src or f"preset {cfg.model.preset}",
                f.init)

    results = []
    for seed in (f.seeds or (cfg.seed,)):
        seed_dir = task_dir / f"seed-{seed}"
        if dist.is_main_process:
            _prepare_seed_dir(seed_dir, fingerprint, f.resume)
        dist.wait_for_everyone()
        done = _finished(seed_dir, fingerprint, f.resume)
        if done is not None:
            logger.info("seed %d already fine-tuned with these settings; reusing %s", seed, seed_dir)
            results.append(done)
            continue
        results.append(train_one_seed(cfg, task, tokenizer, src, seed, seed_dir, fingerprint))

    summary = summarise(results, metric)
    summary.update(task=f.task_name, init=f.init, model=src, labels=task.spec.to_json(), skipped=task.skipped,
                   examples={s: len(d) for s, d in task.encoded.items()})
    final = task_dir / "final"
    if dist.is_main_process:
        with keep_trained(task_dir):
            atomic_write_json(task_dir / "summary.json", summary)
            _ensure_predictions(task_dir / f"seed-{summary['selected_seed']}", task, cfg)
            _write_final(task_dir, summary, task, cfg)
        print(format_summary(summary, f.task_name))
        if cfg.hub.push:  # ---- Hub call site: the median seed's classifier, retried in the background
            from .hub import BackgroundPusher

            pusher = BackgroundPusher(cfg)
            pusher.submit(final)
            failures = pusher.close(wait=True)
            if failures:
                logger.warning("the push of %s to %s failed (%s); the classifier is kept: `mlm-pretrain push %s "
                               "hub.repo_id=%s` tries again", final, cfg.hub.repo_id, failures[-1].error, final,
                               cfg.hub.repo_id)
    dist.wait_for_everyone()
    return final


PREDICTIONS_FILE = "validation_predictions.jsonl"


@contextlib.contextmanager
def keep_trained(task_dir: Path):
    """Turn a failure after training (predictions, summary, final/) into an error that says the trained
    models are kept and how to finish, instead of a traceback that reads like the training was lost."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        logger.exception("writing the fine-tuning outputs failed")
        raise FinetuneError(f"fine-tuning finished, but writing its outputs failed ({type(e).__name__}: {e}); the "
                            f"trained models are kept in {task_dir}/seed-*/best. Run the same command again to "
                            "finish: finished seeds are reused, not trained again") from e


def _ensure_predictions(seed_dir: Path, task: Task, cfg: Config) -> None:
    """The seed's validation predictions, made again from its best model when a finished seed lacks
    them (a run that failed while writing them)."""
    from transformers import AutoModelForSequenceClassification

    if (seed_dir / PREDICTIONS_FILE).is_file():
        return
    logger.info("%s has no %s: predicting with its best model", seed_dir, PREDICTIONS_FILE)
    best = seed_dir / "best"
    model = AutoModelForSequenceClassification.from_pretrained(str(best))
    tokenizer = load_model_tokenizer(str(best), cfg)
    logits = predict_logits(model, tokenizer, task.encoded["validation"], cfg.finetune)
    rows = _with_inputs(task.raw["validation"], cfg.finetune, prediction_rows(task.spec, logits), labels=True)
    write_rows(rows, seed_dir / PREDICTIONS_FILE)


def _write_final(task_dir: Path, summary: dict, task: Task, cfg: Config) -> Path:
    """Copy the median seed's best model to ``final/`` with metrics.json, predictions and the
    confusion matrix."""
    seed = summary["selected_seed"]
    seed_dir = task_dir / f"seed-{seed}"
    run = next(r for r in summary["runs"] if r["seed"] == seed)
    final, tmp = task_dir / "final", task_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(seed_dir / "best", tmp)
    shutil.copy2(seed_dir / PREDICTIONS_FILE, tmp / PREDICTIONS_FILE)
    metrics = {"task": cfg.finetune.task_name, "seed": seed, "best_step": run["best_step"],
               "metric_for_best": summary["metric_for_best"], "init": cfg.finetune.init,
               **{f"eval/{k}": v for k, v in run["validation"].items()},
               **{f"test/{k}": v for k, v in run.get("test", {}).items()},
               "train_examples_per_second": run["train_examples_per_second"],
               "seeds": summary["seeds"], "skipped": summary["skipped"]}
    for split in ("validation", "test"):
        if split in summary:
            prefix = "eval" if split == "validation" else "test"
            metrics.update({f"{prefix}/{k}_median": v["median"] for k, v in summary[split].items()})
            metrics.update({f"{prefix}/{k}_std": v["std"] for k, v in summary[split].items()})
    atomic_write_json(tmp / "metrics.json", metrics)
    save_resolved(cfg, tmp / "mlm_pretrain_config.yaml")
    spec = task.spec
    if spec.problem_type != REGRESSION:
        rows = read_jsonl(tmp / PREDICTIONS_FILE)
        index = {n: i for i, n in enumerate(spec.names)}
        preds = [index[r["label"]] for r in rows]
        refs = [spec.encode(r["reference"]) for r in rows]
        try:  # a picture of metrics.json: never an error that could cost the trained models
            plot_confusion_matrix(confusion_matrix(preds, refs, spec.num_labels), spec.names,
                                  tmp / "confusion_matrix.png", title=f"{cfg.finetune.task_name} validation (seed {seed})")
        except Exception as e:  # noqa: BLE001
            logger.warning("could not draw the confusion matrix (%s: %s)", type(e).__name__, e)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


# ----------------------------------------------------------------------------------------------
# mlm-pretrain evaluate
# ----------------------------------------------------------------------------------------------
def _pick_column(ds, candidates: Sequence[Optional[str]], role: str, source: str) -> Optional[str]:
    for c in candidates:
        if c and c in ds.column_names:
            return c
    wanted = [c for c in candidates if c]
    raise FinetuneError(f"{source} has no {role} column ({' or '.join(map(repr, wanted))}); its columns are: "
                        f"{', '.join(ds.column_names)}. Set finetune.{role}_column")


@torch.no_grad()
def predict_logits(model, tokenizer, ds, f: FinetuneConfig, batch_size: int = 64) -> torch.Tensor:
    """Logits of a loaded classifier on the tokenized rows of ``ds`` (input order kept)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for batch in make_loader(ds, tokenizer, batch_size):
        batch.pop("labels", None)
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
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
    max_length = min(saved.get("max_length", f.max_length), getattr(clf.config, "max_position_embeddings", 10**9))
    result: Any = None

    def columns(ds, source, labelled):
        text = _pick_column(ds, [saved.get("text_column"), f.text_column], "text", source)
        pair_wanted = saved.get("text_pair_column", f.text_pair_column)
        pair = _pick_column(ds, [pair_wanted, f.text_pair_column], "text_pair", source) if pair_wanted else None
        label = _pick_column(ds, [saved.get("label_column"), f.label_column], "label", source) if labelled else None
        return dataclasses.replace(f, text_column=text, text_pair_column=pair, label_column=label or f.label_column,
                                   max_length=max_length)

    if file:
        ds = read_table(file, f.csv_quoting)
        fc = columns(ds, str(file), labelled=True)
        ds, n_label = drop_missing(ds, [fc.label_column])
        ds, n_text = drop_missing(ds, _text_columns(fc))
        unknown = spec.unknown(_numeric(column(ds, fc.label_column)))
        if unknown:
            first, count = next(iter(unknown.items()))
            raise FinetuneError(f"{file}: label {first!r} ({count} row(s)) is not one the model knows "
                                f"({', '.join(spec.names)})")
        enc = encode_dataset(ds, tokenizer, fc, spec)
        logits = predict_logits(clf, tokenizer, enc, fc)
        metrics = score(spec, logits, torch.tensor(column(enc, "labels")))
        metrics.update(examples=len(ds), skipped_empty_text=n_text, skipped_missing_label=n_label)
        logger.info("%s on %s: %s", src, file, json.dumps(metrics))
        result = metrics
    if predict:
        ds = read_table(predict, f.csv_quoting)
        fc = columns(ds, str(predict), labelled=False)
        ds, n_text = drop_missing(ds, _text_columns(fc))
        if n_text:
            logger.warning("%s: skipped %d row(s) with an empty text", predict, n_text)
        logits = predict_logits(clf, tokenizer, encode_dataset(ds, tokenizer, fc, None), fc)
        out = Path(output) if output else resolve_path(predict).with_suffix(".predictions.jsonl")
        written = write_rows(_with_inputs(ds, fc, prediction_rows(spec, logits), labels=False), out)
        logger.info("wrote %d predictions to %s", len(ds), out)
        result = {"metrics": result, "predictions": str(written)} if file else written
    return result
