"""The task suite (mlm_pretrain.suite): suite files checked before work, settings in their order, the
score arithmetic, the table, and whole suites run end to end: a suite of the bundled tasks from local
files (with a regression task), and the packaged GLUE suite read from the local test Hub server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlm_pretrain.config import load_config
from mlm_pretrain.suite import (SuiteError, format_table, load_suite, run_suite, suite_names, task_config,
                                task_score)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["finetune.max_steps=4", "finetune.eval_steps=2", "finetune.batch_size=16", "finetune.seeds=[1,2]",
         "finetune.save_checkpoints=false", "finetune.mixed_precision=no", "tracking.report_to=[]",
         "tracking.plots=false"]


def _suite_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


BUNDLED = """\
name: bundled
description: the bundled tasks
finetune: {learning_rate: 2.0e-3, num_epochs: 1, max_length: 64}
tasks:
  sentiment:
    score: [accuracy]
    local: {train_file: sentiment/train.csv, validation_file: sentiment/validation.csv}
  paraphrase:
    finetune: {text_column: sentence1, text_pair_column: sentence2, metric_for_best: f1}
    score: [f1, accuracy]
    local: {train_file: paraphrase/train.csv, validation_file: paraphrase/validation.csv}
  similarity:
    finetune: {text_column: sentence1, text_pair_column: sentence2, problem_type: regression}
    score: [pearson, spearmanr]
    local: {train_file: similarity/train.jsonl, validation_file: similarity/validation.jsonl}
published:
  source: "made up, for the test"
  models:
    Made-up: {sentiment: 80.0, paraphrase: [70.0, 60.0], similarity: [50.0, 40.0]}
"""


@pytest.fixture
def bundled_data(tmp_path, data_dir):
    """data/ plus a small regression task (sentence pairs with a 0-5 similarity) made from the paraphrases."""
    import csv
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_dir, root)
    (root / "similarity").mkdir()
    for split in ("train", "validation"):
        with open(data_dir / "paraphrase" / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        lines = [json.dumps({"sentence1": r["sentence1"], "sentence2": r["sentence2"],
                             "label": 4.0 * int(r["label"]) + (i % 5) / 5}) for i, r in enumerate(rows)]
        (root / "similarity" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


# ----------------------------------------------------------------------------------------------
# Suite files and settings
# ----------------------------------------------------------------------------------------------
def test_the_packaged_suites_load_and_name_their_data():
    assert suite_names() == ["glue", "reviews"]
    glue = load_suite("glue")
    assert [t.name for t in glue.tasks] == ["cola", "sst2", "mrpc", "stsb", "rte"]
    assert {t.finetune["hub_dataset"] for t in glue.tasks} == {"nyu-mll/glue"}
    assert glue.task("stsb").score == ("pearson", "spearmanr") and glue.task("mrpc").score == ("f1", "accuracy")
    assert set(glue.published["models"]["BERT-Tiny (2/128)"]) == {"cola", "sst2", "mrpc", "stsb", "rte"}
    reviews = load_suite("reviews")
    assert len(reviews.tasks) == 8 and all(t.split == "test" and "hub_dataset" not in t.finetune for t in reviews.tasks)


@pytest.mark.parametrize("text, match", [
    ("name: x\ntasks: {a: {score: [accuracy]}}\nextra: 1\n", r"unknown suite key\(s\) \['extra'\]"),
    ("name: x\ntasks: {}\n", "needs `tasks:`"),
    ("name: x\ntasks: {a: {finetune: {text_column: t}}}\n", "task 'a' needs `score:`"),
    ("name: x\ntasks: {a: {score: [accuracy], finetune: {learning_rat: 1}}}\n",
     r"task 'a': unknown config key 'finetune.learning_rat' \(did you mean finetune.learning_rate\?\)"),
    ("name: x\nfinetune: {num_epochs: many}\ntasks: {a: {score: [accuracy]}}\n", "finetune.num_epochs: expected a number"),
    ("name: x\ntasks: {a: {score: [accuracy], colour: red}}\n", r"task 'a': unknown key\(s\) \['colour'\]"),
    (": [\n", "not valid YAML"),
])
def test_a_bad_suite_file_is_refused_before_work(tmp_path, text, match):
    with pytest.raises(SuiteError, match=match):
        load_suite(str(_suite_file(tmp_path, text)))


def test_missing_suites_and_tasks_name_what_exists(tmp_path):
    with pytest.raises(SuiteError, match="no packaged suite named 'glu'; choose one of glue, reviews"):
        load_suite("glu")
    with pytest.raises(SuiteError, match="suite 'glue' has no task 'qqp'; its tasks: cola, sst2, mrpc, stsb, rte"):
        run_suite(load_config("tiny", [f"output_dir={tmp_path}"]), "glue", tasks=["qqp"])


def test_settings_apply_recipe_then_suite_then_task_then_the_command_line(tmp_path):
    suite = load_suite("glue")
    cfg = load_config("tiny", [f"output_dir={tmp_path}", "finetune.learning_rate=9e-4", "finetune.test_file=x.csv"])
    mrpc = task_config(cfg, suite, suite.task("mrpc"))
    f = mrpc.finetune
    assert (f.task_name, f.hub_dataset, f.hub_config, f.text_pair_column) == ("mrpc", "nyu-mll/glue", "mrpc", "sentence2")
    assert (f.learning_rate, f.num_epochs, f.test_file, f.train_file) == (1e-4, 5, None, None)  # the suite's; no leak
    over = task_config(cfg, suite, suite.task("mrpc"), overrides=["finetune.learning_rate=6e-4"])
    assert over.finetune.learning_rate == 6e-4 and over.finetune.text_pair_column == "sentence2"
    local = task_config(cfg, suite, suite.task("mrpc"), data=Path("/d"))
    lf = local.finetune
    assert (lf.hub_dataset, lf.train_file, lf.text_column, lf.label_column) == (None, "/d/mrpc/glue_train.tsv",
                                                                               "#1 String", "Quality")


def test_task_scores_follow_glue():
    assert task_score({"accuracy": 0.8, "f1": 0.9, "mse": 3.0}, ["f1", "accuracy"]) == pytest.approx(85.0)
    assert task_score({"matthews_correlation": 0.25}, ["matthews_correlation"]) == pytest.approx(25.0)
    with pytest.raises(SuiteError, match=r"score metric\(s\) \['pearson'\] not among the task's metrics"):
        task_score({"accuracy": 0.8}, ["pearson"])


def test_the_table_shows_every_side_the_spread_time_and_published_rows():
    report = {"suite": "s", "description": "d", "model": "enc", "data": "here",
              "settings": {"learning_rate": 1e-4, "num_epochs": 5.0, "batch_size": 32, "max_length": 128,
                           "seeds": [1, 2, 3], "max_train_examples": 10000, "embedding_learning_rate": "auto"},
              "tasks": {"a": {"scores": {"encoder": 80.0, "random init": 70.0, "tfidf": 75.0},
                              "spread": {"encoder": 1.25, "random init": 2.0}, "score": ["accuracy"],
                              "split": "validation", "train_seconds": {"encoder": 12.0, "random init": 11.0},
                              "examples": {"train": 100}}},
              "means": {"encoder": 80.0, "random init": 70.0, "tfidf": 75.0},
              "published": {"Paper": {"a": [60.0, 50.0], "mean": 55.0}}, "published_source": "a paper"}
    table = format_table(report)
    assert "| `enc` | 80.0 ± 1.2 | 80.0 |" in table
    assert "| same architecture, random init | 70.0 ± 2.0 | 70.0 |" in table
    assert "| TF-IDF + linear model | 75.0 | 75.0 |" in table
    assert "| Paper (published, test set) | 60.0/50.0 | 55.0 |" in table
    assert "| fine-tuning seconds (encoder / random) | 12.0 / 11.0 |" in table and "| train rows | 100 |" in table
    assert "at most 10,000 training rows per task" in table and "Published rows: a paper" in table


# ----------------------------------------------------------------------------------------------
# Whole suites
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return tiny_encoder_dir


@pytest.mark.slow
def test_a_suite_of_local_tasks_runs_resumes_and_reports(tmp_path, bundled_data, encoder, monkeypatch):
    suite = load_suite(str(_suite_file(tmp_path, BUNDLED)))
    cfg = load_config("tiny", [f"output_dir={tmp_path / 'run'}", f"finetune.model={encoder}", *SMALL])
    out = run_suite(cfg, suite, data=bundled_data, overrides=[f"output_dir={tmp_path / 'run'}", *SMALL])
    assert out == tmp_path / "run" / "suite" / "bundled" and (out / "finetune" / "sentiment" / "final").is_dir()
    report = json.loads((out / "results.json").read_text())
    assert list(report["tasks"]) == ["sentiment", "paraphrase", "similarity"]
    for name, task in report["tasks"].items():
        assert set(task["scores"]) == {"encoder", "random init", "tfidf"}, name
        assert set(task["spread"]) == {"encoder", "random init"} and task["train_seconds"]["encoder"] > 0
    sim = report["tasks"]["similarity"]
    assert set(sim["metrics"]["encoder"]) >= {"pearson", "spearmanr"}  # a regression head, scored by correlation
    assert sim["scores"]["tfidf"] == pytest.approx(50 * (sim["metrics"]["tfidf"]["pearson"]
                                                         + sim["metrics"]["tfidf"]["spearmanr"]))
    summary = json.loads((out / "finetune" / "paraphrase" / "summary.json").read_text())
    per_seed = sorted(50 * (r["validation"]["f1"] + r["validation"]["accuracy"]) for r in summary["runs"])
    assert report["tasks"]["paraphrase"]["scores"]["encoder"] == pytest.approx(sum(per_seed) / 2)  # median of 2
    assert report["means"]["encoder"] == pytest.approx(
        sum(t["scores"]["encoder"] for t in report["tasks"].values()) / 3)
    assert report["published"]["Made-up"]["mean"] == pytest.approx((80 + 65 + 45) / 3)
    table = (out / "results.md").read_text()
    assert "| `" + str(encoder) + "` |" in table and "Made-up (published, test set)" in table

    # a second run reuses every finished seed and TF-IDF score: nothing is trained again
    from mlm_pretrain import suite as suite_module

    trained = []
    monkeypatch.setattr(suite_module, "tfidf_scores", lambda *a: trained.append("tfidf"))
    import mlm_pretrain.finetune as ft

    monkeypatch.setattr(ft, "train_one_seed", lambda *a, **k: trained.append("seed"))
    again = run_suite(cfg, suite, data=bundled_data, overrides=SMALL, tasks=["paraphrase"])
    assert trained == []
    assert json.loads((again / "results.json").read_text())["tasks"] == report["tasks"]  # the others: kept rows
    changed = [*SMALL, "finetune.learning_rate=1e-3"]  # other settings: the kept rows no longer count
    monkeypatch.undo()
    third = run_suite(cfg, suite, data=bundled_data, overrides=changed, tasks=["sentiment"], baselines=[])
    assert list(json.loads((third / "results.json").read_text())["tasks"]) == ["sentiment"]


CROSS = """\
name: cross
description: one training, three scored files
finetune: {learning_rate: 2.0e-3, num_epochs: 1, max_length: 64}
tasks:
  home:
    score: [accuracy]
    split: test
    local: {train_file: sentiment/train.csv, validation_file: sentiment/validation.csv, test_file: home.csv}
  away:
    score: [accuracy]
    split: test
    local: {train_file: sentiment/train.csv, validation_file: sentiment/validation.csv, test_file: away.csv}
  same:
    score: [accuracy]
    split: test
    local: {train_file: sentiment/train.csv, validation_file: sentiment/validation.csv, test_file: same.csv}
  other:
    finetune: {max_length: 32}
    score: [accuracy]
    split: test
    local: {train_file: sentiment/train.csv, validation_file: sentiment/validation.csv, test_file: away.csv}
"""


def test_tasks_that_differ_only_in_their_test_file_share_one_training(tmp_path, bundled_data, encoder, monkeypatch):
    """The reviews suite's cross-domain tasks train as an in-domain one: its seeds are trained once, and each
    is scored on the other task's file, as `mlm-pretrain evaluate` scores it."""
    import csv
    import shutil

    import mlm_pretrain.finetune as ft
    from mlm_pretrain.predict import evaluate_model

    with open(bundled_data / "sentiment" / "validation.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    shutil.copy(bundled_data / "sentiment" / "validation.csv", bundled_data / "home.csv")
    shutil.copy(bundled_data / "sentiment" / "validation.csv", bundled_data / "same.csv")  # home's rows, another file
    with open(bundled_data / "away.csv", "w", newline="", encoding="utf-8") as f:  # half the labels changed
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        names = sorted({r["label"] for r in rows})
        flip = {n: names[(i + 1) % len(names)] for i, n in enumerate(names)}
        writer.writerows({**r, "label": r["label"] if i % 2 else flip[r["label"]]} for i, r in enumerate(rows))
    trained = []
    real = ft.train_one_seed
    monkeypatch.setattr(ft, "train_one_seed", lambda cfg, *a, **k: trained.append(cfg.finetune.task_name) or
                        real(cfg, *a, **k))
    suite = load_suite(str(_suite_file(tmp_path, CROSS)))
    small = [*SMALL, "finetune.max_steps=80", "finetune.eval_steps=40", "finetune.learning_rate=3e-3"]  # learns
    cfg = load_config("tiny", [f"output_dir={tmp_path / 'run'}", f"finetune.model={encoder}", *small])
    out = run_suite(cfg, suite, data=bundled_data, overrides=small, tasks=["away"], baselines=["random"])
    # away alone: home's seeds are trained (home is the suite's first task that trains so), nothing in away/
    assert sorted(trained) == ["home", "home", "home-random-init", "home-random-init"]
    assert not (out / "finetune" / "away").joinpath("seed-1").exists()
    trained.clear()
    out = run_suite(cfg, suite, data=bundled_data, overrides=small, baselines=["random"])
    assert sorted(trained) == ["other", "other", "other-random-init", "other-random-init"]  # another window: trained
    report = json.loads((out / "results.json").read_text())
    tasks = report["tasks"]
    assert [tasks[t]["trained_as"] for t in ("home", "away", "same", "other")] == [None, "home", "home", None]
    for side in ("encoder", "random init"):
        assert tasks["same"]["scores"][side] == pytest.approx(tasks["home"]["scores"][side])  # the same rows scored
        assert tasks["same"]["spread"][side] == pytest.approx(tasks["home"]["spread"][side])
    per_seed = []
    for seed in (1, 2):
        best = out / "finetune" / "home" / f"seed-{seed}" / "best"
        per_seed.append(100 * evaluate_model(cfg, str(best), file=str(bundled_data / "away.csv"))["accuracy"])
    assert tasks["away"]["scores"]["encoder"] == pytest.approx(sum(per_seed) / 2)  # median of 2
    assert "trained as home" in (out / "results.md").read_text()


def test_a_local_only_task_without_data_names_the_fix(tmp_path, encoder):
    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"finetune.model={encoder}"])
    with pytest.raises(SuiteError, match="task 'books' of suite 'reviews' reads local files only: pass --data DIR"):
        run_suite(cfg, "reviews", tasks=["books"])


@pytest.mark.slow
def test_the_glue_suite_runs_on_the_hub_datasets(tmp_path, encoder, recipe_hub):
    """Every GLUE task of the packaged suite, read from the (test) Hub in the Hub's own layout and columns:
    CoLA by Matthews correlation, MRPC by F1 and accuracy, STS-B as a regression by its correlations."""
    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"finetune.model={encoder}", *SMALL])
    out = run_suite(cfg, "glue", overrides=[*SMALL, "finetune.seeds=[1]"], baselines=["tfidf"])
    report = json.loads((out / "results.json").read_text())
    assert list(report["tasks"]) == ["cola", "sst2", "mrpc", "stsb", "rte"]
    assert set(report["means"]) == {"encoder", "tfidf"}
    assert set(report["tasks"]["stsb"]["metrics"]["encoder"]) >= {"pearson", "spearmanr", "mse"}
    assert "matthews_correlation" in report["tasks"]["cola"]["metrics"]["encoder"]
    assert report["published"]["BERT-Tiny (2/128)"]["mean"] == pytest.approx(58.1, abs=0.06)  # the README's 58.1
    for task in ("cola", "sst2", "mrpc", "stsb", "rte"):  # each task's own files, from the (test) Hub
        assert recipe_hub.count("GET", f"/{task}/train-00000-of-00001.parquet") >= 1, task
        assert (out / "finetune" / task / "final" / "config.json").is_file()


# ----------------------------------------------------------------------------------------------
# `mlm-pretrain run --suite`: the run's encoder on a suite, in its report
RUN = ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
       "data.max_validation_examples=16", "pretrain.batch_size=8", "pretrain.max_steps=2", "pretrain.eval_steps=2",
       "pretrain.save_steps=0", "pretrain.probe_examples=0", "pretrain.mixed_precision=no", "pretrain.compile=false",
       "tokenizer.vocab_size=500", "finetune.seeds=[1]", "finetune.max_steps=2", "finetune.max_train_examples=32",
       "finetune.compare_baselines=false", "finetune.save_checkpoints=false", "finetune.mixed_precision=no",
       "finetune.max_length=64",
       "tracking.report_to=[]", "tracking.plots=false"]
SMALL_SUITE = BUNDLED.replace("finetune: {learning_rate: 2.0e-3, num_epochs: 1, max_length: 64}",
                              "finetune: {learning_rate: 2.0e-3, max_steps: 2, max_length: 64, seeds: [1], "
                              "max_train_examples: 32, batch_size: 8}")


def test_run_with_a_suite_puts_its_mean_in_the_report(tmp_path, bundled_data, capsys):
    from mlm_pretrain import cli

    suite = _suite_file(tmp_path, SMALL_SUITE)
    assert cli.main(["run", "--config", "tiny", "--suite", str(suite), "--data", str(bundled_data),
                     f"output_dir={tmp_path / 'run'}", *RUN]) == 0
    results = json.loads((tmp_path / "run" / "suite" / "bundled" / "results.json").read_text())
    assert results["model"] == str(tmp_path / "run" / "pretrain" / "final")  # the encoder this run pretrained
    assert set(results["means"]) == {"encoder", "random init", "tfidf"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Suite `bundled`" in report
    row = next(line for line in report.splitlines() if line.startswith("| suite bundled"))
    assert f"encoder {results['means']['encoder']:.1f}" in row and f"tfidf {results['means']['tfidf']:.1f}" in row


def test_run_checks_its_suite_before_training(tmp_path, capsys):
    from mlm_pretrain import cli

    code = cli.main(["run", "--config", "tiny", "--suite", "reviews", f"output_dir={tmp_path / 'run'}", *RUN])
    assert code == 2 and "task 'books' of suite 'reviews' reads local files only: pass --data DIR" in capsys.readouterr().err
    assert not (tmp_path / "run" / "tokenizer").exists()
