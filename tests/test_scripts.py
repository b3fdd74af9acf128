"""The benchmark and sweep scripts under scripts/ that a README section tells users to run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_sweep_pretrain_parses_variants():
    args = _script("sweep_pretrain").parse_args(["--variant", "base", "--variant", "lr", "pretrain.learning_rate=1e-3"])
    assert args.variant == [["base"], ["lr", "pretrain.learning_rate=1e-3"]]
    assert (args.recipe, args.minutes, args.parallel) == ("cpu-1h", 12.0, 2)
