"""The bundled data's held-out-word design, checked on the generated files (see data/README.md).

Validation rows of the polar classes ask about sentiment adjectives that no training row contains
and that the pretraining corpus does contain, so only pretraining can teach them."""
from __future__ import annotations

import csv
import importlib.util
import re

import pytest

from conftest import DATA, ROOT


@pytest.fixture(scope="module")
def make_data():
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "scripts" / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(split: str) -> list[dict]:
    with open(DATA / "sentiment" / f"{split}.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def has_word(text: str, word: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text, re.IGNORECASE) is not None


def test_held_out_words_split_every_list(make_data):
    held = make_data.HELD_OUT
    assert len(held) >= 30
    for domain in make_data.SENT_DOMAINS.values():
        for aspect in domain["aspects"]:
            for words in aspect[1:]:
                assert set(words) & held and set(words) - held, words


def test_no_held_out_adjective_in_train_rows(make_data):
    for row in rows("train"):
        assert not [w for w in make_data.HELD_OUT if has_word(row["text"], w)], row


def test_each_polar_validation_row_has_a_held_out_adjective(make_data):
    val = rows("validation")
    assert len(val) == 150 and len(rows("train")) == 600
    for row in val:
        if row["label"] != "neutral":
            assert [w for w in make_data.HELD_OUT if has_word(row["text"], w)], row


def test_every_held_out_word_is_in_review_documents_of_the_corpus(make_data):
    docs = (DATA / "corpus.txt").read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    assert len(docs) == make_data.N_DOCS + make_data.N_REVIEW_DOCS
    text = "\n".join(docs)
    for w in make_data.HELD_OUT:
        found = len(re.findall(r"(?<![\w-])" + re.escape(w) + r"(?![\w-])", text, re.IGNORECASE))
        assert found >= 10, (w, found)
