"""Fine-tuning inputs: labelled files, labels, the tokenized task, and the encoder to start from.

    from mlm_pretrain.finetune_data import prepare_task
    from mlm_pretrain.model import load_model_tokenizer, model_source
    task = prepare_task(cfg, load_model_tokenizer(model_source(cfg), cfg))   # task.spec, task.encoded["train"]

Data: csv / tsv / jsonl / parquet files (or a Hub dataset when online) with one or two text columns and
a label column. Integer or string labels make a classifier whose ``id2label`` holds the label names;
float labels make a regressor (one output; Pearson / Spearman). Without a validation file a seeded
``validation_fraction`` of train is held out (the same rows for every seed). Everything here is about
reading and checking input; bad input is a :class:`FinetuneError` naming the problem and the fix.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import Config, FinetuneConfig, resolve_path
from .corpus import CorpusFiles
from .errors import FinetuneError
from .metrics import CLASSIFICATION, REGRESSION
from .sources import LOCAL_TASK_KEYS, hub_dataset_revision, load_hub_dataset
from .windows import length_summary, overlap_of, window_encodings

logger = logging.getLogger(__name__)

TASK_FILE = "task.json"  # in a classifier directory: columns, labels and max_length it was trained with


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


def as_numbers(values: Sequence[Any]) -> list:
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
    values = as_numbers([v for v in values if not is_missing(v)])
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
    lengths: dict = field(default_factory=dict)   # split -> rows longer than the window (take_lengths)


def text_columns(f: FinetuneConfig) -> list[str]:
    return [f.text_column] + ([f.text_pair_column] if f.text_pair_column else [])


def _hub_splits(f: FinetuneConfig) -> dict:
    """The Hub dataset's train split and its labelled validation and test splits (GLUE's test splits
    carry label -1 everywhere: unlabelled, so left out)."""
    dd = load_hub_dataset(f.hub_dataset, f.hub_config, key="finetune.hub_dataset", local=LOCAL_TASK_KEYS)
    if "train" not in dd:
        raise FinetuneError(f"finetune.hub_dataset={f.hub_dataset!r} ({f.hub_config}) has no train split (it has "
                            f"{', '.join(dd) or 'none'}); fine-tuning needs one: choose another dataset or "
                            "configuration, or use local files")
    out = {"train": dd["train"]}
    for split in ("validation", "test"):
        if split in dd:
            ds = dd[split]
            if f.label_column in ds.column_names:
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


def clean_splits(cfg: Config) -> tuple[dict, dict]:
    """``(splits, skipped)``: the splits without rows that miss a text or label, and a validation split
    held out of train when there is no validation file (seeded by ``cfg.seed``: the same rows for every
    fine-tuning seed); before any subsampling."""
    f = cfg.finetune
    splits = load_splits(cfg)
    skipped: dict[str, dict[str, int]] = {}
    for split in list(splits):
        ds, n_label = drop_missing(splits[split], [f.label_column])
        ds, n_text = drop_missing(ds, text_columns(f))
        skipped[split] = {"empty_text": n_text, "missing_label": n_label}
        if n_text:
            logger.warning("%s: skipped %d row(s) with an empty %s", split, n_text, " or ".join(text_columns(f)))
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
    return splits, skipped


def training_rows(cfg: Config):
    """The rows fine-tuning may train on (:func:`clean_splits`' train, before ``max_train_examples``):
    what ``corpus.include_task_text`` adds to the pretraining corpus, never a validation row."""
    return clean_splits(cfg)[0]["train"]


# ----------------------------------------------------------------------------------------------
# The task's texts as pretraining documents (corpus.include_task_text)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskText:
    """The fine-tuning task's training texts as more corpus documents (``corpus.include_task_text``):
    task-adaptive pretraining (Gururangan et al. 2020), the encoder sees the task's words and style,
    never its labels. Every non-blank text cell of the task's training rows (``finetune.text_column``,
    then ``finetune.text_pair_column``: two documents per pair) is one document, after the corpus' own,
    in the order fine-tuning reads the rows. The rows are the ones fine-tuning trains on, read and
    cleaned by the same code (:func:`training_rows`): validation and test
    files never enter the corpus, nor, without a validation file, the training rows held out to validate;
    ``max_train_examples`` does not apply (the texts carry no labels)."""

    run: Config

    def identity(self, content: bool = False) -> Optional[str]:
        """The task's part of the corpus fingerprint: the training file (path, size and mtime, or its
        bytes with ``content``: None for a Hub dataset) and every setting that chooses its rows and columns."""
        f = self.run.finetune
        if content and f.hub_dataset:
            return None
        h = hashlib.sha256()
        if f.hub_dataset:
            revision = hub_dataset_revision(f.hub_dataset, f.hub_config, key="finetune.hub_dataset", local=LOCAL_TASK_KEYS)
            h.update(json.dumps([f.hub_dataset, f.hub_config, revision]).encode())
        else:
            path = resolve_path(f.train_file)
            if not path.is_file():
                raise FinetuneError(f"finetune.train_file {f.train_file!r} does not exist (looked for "
                                    f"{path.resolve()}); corpus.include_task_text reads the task's training texts "
                                    "from it: fix finetune.train_file, or set corpus.include_task_text=false")
            files = CorpusFiles((path,), "task")
            h.update((files.content_hash() if content else files.fingerprint()).encode())
        holdout = None if f.validation_file or f.hub_dataset else [f.validation_fraction, self.run.seed]
        h.update(json.dumps([f.text_column, f.text_pair_column, f.label_column, f.csv_quoting, holdout]).encode())
        return h.hexdigest()[:16]

    def documents(self):
        """A ``datasets.Dataset`` with one ``text`` column: the texts, stripped, blank ones dropped."""
        import datasets

        rows = training_rows(self.run)
        cells = zip(*(column(rows, c) for c in text_columns(self.run.finetune)))
        texts = [t.strip() for row in cells for t in row if isinstance(t, str) and t.strip()]
        logger.info("corpus.include_task_text: %d texts of the task's %d training rows join the corpus",
                    len(texts), len(rows))
        features = datasets.Features({"text": datasets.Value("string")})
        return datasets.Dataset.from_dict({"text": texts}, features=features)


def task_text(cfg: Config) -> Optional[TaskText]:
    """The task texts ``cfg`` adds to its corpus, or None (``corpus.include_task_text`` off)."""
    return TaskText(cfg) if cfg.corpus.include_task_text else None


def prepare_task(cfg: Config, tokenizer) -> Task:
    """Read, check, clean and tokenize the splits; infer the labels from train."""
    import datasets

    f = cfg.finetune
    splits, skipped = clean_splits(cfg)
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
            unknown = spec.unknown(as_numbers(column(splits[split], f.label_column)))
            if unknown:
                first, count = next(iter(unknown.items()))
                raise FinetuneError(f"{split} label {first!r} ({count} row(s)) never occurs in the training data, whose "
                                    f"labels are: {', '.join(spec.keys)}; add training examples of it, remove those "
                                    "rows, or name every class with finetune.label_names")

    encoded, lengths = {}, {}
    for split, ds in splits.items():
        enc = encode_dataset(ds, tokenizer, f, spec, training=split == "train")
        encoded[split], lengths[split] = take_lengths(enc, f, split)
    return Task(spec=spec, raw=splits, encoded=encoded, skipped=skipped, lengths=lengths)


def encode_dataset(ds, tokenizer, f: FinetuneConfig, spec: Optional[LabelSpec], *, training: bool = False):
    """Tokenize and encode labels as ``labels`` (when ``spec`` is given); not padded (the collator pads
    each batch). ``finetune.long_documents``: ``truncate`` keeps each row's first ``max_length`` tokens;
    ``windows`` makes a row's columns lists of windows (:mod:`mlm_pretrain.windows`; ``training``: at
    most ``max_windows`` of them). Each row also holds ``document_tokens``, its uncut length, which
    :func:`take_lengths` removes. Cached by ``datasets`` on the dataset's fingerprint."""
    text, pair, label, max_length = f.text_column, f.text_pair_column, f.label_column, f.max_length
    windowed = f.long_documents == "windows"

    def fn(batch):
        texts = [str(t) for t in batch[text]]
        pairs = [str(t) for t in batch[pair]] if pair else None
        if windowed:
            docs = window_encodings(tokenizer, texts, pairs, max_length=max_length, overlap=overlap_of(f),
                                    max_windows=f.max_windows if training else None)
            enc = {k: [d[k] for d in docs] for k in docs[0]} if docs else {}
        else:
            enc = dict(tokenizer(texts, pairs, truncation=True, max_length=max_length))
            enc["document_tokens"] = [len(ids) for ids in tokenizer(texts, pairs, verbose=False)["input_ids"]]
        if spec is not None:
            values = as_numbers(batch[label]) if spec.problem_type == REGRESSION else batch[label]
            enc["labels"] = [spec.encode(v) for v in values]
        return enc

    return ds.map(fn, batched=True, remove_columns=ds.column_names, desc="tokenizing")


def take_lengths(enc, f: FinetuneConfig, split: str) -> tuple[Any, dict]:
    """``(enc without document_tokens, summary)``: how many rows were longer than ``max_length`` and what
    was done with them, logged (:func:`mlm_pretrain.windows.length_summary`)."""
    lengths = column(enc, "document_tokens")
    windows = [len(ids) for ids in column(enc, "input_ids")] if f.long_documents == "windows" else []
    out = length_summary(lengths, windows, f.max_length)
    out["long_documents"] = f.long_documents
    if out["longer_than_window"]:
        n, longer = out["rows"], out["longer_than_window"]
        if f.long_documents == "truncate":
            logger.warning("%s: %d of %d rows (%.0f%%) are longer than finetune.max_length=%d tokens (mean %.0f, "
                           "longest %d): each is cut to its first %d tokens (finetune.long_documents=windows reads "
                           "them whole)", split, longer, n, 100 * longer / n, f.max_length, out["mean_tokens"],
                           out["max_tokens"], f.max_length)
        else:
            logger.info("%s: %d of %d rows (%.0f%%) are longer than finetune.max_length=%d tokens: read as %.2f "
                        "windows per row on average (at most %d)%s", split, longer, n, 100 * longer / n,
                        f.max_length, out["mean_windows"], out["max_windows"],
                        f", training on at most {f.max_windows} windows of a row, spread over it"
                        if split == "train" and f.max_windows else "")
    return enc.remove_columns("document_tokens"), out
