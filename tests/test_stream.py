"""Streaming mode: the same rows on the fly, split across DataLoader workers and processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from mlm_pretrain.examples import DataError, pretraining_stream
from mlm_pretrain.prepare import load_prepared, prepare_pretraining_data

ROOT = Path(__file__).resolve().parent.parent


def key(row):
    return tuple(row["input_ids"]), row.get("next_sentence_label")


@pytest.fixture
def word_corpus(tmp_path, tiny_tokenizer):
    """A .txt corpus where document k is made of one vocabulary word w_k only, so every example
    names its document; returns (write(n_files) -> list of paths, {token id: document index})."""
    vocab = tiny_tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and len(w) >= 4 and w.islower())
    words = [w for w in words if tiny_tokenizer(w, add_special_tokens=False)["input_ids"] == [vocab[w]]][:120]
    assert len(words) == 120
    docs = [f"{w} {w} {w}.\n{w} {w}.\n{w} {w} {w} {w}." for w in words]

    def write(n_files: int) -> list[Path]:
        paths = []
        for f in range(n_files):
            p = tmp_path / f"part{f}.txt"
            p.write_text("\n\n".join(docs[f::n_files]) + "\n")
            paths.append(p)
        return paths

    return write, {vocab[w]: k for k, w in enumerate(words)}


def docs_of(rows, word_ids):
    out = []
    for row in rows:
        found = {word_ids[t] for t in row["input_ids"] if t in word_ids}
        assert len(found) == 1  # sop: A and B come from one document
        out.append(found.pop())
    return out


@pytest.fixture
def stream_cfg(make_config, tiny_tokenizer_dir):
    def _cfg(*overrides):
        return make_config(f"tokenizer.pretrained={tiny_tokenizer_dir}", "data.streaming=true",
                           "data.dupe_factor=1", *overrides)
    return _cfg


@pytest.mark.slow
def test_stream_rows_match_the_cached_rows(make_config, stream_cfg, tiny_tokenizer, tmp_path):
    cached_cfg = stream_cfg("data.streaming=false", f"data.cache_dir={tmp_path / 'c'}")
    from datasets import load_from_disk

    cached = load_from_disk(str(prepare_pretraining_data(cached_cfg)))["train"]
    stream = pretraining_stream(stream_cfg("data.shuffle_buffer=50"), tiny_tokenizer, rank=0, world_size=1)
    rows = list(stream)
    assert set(rows[0]) == {"input_ids", "token_type_ids", "next_sentence_label"}
    # one reader groups documents exactly like the cached map: the same examples, shuffled
    assert sorted(map(key, rows)) == sorted(map(key, cached))
    assert [key(r) for r in rows] != [key(r) for r in cached]
    assert [key(r) for r in pretraining_stream(stream_cfg("data.shuffle_buffer=50"), tiny_tokenizer, 0, 1)] == \
        [key(r) for r in rows]  # deterministic
    stream.set_epoch(1)
    assert sorted(map(key, stream)) != sorted(map(key, rows))  # new pairs each epoch


def _tag_worker(row):  # runs in the DataLoader worker
    return row, torch.utils.data.get_worker_info().id


@pytest.mark.parametrize("n_files", [1, 4])
def test_workers_and_processes_see_disjoint_documents(stream_cfg, tiny_tokenizer, word_corpus, n_files):
    write, word_ids = word_corpus
    files = write(n_files)
    cfg = stream_cfg("corpus.files=[" + ",".join(map(str, files)) + "]", "data.objective=sop",
                     "data.validation_fraction=0.1", "data.shuffle_buffer=16", "data.random_next_buffer=8")
    seen = defaultdict(set)  # document -> readers
    total_rows = 0
    for rank in range(2):
        stream = pretraining_stream(cfg, tiny_tokenizer, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2, collate_fn=_tag_worker)
        by_worker = defaultdict(list)
        for row, worker in loader:
            by_worker[worker].append(row)
        for worker, rows in by_worker.items():
            total_rows += len(rows)
            for d in docs_of(rows, word_ids):
                seen[d].add((rank, worker))
    assert total_rows > 100
    assert all(len(readers) == 1 for readers in seen.values())  # no document read twice
    assert len({r for readers in seen.values() for r in readers}) == 4  # all four readers got work
    from mlm_pretrain.corpus import is_validation_document

    texts = [t for f in files for t in f.read_text().split("\n\n") if t.strip()]
    train_docs = {word_ids[tiny_tokenizer(t.split()[0], add_special_tokens=False)["input_ids"][0]]
                  for t in texts if not is_validation_document(t.strip("\n"), 0.1)}
    assert set(seen) == train_docs  # and none lost; validation documents never in train


def test_streaming_prepare_writes_validation_only(stream_cfg, tiny_tokenizer):
    cfg = stream_cfg()
    path = prepare_pretraining_data(cfg)
    stats = json.loads((path / "stats.json").read_text())
    assert stats["streaming"] and "train" not in stats and stats["validation"]["examples"] > 0
    train, validation = load_prepared(cfg, path, tiny_tokenizer)
    assert "labels" in validation.column_names and len(validation) == stats["validation"]["examples"]
    assert isinstance(train, torch.utils.data.IterableDataset)
    val_keys = {tuple(r) for r in validation["input_ids"]}
    row = next(iter(train))
    assert set(row) == {"input_ids", "token_type_ids", "next_sentence_label"} and tuple(row["input_ids"]) not in val_keys


def test_streaming_validation_equals_the_cached_one(stream_cfg, tmp_path):
    from datasets import load_from_disk

    streamed = load_from_disk(str(prepare_pretraining_data(stream_cfg(f"data.cache_dir={tmp_path / 's'}"))))
    cached = load_from_disk(str(prepare_pretraining_data(stream_cfg(f"data.cache_dir={tmp_path / 'c'}",
                                                                    "data.streaming=false"))))
    assert len(streamed["validation"]) > 10
    assert streamed["validation"][:] == cached["validation"][:]  # same documents, pairs and fixed masks


def test_stream_refuses_a_corpus_without_sentence_pairs(stream_cfg, tiny_tokenizer, tmp_path):
    corpus = tmp_path / "flat.txt"
    corpus.write_text("\n\n".join(f"Only one sentence in document {i}." for i in range(20)) + "\n")
    with pytest.raises(DataError, match="at least two sentences"):
        pretraining_stream(stream_cfg(f"corpus.files=[{corpus}]"), tiny_tokenizer, 0, 1)
    stream = pretraining_stream(stream_cfg(f"corpus.files=[{corpus}]", "data.objective=mlm"), tiny_tokenizer, 0, 1)
    assert all("next_sentence_label" not in r for r in stream)


_CHILD = """
import json, sys, torch
from mlm_pretrain.config import load_config
from mlm_pretrain.prepare import pretraining_stream
from mlm_pretrain.tokenizer import load_tokenizer
cfg = load_config("tiny-bert", sys.argv[1:])
stream = pretraining_stream(cfg, load_tokenizer(cfg.tokenizer.pretrained))   # rank from RANK / WORLD_SIZE
rows = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2))
print(json.dumps([r["input_ids"] for r in rows]))
"""


@pytest.mark.slow
def test_two_real_processes_see_disjoint_documents(stream_cfg, tiny_tokenizer_dir, word_corpus, tmp_path):
    write, word_ids = word_corpus
    files = write(1)
    args = [f"output_dir={tmp_path / 'run'}", f"tokenizer.pretrained={tiny_tokenizer_dir}", "data.streaming=true",
            f"corpus.files=[{files[0]}]", "data.objective=sop", "data.random_next_buffer=8", "data.shuffle_buffer=4"]
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"}) for r in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    per_rank = [set(docs_of([{"input_ids": ids} for ids in json.loads(out)], word_ids)) for out in outputs]
    assert per_rank[0] and per_rank[1] and per_rank[0].isdisjoint(per_rank[1])
