"""Choose pretraining settings by measurement: train several variants of a recipe for the same
wall-clock budget, side by side, and compare them on the same validation masks.

    python scripts/sweep_pretrain.py --minutes 12 \\
        --variant b64 pretrain.batch_size=64 --variant b16 pretrain.batch_size=16
    python scripts/sweep_pretrain.py --recipe tiny --minutes 1 --variant lr1e-3 pretrain.learning_rate=1e-3 \\
        --variant lr3e-3 pretrain.learning_rate=3e-3

The tokenizer and the data are built once (recipe + --overrides) and shared; each variant then runs
``mlm-pretrain pretrain`` as its own process with ``pretrain.time_budget_minutes=--minutes`` (its
learning-rate schedule decays over the budget, so a short run is a complete run), ``--parallel`` at a
time with the cores split between them (two 1-thread runs on 2 cores give the same total tokens/s as
one 2-thread run, and both see the same machine load). A variant may change any setting except the
tokenizer: data settings get their own cached data. At the end every final encoder is evaluated on the
*base* config's fixed-mask validation set, so variants that mask differently (``masking.probability``)
or train on other examples (``data.objective``) are still compared on the same masked tokens.
Prints one table and writes ``results.json`` in --work-dir.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlm_pretrain.config import load_config  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="cpu-1h", help="the recipe every variant starts from")
    ap.add_argument("--minutes", type=float, default=12.0, help="wall-clock pretraining budget of each variant")
    ap.add_argument("--steps", type=int, default=None,
                    help="an optimizer-step budget instead of --minutes (the same tokens for every variant: fair "
                         "on a machine that other jobs share, where a wall-clock budget is not)")
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                    help="a variant: a name, then the overrides that make it (none: the recipe as is)")
    ap.add_argument("--overrides", nargs="*", default=[], help="key=value shared by every variant")
    ap.add_argument("--parallel", type=int, default=2, help="variants trained at the same time")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per variant (default: the cores divided by --parallel)")
    ap.add_argument("--work-dir", default="runs/sweep")
    args = ap.parse_args(argv)
    names = [v[0] for v in args.variant]
    if len(set(names)) != len(names):
        ap.error(f"variant names must be unique, got {names}")
    for name, *over in args.variant:
        if "=" in name:
            ap.error(f"--variant {name!r}: the first word is the variant's name, then its key=value overrides")
        bad = [o for o in over if "=" not in o or o.split("=", 1)[0].startswith(("tokenizer.", "output_dir"))]
        if bad:
            ap.error(f"--variant {name}: {bad} not allowed: overrides are key=value and may not change the "
                     "shared tokenizer or the output directory")
    return args


def budget(args) -> list[str]:
    """The overrides that set each variant's budget: steps, or wall-clock minutes."""
    if args.steps:
        return [f"pretrain.max_steps={args.steps}", "pretrain.time_budget_minutes=null"]
    return [f"pretrain.time_budget_minutes={args.minutes}"]


def launch(args, name: str, over: list[str], shared: list[str], threads: int) -> subprocess.Popen:
    out = Path(args.work_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlm_pretrain", "pretrain", "--config", args.recipe, *shared,
           f"output_dir={out}", *budget(args), *over]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    log = open(out / "pretrain.log", "w")
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(over) or '(recipe as is)'} -> {out / 'pretrain.log'}",
          flush=True)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())


def main(argv=None) -> int:
    args = parse_args(argv)
    import logging

    import torch

    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.evaluation import evaluate_checkpoint
    from mlm_pretrain.tokenizer import train_tokenizer

    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work_dir).resolve()
    base = load_config(args.recipe, [*args.overrides, f"output_dir={work / 'base'}"])
    train_tokenizer(base)
    prepare_pretraining_data(base)
    layout = RunLayout.of(base)
    shared = [*args.overrides, f"tokenizer.pretrained={layout.tokenizer}", f"data.cache_dir={layout.data_root}"]
    base = load_config(args.recipe, [*shared, f"output_dir={work / 'base'}"])
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)

    pending, running, failed = list(args.variant), [], []
    while pending or running:
        while pending and len(running) < args.parallel:
            name, *over = pending.pop(0)
            running.append((name, launch(args, name, over, shared, threads)))
        time.sleep(1.0)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                if proc.returncode != 0:
                    failed.append(name)
                    print(f"{name} failed (exit {proc.returncode}); see {work / name / 'pretrain.log'}", flush=True)

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name, *over in args.variant:
        # the variant's encoder: its last phase's (pretrain/long-<length>/final with pretrain.long_phase)
        final = RunLayout.of(load_config(args.recipe, [*shared, f"output_dir={work / name}", *budget(args), *over])).final
        if name in failed or not (final / "metrics.json").is_file():
            rows.append({"variant": name, "overrides": over, "failed": True})
            continue
        train = json.loads((final / "metrics.json").read_text())
        rows.append({"variant": name, "overrides": over, "steps": train.get("train/steps"),
                     "tokens": train.get("train/tokens"), "tokens_per_second": train.get("train/tokens_per_second"),
                     **evaluate_checkpoint(base, final)})
    (work / "results.json").write_text(json.dumps({"recipe": args.recipe, "minutes": args.minutes, "steps": args.steps,
                                                   "threads": threads, "overrides": args.overrides,
                                                   "variants": rows}, indent=2))
    task = base.data.objective
    per = f"{args.steps:,} steps" if args.steps else f"{args.minutes:g} min"
    print(f"\n{args.recipe}, {per} per variant, {args.parallel} at a time x {threads} thread(s); "
          f"validation: {base.masking.probability:.0%} masking, objective {task}")
    # the last column: the pair task's accuracy (nsp / sop), or ELECTRA's replaced-token detection on MLM data
    extra_key, extra_name = (f"eval/{task}_accuracy", f"val {task.upper()} acc") if task != "mlm" else \
        ("eval/rtd_accuracy", "val RTD acc (ELECTRA)")
    print(f"| variant | overrides | steps | tokens | tokens/s | val MLM loss | val MLM acc | {extra_name} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        over = " ".join(r["overrides"]) or "(recipe)"
        if r.get("failed"):
            print(f"| {r['variant']} | {over} | failed | | | | | |")
            continue
        nsp = r.get(extra_key)
        print(f"| {r['variant']} | {over} | {r['steps']:,} | {r['tokens']:,.0f} | {r['tokens_per_second']:,.0f} | "
              f"{r['eval/mlm_loss']:.3f} | {100 * r['eval/mlm_accuracy']:.1f}% | "
              + (f"{100 * nsp:.1f}% |" if nsp is not None else "- |"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
