"""Sentence splitting and NSP / SOP / MLM example construction on hand-written text and ids."""
from __future__ import annotations

import json
from collections import Counter
from random import Random

import pytest

from mlm_pretrain.corpus import is_validation_document
from mlm_pretrain.pairs import (Template, build_examples, group_seed, mlm_examples, pair_examples, split_document,
                                split_lines, split_paragraphs, split_sentences, truncate_seq_pair)

CLS, SEP = 2, 3
BERT = Template.bert(CLS, SEP)


# ----------------------------------------------------------------------------------------------
# Sentence splitting
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith met Mr. Jones. They talked.", ["Dr. Smith met Mr. Jones.", "They talked."]),
    ("Profit rose to 3.5 mln dlrs. The company said 2.27 times.",
     ["Profit rose to 3.5 mln dlrs.", "The company said 2.27 times."]),
    ("Sales were 5.93 mln. Analysts expected more.", ["Sales were 5.93 mln.", "Analysts expected more."]),
    ("The U.S. Treasury said so. It was in the U.S. The company agreed.",
     ["The U.S. Treasury said so.", "It was in the U.S.", "The company agreed."]),
    ("Acme Inc. said it would sell. Shares of Acme Corp. Rose sharply.",
     ["Acme Inc. said it would sell.", "Shares of Acme Corp.", "Rose sharply."]),
    ("John F. Kennedy and J.P. Morgan met. Then they left.", ["John F. Kennedy and J.P. Morgan met.", "Then they left."]),
    ('He said "it is fine." Then he left.', ['He said "it is fine."', "Then he left."]),
    ('"Why?" he asked. "Because!" She laughed.', ['"Why?" he asked.', '"Because!"', "She laughed."]),
    ("It opens on Jan. 5 at No. 1 Main St. in Boston. We went.",
     ["It opens on Jan. 5 at No. 1 Main St. in Boston.", "We went."]),
    ("It is 3 p.m. on Monday, e.g. now. Good.", ["It is 3 p.m. on Monday, e.g. now.", "Good."]),
    ("Prices fell (sharply.) Traders left... Next week? 1987 was better.",
     ["Prices fell (sharply.)", "Traders left...", "Next week?", "1987 was better."]),
    ("no capital letters here. so no split.", ["no capital letters here. so no split."]),
])
def test_rule_splitter_hand_written(text, expected):
    assert split_sentences(text) == expected


def test_hard_wraps_are_joined_and_indented_lines_start_paragraphs():
    text = ("Showers continued throughout the week in\nthe Bahia cocoa zone, said Smith\n"
            "    The dry period means the temporao\nwill be late this year.\n Reuter")
    assert split_paragraphs(text) == [
        "Showers continued throughout the week in the Bahia cocoa zone, said Smith",
        "The dry period means the temporao will be late this year.", "Reuter"]
    # a paragraph ends a sentence even without punctuation
    assert split_sentences(text) == split_paragraphs(text)
    assert split_sentences("one\n\n\ntwo\r\n\r\nthree") == ["one", "two", "three"]
    assert split_sentences("  \n \n") == []


def test_line_mode_counts_empty_lines():
    assert split_lines("First line.\n\n   \nSecond line.") == (["First line.", "Second line."], 2)
    text = "Alpha beta. Gamma delta.\nEpsilon zeta."
    assert split_document(text, "line") == (["Alpha beta. Gamma delta.", "Epsilon zeta."], 0)
    assert split_document(text, "rules") == (["Alpha beta.", "Gamma delta.", "Epsilon zeta."], 0)
    with pytest.raises(ValueError):
        split_document("x", "words")


def test_rule_splitter_on_real_reuters_paragraphs(shared_data):
    path = shared_data / "pretrain_reuters21578" / "train.jsonl"
    if not path.is_file():
        pytest.skip("Reuters corpus absent")
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(next(f))["text"] for _ in range(200)]
    cocoa = split_sentences(docs[0])
    assert cocoa[0].startswith("Showers continued throughout the week in the Bahia cocoa zone,")
    assert cocoa[0].endswith("Comissaria Smith said in its weekly review.")
    assert cocoa[1] == "The dry period means the temporao will be late this year."
    assert ("Arrivals for the week ended February 22 were 155,221 bags of 60 kilos making a cumulative "
            "total for the season of 5.93 mln against 5.81 at the same stage last year.") in cocoa
    assert "Destinations were the U.S., Covertible currency areas, Uruguay and open ports." in cocoa
    assert cocoa[-1] == "Reuter"  # the signature is its own paragraph
    all_sentences = [s for d in docs for s in split_sentences(d)]
    assert all("\n" not in s and "  " not in s for s in all_sentences)
    # a split never leaves a sentence starting in lower case (rare: lower-case paragraph starts)
    assert sum(s[0].islower() for s in all_sentences) / len(all_sentences) < 0.02
    assert 3 < len(all_sentences) / len(docs) < 15


# ----------------------------------------------------------------------------------------------
# Validation rule and seeds
# ----------------------------------------------------------------------------------------------
def test_validation_rule_is_by_content_and_close_to_the_fraction():
    texts = [f"document number {i}" for i in range(20000)]
    held = [t for t in texts if is_validation_document(t, 0.1)]
    assert 0.09 < len(held) / len(texts) < 0.11
    assert held == [t for t in texts if is_validation_document(t, 0.1)]
    assert not any(is_validation_document(t, 0.0) for t in texts)
    assert group_seed(1, 0, "a") == group_seed(1, 0, "a") != group_seed(2, 0, "a") != group_seed(1, 1, "a")


# ----------------------------------------------------------------------------------------------
# Example construction
# ----------------------------------------------------------------------------------------------
def make_docs(n_docs: int, rng: Random, min_sent=2, max_sent=8, min_len=3, max_len=30):
    """Document d's tokens are 10_000 * (d + 1) + running index: the doc and position of every token
    can be read back from its id."""
    docs = []
    for d in range(n_docs):
        base, doc = 10_000 * (d + 1), []
        for _ in range(rng.randint(min_sent, max_sent)):
            n = rng.randint(min_len, max_len)
            doc.append(list(range(base, base + n)))
            base += n
        docs.append(doc)
    return docs


def parts(ex):
    ids = ex.input_ids
    first, second = ids.index(SEP), len(ids) - 1
    return ids[1:first], ids[first + 1:second]


def doc_of(token):
    return token // 10_000 - 1


def test_truncate_seq_pair_trims_the_longer_side():
    a, b = list(range(10)), list(range(100, 103))
    ta, tb = truncate_seq_pair(a, b, 8, Random(0))
    assert len(ta) + len(tb) == 8 and tb == b and len(ta) == 5
    assert ta == sorted(ta) and ta[-1] - ta[0] == 4  # a contiguous window: cut from front and back only
    ta, tb = truncate_seq_pair(list(range(6)), list(range(100, 106)), 6, Random(1))
    assert (len(ta), len(tb)) == (3, 3)
    assert truncate_seq_pair([1, 2], [3], 5, Random(0)) == ([1, 2], [3])


def test_nsp_examples_structure_balance_and_random_next_from_other_documents():
    docs = make_docs(300, Random(0))
    counts = Counter()
    examples = build_examples(docs, Random(42), objective="nsp", max_seq_length=64, short_seq_prob=0.1,
                              template=BERT, counts=counts)
    assert len(examples) > 500
    labels = [e.next_sentence_label for e in examples]
    assert 0.45 < sum(labels) / len(labels) < 0.55
    for ex in examples:
        assert len(ex.input_ids) <= 64
        assert ex.input_ids[0] == CLS and ex.input_ids[-1] == SEP and ex.input_ids.count(SEP) == 2
        a, b = parts(ex)
        assert a and b
        assert ex.token_type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        doc_a = {doc_of(t) for t in a}
        assert len(doc_a) == 1
        if ex.next_sentence_label == 1:
            assert doc_a.isdisjoint(doc_of(t) for t in b)  # never from the same document
        else:
            assert {doc_of(t) for t in b} == doc_a
            assert max(a) < min(b)  # B follows A
    assert counts["random_next_unavailable"] == 0


def test_sop_always_consecutive_and_swapped_half_the_time():
    docs = make_docs(200, Random(1))
    examples = build_examples(docs, Random(7), objective="sop", max_seq_length=48, short_seq_prob=0.1,
                              template=BERT)
    labels = [e.next_sentence_label for e in examples]
    assert 0.45 < sum(labels) / len(labels) < 0.55
    for ex in examples:
        a, b = parts(ex)
        assert len(ex.input_ids) <= 48
        assert {doc_of(t) for t in a} == {doc_of(t) for t in b}
        if ex.next_sentence_label == 1:
            assert min(a) > max(b)  # swapped
        else:
            assert max(a) < min(b)


def test_mlm_blocks_are_full_length_contiguous_text_without_pair_label():
    docs = make_docs(50, Random(2), max_len=70)
    examples = mlm_examples(docs, Random(3), max_seq_length=32, short_seq_prob=0.0, template=BERT)
    assert all(e.next_sentence_label is None for e in examples)
    assert all(e.input_ids[0] == CLS and e.input_ids[-1] == SEP for e in examples)
    assert all(set(e.token_type_ids) == {0} and len(e.token_type_ids) == len(e.input_ids) for e in examples)
    # full length; 31 when a document [SEP] fell on the block's edge and was dropped
    assert all(len(e.input_ids) in (31, 32) for e in examples[:-1])
    assert sum(len(e.input_ids) == 31 for e in examples) <= len(docs)
    content = [t for e in examples for t in e.input_ids[1:-1] if t != SEP]
    assert content == [t for doc in docs for s in doc for t in s]  # nothing lost, order kept
    inner = [e.input_ids[1:-1] for e in examples]
    assert sum(b.count(SEP) for b in inner) >= len(docs) - 1 - len(examples)  # document boundaries marked
    short = mlm_examples(docs, Random(3), max_seq_length=32, short_seq_prob=0.5, template=BERT)
    assert sum(len(e.input_ids) < 31 for e in short) > 0.3 * len(short)


def test_same_seed_same_examples_and_different_seed_different():
    docs = make_docs(40, Random(4))
    kw = dict(objective="nsp", max_seq_length=40, short_seq_prob=0.1, template=BERT)
    assert build_examples(docs, Random(5), **kw) == build_examples(docs, Random(5), **kw)
    assert build_examples(docs, Random(5), **kw) != build_examples(docs, Random(6), **kw)


def test_single_sentence_documents_give_no_pairs_but_feed_random_next():
    docs = [[[10_000, 10_001]], [[20_000, 20_001, 20_002], [20_003, 20_004]]]
    examples = []
    for seed in range(40):
        examples += build_examples(docs, Random(seed), objective="nsp", max_seq_length=16, short_seq_prob=0.0,
                                   template=BERT)
    assert examples and all(doc_of(parts(e)[0][0]) == 1 for e in examples)
    assert any(e.next_sentence_label == 1 and doc_of(parts(e)[1][0]) == 0 for e in examples)


def test_over_long_sentences_fit_and_a_lone_document_gets_real_next_only():
    docs = [[list(range(10_000 + 500 * k, 10_000 + 500 * k + 400)) for k in range(20)] + [[20_000, 20_001]]]
    counts = Counter()
    examples = pair_examples(docs, 0, Random(0), objective="nsp", max_seq_length=32, short_seq_prob=0.0,
                             template=BERT, counts=counts)
    assert len(examples) >= 10 and all(len(e.input_ids) <= 32 for e in examples)
    assert all(e.next_sentence_label == 0 for e in examples)
    assert counts["random_next_unavailable"] > 0  # the coin said "random" but there is no other document


def test_one_token_tail_is_dropped_before_the_coin_flip():
    # a chunk ends before the last sentence only when it reaches the target; with put-backs the
    # one-token signature ("Reuter") can be left alone: it is counted, never made into a pair
    docs = make_docs(100, Random(9), min_sent=3, max_sent=6, min_len=20, max_len=30)
    for d in docs:
        d.append([d[-1][-1] + 1])
    counts = Counter()
    examples = build_examples(docs, Random(0), objective="nsp", max_seq_length=128, short_seq_prob=0.0,
                              template=BERT, counts=counts)
    assert counts["skipped_one_token_tail"] > 0
    labels = [e.next_sentence_label for e in examples]
    assert 0.4 < sum(labels) / len(labels) < 0.6
