#!/usr/bin/env python
"""Threads under contention: pretraining step throughput while another job takes the CPU for a while.

    python scripts/bench_threads.py                                # every policy, mini BERT, one table
    python scripts/bench_threads.py --policies fixed,auto --alone 10 --busy 30 --after 30

Each policy runs the same training step (the package's model factory and AdamW on fixed random
batches) in a fresh subprocess for ``--alone`` seconds on an otherwise idle machine, then
``--busy`` seconds while a competing process (a ``--rival-threads``-thread float32 matmul loop, the
shape of another PyTorch job) runs beside it, then ``--after`` seconds alone again. The table gives
the training's tokens/s in each phase and the rival's GFLOP/s during the busy phase, so a policy that
keeps its own speed by starving the other job shows up too. Policies:

- ``fixed``: torch's default thread count (all cores), OpenMP's default wait policy (threads spin
  before sleeping): what a plain PyTorch script does.
- ``passive``: the same threads, ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once).
- ``one``: one thread.
- ``auto``: what the package does by default (``pretrain.threads=auto``,
  ``mlm_pretrain.hardware.ThreadGovernor``): threads = the cores other processes leave free, checked
  every few seconds from ``/proc/stat``, with passive waiting.

Run it on an idle machine: anything else running changes every row.
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
POLICIES = ("fixed", "passive", "one", "auto")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", default=",".join(POLICIES), help="comma list of " + ", ".join(POLICIES))
    p.add_argument("--preset", default="mini", help="model preset")
    p.add_argument("--architecture", default="bert", help="model.architecture")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--alone", type=float, default=15.0, help="seconds before the rival starts")
    p.add_argument("--busy", type=float, default=30.0, help="seconds the rival runs")
    p.add_argument("--after", type=float, default=30.0, help="seconds after the rival stopped")
    p.add_argument("--rival-threads", type=int, default=2, help="threads of the competing job")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rival", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--policy", default="fixed", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args) -> None:
    """Train for ``--seconds``; print one JSON line per step: wall time, tokens, threads in use."""
    import torch

    from mlm_pretrain.config import load_config
    from mlm_pretrain.model import PRETRAINING_CLASSES, _transformers_class, build_config
    from mlm_pretrain.objectives import pretraining_sums
    from mlm_pretrain.optim import make_optimizer

    governor = None
    if args.policy == "one":
        torch.set_num_threads(1)
    elif args.policy == "auto":
        from mlm_pretrain.hardware import ThreadGovernor
        governor = ThreadGovernor("auto")
    cfg = load_config("tiny-bert", [f"model.preset={args.preset}", f"model.architecture={args.architecture}"])
    torch.manual_seed(0)
    model = _transformers_class(PRETRAINING_CLASSES[args.architecture])(build_config(cfg.model, args.vocab_size))
    model.train()
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab_size, (args.batch, args.seq), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    if args.architecture == "bert":
        batch["next_sentence_label"] = torch.zeros(args.batch, dtype=torch.long)
    n_masked = int((labels != -100).sum())
    start = time.perf_counter()
    print(json.dumps({"ready": True}), flush=True)
    while time.perf_counter() - start < args.seconds:
        sums = pretraining_sums(model, **batch)
        loss = sums["mlm_loss"] / n_masked + sums.get("nsp_loss", 0.0) / args.batch
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if governor is not None:
            governor.step()
        print(json.dumps({"t": time.perf_counter() - start, "tokens": ids.numel(),
                          "threads": torch.get_num_threads()}), flush=True)


def rival(args) -> None:
    """Another PyTorch job: float32 matmuls until killed; prints "ready", then its GFLOP count as it goes."""
    import torch

    torch.set_num_threads(args.rival_threads)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    print(json.dumps({"ready": True}), flush=True)
    flops, start = 0.0, time.perf_counter()
    while True:
        for _ in range(20):
            a @ b
        flops += 20 * 2 * 512 ** 3
        print(json.dumps({"t": time.perf_counter() - start, "gflop": flops / 1e9}), flush=True)


def start_rival(args) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    proc = subprocess.Popen([sys.executable, __file__, "--rival", "--rival-threads", str(args.rival_threads)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert json.loads(proc.stdout.readline()).get("ready")  # its start-up (importing torch) is not its work
    return proc


def stop_rival(proc: subprocess.Popen) -> float:
    """Stop the rival; its GFLOP/s while it ran (NaN if it never finished a round)."""
    proc.terminate()
    out = [json.loads(x) for x in proc.communicate()[0].splitlines() if x.strip()]
    return out[-1]["gflop"] / max(1e-9, out[-1]["t"]) if out else float("nan")


def run_policy(args, policy: str) -> dict:
    """The training alone for --alone s, then beside the rival for --busy s (from the moment the rival
    computes), then alone for --after s; phase rates skip each phase's first 3 s (warm-up, the policy's
    reaction)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OMP_WAIT_POLICY", None)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--child", "--policy", policy, "--seconds", "1e9", "--preset", args.preset,
           "--architecture", args.architecture, "--seq", str(args.seq), "--batch", str(args.batch),
           "--vocab-size", str(args.vocab_size)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert json.loads(proc.stdout.readline()).get("ready")
    t0 = time.perf_counter()
    rival_proc, rival_gflops, busy_from, busy_to, steps = None, float("nan"), None, None, []
    for line in proc.stdout:
        step = json.loads(line)
        step["t"] = time.perf_counter() - t0  # the parent's clock: phases and steps on one time line
        steps.append(step)
        now = step["t"]
        if rival_proc is None and busy_from is None and now >= args.alone:
            rival_proc = start_rival(args)
            busy_from = time.perf_counter() - t0
        elif rival_proc is not None and now >= busy_from + args.busy:
            rival_gflops = stop_rival(rival_proc)
            rival_proc, busy_to = None, time.perf_counter() - t0
        elif busy_to is not None and now >= busy_to + args.after:
            break
    proc.terminate()
    proc.wait()

    def rate(lo, hi):
        sel = [s for s in steps if lo <= s["t"] < hi]
        if len(sel) < 2:
            return float("nan")
        return sum(s["tokens"] for s in sel[1:]) / (sel[-1]["t"] - sel[0]["t"])

    busy = (busy_from + 3, busy_to)
    threads_busy = sorted({s["threads"] for s in steps if busy[0] <= s["t"] < busy[1]})
    return {"policy": policy, "alone": rate(3, args.alone), "busy": rate(*busy), "after": rate(busy_to + 3, 1e9),
            "rival_gflops": rival_gflops, "threads_busy": threads_busy, "steps": len(steps)}


def rival_alone(args, seconds: float = 8.0) -> float:
    proc = start_rival(args)
    time.sleep(seconds)
    return stop_rival(proc)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.rival:
        rival(args)
        return 0
    from mlm_pretrain.hardware import cpu_name

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise SystemExit(f"unknown policies {bad}; choose from {POLICIES}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.preset} {args.architecture}, seq {args.seq}, "
          f"batch {args.batch}; rival: {args.rival_threads}-thread fp32 matmul loop for {args.busy:.0f} s", flush=True)
    solo = rival_alone(args, seconds=min(8.0, args.busy))
    print(f"rival alone: {solo:.1f} GFLOP/s", flush=True)
    rows = []
    for policy in policies:
        rows.append(run_policy(args, policy))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print("| policy | tokens/s alone | with the rival | after it stopped | threads while busy | rival GFLOP/s (alone: %.0f) |" % solo)
    print("|---|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['alone']:,.0f} | {r['busy']:,.0f} ({r['busy'] / r['alone']:.0%}) | "
              f"{r['after']:,.0f} | {','.join(map(str, r['threads_busy']))} | {r['rival_gflops']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "rival_alone_gflops": solo, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
