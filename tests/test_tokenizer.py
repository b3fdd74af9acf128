"""Corpus reading and the WordPiece tokenizer stage, including every bad-input path."""
from __future__ import annotations

import json
import logging

import pytest

from mlm_pretrain.config import load_config
from mlm_pretrain.corpus import CorpusError, load_documents, scan_utf8
from mlm_pretrain.tokenizer import TokenizerError, load_tokenizer, train_tokenizer

SAMPLE = ["The Bank of Canada raised its key rate to 3.5 percent on Tuesday.",
          "Café owners in São Paulo said sales were naïvely forecast, Dr. Smith noted.",
          "Shares of Acme Inc. fell 12% -- the worst day since 1987!",
          "東京 and Zürich: ünïcödé, résumé; e-mail @ 10:45 a.m."]


def _cfg(tmp_path, *overrides):
    return load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", "tokenizer.vocab_size=2000", *overrides])


def test_trained_tokenizer_is_a_plain_fast_bert_tokenizer(tiny_tokenizer_dir, tiny_tokenizer):
    from transformers import AutoTokenizer, BertTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    assert isinstance(tok, BertTokenizer) and tok.is_fast
    assert len(tok) == 2000
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == \
        ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    assert tok.model_max_length == 128  # from the tiny recipe
    assert (tiny_tokenizer_dir / "vocab.txt").read_text().splitlines()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_round_trip_and_pairs(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "the market rose 3.5 percent on tuesday, analysts said."
    ids = tok(text)["input_ids"]
    # BERT's decoder re-joins "##" pieces and cleans the space before punctuation; "3.5" was split
    # by the BERT pre-tokenizer into 3 . 5, so only that space differs from the input
    assert tok.decode(ids, skip_special_tokens=True) == text.replace("3.5", "3. 5")
    # (with 2,000 entries "rose" is in pieces: the bundled corpus is half reviews)
    assert tok.convert_ids_to_tokens(ids)[:3] == ["[CLS]", "the", "market"] and "3" in tok.convert_ids_to_tokens(ids)
    assert tok.unk_token_id not in ids
    enc = tok("first sentence here.", "and the second one.")
    ids, types = enc["input_ids"], enc["token_type_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    sep = ids.index(tok.sep_token_id)
    assert ids.count(tok.sep_token_id) == 2
    assert set(types[: sep + 1]) == {0} and set(types[sep + 1:]) == {1}
    # lowercasing and accent stripping (uncased BERT)
    assert tok.tokenize("CAFÉ") == tok.tokenize("cafe")


def test_slow_and_fast_tokenizers_agree(tiny_tokenizer_dir, tiny_tokenizer, data_dir):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy.from_pretrained(str(tiny_tokenizer_dir))
    lines = [l for l in (data_dir / "corpus.txt").read_text(encoding="utf-8").splitlines() if l.strip()][:300]
    texts = lines + SAMPLE
    assert slow(texts)["input_ids"] == tiny_tokenizer(texts)["input_ids"]
    pair_slow = slow(SAMPLE[0], SAMPLE[1], return_token_type_ids=True)
    pair_fast = tiny_tokenizer(SAMPLE[0], SAMPLE[1])
    assert pair_slow["input_ids"] == pair_fast["input_ids"]
    assert pair_slow["token_type_ids"] == pair_fast["token_type_ids"]


def test_second_run_reuses_and_changed_settings_retrain(tmp_path):
    cfg = _cfg(tmp_path)
    out = train_tokenizer(cfg)
    stamp = (out / "tokenizer.json").stat().st_mtime_ns
    assert train_tokenizer(cfg) == out
    assert (out / "tokenizer.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "run" / "config.yaml").is_file()
    cfg2 = _cfg(tmp_path, "tokenizer.vocab_size=1500")
    assert train_tokenizer(cfg2) == out
    assert len(load_tokenizer(out)) == 1500


def test_a_tokenizer_trained_before_a_setting_was_added_is_kept(tmp_path):
    """A stamp written before ``tokenizer.type`` existed (its key has no ``type``) still matches while the
    setting is at its default: an upgrade does not train (and, for old tokenizers, renumber) it again."""
    cfg = _cfg(tmp_path)
    out = train_tokenizer(cfg)
    stamp_file = out / "mlm_pretrain_tokenizer.json"
    stamp = json.loads(stamp_file.read_text())
    assert "type" not in stamp["key"]["tokenizer"]
    mtime = (out / "tokenizer.json").stat().st_mtime_ns
    assert train_tokenizer(cfg) == out and (out / "tokenizer.json").stat().st_mtime_ns == mtime
    train_tokenizer(_cfg(tmp_path, "tokenizer.type=bpe"))  # set, it counts: another tokenizer
    assert json.loads(stamp_file.read_text())["key"]["tokenizer"]["type"] == "bpe"


def test_a_touched_or_copied_corpus_with_the_same_bytes_keeps_its_tokenizer(tmp_path, corpus_copies, caplog):
    """Training again costs two corpus reads, and for a tokenizer trained before the ids were fixed
    (tokenizers#1794) would renumber pieces and orphan the checkpoints built on them."""
    corpus, same_bytes = corpus_copies
    out = train_tokenizer(_cfg(tmp_path, f"corpus.files=[{corpus}]"))
    files = {f.name: f.read_bytes() for f in out.iterdir() if f.name != "mlm_pretrain_tokenizer.json"}
    touched, moved = same_bytes(out / "tokenizer.json")
    for path in (touched, moved):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mlm_pretrain.tokenizer"):
            assert train_tokenizer(_cfg(tmp_path, f"corpus.files=[{path}]")) == out
        assert "hold the same bytes; reusing it" in caplog.text
        assert {f.name: f.read_bytes() for f in out.iterdir() if f.name != "mlm_pretrain_tokenizer.json"} == files
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain.tokenizer"):  # the stamp now names the new path
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{moved}]"))
    assert "(same corpus and settings); reusing it" in caplog.text
    with moved.open("a", encoding="utf-8") as f:  # other bytes: trained again
        f.write("\nZebra quokka narwhal. Axolotl okapi.\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain.tokenizer"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{moved}]"))
    assert "trained a" in caplog.text and "reusing" not in caplog.text


def test_training_again_gives_the_same_pieces_under_the_same_ids(tmp_path, data_dir):
    """The tokenizers trainer alone numbers the ##c pieces in hash-map order (tokenizers#1794): on the
    bundled corpus 3 of 4 trainings in one process renumbered hundreds of pieces and changed the set."""
    from mlm_pretrain.corpus import iter_batches
    from mlm_pretrain.tokenizer import train_wordpiece

    cfg = load_config("tiny", [f"output_dir={tmp_path / 'run'}"])
    docs = load_documents(cfg.corpus)
    toks = [train_wordpiece(lambda: iter_batches(docs, 1000), cfg.tokenizer) for _ in range(3)]
    vocabs = [t.get_vocab() for t in toks]
    assert len(vocabs[0]) > 3000
    assert vocabs[1] == vocabs[0] and vocabs[2] == vocabs[0]
    order = sorted(vocabs[0], key=vocabs[0].get)
    assert order[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    continuation = [t for t in order if t.startswith("##") and len(t) == 3]
    assert order[5:5 + len(continuation)] == sorted(continuation)  # numbered in sorted order, after the specials
    # the seeded ## pieces are ordinary pieces, not special tokens, and words still split into them
    tok = toks[0]
    assert sorted(tok.all_special_tokens) == sorted(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    assert "##q" in vocabs[0] and tok.tokenize("##q") != ["##q"]  # text "##q" is not matched as a whole token
    assert tok.tokenize("zqx") == ["z", "##q", "##x"]


def test_pretrained_tokenizer_is_reused(tmp_path, tiny_tokenizer_dir):
    cfg = _cfg(tmp_path, f"tokenizer.pretrained={tiny_tokenizer_dir}")
    assert train_tokenizer(cfg) == tiny_tokenizer_dir
    assert not (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()  # nothing trained: only its report
    assert json.loads((tmp_path / "run" / "tokenizer" / "report.json").read_text())["vocab_size"] == 2000
    with pytest.raises(TokenizerError, match="does not exist; run `mlm-pretrain tokenizer`"):
        train_tokenizer(_cfg(tmp_path, f"tokenizer.pretrained={tmp_path / 'nope'}"))


def test_tokenizer_without_mask_token_is_rejected(tmp_path, tiny_tokenizer):
    from transformers import BertTokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"])}
    tok = BertTokenizer(vocab=vocab, mask_token=None)
    tok.save_pretrained(str(tmp_path / "nomask"))
    with pytest.raises(TokenizerError, match="mask_token"):
        load_tokenizer(tmp_path / "nomask")


# -- corpus formats ----------------------------------------------------------------------------
def _docs(cfg):
    return load_documents(cfg.corpus)["text"]


def test_reads_txt_jsonl_parquet_csv_and_globs(tmp_path):
    import pandas as pd

    texts = ["First doc. It has two sentences.", "Second doc here.\nWith a second line.", "Third."]
    (tmp_path / "a.txt").write_text("\n\n".join(texts[:2]) + "\n")
    (tmp_path / "b.txt").write_text("\n\n\n" + texts[2] + "\n\n")
    cfg = _cfg(tmp_path, f"corpus.files=[{tmp_path}/*.txt]")
    assert _docs(cfg) == texts
    with open(tmp_path / "c.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "body": t}) + "\n")
    assert _docs(_cfg(tmp_path, f"corpus.files=[{tmp_path}/c.jsonl]", "corpus.text_field=body")) == texts
    pd.DataFrame({"body": texts}).to_parquet(tmp_path / "d.parquet")
    assert _docs(_cfg(tmp_path, f"corpus.files=[{tmp_path}/d.parquet]", "corpus.text_field=body")) == texts
    pd.DataFrame({"body": texts, "n": [1, 2, 3]}).to_csv(tmp_path / "e.csv", index=False)
    assert _docs(_cfg(tmp_path, f"corpus.files=[{tmp_path}/e.csv]", "corpus.text_field=body")) == texts
    # one document per line
    assert _docs(_cfg(tmp_path, f"corpus.files=[{tmp_path}/a.txt]", "corpus.document_separator=line")) == \
        ["First doc. It has two sentences.", "Second doc here.", "With a second line."]
    # several files
    assert len(_docs(_cfg(tmp_path, f"corpus.files=[{tmp_path}/a.txt, {tmp_path}/b.txt]"))) == 3


def test_tokenizer_trains_on_structured_corpus(tmp_path, data_dir):
    cfg = _cfg(tmp_path, f"corpus.files=[{data_dir / 'corpus_running.jsonl'}]", "tokenizer.vocab_size=1000")
    tok = load_tokenizer(train_tokenizer(cfg))
    assert len(tok) == 1000


# -- bad input ---------------------------------------------------------------------------------
def test_missing_corpus_file_names_the_path(tmp_path):
    missing = tmp_path / "nothere.txt"
    with pytest.raises(CorpusError, match=f"corpus file '{missing}' does not exist"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{missing}]"))
    with pytest.raises(CorpusError, match="matches no file"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=['{tmp_path}/*.nothing']"))
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n\n")
    with pytest.raises(CorpusError, match="the corpus is empty"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{tmp_path / 'empty.txt'}]"))


def test_unknown_format_and_missing_field(tmp_path):
    (tmp_path / "c.docx").write_text("x")
    with pytest.raises(CorpusError, match=r"unknown format '\.docx'.*corpus\.format"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{tmp_path / 'c.docx'}]"))
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x", "id": 1}) + "\n")
    with pytest.raises(CorpusError, match=r"text field 'text' not found.*columns are: body, id"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{tmp_path / 'c.jsonl'}]"))


def test_invalid_utf8_replaced_and_counted_or_rejected(tmp_path, caplog, data_dir):
    good = (data_dir / "corpus.txt").read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(good[:5000] + b"\xff\xfe caf\xe9 " + good[5000:])
    assert scan_utf8(bad) == (3, 5000)  # \xff, \xfe and the lone Latin-1 \xe9
    with caplog.at_level(logging.WARNING):
        out = train_tokenizer(_cfg(tmp_path, f"corpus.files=[{bad}]"))
    assert "3 invalid UTF-8 sequence(s) (first at byte 5000) replaced" in caplog.text
    assert len(load_tokenizer(out)) == 2000
    with pytest.raises(CorpusError, match=f"{bad}: invalid UTF-8 at byte offset 5000"):
        train_tokenizer(_cfg(tmp_path, f"corpus.files=[{bad}]", "corpus.encoding_errors=strict",
                             "output_dir=" + str(tmp_path / "run2")))


def test_vocab_smaller_than_alphabet(tmp_path):
    with pytest.raises(TokenizerError, match=r"vocab_size=40 is smaller than the alphabet.*raise tokenizer\.vocab_size"):
        train_tokenizer(_cfg(tmp_path, "tokenizer.vocab_size=40"))
    assert not (tmp_path / "run" / "tokenizer").exists()
