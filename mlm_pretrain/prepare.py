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
(:func:`mlm_pretrain.corpus.is_validation_document`), never by example; the same map call builds their
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
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .config import Config, save_resolved
from .corpus import corpus_content_hash, load_documents, sentence_split_mode
from .examples import (DataError, ExampleBuilder, _GroupMap, check_data_config, group_bounds, no_pairs_error,
                       partition, pretraining_stream, text_groups, to_columns, validation_document_limit)
from .finetune_data import task_text
from .identity import FORMAT_VERSION, RunInputs, cache_key, run_inputs
from .layout import RunLayout
from .masking import IGNORE_INDEX, MLMCollator
from .pairs import Example
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

_VALIDATION_MASK_CHUNK = 256


def _features(objective: str, validation: bool):
    from datasets import Features, List, Value

    cols = {"input_ids": List(Value("int32")), "token_type_ids": List(Value("int8"))}
    if objective != "mlm":
        cols["next_sentence_label"] = Value("int8")
    if validation:
        cols["labels"] = List(Value("int32"))
    return Features(cols)


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


def _train_examples(cfg: Config, tokenizer, key: str, work: Path, extra: dict):
    """``(train, train_counts, validation_examples, validation_counts)``: one ``datasets.map`` over groups
    of documents builds the training examples, and the held-out documents' examples on the side."""
    from datasets import Dataset

    docs = load_documents(cfg.corpus, task=task_text(cfg))
    extra["corpus_documents"] = len(docs)
    bounds = _document_groups(docs, cfg.data.random_next_buffer)
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
    return train, train_counts, val_examples, val_counts


def prepare_pretraining_data(cfg: Config, *, inputs: Optional[RunInputs] = None, tokenizer=None) -> Path:
    """Stage function: build (or reuse) the pretraining examples; returns the dataset folder.

    In streaming mode the folder holds only the ``validation`` split (train rows come from
    :func:`pretraining_stream`). ``inputs`` (:func:`mlm_pretrain.identity.run_inputs`) and ``tokenizer``:
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

    from datasets import DatasetDict

    work = root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "side").mkdir(parents=True)
    dataset_dir = work / "dataset"
    try:
        mode = sentence_split_mode(cfg)
        splits, stats, extra = {}, {}, {}
        t0 = time.perf_counter()
        if cfg.data.streaming:  # validation only, read from the stream (the corpus is never converted)
            docs = load_documents(cfg.corpus, streaming=True, task=task_text(cfg))
            val_examples, val_counts = stream_validation_examples(
                cfg, tokenizer, (b["text"] for b in docs.iter(batch_size=cfg.data.random_next_buffer)))
        else:
            splits["train"], train_counts, val_examples, val_counts = _train_examples(cfg, tokenizer, key, work, extra)
            if cfg.data.objective != "mlm" and not train_counts.get("multi_sentence_documents"):
                raise no_pairs_error(cfg, mode, train_counts.get("documents", 0))
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


def load_prepared(cfg: Config, path: Optional[Path] = None, tokenizer=None, rank: Optional[int] = None,
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
