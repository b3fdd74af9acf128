"""The benchmark and sweep scripts under scripts/ that a README section tells users to run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlm_pretrain.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SHRINK = ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
          "tokenizer.vocab_size=2000", "pretrain.batch_size=8", "pretrain.eval_steps=0", "pretrain.save_steps=0",
          "tracking.report_to=[]", "tracking.plots=false"]


@pytest.mark.slow
def test_sweep_pretrain_trains_variants_side_by_side_and_compares_them_on_the_base_masks(tmp_path):
    work = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "scripts" / "sweep_pretrain.py"), "--recipe", "tiny", "--minutes", "0.1",
           "--work-dir", str(work), "--overrides", *SHRINK,
           "--variant", "base", "--variant", "m40", "masking.probability=0.4", "pretrain.learning_rate=2e-3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    assert results["threads"] == max(1, (os.cpu_count() or 1) // 2)
    rows = {v["variant"]: v for v in results["variants"]}
    assert rows["m40"]["overrides"] == ["masking.probability=0.4", "pretrain.learning_rate=2e-3"]
    for name, row in rows.items():
        own = json.loads((work / name / "pretrain" / "final" / "metrics.json").read_text())
        assert row["steps"] == own["train/steps"] > 0
        assert 0 <= row["eval/mlm_accuracy"] <= 1
        assert (work / name / "pretrain" / "final" / "config.yaml").read_text().count("time_budget_minutes: 0.1") == 1
    # the recipe-as-is variant is evaluated on its own masks; the 40% one on the base's 15% masks
    base_own = json.loads((work / "base" / "pretrain" / "final" / "metrics.json").read_text())
    assert rows["base"]["eval/mlm_loss"] == pytest.approx(base_own["eval/mlm_loss"], rel=1e-5)
    m40_own = json.loads((work / "m40" / "pretrain" / "final" / "metrics.json").read_text())
    assert rows["m40"]["eval/mlm_loss"] != pytest.approx(m40_own["eval/mlm_loss"], rel=1e-4)
    assert "| base | (recipe) |" in r.stdout and "| m40 | masking.probability=0.4 pretrain.learning_rate=2e-3 |" in r.stdout


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--variant", "v", "tokenizer.vocab_size=8000"], "may not change the shared tokenizer"),
    (["--variant", "v", "output_dir=elsewhere"], "may not change the shared tokenizer or the output directory"),
    (["--variant", "v", "batch_size"], "overrides are key=value"),
    (["--variant", "a", "--variant", "a"], "unique"),
    (["--variant", "pretrain.batch_size=8"], "the first word is the variant's name"),
])
def test_sweep_pretrain_rejects_bad_variants_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _script("sweep_pretrain").parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_sweep_pretrain_budget_is_steps_or_minutes():
    sweep = _script("sweep_pretrain")
    steps = sweep.parse_args(["--steps", "400", "--variant", "a"])
    assert sweep.budget(steps) == ["pretrain.max_steps=400", "pretrain.time_budget_minutes=null"]
    assert sweep.budget(sweep.parse_args(["--minutes", "3", "--variant", "a"])) == ["pretrain.time_budget_minutes=3.0"]


def test_sweep_pretrain_parses_variants():
    args = _script("sweep_pretrain").parse_args(["--variant", "base", "--variant", "lr", "pretrain.learning_rate=1e-3"])
    assert args.variant == [["base"], ["lr", "pretrain.learning_rate=1e-3"]]
    assert (args.recipe, args.minutes, args.parallel) == ("cpu-1h", 12.0, 2)


# ----------------------------------------------------------------------------------------------
# The benchmark scripts (docs/performance.md and the studies), each on tiny inputs from data/
# (never ../shared/data): they run to the end and their tables hold consistent numbers.
# ----------------------------------------------------------------------------------------------
def _run_script(name: str, *argv, tmp_path: Path, timeout: int = 600) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, argv)], capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _rows(stdout: str) -> list[list[str]]:
    """The body rows of the markdown tables a script printed, as lists of cells."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("|-"):
            rows.pop()  # the header above the separator
        elif line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _num(cell: str) -> float:
    return float(cell.split("±")[0].replace(",", "").rstrip("x%").strip())


def _glue_folder(root: Path) -> Path:
    """A folder laid out as ../shared/data (corpus, sst2/, mrpc/ in the GLUE formats), from data/."""
    import csv
    import shutil

    d = root / "glue"
    for sub in ("sst2", "mrpc", "pretrain_reuters21578"):
        (d / sub).mkdir(parents=True)
    shutil.copy(ROOT / "data" / "corpus_running.jsonl", d / "pretrain_reuters21578" / "train.jsonl")
    for split, sst2_name, mrpc_name in (("train", "train.tsv", "glue_train.tsv"),
                                        ("validation", "dev.tsv", "glue_dev.tsv")):
        with open(ROOT / "data" / "sentiment" / f"{split}.csv", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["label"] != "neutral"]
        (d / "sst2" / sst2_name).write_text("sentence\tlabel\n" + "".join(
            f"{r['text']}\t{int(r['label'] == 'positive')}\n" for r in rows), encoding="utf-8")
        with open(ROOT / "data" / "paraphrase" / f"{split}.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        (d / "mrpc" / mrpc_name).write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
            f"{r['label']}\t{2 * i}\t{2 * i + 1}\t{r['sentence1']}\t{r['sentence2']}\n" for i, r in enumerate(rows)),
            encoding="utf-8")
    return d


@pytest.mark.slow
def test_bench_tokenizer_measures_our_stage_beside_raw_tokenizers_on_the_same_text(tmp_path):
    out = _run_script("bench_tokenizer", "--corpus", ROOT / "data" / "corpus_running.jsonl", "--vocab-size", 1000,
                      "--slow-sample", 20, tmp_path=tmp_path)
    rows = _rows(out)
    assert len(rows) == 5, out
    assert [r[0].split(",")[0].split(" (")[0] for r in rows[:3]] == [
        "train_tokenizer", "train_wordpiece", "tokenizers trainer alone"]  # ours, then the one-pass baseline
    mb = [_num(r[1]) for r in rows]
    assert all(_num(r[2]) > 0 for r in rows)  # seconds
    assert mb[0] == mb[1] == mb[2] == mb[3] > mb[4] > 0  # the same text for all but the slow tokenizer's sample


@pytest.mark.slow
def test_bench_pretrain_runs_our_loop_and_the_trainer_on_the_same_data(tmp_path):
    res = tmp_path / "bench.json"
    out = _run_script("bench_pretrain", "--preset", "tiny", "--seq", 32, "--batch", 4, "--steps", 2, "--warmup", 1,
                      "--vocab-size", 1000, "--corpus", ROOT / "data" / "corpus.txt", "--precisions", "fp32",
                      "--architectures", "modernbert,electra", "--threads", 1, "--work-dir", tmp_path / "work",
                      "--peak-seconds", 0.2, "--peak-size", 1024, "--json", res, tmp_path=tmp_path)
    results = json.loads(res.read_text())["results"]
    # ELECTRA has no stock Trainer path: our loop only. (bert against the Trainer: the GPU check's dry run,
    # tests/test_gpu_check.py, runs this script with its default architecture, bert.)
    assert set(results) == {"modernbert/ours/fp32", "modernbert/trainer/fp32", "electra/ours/fp32"}
    for r in results.values():
        assert r["tokens_per_s"] > 0 and r["flops_per_s"] > 0 and r["final_loss"] > 0
    rows = {(r[0], r[1]): r for r in _rows(out)}
    for arch in ("modernbert",):
        assert rows[(arch, "HF Trainer")][4] == "1.00x"  # the baseline against itself
        ratio = results[f"{arch}/ours/fp32"]["tokens_per_s"] / results[f"{arch}/trainer/fp32"]["tokens_per_s"]
        assert rows[(arch, "mlm_pretrain")][4] == f"{ratio:.2f}x"
    assert rows[("electra", "mlm_pretrain")][4] == "-"
    saved = json.loads(res.read_text())
    assert (saved["args"]["peak_seconds"], saved["args"]["peak_size"]) == (0.2, 1024)  # a quick peak for smoke runs
    assert saved["peaks"]["fp32"] > 0 and saved["peaks"]["bf16"] > 0
    assert saved["device"].startswith("CPU ") and saved["auto"][0] in ("no", "bf16")  # which CPU, what auto picks
    assert f"device: {saved['device']}; mixed_precision=auto picks" in out


@pytest.mark.slow
def test_bench_pretrain_sets_the_allocator_per_side_and_counts_page_faults(tmp_path):
    from mlm_pretrain import hardware

    res = tmp_path / "bench.json"
    out = _run_script("bench_pretrain", "--preset", "tiny", "--seq", 32, "--batch", 4, "--steps", 2, "--warmup", 1,
                      "--vocab-size", 1000, "--corpus", ROOT / "data" / "corpus.txt", "--precisions", "fp32",
                      "--sides", "ours,system-malloc,trainer,trainer-reuse", "--threads", 1,
                      "--work-dir", tmp_path / "work", "--peak-seconds", 0.2, "--peak-size", 256, "--json", res,
                      tmp_path=tmp_path)
    results = json.loads(res.read_text())["results"]
    reuse = "reuse" if hardware._glibc() is not None else "system"
    assert {k: r["malloc"] for k, r in results.items()} == {
        "bert/ours/fp32": reuse, "bert/system-malloc/fp32": "system", "bert/trainer/fp32": "system",
        "bert/trainer-reuse/fp32": "reuse"}  # the Trainer's by glibc's environment variables
    rows = {r[1]: r for r in _rows(out)}
    assert set(rows) == {"mlm_pretrain", "mlm_pretrain, malloc=system", "HF Trainer", "HF Trainer, freed memory kept"}
    assert "page faults per step" in out
    for name, r in rows.items():  # columns: ..., page faults per step, loss at end, building batches
        key = {"mlm_pretrain": "ours", "mlm_pretrain, malloc=system": "system-malloc", "HF Trainer": "trainer",
               "HF Trainer, freed memory kept": "trainer-reuse"}[name]
        faults = results[f"bert/{key}/fp32"]["page_faults_per_step"]
        assert faults >= 0 and r[-3] == f"{faults:,.0f}"
        wait = results[f"bert/{key}/fp32"].get("data_wait")  # our loop logs it; the Trainer has no such log
        assert r[-1] == "-" if key.startswith("trainer") else (0 <= wait < 1 and r[-1] == f"{100 * wait:.1f}%")
    tuned, stock = (results[f"bert/{side}/fp32"]["tokens_per_s"] for side in ("trainer-reuse", "trainer"))
    assert rows["HF Trainer, freed memory kept"][4] == f"{tuned / stock:.2f}x"  # against the stock Trainer


@pytest.mark.slow
def test_bench_pretrain_profiles_our_steps_in_runs_of_their_own(tmp_path):
    import yaml

    res = tmp_path / "bench.json"
    out = _run_script("bench_pretrain", "--preset", "tiny", "--seq", 32, "--batch", 4, "--steps", 2, "--warmup", 1,
                      "--vocab-size", 1000, "--corpus", ROOT / "data" / "corpus.txt", "--precisions", "fp32",
                      "--sides", "ours", "--dropout", 0, "--profile", 6, "--threads", 1, "--hidden-size", 64,
                      "--work-dir", tmp_path / "work",
                      "--peak-seconds", 0.2, "--peak-size", 256, "--json", res, tmp_path=tmp_path)
    assert "model tiny at hidden size 64," in out and "dropout 0.0, device cpu" in out
    head, _, profile = out.partition("profile: bert, ours, fp32, 2 steps after 1")
    assert profile and "Self CPU" in profile and "Self CPU time total" in profile
    table = [line for line in profile.splitlines() if line.strip().startswith(("aten::", "ProfilerStep", "Optimizer",
                                                                                "LinearCrossEntropy", "enumerate"))]
    assert 1 <= len(table) <= 6 and any("aten::" in line for line in table)  # the top operators by self time
    assert "profile" not in json.loads(res.read_text())["results"]["bert/ours/fp32"]  # the timed run had none
    cfg = yaml.safe_load((tmp_path / "work" / "bert-ours-fp32" / "pretrain" / "config.yaml").read_text())
    assert cfg["model"]["hidden_dropout_prob"] == 0.0 and cfg["model"]["attention_probs_dropout_prob"] == 0.0
    assert cfg["model"]["hidden_size"] == 64


@pytest.mark.slow
def test_bench_masking_times_both_ways_of_masking_a_batch_and_checks_they_agree(tmp_path, monkeypatch, capsys):
    argv = ["--config", "tiny", "--set", "masking.whole_word=true", "--batches", 6, "--rounds", 2, "--threads", 1,
            "--work-dir", tmp_path / "work"]
    out = _run_script("bench_masking", *argv, tmp_path=tmp_path)
    rows = _rows(out)
    assert [r[0] for r in rows] == ["row by row (each row masked alone)", "batched, per-row draws (collate_masked)"]
    assert all(_num(r[1]) > 0 for r in rows) and rows[0][2] == "1.00x"
    assert "6 batches" in out and "whole-word masking True" in out and "identical batches: yes" in out

    # the agreement check can fail: a collate_masked that masks differently is caught (same data, in-process)
    import mlm_pretrain.batches as batches

    bench = _script("bench_masking")
    real = batches.collate_masked

    def shifted(collator, rows, seeds):
        return real(collator, rows, [s + 1 for s in seeds])

    monkeypatch.setattr(batches, "collate_masked", shifted)
    assert bench.main([str(a) for a in argv]) == 1
    assert "identical batches: NO" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_prepare_gives_the_same_examples_whatever_num_proc(tmp_path):
    out = _run_script("bench_prepare", "--corpus", ROOT / "data" / "corpus_running.jsonl", "--vocab-size", 1000,
                      "--num-proc", "1,2", "--repeat", 1, tmp_path=tmp_path)
    rows = {r[0]: r for r in _rows(out)}
    assert set(rows) == {"plain tokenizer(texts), 1 thread", "plain tokenizer(texts), all cores",
                         "prepare num_proc=1", "prepare num_proc=2"}
    assert all(_num(r[5]) > 0 for r in rows.values())  # tokens
    # both plain paths tokenize the same text; both prepare runs build the same examples
    assert rows["plain tokenizer(texts), 1 thread"][5] == rows["plain tokenizer(texts), all cores"][5]
    assert rows["prepare num_proc=1"][5:7] == rows["prepare num_proc=2"][5:7]
    assert _num(rows["prepare num_proc=1"][6]) > 0


@pytest.mark.slow
def test_bench_stream_memory_reads_a_corpus_twice_as_large(tmp_path):
    out = _run_script("bench_stream_memory", "--corpus", ROOT / "data" / "corpus_running.jsonl",
                      "--vocab-size", 1000, "--factors", "1,2", tmp_path=tmp_path)
    rows = {r[0]: r for r in _rows(out)}
    assert set(rows) == {"1x", "2x"}
    n1, n2 = _num(rows["1x"][2]), _num(rows["2x"][2])
    assert n1 > 0 and 1.5 * n1 <= n2 <= 2.5 * n1  # twice the documents, about twice the examples
    assert "peak RSS x" in out


@pytest.mark.slow
def test_bench_finetune_compares_our_loop_the_trainer_and_tfidf_on_both_tasks(tmp_path):
    from mlm_pretrain.config import load_config
    from mlm_pretrain.tokenizer import train_tokenizer

    tok = train_tokenizer(load_config("tiny-bert", [f"output_dir={tmp_path / 'tok'}", "tokenizer.vocab_size=1000"]))
    out = _run_script("bench_finetune", "--preset", "tiny", "--tokenizer", tok, "--data", _glue_folder(tmp_path),
                      "--max-train", 64, "--max-eval", 40, "--max-length", 48, "--batch-size", 16,
                      "--output-dir", tmp_path / "out", tmp_path=tmp_path)
    rows = [r for r in _rows(out) if r[0] in ("sst2", "mrpc")]
    assert [(r[0], r[1].split(" (")[0]) for r in rows] == [
        (t, s) for t in ("sst2", "mrpc") for s in ("mlm_pretrain finetune", "HF Trainer", "TF-IDF 1-2gram + LR")]
    for r in rows:
        assert r[2] == "64" and 0 <= _num(r[3]) <= 100 and 0 <= _num(r[4]) <= 100


@pytest.mark.slow
def test_bench_quality_pretrains_then_fine_tunes_both_inits_and_reports_the_gain(tmp_path):
    work = tmp_path / "quality"
    out = _run_script("bench_quality", "--recipe", "tiny", "--budget-minutes", 0.05, "--seeds", 1, 2,
                      "--max-train", 64, "--epochs", 1, "--data", _glue_folder(tmp_path), "--work-dir", work,
                      "--overrides", *[o for o in SHRINK if "max_seq_length" not in o and "max_position" not in o],
                      "data.validation_fraction=0.05", tmp_path=tmp_path)  # the MRPC recipe reads 128 tokens
    rows = [r for r in _rows(out) if r[0] in ("sst2", "mrpc")]
    assert [(r[0], r[1]) for r in rows] == [("sst2", "accuracy"), ("sst2", "f1"), ("mrpc", "accuracy"), ("mrpc", "f1")]
    for task, metric, pre, rand, gain, beyond, tfidf in rows:
        summary = {init: json.loads((work / f"finetune-{init}" / "finetune" / task / "summary.json").read_text())
                   for init in ("pretrained", "random")}
        med = {init: 100 * s["validation"][metric]["median"] for init, s in summary.items()}
        assert _num(pre) == pytest.approx(med["pretrained"], abs=0.051)
        assert _num(rand) == pytest.approx(med["random"], abs=0.051)
        assert _num(gain) == pytest.approx(med["pretrained"] - med["random"], abs=0.051)
        spread = 100 * max(s["validation"][metric]["std"] for s in summary.values())
        assert beyond == ("yes" if med["pretrained"] - med["random"] > spread else "no")
        assert 0 <= _num(tfidf) <= 100
    # both inits start from this run's encoder (weights or architecture) and read the --data files
    n_dev = len((tmp_path / "glue" / "mrpc" / "glue_dev.tsv").read_text().splitlines()) - 1
    for init in ("pretrained", "random"):
        summary = json.loads((work / f"finetune-{init}" / "finetune" / "mrpc" / "summary.json").read_text())
        assert (summary["init"], summary["model"]) == (init, str(work / "pretrain-run" / "pretrain" / "final"))
        assert summary["examples"] == {"train": 64, "validation": n_dev}
    # TF-IDF + LR is bench_finetune's baseline (pair features for MRPC), fit on the fine-tuning's own rows
    results = json.loads((work / "results.json").read_text())
    assert [(r["task"], r["metric"]) for r in results["rows"]] == [(r[0], r[1]) for r in rows]
    bench_finetune = _script("bench_finetune")
    for task in ("sst2", "mrpc"):
        used = load_config(str(work / "finetune-random" / "finetune" / task / "config.yaml"))
        ref = bench_finetune.run_tfidf(used)
        assert ref["train"] == 64
        # the pretraining recipe's fine-tuning rate (tiny: 3e-4), not the task recipe's (1e-4)
        rate = used.finetune.learning_rate
        assert rate == load_config("tiny").finetune.learning_rate != load_config(task).finetune.learning_rate
        for r in (r for r in results["rows"] if r["task"] == task):
            assert r["tfidf"] == pytest.approx(ref[r["metric"]]) and r["tfidf_train_rows"] == 64
            printed = next(x for x in rows if x[:2] == [task, r["metric"]])[6]
            assert _num(printed) == pytest.approx(100 * ref[r["metric"]], abs=0.051)


def test_bench_quality_names_the_missing_data_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_quality.py"), "--data", str(tmp_path / "nope"),
                        "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and "not found" in r.stderr and "--data" in r.stderr
    assert "nope/pretrain_reuters21578/train.jsonl" in r.stderr and "nope/mrpc/glue_dev.tsv" in r.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_bench_threads_measures_a_policy_alone_beside_a_rival_and_after(tmp_path):
    res = tmp_path / "threads.json"
    out = _run_script("bench_threads", "--policies", "auto", "--preset", "tiny", "--seq", 32, "--batch", 4,
                      "--vocab-size", 1000, "--alone", 3.5, "--busy", 4, "--after", 3.5, "--json", res, tmp_path=tmp_path)
    saved = json.loads(res.read_text())
    assert saved["cpu"] and saved["rival_alone_gflops"] > 0
    (row,) = saved["rows"]
    assert row["policy"] == "auto" and row["steps"] > 3 and row["alone"] > 0 and row["busy"] > 0
    assert row["rival_gflops"] > 0 and all(1 <= t <= os.cpu_count() for t in row["threads_busy"])
    (table_row,) = [r for r in _rows(out) if r[0] == "auto"]
    assert table_row[1] == f"{row['alone']:,.0f}"



@pytest.mark.slow
def test_bench_long_documents_times_truncation_and_windows_on_the_same_rows(tmp_path):
    from mlm_pretrain.tokenizer import train_tokenizer

    tok = train_tokenizer(load_config("tiny-bert", [f"output_dir={tmp_path / 'tok'}", "tokenizer.vocab_size=1000"]))
    words = (ROOT / "data" / "corpus.txt").read_text().split()
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": " ".join(words[i * 50:i * 50 + 20 + i % 60]), "label": i % 2}) + "\n"
                            for i in range(80)))
    out = _run_script("bench_long_documents", "--config", "tiny", "--tokenizer", tok, "--train", docs, "--rows", 40,
                      "--modes", "truncate:32,windows:32", "--batch-size", 8, "--output-dir", tmp_path / "out",
                      "model.preset=tiny", "finetune.mixed_precision=no", tmp_path=tmp_path)
    rows = [r for r in _rows(out) if r[0].startswith(("truncate:", "windows:"))]  # (finetune prints its own)
    assert [r[0] for r in rows] == ["truncate:32", "windows:32"]
    truncate, windows = rows
    assert _num(truncate[1]) == _num(windows[1]) > 0  # the same rows are longer than 32 tokens either way
    assert _num(truncate[2]) == 1.0 and _num(windows[2]) > 1.5
    assert _num(truncate[5]) == 1.0 and _num(windows[3]) > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["rows"] for r in saved] == [40, 40]


TOKENIZER_SUITE = """\
name: bundled
description: the bundled sentiment task
finetune: {learning_rate: 1.0e-3, max_steps: 4, eval_steps: 2, max_length: 64, seeds: [1, 2], max_train_examples: 64,
           batch_size: 8, save_checkpoints: false, mixed_precision: "no"}
tasks:
  sentiment:
    score: [accuracy]
    local: {train_file: sentiment/train.csv, validation_file: sentiment/validation.csv}
"""


@pytest.mark.slow
def test_bench_tokenizers_pretrains_each_kind_for_the_same_steps_and_compares_them_on_a_suite(tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ROOT / "data", data)
    (data / "pretrain_reuters21578").mkdir()
    shutil.copy(ROOT / "data" / "corpus_running.jsonl", data / "pretrain_reuters21578" / "train.jsonl")
    suite = tmp_path / "suite.yaml"
    suite.write_text(TOKENIZER_SUITE)
    work = tmp_path / "work"
    argv = ["--recipe", "tiny", "--max-steps", 3, "--data", data, "--suite", suite, "--lrs", "1e-3", "3e-3",
            "--work-dir", work, "--overrides", *SHRINK, "pretrain.probe_examples=0", "pretrain.mixed_precision=no"]
    out = _run_script("bench_tokenizers", *argv, tmp_path=tmp_path)
    rows = _rows(out)
    assert [(r[0], r[7]) for r in rows] == [("WordPiece", "1e-3"), ("WordPiece", "3e-3"), ("BPE", "1e-3"),
                                            ("BPE", "3e-3"), ("Unigram", "1e-3"), ("Unigram", "3e-3"),
                                            ("TF-IDF + linear model", "")]
    results = json.loads((work / "results.json").read_text())
    assert results["tasks"] == ["sentiment"] and 0 <= results["tfidf"]["sentiment"] <= 100
    for r, row in zip(results["rows"], rows):
        run = work / r["kind"]
        # each kind pretrained its own tokenizer for the same steps of the same recipe
        assert r["steps"] == 3 and row[3] == "3" and r["run"] == str(run)
        assert json.loads((run / "tokenizer" / "report.json").read_text())["type"] == row[0]
        assert load_config(str(run / "pretrain" / "config.yaml")).tokenizer.type == r["kind"]
        assert _num(row[1]) == pytest.approx(r["tokens_per_word"], abs=0.0005)
        assert r["words"] == pytest.approx(r["tokens"] / r["tokens_per_word"])
        # its row is its suite's median at its rate, fine-tuned from its encoder
        res = json.loads((work / f"suite-{r['kind']}-lr{r['lr']}" / "suite" / "bundled" / "results.json").read_text())
        assert res["model"] == str(run / "pretrain" / "final")
        assert res["settings"]["learning_rate"] == float(r["lr"]) and res["settings"]["seeds"] == [1, 2]
        assert _num(row[8]) == pytest.approx(res["tasks"]["sentiment"]["scores"]["encoder"], abs=0.051)
        assert _num(row[9].strip("*")) == pytest.approx(res["means"]["encoder"], abs=0.051)
    # a second run reuses every stage: the same table, nothing trained again
    stamp = (work / "bpe" / "pretrain" / "final" / "model.safetensors").stat().st_mtime_ns
    assert _rows(_run_script("bench_tokenizers", *argv, tmp_path=tmp_path)) == rows
    assert (work / "bpe" / "pretrain" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    # --reuse takes a finished run as it is (here the WordPiece run, under another work folder); without
    # --lrs the suite runs at the recipe's own fine-tuning rate (tiny: 3e-4)
    assert load_config("tiny").finetune.learning_rate == 3e-4
    report = work / "wordpiece" / "tokenizer" / "report.json"  # written by an older reader: computed again
    report.write_text(json.dumps({**json.loads(report.read_text()), "tokens_per_word": 9.99, "key": {}}))
    lrs = argv.index("--lrs")
    out = _run_script("bench_tokenizers", *argv[:lrs], *argv[lrs + 3:-len(SHRINK) - 3], "--kinds", "wordpiece",
                      "--reuse", f"wordpiece={work / 'wordpiece'}", "--work-dir", tmp_path / "other", tmp_path=tmp_path)
    again = _rows(out)[0]
    assert again[:7] == rows[0][:7] and again[7] == "3e-4" and not (tmp_path / "other" / "wordpiece").exists()
    summary = json.loads((tmp_path / "other" / "suite-wordpiece-lr3e-4" / "suite" / "bundled" / "results.json").read_text())
    assert summary["model"] == str(work / "wordpiece" / "pretrain" / "final")


@pytest.mark.parametrize("reuse, message", [(["bpe=nowhere"], "no pretrain/final/ encoder there"),
                                            (["wp=x"], "expected KIND=RUN_DIR")])
def test_bench_tokenizers_names_bad_arguments_before_any_work(tmp_path, reuse, message):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tokenizers.py"), "--reuse", *reuse,
                        "--data", str(tmp_path / "nope"), "--work-dir", str(tmp_path / "w")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and message in r.stderr and "nope/pretrain_reuters21578/train.jsonl not found" in r.stderr
    assert not (tmp_path / "w").exists()
