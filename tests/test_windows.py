"""Documents longer than the window (finetune.long_documents=windows): windows cut on hand-checked ids,
pooling, the collator, and fine-tuning, evaluation and prediction that read whole documents."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlm_pretrain.config import ConfigError, load_config
from mlm_pretrain.finetune import finetune
from mlm_pretrain.predict import evaluate_model
from mlm_pretrain.windows import WindowCollator, pool, pooled_loss, spread, window_encodings

FAST = ["tracking.report_to=[]", "finetune.learning_rate=2e-3", "finetune.save_checkpoints=false",
        "finetune.logging_steps=5", "finetune.warmup_ratio=0.1", "finetune.mixed_precision=no", "tracking.plots=false"]


# ----------------------------------------------------------------------------------------------
# Pure parts
def test_spread_keeps_first_and_last():
    assert spread(5, None) == [0, 1, 2, 3, 4]
    assert spread(5, 9) == [0, 1, 2, 3, 4]
    assert spread(5, 1) == [0]
    assert spread(5, 2) == [0, 4]
    assert spread(5, 3) == [0, 2, 4]
    assert spread(10, 4) == [0, 3, 6, 9]


def test_windows_cover_the_document_with_the_overlap(tiny_tokenizer):
    text = "the cat sat on a mat and the dog ran"
    t = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(t) == 13  # (unknown to the tiny vocabulary, some words are several pieces)
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    [doc] = window_encodings(tiny_tokenizer, [text], None, max_length=6, overlap=1)
    # 4 tokens a window, each starting 3 after the last: 0-3, 3-6, 6-9, 9-12
    assert doc["input_ids"] == [[cls, *t[0:4], sep], [cls, *t[3:7], sep], [cls, *t[6:10], sep], [cls, *t[9:13], sep]]
    assert doc["document_tokens"] == 15 and all(m == [1] * 6 for m in doc["attention_mask"])
    [short] = window_encodings(tiny_tokenizer, ["the dog"], None, max_length=6, overlap=1)
    assert short["input_ids"] == [tiny_tokenizer("the dog")["input_ids"]]
    # while training, at most max_windows of them, spread from the first to the last
    [capped] = window_encodings(tiny_tokenizer, [text], None, max_length=6, overlap=1, max_windows=2)
    assert capped["input_ids"] == [doc["input_ids"][0], doc["input_ids"][3]] and capped["document_tokens"] == 15


def test_a_pair_keeps_its_first_text_in_every_window(tiny_tokenizer):
    first, second = "the dog", "the cat sat on a mat"
    a = tiny_tokenizer(first, add_special_tokens=False)["input_ids"]
    b = tiny_tokenizer(second, add_special_tokens=False)["input_ids"]
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    [doc] = window_encodings(tiny_tokenizer, [first], [second], max_length=len(a) + 6, overlap=1)
    step = 3 - 1
    want = [[cls, *a, sep, *b[i:i + 3], sep] for i in range(0, len(b) - 1, step)]
    assert doc["input_ids"] == want
    assert [tt for tt in doc["token_type_ids"]] == [[0] * (len(a) + 2) + [1] * (len(w) - len(a) - 2) for w in want]


def test_a_pair_windows_its_longer_text_whichever_it_is(tiny_tokenizer):
    """RTE's premises (the first text) run past 128 tokens: the pair keeps its shorter text whole in every
    window and windows the longer one, row by row, the rows kept in their order."""
    short, long = "the dog", "the cat sat on a mat"
    a = tiny_tokenizer(short, add_special_tokens=False)["input_ids"]
    b = tiny_tokenizer(long, add_special_tokens=False)["input_ids"]
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    docs = window_encodings(tiny_tokenizer, [short, long, short], [long, short, short], max_length=len(a) + 6,
                            overlap=1)
    chunks = [b[i:i + 3] for i in range(0, len(b) - 1, 2)]
    assert docs[0]["input_ids"] == [[cls, *a, sep, *c, sep] for c in chunks]  # the second text windowed
    assert docs[1]["input_ids"] == [[cls, *c, sep, *a, sep] for c in chunks]  # the first text windowed
    assert docs[1]["token_type_ids"] == [[0] * (len(c) + 2) + [1] * (len(a) + 1) for c in chunks]
    assert docs[2]["input_ids"] == [tiny_tokenizer(short, short)["input_ids"]]  # both fit: one window
    assert [d["document_tokens"] for d in docs] == [len(a) + len(b) + 3, len(a) + len(b) + 3, 2 * len(a) + 3]
    # the shorter text leaves less room than the overlap: a smaller overlap (half the room), never a crash
    [narrow] = window_encodings(tiny_tokenizer, [short], [long], max_length=len(a) + 6, overlap=2)
    assert narrow["input_ids"] == docs[0]["input_ids"]  # room 3: overlap 1, as above
    # no room at all for the longer text: cut once to fit (both trimmed), one window, said in the log
    [cut] = window_encodings(tiny_tokenizer, [long], [long + " " + long], max_length=len(b) + 3, overlap=1)
    assert len(cut["input_ids"]) == 1 and len(cut["input_ids"][0]) == len(b) + 3


def test_windows_in_chunks_give_the_whole_batch_logits_and_gradients():
    """A batch of many windows runs a chunk at a time, each recomputed in the backward pass, so memory holds
    one chunk's activations (all-MiniLM-L6-v2 with 32 documents x 16 windows needed 22 GB): the logits and
    gradients are those of one pass."""
    from transformers import BertConfig, BertForSequenceClassification

    from mlm_pretrain.windows import window_logits

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids = torch.randint(5, 50, (5, 7))
    mask = torch.ones_like(ids)
    mask[3:, 5:] = 0
    windows = {"input_ids": ids, "attention_mask": mask}
    counts, labels = torch.tensor([2, 3]), torch.tensor([0, 1])
    calls = []
    model.bert.register_forward_hook(lambda *a: calls.append(1))

    def grads(chunk):
        model.zero_grad()
        calls.clear()
        logits = window_logits(model, windows, chunk)
        pooled_loss(pool(logits, counts), labels, None).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()], len(calls)

    whole, whole_grads, whole_calls = grads(None)
    parts, part_grads, part_calls = grads(2)
    assert torch.allclose(parts, whole, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(part_grads, whole_grads))
    assert whole_calls == 1 and part_calls == 6  # 3 chunks of at most 2, each run again in the backward pass
    calls.clear()
    with torch.no_grad():  # evaluation: chunks, nothing kept for a backward pass
        assert torch.allclose(window_logits(model, windows, 2), whole, atol=1e-6) and len(calls) == 3


def test_pool_mean_and_max_per_document():
    logits = torch.tensor([[1.0, 0.0], [3.0, -2.0], [0.0, 5.0], [2.0, 2.0], [4.0, 1.0], [-1.0, 0.0]])
    counts = torch.tensor([2, 1, 3])
    assert torch.allclose(pool(logits, counts, "mean"), torch.tensor([[2.0, -1.0], [0.0, 5.0], [5 / 3, 1.0]]))
    assert pool(logits, counts, "max").tolist() == [[3.0, 0.0], [0.0, 5.0], [4.0, 2.0]]
    labels = torch.tensor([0, 1, 0])
    mean = pool(logits, counts, "mean")
    assert pooled_loss(mean, labels, "single_label_classification").item() == pytest.approx(
        torch.nn.functional.cross_entropy(mean, labels).item())
    assert pooled_loss(mean[:, :1], torch.tensor([1.0, 0.0, 2.0]), "regression").item() == pytest.approx(
        ((2 - 1) ** 2 + 0 + (5 / 3 - 2) ** 2) / 3)


def test_collator_flattens_windows_and_counts_them(tiny_tokenizer):
    docs = window_encodings(tiny_tokenizer, ["the cat sat on a mat and the dog ran", "the dog"], None,
                            max_length=6, overlap=1)
    rows = [{**{k: d[k] for k in ("input_ids", "attention_mask")}, "labels": y} for d, y in zip(docs, (1, 0))]
    batch = WindowCollator(tiny_tokenizer)(rows)
    assert batch["window_counts"].tolist() == [4, 1] and batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"].shape == (5, 8)  # padded to a multiple of 8
    assert batch["input_ids"][:4, :6].tolist() == docs[0]["input_ids"]
    n = len(tiny_tokenizer("the dog")["input_ids"])
    assert batch["attention_mask"][4].tolist() == [1] * n + [0] * (8 - n)


def test_length_grouping_sorts_windowed_documents_by_their_tokens(tmp_path, tiny_tokenizer):
    """With group_by_length, documents read as windows are grouped by their tokens, as truncated rows are,
    not by their count of windows (every one-window row of a short-text task would tie)."""
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from mlm_pretrain.trainer import _trainer_classes

    texts = ["the cat", "the cat sat on a mat and the dog ran off", "a dog", "the dog sat on the mat",
             "the cat sat on a mat and the dog ran away from the cat and the mat", "cat"] * 4
    docs = window_encodings(tiny_tokenizer, texts, None, max_length=8, overlap=2)
    ds = datasets.Dataset.from_list([{"input_ids": d["input_ids"], "attention_mask": d["attention_mask"],
                                      "labels": i % 2} for i, d in enumerate(docs)])
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=16,
                                                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    trainer_class = _trainer_classes()[0]
    grouped = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True,
                                train_sampling_strategy="group_by_length", report_to="none")
    sampler = trainer_class(model=model, args=grouped, train_dataset=ds)._get_train_sampler(ds)
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == [sum(len(w) for w in d["input_ids"]) for d in docs]  # tokens, not windows
    assert len(set(sampler.lengths)) > len({len(d["input_ids"]) for d in docs})  # tokens tell more rows apart
    plain = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True,
                              report_to="none")
    assert not isinstance(trainer_class(model=model, args=plain, train_dataset=ds)._get_train_sampler(ds),
                          LengthGroupedSampler)


@pytest.mark.slow
def test_rows_that_fit_the_window_train_the_same_in_both_modes(tmp_path, encoder_dir, data_dir):
    """windows is the default: where every row fits the window (the bundled sentiment task at 64 tokens) it
    trains and scores exactly as truncate does (the same batches, logits and loss; fp32), so the default
    costs short-text tasks nothing."""
    scores = {}
    for mode in ("truncate", "windows"):
        cfg = _config(tmp_path / mode, encoder_dir, "finetune.max_length=64", "finetune.seeds=[3]",
                      "finetune.group_by_length=true", "finetune.mixed_precision=no",
                      f"finetune.long_documents={mode}", f"finetune.train_file={data_dir / 'sentiment' / 'train.csv'}",
                      f"finetune.validation_file={data_dir / 'sentiment' / 'validation.csv'}", "finetune.max_steps=30",
                      "finetune.eval_steps=10")
        summary = json.loads((finetune(cfg).parent / "summary.json").read_text())
        assert summary["lengths"]["train"]["longer_than_window"] == 0
        run = summary["runs"][0]
        scores[mode] = (run["best_step"], run["validation"])
    assert scores["windows"][0] == scores["truncate"][0]
    for k, v in scores["truncate"][1].items():
        assert scores["windows"][1][k] == pytest.approx(v, abs=1e-6), k


def test_window_settings_are_checked():
    with pytest.raises(ConfigError, match="window_overlap"):
        load_config("tiny-bert", ["finetune.max_length=64", "finetune.window_overlap=32"])
    with pytest.raises(ConfigError, match="max_windows"):
        load_config("tiny-bert", ["finetune.max_windows=0"])


# ----------------------------------------------------------------------------------------------
# Fine-tuning on documents whose label is at their end
def _cue_at_the_end(path: Path, n: int, seed: int) -> Path:
    """Reviews of 30-40 filler words that end in their verdict: beyond a 16-token window's reach."""
    rng = np.random.default_rng(seed)
    filler = ["the", "on", "a", "and", "of", "to", "in", "was", "it", "is"]
    rows = []
    for i in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(filler, size=int(rng.integers(30, 41)))) + ["good" if label else "bad"]
        rows.append({"text": " ".join(words), "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, encoder: Path, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = _cue_at_the_end(tmp_path / "train.jsonl", 160, 0)
    val = _cue_at_the_end(tmp_path / "val.jsonl", 60, 1)
    return load_config("tiny-bert", [f"output_dir={tmp_path}", f"finetune.model={encoder}", *FAST,
                                     f"finetune.train_file={train}", f"finetune.validation_file={val}",
                                     "finetune.max_length=16", "finetune.num_epochs=20", "finetune.batch_size=16",
                                     "finetune.task_name=cue", *overrides])


def test_windows_read_what_truncation_cuts(tmp_path, encoder_dir, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="mlm_pretrain")
    cut = finetune(_config(tmp_path / "cut", encoder_dir, "finetune.long_documents=truncate"))
    whole = finetune(_config(tmp_path / "whole", encoder_dir, "finetune.long_documents=windows",
                             "finetune.window_overlap=4"))
    cut_acc = json.loads((cut / "metrics.json").read_text())["eval/accuracy"]
    whole_acc = json.loads((whole / "metrics.json").read_text())["eval/accuracy"]
    assert cut_acc < 0.7 and whole_acc >= 0.9, (cut_acc, whole_acc)
    # nothing is cut silently: the log and the summary say how many rows were longer, and what was done
    summary = json.loads((whole.parent / "summary.json").read_text())
    assert summary["lengths"]["train"]["longer_than_window"] == 160 and summary["lengths"]["train"]["window"] == 16
    assert summary["lengths"]["validation"]["long_documents"] == "windows"
    assert summary["lengths"]["validation"]["mean_windows"] > 2
    assert "are longer than finetune.max_length=16 tokens" in caplog.text and "each is cut" in caplog.text
    # one prediction per document, in input order, and the classifier folder records how it reads documents
    task = json.loads((whole / "task.json").read_text())
    assert task["long_documents"] == "windows" and task["window_overlap"] == 4 and task["window_pooling"] == "mean"
    rows = [json.loads(x) for x in (whole / "validation_predictions.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (tmp_path / "whole" / "val.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [v["text"] for v in val]
    # `mlm-pretrain evaluate` reads whole documents too, with the settings the folder records
    cfg = load_config("tiny-bert", ["tracking.report_to=[]"])
    metrics = evaluate_model(cfg, str(whole), file=str(tmp_path / "whole" / "val.jsonl"))
    assert metrics["accuracy"] == pytest.approx(whole_acc)
    assert metrics["lengths"]["longer_than_window"] == 60
    out = evaluate_model(cfg, str(whole), predict=str(tmp_path / "whole" / "val.jsonl"),
                         output=str(tmp_path / "p.jsonl"))
    predicted = [json.loads(x) for x in Path(out).read_text().splitlines()]
    assert [p["label"] for p in predicted] == [r["label"] for r in rows]
