"""Stage 2: corpus -> pretraining examples (NSP / SOP / MLM), cached on disk or built on the fly.

    mlm-pretrain prepare --config tiny                      # -> runs/tiny/data/<hash>/
    mlm-pretrain prepare data.num_proc=2 data.objective=sop

Cached mode writes a content-addressed folder ``<data.cache_dir or output_dir/data>/<hash>/`` (the
hash covers the corpus files, the tokenizer, the data and masking config, the seed and the format
version): a ``datasets.DatasetDict`` saved with ``save_to_disk`` (``datasets.load_from_disk(path)``
gives ``train`` and ``validation``), ``stats.json`` and the resolved ``config.yaml``. A re-run with
the same inputs reuses the folder; the folder is written under a temporary name and renamed at the
end, so an interrupted run never leaves a half cache that a later run would reuse. The key sees the
corpus files by path, size and mtime (no read); when it misses, the corpus bytes are hashed, and a
folder prepared from the same bytes (a copied, moved or touched corpus) is linked under the new key
instead of preparing it again.

Rows. ``train``: ``input_ids`` (unpadded, ``[CLS] A [SEP] B [SEP]`` or ``[CLS] text [SEP]``),
``token_type_ids`` (0/1) and, for ``nsp``/``sop``, ``next_sentence_label`` (0 = B is the real
continuation / not swapped, 1 = random / swapped, as ``BertForPreTraining``). ``validation``: the same
plus ``labels`` (-100 where nothing is predicted), its ``input_ids`` already masked once with a
seeded generator, so MLM accuracy is comparable across runs, checkpoints and resumes. Whole-word
masking needs no extra column: the collator reads word boundaries off the vocabulary (``##``).

How it works: the documents are cut into groups of ``data.random_next_buffer`` consecutive documents;
one ``datasets.map`` call (``num_proc`` processes) splits each group's documents into sentences,
encodes all its sentences in one fast-tokenizer batch and builds the examples in Python from the ids
(:mod:`mlm_pretrain.pairs`); random-next sentences come from the other documents of the group. Each
group's RNG is seeded from the seed, the pass and the group's content, so the result does not depend
on ``num_proc``. Validation documents are chosen by a hash of their text
(:func:`mlm_pretrain.pairs.is_validation_document`), never by example; the same map call builds their
examples from the held-out documents of each group (of the first groups only: enough for
``max_validation_examples``), and the main process masks the first ``max_validation_examples`` once.

Streaming mode (``data.streaming=true``): :func:`pretraining_stream` builds the same examples on the
fly from a ``datasets`` streaming corpus, group by group, with a bounded shuffle buffer: memory does
not grow with the corpus. Documents are split among processes and DataLoader workers with
``datasets.distributed.split_dataset_by_node`` (no duplicates). ``prepare_pretraining_data`` then
writes only the (small, materialised) ``validation`` split and ``stats.json``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from .config import Config, save_resolved
from .corpus import corpus_content_hash, load_documents, sentence_split_mode
from .errors import UserError
from .finetune_data import task_text
from .identity import FORMAT_VERSION, RunInputs, cache_key, run_inputs
from .layout import RunLayout
from .masking import IGNORE_INDEX, MLMCollator
from .pairs import Example, build_examples, group_seed, is_validation_document, split_document
from .tokenizer import check_tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

_VALIDATION_MASK_CHUNK = 256


class DataError(UserError):
    """Pretraining data that cannot be built from this corpus / config; the message says what to change."""


# ----------------------------------------------------------------------------------------------
# Checks and settings
# ----------------------------------------------------------------------------------------------
def check_data_config(cfg: Config) -> None:
    """Errors that must stop a run before any work: sequence length against the model."""
    n, max_pos = cfg.data.max_seq_length, cfg.model.max_position_embeddings
    if n < 8:
        raise DataError(f"data.max_seq_length={n} is too short for [CLS] A [SEP] B [SEP] pairs; use at least 8")
    if n > max_pos:
        raise DataError(f"data.max_seq_length={n} exceeds model.max_position_embeddings={max_pos}: the model "
                        f"cannot embed positions past {max_pos}; lower data.max_seq_length or raise "
                        "model.max_position_embeddings")


def _features(objective: str, validation: bool):
    from datasets import Features, List, Value

    cols = {"input_ids": List(Value("int32")), "token_type_ids": List(Value("int8"))}
    if objective != "mlm":
        cols["next_sentence_label"] = Value("int8")
    if validation:
        cols["labels"] = List(Value("int32"))
    return Features(cols)


def _no_pairs_error(cfg: Config, mode: str, documents: int) -> DataError:
    how = ("one sentence per line, a blank line between documents" if mode == "line"
           else "sentences found by the rule-based splitter")
    return DataError(
        f"data.objective={cfg.data.objective} needs documents with at least two sentences, but none of the "
        f"{documents} documents has more than one (data.sentence_split={mode}: {how}). Fix the corpus "
        "layout (a blank line between documents in .txt files; corpus.document_separator=blank_line), "
        "use data.sentence_split=rules for running text, or use data.objective=mlm (no sentence pairs)")


# ----------------------------------------------------------------------------------------------
# Texts -> examples (picklable: runs in datasets.map worker processes and DataLoader workers)
# ----------------------------------------------------------------------------------------------
#: Most characters in one group of documents (besides at most ``random_next_buffer`` documents): the
#: token lists of a group are held in memory at once, so a corpus of huge documents (a file without
#: line breaks, books) gets smaller groups instead of gigabytes of Python ints.
GROUP_MAX_CHARS = 16 << 20


def group_bounds(lengths: Sequence[int], max_chars: int = GROUP_MAX_CHARS) -> list[tuple[int, int]]:
    """``(start, end)`` groups of consecutive documents (``lengths`` in characters): a new group starts
    when the next document would take the group past ``max_chars`` (a document is never split)."""
    bounds, start, size = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and size + n > max_chars:
            bounds.append((start, i))
            start, size = i, 0
        size += n
    if len(lengths) > start:
        bounds.append((start, len(lengths)))
    return bounds


def text_groups(batches: Iterable[list[str]]) -> Iterator[list[str]]:
    """Groups of document texts from batches of ``random_next_buffer`` documents (the streaming side of
    the cached mode's groups: the same boundaries for the same documents)."""
    for texts in batches:
        for start, end in group_bounds([len(t) for t in texts]):
            yield texts[start:end]


def partition(texts: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train texts, validation texts) of a group, by the held-out rule."""
    train, validation = [], []
    for t in texts:
        (validation if is_validation_document(t, fraction) else train).append(t)
    return train, validation


@dataclass
class ExampleBuilder:
    """Turns a group of document texts into examples: sentence split, one batch encode, pairs."""

    backend: Any  # a tokenizers.Tokenizer (the fast tokenizer's Rust backend)
    cls_id: int
    sep_id: int
    objective: str
    max_seq_length: int
    short_seq_prob: float
    dupe_factor: int
    sentence_split: str
    seed: int
    validation_fraction: float
    split: str  # "train" or "validation": which documents of a group are kept

    @classmethod
    def from_config(cls, cfg: Config, tokenizer, split: str = "train") -> "ExampleBuilder":
        from tokenizers import Tokenizer

        # A private copy of the backend, without truncation or padding: we only want the ids.
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        return cls(backend=backend, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                   objective=cfg.data.objective, max_seq_length=cfg.data.max_seq_length,
                   short_seq_prob=cfg.data.short_seq_prob,
                   dupe_factor=cfg.data.dupe_factor if split == "train" else 1,
                   sentence_split=sentence_split_mode(cfg), seed=cfg.seed,
                   validation_fraction=cfg.data.validation_fraction, split=split)

    def encode(self, documents: list[list[str]]) -> list[list[list[int]]]:
        """Token ids of every sentence, document by document: one ``encode_batch_fast`` call for all
        the sentences of the group (no offsets, no special tokens; Rust does the work)."""
        flat = [s for sentences in documents for s in sentences]
        ids = [e.ids for e in self.backend.encode_batch_fast(flat, add_special_tokens=False)] if flat else []
        out, pos = [], 0
        for sentences in documents:
            out.append(ids[pos:pos + len(sentences)])
            pos += len(sentences)
        return out

    def documents(self, texts: list[str]) -> tuple[list[list[list[int]]], Counter]:
        """Split this split's ``texts`` (already chosen) into sentences and encode them."""
        counts: Counter = Counter()
        t0 = time.process_time()
        counts["characters"] += sum(len(t) for t in texts)
        split = []
        for text in texts:
            sentences, empty = split_document(text, self.sentence_split)
            counts["empty_lines"] += empty
            split.append(sentences)
        t1 = time.process_time()
        encoded = self.encode(split)
        t2 = time.process_time()
        # Over-long sentences are cut to what fits one pair (nsp/sop); mlm cuts blocks anywhere.
        limit = self.max_seq_length - 3 if self.objective != "mlm" else None
        docs = []
        for sentences in encoded:
            doc = []
            for sentence_ids in sentences:
                if not sentence_ids:
                    counts["sentences_without_tokens"] += 1
                    continue
                if limit and len(sentence_ids) > limit:
                    counts["over_long_sentences_truncated"] += 1
                    sentence_ids = sentence_ids[:limit]
                doc.append(sentence_ids)
            if not doc:
                counts["empty_documents"] += 1
                continue
            counts["documents"] += 1
            counts["sentences"] += len(doc)
            counts["multi_sentence_documents" if len(doc) > 1 else "single_sentence_documents"] += 1
            docs.append(doc)
        counts["time_split_s"] += t1 - t0
        counts["time_tokenize_s"] += t2 - t1
        counts["time_documents_s"] += time.process_time() - t2
        return docs, counts

    def build(self, texts: list[str], epoch: int = 0) -> tuple[list[Example], Counter]:
        """Examples of one group of this split's documents, ``dupe_factor`` passes (``epoch`` shifts
        the passes: streaming builds new pairs each epoch)."""
        docs, counts = self.documents(texts)
        if not docs:
            return [], counts
        t0 = time.process_time()
        examples: list[Example] = []
        for p in range(self.dupe_factor):
            rng = Random(group_seed(self.seed, epoch * self.dupe_factor + p, texts[0]))
            examples.extend(build_examples(docs, rng, objective=self.objective, max_seq_length=self.max_seq_length,
                                           short_seq_prob=self.short_seq_prob, cls_id=self.cls_id,
                                           sep_id=self.sep_id, counts=counts))
        counts["examples"] += len(examples)
        counts["tokens"] += sum(len(e.input_ids) for e in examples)
        if self.objective != "mlm":
            counts["label_1"] += sum(e.next_sentence_label for e in examples)
        counts["time_pairs_s"] += time.process_time() - t0
        return examples, counts

    def __call__(self, texts: list[str], epoch: int = 0) -> tuple[list[Example], Counter]:
        """Examples from a group of corpus documents: this split's documents only."""
        train, validation = partition(texts, self.validation_fraction)
        examples, counts = self.build(validation if self.split == "validation" else train, epoch)
        counts["other_split_documents"] += len(train if self.split == "validation" else validation)
        return examples, counts


def to_columns(examples: list[Example], objective: str) -> dict[str, list]:
    cols: dict[str, list] = {"input_ids": [e.input_ids for e in examples],
                             "token_type_ids": [e.token_type_ids for e in examples]}
    if objective != "mlm":
        cols["next_sentence_label"] = [e.next_sentence_label for e in examples]
    return cols


def to_row(example: Example) -> dict[str, Any]:
    row = {"input_ids": example.input_ids, "token_type_ids": example.token_type_ids}
    if example.next_sentence_label is not None:
        row["next_sentence_label"] = example.next_sentence_label
    return row


def validation_document_limit(cfg: Config) -> int:
    """Validation examples come from the held-out documents among the first this-many documents
    only: enough for ``max_validation_examples`` (a held-out document gives one example or more;
    4x margin), so a huge corpus is not read to the end for them."""
    frac, cap = cfg.data.validation_fraction, cfg.data.max_validation_examples
    return math.ceil(4 * cap / frac) if frac > 0 and cap > 0 else 0


@dataclass
class _GroupMap:
    """``datasets.map`` function over the group-start index: one input row -> a group's train examples.

    The group's validation examples and statistics go to one JSON file per group (a map function
    in a worker process cannot return side values); the name is the group start, so a re-run of a
    group overwrites its file."""

    docs: Any  # datasets.Dataset of documents ("text")
    train: ExampleBuilder
    validation: ExampleBuilder
    validation_limit: int
    side_dir: str
    single_thread: bool = False  # num_proc > 1: one tokenizer thread per process (no oversubscription)

    def __call__(self, batch: dict) -> dict:
        if self.single_thread:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        cols: dict[str, list] = {k: [] for k in to_columns([], self.train.objective)}
        for start, end in zip(batch["start"], batch["end"]):
            train_texts, val_texts = partition(self.docs[start:end]["text"], self.train.validation_fraction)
            examples, counts = self.train.build(train_texts)
            for k, v in to_columns(examples, self.train.objective).items():
                cols[k].extend(v)
            side: dict = {"train": counts}
            if val_texts and start < self.validation_limit:
                val_examples, side["validation"] = self.validation.build(val_texts)
                side["validation_examples"] = [tuple(e) for e in val_examples]
            Path(self.side_dir, f"{start:012d}.json").write_text(json.dumps(side))
        return cols


# ----------------------------------------------------------------------------------------------
# Validation (fixed masks)
# ----------------------------------------------------------------------------------------------
def stream_validation_examples(cfg: Config, tokenizer, text_batches: Iterable[list[str]]) -> tuple[list[Example], Counter]:
    """Validation examples in streaming mode: batches of ``random_next_buffer`` corpus documents
    (the cached mode's groups), the held-out documents of each, until ``max_validation_examples``."""
    builder = ExampleBuilder.from_config(cfg, tokenizer, split="validation")
    limit, cap = validation_document_limit(cfg), cfg.data.max_validation_examples
    examples: list[Example] = []
    counts: Counter = Counter()
    seen = 0
    for texts in text_groups(text_batches):
        if seen >= limit or len(examples) >= cap:
            break
        val_texts = partition(texts, cfg.data.validation_fraction)[1]
        seen += len(texts)
        if val_texts:
            built, c = builder.build(val_texts)
            examples.extend(built)
            counts.update(c)
    return examples, counts


def masked_validation(cfg: Config, tokenizer, examples: list[Example], counts: Counter):
    """The validation ``datasets.Dataset``: the first ``max_validation_examples`` examples, masked
    once with the collator's masking and a generator seeded by ``cfg.seed``."""
    from datasets import Dataset

    examples = examples[:cfg.data.max_validation_examples]
    cols = to_columns(examples, cfg.data.objective)
    cols["input_ids"], cols["labels"] = [], []
    collator = MLMCollator(tokenizer, cfg.masking, seed=cfg.seed)
    for i in range(0, len(examples), _VALIDATION_MASK_CHUNK):
        rows = [{"input_ids": e.input_ids} for e in examples[i:i + _VALIDATION_MASK_CHUNK]]
        batch = collator.pad(rows)
        masked, labels = collator.mask(batch["input_ids"], batch["attention_mask"])
        for j, row in enumerate(rows):
            n = len(row["input_ids"])
            cols["input_ids"].append(masked[j, :n].tolist())
            cols["labels"].append(labels[j, :n].tolist())
    counts = Counter(counts)
    counts["examples"] = len(examples)
    counts["tokens"] = sum(len(e.input_ids) for e in examples)
    if cfg.data.objective != "mlm":
        counts["label_1"] = sum(e.next_sentence_label for e in examples)
    counts["masked_tokens"] = sum(sum(1 for x in lab if x != IGNORE_INDEX) for lab in cols["labels"])
    return Dataset.from_dict(cols, features=_features(cfg.data.objective, validation=True)), counts


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
_SKIPPED = {
    "empty_lines": "blank lines inside documents (line mode), dropped",
    "sentences_without_tokens": "sentences that encode to no token, dropped",
    "empty_documents": "documents with no sentence left, dropped",
    "single_sentence_documents": "one-sentence documents: no pair (nsp/sop), still used as random-next text",
    "over_long_sentences_truncated": "sentences longer than max_seq_length - 3, cut to that length (nsp/sop)",
    "random_next_unavailable": "random-next draws in a group of one document, made real-next instead",
    "skipped_one_token_tail": "one-token last sentences that could not form a pair",
}


def summarize(counts: Counter, cfg: Config) -> dict:
    n, tokens = counts.get("examples", 0), counts.get("tokens", 0)
    out = {k: counts.get(k, 0) for k in ("documents", "sentences", "characters", "examples", "tokens")}
    out["multi_sentence_documents"] = counts.get("multi_sentence_documents", 0)
    out["mean_example_length"] = round(tokens / n, 2) if n else 0.0
    out["padding_fraction_at_max_seq_length"] = round(1 - tokens / (n * cfg.data.max_seq_length), 4) if n else 0.0
    if cfg.data.objective != "mlm":
        out["label_1_fraction"] = round(counts.get("label_1", 0) / n, 4) if n else 0.0
    if "masked_tokens" in counts:
        out["masked_tokens"] = counts["masked_tokens"]
    # mlm packs one-sentence documents into blocks like any other text: nothing to report for it
    pair_only = {"single_sentence_documents"} if cfg.data.objective == "mlm" else set()
    out["skipped"] = {k: {"count": counts[k], "reason": why} for k, why in _SKIPPED.items()
                      if counts.get(k) and k not in pair_only}
    out["cpu_time_s"] = {k[5:-2]: round(v, 2) for k, v in counts.items() if k.startswith("time_")}
    return out


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------
def _load_tokenizer(path: Path):
    if not path.is_dir():
        raise DataError(f"no tokenizer at {path}: run `mlm-pretrain tokenizer` first (same config), or set "
                        "tokenizer.pretrained to an existing tokenizer directory")
    return load_tokenizer(path)


#: Train rows counted for the unigram level (the first ones: enough for the frequencies that carry the
#: entropy, and seconds on any corpus).
UNIGRAM_SAMPLE_ROWS = 100_000


def unigram_cross_entropy(train_counts: np.ndarray, eval_counts: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the ``eval_counts`` tokens under the unigram distribution
    of ``train_counts`` (add-half smoothing over the vocabulary): the loss of a model that predicts
    every masked token from corpus frequencies alone."""
    train = np.asarray(train_counts, dtype=np.float64) + 0.5
    logp = np.log(train / train.sum())
    eval_counts = np.asarray(eval_counts, dtype=np.float64)
    return float(-(eval_counts * logp).sum() / max(eval_counts.sum(), 1.0))


def unigram_level(splits: dict, tokenizer) -> Optional[float]:
    """The validation MLM loss (nats) of a model that knows only token frequencies: the cross-entropy of
    the validation tokens under the train split's unigram distribution (:func:`mlm_pretrain.probe.
    unigram_cross_entropy`; special tokens, never masked, excluded). Streaming (no train split on disk):
    the validation tokens' own entropy, slightly optimistic. None without validation tokens."""
    import pyarrow.compute as pc

    def counts(ds, column: str, rows: Optional[int] = None):
        ids = pc.list_flatten(ds.with_format("arrow")[:rows][column]).to_numpy(zero_copy_only=False)
        out = np.bincount(ids[ids >= 0], minlength=len(tokenizer)).astype(np.float64)
        out[tokenizer.all_special_ids] = 0
        return out

    # the validation loss is scored on the masked positions: their labels are the tokens to predict
    val = counts(splits["validation"], "labels") if len(splits["validation"]) else None
    if val is None or not val.sum():
        return None
    train = (counts(splits["train"], "input_ids", UNIGRAM_SAMPLE_ROWS) if "train" in splits and len(splits["train"])
             else val)
    return round(unigram_cross_entropy(train, val), 4)


def _document_groups(docs, group_size: int) -> list[tuple[int, int]]:
    """:func:`group_bounds` over blocks of ``group_size`` documents of a cached corpus."""
    import pyarrow.compute as pc

    lengths = pc.utf8_length(docs.with_format("arrow")[:]["text"]).to_pylist()  # indices (filter) applied
    return [(block + s, block + e) for block in range(0, len(lengths), group_size)
            for s, e in group_bounds(lengths[block:block + group_size])]


def _link_same_content(root: Path, out: Path, content_key: str) -> bool:
    """Reuse data prepared from a corpus whose files were copied, moved or touched since (same bytes, so
    the key, which sees paths, sizes and mtimes, changed): link ``out`` to that folder. The corpus is read
    once to hash it, which is cheap beside preparing it again."""
    for stats in sorted(root.glob("*/stats.json")):
        old = stats.parent
        if old == out or not (old / "dataset_dict.json").is_file():
            continue
        try:
            if json.loads(stats.read_text()).get("content_key") != content_key:
                continue
            out.symlink_to(old.name, target_is_directory=True)  # relative: the folder may move
        except (OSError, ValueError):
            continue
        logger.info("pretraining data up to date in %s: the corpus files were moved, copied or touched but hold "
                    "the same bytes; %s now links to it", old, out)
        return True
    return False


def prepare_pretraining_data(cfg: Config, *, inputs: Optional[RunInputs] = None, tokenizer=None) -> Path:
    """Stage function: build (or reuse) the pretraining examples; returns the dataset folder.

    In streaming mode the folder holds only the ``validation`` split (train rows come from
    :func:`pretraining_stream`). ``inputs`` (:func:`mlm_pretrain.layout.run_inputs`) and ``tokenizer``:
    what a caller (the pretraining loop) has already computed and loaded for ``cfg``."""
    t_start = time.perf_counter()
    check_data_config(cfg)
    layout = inputs.layout if inputs is not None else RunLayout.of(cfg)
    tok_path = layout.tokenizer
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(tok_path)
    inputs = inputs if inputs is not None else run_inputs(cfg, layout)
    key, root, out = inputs.data_key, layout.data_root, inputs.data_dir
    if (out / "stats.json").is_file() and (out / "dataset_dict.json").is_file():
        logger.info("pretraining data up to date in %s (same corpus, tokenizer, config and seed); reusing it", out)
        return out
    if out.is_symlink():  # a link to data since deleted
        out.unlink()
    # the corpus' bytes (not for a Hub dataset, nor a streamed corpus, which may be too large to read twice)
    content = None if cfg.data.streaming else corpus_content_hash(cfg.corpus, task_text(cfg))
    content_key = cache_key(cfg, inputs.tokenizer_hash, corpus="content:" + content) if content else None
    if content_key and _link_same_content(root, out, content_key):
        return out

    from datasets import Dataset, DatasetDict

    work = root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "side").mkdir(parents=True)
    dataset_dir = work / "dataset"
    try:
        mode = sentence_split_mode(cfg)
        group = cfg.data.random_next_buffer
        splits, stats, extra = {}, {}, {}
        t0 = time.perf_counter()
        if cfg.data.streaming:  # validation only, read from the stream (the corpus is never converted)
            docs = load_documents(cfg.corpus, streaming=True, task=task_text(cfg))
            val_examples, val_counts = stream_validation_examples(
                cfg, tokenizer, (b["text"] for b in docs.iter(batch_size=group)))
        else:
            docs = load_documents(cfg.corpus, task=task_text(cfg))
            extra["corpus_documents"] = len(docs)
            bounds = _document_groups(docs, group)
            extra["groups"] = len(bounds)
            starts = Dataset.from_dict({"start": [b[0] for b in bounds], "end": [b[1] for b in bounds]})
            num_proc = extra["num_proc"] = min(cfg.data.num_proc, len(starts))  # processes actually used
            fn = _GroupMap(docs, ExampleBuilder.from_config(cfg, tokenizer, "train"),
                           ExampleBuilder.from_config(cfg, tokenizer, "validation"),
                           validation_document_limit(cfg), str(work / "side"), single_thread=num_proc > 1)
            train = starts.map(fn, batched=True, batch_size=1, remove_columns=["start", "end"],
                               num_proc=num_proc if num_proc > 1 else None,
                               features=_features(cfg.data.objective, validation=False),
                               new_fingerprint=f"{key}-train", cache_file_name=str(work / "cache" / "train.arrow"),
                               load_from_cache_file=False, desc="pretraining examples")
            train_counts, val_counts, val_examples = Counter(), Counter(), []
            for f in sorted((work / "side").glob("*.json")):
                side = json.loads(f.read_text())
                train_counts.update(side["train"])
                if "validation" in side and len(val_examples) < cfg.data.max_validation_examples:
                    val_counts.update(side["validation"])
                    val_examples.extend(Example(*e) for e in side["validation_examples"])
            if cfg.data.objective != "mlm" and not train_counts.get("multi_sentence_documents"):
                raise _no_pairs_error(cfg, mode, train_counts.get("documents", 0))
            splits["train"] = train
            stats["train"] = summarize(train_counts, cfg)
        t1 = time.perf_counter()
        splits["validation"], val_counts = masked_validation(cfg, tokenizer, val_examples, val_counts)
        stats["validation"] = summarize(val_counts, cfg)
        extra["unigram_cross_entropy"] = unigram_level(splits, tokenizer)
        t2 = time.perf_counter()
        # datasets writes zero shards for an empty split and then cannot load it: ask for one
        DatasetDict(splits).save_to_disk(str(dataset_dir), num_shards={k: 1 for k, v in splits.items() if not len(v)})
        t3 = time.perf_counter()
        summary = {
            "format_version": FORMAT_VERSION, "key": key, "content_key": content_key, "streaming": cfg.data.streaming,
            "objective": cfg.data.objective, "max_seq_length": cfg.data.max_seq_length,
            "sentence_split": mode, "tokenizer": str(tok_path), **extra,
            "train_examples": stats["train"]["examples"] if "train" in stats else None, **stats,
            "time_s": {"examples": round(t1 - t0, 2), "validation_masks": round(t2 - t1, 2),
                       "save": round(t3 - t2, 2), "total": round(time.perf_counter() - t_start, 2)},
        }
        (dataset_dir / "stats.json").write_text(json.dumps(summary, indent=1))
        save_resolved(cfg, dataset_dir / "config.yaml")
        if out.exists():  # another process finished the same data first: keep it
            logger.info("%s appeared while preparing (another process); keeping it", out)
        else:
            dataset_dir.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log_summary(out, summary)
    return out


def _log_summary(out: Path, s: dict) -> None:
    for split in ("train", "validation"):
        if split in s:
            d = s[split]
            logger.info("%s: %d documents, %d sentences -> %d examples, %d tokens (padding %.1f%% at max length%s)",
                        split, d["documents"], d["sentences"], d["examples"], d["tokens"],
                        100 * d["padding_fraction_at_max_seq_length"],
                        f", label 1: {100 * d['label_1_fraction']:.1f}%" if "label_1_fraction" in d else "")
            for name, item in d["skipped"].items():
                logger.info("  %s: %d (%s)", name, item["count"], item["reason"])
    logger.info("prepared data -> %s in %.1f s", out, s["time_s"]["total"])


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------
def _dist_info(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class PretrainingStream(torch.utils.data.IterableDataset):
    """Train rows built on the fly (a torch ``IterableDataset``; give it to a ``DataLoader`` with
    ``collate_fn=MLMCollator(...)``).

    Each reader (process x DataLoader worker) gets its own documents through
    ``datasets.distributed.split_dataset_by_node`` (whole shards when the corpus has enough files,
    else one document in N), builds examples group by group and shuffles them in a bounded buffer.
    Deterministic for a given seed, epoch, world size and number of workers. ``set_epoch(e)`` gives
    new pairs and a new order (call it before each pass, as for a ``DistributedSampler``)."""

    def __init__(self, docs, builder: ExampleBuilder, *, group_size: int, shuffle_buffer: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        super().__init__()
        self.docs, self.builder = docs, builder
        self.group_size, self.shuffle_buffer, self.seed = group_size, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _reader(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def examples(self) -> Iterator[Example]:
        """This reader's examples, unshuffled."""
        from datasets.distributed import split_dataset_by_node

        reader, readers = self._reader()
        docs = split_dataset_by_node(self.docs, rank=reader, world_size=readers) if readers > 1 else self.docs
        # .iter() (not iter()) so that datasets does not split shards among torch workers a second time
        for texts in text_groups(batch["text"] for batch in docs.iter(batch_size=self.group_size)):
            examples, _ = self.builder(texts, epoch=self.epoch)
            yield from examples

    def __iter__(self) -> Iterator[dict]:
        reader, readers = self._reader()
        rng = Random(f"{self.seed}/{self.epoch}/{reader}/{readers}")
        buffer: list[dict] = []
        for example in self.examples():
            row = to_row(example)
            if len(buffer) < self.shuffle_buffer:
                buffer.append(row)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], row = row, buffer[j]
            yield row
        rng.shuffle(buffer)
        yield from buffer


def pretraining_stream(cfg: Config, tokenizer, rank: Optional[int] = None,
                       world_size: Optional[int] = None) -> PretrainingStream:
    """Train rows of ``cfg`` built on the fly from the streamed corpus (memory flat in corpus size).

    ``rank`` / ``world_size`` default to ``torch.distributed`` when initialised, else the ``RANK`` /
    ``WORLD_SIZE`` environment variables (set by ``accelerate launch`` and ``torchrun``), else 0 / 1.
    Under ``accelerate``, do not let ``accelerator.prepare`` shard this DataLoader again (each process
    already reads its own documents)."""
    check_data_config(cfg)
    check_tokenizer(tokenizer)
    rank, world_size = _dist_info(rank, world_size)
    docs = load_documents(cfg.corpus, streaming=True, task=task_text(cfg))
    builder = ExampleBuilder.from_config(cfg, tokenizer, "train")
    if cfg.data.objective != "mlm":  # fail fast on a corpus without sentence pairs (first group only)
        head = next(docs.iter(batch_size=cfg.data.random_next_buffer), {"text": []})["text"]
        if head and not any(len(split_document(t, builder.sentence_split)[0]) > 1 for t in head):
            raise _no_pairs_error(cfg, builder.sentence_split, len(head))
    return PretrainingStream(docs, builder, group_size=cfg.data.random_next_buffer,
                             shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.seed, rank=rank,
                             world_size=world_size)


def load_splits(cfg: Config, path: Optional[Path] = None, tokenizer=None, rank: Optional[int] = None,
                world_size: Optional[int] = None):
    """(train, validation) for the pretraining loop: the cached ``datasets.Dataset`` splits, or in
    streaming mode a :class:`PretrainingStream` and the cached validation split."""
    from datasets import load_from_disk

    path = Path(path) if path is not None else prepare_pretraining_data(cfg)
    dd = load_from_disk(str(path))
    if cfg.data.streaming:
        tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(RunLayout.of(cfg).tokenizer)
        return pretraining_stream(cfg, tokenizer, rank, world_size), dd["validation"]
    return dd["train"], dd["validation"]
