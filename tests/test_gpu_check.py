"""scripts/gpu_check.py: the prepared GPU check. Its CPU dry run runs here end to end (slow), so the
script cannot rot on machines without a GPU; the table, the peak lookup and the exit code are fast."""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


gc = _load()


@pytest.mark.parametrize("name, label, tflops", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.0),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.0),
    ("NVIDIA H200", "H200", 989.0),
    ("NVIDIA H200 NVL", "H200 NVL", 835.0),
    ("NVIDIA GH200 480GB", "GH200", 989.0),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("NVIDIA A100 80GB PCIe", "A100", 312.0),
    ("NVIDIA L4", "L4", 121.0),
    ("NVIDIA L40S", "L40S", 362.0),
])
def test_card_peak_matches_the_device_name(name, label, tflops):
    assert gc.card_peak(name) == (label, tflops)


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 3090", "NVIDIA L40", "AMD Instinct MI300X", ""])
def test_unknown_card_has_no_table_peak(name):
    assert gc.card_peak(name) is None


def _ctx(tmp_path, caps=None):
    plan = gc.make_plan(True, None)
    if caps:
        plan = gc.Plan(**{**plan.__dict__, "caps": caps})
    args = argparse.Namespace(cap_scale=1.0, skip_install=True, wheels=None, peak_tflops=None)
    return gc.Context(plan, tmp_path, args, dict(os.environ))


def test_a_failing_check_fails_the_run_but_the_table_is_complete(tmp_path):
    def boom(ctx):
        raise RuntimeError("kaboom")

    def verdict(ctx):
        raise gc.CheckFailed("loss is nan")

    checks = [gc.Check("a", lambda ctx: "1,234 tokens/s"), gc.Check("b", boom), gc.Check("c", verdict),
              gc.Check("d", lambda ctx: "fine"), gc.Check("e", lambda ctx: "never", needs=("b",))]
    rows = gc.execute(checks, _ctx(tmp_path), log=lambda m: None)
    assert [(r.check, r.result) for r in rows] == [("a", "ok"), ("b", "FAIL"), ("c", "FAIL"), ("d", "ok"),
                                                   ("e", "skipped")]
    assert rows[1].figures.startswith("RuntimeError: kaboom (gpu_check.py:")
    assert rows[2].figures == "loss is nan" and rows[4].figures == "needs b"
    assert gc.exit_code(rows) == 1
    table = gc.format_table(rows, ["# header"])
    lines = table.splitlines()
    assert lines[:3] == ["# header", "| check | result | figures | seconds |", "|---|---|---|---:|"]
    assert re.fullmatch(r"\| a \| ok \| 1,234 tokens/s \| \d+\.\d \|", lines[3])
    assert "2 of 5 checks passed" in table and "failed: b, c, e" in table


def test_all_ok_exits_zero_and_cells_stay_one_line(tmp_path):
    rows = gc.execute([gc.Check("x", lambda ctx: "a | b\nc")], _ctx(tmp_path), log=lambda m: None)
    assert gc.exit_code(rows) == 0 and gc.exit_code([]) == 1
    assert "| x | ok | a / b c |" in gc.format_table(rows)


def test_only_leaves_checks_out_without_failing(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.only = {"b"}
    rows = gc.execute([gc.Check("a", lambda c: "x"), gc.Check("b", lambda c: "y", needs=("a",))], ctx, log=lambda m: None)
    assert [r.result for r in rows] == ["not run", "ok"] and gc.exit_code(rows) == 0


def test_a_subprocess_past_its_cap_is_killed_and_fails(tmp_path):
    ctx = _ctx(tmp_path, caps={"slow": 1})

    def slow(ctx):
        ctx.run([sys.executable, "-c", "import time; time.sleep(30)"], "slow")
        return "done"

    rows = gc.execute([gc.Check("slow", slow)], ctx, log=lambda m: None)
    assert rows[0].result == "FAIL" and "timed out after the 1 s cap" in rows[0].figures
    assert rows[0].seconds < 10


def test_steady_throughput_skips_the_warm_up_steps():
    recs = [{"step": s, "time": 10.0 + s, "train/tokens_seen": 100.0 * s, "train/model_flops": 1e9 * s}
            for s in range(1, 11)]
    recs[0]["time"] = 0.0  # a slow first step (CUDA start) is not counted
    assert gc.steady_throughput(recs, warm=2) == (100.0, 1e9, 2, 10)
    with pytest.raises(gc.CheckFailed):
        gc.steady_throughput(recs[:1], warm=2)


def test_requirements_never_include_torch_and_gpu_caps_fit_8_minutes():
    reqs = gc.requirements()
    assert reqs and not any(r.lower().startswith("torch") for r in reqs) and any(r.startswith("transformers") for r in reqs)
    plan = gc.make_plan(False, None)
    assert sum(plan.caps.values()) <= 480 and set(plan.caps) == {c.name for c in gc.CHECKS}
    assert plan.precision == "bf16" and "--precisions" in plan.bench and "bf16" in plan.bench
    assert set(gc.make_plan(True, None).caps) == {c.name for c in gc.CHECKS}


def _env():
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}


@pytest.mark.slow
def test_failure_end_to_end_exits_non_zero(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--skip-install",
                        "--only", "tokenizer", "--corpus", str(tmp_path / "missing.txt"), "--work-dir",
                        str(tmp_path / "w")], capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert re.search(r"^\| tokenizer \| FAIL \| exit \d+: .*\(logs/tokenizer\.log\) \|", r.stdout, flags=re.M), r.stdout
    assert "| install | not run |" in r.stdout and "0 of 1 checks passed" in r.stdout


@pytest.mark.slow
def test_dry_run_passes_every_check_and_prints_one_table(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--work-dir", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=1200, cwd=ROOT, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    out = r.stdout
    assert out.count("| check | result | figures | seconds |") == 1
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \| ([^|]*?) \| ([\d.]+) \|$", out, flags=re.M)
    assert [name for name, *_ in rows] == [c.name for c in gc.CHECKS]
    assert all(result == "ok" for _, result, _, _ in rows), out
    figures = {name: fig for name, _, fig, _ in rows}
    assert "would install" in figures["install"] and "kept" in figures["install"]
    for arch in ("bert", "modernbert", "electra"):
        assert re.search(r"[\d,]+ tokens/s, .* MFU \d+\.\d%", figures[f"pretrain {arch}"]), figures
    assert re.search(r"resumed from step-\d+, finished 24 steps; metrics.jsonl steps 1\.\.24 without repeats",
                     figures["kill and resume"])
    assert re.search(r"validation accuracy [01]\.\d{3}", figures["finetune"])
    assert re.search(r"fp32: ours [\d,]+ tokens/s.* = \d+\.\d\dx", figures["bench vs Trainer"])
    assert "torch " in out and "transformers " in out and "CPU dry run" in out
    assert re.search(r"^device: .+ \(.*\), \d+ cores, \d+ threads", out, flags=re.M), out  # training.cpu_name()
    assert f"{len(rows)} of {len(rows)} checks passed" in out
