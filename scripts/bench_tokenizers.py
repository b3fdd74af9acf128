"""Which tokenizer kind? WordPiece, byte-level BPE and Unigram, each trained on the same corpus, each encoder
pretrained for the same number of steps of the same recipe (a step reads batch x max_seq_length tokens
whatever the tokenizer, so the same FLOPs and tokens; a tokenizer with fewer tokens per word reads more
text), then all fine-tuned on one task suite at the same rates. MLM accuracy is not comparable across
vocabularies (a piece is a different share of a word in each); the suite is.

    python scripts/bench_tokenizers.py                                  # cpu-1h's hour on Zen 5: 38,930 steps each
    python scripts/bench_tokenizers.py --reuse wordpiece=runs/cpu-1h    # a kind already pretrained (its own steps)
    python scripts/bench_tokenizers.py --max-steps 2000 --tasks sst2,mrpc --lrs 6e-4 --work-dir runs/tok-short

Every stage goes through the `mlm-pretrain` command (`tokenizer`, `prepare`, `pretrain`, `suite`), so every
stage is cached in --work-dir: a second run with the same arguments only prints the table again, and an
interrupted one resumes (pretraining from its last checkpoint, the suite from its finished task-seeds).
--parallel 2 (default) runs two jobs at once with one thread each: on 2 cores that reads more tokens per
second in all than one job on two threads, and step budgets, unlike time budgets, do not depend on it.

--data names the folder laid out as ../shared/data: pretrain_reuters21578/train.jsonl (the corpus) and the
suite's task files (the glue suite: glue_cola/, sst2/, mrpc/, glue_stsb/, glue_rte/).

Prints one table, a row per tokenizer and fine-tuning rate: the tokenizer report (tokens per word on the
held-out documents, share of the vocabulary used), the pretraining (steps, tokens, the words those tokens
hold), each task's median over the suite's seeds ± std and the suite mean, with TF-IDF + a linear model
below. Also written to <work-dir>/results.json and results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
CORPUS = "pretrain_reuters21578/train.jsonl"
KINDS = ("wordpiece", "bpe", "unigram")
#: The steps of runs/cpu-1h's hour on the 2-core Zen 5 EPYC of 2026-12-07 (docs/studies/suites.md).
CPU_1H_STEPS = 38930


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="cpu-1h", help="pretraining recipe (its fine-tuning settings too)")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--max-steps", type=int, default=CPU_1H_STEPS, help="pretraining steps of every kind")
    ap.add_argument("--data", type=Path, default=SHARED, help="folder with the corpus and the suite's files")
    ap.add_argument("--suite", default="glue", help="packaged suite or suite YAML file")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    ap.add_argument("--lrs", nargs="+", default=None,
                    help="fine-tuning rates (default: the recipe's own, cpu-1h's 6e-4; the glue suite's is 1e-4)")
    ap.add_argument("--parallel", type=int, default=2, help="jobs at once (each with 2 // parallel threads)")
    ap.add_argument("--reuse", nargs="*", default=[], metavar="KIND=RUN_DIR",
                    help="take this run's tokenizer and pretrain/final instead of pretraining the kind")
    ap.add_argument("--work-dir", default="runs/bench_tokenizers")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra key=value for pretraining")
    ap.add_argument("--finetune-overrides", nargs="*", default=[], help="extra key=value for the suite")
    return ap.parse_args(argv)


def check_inputs(args) -> tuple[dict[str, Path], set[str]]:
    """Everything that can be wrong with the arguments, before any work: the kinds' run folders and the
    kinds taken from --reuse (not pretrained here)."""
    problems, runs = [], {}
    reuse = {}
    for item in args.reuse:
        kind, _, folder = item.partition("=")
        if kind not in KINDS or not folder:
            problems.append(f"--reuse {item}: expected KIND=RUN_DIR with KIND one of {', '.join(KINDS)}")
            continue
        reuse[kind] = Path(folder)
    for kind in args.kinds:
        if kind in reuse:
            run = reuse[kind]
            report = run / "tokenizer" / "report.json"
            if not (run / "pretrain" / "final" / "config.json").is_file():
                problems.append(f"--reuse {kind}={run}: no pretrain/final/ encoder there (a finished `mlm-pretrain "
                                f"pretrain` run folder is expected)")
            elif report.is_file() and json.loads(report.read_text())["type"].lower() != kind:
                problems.append(f"--reuse {kind}={run}: its tokenizer is {json.loads(report.read_text())['type']}, "
                                f"not {kind}")
            runs[kind] = run
        else:
            runs[kind] = Path(args.work_dir) / kind
    if any(kind not in reuse for kind in args.kinds) and not (args.data / CORPUS).is_file():
        problems.append(f"{args.data / CORPUS} not found: pretraining reads the Reuters corpus from "
                        f"../shared/data; pass --data FOLDER laid out the same way (or --reuse every kind)")
    if args.parallel < 1:
        problems.append("--parallel must be >= 1")
    if problems:
        sys.exit("\n".join(problems))
    return runs, set(reuse) & set(args.kinds)


def _cli(*argv, log: Path) -> None:
    """One `mlm-pretrain` command in a process of its own, its output appended to ``log``. It runs in this
    process's folder, so paths mean what they mean here and reach the commands as the user typed them: the
    suite reuses a fine-tuning seed by its settings, the encoder's and the task files' paths among them (a
    suite already run by hand with the same arguments is not run again)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ mlm-pretrain {' '.join(map(str, argv))}\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", "mlm_pretrain", *map(str, argv)], stdout=f, stderr=subprocess.STDOUT,
                           env=env)
    if r.returncode:
        raise RuntimeError(f"`mlm-pretrain {argv[0]}` failed (exit {r.returncode}); see {log}")


def pretrain_kind(args, kind: str, run: Path, threads: int) -> None:
    over = [f"output_dir={run}", f"corpus.files=[{args.data / CORPUS}]", f"tokenizer.type={kind}",
            "pretrain.time_budget_minutes=null", f"pretrain.max_steps={args.max_steps}",
            f"pretrain.threads={threads}", "data.num_proc=1", *args.overrides]
    run.mkdir(parents=True, exist_ok=True)
    for stage in ("tokenizer", "prepare", "pretrain"):
        _cli(stage, "--config", args.recipe, *over, log=run.parent / f"{kind}.log")


def suite_dir(args, kind: str, lr: str) -> Path:
    return Path(args.work_dir) / f"suite-{kind}-lr{lr}"


def run_suite_for(args, kind: str, run: Path, lr: str, threads: int, baselines: str) -> None:
    tasks = ["--tasks", args.tasks] if args.tasks else []
    _cli("suite", "--config", args.recipe, "--suite", args.suite, "--data", args.data, *tasks,
         "--baselines", baselines, f"output_dir={suite_dir(args, kind, lr)}",
         f"finetune.model={run / 'pretrain' / 'final'}",
         f"finetune.learning_rate={lr}", f"finetune.threads={threads}", *args.finetune_overrides,
         log=Path(args.work_dir) / f"suite-{kind}-lr{lr}.log")


def _results(args, kind: str, lr: str) -> dict:
    found = sorted(suite_dir(args, kind, lr).glob("suite/*/results.json"))
    if not found:
        raise RuntimeError(f"no results.json under {suite_dir(args, kind, lr)}")
    return json.loads(found[0].read_text())


def current_report(run: Path) -> dict:
    """The run's tokenizer report, computed again when it is not about this tokenizer, corpus and reader
    (``report_given``'s own check: a reused run's report may be older; only ``tokenizer/report.json`` is
    written, never the tokenizer)."""
    from mlm_pretrain.config import load_config
    from mlm_pretrain.tokenizer import load_tokenizer, report_given, tokenizer_hash

    cfg = load_config(str(run / "config.yaml"), [f"output_dir={run}"])
    report_given(cfg, load_tokenizer(run / "tokenizer"), tokenizer_hash(run / "tokenizer"))
    return json.loads((run / "tokenizer" / "report.json").read_text())


def pretraining_facts(run: Path) -> dict:
    report = current_report(run)
    metrics = json.loads((run / "pretrain" / "final" / "metrics.json").read_text())
    tokens = metrics.get("train/tokens")
    return {"type": report["type"], "tokens_per_word": report["tokens_per_word"],
            "tokens_per_character": report["tokens_per_character"], "unknown_share": report["unknown_share"],
            "vocabulary_used_share": report["vocabulary_used_share"], "steps": metrics.get("train/steps"),
            "tokens": tokens, "words": tokens / report["tokens_per_word"] if tokens else None,
            "mlm_accuracy": metrics.get("eval/mlm_accuracy"), "mlm_loss": metrics.get("eval/mlm_loss"),
            "unigram_loss": metrics.get("eval/unigram_loss"), "seconds": metrics.get("train/seconds")}


def table(args, runs: dict[str, Path]) -> tuple[str, dict]:
    rows, tfidf, tasks = [], None, None
    for kind in args.kinds:
        facts = pretraining_facts(runs[kind])
        for lr in args.lrs:
            res = _results(args, kind, lr)
            tasks = tasks or res["tasks"]
            if tfidf is None and "tfidf" in res["means"]:
                tfidf = {t: res["tasks"][t]["scores"]["tfidf"] for t in res["tasks"]} | {"mean": res["means"]["tfidf"]}
            rows.append({"kind": kind, "lr": lr, "run": str(runs[kind]), **facts,
                         "scores": {t: res["tasks"][t]["scores"]["encoder"] for t in res["tasks"]},
                         "spread": {t: res["tasks"][t]["spread"]["encoder"] for t in res["tasks"]},
                         "mean": res["means"]["encoder"], "settings": res["settings"],
                         "train_seconds": sum(res["tasks"][t]["train_seconds"]["encoder"] for t in res["tasks"])})
    names = list(tasks)
    lines = ["| tokenizer | tokens / word | vocabulary used | steps | tokens (M) | words read (M) | val MLM acc. "
             "(not comparable) | fine-tuning lr | " + " | ".join(names) + " | mean | fine-tuning s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(names) + 2)]
    for r in rows:
        lines.append(f"| {r['type']} | {r['tokens_per_word']:.3f} | {100 * r['vocabulary_used_share']:.1f}% | "
                     f"{r['steps']:,} | {r['tokens'] / 1e6:.1f} | {r['words'] / 1e6:.1f} | "
                     f"{100 * r['mlm_accuracy']:.1f}% | {r['lr']} | "
                     + " | ".join(f"{r['scores'][t]:.1f} ± {r['spread'][t]:.1f}" for t in names)
                     + f" | **{r['mean']:.1f}** | {r['train_seconds']:.0f} |")
    if tfidf:
        lines.append("| TF-IDF + linear model | | | | | | | | " + " | ".join(f"{tfidf[t]:.1f}" for t in names)
                     + f" | {tfidf['mean']:.1f} | |")
    return "\n".join(lines), {"rows": rows, "tfidf": tfidf, "tasks": names, "suite": args.suite}


def main(argv=None) -> None:
    args = parse_args(argv)
    runs, reused = check_inputs(args)
    if not args.lrs:
        from mlm_pretrain.config import load_config

        mantissa, exponent = f"{load_config(args.recipe).finetune.learning_rate:e}".split("e")
        args.lrs = [f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"]  # 6e-4, as written in the table
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    threads = "auto" if args.parallel == 1 else max(1, len(os.sched_getaffinity(0)) // args.parallel)
    with ThreadPoolExecutor(args.parallel) as pool:  # pretraining, two kinds at once
        for f in [pool.submit(pretrain_kind, args, k, runs[k], threads) for k in args.kinds if k not in reused]:
            f.result()
    jobs = [(k, lr) for k in args.kinds for lr in args.lrs]
    with ThreadPoolExecutor(args.parallel) as pool:  # the suites; TF-IDF once, beside the first
        for f in [pool.submit(run_suite_for, args, k, runs[k], lr, threads, "tfidf" if i == 0 else "none")
                  for i, (k, lr) in enumerate(jobs)]:
            f.result()
    text, results = table(args, runs)
    print(text)
    (work / "results.md").write_text(text + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
