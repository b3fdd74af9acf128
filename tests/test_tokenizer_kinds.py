"""Tokenizers beyond WordPiece: byte-level BPE and Unigram training (deterministic, loadable with
AutoTokenizer), special tokens by role, the tokenizer's own pair template, whole-word boundaries read off
the tokenizer, and the tokenizer report; on tiny hand-made tokenizers with hand-checked ids."""
from __future__ import annotations

import json
from collections import Counter
from random import Random

import pytest

from mlm_pretrain.config import ConfigError, MaskingConfig, load_config
from mlm_pretrain.examples import ExampleBuilder, template_of
from mlm_pretrain.masking import IGNORE_INDEX, MLMCollator
from mlm_pretrain.pairs import SEGMENT_A, SEGMENT_B, Template, build_examples
from mlm_pretrain.tokenizer import (TokenizerError, load_tokenizer, tokenizer_report, train_tokenizer,
                                    word_starts)

SPECIAL = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "pad_token": "<pad>",
           "unk_token": "<unk>", "mask_token": "<mask>"}


# ----------------------------------------------------------------------------------------------
# Tiny hand-made tokenizers of each kind: "the theme," in each
# ----------------------------------------------------------------------------------------------
def wordpiece():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##believ", "##able", ".", "##me", ","]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


def byte_bpe(add_prefix_space: bool = True):
    """RoBERTa's kind: byte-level BPE, ``<s> A </s></s> B </s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", "t", "h", "e", "m", ",",
                                         "Ġt", "Ġth", "Ġthe", "me"])}
    merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("m", "e")]
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL)


def unigram():
    """ALBERT's kind: Unigram with Metaspace (``▁`` starts a word)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = [("[PAD]", 0.0), ("[UNK]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0), ("▁the", -1.0),
              ("▁", -2.0), ("me", -2.0), (",", -2.0), ("t", -3.0), ("h", -3.0), ("e", -3.0), ("m", -3.0)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=1, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def test_word_starts_of_each_kind_with_hand_checked_ids():
    wp = wordpiece()
    assert wp("the unbelievable.", add_special_tokens=False)["input_ids"] == [5, 6, 7, 8, 9]
    assert [word_starts(wp)[i] for i in [5, 6, 7, 8, 9]] == [True, True, False, False, True]

    bpe = byte_bpe()
    ids = bpe("the theme,")["input_ids"]
    assert ids == [0, 13, 13, 14, 10, 2]  # <s> Ġthe Ġthe me , </s>
    starts = word_starts(bpe)
    assert [starts[i] for i in ids[1:-1]] == [True, True, False, True]  # "," is a word, as BERT's "," is
    assert starts[5] and not starts[6]  # "Ġ" (a space) starts one; "t" continues one

    uni = unigram()
    ids = uni("the theme,")["input_ids"]
    assert ids == [2, 5, 5, 7, 8, 3]  # [CLS] ▁the ▁the me , [SEP]
    starts = word_starts(uni)
    assert [starts[i] for i in ids[1:-1]] == [True, True, False, False]  # SentencePiece: words are space-delimited


def test_word_starts_refuses_a_tokenizer_without_readable_boundaries():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5}, []))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    with pytest.raises(TokenizerError, match="masking.whole_word=false"):
        word_starts(tok)
    MLMCollator(tok, MaskingConfig(whole_word=False))  # without whole-word masking it is fine


@pytest.mark.parametrize("make", [byte_bpe, unigram])
def test_whole_word_masking_takes_whole_words_of_bpe_and_unigram(make):
    tok = make()
    ids = tok("the theme, the theme,")["input_ids"]
    starts = word_starts(tok)
    collator = MLMCollator(tok, MaskingConfig(whole_word=True, probability=0.3), seed=0)
    words_seen = Counter()
    for _ in range(50):
        labels = collator([{"input_ids": ids}])["labels"][0, :len(ids)].tolist()
        for pos in range(1, len(ids) - 1):
            if not starts[ids[pos]]:  # a continuation is selected exactly when the piece before it is
                assert (labels[pos] != IGNORE_INDEX) == (labels[pos - 1] != IGNORE_INDEX)
        words_seen[tuple(p for p in range(len(ids)) if labels[p] != IGNORE_INDEX)] += 1
    assert (2, 3) in words_seen or (2, 3, 4) in words_seen  # "Ġthe me" masked together


def test_masking_requires_the_mask_role_by_name():
    tok = byte_bpe()
    tok.mask_token = None
    with pytest.raises(TokenizerError, match="mask_token"):
        MLMCollator(tok, MaskingConfig())


# ----------------------------------------------------------------------------------------------
# The tokenizer's own pair template
# ----------------------------------------------------------------------------------------------
def test_templates_are_the_tokenizers_own():
    assert template_of(wordpiece()) == Template.bert(2, 3)
    roberta = template_of(byte_bpe())
    assert roberta.pair == ((0, 0), (SEGMENT_A, 0), (2, 0), (2, 0), (SEGMENT_B, 0), (2, 0))
    assert roberta.single == ((0, 0), (SEGMENT_A, 0), (2, 0)) and roberta.separator == 2
    assert roberta.specials(pair=True) == 4 and roberta.specials(pair=False) == 2
    assert roberta.build([13, 14], [10]) == ([0, 13, 14, 2, 2, 10, 2], [0] * 7)
    albert = template_of(unigram())
    assert albert.build([5], [7, 8]) == ([2, 5, 3, 7, 8, 3], [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("make", [wordpiece, byte_bpe, unigram])
def test_pairs_match_what_the_tokenizer_itself_builds(make):
    tok = make()
    template = template_of(tok)
    a, b = "the theme,", "the theme, the"
    ids_a, ids_b = (tok(t, add_special_tokens=False)["input_ids"] for t in (a, b))
    enc = tok(a, b, return_token_type_ids=True)
    assert template.build(ids_a, ids_b) == (enc["input_ids"], enc["token_type_ids"])
    assert template.build(ids_a)[0] == tok(a)["input_ids"]


def test_roberta_pairs_fit_with_four_special_tokens():
    template = template_of(byte_bpe())
    doc = [[13, 14, 10]] * 8 + [[13]]
    examples = build_examples([doc, [[13, 13], [14, 14]]], Random(0), objective="nsp", max_seq_length=12,
                              short_seq_prob=0.0, template=template)
    assert examples
    for e in examples:
        assert len(e.input_ids) <= 12 and e.input_ids[0] == 0 and e.input_ids[-1] == 2
        assert e.input_ids.count(2) == 3 and e.input_ids.count(0) == 1  # <s> A </s></s> B </s>
        i = e.input_ids.index(2)
        assert e.input_ids[i + 1] == 2 and set(e.token_type_ids) == {0}
    blocks = build_examples([doc, doc], Random(0), objective="mlm", max_seq_length=12, short_seq_prob=0.0,
                            template=template)
    assert all(len(e.input_ids) <= 12 and e.input_ids[0] == 0 and e.input_ids[-1] == 2 for e in blocks)
    assert sum(len(e.input_ids) - 2 for e in blocks) == 2 * 25 + 1  # every token, one </s> between the documents


def test_sentences_after_the_first_are_encoded_as_in_running_text(tmp_path):
    tok = byte_bpe(add_prefix_space=False)  # RoBERTa's setting: no space before the text's first word
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", "data.objective=mlm"])
    builder = ExampleBuilder.from_config(cfg, tok)
    (doc,) = builder.encode([["the theme,", "the theme,"]])
    assert doc == [[6, 7, 8, 13, 14, 10], [13, 13, 14, 10]]  # the second sentence's "the" is Ġthe, as in the text


# ----------------------------------------------------------------------------------------------
# Training BPE and Unigram tokenizers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, data_dir):
    lines = (data_dir / "corpus.txt").read_text(encoding="utf-8").split("\n")[:600]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train(tmp_path, corpus, kind: str, name: str = "run", *over: str):
    size = {"bpe": 600, "unigram": 500, "wordpiece": 600}[kind]
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / name}", f"corpus.files=[{corpus}]",
                                    f"tokenizer.type={kind}", f"tokenizer.vocab_size={size}", *over])
    return cfg, train_tokenizer(cfg)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_trained_tokenizer_loads_with_auto_and_is_deterministic(tmp_path, small_corpus, kind):
    from transformers import AutoTokenizer

    cfg, out = _train(tmp_path, small_corpus, kind)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.is_fast and load_tokenizer(out) is not None
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    assert tok.model_max_length == cfg.tokenizer.model_max_length and not (out / "vocab.txt").exists()
    text = "the market rose on tuesday, analysts said."
    enc = tok(text, "and the second one.")
    assert enc["input_ids"][0] == 2 and enc["input_ids"].count(3) == 2 and enc["input_ids"][-1] == 3
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True).strip() == text
    assert template_of(tok) == Template.bert(2, 3)
    # a word-start marker on every word's first piece
    marker = {"bpe": "Ġ", "unigram": "▁"}[kind]
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces[0].startswith(marker)
    starts = word_starts(tok)
    words = [i for i, p in enumerate(tok.convert_ids_to_tokens(list(range(len(tok)))))
             if p.startswith(marker) or p[0] in "abcdefghijklmnopqrstuvwxyz"]
    assert len(words) > 300 and all(starts[i] == tok.convert_ids_to_tokens(i).startswith(marker) for i in words)
    if kind == "unigram":  # a line break or a tab is a word boundary, as a space is (SentencePiece's reading)
        assert not [p for p in tok.get_vocab() if any(c in p for c in " \n\t\r")]
        assert tok("market\nrose \t on\n\ntuesday ")["input_ids"] == tok("market rose on tuesday")["input_ids"]
    # the same corpus and settings: the same tokenizer.json, byte for byte (three more trainings)
    first = (out / "tokenizer.json").read_bytes()
    for n in range(3):
        assert (_train(tmp_path, small_corpus, kind, f"again{n}")[1] / "tokenizer.json").read_bytes() == first
    # and retrained when the type changes
    assert json.loads((out / "mlm_pretrain_tokenizer.json").read_text())["key"]["tokenizer"]["type"] == kind


def test_bpe_has_no_unknown_text_and_the_vocabulary_must_hold_the_bytes(tmp_path, small_corpus):
    _, out = _train(tmp_path, small_corpus, "bpe")
    tok = load_tokenizer(out)
    assert tok.unk_token_id not in tok("東京 Zürich ünïcödé ✓")["input_ids"]
    with pytest.raises(TokenizerError, match="256 bytes plus 5 special tokens"):
        _train(tmp_path, small_corpus, "bpe", "small", "tokenizer.vocab_size=200")


def test_a_new_tokenizer_type_with_init_from_is_refused(tmp_path, tiny_encoder_dir):
    from mlm_pretrain.layout import RunLayout

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", "tokenizer.type=bpe", f"model.init_from={tiny_encoder_dir}"])
    with pytest.raises(ConfigError, match="checkpoint's own tokenizer"):
        train_tokenizer(cfg)
    assert RunLayout.of(cfg.replace(**{"tokenizer.type": "wordpiece"})).tokenizer == tiny_encoder_dir


# ----------------------------------------------------------------------------------------------
# The tokenizer report
# ----------------------------------------------------------------------------------------------
def test_report_numbers_by_hand():
    tok = wordpiece()
    report = tokenizer_report(tok, ["the unbelievable.", "the zz"], validation_fraction=0.0)
    # tokens: the un ##believ ##able . | the [UNK] = 7; words 4; characters 17 + 6
    assert report["held_out"] == {"source": "the first documents (no held-out documents)", "documents": 2,
                                  "words": 4, "characters": 23, "tokens": 7}
    assert (report["tokens_per_word"], report["tokens_per_character"]) == (1.75, round(7 / 23, 4))
    assert report["unknown_share"] == round(1 / 7, 6)
    assert report["vocabulary_used_share"] == round(5 / 7, 4)  # of the, un, ##believ, ##able, ., ##me, ","
    assert report["longest_pieces"][:3] == ["##believ", "##able", "##me"]
    # whitespace as the pretraining examples hold it: a line break or a run of spaces is one space
    assert tokenizer_report(tok, ["the\n  unbelievable.\n", " the\tzz"], validation_fraction=0.0) == report


def test_report_does_not_count_the_line_breaks_pretraining_never_sees(tmp_path, small_corpus):
    _, out = _train(tmp_path, small_corpus, "bpe")
    tok = load_tokenizer(out)
    text = "the market rose on tuesday, analysts said.\nthe bank held its rate."
    assert "Ċ" in tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])  # BPE keeps it
    wrapped = tokenizer_report(tok, [text], validation_fraction=0.0)
    assert wrapped == tokenizer_report(tok, [text.replace("\n", " ")], validation_fraction=0.0)
    assert wrapped["held_out"]["tokens"] == len(tok(text.replace("\n", " "), add_special_tokens=False)["input_ids"])


def test_report_written_for_trained_and_given_tokenizers(tmp_path, small_corpus):
    cfg, out = _train(tmp_path, small_corpus, "unigram")
    report = json.loads((tmp_path / "run" / "tokenizer" / "report.json").read_text())
    assert report["type"] == "Unigram" and report["held_out"]["source"].startswith("held-out")
    assert 1.0 <= report["tokens_per_word"] < 3 and report["unknown_share"] < 0.01
    assert 0 < report["vocabulary_used_share"] <= 1 and len(report["longest_pieces"]) == 10
    given = load_config("tiny-bert", [f"output_dir={tmp_path / 'given'}", f"corpus.files=[{small_corpus}]",
                                      f"tokenizer.pretrained={out}"])
    train_tokenizer(given)
    again = json.loads((tmp_path / "given" / "tokenizer" / "report.json").read_text())
    assert {k: again[k] for k in ("tokens_per_word", "unknown_share")} == \
        {k: report[k] for k in ("tokens_per_word", "unknown_share")}
    # a report written before the reader changed (no "version" in its key) is computed again, not kept
    stale = tmp_path / "given" / "tokenizer" / "report.json"
    old_key = {k: v for k, v in again["key"].items() if k != "version"}
    stale.write_text(json.dumps({**again, "tokens_per_word": 0.82, "key": old_key}))
    train_tokenizer(given)
    assert json.loads(stale.read_text())["tokens_per_word"] == report["tokens_per_word"]
    stale.write_text(json.dumps({**again, "tokens_per_word": 0.5}))  # a current one is kept as it is
    train_tokenizer(given)
    assert json.loads(stale.read_text())["tokens_per_word"] == 0.5


# ----------------------------------------------------------------------------------------------
# Every stage on a BPE and a Unigram tokenizer
# ----------------------------------------------------------------------------------------------
SHRINK = ["model.num_hidden_layers=1", "model.hidden_size=32", "model.num_attention_heads=1", "model.intermediate_size=64",
          "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
          "data.max_validation_examples=32", "pretrain.max_steps=2", "pretrain.eval_steps=2", "pretrain.save_steps=2",
          "pretrain.batch_size=8", "pretrain.probe_examples=0", "pretrain.mixed_precision=no",
          "tracking.report_to=none", "tracking.plots=false", "finetune.max_steps=2", "finetune.seeds=[1]",
          "finetune.compare_baselines=false", "finetune.max_train_examples=32", "finetune.max_eval_examples=16",
          "finetune.batch_size=8", "finetune.max_length=64", "masking.whole_word=true"]


@pytest.mark.slow
@pytest.mark.parametrize("kind, arch, objective", [("bpe", "modernbert", "mlm"), ("unigram", "bert", "sop")])
def test_every_stage_runs_on_each_kind(tmp_path, small_corpus, kind, arch, objective):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from mlm_pretrain.pipeline import run_pipeline

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", f"corpus.files=[{small_corpus}]", f"tokenizer.type={kind}",
                                    "tokenizer.vocab_size=600", f"model.architecture={arch}",
                                    f"data.objective={objective}", *SHRINK])
    run_pipeline(cfg)
    final = tmp_path / "pretrain" / "final"
    tok = AutoTokenizer.from_pretrained(str(final))
    assert tok.mask_token == "[MASK]" and json.loads((final / "tokenizer.json").read_text())["model"]["type"] == \
        {"bpe": "BPE", "unigram": "Unigram"}[kind]
    assert type(AutoModelForMaskedLM.from_pretrained(str(final))).__name__ == \
        {"modernbert": "ModernBertForMaskedLM", "bert": "BertForMaskedLM"}[arch]
    assert len(pipeline("fill-mask", model=str(final), top_k=2)(f"the company said {tok.mask_token} would rise.")) == 2
    assert (tmp_path / "finetune" / "sentiment" / "final" / "config.json").is_file()
    report = (tmp_path / "report.md").read_text()
    assert f"### Tokenizer ({ {'bpe': 'BPE', 'unigram': 'Unigram'}[kind]}, " in report and "tokens per word" in report
