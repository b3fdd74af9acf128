"""Fine-tuning: data and labels, the loop, outputs that reload, seeds, resume, and every bad input."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlm_pretrain.config import load_config
from mlm_pretrain.errors import UserError
from mlm_pretrain.errors import FinetuneError
from mlm_pretrain.classifier import build_classifier, embedding_scale, resolve_embedding_learning_rate
from mlm_pretrain.finetune import finetune, format_summary, median_seed, summarise
from mlm_pretrain.trainer import training_arguments
from mlm_pretrain.finetune_data import LabelSpec, infer_label_spec, prepare_task, read_table
from mlm_pretrain.metrics import CLASSIFICATION, REGRESSION
from mlm_pretrain.predict import evaluate_model, make_loader

sklearn_metrics = pytest.importorskip("sklearn.metrics")

# fp32 on every CPU: these tests compare numbers across code paths, and `auto` picks bf16 on CPUs with fast
# bf16 matmuls (AVX-512 BF16, AMX), which rounds each path differently (test_bf16_autocast_on_cpu covers bf16)
FAST = ["tracking.report_to=[]", "finetune.learning_rate=2e-3", "finetune.save_checkpoints=false",
        "finetune.logging_steps=5", "finetune.warmup_ratio=0.1", "finetune.mixed_precision=no"]


def ft_config(out: Path, encoder: Path | None, *overrides: str):
    model = [f"finetune.model={encoder}"] if encoder else []
    return load_config("tiny-bert", [f"output_dir={out}", *model, *FAST, *overrides])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# Labels and summaries (pure)
# ----------------------------------------------------------------------------------------------
def test_infer_label_spec():
    s = infer_label_spec(["pos", "neg", "pos", "neutral"])
    assert (s.problem_type, s.keys, s.names, s.num_labels) == (CLASSIFICATION, ("neg", "neutral", "pos"),
                                                                ("neg", "neutral", "pos"), 3)
    assert [s.encode(v) for v in ["pos", "neg", "neutral"]] == [2, 0, 1]
    # integers sort numerically; 10 after 2; csv text "1" and 1.0 are the same class
    s = infer_label_spec([2, 10, 1, 2])
    assert s.keys == ("1", "2", "10") and s.encode("10") == 2 and s.encode(1.0) == 0
    assert infer_label_spec(["0", "1", "1"]).keys == ("0", "1")
    # floats: regression; a text column of numbers with a fraction too
    assert infer_label_spec([0.5, 1.25, 3.0]).problem_type == REGRESSION
    assert infer_label_spec(["0.5", "4", "2.2"]).problem_type == REGRESSION
    assert infer_label_spec([1, 2, 3], problem_type="regression").num_labels == 1
    # label_names: names integer ids, or orders string classes
    s = infer_label_spec([0, 1, 1], label_names=["negative", "positive"])
    assert s.id2label == {0: "negative", 1: "positive"} and s.encode(1) == 1 and s.encode("positive") == 1
    s = infer_label_spec(["yes", "no"], label_names=["no", "yes"])
    assert s.encode("yes") == 1
    assert s.unknown(["yes", "maybe", "maybe", None]) == {"maybe": 2, "None": 1}
    # missing values are ignored when inferring
    assert infer_label_spec(["a", "", None, "b"]).keys == ("a", "b")


@pytest.mark.parametrize("values,kwargs,match", [
    (["a", "a"], {}, "single class"),
    ([], {}, "no labels"),
    ([0.5, 1.5], {"problem_type": "classification"}, "fractional"),
    ([0, 1, 2], {"label_names": ["a", "b"]}, "label 2 is outside 0..1"),
    (["x", "y"], {"label_names": ["x"]}, "'y' is not in finetune.label_names"),
    ([0.5, 1.5], {"label_names": ["a"]}, "regression task"),
])
def test_infer_label_spec_errors(values, kwargs, match):
    with pytest.raises(FinetuneError, match=match):
        infer_label_spec(values, **kwargs)


def _run(seed, acc, loss, ex=100.0):
    return {"seed": seed, "best_step": 10, "validation": {"accuracy": acc, "loss": loss},
            "train_examples_per_second": ex}


def test_summary_median_std_and_selected_seed():
    runs = [_run(1, 0.70, 0.9), _run(2, 0.80, 0.5), _run(3, 0.75, 0.7), _run(4, 0.60, 1.1), _run(5, 0.78, 0.6)]
    s = summarise(runs, "accuracy")
    accs = np.array([0.70, 0.80, 0.75, 0.60, 0.78])
    assert s["validation"]["accuracy"]["median"] == pytest.approx(0.75)
    assert s["validation"]["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert s["validation"]["loss"]["median"] == pytest.approx(0.7)
    assert s["selected_seed"] == 3 and s["seeds"] == [1, 2, 3, 4, 5]
    # even count: the better of the two middle seeds; "loss" is lower-is-better
    assert median_seed(runs[:4], "accuracy") == 3        # 0.70 / 0.75 in the middle -> 0.75
    assert median_seed(runs[:4], "loss") == 3            # losses 0.9 0.5 0.7 1.1 -> middle 0.7 / 0.9 -> 0.7
    assert median_seed([_run(1, float("nan"), 1.0), _run(2, 0.5, 1.0), _run(3, 0.6, 1.0)], "accuracy") == 2
    one = summarise(runs[:1], "accuracy")
    assert one["validation"]["accuracy"]["std"] == 0.0 and one["selected_seed"] == 1
    table = format_summary(s, "demo").splitlines()
    assert len(table) == 3 + 5 + 2 and table[3 + 2].lstrip("| ").startswith("3*")
    assert table[-2].split("|")[1].strip() == "median" and "0.7500" in table[-2]


# ----------------------------------------------------------------------------------------------
# Data reading, batches
# ----------------------------------------------------------------------------------------------
def test_read_table_formats(tmp_path):
    import pandas as pd

    rows = [{"text": 'he said "hi" , NA', "label": "a"}, {"text": "second", "label": "b"}]
    (tmp_path / "d.tsv").write_text('text\tlabel\nhe said "hi" , NA\ta\nsecond\tb\n')
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)  # quotes the field with quotes in it
    for ext in ("tsv", "jsonl", "parquet", "csv"):
        ds = read_table(tmp_path / f"d.{ext}")
        assert ds["text"] == [r["text"] for r in rows] and ds["label"] == ["a", "b"], ext
    with pytest.raises(FinetuneError, match="unsupported file type '.xlsx'"):
        (tmp_path / "d.xlsx").write_text("x")
        read_table(tmp_path / "d.xlsx")
    with pytest.raises(FinetuneError, match="does not exist"):
        read_table(tmp_path / "missing.csv")


@pytest.mark.slow
def test_finetune_settings_map_to_training_arguments(tmp_path, encoder_dir):
    """Every finetune.* knob reaches transformers.Trainer: evaluation and a checkpoint once per epoch by
    default, the best one loaded at the end, length grouping, warmup ratio, weights-only checkpoints."""
    cfg = ft_config(tmp_path, encoder_dir, "finetune.batch_size=16", "finetune.gradient_accumulation_steps=2",
                    "finetune.group_by_length=true", "finetune.lr_scheduler=cosine", "finetune.warmup_ratio=0.2",
                    "finetune.save_checkpoints=false", "finetune.max_grad_norm=0.5", "finetune.weight_decay=0.1")
    a = training_arguments(cfg, 5, tmp_path / "seed-5", "loss", n_train=100)
    assert (a.eval_steps, a.save_steps) == (4, 4)  # 100 rows / 16 = 7 batches = 4 optimizer steps per epoch
    assert (a.eval_strategy, a.save_strategy, a.load_best_model_at_end) == ("steps", "steps", True)
    assert (a.metric_for_best_model, a.greater_is_better) == ("loss", False)
    assert a.train_sampling_strategy == "group_by_length" and a.lr_scheduler_type == "cosine"
    assert (a.seed, a.per_device_train_batch_size, a.gradient_accumulation_steps) == (5, 16, 2)
    assert (a.max_grad_norm, a.weight_decay, a.get_warmup_steps(10)) == (0.5, 0.1, 2)
    assert a.save_only_model and a.output_dir == str(tmp_path / "seed-5" / "checkpoints")
    a = training_arguments(ft_config(tmp_path, encoder_dir, "finetune.eval_steps=3"), 1, tmp_path, "accuracy", 100)
    assert (a.eval_steps, a.greater_is_better, a.save_only_model) == (3, True, True)  # FAST: no checkpoints
    with pytest.raises(FinetuneError, match="fp16 needs a GPU"):
        training_arguments(ft_config(tmp_path, encoder_dir, "finetune.mixed_precision=fp16", "finetune.cpu=true"), 1,
                           tmp_path, "accuracy", 100)


def test_dynamic_padding_and_truncation(tmp_path, encoder_dir, tiny_tokenizer):
    cfg = ft_config(tmp_path, encoder_dir, "finetune.max_length=12", "finetune.long_documents=truncate")
    task = prepare_task(cfg, tiny_tokenizer)
    lengths = [len(x) for x in task.encoded["train"]["input_ids"]]
    assert max(lengths) == 12 and min(lengths) < 12  # truncated, not padded in the dataset
    batch = next(iter(make_loader(task.encoded["train"], tiny_tokenizer, 8)))
    assert batch["input_ids"].shape[1] == 16  # padded to the batch's longest (12), rounded up to 8
    assert batch["labels"].dtype == torch.long


# ----------------------------------------------------------------------------------------------
# One fine-tune on data/sentiment (string labels), shared by several tests
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory, encoder_dir):
    out = tmp_path_factory.mktemp("sentiment")
    cfg = ft_config(out, encoder_dir, "finetune.num_epochs=10", "finetune.learning_rate=3e-3", "finetune.seeds=[7]", "tracking.plots=true",
                    "tracking.report_to=[tensorboard]")
    final = finetune(cfg)
    return cfg, final


@pytest.mark.slow
def test_finetune_outputs(sentiment_run, data_dir):
    cfg, final = sentiment_run
    task_dir = final.parent
    assert final == cfg.run_dir / "finetune" / "sentiment" / "final"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "task.json",
                 "validation_predictions.jsonl", "confusion_matrix.png", "mlm_pretrain_config.yaml"):
        assert (final / name).is_file(), name
    assert (task_dir / "summary.json").is_file() and (task_dir / "seed-7" / "loss.png").is_file()
    pytest.importorskip("tensorboard")
    assert list((task_dir / "seed-7" / "logs").rglob("events.out.tfevents.*"))  # the default tracker
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["seed"] == 7 and metrics["init"] == "pretrained"
    # learned something: above the majority class (64/150 = 0.427) by a margin
    assert metrics["eval/accuracy"] > 0.6
    # the best step is the evaluation with the highest accuracy in metrics.jsonl (10 epochs, 19 steps each)
    evals = [r for r in read_jsonl(task_dir / "seed-7" / "metrics.jsonl") if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [19 * k for k in range(1, 11)]
    best = max(evals, key=lambda r: r["eval/accuracy"])
    assert metrics["best_step"] == best["step"] and metrics["eval/accuracy"] == pytest.approx(best["eval/accuracy"])


def test_metrics_equal_sklearn_on_saved_predictions(sentiment_run):
    _, final = sentiment_run
    rows = read_jsonl(final / "validation_predictions.jsonl")
    assert len(rows) == 150 and set(rows[0]) == {"text", "reference", "label", "score"}
    preds, refs = [r["label"] for r in rows], [r["reference"] for r in rows]
    m = json.loads((final / "metrics.json").read_text())
    assert m["eval/accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds), abs=1e-12)
    assert m["eval/f1_macro"] == pytest.approx(sklearn_metrics.f1_score(refs, preds, average="macro"), abs=1e-12)
    assert m["eval/matthews_correlation"] == pytest.approx(sklearn_metrics.matthews_corrcoef(refs, preds), abs=1e-12)


def test_reloaded_model_predicts_like_the_in_memory_one(sentiment_run):
    """final/ through AutoModelForSequenceClassification and pipeline: the label names and the same
    scores that the in-memory model wrote at the end of training."""
    from transformers import AutoModelForSequenceClassification, pipeline

    _, final = sentiment_run
    model = AutoModelForSequenceClassification.from_pretrained(final)
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    rows = read_jsonl(final / "validation_predictions.jsonl")
    clf = pipeline("text-classification", model=str(final))
    out = clf([r["text"] for r in rows])
    assert [o["label"] for o in out] == [r["label"] for r in rows]
    np.testing.assert_allclose([o["score"] for o in out], [r["score"] for r in rows], atol=1e-5)


def test_evaluate_model_file_and_predict(sentiment_run, data_dir, tmp_path):
    cfg, final = sentiment_run
    m = json.loads((final / "metrics.json").read_text())
    got = evaluate_model(cfg, model=str(final), file=str(data_dir / "sentiment" / "validation.csv"))
    for k in ("loss", "accuracy", "f1_macro", "matthews_correlation"):
        assert got[k] == pytest.approx(m[f"eval/{k}"], abs=1e-6), k
    assert got["examples"] == 150
    # unlabelled file -> label names and scores, same as the saved predictions
    rows = read_jsonl(final / "validation_predictions.jsonl")
    write_csv(tmp_path / "unlabelled.csv", "text", ['"' + r["text"].replace('"', '""') + '"' for r in rows])
    out = evaluate_model(cfg, model=str(final), predict=str(tmp_path / "unlabelled.csv"),
                         output=str(tmp_path / "pred.csv"))
    import pandas as pd

    pred = pd.read_csv(out)
    assert list(pred.columns) == ["text", "label", "score"]
    assert pred["label"].tolist() == [r["label"] for r in rows]
    np.testing.assert_allclose(pred["score"], [r["score"] for r in rows], atol=1e-5)
    default = evaluate_model(cfg, model=str(final), predict=str(tmp_path / "unlabelled.csv"))
    assert default == tmp_path / "unlabelled.predictions.jsonl" and len(read_jsonl(default)) == 150


def test_evaluate_cli_and_errors(sentiment_run, data_dir, tmp_path, capsys):
    from mlm_pretrain.cli import main

    cfg, final = sentiment_run
    assert main(["evaluate", "--model", str(final), "--file", str(data_dir / "sentiment" / "validation.csv"),
                 f"output_dir={cfg.run_dir}"]) == 0
    assert "'accuracy'" in capsys.readouterr().out
    write_csv(tmp_path / "odd.csv", "text,label", ["fine,positive", "meh,mixed"])
    with pytest.raises(FinetuneError, match="label 'mixed' .* not one the model knows"):
        evaluate_model(cfg, model=str(final), file=str(tmp_path / "odd.csv"))
    with pytest.raises(FinetuneError, match="give --file"):
        evaluate_model(cfg, model=str(final))


# ----------------------------------------------------------------------------------------------
# Pair task, random init, regression, seeds
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pair_task_on_paraphrase(tmp_path, encoder_dir, tiny_tokenizer):
    from transformers import pipeline

    cfg = ft_config(tmp_path, encoder_dir, "finetune.task_name=paraphrase",
                    "finetune.train_file=data/paraphrase/train.csv",
                    "finetune.validation_file=data/paraphrase/validation.csv", "finetune.text_column=sentence1",
                    "finetune.text_pair_column=sentence2", "finetune.label_names=[different, paraphrase]",
                    "finetune.max_steps=20", "finetune.group_by_length=true", "finetune.metric_for_best=f1")
    task = prepare_task(cfg, tiny_tokenizer)
    first = task.encoded["train"][0]  # the default long_documents=windows: a list of windows, here one
    sep = tiny_tokenizer.sep_token_id
    assert len(first["input_ids"]) == 1
    assert first["input_ids"][0].count(sep) == 2 and 1 in first["token_type_ids"][0]  # [CLS] a [SEP] b [SEP]
    final = finetune(cfg)
    m = json.loads((final / "metrics.json").read_text())
    assert m["metric_for_best"] == "f1" and {"eval/f1", "eval/accuracy"} <= set(m)
    rows = read_jsonl(final / "validation_predictions.jsonl")
    assert set(rows[0]) == {"sentence1", "sentence2", "reference", "label", "score"}
    names = ["different", "paraphrase"]
    preds = [names.index(r["label"]) for r in rows]
    assert m["eval/f1"] == pytest.approx(sklearn_metrics.f1_score([r["reference"] for r in rows], preds), abs=1e-12)
    clf = pipeline("text-classification", model=str(final))
    out = clf([{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in rows[:10]])
    assert [o["label"] for o in out] == [r["label"] for r in rows[:10]]
    np.testing.assert_allclose([o["score"] for o in out], [r["score"] for r in rows[:10]], atol=1e-5)


@pytest.mark.slow
def test_random_init_same_architecture(tmp_path, encoder_dir, tiny_tokenizer):
    from transformers import AutoModelForPreTraining

    enc = AutoModelForPreTraining.from_pretrained(encoder_dir)
    spec = LabelSpec(CLASSIFICATION, ("a", "b"), ("a", "b"))
    emb = enc.bert.embeddings.word_embeddings.weight
    pre = build_classifier(str(encoder_dir), ft_config(tmp_path, encoder_dir), spec, tiny_tokenizer, seed=1)
    rnd = build_classifier(str(encoder_dir), ft_config(tmp_path, encoder_dir, "finetune.init=random"), spec,
                           tiny_tokenizer, seed=1)
    assert torch.equal(pre.bert.embeddings.word_embeddings.weight, emb)
    assert not torch.allclose(rnd.bert.embeddings.word_embeddings.weight, emb)
    assert [n for n, _ in pre.named_parameters()] == [n for n, _ in rnd.named_parameters()]
    assert all(p.shape == q.shape for p, q in zip(pre.parameters(), rnd.parameters()))
    # the run itself
    final = finetune(ft_config(tmp_path, encoder_dir, "finetune.init=random", "finetune.max_steps=4"))
    assert json.loads((final / "metrics.json").read_text())["init"] == "random"


def test_random_init_without_model_dir_uses_the_preset(tmp_path, tiny_tokenizer_dir, tiny_tokenizer):
    from mlm_pretrain.model import model_source

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", "finetune.init=random", f"tokenizer.pretrained={tiny_tokenizer_dir}",
                               *FAST, "finetune.max_steps=2"])
    assert model_source(cfg) is None
    model = build_classifier(None, cfg, LabelSpec(CLASSIFICATION, ("a", "b"), ("a", "b")), tiny_tokenizer, seed=0)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (128, 2)  # the tiny preset
    assert model.config.vocab_size == len(tiny_tokenizer)
    with pytest.raises(FinetuneError, match="run `mlm-pretrain pretrain` first"):
        model_source(cfg.replace(**{"finetune.init": "pretrained"}))


@pytest.mark.slow
def test_regression_task(tmp_path, encoder_dir):
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "great", "awful", "ok"]
    score = {"good": 4.0, "bad": 1.0, "fine": 3.0, "great": 5.0, "awful": 0.5, "ok": 2.5}
    lines = []
    for _ in range(120):
        w = rng.choice(words)
        lines.append(f"the room was {w},{score[w] + rng.normal(0, 0.1):.3f}")
    write_csv(tmp_path / "train.csv", "text,label", lines[:90])
    write_csv(tmp_path / "val.csv", "text,label", lines[90:])
    final = finetune(ft_config(tmp_path, encoder_dir, f"finetune.train_file={tmp_path / 'train.csv'}",
                               f"finetune.validation_file={tmp_path / 'val.csv'}", "finetune.max_steps=20",
                               "finetune.task_name=sts"))
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(final)
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    m = json.loads((final / "metrics.json").read_text())
    assert m["metric_for_best"] == "pearson"
    rows = read_jsonl(final / "validation_predictions.jsonl")
    preds, refs = [r["score"] for r in rows], [r["reference"] for r in rows]
    # (the loop sees the references as float32 tensors, hence 1e-6 rather than exact)
    assert m["eval/pearson"] == pytest.approx(scipy_stats.pearsonr(preds, refs)[0], abs=1e-6)
    assert m["eval/spearmanr"] == pytest.approx(scipy_stats.spearmanr(preds, refs)[0], abs=1e-6)
    assert m["eval/mse"] == pytest.approx(np.mean((np.array(preds) - np.array(refs)) ** 2), abs=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_counts_optimizer_steps(tmp_path, encoder_dir):
    final = finetune(ft_config(tmp_path, encoder_dir, "finetune.num_epochs=1", "finetune.batch_size=32",
                               "finetune.gradient_accumulation_steps=2"))
    results = json.loads((final.parent / "seed-42" / "results.json").read_text())
    # 600 rows = 19 batches of 32: 10 optimizer steps (the last one accumulates a single batch)
    assert results["steps"] == 10 and results["train_examples_seen"] == 600 and results["best_step"] == 10


def test_gradient_accumulation_averages_the_micro_batches(tmp_path, encoder_dir):
    """Accumulating 4 micro-batches of 8 trains on their mean loss, like one batch of 32: the Trainer
    divides each micro-batch's loss by 4 (the classifiers ignore its ``num_items_in_batch``, so it must
    be told), and the logged loss is a mean, not a sum (it was 4x the loss before)."""
    def first_loss(out, *extra):
        final = finetune(ft_config(out, encoder_dir, "finetune.max_steps=2", "finetune.logging_steps=1",
                                   "finetune.learning_rate=1e-9", "finetune.group_by_length=false", *extra))
        rows = [json.loads(x) for x in (final.parent / "seed-42" / "metrics.jsonl").read_text().splitlines()]
        return next(r["train/loss"] for r in rows if "train/loss" in r)

    one = first_loss(tmp_path / "one", "finetune.batch_size=32")
    four = first_loss(tmp_path / "four", "finetune.batch_size=8", "finetune.gradient_accumulation_steps=4")
    assert four == pytest.approx(one, rel=0.05)


def test_embedding_learning_rate_is_the_input_embeddings_own(tmp_path, encoder_dir, tiny_tokenizer, caplog):
    """finetune.embedding_learning_rate: the input embedding matrix in an optimizer group of its own (at
    ~0 it stays where pretraining left it while every other weight moves); null: the Trainer's two groups."""
    from safetensors.torch import load_file

    before = load_file(encoder_dir / "model.safetensors")
    final = finetune(ft_config(tmp_path, encoder_dir, "finetune.max_steps=4", "finetune.lr_scheduler=constant",
                               "finetune.warmup_ratio=0", "finetune.embedding_learning_rate=1e-12"))
    after = load_file(final.parent / "seed-42" / "best" / "model.safetensors")
    emb, query = "embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(after[f"bert.{emb}"], before[f"bert.{emb}"], atol=1e-8)
    assert not torch.allclose(after[f"bert.{query}"], before[f"bert.{query}"], atol=1e-4)

    # a table grown to 4x a fresh one's scale: unset, a note suggests auto; auto gives 4x the rate
    big = grown_encoder(tmp_path / "big", encoder_dir, 4.0)
    spec = infer_label_spec(["a", "b"])
    for_big, for_small = (build_classifier(str(d), ft_config(tmp_path, d), spec, tiny_tokenizer, seed=1)
                          for d in (big, encoder_dir))
    unset = ft_config(tmp_path, big).finetune
    with caplog.at_level(logging.INFO, logger="mlm_pretrain.classifier"):
        assert resolve_embedding_learning_rate(for_big, unset) is None
        assert resolve_embedding_learning_rate(for_small, unset) is None
        assert resolve_embedding_learning_rate(for_big, unset, log=False) is None
    notes = [r.getMessage() for r in caplog.records if "scale" in r.getMessage()]
    assert len(notes) == 1 and "4.0x" in notes[0] and "embedding_learning_rate=auto (here 0.008" in notes[0], notes

    auto = ft_config(tmp_path, big, "finetune.embedding_learning_rate=auto").finetune
    assert resolve_embedding_learning_rate(for_big, auto) == pytest.approx(4 * auto.learning_rate, rel=0.02)
    assert resolve_embedding_learning_rate(for_small, auto) is None  # a fresh-scale table: the others' rate
    random_init = ft_config(tmp_path, big, "finetune.embedding_learning_rate=auto", "finetune.init=random").finetune
    assert resolve_embedding_learning_rate(for_big, random_init) is None
    fixed = ft_config(tmp_path, big, "finetune.embedding_learning_rate=3e-4").finetune
    assert resolve_embedding_learning_rate(for_small, fixed) == 3e-4  # a number is used as given

    from mlm_pretrain.trainer import _trainer_classes
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    model = AutoModelForSequenceClassification.from_pretrained(encoder_dir, num_labels=2)
    Trainer = _trainer_classes()[0]
    for lr, groups in ((None, [2e-3, 2e-3]), (2e-3, [2e-3, 2e-3]), (8e-3, [2e-3, 2e-3, 8e-3])):
        trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path / "t"), learning_rate=2e-3, use_cpu=True,
                                                              report_to="none"))
        trainer.embedding_learning_rate = lr
        optimizer = trainer.create_optimizer()
        assert [g["lr"] for g in optimizer.param_groups] == groups
        assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
        if lr == 8e-3:
            assert optimizer.param_groups[-1]["params"] == [model.get_input_embeddings().weight]
            assert optimizer.param_groups[-1]["weight_decay"] == optimizer.param_groups[0]["weight_decay"]


def grown_encoder(out: Path, encoder_dir: Path, scale: float) -> Path:
    """``encoder_dir`` with its input embedding table scaled to ``scale`` x the initial std (as a tied MLM grows it)."""
    from transformers import AutoModelForMaskedLM

    grown = AutoModelForMaskedLM.from_pretrained(encoder_dir)
    with torch.no_grad():
        emb = grown.get_input_embeddings().weight
        emb.mul_(scale * grown.config.initializer_range / emb.std())
    grown.save_pretrained(out)
    shutil.copytree(encoder_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    return out


def test_embedding_scale_is_against_a_fresh_table_and_keeps_the_seeded_state(encoder_dir, tmp_path, tiny_tokenizer):
    """The reference is a fresh table of the same config (ModernBERT's truncated init is ~0.88 x
    initializer_range, BERT's is initializer_range), built from a fixed seed without moving the caller's
    random state."""
    from transformers import AutoModelForSequenceClassification

    from mlm_pretrain.model import build_config

    for arch in ("bert", "modernbert"):
        config = build_config(load_config("tiny", [f"model.architecture={arch}"]).model, len(tiny_tokenizer),
                              pad_token_id=tiny_tokenizer.pad_token_id)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config)
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(3.0)
        state = torch.random.get_rng_state()
        ratio = embedding_scale(model)
        assert ratio == pytest.approx(3.0, rel=0.03), arch
        assert torch.equal(torch.random.get_rng_state(), state)
        torch.manual_seed(1)  # another seed of the run: the same reference, so the same rate
        assert embedding_scale(model) == ratio


@pytest.mark.slow
def test_auto_embedding_learning_rate_end_to_end(tmp_path, encoder_dir):
    """auto on a grown table: the embedding matrix trains at learning_rate x its growth, and results.json says so."""
    big = grown_encoder(tmp_path / "big", encoder_dir, 4.0)
    cfg = ft_config(tmp_path / "run", big, "finetune.max_steps=2", "finetune.embedding_learning_rate=auto")
    final = finetune(cfg)
    results = json.loads((final.parent / "seed-42" / "results.json").read_text())
    assert results["embedding_learning_rate"] == pytest.approx(4 * cfg.finetune.learning_rate, rel=0.02)


@pytest.mark.slow
def test_early_stopping_patience(tmp_path, encoder_dir):
    # a learning rate so small that the predictions cannot change: no evaluation after the first improves
    final = finetune(ft_config(tmp_path, encoder_dir, "finetune.learning_rate=1e-12", "finetune.lr_scheduler=constant",
                               "finetune.eval_steps=1", "finetune.max_steps=50", "finetune.early_stopping_patience=2"))
    results = json.loads((final.parent / "seed-42" / "results.json").read_text())
    assert (results["best_step"], results["steps"]) == (1, 3)


@pytest.mark.slow
def test_multi_seed_summary(tmp_path, encoder_dir, capsys):
    cfg = ft_config(tmp_path, encoder_dir, "finetune.seeds=[3, 1, 2]", "finetune.max_steps=4",
                    "finetune.eval_steps=2")
    final = finetune(cfg)
    summary = json.loads((final.parent / "summary.json").read_text())
    assert summary["seeds"] == [3, 1, 2] and [r["seed"] for r in summary["runs"]] == [3, 1, 2]
    assert set(summary["validation"]) == {"loss", "accuracy", "f1_macro", "matthews_correlation"}
    for k, stats in summary["validation"].items():
        vals = [r["validation"][k] for r in summary["runs"]]
        assert stats["median"] == pytest.approx(np.median(vals)) and stats["std"] == pytest.approx(np.std(vals, ddof=1))
    assert len({r["validation"]["loss"] for r in summary["runs"]}) == 3  # the seeds really differ
    assert summary["selected_seed"] == median_seed(summary["runs"], "accuracy")
    assert json.loads((final / "metrics.json").read_text())["seed"] == summary["selected_seed"]
    for seed in (1, 2, 3):
        assert (final.parent / f"seed-{seed}" / "best" / "model.safetensors").is_file()
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 + 2 and table[-2].split("|")[1].strip() == "median"


@pytest.mark.slow
def test_interrupted_seed_resumes_to_the_same_result(tmp_path, encoder_dir, monkeypatch, caplog):
    """A run stopped after its step-4 checkpoint and resumed ends exactly like an uninterrupted one;
    a finished seed with the same settings is reused, one with other settings is redone."""
    args = ["finetune.seeds=[5]", "finetune.max_steps=6", "finetune.eval_steps=2", "finetune.save_checkpoints=true"]
    ref = json.loads((finetune(ft_config(tmp_path / "a", encoder_dir, *args)).parent / "seed-5" / "results.json").read_text())

    from transformers import Trainer

    real = Trainer._save_checkpoint

    class Crash(RuntimeError):
        pass

    def crash_after_step_4(self, *a, **k):
        real(self, *a, **k)
        if self.state.global_step == 4:
            raise Crash

    monkeypatch.setattr(Trainer, "_save_checkpoint", crash_after_step_4)
    cfg = ft_config(tmp_path / "b", encoder_dir, *args)
    with pytest.raises(Crash):
        finetune(cfg)
    monkeypatch.setattr(Trainer, "_save_checkpoint", real)
    assert (cfg.run_dir / "finetune" / "sentiment" / "seed-5" / "checkpoints" / "checkpoint-4").is_dir()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain"):  # the stage and its trainer module
        final = finetune(cfg)
    assert "resumed from" in caplog.text
    got = json.loads((final.parent / "seed-5" / "results.json").read_text())
    assert got["best_step"] == ref["best_step"] and got["steps"] == 6
    for k, v in ref["validation"].items():
        assert got["validation"][k] == pytest.approx(v, abs=1e-6), k
    assert not (final.parent / "seed-5" / "checkpoints").exists()  # removed once the seed is done
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain.finetune"):
        finetune(cfg)
    assert "already fine-tuned with these settings" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain.finetune"):
        finetune(ft_config(tmp_path / "b", encoder_dir, *args, "finetune.learning_rate=1e-3"))
    assert "made with other settings" in caplog.text


@pytest.mark.slow
def test_two_processes_data_parallel(tmp_path, encoder_dir):
    """``accelerate launch`` with 2 CPU processes (gloo): two seeds in one launch (the process group
    must survive the first), and the gathered validation predictions line up with the input rows."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mlm_pretrain",
           "finetune", f"output_dir={tmp_path}", f"finetune.model={encoder_dir}", "finetune.max_steps=4",
           "finetune.eval_steps=2", "tracking.report_to=[]", "finetune.seeds=[1, 2]", "finetune.mixed_precision=no"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    final = tmp_path / "finetune" / "sentiment" / "final"
    summary = json.loads((final.parent / "summary.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [1, 2] and all(r["steps"] == 4 for r in summary["runs"])
    saved = read_jsonl(final / "validation_predictions.jsonl")
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", "finetune.mixed_precision=no"])
    again = read_jsonl(evaluate_model(cfg, model=str(final), predict="data/sentiment/validation.csv",
                                      output=str(tmp_path / "p.jsonl")))
    assert len(saved) == len(again) == 150
    assert [r["text"] for r in saved] == [r["text"] for r in again]
    np.testing.assert_allclose([r["score"] for r in saved], [r["score"] for r in again], atol=1e-5)


@pytest.mark.slow
def test_bf16_autocast_on_cpu(tmp_path, encoder_dir):
    from accelerate.state import AcceleratorState, GradientState

    def reset():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    reset()  # the process-wide accelerate state was built for fp32 by earlier tests
    try:
        final = finetune(ft_config(tmp_path, encoder_dir, "finetune.mixed_precision=bf16", "finetune.max_steps=3"))
    finally:
        reset()
    m = json.loads((final / "metrics.json").read_text())
    assert 0.0 <= m["eval/accuracy"] <= 1.0 and np.isfinite(m["eval/loss"])


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_label_column_missing_lists_columns(tmp_path, encoder_dir):
    write_csv(tmp_path / "t.csv", "text,sentiment", ["nice,positive", "bad,negative"])
    cfg = ft_config(tmp_path, encoder_dir, f"finetune.train_file={tmp_path / 't.csv'}")
    with pytest.raises(FinetuneError, match=r"finetune.label_column='label' is not a column of .*t.csv; "
                                            r"its columns are: text, sentiment"):
        finetune(cfg)


def test_validation_label_unseen_in_training(tmp_path, encoder_dir):
    write_csv(tmp_path / "t.csv", "text,label", ["nice,positive", "bad,negative"] * 5)
    write_csv(tmp_path / "v.csv", "text,label", ["nice,positive", "so so,mixed", "hmm,mixed"])
    cfg = ft_config(tmp_path, encoder_dir, f"finetune.train_file={tmp_path / 't.csv'}",
                    f"finetune.validation_file={tmp_path / 'v.csv'}")
    with pytest.raises(FinetuneError, match=r"validation label 'mixed' \(2 row\(s\)\) never occurs in the training "
                                            r"data, whose labels are: negative, positive"):
        finetune(cfg)


def test_second_text_column_missing(tmp_path, encoder_dir):
    cfg = ft_config(tmp_path, encoder_dir, "finetune.train_file=data/paraphrase/train.csv",
                    "finetune.validation_file=data/paraphrase/validation.csv", "finetune.text_column=sentence1",
                    "finetune.text_pair_column=sentence_2")
    with pytest.raises(FinetuneError, match=r"text_pair_column='sentence_2' is not a column of .*train.csv; its "
                                            r"columns are: sentence1, sentence2, label"):
        finetune(cfg)


def test_empty_texts_are_skipped_and_counted(tmp_path, encoder_dir, caplog):
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    rows += [",pos", '"   ",neg', ",neg"]  # three empty texts
    write_csv(tmp_path / "t.csv", "text,label", rows)
    cfg = ft_config(tmp_path, encoder_dir, f"finetune.train_file={tmp_path / 't.csv'}", "finetune.validation_file=null",
                    "finetune.validation_fraction=0.25", "finetune.max_steps=2")
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.finetune"):
        final = finetune(cfg)
    assert "skipped 3 row(s) with an empty text" in caplog.text
    summary = json.loads((final.parent / "summary.json").read_text())
    assert summary["skipped"]["train"] == {"empty_text": 3, "missing_label": 0}
    assert summary["examples"]["train"] + summary["examples"]["validation"] == 40  # 43 rows - 3 empty
    assert summary["examples"]["validation"] == 10  # the seeded 25% split


def test_model_dir_without_tokenizer(tmp_path, encoder_dir):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(encoder_dir / name, bare / name)
    with pytest.raises(FinetuneError, match=r"model directory .*bare has no tokenizer"):
        finetune(ft_config(tmp_path, bare))


def test_head_with_other_label_count_is_reinitialised(tmp_path, encoder_dir, tiny_tokenizer, caplog):
    three = LabelSpec(CLASSIFICATION, ("a", "b", "c"), ("a", "b", "c"))
    old = build_classifier(str(encoder_dir), ft_config(tmp_path, encoder_dir), three, tiny_tokenizer, seed=0)
    old.save_pretrained(tmp_path / "cls3")
    tiny_tokenizer.save_pretrained(tmp_path / "cls3")
    two = LabelSpec(CLASSIFICATION, ("0", "1"), ("no", "yes"))
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.finetune"):
        new = build_classifier(str(tmp_path / "cls3"), ft_config(tmp_path, tmp_path / "cls3"), two, tiny_tokenizer, seed=0)
    assert "has a classification head for 3 label(s) (a, b, c) but this task has 2 (no, yes): the head is re-initialised" \
        in caplog.text
    assert new.classifier.weight.shape == (2, 64) and new.config.id2label == {0: "no", 1: "yes"}
    assert torch.equal(new.bert.encoder.layer[0].attention.self.query.weight,
                       old.bert.encoder.layer[0].attention.self.query.weight)  # the encoder is kept


def test_max_length_beyond_position_embeddings(tmp_path, encoder_dir):
    with pytest.raises(FinetuneError, match=r"finetune.max_length=256 exceeds the model's max_position_embeddings=128"):
        finetune(ft_config(tmp_path, encoder_dir, "finetune.max_length=256"))


def test_unknown_metric_for_best_lists_valid_names(tmp_path, encoder_dir):
    with pytest.raises(FinetuneError, match=r"metric_for_best='f1' is not a metric of this 3-class classification "
                                            r"task; choose one of loss, accuracy, f1_macro, matthews_correlation"):
        finetune(ft_config(tmp_path, encoder_dir, "finetune.metric_for_best=f1"))


def test_config_range_checks():
    for bad, match in [("finetune.seeds=[1, 1]", "seeds: has duplicates"),
                       ("finetune.resume=sometimes", "resume: must be auto or never"),
                       ("finetune.text_pair_column=text", "must differ from text_column"),
                       ("finetune.embedding_learning_rate=0", "embedding_learning_rate: must be > 0")]:
        with pytest.raises(UserError, match=match):
            load_config("tiny-bert", [bad])


# ----------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,files,columns,n_dev", [
    ("sst2", ("sst2/train.tsv", "sst2/dev.tsv"), [], 872),
    ("mrpc", ("mrpc/glue_train.tsv", "mrpc/glue_dev.tsv"),
     ['finetune.text_column="#1 String"', 'finetune.text_pair_column="#2 String"', "finetune.label_column=Quality"], 408),
])
def test_glue_recipes_read_local_files_given_as_overrides(name, files, columns, n_dev, shared_data):
    """The GLUE recipes name the Hub's GLUE; the local GLUE files, given as the recipe headers say, replace
    it (no Hub dataset left in the config) and read with the recipe's labels."""
    from mlm_pretrain.finetune_data import load_splits

    assert load_config(name).finetune.hub_dataset == "nyu-mll/glue"
    cfg = load_config(name, [f"finetune.train_file={shared_data / files[0]}",
                             f"finetune.validation_file={shared_data / files[1]}", *columns])
    assert (cfg.finetune.hub_dataset, cfg.finetune.hub_config) == (None, None)
    splits = load_splits(cfg)
    assert len(splits["validation"]) == n_dev
    labels = {str(v) for v in splits["validation"][cfg.finetune.label_column]}
    assert labels == {"0", "1"} and len(cfg.finetune.label_names) == 2


def test_finetuning_trains_with_the_attention_kernels_the_probe_chose(tmp_path, encoder_dir, monkeypatch,
                                                                    plain_allocator):
    """On a CPU: with attention dropout (the encoder's 0.1) mlm_pretrain.dropout's attention and masks;
    without, the SDPA kernels the probe picked, for every training step."""
    from torch.nn.attention import SDPBackend
    from transformers import BertForPreTraining

    from mlm_pretrain import hardware
    from mlm_pretrain import trainer as ft  # where the fine-tuning step runs
    from mlm_pretrain.dropout import CPUDropout

    used, probed, models = [], [], []

    def probe(precision, **shape):
        probed.append((precision, shape))
        return [SDPBackend.MATH], "math (test figures)"
    real, real_kernels = ft.sdpa_backends, ft.cpu_training_kernels
    monkeypatch.setattr(hardware, "cpu_attention_backends", probe)
    monkeypatch.setattr(ft, "sdpa_backends", lambda b: used.append(b) or real(b))
    monkeypatch.setattr(ft, "cpu_training_kernels", lambda model, *a, **k: models.append(model) or real_kernels(
        model, *a, **k))
    final = finetune(ft_config(tmp_path / "a", encoder_dir, "finetune.num_epochs=1", "finetune.batch_size=100"))
    results = json.loads((final.parent / "seed-42" / "results.json").read_text())
    assert results["malloc"] == ("reuse" if hardware._glibc() is not None else "system")  # finetune.malloc=auto
    assert results["attention_backend"] == ("softmax(q k^T) v with CPU dropout masks (attention dropout 0.1: "
                                            "mlm_pretrain.dropout)")
    assert probed == [] and used == [None] * results["steps"]
    assert any(isinstance(m, CPUDropout) and m.p > 0 for m in models[0].modules())

    no_dropout = tmp_path / "encoder"  # the same encoder without attention dropout
    model = BertForPreTraining.from_pretrained(encoder_dir, attention_probs_dropout_prob=0.0)
    model.save_pretrained(no_dropout)
    shutil.copytree(encoder_dir, no_dropout, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors",
                                                                                                "config.json"))
    used.clear()
    cfg = ft_config(tmp_path / "b", no_dropout, "finetune.num_epochs=1", "finetune.batch_size=100",
                    "finetune.malloc=system")
    final = finetune(cfg)
    results = json.loads((final.parent / "seed-42" / "results.json").read_text())
    assert results["attention_backend"] == "math (test figures)"
    assert results["malloc_reason"] == "system: left as it is (malloc=system)"
    enc = json.loads((no_dropout / "config.json").read_text())
    assert probed == [("no", {"batch": 100, "heads": enc["num_attention_heads"], "seq": cfg.finetune.max_length,
                              "head_dim": enc["hidden_size"] // enc["num_attention_heads"]})]
    assert used == [[SDPBackend.MATH]] * results["steps"]  # every training step, no evaluation


@pytest.mark.slow
def test_a_finetune_works_out_its_inputs_once_not_per_seed(tmp_path, encoder_dir, monkeypatch):
    """The encoder folder, its tokenizer, the tokenized task and the fingerprint that decides whether a
    seed is reused are worked out once per command (mlm_pretrain.finetune, mlm_pretrain.identity), and
    handed to every seed; the seeds' own modules do not work them out again."""
    from mlm_pretrain import classifier, finetune as ft, trainer

    calls = []
    for module in (ft, trainer, classifier):
        for name in ("model_source", "load_model_tokenizer", "prepare_task", "finetune_fingerprint", "load_splits"):
            if hasattr(module, name):
                real = getattr(module, name)
                monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name)
                                    or _real(*a, **k))
    ft.finetune(ft_config(tmp_path, encoder_dir, "finetune.seeds=[1,2]", "finetune.max_steps=2",
                          "finetune.eval_steps=2"))
    assert sorted(calls) == ["finetune_fingerprint", "load_model_tokenizer", "model_source", "prepare_task"]
    assert (tmp_path / "finetune" / "sentiment" / "seed-2" / "results.json").is_file()  # both seeds trained
