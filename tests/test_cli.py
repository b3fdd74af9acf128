"""The command line: subcommands, exit codes and messages; the installed entry points."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from mlm_pretrain import cli
from mlm_pretrain.config import recipe_names


def test_recipes_and_config_commands(capsys):
    assert cli.main(["recipes"]) == 0
    assert capsys.readouterr().out.split() == recipe_names()
    assert cli.main(["config", "pretrain.max_steps=9"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["pretrain"]["max_steps"] == 9
    assert cli.main(["config", "--fields"]) == 0
    assert "pretrain.learning_rate (float, default 0.0001)" in capsys.readouterr().out


def test_bad_config_exits_2_with_the_key(capsys):
    assert cli.main(["tokenizer", "tokenizer.vocab_sise=10"]) == 2
    err = capsys.readouterr().err
    assert "mlm-pretrain tokenizer: error: unknown config key 'tokenizer.vocab_sise'" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_tokenizer_subcommand_writes_tokenizer(tmp_path, capsys):
    assert cli.main(["tokenizer", f"output_dir={tmp_path}", "tokenizer.vocab_size=1000"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["tokenizer"]["vocab_size"] == 1000


def test_missing_corpus_through_cli(tmp_path, capsys):
    assert cli.main(["tokenizer", f"output_dir={tmp_path}", f"corpus.files=[{tmp_path}/none.txt]"]) == 2
    assert f"corpus file '{tmp_path}/none.txt' does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_and_module_entry_points(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "mlm-pretrain")
    for argv in ([exe], [sys.executable, "-m", "mlm_pretrain"]):
        r = subprocess.run(argv + ["config", "--config", "tiny", "seed=5"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        assert yaml.safe_load(r.stdout)["seed"] == 5
        r = subprocess.run(argv + ["pretrain", "data.objective=zz"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and "data.objective: 'zz' is not allowed" in r.stderr
