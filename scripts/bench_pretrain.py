#!/usr/bin/env python
"""Pretraining throughput: our loop against HF ``Trainer`` + the stock model + ``DataCollatorForLanguageModeling``.

    python scripts/bench_pretrain.py                                   # mini, seq 128, batch 32, fp32 and bf16
    python scripts/bench_pretrain.py --architectures bert,modernbert,electra --precisions fp32 --threads 1
    python scripts/bench_pretrain.py --preset tiny --steps 3 --warmup 1 --vocab-size 4000   # smoke run
    python scripts/bench_pretrain.py --preset base --precisions bf16 --steps 20           # on a GPU
    python scripts/bench_pretrain.py --architectures modernbert --sides ours,compiled,trainer --warmup 10
    python scripts/bench_pretrain.py --precisions fp32 --sides ours,system-malloc,trainer --group-by-length

Both sides train the same model (same config and initial weights) on the same prepared examples
(``mlm-pretrain tokenizer`` + ``prepare`` on the corpus: NSP pairs for ``bert``, MLM-only examples for
``modernbert`` and ``electra``), each in a fresh subprocess, one after the other in this one run. Each
``--architectures`` entry gets its rows: ``bert`` against the Trainer with ``BertForPreTraining``,
``modernbert`` against the Trainer with ``ModernBertForMaskedLM`` (its stock ``sparse_prediction``
head, as our config saves it), ``electra`` (generator + discriminator) alone: there is no stock
Trainer path for replaced-token detection. The side ``compiled`` is ours with ``pretrain.compile=true``
(the encoder compiled by ``torch.compile``; give it a longer ``--warmup``: the first step compiles, and
the first change of padded length compiles once more, with dynamic shapes); ``system-malloc`` is ours
with ``pretrain.malloc=system`` (glibc's allocator as configured, not kept for reuse), and
``trainer-reuse`` the Trainer with the same allocator setting given by glibc's environment variables
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``). The baseline is what a
user would write with the stock tools: ``Trainer`` with its defaults (fused AdamW, no mixed precision, collator padding to the longest row),
and again with ``bf16=True``. Ours is ``mlm_pretrain.pretrain.pretrain`` itself.

Throughput is non-padding tokens per second over the steps after ``--warmup``; model FLOPs are
counted the same way for both (``mlm_pretrain.flops``: only the work the model needs, so both sides
are credited equally per token) and MFU is against this machine's matmul peak, measured here in fp32
and in bf16. Peak memory is the child's peak RSS on a CPU, ``max_memory_allocated`` on a GPU.
Page faults per step are the child's minor faults over the measured steps (fresh pages from the kernel).
Other processes on the machine slow both sides; ``--repeats`` keeps each side's best run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "pretrain_reuters21578" / "train.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="model preset (tiny/mini/small/medium/base/large)")
    p.add_argument("--hidden-size", type=int, default=None,
                   help="model.hidden_size (heads and feed-forward follow it; default: the preset's). The cpu-1h "
                        "recipe's model: --architectures modernbert --hidden-size 128 --vocab-size 8000 --dropout 0")
    p.add_argument("--seq", type=int, default=128, help="data.max_seq_length")
    p.add_argument("--batch", type=int, default=32, help="examples per step")
    p.add_argument("--steps", type=int, default=10, help="measured optimizer steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="steps run before measuring")
    p.add_argument("--vocab-size", type=int, default=30522, help="WordPiece vocabulary size")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS) if DEFAULT_CORPUS.is_file() else str(ROOT / "data" / "corpus.txt"),
                   help="corpus file (default: ../shared/data Reuters if present, else the bundled data/corpus.txt)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    p.add_argument("--sides", default="ours,trainer", help="comma list of ours, compiled (ours with "
                   "pretrain.compile=true), system-malloc (ours with pretrain.malloc=system), trainer, "
                   "trainer-reuse (the Trainer with glibc told to keep freed memory, as ours does)")
    p.add_argument("--architectures", default="bert", help="comma list of bert, modernbert, electra, modernbert-electra")
    p.add_argument("--dropout", type=float, default=None,
                   help="hidden and attention dropout of the model (default: the family's own, BERT 0.1; the CPU "
                        "recipes train with 0.0)")
    p.add_argument("--repeats", type=int, default=1, help="runs per (side, precision); the best is kept")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the children (default: torch's)")
    p.add_argument("--peak-seconds", type=float, default=2.0,
                   help="time per round of the matmul-peak measurement (MFU's denominator); smoke runs pass less")
    p.add_argument("--peak-size", type=int, default=None,
                   help="side of the square matmuls that measure the peak (default 2048 on a CPU, 8192 on a GPU)")
    p.add_argument("--group-by-length", action="store_true",
                   help="both sides batch rows of similar length (ours: pretrain.group_by_length; Trainer: "
                        "train_sampling_strategy=group_by_length)")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_pretrain"), help="tokenizer, data and runs go here")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="also profile our sides' measured steps (ours and compiled, as --sides asks; torch.profiler) "
                        "and print the ROWS operators that take the most self CPU time, per precision")
    p.add_argument("--child", choices=["ours", "compiled", "system-malloc", "trainer", "trainer-reuse"],
                   help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--architecture", default="bert", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_config(args, output_dir: Path, precision: str = "fp32", architecture: str = "bert", compile: bool = False,
                malloc: str = "auto"):
    from mlm_pretrain.config import load_config

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    return load_config("tiny", [
        f"model.architecture={architecture}", f"data.objective={'nsp' if architecture == 'bert' else 'mlm'}",
        f"output_dir={output_dir}", f"corpus.files=[{args.corpus}]", f"tokenizer.vocab_size={args.vocab_size}",
        f"tokenizer.model_max_length={max(args.seq, 512)}",
        # the parent trains the tokenizer into <work-dir>/tokenizer; the children reuse it
        "tokenizer.pretrained=null" if output_dir == Path(args.work_dir) else
        f"tokenizer.pretrained={Path(args.work_dir) / 'tokenizer'}",
        f"data.cache_dir={Path(args.work_dir) / 'data'}", f"data.max_seq_length={args.seq}", "data.dupe_factor=1",
        "data.num_proc=2", "data.max_validation_examples=64", "pretrain.probe_examples=0",  # a short final evaluation
        f"model.preset={args.preset}", f"model.max_position_embeddings={max(args.seq, 512)}",
        f"pretrain.batch_size={args.batch}", f"pretrain.max_steps={args.warmup + args.steps}",
        "pretrain.learning_rate=1e-4", "pretrain.warmup_ratio=0.0", "pretrain.eval_steps=0", "pretrain.save_steps=0",
        "pretrain.logging_steps=1", "pretrain.resume=never", f"pretrain.mixed_precision='{mp}'",
        f"pretrain.group_by_length={str(args.group_by_length).lower()}", "tracking.report_to=[]",
        "tracking.plots=false", f"pretrain.compile={str(compile).lower()}", f"pretrain.malloc={malloc}"] + (
            [] if args.dropout is None else [f"model.hidden_dropout_prob={args.dropout}",
                                             f"model.attention_probs_dropout_prob={args.dropout}"]) + (
            [] if args.hidden_size is None else [f"model.hidden_size={args.hidden_size}"]))


# ----------------------------------------------------------------------------------------------
# Children: one side, one precision, in a fresh process
# ----------------------------------------------------------------------------------------------
def peak_memory() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def page_faults(args):
    """Minor page faults (the kernel handing this process a fresh zeroed page) per measured optimizer
    step, counted by an optimizer step hook: yields a dict that gets ``page_faults_per_step``."""
    import resource

    from torch.optim.optimizer import register_optimizer_step_post_hook

    counts: list[int] = []
    hook = register_optimizer_step_post_hook(
        lambda *a: counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
    result: dict = {}
    try:
        yield result
    finally:
        hook.remove()
        if len(counts) > args.warmup:
            start = counts[args.warmup - 1] if args.warmup else counts[0]
            result["page_faults_per_step"] = (counts[-1] - start) / max(len(counts) - max(args.warmup, 1), 1)


def child_ours(args) -> dict:
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.metrics_log import read_metrics

    out = Path(args.work_dir) / f"{args.architecture}-{args.child}-{args.precision}"
    with profiled(args) as table, page_faults(args) as faults:
        pretrain(make_config(args, out, args.precision, args.architecture, compile=args.child == "compiled",
                             malloc="system" if args.child == "system-malloc" else "auto"))
    logs = [r for r in read_metrics(out / "pretrain" / "metrics.jsonl") if "train/tokens_seen" in r]
    first, last = logs[args.warmup - 1] if args.warmup else {"time": 0.0, "train/tokens_seen": 0.0,
                                                              "train/model_flops": 0.0}, logs[-1]
    secs = last["time"] - first["time"]
    measured = logs[args.warmup:]
    step_seconds = ([b["time"] - a["time"] for a, b in zip(logs[args.warmup - 1:], measured)]
                    if args.warmup else [])
    return {"tokens_per_s": (last["train/tokens_seen"] - first["train/tokens_seen"]) / secs,
            "slowest_step_s": max(step_seconds, default=float("nan")), "first_step_s": logs[0]["time"],
            "flops_per_s": (last["train/model_flops"] - first["train/model_flops"]) / secs,
            "steps": len(logs) - args.warmup, "seconds": secs, "peak_mem_mib": peak_memory(),
            "final_loss": last["train/loss"], **faults, **({"profile": table[0]} if table else {}),
            # the loop's share of each step spent building batches (logged per step here: logging_steps=1)
            "data_wait": sum(r["train/data_wait_fraction"] for r in measured) / max(len(measured), 1),
            "malloc": json.loads((out / "pretrain" / "final" / "metrics.json").read_text()).get("malloc")}


@contextlib.contextmanager
def profiled(args):
    """With ``--profile``: ``torch.profiler`` over the measured steps only (an optimizer step hook
    advances its schedule), and the operator table by self CPU time appended to the yielded list."""
    table: list[str] = []
    if not args.profile:
        yield table
        return
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    # The table is built after the run: building it in on_trace_ready would bill it to the last step.
    events: list = []
    with profile(activities=activities, schedule=schedule(wait=0, warmup=args.warmup, active=args.steps, repeat=1),
                 on_trace_ready=lambda p: events.append(p.events())) as prof:
        hook = register_optimizer_step_post_hook(lambda *a: prof.step())
        try:
            yield table
        finally:
            hook.remove()
    if events:
        table.append(events[0].key_averages().table(sort_by=sort, row_limit=args.profile, max_name_column_width=48))


def child_trainer(args) -> dict:
    import torch
    from datasets import load_from_disk
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from mlm_pretrain.flops import pretraining_flops
    from mlm_pretrain.model import build_model
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.tokenizer import load_tokenizer
    from mlm_pretrain.hardware import KEEP_FREED_ENV

    out = Path(args.work_dir) / f"{args.architecture}-trainer-{args.precision}"
    cfg = make_config(args, out, args.precision, args.architecture)
    tokenizer = load_tokenizer(Path(args.work_dir) / "tokenizer")
    train = load_from_disk(str(prepare_pretraining_data(cfg)))["train"]
    model = build_model(cfg, tokenizer)  # same config and initial weights as ours
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    batches: list[tuple[float, float, int]] = []  # (tokens, masked, padded length) per collated batch

    def counting_collator(rows):
        batch = collator(rows)
        batches.append((float(batch["attention_mask"].sum()), float((batch["labels"] != -100).sum()),
                        batch["input_ids"].size(1)))
        return batch

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    targs = TrainingArguments(str(out), per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
                              learning_rate=1e-4, bf16=args.precision == "bf16", fp16=args.precision == "fp16",
                              logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, seed=cfg.seed,
                              use_cpu=not torch.cuda.is_available(),
                              train_sampling_strategy="group_by_length" if args.group_by_length else "random")
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=counting_collator,
                      callbacks=[StepTimes()])
    t_start = time.perf_counter()
    with page_faults(args) as faults:
        result = trainer.train()
    start = times[args.warmup - 1] if args.warmup else t_start
    secs = times[-1] - start
    measured = batches[args.warmup:args.warmup + args.steps]  # batch i is trained at step i + 1
    tokens = sum(t for t, _, _ in measured)
    flops = sum(pretraining_flops(model.config, t, n, m) for t, m, n in measured)
    return {"tokens_per_s": tokens / secs, "flops_per_s": flops / secs, "steps": len(times) - args.warmup,
            "seconds": secs, "peak_mem_mib": peak_memory(), "final_loss": result.training_loss, **faults,
            "malloc": "reuse" if all(os.environ.get(k) == v for k, v in KEEP_FREED_ENV.items()) else "system"}


# ----------------------------------------------------------------------------------------------
# The parent: data once, peaks, children side by side, the table
# ----------------------------------------------------------------------------------------------
def run_child(args, side: str, precision: str, architecture: str = "bert", profile: int = 0) -> dict:
    out = Path(args.work_dir) / f"result-{architecture}-{side}-{precision}.json"
    cmd = [sys.executable, __file__, "--child", side, "--precision", precision, "--out", str(out),
           "--architecture", architecture,
           "--preset", args.preset, "--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--vocab-size", str(args.vocab_size), "--corpus", args.corpus,
           "--work-dir", args.work_dir, "--profile", str(profile)] + (
               [] if args.dropout is None else ["--dropout", str(args.dropout)]) + (
               [] if args.hidden_size is None else ["--hidden-size", str(args.hidden_size)]) + (
               ["--group-by-length"] if args.group_by_length else [])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if side == "trainer-reuse":  # what pretrain.malloc=auto does in-process, by glibc's environment variables
        from mlm_pretrain.hardware import KEEP_FREED_ENV

        env.update(KEEP_FREED_ENV)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} {precision} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = (child_trainer if args.child.startswith("trainer") else child_ours)(args)
        Path(args.out).write_text(json.dumps(result))
        return 0

    import logging

    import torch

    from mlm_pretrain.flops import measure_matmul_peak
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.tokenizer import train_tokenizer

    logging.basicConfig(level=logging.WARNING)
    if args.threads:  # measure the peak with the threads the children get
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    architectures = args.architectures.split(",")
    train_tokenizer(make_config(args, work))
    for arch in architectures:
        data = prepare_pretraining_data(make_config(args, work, architecture=arch))
        stats = json.loads((data / "stats.json").read_text())["train"]
        print(f"data for {arch}: {stats['examples']:,} examples, mean length {stats['mean_example_length']} of "
              f"{args.seq} (prepared in {time.perf_counter() - t0:.0f} s, cached in {data})")
    precisions = args.precisions.split(",")
    sides = args.sides.split(",")
    # the stock Trainer path of each family; ELECTRA's two-model objective has none
    trainer_ok = {"bert", "modernbert"}
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def peak(precision: str) -> float:
        return measure_matmul_peak(precision, device, n=args.peak_size, seconds=args.peak_seconds)

    peaks = {p: peak(p) for p in ("fp32", "bf16")}
    results: dict[tuple[str, str, str], dict] = {}
    for _ in range(args.repeats):
        for precision in precisions:   # interleaved: drifting load from other processes hits both sides
            for arch in architectures:
                for side in sides:
                    if side.startswith("trainer") and arch not in trainer_ok:
                        continue
                    r = run_child(args, side, precision, arch)
                    best = results.get((arch, side, precision))
                    if best is None or r["tokens_per_s"] > best["tokens_per_s"]:
                        results[(arch, side, precision)] = r
    peaks = {p: max(v, peak(p)) for p, v in peaks.items()}

    threads = args.threads or torch.get_num_threads()
    width = "" if args.hidden_size is None else f" at hidden size {args.hidden_size}"
    print(f"\nmodel {args.preset}{width}, sequence {args.seq}, batch {args.batch}, vocabulary {args.vocab_size}, "
          f"{args.steps} measured steps after {args.warmup}, dropout "
          f"{'the family default' if args.dropout is None else args.dropout}, device {device} ({threads} threads), "
          f"best of {args.repeats}"
          f"{', grouped by length' if args.group_by_length else ''}")
    from mlm_pretrain.hardware import cpu_name, resolve_mixed_precision

    machine = torch.cuda.get_device_name() if device == "cuda" else f"CPU {cpu_name()}"
    auto = resolve_mixed_precision("auto", cpu=device == "cpu")
    print(f"device: {machine}; mixed_precision=auto picks {auto[0]} here ({auto[1]})")
    print(f"measured matmul peak: fp32 {peaks['fp32'] / 1e9:,.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:,.1f} GFLOP/s\n")
    header = ("| architecture | side | precision | tokens/s | vs Trainer (same precision) | vs Trainer bf16 | model GFLOP/s "
              "| MFU vs fp32 peak | MFU vs bf16 peak | peak memory MiB | page faults per step | loss at end "
              "| building batches, % of the time |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for (arch, side, precision), r in results.items():
        if "first_step_s" in r and side == "compiled":
            print(f"<!-- {arch} {side} {precision}: first step {r['first_step_s']:.1f} s after the loop started "
                  f"(compilation), slowest measured step {r['slowest_step_s']:.2f} s -->")
    for (arch, side, precision), r in results.items():
        same = results.get((arch, "trainer", precision))
        trainer_bf16 = results.get((arch, "trainer", "bf16"))
        vs_same = f"{r['tokens_per_s'] / same['tokens_per_s']:.2f}x" if same else "-"
        vs_bf16 = f"{r['tokens_per_s'] / trainer_bf16['tokens_per_s']:.2f}x" if trainer_bf16 else "-"
        name = {"ours": "mlm_pretrain", "compiled": "mlm_pretrain, compiled", "trainer": "HF Trainer",
                "system-malloc": "mlm_pretrain, malloc=system", "trainer-reuse": "HF Trainer, freed memory kept"}[side]
        print(f"| {arch} | {name} | {precision} | {r['tokens_per_s']:,.0f} | {vs_same} | {vs_bf16} | {r['flops_per_s'] / 1e9:,.1f} "
              f"| {100 * r['flops_per_s'] / peaks['fp32']:.1f}% | {100 * r['flops_per_s'] / peaks['bf16']:.1f}% "
              f"| {r['peak_mem_mib']:,.0f} | {r.get('page_faults_per_step', float('nan')):,.0f} | {r['final_loss']:.3f} "
              f"| {'-' if r.get('data_wait') is None else format(100 * r['data_wait'], '.1f') + '%'} |")
    ours = [s for s in sides if s in ("ours", "compiled")] or ["ours"]
    for arch in architectures if args.profile else []:  # separate runs: the timed ones carry no profiler
        for precision in precisions:
            for side in ours:
                r = run_child(args, side, precision, arch, profile=args.profile)
                print(f"\nprofile: {arch}, {side}, {precision}, {args.steps} steps after {args.warmup} "
                      f"({r['tokens_per_s']:,.0f} tokens/s under the profiler)\n{r['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "peaks": peaks, "device": machine, "auto": auto,
                                               "results": {f"{a}/{s}/{p}": r for (a, s, p), r in results.items()}},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
