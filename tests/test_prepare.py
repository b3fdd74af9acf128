"""Cached pretraining data: end to end on the bundled corpus, the cache key, atomic writes, bad input."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from mlm_pretrain.config import ConfigError
from mlm_pretrain.errors import UserError
from mlm_pretrain.examples import DataError
from mlm_pretrain.prepare import prepare_pretraining_data


@pytest.fixture
def cfg_for(make_config, tiny_tokenizer_dir):
    """Config with the session's tiny tokenizer; extra ``key=value`` overrides."""
    def _cfg(*overrides: str):
        return make_config(f"tokenizer.pretrained={tiny_tokenizer_dir}", "data.dupe_factor=2", *overrides)
    return _cfg


def load(path):
    from datasets import load_from_disk

    return load_from_disk(str(path))


def check_rows(ds, cfg, tok, validation=False):
    n = cfg.data.max_seq_length
    for row in ds:
        ids = row["input_ids"]
        assert 4 <= len(ids) <= n and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert len(row["token_type_ids"]) == len(ids)
        if cfg.data.objective == "mlm":
            assert "next_sentence_label" not in row and set(row["token_type_ids"]) == {0}
        else:
            assert ids.count(tok.sep_token_id) == 2 and row["next_sentence_label"] in (0, 1)
            first_sep = ids.index(tok.sep_token_id)
            assert row["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        if validation:
            labels = row["labels"]
            assert len(labels) == len(ids) and any(x != -100 for x in labels)
            assert labels[0] == -100 and labels[-1] == -100


def test_prepare_bundled_corpus_end_to_end(cfg_for, tiny_tokenizer, caplog, data_dir):
    cfg = cfg_for()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain"):
        path = prepare_pretraining_data(cfg)
    assert path.parent == Path(cfg.output_dir) / "data" and len(path.name) == 16
    assert {p.name for p in path.iterdir()} >= {"dataset_dict.json", "train", "validation", "stats.json", "config.yaml"}
    dd = load(path)
    assert set(dd) == {"train", "validation"}
    assert set(dd["train"].column_names) == {"input_ids", "token_type_ids", "next_sentence_label"}
    assert set(dd["validation"].column_names) == {"input_ids", "token_type_ids", "next_sentence_label", "labels"}
    check_rows(dd["train"], cfg, tiny_tokenizer)
    check_rows(dd["validation"], cfg, tiny_tokenizer, validation=True)
    mask_id = tiny_tokenizer.mask_token_id
    assert any(mask_id in r["input_ids"] for r in dd["validation"])  # fixed masks are applied
    assert not any(mask_id in r["input_ids"] for r in dd["train"])  # train is masked by the collator

    stats = json.loads((path / "stats.json").read_text())
    train, val = stats["train"], stats["validation"]
    assert train["examples"] == len(dd["train"]) and val["examples"] == len(dd["validation"])
    n_docs = len((data_dir / "corpus.txt").read_text(encoding="utf-8").rstrip("\n").split("\n\n"))
    assert train["documents"] + val["documents"] == stats["corpus_documents"] == n_docs  # split by document
    assert 0 < val["documents"] < 0.15 * n_docs
    assert 0.45 < train["label_1_fraction"] < 0.55
    assert train["tokens"] == sum(len(r) for r in dd["train"]["input_ids"])
    assert 0 <= train["padding_fraction_at_max_seq_length"] < 0.6
    assert stats["sentence_split"] == "line" and stats["time_s"]["total"] > 0
    assert "prepared data" in caplog.text


@pytest.mark.slow
def test_rerun_reuses_the_cache_and_changed_inputs_build_a_new_one(cfg_for, caplog, tmp_path):
    from mlm_pretrain.config import load_config
    from mlm_pretrain.tokenizer import train_tokenizer

    cfg = cfg_for()
    first = prepare_pretraining_data(cfg)
    stamp = (first / "stats.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mlm_pretrain"):
        assert prepare_pretraining_data(cfg) == first
    assert "reusing" in caplog.text and (first / "stats.json").stat().st_mtime_ns == stamp
    # settings that do not change the examples share the cache
    assert prepare_pretraining_data(cfg.replace(**{"data.shuffle_buffer": 7, "masking.pad_to_multiple_of": 1})) == first
    longer = prepare_pretraining_data(cfg.replace(**{"data.max_seq_length": 64}))
    assert longer != first and max(len(r) for r in load(longer)["train"]["input_ids"]) <= 64
    other_tok = train_tokenizer(load_config("tiny-bert", [f"output_dir={tmp_path / 'tok2'}", "tokenizer.vocab_size=1500"]))
    assert prepare_pretraining_data(cfg.replace(**{"tokenizer.pretrained": str(other_tok)})) not in (first, longer)
    assert prepare_pretraining_data(cfg.replace(**{"masking.probability": 0.2})) != first  # validation masks


def test_a_touched_or_copied_corpus_with_the_same_bytes_reuses_the_data(cfg_for, caplog, corpus_copies):
    """The key sees the files' paths, sizes and mtimes (cheap); a copy of the corpus to a new machine or
    path must not prepare the same examples again, and changed bytes must."""
    corpus, same_bytes = corpus_copies
    cfg = cfg_for(f"corpus.files=[{corpus}]")
    first = prepare_pretraining_data(cfg)
    arrow = sorted((first / "train").glob("*.arrow"))
    written = arrow[0].stat().st_mtime_ns
    touched, moved = same_bytes(arrow[0])
    for path in (touched, moved):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mlm_pretrain"):
            again = prepare_pretraining_data(cfg.replace(**{"corpus.files": [str(path)]}))
        assert again != first and again.parent == first.parent and again.is_symlink()
        assert again.resolve() == first.resolve() and "hold the same bytes" in caplog.text
        assert arrow[0].stat().st_mtime_ns == written and load(again)["train"]["input_ids"] == load(first)["train"]["input_ids"]
    # the link is found again by the usual key, and a deleted target is prepared anew
    with caplog.at_level(logging.INFO, logger="mlm_pretrain"):
        assert prepare_pretraining_data(cfg.replace(**{"corpus.files": [str(moved)]})) == again
    assert "up to date in" in caplog.text
    shutil.rmtree(first)
    rebuilt = prepare_pretraining_data(cfg.replace(**{"corpus.files": [str(moved)]}))
    assert rebuilt == again and not rebuilt.is_symlink() and (rebuilt / "stats.json").is_file()
    # other bytes: other examples, never the linked ones
    moved.write_text(moved.read_text(encoding="utf-8") + "\n\nA new document. It has two sentences.\n", encoding="utf-8")
    changed = prepare_pretraining_data(cfg.replace(**{"corpus.files": [str(moved)]}))
    assert changed not in (first, again) and not changed.is_symlink()


@pytest.mark.slow
def test_same_seed_same_examples_different_seed_different(cfg_for, tmp_path):
    a = load(prepare_pretraining_data(cfg_for(f"data.cache_dir={tmp_path / 'a'}")))
    b = load(prepare_pretraining_data(cfg_for(f"data.cache_dir={tmp_path / 'b'}")))
    c = load(prepare_pretraining_data(cfg_for(f"data.cache_dir={tmp_path / 'c'}", "seed=7")))
    assert a["train"]["input_ids"] == b["train"]["input_ids"]
    assert a["validation"]["input_ids"] == b["validation"]["input_ids"]
    assert a["train"]["input_ids"] != c["train"]["input_ids"]
    # dupe_factor passes use different seeds: the two passes are not copies of each other
    rows = a["train"]["input_ids"]
    assert len({tuple(r) for r in rows}) > 0.9 * len(rows)


@pytest.mark.slow
def test_num_proc_does_not_change_the_examples(cfg_for, tmp_path):
    one = load(prepare_pretraining_data(cfg_for(f"data.cache_dir={tmp_path / '1'}", "data.random_next_buffer=50")))
    two = load(prepare_pretraining_data(cfg_for(f"data.cache_dir={tmp_path / '2'}", "data.random_next_buffer=50",
                                                "data.num_proc=2")))
    assert one["train"]["input_ids"] == two["train"]["input_ids"]
    assert one["train"]["next_sentence_label"] == two["train"]["next_sentence_label"]


@pytest.mark.parametrize("objective", ["sop", "mlm"])
def test_other_objectives_on_running_text(cfg_for, tiny_tokenizer, objective, data_dir):
    cfg = cfg_for(f"corpus.files=[{data_dir / 'corpus_running.jsonl'}]", f"data.objective={objective}",
                  "data.max_seq_length=64", "data.validation_fraction=0.2")
    path = prepare_pretraining_data(cfg)
    stats = json.loads((path / "stats.json").read_text())
    assert stats["sentence_split"] == "rules"
    dd = load(path)
    assert len(dd["train"]) > 10
    check_rows(dd["train"], cfg, tiny_tokenizer)
    check_rows(dd["validation"], cfg, tiny_tokenizer, validation=True)
    if objective == "sop":
        assert 0.35 < stats["train"]["label_1_fraction"] < 0.65
    else:
        assert stats["train"]["padding_fraction_at_max_seq_length"] < 0.1  # packed across documents


def test_sentence_ids_are_the_tokenizers_ids(cfg_for, tiny_tokenizer, data_dir):
    from mlm_pretrain.pairs import split_sentences
    from mlm_pretrain.examples import ExampleBuilder

    builder = ExampleBuilder.from_config(cfg_for(), tiny_tokenizer)
    texts = [json.loads(line)["text"] for line in (data_dir / "corpus_running.jsonl").read_text().splitlines()[:30]]
    docs = [split_sentences(t) for t in texts] + [[], ["", "Only: [weird] text ## here."]]
    per_sentence = [[tiny_tokenizer(s, add_special_tokens=False)["input_ids"] for s in doc] for doc in docs]
    assert builder.encode(docs) == per_sentence


def test_interrupted_prepare_leaves_nothing_that_is_reused(cfg_for, monkeypatch):
    import datasets

    cfg = cfg_for()

    def boom(self, *a, **k):
        raise KeyboardInterrupt("interrupted while saving")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_pretraining_data(cfg)
    root = Path(cfg.output_dir) / "data"
    assert list(root.iterdir()) == []  # no half folder, no temporary left behind
    monkeypatch.undo()
    path = prepare_pretraining_data(cfg)
    assert len(load(path)["train"]) > 0


def test_odd_input_is_counted_not_fatal(cfg_for, tmp_path):
    long_line = " ".join(["word"] * 400)
    docs = ["First sentence here.\n   \nSecond one after a blank line.\nThird.",
            "A lonely document.",
            f"{long_line}\nAnd a short one.\nThen another one here.",
            "Alpha beta gamma.\nDelta epsilon.\nZeta eta theta."] * 5
    corpus = tmp_path / "odd.txt"
    corpus.write_text("\n\n".join(docs) + "\n")
    cfg = cfg_for(f"corpus.files=[{corpus}]", "data.max_seq_length=32", "data.validation_fraction=0.0")
    path = prepare_pretraining_data(cfg)
    stats = json.loads((path / "stats.json").read_text())
    skipped = stats["train"]["skipped"]
    assert skipped["empty_lines"]["count"] == 5
    assert skipped["single_sentence_documents"]["count"] == 5
    assert skipped["over_long_sentences_truncated"]["count"] == 5
    assert stats["validation"]["examples"] == 0 and len(load(path)["validation"]) == 0
    assert all(len(r) <= 32 for r in load(path)["train"]["input_ids"])


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors
# ----------------------------------------------------------------------------------------------
def test_no_multi_sentence_document_for_nsp(cfg_for, tmp_path):
    corpus = tmp_path / "one_line_docs.txt"
    corpus.write_text("\n\n".join(f"Document {i} is one sentence only." for i in range(30)) + "\n")
    for objective in ("nsp", "sop"):
        with pytest.raises(DataError, match="at least two sentences.*data.objective=mlm"):
            prepare_pretraining_data(cfg_for(f"corpus.files=[{corpus}]", f"data.objective={objective}"))
    path = prepare_pretraining_data(cfg_for(f"corpus.files=[{corpus}]", "data.objective=mlm"))
    assert len(load(path)["train"]) > 0
    # mlm packs one-sentence documents: they are not reported as skipped
    assert "single_sentence_documents" not in json.loads((Path(path) / "stats.json").read_text())["train"]["skipped"]
    assert list((Path(path).parent).glob(".*")) == []


def test_max_seq_length_against_the_model(cfg_for, make_config):
    with pytest.raises(DataError, match="max_position_embeddings"):
        prepare_pretraining_data(cfg_for("data.max_seq_length=256", "model.max_position_embeddings=128"))
    with pytest.raises(ConfigError, match="max_seq_length"):
        cfg_for("data.max_seq_length=4")
    with pytest.raises(ConfigError, match="max_validation_examples"):
        cfg_for("data.max_validation_examples=-1")
    with pytest.raises(ConfigError, match="max_predictions_per_seq"):
        cfg_for("masking.max_predictions_per_seq=0")


def test_a_relative_cache_dir_is_where_prepare_writes_and_the_model_card_reads(cfg_for, data_dir, tmp_path,
                                                                              monkeypatch):
    """data.cache_dir resolves like every user path, in one place (mlm_pretrain.layout): prepare once took it
    relative to the working directory while the model card looked under the project checkout first."""
    from mlm_pretrain import config
    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.model_card import _data_stats

    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    (checkout / "cache").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setattr(config, "PROJECT_ROOT", checkout)
    monkeypatch.chdir(elsewhere)
    cfg = cfg_for(f"corpus.files=[{data_dir / 'corpus.txt'}]", "data.cache_dir=cache", "data.dupe_factor=1")
    path = prepare_pretraining_data(cfg)
    assert path.parent == RunLayout.of(cfg).data_root == checkout / "cache" and not (elsewhere / "cache").exists()
    stats, verified = _data_stats(Path(cfg.output_dir), cfg)
    assert verified and stats["key"] == path.name
    # a relative cache_dir that exists nowhere yet is created under the working directory
    assert RunLayout.of(cfg_for("data.cache_dir=fresh")).data_root == Path("fresh")


def test_missing_tokenizer_says_run_the_tokenizer_stage(make_config):
    with pytest.raises(DataError, match="run `mlm-pretrain tokenizer` first"):
        prepare_pretraining_data(make_config())


def test_tokenizer_without_mask_token(cfg_for, tiny_tokenizer_dir, tmp_path):
    from transformers import BertTokenizer

    vocab = [t.strip() for t in (tiny_tokenizer_dir / "vocab.txt").read_text().splitlines()]
    vocab = {t: i for i, t in enumerate(t for t in vocab if t != "[MASK]")}
    tok = BertTokenizer(vocab=vocab, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                        mask_token=None)
    tok.save_pretrained(str(tmp_path / "nomask"))
    with pytest.raises(UserError, match="mask_token"):
        prepare_pretraining_data(cfg_for(f"tokenizer.pretrained={tmp_path / 'nomask'}"))


def test_cli_prepare(cfg_for, tiny_tokenizer_dir, tmp_path, capsys):
    from mlm_pretrain.cli import main

    out = tmp_path / "clirun"
    assert main(["prepare", f"output_dir={out}", f"tokenizer.pretrained={tiny_tokenizer_dir}",
                 "data.dupe_factor=1"]) == 0
    printed = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed.parent == out / "data" and (printed / "stats.json").is_file()
    assert main(["prepare", f"output_dir={out}", "model.max_position_embeddings=64"]) == 2


@pytest.mark.slow
def test_reuters_end_to_end(cfg_for, shared_data, tiny_tokenizer, caplog):
    path = shared_data / "pretrain_reuters21578" / "train.jsonl"
    if not path.is_file():
        pytest.skip("Reuters corpus absent")
    cfg = cfg_for(f"corpus.files=[{path}]", "data.dupe_factor=1", "data.num_proc=2")
    out = prepare_pretraining_data(cfg)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sentence_split"] == "rules" and stats["corpus_documents"] == 14293
    assert stats["train"]["sentences"] > 90_000 and stats["train"]["examples"] > 25_000
    assert 0.48 < stats["train"]["label_1_fraction"] < 0.52
    assert stats["validation"]["examples"] == cfg.data.max_validation_examples or stats["validation"]["documents"] > 0
    check_rows(load(out)["validation"], cfg, tiny_tokenizer, validation=True)
    with caplog.at_level(logging.INFO, logger="mlm_pretrain"):
        assert prepare_pretraining_data(cfg) == out
    assert "reusing" in caplog.text
