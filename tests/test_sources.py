"""Where inputs come from (mlm_pretrain.sources): Hub ids told from paths, and what happens with no Hub.

The reads themselves, against the local test Hub server, are in tests/test_hub_inputs.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlm_pretrain import sources

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("ref, expected", [
    ("bert-base-uncased", True), ("answerdotai/ModernBERT-base", True), ("nyu-mll/glue", True),
    ("runs/cpu-1h/pretrain/final", False), ("./model", False), ("/abs/model", False), ("~/model", False),
    ("../shared/data", False), ("a\\b", False), ("bad name", False), ("", False),
])
def test_hub_ids_are_told_from_paths(ref, expected):
    assert sources.looks_like_repo_id(ref) is expected


def test_an_existing_folder_is_used_as_it_is_even_when_it_reads_as_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "user" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    sources.forget()
    assert sources.local_folder("user/model", "finetune.model") == Path("user/model")
    assert sources.local_folder("not/here/at/all", "finetune.model") == Path("not/here/at/all")  # caller reports it


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_unreachable_hub_switches_the_process_to_the_cache_at_once(monkeypatch, caplog):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    sources.forget()
    try:
        t0 = time.perf_counter()
        assert sources.offline_if_unreachable() is True
        assert time.perf_counter() - t0 < 5
        assert constants.HF_HUB_OFFLINE is True and datasets.config.HF_HUB_OFFLINE is True
        assert "cannot be reached" in caplog.text and "local cache only" in caplog.text
    finally:
        sources.forget()


@pytest.mark.slow
@pytest.mark.parametrize("recipe, dataset, local_key", [
    ("cpu-1h", "Salesforce/wikitext", "corpus.files="),
    ("sst2", "nyu-mll/glue", "finetune.train_file="),
])
def test_a_recipe_offline_and_uncached_stops_at_once_naming_the_dataset_and_both_ways_out(tmp_path, recipe, dataset,
                                                                                         local_key, tiny_tokenizer_dir):
    """The issue's target: `mlm-pretrain run --config cpu-1h` with no network and an empty cache fails in
    under 30 s (here: well under), before any stage works."""
    exe = os.path.join(os.path.dirname(sys.executable), "mlm-pretrain")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = ["run"] if recipe == "cpu-1h" else ["finetune"]
    extra = [] if recipe == "cpu-1h" else ["finetune.init=random", f"tokenizer.pretrained={tiny_tokenizer_dir}"]
    t0 = time.perf_counter()
    r = subprocess.run([exe, *command, "--config", recipe, f"output_dir={tmp_path / 'run'}", *extra], capture_output=True,
                       text=True, timeout=120, env=env, cwd=tmp_path)
    took = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert dataset in r.stderr and local_key in r.stderr and "connect to the Hub once" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert took < 30
    assert not (tmp_path / "run" / "tokenizer").exists()  # nothing was started
