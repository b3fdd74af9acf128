"""``corpus.include_task_text``: the fine-tuning task's training texts join the pretraining corpus
(task-adaptive pretraining), read from the task's own file, never its labels or validation rows."""
from __future__ import annotations

import json
import os

import pytest

from mlm_pretrain.config import ConfigError, fingerprint_dict, load_config
from mlm_pretrain.corpus import corpus_content_hash, corpus_fingerprint, load_documents
from mlm_pretrain.finetune_data import task_text
from mlm_pretrain.errors import UserError

CORPUS = ["The board met on Monday.\nShares rose.", "Rates were held at 3 percent."]
# GLUE-style tsv: no quoting (a quote is text), a trailing space, a row without text, one without label
TASK_TSV = ("sentence\tlabel\n"
            "a \"gripping\" film \t1\n"
            "dull and slow\t0\n"
            "\t1\n"
            "no label here\t\n"
            "  warm , funny  \t1\n")
TASK_TEXTS = ['a "gripping" film', "dull and slow", "warm , funny"]
VALIDATION_TSV = "sentence\tlabel\nnever in the corpus\t1\n"


@pytest.fixture
def task_files(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    (tmp_path / "train.tsv").write_text(TASK_TSV)
    (tmp_path / "dev.tsv").write_text(VALIDATION_TSV)
    return tmp_path


def _cfg(tmp_path, *overrides):
    return load_config("tiny", [f"output_dir={tmp_path / 'run'}", f"corpus.files=[{tmp_path / 'corpus.jsonl'}]",
                                f"finetune.train_file={tmp_path / 'train.tsv'}",
                                f"finetune.validation_file={tmp_path / 'dev.tsv'}", "finetune.text_column=sentence",
                                "corpus.include_task_text=true", *overrides])


def _texts(cfg, streaming=False):
    docs = load_documents(cfg.corpus, streaming=streaming, task=task_text(cfg))
    return [t for b in docs.iter(batch_size=100) for t in b["text"]]


def test_task_texts_follow_the_corpus_as_documents(task_files):
    cfg = _cfg(task_files)
    texts = _texts(cfg)
    # every usable training row's text, stripped, after the corpus; no label, no blank or label-less row
    assert texts == CORPUS + TASK_TEXTS
    assert "never in the corpus" not in texts
    assert _texts(cfg, streaming=True) == texts
    # the same documents as a corpus file made by hand from the task (how the task-adaptive study measured it)
    by_hand = task_files / "task_text.jsonl"
    by_hand.write_text("".join(json.dumps({"text": t}) + "\n" for t in TASK_TEXTS))
    cfg_by_hand = load_config("tiny", [f"output_dir={task_files / 'run'}",
                                       f"corpus.files=[{task_files / 'corpus.jsonl'},{by_hand}]"])
    assert _texts(cfg_by_hand) == texts
    # off (the default): the corpus alone
    assert task_text(load_config("tiny")) is None
    assert _texts(_cfg(task_files, "corpus.include_task_text=false")) == CORPUS


def test_a_pair_task_gives_two_documents_per_row(task_files):
    (task_files / "pairs.csv").write_text('s1,s2,label\nThe cat sat.,"A cat, sitting.",1\nIt rained.,,0\n'
                                          "Dogs bark.,Dogs make noise.,0\n")
    cfg = _cfg(task_files, f"finetune.train_file={task_files / 'pairs.csv'}", "finetune.validation_file=null",
               "finetune.text_column=s1", "finetune.text_pair_column=s2", "finetune.validation_fraction=0.34")
    from mlm_pretrain.finetune_data import clean_splits

    splits, skipped = clean_splits(cfg)
    assert skipped["train"]["empty_text"] == 1  # "It rained." has no pair: fine-tuning skips the row, so do we
    train, held_out = splits["train"], splits["validation"]
    assert (len(train), len(held_out)) == (1, 1)
    # no validation file: the row held out to validate fine-tuning stays out of the corpus
    assert _texts(cfg) == CORPUS + [train[0]["s1"], train[0]["s2"]]
    assert held_out[0]["s1"] not in _texts(cfg)


def _identity(cfg):
    """(cheap fingerprint, content hash) of ``cfg``'s corpus with its task texts."""
    return corpus_fingerprint(cfg.corpus, task_text(cfg)), corpus_content_hash(cfg.corpus, task_text(cfg))


def test_the_task_file_is_part_of_the_corpus_identity(task_files):
    off = _cfg(task_files, "corpus.include_task_text=false")
    on = _cfg(task_files)
    assert _identity(off) == (corpus_fingerprint(off.corpus), corpus_content_hash(off.corpus))  # unchanged when off
    before = _identity(on)
    assert before[0] != corpus_fingerprint(off.corpus) and before[1] != corpus_content_hash(off.corpus)
    # what chooses the rows or columns counts; the labelled validation file's bytes do not
    assert _identity(_cfg(task_files, "finetune.text_column=label"))[0] != before[0]
    (task_files / "dev.tsv").write_text(VALIDATION_TSV + "another\t0\n")
    assert _identity(on) == before
    # the training file's bytes do (and its mtime alone moves only the cheap fingerprint)
    train = task_files / "train.tsv"
    later = train.stat().st_mtime_ns + 10**9
    os.utime(train, ns=(later, later))
    assert _identity(on)[0] != before[0] and _identity(on)[1] == before[1]
    train.write_text(TASK_TSV + "one more\t0\n")
    assert _identity(on)[1] != before[1]
    # off is the default, so it stays out of the fingerprints of runs made before the setting existed
    assert "include_task_text" not in fingerprint_dict(off)["corpus"]
    assert fingerprint_dict(on)["corpus"]["include_task_text"] is True


def test_bad_task_input_is_refused_before_any_training(task_files):
    from mlm_pretrain.tokenizer import train_tokenizer

    with pytest.raises(ConfigError, match=r"corpus.include_task_text=true .* set finetune.train_file"):
        _cfg(task_files, "finetune.train_file=null")
    with pytest.raises(UserError, match=r"finetune.text_column='text' is not a column of .*train.tsv.*sentence, label"):
        train_tokenizer(_cfg(task_files, "finetune.text_column=text"))
    with pytest.raises(UserError, match=r"finetune.train_file 'nope.tsv' does not exist .* fix finetune.train_file"):
        train_tokenizer(_cfg(task_files, "finetune.train_file=nope.tsv"))
    assert not (task_files / "run" / "tokenizer").exists()


def test_tokenizer_data_and_card_learn_the_task_words(task_files):
    """End to end on the tiny recipe: a word only the task uses enters the vocabulary, the prepared data
    holds the task's documents, and the model card says what the encoder was pretrained on."""
    from mlm_pretrain.model_card import build_model_card
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.tokenizer import load_tokenizer, train_tokenizer

    rows = [f"zyzzyva {w} plot\t{i % 2}" for i, w in enumerate(["great", "bad", "fine", "odd", "new", "old"])]
    (task_files / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    corpus = task_files / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"The board met on day {i}. Shares rose {i} percent."}) + "\n"
                              for i in range(40)))
    cfg = _cfg(task_files, "tokenizer.vocab_size=200", "data.validation_fraction=0.1")
    tok = load_tokenizer(train_tokenizer(cfg))
    assert tok.tokenize("zyzzyva") == ["zyzzyva"]
    stamp = json.loads((task_files / "run" / "tokenizer" / "mlm_pretrain_tokenizer.json").read_text())
    assert stamp["documents"] == 40 + 6
    stats = json.loads((prepare_pretraining_data(cfg) / "stats.json").read_text())
    assert stats["corpus_documents"] == 40 + 6
    off = load_tokenizer(train_tokenizer(_cfg(task_files, "corpus.include_task_text=false", "tokenizer.vocab_size=200",
                                              f"output_dir={task_files / 'off'}")))
    assert off.tokenize("zyzzyva") != ["zyzzyva"]
    model_dir = task_files / "run" / "pretrain" / "final"
    model_dir.mkdir(parents=True)
    card = build_model_card(model_dir, cfg, kind="pretrain", metrics={}).text
    assert "| Also pretrained on | the `sentiment` task's training texts (train.tsv, no labels) |" in card
    assert "Documents | 46" in card
