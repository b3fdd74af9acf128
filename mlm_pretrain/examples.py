"""Texts -> pretraining examples: the builder that turns a group of documents into NSP / SOP / MLM
examples (picklable: it runs in ``datasets.map`` worker processes and DataLoader workers), and the
streaming dataset that builds them on the fly (``data.streaming=true``).

    builder = ExampleBuilder.from_config(cfg, tokenizer)        # split sentences, encode, build (pairs.py)
    examples, counts = builder(texts, epoch=0)
    stream = pretraining_stream(cfg, tokenizer)                  # an IterableDataset of rows, bounded memory

Each group's RNG is seeded from the seed, the pass and the group's content, so the examples do not
depend on ``num_proc`` or on how the documents are split among processes and workers.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch

from .config import Config
from .corpus import is_validation_document, load_documents, sentence_split_mode
from .errors import UserError
from .finetune_data import task_text
from .pairs import SEGMENT_A, SEGMENT_B, Example, Template, build_examples, group_seed, split_document
from .tokenizer import check_tokenizer, plain_backend

logger = logging.getLogger(__name__)


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
    if n > max_pos and not cfg.model.init_from:  # a checkpoint's own positions: mlm_pretrain.positions.check_window
        raise DataError(f"data.max_seq_length={n} exceeds model.max_position_embeddings={max_pos}: the model "
                        f"cannot embed positions past {max_pos}; lower data.max_seq_length or raise "
                        "model.max_position_embeddings")


def no_pairs_error(cfg: Config, mode: str, documents: int) -> DataError:
    how = ("one sentence per line, a blank line between documents" if mode == "line"
           else "sentences found by the rule-based splitter")
    return DataError(
        f"data.objective={cfg.data.objective} needs documents with at least two sentences, but none of the "
        f"{documents} documents has more than one (data.sentence_split={mode}: {how}). Fix the corpus "
        "layout (a blank line between documents in .txt files; corpus.document_separator=blank_line), "
        "use data.sentence_split=rules for running text, or use data.objective=mlm (no sentence pairs)")


# ----------------------------------------------------------------------------------------------
# Validation (fixed masks)
# ----------------------------------------------------------------------------------------------


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


def template_of(tokenizer) -> Template:
    """The tokenizer's own special tokens around a text and a pair (its post-processor's, as
    ``tokenizer(a, b)`` adds them: ``<s> A </s></s> B </s>`` for RoBERTa's), read by post-processing two
    one-word encodings; BERT's layout from ``cls_token`` / ``sep_token`` for a tokenizer without one."""
    check_tokenizer(tokenizer)
    backend = tokenizer.backend_tokenizer
    if backend.post_processor is None:
        return Template.bert(tokenizer.cls_token_id, tokenizer.sep_token_id)
    special = set(tokenizer.all_special_ids)
    words = ["a", "the", "0", "."] + [tokenizer.decode([i]) for i in range(min(len(tokenizer), 200)) if i not in special]
    a = b = next((e for e in (backend.encode(w, add_special_tokens=False) for w in words)
                  if e.ids and not any(e.special_tokens_mask)), None)
    if a is None:
        raise DataError("the tokenizer encodes no word to pieces: it cannot build examples; give a full tokenizer")

    def layout(encoding) -> tuple[tuple[int, int], ...]:
        out: list[tuple[int, int]] = []
        segments = iter((SEGMENT_A, SEGMENT_B, None))
        for i, added, t in zip(encoding.ids, encoding.special_tokens_mask, encoding.type_ids):
            if added:
                out.append((i, t))
            elif not out or out[-1][0] >= 0:  # the first token of the next text
                out.append((next(segments), t))
        return tuple(out)

    single, pair = layout(backend.post_process(a, None, True)), layout(backend.post_process(a, b, True))
    if [i for i, _ in pair if i < 0] != [SEGMENT_A, SEGMENT_B]:
        raise DataError(f"the tokenizer's post-processor ({type(backend.post_processor).__name__}) does not lay out "
                        "a pair of texts as two segments; give a tokenizer whose tokenizer(a, b) keeps both texts")
    return Template(single, pair, tokenizer.sep_token_id)


@dataclass
class ExampleBuilder:
    """Turns a group of document texts into examples: sentence split, one batch encode, pairs."""

    backend: Any  # a tokenizers.Tokenizer (the fast tokenizer's Rust backend)
    template: Template  # the tokenizer's special tokens around a text and a pair
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
        backend = plain_backend(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()))
        return cls(backend=backend, template=template_of(tokenizer),
                   objective=cfg.data.objective, max_seq_length=cfg.data.max_seq_length,
                   short_seq_prob=cfg.data.short_seq_prob,
                   dupe_factor=cfg.data.dupe_factor if split == "train" else 1,
                   sentence_split=sentence_split_mode(cfg), seed=cfg.seed,
                   validation_fraction=cfg.data.validation_fraction, split=split)

    def encode(self, documents: list[list[str]]) -> list[list[list[int]]]:
        """Token ids of every sentence, document by document: one ``encode_batch_fast`` call for all
        the sentences of the group (no offsets, no special tokens; Rust does the work). A sentence after
        the first is encoded after the space that preceded it in the text, so a tokenizer that marks word
        starts by a space (byte-level BPE, SentencePiece) gives its first word the ids it has in running
        text (WordPiece ignores the space)."""
        flat = [s if i == 0 else " " + s for sentences in documents for i, s in enumerate(sentences)]
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
        limit = self.max_seq_length - self.template.specials(pair=True) if self.objective != "mlm" else None
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
                                           short_seq_prob=self.short_seq_prob, template=self.template,
                                           counts=counts))
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
            raise no_pairs_error(cfg, builder.sentence_split, len(head))
    return PretrainingStream(docs, builder, group_size=cfg.data.random_next_buffer,
                             shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.seed, rank=rank,
                             world_size=world_size)
