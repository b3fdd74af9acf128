#!/usr/bin/env python
"""What a longer window costs: our loop's tokens/s at sequence 128 and at 512, side by side, for the cpu-1h model.

    python scripts/bench_long_phase.py                                    # cpu-1h's model, 2 threads, 128 vs 512
    python scripts/bench_long_phase.py --sides ours,compiled --steps 30   # also compiled, as cpu-1h trains
    python scripts/bench_long_phase.py --seqs 32,64 --batch 8 --steps 3 --warmup 1 --vocab-size 2000   # smoke run

Each length is one ``scripts/bench_pretrain.py`` run of our loop (fresh subprocesses, the same tokenizer,
data prepared at that length) on the ``cpu-1h`` recipe's model: ModernBERT, 4 layers x 128 wide, an 8k
vocabulary, no dropout, ``--threads`` 2. The first length trains with ``--batch`` sequences a step, every
longer one with the same tokens a step (the long phase's default, ``pretrain.long_phase.batch_size: null``:
32 x 128 = 8 x 512). Attention grows with the square of the length, so a token costs more at 512; how much
is the table's ``vs first`` column, and its last line says what that means for a long phase that takes
``--share`` of a ``--budget-minutes`` run: the tokens it reads, against the tokens the first length would
have read in that time. The real lengths count: ``mean example length`` is what the prepared data holds
(documents shorter than the window make short examples, which cost less).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench_pretrain():
    spec = importlib.util.spec_from_file_location("bench_pretrain", ROOT / "scripts" / "bench_pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None) -> argparse.Namespace:
    bench = _bench_pretrain()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", default="128,512", help="comma list of sequence lengths, the first phase's first")
    p.add_argument("--batch", type=int, default=32, help="sequences per step at the first length (cpu-1h: 32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the runs")
    p.add_argument("--steps", type=int, default=20, help="measured optimizer steps per length")
    p.add_argument("--warmup", type=int, default=3, help="steps run before measuring")
    p.add_argument("--precisions", default=None,
                   help="comma list of fp32, bf16 (default: what pretrain.mixed_precision=auto picks here)")
    p.add_argument("--sides", default="ours", help="comma list of ours, compiled (cpu-1h compiles where it can)")
    p.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary size (cpu-1h: 8000)")
    p.add_argument("--hidden-size", type=int, default=128, help="model.hidden_size (cpu-1h: 128 on the mini preset)")
    p.add_argument("--preset", default="mini", help="model preset (cpu-1h: mini, 4 layers)")
    p.add_argument("--corpus", default=bench.parse_args([]).corpus, help="corpus file (as bench_pretrain.py)")
    p.add_argument("--repeats", type=int, default=1, help="runs per length; the best is kept")
    p.add_argument("--share", type=float, default=0.1, help="the long phase's share of the budget, for the last line")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="the run's budget, for the last line")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_long_phase"), help="tokenizer, data and runs go here")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def _bench_args(args, seq: int, batch: int, precisions: str, out: Path) -> list[str]:
    return ["--architectures", "modernbert", "--preset", args.preset, "--hidden-size", str(args.hidden_size),
            "--vocab-size", str(args.vocab_size), "--dropout", "0", "--seq", str(seq), "--batch", str(batch),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--precisions", precisions, "--sides", args.sides,
            "--threads", str(args.threads), "--repeats", str(args.repeats), "--corpus", args.corpus,
            "--work-dir", args.work_dir, "--peak-seconds", "0.5", "--json", str(out)]


def main(argv=None) -> int:
    args = parse_args(argv)
    bench = _bench_pretrain()
    seqs = [int(s) for s in args.seqs.split(",")]
    if args.precisions is None:
        from mlm_pretrain.hardware import resolve_mixed_precision

        picked = resolve_mixed_precision("auto", cpu=True)[0]
        args.precisions = {"no": "fp32"}.get(picked, picked)
    rows = []
    for seq in seqs:
        batch = max(1, args.batch * seqs[0] // seq)
        out = Path(args.work_dir) / f"long-phase-{seq}.json"
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        bench_argv = _bench_args(args, seq, batch, args.precisions, out)
        bench.main(bench_argv)
        from mlm_pretrain.prepare import prepare_pretraining_data

        data = prepare_pretraining_data(bench.make_config(bench.parse_args(bench_argv), Path(args.work_dir),
                                                          architecture="modernbert"))  # cached: its stats
        mean = json.loads((data / "stats.json").read_text())["train"]["mean_example_length"]
        for key, r in json.loads(out.read_text())["results"].items():
            _, side, precision = key.split("/")
            rows.append({"seq": seq, "batch": batch, "side": side, "precision": precision, "mean_length": mean, **r})
    print(f"\nwhat a longer window costs: cpu-1h's model ({args.preset}, hidden {args.hidden_size}, vocabulary "
          f"{args.vocab_size}, no dropout), {args.threads} threads, {args.steps} measured steps after {args.warmup}\n")
    print("| sequence | batch | side | precision | mean example length | tokens/s | vs first | model GFLOP/s "
          "| peak memory MiB | loss at end |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    first = {(r["side"], r["precision"]): r for r in rows if r["seq"] == seqs[0]}
    for r in rows:
        base = first.get((r["side"], r["precision"]))
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        print(f"| {r['seq']} | {r['batch']} | {r['side']} | {r['precision']} | {r['mean_length']} | "
              f"{r['tokens_per_s']:,.0f} | {ratio} | {r['flops_per_s'] / 1e9:,.1f} | {r['peak_mem_mib']:,.0f} "
              f"| {r['final_loss']:.3f} |")
    for r in rows:
        base = first.get((r["side"], r["precision"]))
        if base is not None and r["seq"] == seqs[-1] and r["seq"] != seqs[0]:
            seconds = args.budget_minutes * 60 * args.share
            print(f"\n{r['side']}, {r['precision']}: a long phase of {100 * args.share:g}% of {args.budget_minutes:g} "
                  f"minutes reads {r['tokens_per_s'] * seconds:,.0f} tokens at {r['seq']}, where {seqs[0]} would read "
                  f"{base['tokens_per_s'] * seconds:,.0f} in that time ({100 * (1 - r['tokens_per_s'] / base['tokens_per_s']):.0f}% "
                  "fewer tokens)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
