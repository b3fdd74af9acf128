"""Real-world text: the characters str.splitlines() breaks on, BOMs, CRLF, NUL bytes, lines without
end, malformed records, odd labels, and nothing lost when the last step of a long command fails."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from mlm_pretrain.config import load_config
from mlm_pretrain.errors import UserError
from mlm_pretrain.textio import first_bad_jsonl_line, iter_lines, read_jsonl, split_oversized, write_jsonl

#: What str.splitlines() treats as a line break besides \n and \r: web text and cp1252 conversions hold them.
BREAKERS = ["\u000b", "\u000c", "\u001c", "\u001d", "\u001e", "\u0085", "\u2028", "\u2029"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# One definition of a line (pure)
# ----------------------------------------------------------------------------------------------
def test_jsonl_round_trips_every_line_breaking_character(tmp_path):
    rows = [{"text": f"before{c}after", "n": i} for i, c in enumerate(BREAKERS + ["\n", "\r", "\r\n"])]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    assert read_jsonl(path) == rows
    assert "\u2028" in path.read_text(encoding="utf-8")          # written readable, not escaped
    assert len(path.read_text(encoding="utf-8").splitlines()) > len(rows)  # what the old reader got wrong
    assert not (tmp_path / "rows.jsonl.tmp").exists()


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"x.jsonl line 3: not valid JSON"):
        read_jsonl(path)
    assert first_bad_jsonl_line(path)[0] == 3
    path.write_text('{"a": 1}\r\n[1, 2]\r\n', encoding="utf-8")
    assert first_bad_jsonl_line(path) == (2, "a JSON list, not an object with fields")


def test_iter_lines_ends_lines_at_lf_crlf_cr_only_and_drops_a_bom(tmp_path, monkeypatch):
    monkeypatch.setattr("mlm_pretrain.textio.READ_CHUNK", 7)  # line ends and "\r\n" across chunk edges
    inner = "".join(BREAKERS)
    path = tmp_path / "t.txt"
    path.write_bytes(("\ufeff" + f"one {inner} x\r\ntwo\rthree\n\nfour\x00five\n").encode("utf-8"))
    assert list(iter_lines(path)) == [f"one {inner} x", "two", "three", "", "four\x00five"]


def test_a_file_without_line_breaks_streams_in_bounded_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr("mlm_pretrain.textio.READ_CHUNK", 64)
    words = [f"w{i}" for i in range(3000)]
    path = tmp_path / "one_line.txt"
    path.write_text(" ".join(words), encoding="utf-8")  # ~17 KB, no "\n"
    pieces = list(iter_lines(path, max_chars=500))
    assert max(map(len, pieces)) <= 500 and len(pieces) > 30
    assert " ".join(pieces).split() == words  # cut at spaces: no word lost or split
    unbroken = tmp_path / "no_spaces.txt"
    unbroken.write_text("x" * 1234, encoding="utf-8")
    assert [len(p) for p in iter_lines(unbroken, max_chars=500)] == [500, 500, 234]


def test_split_oversized_cuts_documents_at_line_ends():
    doc = "\n".join(["a" * 40] * 10)  # 409 chars
    out = split_oversized(["short", doc], 100)
    assert out[0] == "short" and all(len(d) <= 100 for d in out)
    assert "\n".join(out[1:]).split("\n") == doc.split("\n")


# ----------------------------------------------------------------------------------------------
# Corpora
# ----------------------------------------------------------------------------------------------
def _docs(tmp_path, name: str, data: bytes, *overrides: str) -> list[str]:
    from mlm_pretrain.corpus import load_documents

    path = tmp_path / name
    path.write_bytes(data)
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"corpus.files=[{path}]", *overrides])
    return list(load_documents(cfg.corpus)["text"])


def test_txt_corpus_documents_survive_bom_crlf_nul_and_line_breaking_characters(tmp_path):
    text = "First \u2028one.\nSecond\u0085 one.\n\nOther doc\x0c here.\n\nThird doc.\n   \n"
    lf = _docs(tmp_path, "lf.txt", text.encode())
    assert lf == ["First \u2028one.\nSecond\u0085 one.", "Other doc\x0c here.", "Third doc.\n   "]
    assert _docs(tmp_path, "crlf.txt", ("\ufeff" + text).replace("\n", "\r\n").encode()) == lf
    assert _docs(tmp_path, "cr.txt", text.replace("\n", "\r").encode()) == lf
    nul = _docs(tmp_path, "nul.txt", text.replace("Third", "Th\x00ird").encode())
    assert nul[-1] == "Th\x00ird doc.\n   "
    per_line = _docs(tmp_path, "lines.txt", text.encode(), "corpus.document_separator=line")
    assert per_line == ["First \u2028one.", "Second\u0085 one.", "Other doc\x0c here.", "Third doc."]


def test_streaming_reads_the_same_documents(tmp_path):
    from mlm_pretrain.corpus import load_documents

    path = tmp_path / "c.txt"
    path.write_bytes(("\ufeffA b\u2028c.\r\nD e.\r\n\r\nF g\u0085h.\r\n").encode())
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"corpus.files=[{path}]"])
    assert [r["text"] for r in load_documents(cfg.corpus, streaming=True)] == list(load_documents(cfg.corpus)["text"])


def test_a_changed_txt_file_is_read_again(tmp_path):
    import os

    first = _docs(tmp_path, "c.txt", b"one.\n\ntwo.\n")
    path = tmp_path / "c.txt"
    path.write_bytes(b"three.\n\nfour.\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    from mlm_pretrain.corpus import load_documents

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"corpus.files=[{path}]"])
    assert first == ["one.", "two."] and list(load_documents(cfg.corpus)["text"]) == ["three.", "four."]


def test_a_giant_document_becomes_bounded_documents(tmp_path, monkeypatch):
    monkeypatch.setattr("mlm_pretrain.corpus.MAX_DOCUMENT_CHARS", 1000)
    line = " ".join(f"word{i}." for i in range(2000))  # one 16 KB record in a JSON Lines file
    docs = _docs(tmp_path, "big.jsonl", (json.dumps({"text": line}) + "\n").encode())
    assert len(docs) > 10 and max(map(len, docs)) <= 1000
    assert " ".join(docs).split() == line.split()


def test_groups_of_documents_are_bounded_in_characters():
    from mlm_pretrain.examples import group_bounds, text_groups

    assert group_bounds([3, 3, 3, 10, 1], 6) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert group_bounds([1] * 5, 100) == [(0, 5)] and group_bounds([], 5) == []
    assert [len(g) for g in text_groups([["a" * 10] * 4, ["b"]])] == [4, 1]  # within GROUP_MAX_CHARS


def test_empty_corpus_files(tmp_path, caplog):
    with pytest.raises(UserError, match=r"empty.txt are empty \(0 bytes\); point corpus.files at files that hold"):
        _docs(tmp_path, "empty.txt", b"")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "full.txt").write_bytes(b"Some text.\n")
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"corpus.files=[{tmp_path}/*.txt]"])
    from mlm_pretrain.corpus import load_documents

    with caplog.at_level("WARNING"):
        assert list(load_documents(cfg.corpus)["text"]) == ["Some text."]
    assert "skipping 1 empty corpus file(s)" in caplog.text
    with pytest.raises(UserError, match="the corpus is empty"):
        _docs(tmp_path, "blank.txt", b"  \n\r\n\t\n")


def test_a_malformed_jsonl_line_is_named(tmp_path):
    lines = [json.dumps({"text": f"Doc {i}."}) for i in range(20)]
    lines[11] = lines[11][:7]
    with pytest.raises(UserError, match=r"bad.jsonl line 12: not valid JSON .*fix or delete that line"):
        _docs(tmp_path, "bad.jsonl", "\n".join(lines).encode())
    assert _docs(tmp_path, "bom.jsonl", ("\ufeff" + "\r\n".join(lines[:3])).encode()) == ["Doc 0.", "Doc 1.", "Doc 2."]


def test_a_tokenizer_of_special_tokens_only_is_refused_before_work(tmp_path, make_config):
    from transformers import BertTokenizerFast

    from mlm_pretrain.prepare import prepare_pretraining_data

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    tok_dir = tmp_path / "tok"
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tok_dir)
    with pytest.raises(UserError, match=r"holds only special tokens \(5 entries.*point tokenizer.pretrained at a full"):
        prepare_pretraining_data(make_config(f"tokenizer.pretrained={tok_dir}"))


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------
def test_padded_mixed_case_and_integral_float_labels(caplog):
    from mlm_pretrain.finetune_data import infer_label_spec

    with caplog.at_level("WARNING"):
        spec = infer_label_spec([" positive", "positive", "Positive", "negative ", "negative", "positive"])
    assert spec.keys == ("negative", "positive")
    assert [spec.encode(v) for v in ["Positive", " POSITIVE ", "negative"]] == [1, 1, 0]
    assert "'Positive' (1 rows), 'positive' (3 rows) in column 'label' differ only in case" in caplog.text
    assert spec.unknown(["NEGATIVE", "neutral"]) == {"neutral": 1}
    floats = infer_label_spec([1.0, 0.0, 1.0])
    assert floats.keys == ("0", "1") and floats.problem_type == "single_label_classification"
    assert [floats.encode(v) for v in ["1", 0, 1.0, "0.0"]] == [1, 0, 1, 0]
    named = infer_label_spec(["A", "a", "A"], label_names=["A", "a"])  # label_names keeps case apart
    assert [named.encode(v) for v in ["A", "a"]] == [0, 1]


# ----------------------------------------------------------------------------------------------
# Every stage on text full of line-breaking characters
# ----------------------------------------------------------------------------------------------
def _sprinkle(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    words.insert(rng.randrange(len(words) + 1), rng.choice(BREAKERS))
    return " ".join(words)


@pytest.fixture(scope="module")
def web_text(tmp_path_factory):
    """The bundled corpus and 120 labelled rows with a line-breaking character in a third of the
    corpus lines and in every text, as a CRLF corpus with a BOM."""
    from conftest import DATA

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("web")
    lines = [_sprinkle(l, rng) if l.strip() and rng.random() < 0.3 else l
             for l in (DATA / "corpus.txt").read_text(encoding="utf-8").split("\n")]
    (root / "corpus.txt").write_bytes(("\ufeff" + "\r\n".join(lines)).encode("utf-8"))
    with open(DATA / "sentiment" / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:120]
    for r in rows:
        r["text"] = _sprinkle(r["text"], rng)
    with open(root / "labelled.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    with open(root / "unlabelled.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text"])
        w.writeheader()
        w.writerows({"text": r["text"]} for r in rows)
    return root, rows


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["nsp", "mlm"])
def test_every_stage_on_web_text(web_text, tmp_path, objective):
    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.predict import evaluate_model
    from mlm_pretrain.examples import pretraining_stream
    from mlm_pretrain.prepare import load_prepared, prepare_pretraining_data
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.tokenizer import load_tokenizer, train_tokenizer

    root, rows = web_text
    cfg = load_config("tiny-bert", [
        f"output_dir={tmp_path / 'run'}", f"corpus.files=[{root / 'corpus.txt'}]", "tokenizer.vocab_size=600",
        f"data.objective={objective}", "data.max_seq_length=64", "data.dupe_factor=1", "model.max_position_embeddings=64",
        "model.hidden_size=64", "model.num_hidden_layers=1", "pretrain.max_steps=3", "pretrain.batch_size=8",
        "pretrain.eval_steps=0", "pretrain.save_steps=0", "tracking.report_to=[]", "tracking.plots=false",
        f"finetune.train_file={root / 'labelled.csv'}", "finetune.validation_file=null",
        "finetune.validation_fraction=0.25", "finetune.num_epochs=1", "finetune.batch_size=16", "finetune.max_length=64",
        "finetune.save_checkpoints=false"])
    tok = load_tokenizer(train_tokenizer(cfg))
    assert tok.unk_token_id not in tok("café \u2028 naïve \u0085 test")["input_ids"]  # breakers are whitespace
    data = prepare_pretraining_data(cfg)
    train, val = load_prepared(cfg, data, tok)
    assert len(train) > 100 and len(val) > 0
    streamed = pretraining_stream(cfg, tok)
    assert next(iter(streamed))["input_ids"][0] == tok.cls_token_id
    final = pretrain(cfg)
    assert (final / "model.safetensors").is_file()

    classifier = finetune(cfg)
    preds = read_jsonl(classifier / "validation_predictions.jsonl")
    assert len(preds) == 30 and all(p["text"] in {r["text"] for r in rows} for p in preds)
    out = tmp_path / "pred.jsonl"
    written = evaluate_model(cfg, str(classifier), predict=str(root / "unlabelled.csv"), output=str(out))
    back = read_jsonl(written)
    assert [p["text"] for p in back] == [r["text"] for r in rows]  # row for row, characters intact
    assert sum(any(c in p["text"] for c in BREAKERS) for p in back) == len(rows)
    csv_out = evaluate_model(cfg, str(classifier), predict=str(root / "unlabelled.csv"), output=str(tmp_path / "p.csv"))
    from mlm_pretrain.finetune_data import read_table

    assert read_table(csv_out)["text"] == [r["text"] for r in rows]
    scores = evaluate_model(cfg, str(classifier), file=str(root / "labelled.csv"))
    assert scores["examples"] == len(rows)


# ----------------------------------------------------------------------------------------------
# Nothing lost at the end of a long command
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_finetune(tmp_path, web_text, tiny_tokenizer_dir):
    root, _ = web_text

    def make():
        return load_config("tiny-bert", [
            f"output_dir={tmp_path / 'run'}", f"tokenizer.pretrained={tiny_tokenizer_dir}", "finetune.init=random",
            "model.hidden_size=64", "model.num_hidden_layers=1", "model.max_position_embeddings=128",
            f"finetune.train_file={root / 'labelled.csv'}", "finetune.validation_file=null",
            "finetune.validation_fraction=0.25", "finetune.num_epochs=1", "finetune.batch_size=16", "finetune.seeds=[1,2]", "tracking.report_to=[]",
            "finetune.save_checkpoints=false"])
    return make


@pytest.mark.slow
@pytest.mark.parametrize("failing", ["mlm_pretrain.trainer.write_rows", "mlm_pretrain.finetune._write_final"])
def test_a_failure_after_training_keeps_the_models_and_a_rerun_finishes_without_training(
        small_finetune, monkeypatch, failing):
    import mlm_pretrain.finetune as ft

    cfg = small_finetune()
    real = ft.train_one_seed
    calls = []
    monkeypatch.setattr(ft, "train_one_seed", lambda *a, **k: calls.append(a[4]) or real(*a, **k))

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(failing, boom)
    with pytest.raises(UserError, match=r"fine-tuning finished, but writing its outputs failed \(OSError: disk full\); "
                                        r"the trained models are kept in .*Run the same command again to finish"):
        ft.finetune(cfg)
    task_dir = cfg.run_dir / "finetune" / cfg.finetune.task_name
    seeds = [1] if failing.endswith("write_rows") else [1, 2]  # write_rows fails inside the first seed
    assert calls == seeds
    for s in seeds:
        assert (task_dir / f"seed-{s}" / "best" / "model.safetensors").is_file()
        assert (task_dir / f"seed-{s}" / "results.json").is_file()
    assert not (task_dir / "final").exists()

    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(ft, "train_one_seed", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    final = ft.finetune(small_finetune())
    assert calls == [s for s in (1, 2) if s not in seeds]  # finished seeds reused, not trained again
    assert len(read_jsonl(final / "validation_predictions.jsonl")) == 30
    assert (final / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_failed_export_keeps_the_checkpoint_and_a_rerun_exports_without_training(tmp_path, tiny_tokenizer_dir,
                                                                                  monkeypatch):
    import mlm_pretrain.pretrain as pt
    from mlm_pretrain.metrics_log import read_metrics

    cfg = load_config("tiny-bert", [
        f"output_dir={tmp_path / 'run'}", f"tokenizer.pretrained={tiny_tokenizer_dir}", "data.max_seq_length=64",
        "model.max_position_embeddings=64", "model.hidden_size=64", "model.num_hidden_layers=1", "data.dupe_factor=1",
        "pretrain.max_steps=3", "pretrain.batch_size=8", "pretrain.eval_steps=0", "pretrain.save_steps=0",
        "pretrain.logging_steps=1", "tracking.report_to=[]"])
    from mlm_pretrain.prepare import prepare_pretraining_data

    prepare_pretraining_data(cfg)
    real = pt._export

    def boom(*a, **k):
        raise OSError("no space left")
    monkeypatch.setattr(pt, "_export", boom)
    with pytest.raises(UserError, match=r"pretraining finished and its last checkpoint is saved in .*checkpoints, but "
                                        r"exporting .*final failed \(OSError: no space left\)"):
        pt.pretrain(cfg)
    monkeypatch.setattr(pt, "_export", real)
    final = pt.pretrain(cfg)
    assert (final / "model.safetensors").is_file()
    steps = [r["step"] for r in read_metrics(cfg.run_dir / "pretrain" / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3]  # no step trained twice
