#!/usr/bin/env python
"""Validate an installation on one GPU in at most 8 minutes, and print one table of what works.

    bash scripts/gpu_check.sh                        # on a GPU machine: install from this checkout, then check
    bash scripts/gpu_check.sh --wheels /path/wheels  # offline: install missing requirements from a wheel folder
    bash scripts/gpu_check.sh --skip-install         # the package is installed already
    bash scripts/gpu_check.sh --dry-run              # the same checks on CPU with tiny sizes (~1-3 minutes)

Checks, in order (each in fresh ``python -m mlm_pretrain`` subprocesses with ``key=value`` overrides;
each has its own time cap, the caps of one GPU run add up to 8 minutes, see ``GPU_CAPS``):

1. ``install``: ``pip install --no-deps -e .`` plus the requirements that are missing, never torch
   (a constraints file pins the torch already installed; ``--wheels DIR`` adds ``--no-index
   --find-links DIR``). Dry run: the same pip commands with ``--dry-run`` (nothing changes).
2. ``environment``: versions (torch, CUDA, transformers, accelerate, datasets), the card and its
   driver, the dense bf16 peak of the card from ``PEAK_TFLOPS`` and the measured matmul peak.
3. ``tokenizer``: a WordPiece vocabulary on the corpus, shared by every later run.
4. ``pretrain bert``: ``--config bert-base-gpu`` for a short ``pretrain.max_steps`` at bf16;
   tokens/s and MFU over the steps after the warm-up, against the card's dense bf16 peak (unknown
   card: the measured matmul peak).
5. ``pretrain modernbert`` / ``pretrain electra``: the same with ``model.architecture`` changed
   (``data.objective=mlm``).
6. ``kill and resume``: a run is SIGKILLed once a checkpoint exists, the same command run again
   must log "resumed from" that checkpoint, finish, and leave ``metrics.jsonl`` without repeated steps.
7. ``finetune``: a classifier on the bundled ``data/sentiment`` from the bert run's ``pretrain/final``.
8. ``bench vs Trainer``: ``scripts/bench_pretrain.py --preset base --precisions bf16`` (ours against
   the HF Trainer, same model and data) and the speed ratio.

A failed check does not stop the others (a check whose input failed is reported as skipped). The
exit status is 0 only when every check passed. Logs of every subprocess go to ``<work-dir>/logs/``.
Without CUDA the dry run is automatic: tiny model, fp32 (``mixed_precision=no``), a few steps, a tiny
vocabulary, on the bundled ``data/corpus.txt``; ``tests/test_gpu_check.py`` runs it so it cannot rot.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "data" / "pretrain_reuters21578" / "train.jsonl"
BUNDLED_CORPUS = ROOT / "data" / "corpus.txt"

#: Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendor data sheets, matched in order on
#: ``torch.cuda.get_device_name()`` (more specific names first: "GH200" contains "H200"). Cards without
#: bf16 (V100, T4) run fp16: their fp16 peak. Unknown cards: MFU against the measured matmul peak.
PEAK_TFLOPS: list[tuple[str, str, float]] = [
    (r"GH200", "GH200", 989.0),
    (r"H200\s*NVL", "H200 NVL", 835.0),
    (r"H200", "H200", 989.0),
    (r"H100\s*PCIe", "H100 PCIe", 756.0),
    (r"H100\s*NVL", "H100 NVL", 835.0),
    (r"H100|H800", "H100 SXM", 989.0),
    (r"A100|A800", "A100", 312.0),
    (r"L40S", "L40S", 362.0),
    (r"\bL4\b", "L4", 121.0),
    (r"\bA10\b", "A10", 125.0),
    (r"V100", "V100 (fp16)", 125.0),
    (r"\bT4\b", "T4 (fp16)", 65.0),
]


def card_peak(device_name: str) -> Optional[tuple[str, float]]:
    """(label, dense bf16 TFLOP/s) of a GPU named like ``torch.cuda.get_device_name()``, or None."""
    for pattern, label, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return label, tflops
    return None


# ----------------------------------------------------------------------------------------------
# Sizes and time caps. GPU: the caps add up to 480 s (8 minutes on one H100/H200); typical runs
# take far less. Dry run (CPU): generous caps, since the 2 cores may be shared with other jobs.
# ----------------------------------------------------------------------------------------------
GPU_CAPS = {  # seconds
    "install": 60,         # pip --no-deps -e . + missing requirements (from a wheel folder: no network)
    "environment": 20,     # versions, CUDA start, a 0.5 s bf16 matmul peak measurement
    "tokenizer": 30,       # 30,522-entry WordPiece on Reuters (12 MB): ~8 s on 2 cores
    "pretrain bert": 75,   # prepare NSP pairs (~6 s on 2 cores) + 100 steps of 256 x 128 tokens + eval + probe + export
    "pretrain modernbert": 55,  # prepare MLM examples (shared with electra) + 100 steps
    "pretrain electra": 45,
    "kill and resume": 70,  # two processes, checkpoints of 1.3 GB (weights + AdamW state)
    "finetune": 40,        # 600 labelled rows, 3 epochs
    "bench vs Trainer": 85,  # tokenizer + data again, fp32 and bf16 matmul peaks twice, ours and the Trainer
}
assert sum(GPU_CAPS.values()) <= 480, sum(GPU_CAPS.values())
CPU_CAPS = {name: 150 for name in GPU_CAPS} | {"environment": 30, "tokenizer": 60, "finetune": 120}


@dataclass(frozen=True)
class Plan:
    """What differs between the GPU run and the CPU dry run."""
    dry_run: bool
    precision: str               # pretrain.mixed_precision / finetune.mixed_precision
    corpus: str
    common: tuple[str, ...]      # overrides of every pretraining-side command
    steps: int                   # pretraining steps of the throughput runs
    warm: int                    # steps excluded from tokens/s (CUDA start, allocator warm-up)
    logging_steps: int
    resume_steps: int
    resume_save: int
    finetune: tuple[str, ...]
    bench: tuple[str, ...]
    caps: dict


def make_plan(dry_run: bool, corpus: Optional[str], precision: str = "bf16") -> Plan:
    if dry_run:
        corpus = corpus or str(BUNDLED_CORPUS)
        sizes = ["tokenizer.vocab_size=1000", "data.max_seq_length=64", "data.num_proc=1",
                 "data.max_validation_examples=64", "model.preset=tiny", "model.max_position_embeddings=64",
                 "pretrain.batch_size=8", "pretrain.gradient_accumulation_steps=2", "pretrain.warmup_steps=2",
                 "pretrain.dataloader_num_workers=0", "pretrain.probe_examples=100", "pretrain.probe_eval_examples=50",
                 "pretrain.cpu=true", "finetune.cpu=true", "tracking.plots=false"]
        return Plan(True, "no", corpus, tuple(sizes), steps=10, warm=2, logging_steps=1, resume_steps=24,
                    resume_save=8,
                    finetune=("finetune.max_steps=12", "finetune.batch_size=16", "finetune.max_length=64",
                              "finetune.max_train_examples=192", "finetune.max_eval_examples=64",
                              "finetune.learning_rate=1e-3"),
                    bench=("--preset", "tiny", "--precisions", "fp32", "--seq", "64", "--batch", "8", "--steps", "4",
                           "--warmup", "1", "--vocab-size", "1000", "--threads", "1", "--peak-seconds", "0.2",
                           "--peak-size", "1024"),
                    caps=dict(CPU_CAPS))
    if corpus is None:
        corpus = str(SHARED_CORPUS if SHARED_CORPUS.is_file() else BUNDLED_CORPUS)
    sizes = [f"data.num_proc={min(8, os.cpu_count() or 1)}", "data.max_validation_examples=1000",
             "pretrain.warmup_steps=10"]  # recipe sizes otherwise: base, sequence 128, 64 x 4 accumulation, 4 workers
    bench_precision = "bf16" if precision == "auto" else precision
    return Plan(False, precision, corpus, tuple(sizes), steps=100, warm=10, logging_steps=10, resume_steps=120,
                resume_save=40, finetune=("finetune.num_epochs=3",),
                bench=("--preset", "base", "--precisions", bench_precision, "--seq", "128", "--batch", "64",
                       "--steps", "20", "--warmup", "5"),
                caps=dict(GPU_CAPS))


# ----------------------------------------------------------------------------------------------
# Running checks and the table
# ----------------------------------------------------------------------------------------------
class CheckFailed(Exception):
    """A check's own verdict (the message goes into the table)."""


class Skipped(Exception):
    """An input of the check failed: it cannot run (counts as a failure)."""


class NotRun(Exception):
    """Left out by ``--only`` (does not count)."""


@dataclass
class Check:
    name: str
    fn: Callable[["Context"], str]   # returns the figures cell; raises on failure
    needs: tuple[str, ...] = ()


@dataclass
class Row:
    check: str
    result: str                       # ok | FAIL | skipped (an input failed) | not run (--only)
    figures: str
    seconds: float


@dataclass
class Context:
    plan: Plan
    work: Path
    args: argparse.Namespace
    env: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)     # environment facts (versions, card, peaks)
    cap: float = 0.0                             # the running check's cap
    deadline: float = 0.0                        # and its deadline (time.monotonic())
    current: str = ""
    only: Optional[set] = None                   # --only: the checks to run (the others are skipped)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log_path(self, name: str) -> Path:
        path = self.work / "logs" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, cmd: list[str], log: str, *, extra_env: Optional[dict] = None) -> str:
        """Run ``cmd`` until this check's deadline; return its output (stdout + stderr), raise CheckFailed
        naming the last error line on a non-zero exit or a timeout."""
        path = self.log_path(log)
        with open(path, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, self.remaining()))
            except subprocess.TimeoutExpired:
                kill_group(proc)
                raise CheckFailed(f"timed out after the {self.cap:.0f} s cap ({path.relative_to(self.work)})")
        out = path.read_text(encoding="utf-8", errors="replace")
        if rc != 0:
            raise CheckFailed(f"exit {rc}: {last_error(out)} ({path.relative_to(self.work)})")
        return out


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child started with ``start_new_session`` and everything it started (dataloader workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("$ ")]
    for ln in reversed(lines):
        if re.search(r"error|exception|traceback|failed", ln, flags=re.IGNORECASE):
            return ln[-300:]
    return lines[-1][-300:] if lines else "no output"


def execute(checks: list[Check], ctx: Context, log=print) -> list[Row]:
    """Run every check in order under its cap; a check whose input failed is skipped. Never raises."""
    rows: list[Row] = []
    passed: set[str] = set()
    for check in checks:
        ctx.current = check.name
        ctx.cap = float(ctx.plan.caps.get(check.name, 60)) * ctx.args.cap_scale
        ctx.deadline = time.monotonic() + ctx.cap
        log(f"[gpu_check] {check.name} (cap {ctx.cap:.0f} s) ...")
        t0 = time.monotonic()
        try:
            if ctx.only is not None and check.name not in ctx.only:
                raise NotRun("not in --only")
            missing = [n for n in check.needs if n not in passed and (ctx.only is None or n in ctx.only)]
            if missing:
                raise Skipped(f"needs {', '.join(missing)}")
            figures, result = check.fn(ctx), "ok"
            passed.add(check.name)
        except Skipped as e:
            figures, result = str(e), "skipped"
        except NotRun as e:
            figures, result = str(e), "not run"
        except CheckFailed as e:
            figures, result = str(e), "FAIL"
        except Exception as e:  # a bug in the check itself still gives a complete table
            tb = traceback.extract_tb(e.__traceback__)[-1]
            figures, result = f"{type(e).__name__}: {e} (gpu_check.py:{tb.lineno})", "FAIL"
        seconds = time.monotonic() - t0
        if result == "ok" and seconds > ctx.cap:  # a check that ran in-process past its cap
            result, figures = "FAIL", f"over the {ctx.cap:.0f} s cap; {figures}"
        rows.append(Row(check.name, result, figures, seconds))
        log(f"[gpu_check] {check.name}: {result} in {seconds:.1f} s: {figures}")
    return rows


def cell(text: str) -> str:
    return " ".join(str(text).replace("|", "/").split())


def format_table(rows: list[Row], header: list[str] = ()) -> str:
    lines = list(header)
    lines += ["| check | result | figures | seconds |", "|---|---|---|---:|"]
    lines += [f"| {cell(r.check)} | {cell(r.result)} | {cell(r.figures)} | {r.seconds:.1f} |" for r in rows]
    ran = [r for r in rows if r.result != "not run"]
    bad = [r.check for r in ran if r.result != "ok"]
    total = sum(r.seconds for r in rows)
    lines.append(f"\n{len(ran) - len(bad)} of {len(ran)} checks passed in {total:.0f} s"
                 + (f"; failed: {', '.join(bad)}" if bad else ""))
    return "\n".join(lines)


def exit_code(rows: list[Row]) -> int:
    ran = [r for r in rows if r.result != "not run"]
    return 0 if ran and all(r.result == "ok" for r in ran) else 1


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------
def python_json(ctx: Context, code: str, log: str) -> dict:
    """Run ``code`` in the target Python; it prints one line ``JSON_MARK + json`` (warnings may surround it)."""
    out = ctx.run([sys.executable, "-c", code], log)
    lines = [ln for ln in out.splitlines() if ln.startswith(JSON_MARK)]
    if not lines:
        raise CheckFailed(f"no result line in {log}.log: {last_error(out)}")
    return json.loads(lines[-1][len(JSON_MARK):])


JSON_MARK = "GPU_CHECK_JSON "


def requirements() -> list[str]:
    """``install_requires`` of setup.cfg without torch (torch stays the one the machine has)."""
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    reqs = [r.strip() for r in cp["options"]["install_requires"].splitlines() if r.strip()]
    return [r for r in reqs if re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() != "torch"]


TORCH_PROBE = ("import json, importlib.metadata as m, torch; print('GPU_CHECK_JSON ' + json.dumps({'version': "
               "m.version('torch'), 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}))")


def check_install(ctx: Context) -> str:
    if ctx.args.skip_install:
        return "skipped by --skip-install (using the installed packages)"
    before = python_json(ctx, TORCH_PROBE, "install-torch-before")
    constraints = ctx.work / "constraints.txt"
    constraints.write_text(f"torch=={before['version']}\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--retries", "1", "--timeout", "15",
           "-c", str(constraints)]  # offline without --wheels: fail within the cap, not after minutes of retries
    if ctx.args.wheels:
        pip += ["--no-index", "--find-links", str(Path(ctx.args.wheels).resolve())]
    if ctx.plan.dry_run:
        pip.append("--dry-run")  # resolve everything, change nothing
    try:  # no build isolation: an isolated build env would need setuptools from the network (or --wheels)
        import setuptools

        isolation = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 64 else []
    except (ImportError, ValueError):
        isolation = []
    out = ctx.run(pip + ["--no-deps", *isolation, "-e", str(ROOT)], "install-package")
    out += ctx.run(pip + requirements(), "install-requirements")
    after = python_json(ctx, TORCH_PROBE, "install-torch-after")
    if after != before:
        raise CheckFailed(f"pip changed torch: {before} -> {after}")
    would = re.findall(r"^Would install (.+)$", out, flags=re.MULTILINE)
    installed = re.findall(r"^Successfully installed (.+)$", out, flags=re.MULTILINE)
    what = (f"pip --dry-run: would install {' '.join(would) or 'nothing'}" if ctx.plan.dry_run
            else f"installed {' '.join(installed) or 'nothing new'}")
    return f"{what}; torch {after['version']} kept" + (f" (wheels from {ctx.args.wheels})" if ctx.args.wheels else "")


ENV_PROBE = r"""
import importlib.metadata as m, json, os, platform, shutil, subprocess, sys
import torch
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "missing"
info = {n: v(n) for n in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "evaluate",
                          "huggingface_hub", "scikit-learn")}
import mlm_pretrain
info["mlm_pretrain"] = f"{mlm_pretrain.__version__} from {os.path.dirname(os.path.dirname(mlm_pretrain.__file__))}"
info["python"] = platform.python_version()
info["cuda"] = torch.version.cuda
gpu = torch.cuda.is_available() and not DRY
info["gpu"] = gpu
if gpu:
    info["device"] = torch.cuda.get_device_name()
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    info["bf16"] = torch.cuda.is_bf16_supported()
    info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    driver = "n/a"
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        driver = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else "n/a"
    info["driver"] = driver
else:
    from mlm_pretrain.hardware import cpu_name
    info["device"] = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
from mlm_pretrain.flops import measure_matmul_peak
info["peak_precision"] = PREC
info["measured_peak_tflops"] = measure_matmul_peak(PREC, "cuda" if gpu else "cpu", seconds=0.5 if gpu else 0.3) / 1e12
print("GPU_CHECK_JSON " + json.dumps(info))
"""


def check_environment(ctx: Context) -> str:
    prec = {"no": "fp32", "bf16": "bf16", "fp16": "fp16", "auto": "bf16"}[ctx.plan.precision]
    code = f"DRY = {ctx.plan.dry_run!r}\nPREC = {prec!r}\n" + ENV_PROBE
    info = python_json(ctx, code, "environment")
    ctx.info.update(info)
    if info["gpu"]:
        spec = card_peak(info["device"])
        if ctx.args.peak_tflops:
            spec = ("--peak-tflops", ctx.args.peak_tflops)
        if spec:
            ctx.info["peak_label"], ctx.info["peak_tflops"] = f"{spec[0]} dense {prec}", spec[1]
        else:
            ctx.info["peak_label"] = f"measured {prec} matmul (card not in PEAK_TFLOPS)"
            ctx.info["peak_tflops"] = info["measured_peak_tflops"]
    else:
        ctx.info["peak_label"] = f"measured {prec} matmul"
        ctx.info["peak_tflops"] = info["measured_peak_tflops"]
    missing = [k for k in ("transformers", "accelerate", "datasets", "tokenizers", "evaluate") if info[k] == "missing"]
    if missing:
        raise CheckFailed(f"missing packages: {', '.join(missing)}")
    measured = info["measured_peak_tflops"]
    figures = f"{info['device']}; matmul {prec} measured {fmt_tflops(measured)}"
    if info["gpu"]:
        figures += f", spec {fmt_tflops(ctx.info['peak_tflops'])} ({ctx.info['peak_label']})"
        figures += f", {100 * measured / ctx.info['peak_tflops']:.0f}% of it"
    return figures


def fmt_tflops(t: float) -> str:
    return f"{t:,.1f} TFLOP/s" if t >= 1 else f"{t * 1000:,.1f} GFLOP/s"


def layout(output_dir: Path):
    """The folders of the run in ``output_dir``, as the package lays them out (its ``RunLayout``)."""
    from mlm_pretrain.config import load_config
    from mlm_pretrain.layout import RunLayout

    return RunLayout.of(load_config("bert-base-gpu"), output_dir)


def mlm(ctx: Context, stage: str, output_dir: Path, *overrides: str, config: str = "bert-base-gpu") -> list[str]:
    """A ``python -m mlm_pretrain`` command on the recipe with the plan's sizes and the shared tokenizer/data."""
    p = ctx.plan
    base = [f"output_dir={output_dir}", f"corpus.files=[{p.corpus}]", "data.dupe_factor=1",
            f"data.cache_dir={ctx.work / 'data'}", f"pretrain.mixed_precision='{p.precision}'",
            f"finetune.mixed_precision='{p.precision}'", "pretrain.time_budget_minutes=null",
            f"pretrain.logging_steps={p.logging_steps}", "pretrain.eval_steps=0", "pretrain.save_steps=0",
            "pretrain.keep_last=2", "tracking.report_to=[]", *p.common]
    if stage != "tokenizer":
        base.append(f"tokenizer.pretrained={ctx.work / 'tok' / 'tokenizer'}")
    return [sys.executable, "-m", "mlm_pretrain", stage, "--config", config, *base, *overrides]


def check_tokenizer(ctx: Context) -> str:
    out_dir = ctx.work / "tok"
    ctx.run(mlm(ctx, "tokenizer", out_dir), "tokenizer")
    vocab = (out_dir / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    corpus = Path(ctx.plan.corpus)
    size = corpus.stat().st_size / 1e6 if corpus.is_file() else float("nan")
    return f"{len(vocab):,}-entry WordPiece on {corpus.name} ({size:.1f} MB)"


def train_records(metrics_jsonl: Path) -> list[dict]:
    rows = []
    for line in metrics_jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            if "train/tokens_seen" in r:
                rows.append(r)
    return rows


def steady_throughput(records: list[dict], warm: int) -> tuple[float, float, int, int]:
    """(tokens/s, model FLOP/s, first step, last step) between the first logged step >= ``warm`` and the
    last one (the same process: ``time`` restarts in a resumed run)."""
    start = next((r for r in records if r["step"] >= warm), None)
    end = records[-1] if records else None
    if start is None or end is None or end["time"] <= start["time"]:
        raise CheckFailed(f"too few logged steps after the warm-up ({len(records)} records)")
    dt = end["time"] - start["time"]
    return ((end["train/tokens_seen"] - start["train/tokens_seen"]) / dt,
            (end["train/model_flops"] - start["train/model_flops"]) / dt, int(start["step"]), int(end["step"]))


def pretrain_check(architecture: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        p = ctx.plan
        out_dir = ctx.work / architecture
        extra = [f"model.architecture={architecture}", f"pretrain.max_steps={p.steps}"]
        if architecture != "bert":
            extra += ["data.objective=mlm", "pretrain.probe_examples=0", "tracking.plots=false"]
        ctx.run(mlm(ctx, "pretrain", out_dir, *extra), f"pretrain-{architecture}")
        run = layout(out_dir)
        metrics = json.loads((run.final / "metrics.json").read_text(encoding="utf-8"))
        if metrics.get("train/steps") != p.steps or not run.checkpoints.is_dir():
            raise CheckFailed(f"expected {p.steps} steps and a checkpoint, got {metrics.get('train/steps')} steps")
        records = train_records(run.pretrain / "metrics.jsonl")
        tok_s, flops_s, first, last = steady_throughput(records, p.warm)
        peak = ctx.info.get("peak_tflops")
        mfu = f"MFU {100 * flops_s / 1e12 / peak:.1f}%" if peak else "MFU n/a"
        loss0, loss1 = records[0]["train/loss"], records[-1]["train/loss"]
        ev = metrics.get("eval/mlm_loss")
        probe = metrics.get("probe/accuracy")
        return (f"{tok_s:,.0f} tokens/s, model {fmt_tflops(flops_s / 1e12)}, {mfu} (steps {first}-{last}); "
                f"loss {loss0:.2f} -> {loss1:.2f}" + (f", eval MLM loss {ev:.2f}" if ev is not None else "")
                + (f", probe accuracy {probe:.2f}" if probe is not None else ""))
    return run


def check_resume(ctx: Context) -> str:
    p = ctx.plan
    out_dir = ctx.work / "resume"
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = mlm(ctx, "pretrain", out_dir, "model.architecture=bert", f"pretrain.max_steps={p.resume_steps}",
              f"pretrain.save_steps={p.resume_save}", "pretrain.probe_examples=0", "tracking.plots=false")
    run = layout(out_dir)
    ckpts = run.checkpoints
    log1 = ctx.log_path("resume-1-killed")
    with open(log1, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ctx.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        complete: list[Path] = []
        while not complete:
            if proc.poll() is not None:
                raise CheckFailed(f"the first run ended (exit {proc.returncode}) before a checkpoint existed: "
                                  f"{last_error(log1.read_text(encoding='utf-8', errors='replace'))}")
            if ctx.remaining() <= 0:
                kill_group(proc)
                raise CheckFailed(f"no checkpoint within the {ctx.cap:.0f} s cap")
            time.sleep(0.05)
            complete = sorted(ckpts.glob("step-*/checkpoint.json")) if ckpts.is_dir() else []
        kill_group(proc)
    if proc.returncode != -signal.SIGKILL or run.final.exists():
        raise CheckFailed(f"the run finished (exit {proc.returncode}) before SIGKILL: raise resume_steps")
    done = sorted(ckpts.glob("step-*/checkpoint.json"), key=lambda q: int(q.parent.name.split("-")[1]))
    newest = done[-1].parent
    logged = train_records(run.pretrain / "metrics.jsonl")
    killed_at = logged[-1]["step"] if logged else 0
    out = ctx.run(cmd, "resume-2-resumed")
    m = re.search(r"resumed from (\S+): step (\d+)", out)
    if not m:
        raise CheckFailed("the second run did not log 'resumed from ...'")
    if Path(m.group(1)).name != newest.name:
        raise CheckFailed(f"resumed from {m.group(1)}, expected the newest complete checkpoint {newest}")
    steps = [int(r["step"]) for r in train_records(run.pretrain / "metrics.jsonl")]
    expected = list(range(p.logging_steps, p.resume_steps + 1, p.logging_steps))
    if steps != expected:
        repeated = sorted({s for s in steps if steps.count(s) > 1})
        raise CheckFailed(f"metrics.jsonl steps are not {expected[0]}..{expected[-1]} once each "
                          f"(repeated: {repeated[:5]}, count {len(steps)})")
    metrics = json.loads((run.final / "metrics.json").read_text(encoding="utf-8"))
    if metrics.get("train/steps") != p.resume_steps:
        raise CheckFailed(f"final model after {metrics.get('train/steps')} steps, expected {p.resume_steps}")
    return (f"SIGKILL at step {killed_at} ({newest.name} complete), resumed from {newest.name}, finished "
            f"{p.resume_steps} steps; metrics.jsonl steps {steps[0]}..{steps[-1]} without repeats")


def check_finetune(ctx: Context) -> str:
    p = ctx.plan
    out_dir = ctx.work / "bert"
    run = layout(out_dir)
    model = run.final
    ctx.run(mlm(ctx, "finetune", out_dir, f"finetune.model={model}", "finetune.task_name=sentiment",
                f"finetune.train_file={ROOT / 'data' / 'sentiment' / 'train.csv'}",
                f"finetune.validation_file={ROOT / 'data' / 'sentiment' / 'validation.csv'}",
                "finetune.seeds=[1]", "finetune.compare_baselines=false", *p.finetune), "finetune")
    metrics = json.loads((run.finetune_task("sentiment") / "final" / "metrics.json").read_text(encoding="utf-8"))
    acc = metrics.get("eval/accuracy")
    if not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
        raise CheckFailed(f"no validation accuracy in metrics.json ({acc!r})")
    return (f"validation accuracy {acc:.3f} (sentiment, best step {metrics.get('best_step')}), "
            f"{metrics.get('train_examples_per_second', float('nan')):,.0f} train examples/s")


def check_bench(ctx: Context) -> str:
    p = ctx.plan
    out = ctx.work / "bench.json"
    ctx.run([sys.executable, str(ROOT / "scripts" / "bench_pretrain.py"), *p.bench, "--corpus", p.corpus,
             "--work-dir", str(ctx.work / "bench"), "--json", str(out)], "bench_pretrain")
    results = json.loads(out.read_text(encoding="utf-8"))["results"]
    prec = p.bench[p.bench.index("--precisions") + 1]
    ours, trainer = results.get(f"bert/ours/{prec}"), results.get(f"bert/trainer/{prec}")
    if not ours or not trainer:
        raise CheckFailed(f"bench_pretrain.py results lack bert/ours/{prec} or bert/trainer/{prec}: {sorted(results)}")
    peak = ctx.info.get("peak_tflops")
    mfu = (lambda r: f", MFU {100 * r['flops_per_s'] / 1e12 / peak:.1f}%" if peak else "")
    return (f"{prec}: ours {ours['tokens_per_s']:,.0f} tokens/s{mfu(ours)} vs Trainer {trainer['tokens_per_s']:,.0f}"
            f"{mfu(trainer)} = {ours['tokens_per_s'] / trainer['tokens_per_s']:.2f}x")


CHECKS = [
    Check("install", check_install),
    Check("environment", check_environment, needs=("install",)),
    Check("tokenizer", check_tokenizer, needs=("environment",)),
    Check("pretrain bert", pretrain_check("bert"), needs=("tokenizer",)),
    Check("pretrain modernbert", pretrain_check("modernbert"), needs=("tokenizer",)),
    Check("pretrain electra", pretrain_check("electra"), needs=("tokenizer",)),
    Check("kill and resume", check_resume, needs=("tokenizer",)),
    Check("finetune", check_finetune, needs=("pretrain bert",)),
    Check("bench vs Trainer", check_bench, needs=("environment",)),
]


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny sizes, fp32 (automatic when torch.cuda.is_available() is false)")
    p.add_argument("--wheels", default=None, help="install missing requirements from this folder (pip --no-index)")
    p.add_argument("--skip-install", action="store_true", help="use the installed packages as they are")
    p.add_argument("--corpus", default=None,
                   help="pretraining corpus (default: ../shared/data Reuters if present, else data/corpus.txt; "
                        "dry run: data/corpus.txt)")
    p.add_argument("--work-dir", default=None, help="runs and logs go here (default: a new temporary folder)")
    p.add_argument("--precision", choices=("bf16", "fp16", "auto"), default=None,
                   help="pretrain/finetune mixed_precision on the GPU (default: bf16, fp16 on cards without bf16; "
                        "auto where the package has it)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, for a card "
                   "missing from PEAK_TFLOPS")
    p.add_argument("--cap-scale", type=float, default=1.0, help="multiply every time cap (slow disks, shared hosts)")
    p.add_argument("--only", default=None, help="comma list of check names to run (debugging); the others are skipped")
    return p.parse_args(argv)


def gpu_probe() -> dict:
    """``{"cuda": bool, "bf16": bool}`` from the target Python (before any install: torch must be there)."""
    code = ("import json, torch; c = torch.cuda.is_available(); "
            "print(json.dumps({'cuda': c, 'bf16': c and torch.cuda.is_bf16_supported()}))")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return {"cuda": False, "bf16": False}


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    probe = {"cuda": False, "bf16": False} if args.dry_run else gpu_probe()
    dry = args.dry_run or not probe["cuda"]
    if dry and not args.dry_run:
        print("[gpu_check] torch.cuda.is_available() is false: running the CPU dry run", file=sys.stderr)
    precision = args.precision or ("bf16" if probe["bf16"] else "fp16")  # fp16 + loss scaler before Ampere
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    plan = make_plan(dry, args.corpus, precision)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run on a GPU machine stays on the CPU, the bench included
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest, and kind to shared cores
        env["TOKENIZERS_PARALLELISM"] = "false"
    ctx = Context(plan, work, args, env)
    if args.only:
        ctx.only = {n.strip() for n in args.only.split(",")}
        unknown = ctx.only - {c.name for c in CHECKS}
        if unknown:
            raise SystemExit(f"--only: unknown checks {sorted(unknown)}; known: {[c.name for c in CHECKS]}")
    rows = execute(CHECKS, ctx, log=lambda m: print(m, file=sys.stderr, flush=True))
    i = ctx.info
    mode = "GPU" if not dry else "CPU dry run (tiny sizes, fp32; no GPU figures)"
    header = [f"# mlm_pretrain GPU check: {mode}",
              f"device: {i.get('device', '?')}" + (f", compute capability {i['capability']}, {i['memory_gib']} GiB, "
                                                   f"driver {i['driver']}" if i.get("gpu") else ""),
              f"torch {i.get('torch', '?')} (CUDA {i.get('cuda') or 'none'}), transformers {i.get('transformers', '?')}, "
              f"accelerate {i.get('accelerate', '?')}, datasets {i.get('datasets', '?')}, "
              f"mlm_pretrain {i.get('mlm_pretrain', '?')}, Python {i.get('python', '?')}",
              f"precision {plan.precision}; MFU against {fmt_tflops(i['peak_tflops']) if 'peak_tflops' in i else '?'} "
              f"({i.get('peak_label', '?')}); corpus {plan.corpus}; work dir {work}", ""]
    print(format_table(rows, header))
    print(f"(wall time {time.monotonic() - t0:.0f} s; logs in {work / 'logs'})")
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
