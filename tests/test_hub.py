"""Hub publishing against a local server that speaks the Hub's HTTP API (tests/hub_server.py).

The real clients do the talking: ``huggingface_hub`` in this process (its endpoint constant is
pointed at the server), ``transformers`` ``from_pretrained`` / ``push_to_hub`` / ``pipeline`` and the
``mlm-pretrain`` CLI in subprocesses (``HF_ENDPOINT`` is read when ``huggingface_hub`` is imported).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hub_server import HubServer
from hub_server import client_env as hub_client_env
from mlm_pretrain.config import load_config, save_resolved

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_TESTtoken_4f9c2e7a1b8d3c6e5f0a9b8c7d6e5f4a"  # distinctive, so a leak is easy to grep
READ_TOKEN = "hf_TESTreadonly_0123456789abcdef"
BOB_TOKEN = "hf_TESTbob_fedcba9876543210"
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
PRETRAIN_METRICS = {"eval/mlm_loss": 6.8125, "eval/mlm_accuracy": 0.0417, "eval/nsp_accuracy": 0.53125,
                    "train/loss": 7.25, "step": 4}
FINETUNE_METRICS = {"task": "sentiment", "seed": 42, "best_step": 57, "metric_for_best": "accuracy",  # finetune.py's
                    "init": "pretrained", "eval/accuracy": 0.6133, "eval/f1": 0.5871, "test/accuracy": 0.59,
                    "train_examples_per_second": 812.5, "seeds": [42], "skipped": {"train": 0}}

#: The shape of prepare.py's stats.json (numbers of a real tiny run).
STATS = {"format_version": 1, "objective": "nsp", "corpus_documents": 400,
         "train": {"documents": 380, "sentences": 2427, "characters": 224915, "examples": 4104, "tokens": 376779},
         "validation": {"documents": 20, "sentences": 123, "characters": 11667, "examples": 35, "tokens": 3732}}


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def server():
    s = HubServer(tokens={TOKEN: ("alice", "write"), READ_TOKEN: ("alice", "read"),
                          BOB_TOKEN: ("bob", "write")}).start()
    yield s
    s.stop()


@pytest.fixture
def hub(server, monkeypatch, tmp_path):
    """This process's huggingface_hub talks to ``server`` with TOKEN (no login cache, no xet)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login-cache" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login-cache" / "stored_tokens"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return server


def client_env(server: HubServer, home: Path, token: str | None = TOKEN) -> dict:
    """Environment for a client subprocess: endpoint, token, no xet, online, a fresh cache
    (hub_server.client_env), this checkout importable, and ``datasets`` left offline as the session
    has it (these runs read local data only)."""
    env = hub_client_env(server, home, token)
    env["PYTHONPATH"] = str(ROOT)
    if "HF_DATASETS_OFFLINE" in os.environ:
        env["HF_DATASETS_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"]
    return env


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A run directory with a tokenizer, a tiny pretrained encoder and a tiny 3-label classifier."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining, BertForSequenceClassification

    from mlm_pretrain.identity import run_inputs

    run = tmp_path_factory.mktemp("hubrun") / "run"
    cfg = load_config("tiny-bert", [f"output_dir={run}"])
    save_resolved(cfg, run / "config.yaml")
    shutil.copytree(tiny_tokenizer_dir, run / "tokenizer")
    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    torch.manual_seed(0)
    arch = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=128)
    enc = run / "pretrain" / "final"
    BertForPreTraining(BertConfig(**arch)).save_pretrained(enc)
    tok.save_pretrained(enc)
    (enc / "metrics.json").write_text(json.dumps(PRETRAIN_METRICS))
    clf = run / "finetune" / "sentiment" / "final"
    BertForSequenceClassification(BertConfig(**arch, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})) \
        .save_pretrained(clf)
    tok.save_pretrained(clf)
    (clf / "metrics.json").write_text(json.dumps(FINETUNE_METRICS))
    inputs = run_inputs(cfg)  # the prepared data of exactly this run: <run>/data/<key>
    inputs.data_dir.mkdir(parents=True)
    (inputs.data_dir / "stats.json").write_text(json.dumps(STATS | {"key": inputs.data_key}))
    return run


def hub_cfg(run: Path, *overrides: str):
    return load_config("tiny-bert", [f"output_dir={run}", "hub.retry_wait=0.01", *overrides])


def fake_checkpoint(root: Path, step: int, payload: bytes = b"") -> Path:
    """A step-N folder shaped like training.save_checkpoint's (weights + marker)."""
    d = root / f"step-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"weights-%d-" % step + payload)
    (d / "checkpoint.json").write_text(json.dumps({"step": step}))
    return d


# ----------------------------------------------------------------------------------------------
# The server itself, with the real huggingface_hub client
# ----------------------------------------------------------------------------------------------
def test_server_speaks_the_hub_api(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi()
    assert api.whoami()["name"] == "alice"
    assert api.create_repo("alice/x", exist_ok=True) == api.create_repo("alice/x", exist_ok=True)
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "model.safetensors").write_bytes(os.urandom(5000))
    (folder / "sub" / "notes.txt").write_text("hello")
    first = api.upload_folder(repo_id="alice/x", folder_path=folder, commit_message="one")
    again = api.upload_folder(repo_id="alice/x", folder_path=folder, commit_message="same files")
    assert again.oid == first.oid  # unchanged files: the client skips the empty commit
    assert [c.title for c in api.list_repo_commits("alice/x")] == ["one", "initial commit"]
    assert sorted(api.list_repo_files("alice/x")) == [".gitattributes", "config.json", "model.safetensors",
                                                      "sub/notes.txt"]
    assert hub.files("alice/x")["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert hub.count("PUT", "/_lfs/upload/") == 1  # the weights went through LFS
    got = hf_hub_download("alice/x", "model.safetensors", cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == (folder / "model.safetensors").read_bytes()
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/x", "missing.json", cache_dir=tmp_path / "cache")
    assert hub.unrouted == []


# ----------------------------------------------------------------------------------------------
# push_to_hub
# ----------------------------------------------------------------------------------------------
def test_push_model_writes_card_and_commits(hub, run_dir):
    from huggingface_hub import ModelCard

    from mlm_pretrain.hub import push_to_hub

    url = push_to_hub(run_dir / "pretrain" / "final", hub_cfg(run_dir, "hub.repo_id=alice/encoder"))
    commits = hub.commits("alice/encoder")
    assert url == f"{hub.url}/alice/encoder/commit/{commits[-1].oid}"
    assert commits[-1].title == "Upload pretrained encoder"
    files = hub.files("alice/encoder")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json"} <= set(files)
    assert files["model.safetensors"] == (run_dir / "pretrain" / "final" / "model.safetensors").read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "fill-mask"
    assert 'pipeline("fill-mask", model="alice/encoder")' in card.text
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        ("mlm_loss", 6.8125), ("mlm_accuracy", 0.0417), ("nsp_accuracy", 0.53125)}


def test_push_to_branch_private_with_message(hub, run_dir):
    from mlm_pretrain.hub import push_to_hub

    cfg = hub_cfg(run_dir, "hub.repo_id=alice/tok", "hub.revision=experiment", "hub.private=true",
                  "hub.commit_message=tokenizer v1")
    push_to_hub(run_dir / "tokenizer", cfg)
    repo = hub.repos["alice/tok"]
    assert repo.private
    assert set(repo.branches) == {"main", "experiment"}
    assert [c.title for c in hub.commits("alice/tok", "experiment")] == ["initial commit", "tokenizer v1"]
    assert [c.title for c in hub.commits("alice/tok", "main")] == ["initial commit"]
    assert "vocab.txt" in hub.files("alice/tok", "experiment")
    assert "README.md" not in hub.files("alice/tok", "experiment")  # no model card for a tokenizer


def test_push_checkpoint_goes_to_last_checkpoint_folder(hub, tmp_path):
    from mlm_pretrain.hub import push_to_hub

    ckpts = tmp_path / "run" / "pretrain" / "checkpoints"
    cfg = hub_cfg(tmp_path / "run", "hub.repo_id=alice/ck")
    push_to_hub(fake_checkpoint(ckpts, 10), cfg)
    second = fake_checkpoint(ckpts, 20)
    (ckpts / "step-10" / "extra.bin").write_bytes(b"only in step 10")
    push_to_hub(second, cfg)
    files = hub.files("alice/ck")
    assert files["last-checkpoint/model.safetensors"] == b"weights-20-"
    assert json.loads(files["last-checkpoint/checkpoint.json"]) == {"step": 20}
    assert [c.title for c in hub.commits("alice/ck")][1:] == ["Training in progress, step 10",
                                                               "Training in progress, step 20"]


def test_push_missing_or_empty_dir_is_a_user_error(hub, tmp_path):
    from mlm_pretrain.hub import HubError, push_to_hub

    cfg = hub_cfg(tmp_path / "run", "hub.repo_id=alice/m")
    with pytest.raises(HubError, match="nothing to push"):
        push_to_hub(None, cfg)  # <output_dir>/pretrain/final does not exist
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="empty"):
        push_to_hub(tmp_path / "empty", cfg)
    assert hub.requests == []


# ----------------------------------------------------------------------------------------------
# Preflight
# ----------------------------------------------------------------------------------------------
def test_preflight_creates_repo_and_branch(hub, tmp_path):
    from mlm_pretrain.hub import preflight

    preflight(hub_cfg(tmp_path, "hub.push=true", "hub.repo_id=alice/new", "hub.revision=dev"))
    assert set(hub.repos["alice/new"].branches) == {"main", "dev"}
    preflight(hub_cfg(tmp_path, "hub.push=true", "hub.repo_id=alice/new", "hub.revision=dev"))  # idempotent
    n = len(hub.requests)
    preflight(hub_cfg(tmp_path, "hub.push=false", "hub.repo_id=alice/other"))  # nothing configured: no call
    assert len(hub.requests) == n and "alice/other" not in hub.repos


@pytest.mark.parametrize("repo_id", [None, "no-namespace", "alice/bad name", "alice/x/y", "-alice/x", "alice/x--y"])
def test_preflight_bad_repo_id(hub, tmp_path, repo_id):
    from mlm_pretrain.hub import HubError, preflight

    over = ["hub.push=true"] + ([f"hub.repo_id={repo_id}"] if repo_id else [])
    with pytest.raises(HubError, match="hub.repo_id"):
        preflight(hub_cfg(tmp_path, *over))
    assert hub.requests == []  # refused before talking to the Hub


def test_preflight_without_token(hub, tmp_path, monkeypatch):
    from mlm_pretrain.hub import HubError, preflight

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError) as e:
        preflight(hub_cfg(tmp_path, "hub.push=true", "hub.repo_id=alice/m"))
    assert "HF_TOKEN" in str(e.value) and "hf auth login" in str(e.value)
    assert hub.requests == []


@pytest.mark.parametrize("token,repo_id,match", [
    (BOB_TOKEN, "alice/m", "no write access"),                  # someone else's namespace: 403 on create
    (READ_TOKEN, "alice/m", "read-only"),                       # a read token
    ("hf_TESTunknown_token", "alice/m", "rejected the token"),  # 401
])
def test_preflight_access_refused(hub, tmp_path, monkeypatch, token, repo_id, match):
    from mlm_pretrain.hub import HubError, preflight

    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(HubError, match=match) as e:
        preflight(hub_cfg(tmp_path, "hub.push=true", f"hub.repo_id={repo_id}"))
    assert token not in str(e.value)
    assert "alice/m" not in hub.repos


def test_preflight_existing_repo_without_write_access(hub, tmp_path, monkeypatch):
    from mlm_pretrain.hub import HubError, preflight

    preflight(hub_cfg(tmp_path, "hub.push=true", "hub.repo_id=alice/shared"))  # alice creates it
    hub.forbid("alice", "alice/shared")  # ... and then loses write access: the server answers 403
    with pytest.raises(HubError, match="no write access to alice/shared"):
        preflight(hub_cfg(tmp_path, "hub.push=true", "hub.repo_id=alice/shared"))
    assert any(r.status == 403 for r in hub.requests)


def test_preflight_unreachable_or_offline(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from mlm_pretrain.hub import HubError, preflight

    cfg = hub_cfg(tmp_path, "hub.push=true", "hub.repo_id=alice/m")
    hub.stop()
    with pytest.raises(HubError, match="cannot reach the Hub"):
        preflight(cfg)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        preflight(cfg)


# ----------------------------------------------------------------------------------------------
# BackgroundPusher
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_background_pusher_one_commit_per_checkpoint(hub, tmp_path):
    from mlm_pretrain.hub import BackgroundPusher

    cfg = hub_cfg(tmp_path / "run", "hub.push=true", "hub.repo_id=alice/bg", "hub.strategy=checkpoint")
    ckpts = [fake_checkpoint(tmp_path / "ckpt", s) for s in (100, 200, 300)]
    hub.latency = 0.15  # a slow network: every request takes 0.15 s
    with BackgroundPusher(cfg) as pusher:
        start = time.perf_counter()
        for c in ckpts:
            pusher.submit(c)
        submit_s = time.perf_counter() - start
        assert pusher.is_pending(ckpts[-1])
        failures = pusher.wait(timeout=60)
    assert submit_s < 0.05, f"submit blocked the caller for {submit_s:.2f} s"
    assert failures == []
    assert not any(pusher.is_pending(c) for c in ckpts)
    assert [c.title for c in hub.commits("alice/bg")] == [
        "initial commit", "Training in progress, step 100", "Training in progress, step 200",
        "Training in progress, step 300"]
    assert hub.files("alice/bg")["last-checkpoint/model.safetensors"] == b"weights-300-"
    assert len(pusher.commit_urls) == 3


def test_background_pusher_retries_server_errors(hub, tmp_path):
    from mlm_pretrain.hub import BackgroundPusher

    cfg = hub_cfg(tmp_path / "run", "hub.push=true", "hub.repo_id=alice/flaky", "hub.retries=5")
    ckpt = fake_checkpoint(tmp_path / "ckpt", 1)
    hub.fail_next(2, status=500)                              # the first attempts die early ...
    hub.fail_next(1, status=503, path_contains="/commit/")    # ... and one at the commit itself
    pusher = BackgroundPusher(cfg)
    pusher.submit(ckpt, message="checkpoint 1")
    assert pusher.close() == []
    assert [c.title for c in hub.commits("alice/flaky")] == ["initial commit", "checkpoint 1"]
    assert sum(r.status >= 500 for r in hub.requests) == 3


def test_background_pusher_server_down(hub, tmp_path, caplog):
    from mlm_pretrain.hub import BackgroundPusher

    cfg = hub_cfg(tmp_path / "run", "hub.push=true", "hub.repo_id=alice/down", "hub.retries=3")
    ckpts = [fake_checkpoint(tmp_path / "ckpt", s, os.urandom(64)) for s in (1, 2)]
    before = {p: p.read_bytes() for c in ckpts for p in c.iterdir()}
    hub.stop()
    pusher = BackgroundPusher(cfg)
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.hub"):
        start = time.perf_counter()
        for c in ckpts:
            pusher.submit(c)
        assert time.perf_counter() - start < 0.1  # not blocked by the dead server
        failures = pusher.close()
    assert [f.path for f in failures] == ckpts
    assert all(f.attempts == 4 and "cannot reach the Hub" in f.error for f in failures)
    assert sum("failed after 4 attempt(s)" in r.getMessage() for r in caplog.records) == 2
    assert {p: p.read_bytes() for c in ckpts for p in c.iterdir()} == before  # local checkpoints intact


def test_background_pusher_does_not_retry_refusals(hub, tmp_path, monkeypatch):
    from mlm_pretrain.hub import BackgroundPusher

    monkeypatch.setenv("HF_TOKEN", BOB_TOKEN)  # bob cannot write to alice's namespace: 403
    pusher = BackgroundPusher(hub_cfg(tmp_path / "run", "hub.push=true", "hub.repo_id=alice/nope", "hub.retries=5"))
    pusher.submit(fake_checkpoint(tmp_path / "ckpt", 1))
    (failure,) = pusher.close()
    assert failure.attempts == 1 and "403" in failure.error
    assert BOB_TOKEN not in failure.error


@pytest.mark.slow
def test_pending_push_protects_checkpoint_from_keep_last(hub, tmp_path):
    from accelerate import Accelerator

    from mlm_pretrain.hub import BackgroundPusher
    from mlm_pretrain.checkpoints import list_checkpoints, save_checkpoint

    acc = Accelerator(cpu=True)
    root = tmp_path / "run" / "pretrain" / "checkpoints"
    pusher = BackgroundPusher(hub_cfg(tmp_path / "run", "hub.push=true", "hub.repo_id=alice/keep"))
    hub.latency = 0.3  # the push of step-1 is still running when step-2 is saved
    step1 = save_checkpoint(acc, root, 1, {}, keep_last=1, protect=pusher.is_pending)
    pusher.submit(step1)
    save_checkpoint(acc, root, 2, {}, keep_last=1, protect=pusher.is_pending)
    assert [p.name for p in list_checkpoints(root)] == ["step-1", "step-2"]  # kept: its push is pending
    assert pusher.close() == []
    hub.latency = 0
    save_checkpoint(acc, root, 3, {}, keep_last=1, protect=pusher.is_pending)
    assert [p.name for p in list_checkpoints(root)] == ["step-3"]
    assert "last-checkpoint/checkpoint.json" in hub.files("alice/keep")


# ----------------------------------------------------------------------------------------------
# Model cards
# ----------------------------------------------------------------------------------------------
def test_model_card_metadata_parses_back_with_real_metrics(run_dir, tmp_path):
    from huggingface_hub import ModelCard

    from mlm_pretrain.model_card import write_model_card

    model = tmp_path / "clf"
    shutil.copytree(run_dir / "finetune" / "sentiment" / "final", model)
    cfg = hub_cfg(run_dir, "hub.repo_id=alice/sentiment", "hub.license=mit", "hub.language=[en, fr]",
                  "finetune.model=alice/encoder")
    path = write_model_card(model, cfg, kind="finetune", metrics=FINETUNE_METRICS,
                            extra={"hardware": "1x CPU", "training_time_s": 12.5})
    card = ModelCard.load(path)
    d = card.data
    assert (d.library_name, d.pipeline_tag, d.license, d.language) == (
        "transformers", "text-classification", "mit", ["en", "fr"])
    assert "text-classification" in d.tags
    assert d.base_model == "alice/encoder"  # fine-tuned from a Hub id: named in the metadata
    got = {(r.metric_type, r.dataset_split): r.metric_value for r in d.eval_results}
    assert got == {("accuracy", "validation"): 0.6133, ("f1", "validation"): 0.5871, ("accuracy", "test"): 0.59}
    text = card.text
    assert "negative, neutral, positive" in text
    assert 'pipeline("text-classification", model="alice/sentiment")' in text
    assert "| Hardware | 1x CPU |" in text and "| Best step | 57 |" in text and "| Seed | 42 |" in text
    assert "## Limitations" in text and "## Architecture" in text


def test_split_metrics_results_versus_training_facts():
    from mlm_pretrain.model_card import split_metrics

    results, facts = split_metrics(FINETUNE_METRICS)
    assert results == [("accuracy", "validation", 0.6133), ("f1", "validation", 0.5871), ("accuracy", "test", 0.59)]
    assert facts["best_step"] == 57 and facts["seed"] == 42 and "train_examples_per_second" in facts
    results, facts = split_metrics({"mlm_accuracy": 0.25, "steps": 10, "train_loss": 2.0, "loss": float("nan"),
                                    "hardware": "cpu", "missing": None})
    assert results == [("mlm_accuracy", "validation", 0.25)]
    assert facts == {"steps": 10, "train_loss": 2.0, "hardware": "cpu"}


def test_model_card_pretrain_facts_from_disk_and_nothing_invented(run_dir, tmp_path):
    from huggingface_hub import ModelCard

    from mlm_pretrain.model_card import write_model_card

    cfg = hub_cfg(run_dir, "hub.repo_id=alice/encoder")
    card = ModelCard.load(write_model_card(run_dir / "pretrain" / "final", cfg, kind="pretrain",
                                           metrics=PRETRAIN_METRICS))
    assert card.data.pipeline_tag == "fill-mask" and "nsp" in card.data.tags
    assert "base_model" not in card.data.to_dict() and "datasets" not in card.data.to_dict()
    text = card.text
    # from the run's data/<key>/stats.json; the corpus is unchanged since, so its content hash is given
    assert "| Documents | 400 |" in text and "| Sentences | 2,550 |" in text
    assert "| Training examples | 4,104 (376,779 tokens, 5 passes over the corpus) |" in text
    sha = hashlib.sha256((ROOT / "data" / "corpus.txt").read_bytes()).hexdigest()
    assert f"| Corpus SHA-256 | {sha} |" in text
    assert "next sentence prediction" in text.lower()
    assert "| Layers | 2 |" in text and "| Hidden size | 32 |" in text
    assert "Hardware" not in text and "Training time" not in text  # not known: left out

    bare = tmp_path / "bare"  # a model dir outside any run: no stats, no run config
    shutil.copytree(run_dir / "pretrain" / "final", bare, ignore=shutil.ignore_patterns("README.md"))
    text = ModelCard.load(write_model_card(bare, hub_cfg(tmp_path / "elsewhere"), kind="pretrain", metrics={})).text
    assert "Documents" not in text and "Evaluation results" not in text
    assert f'model="{bare}"' in text  # no repo id: the usage snippet names the local folder


def test_refresh_model_card_keeps_inputs_and_user_cards(run_dir, tmp_path):
    from huggingface_hub import ModelCard

    from mlm_pretrain.model_card import refresh_model_card, write_model_card

    model = tmp_path / "enc"
    shutil.copytree(run_dir / "pretrain" / "final", model)
    write_model_card(model, hub_cfg(run_dir), kind="pretrain", metrics=PRETRAIN_METRICS,
                     extra={"hardware": "1x A100 --> fast"})
    refresh_model_card(model, hub_cfg(run_dir, "hub.repo_id=alice/renamed"))
    card = ModelCard.load(model / "README.md")
    assert 'model="alice/renamed"' in card.text
    assert "| Hardware | 1x A100 --> fast |" in card.text  # extra facts survive a refresh
    assert {r.metric_value for r in card.data.eval_results} == {6.8125, 0.0417, 0.53125}

    (model / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n")
    refresh_model_card(model, hub_cfg(run_dir, "hub.repo_id=alice/renamed"))
    assert (model / "README.md").read_text() == "---\nlicense: mit\n---\n# My own card\n"


# ----------------------------------------------------------------------------------------------
# Round trip with transformers, the CLI, and no token anywhere
# ----------------------------------------------------------------------------------------------
ROUND_TRIP = textwrap.dedent("""
    import json, sys, torch
    from transformers import (AutoModelForPreTraining, AutoModelForSequenceClassification, AutoTokenizer,
                              BertConfig, BertForMaskedLM, pipeline)
    run = sys.argv[1]
    out = {}
    def same(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    text = "the team won the match on sunday ."
    for repo, local in [("alice/tokenizer", run + "/tokenizer"), ("alice/encoder", run + "/pretrain/final"),
                        ("alice/sentiment", run + "/finetune/sentiment/final")]:
        a, b = AutoTokenizer.from_pretrained(repo), AutoTokenizer.from_pretrained(local)
        out[repo + ":tokenizer"] = a.get_vocab() == b.get_vocab() and a(text, "second one")["input_ids"] == b(text, "second one")["input_ids"]
    out["encoder"] = same(AutoModelForPreTraining.from_pretrained("alice/encoder"),
                          AutoModelForPreTraining.from_pretrained(run + "/pretrain/final"))
    clf = AutoModelForSequenceClassification.from_pretrained("alice/sentiment")
    out["classifier"] = same(clf, AutoModelForSequenceClassification.from_pretrained(run + "/finetune/sentiment/final"))
    out["labels"] = clf.config.id2label
    fill = pipeline("fill-mask", model="alice/encoder")
    out["fill_mask"] = len(fill("the team won the [MASK] on sunday ."))
    out["classify"] = pipeline("text-classification", model="alice/sentiment")(text)[0]["label"]
    # fine-tuning from a Hub id (finetune.model=alice/encoder) starts from exactly these weights
    head = AutoModelForSequenceClassification.from_pretrained("alice/encoder", num_labels=3)
    enc = AutoModelForPreTraining.from_pretrained("alice/encoder")
    out["finetune_from_hub"] = all(torch.equal(v, enc.bert.state_dict()[k])
                                   for k, v in head.bert.state_dict().items() if k in enc.bert.state_dict())
    # transformers' own push_to_hub speaks to the same server
    m = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32))
    m.push_to_hub("alice/pushed-by-transformers")
    out["transformers_push"] = same(m, BertForMaskedLM.from_pretrained("alice/pushed-by-transformers"))
    print("RESULT " + json.dumps(out))
""")


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_round_trip_with_transformers(hub, run_dir, tmp_path):
    from mlm_pretrain.hub import push_to_hub

    for path, repo in [(run_dir / "tokenizer", "alice/tokenizer"), (run_dir / "pretrain" / "final", "alice/encoder"),
                       (run_dir / "finetune" / "sentiment" / "final", "alice/sentiment")]:
        push_to_hub(path, hub_cfg(run_dir, f"hub.repo_id={repo}"))
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(run_dir)], capture_output=True, text=True,
                          env=client_env(hub, tmp_path / "home"), timeout=300)
    res = _result(proc)
    assert res == {"alice/tokenizer:tokenizer": True, "alice/encoder:tokenizer": True,
                   "alice/sentiment:tokenizer": True, "encoder": True, "classifier": True,
                   "labels": {str(k): v for k, v in LABELS.items()}, "fill_mask": 5,
                   "classify": res["classify"], "finetune_from_hub": True, "transformers_push": True}
    assert res["classify"] in LABELS.values()
    assert hub.unrouted == []


@pytest.mark.slow
def test_cli_push_and_no_token_anywhere(hub, run_dir, tmp_path):
    """`mlm-pretrain push` in a subprocess; then no file of the run, log line or output holds the token."""
    from mlm_pretrain.hub import BackgroundPusher, preflight, push_to_hub

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    proc = subprocess.run(
        [sys.executable, "-m", "mlm_pretrain", "push", str(run / "finetune" / "sentiment" / "final"),
         "hub.repo_id=alice/cli-model", "hub.private=true", f"output_dir={run}", "--log-level", "DEBUG"],
        capture_output=True, text=True, env=client_env(hub, tmp_path / "home"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commit = hub.commits("alice/cli-model")[-1]
    assert proc.stdout.strip().splitlines()[-1] == f"{hub.url}/alice/cli-model/commit/{commit.oid}"
    assert commit.title == "Upload fine-tuned classifier" and hub.repos["alice/cli-model"].private
    assert "README.md" in hub.files("alice/cli-model")

    bad = subprocess.run([sys.executable, "-m", "mlm_pretrain", "push", str(run / "tokenizer"),
                          "hub.repo_id=alice/cli-model"], capture_output=True, text=True,
                         env=client_env(hub, tmp_path / "home", token=None), timeout=300)
    assert bad.returncode == 2 and "HF_TOKEN" in bad.stderr and "Traceback" not in bad.stderr

    # the in-process API too, with every logger at DEBUG
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    old = [(lg.level, lg.handlers[:]) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    try:
        cfg = hub_cfg(run, "hub.push=true", "hub.repo_id=alice/leak-check", "hub.strategy=checkpoint")
        preflight(cfg)
        with BackgroundPusher(cfg) as pusher:
            pusher.submit(fake_checkpoint(run / "pretrain" / "checkpoints", 5))
        push_to_hub(run / "pretrain" / "final", cfg)
    finally:
        for lg, (level, handlers) in zip(loggers, old):
            lg.setLevel(level)
            lg.handlers[:] = handlers
    streams = {"cli stdout": proc.stdout, "cli stderr": proc.stderr, "bad stderr": bad.stderr, "logs": buf.getvalue()}
    assert "alice/leak-check" in buf.getvalue()  # the logs were captured
    for name, text in streams.items():
        assert TOKEN not in text, name
    leaked = [p for p in run.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
    for repo in hub.repos.values():  # nor in anything uploaded
        assert not any(TOKEN.encode() in data for data in hub.files(repo.repo_id).values())


# ----------------------------------------------------------------------------------------------
# The pretraining loop's Hub call sites (mlm_pretrain/pretrain.py)
# ----------------------------------------------------------------------------------------------
def pretrain_cfg(tmp_path: Path, tiny_tokenizer_dir: Path, *overrides: str):
    return load_config("tiny-bert", [
        f"output_dir={tmp_path / 'run'}", f"tokenizer.pretrained={tiny_tokenizer_dir}",
        f"data.cache_dir={tmp_path.parent / 'shared-prepared-data'}", "data.dupe_factor=1",
        "data.max_seq_length=64", "model.max_position_embeddings=64",
        "pretrain.max_steps=4", "pretrain.save_steps=2", "pretrain.eval_steps=4", "pretrain.batch_size=4",
        "pretrain.keep_last=1", "pretrain.logging_steps=1", "tracking.report_to=[]", "tracking.plots=false",
        "hub.push=true", "hub.strategy=checkpoint", "hub.retries=2", "hub.retry_wait=0.01", *overrides])


@pytest.mark.slow
def test_pretrain_pushes_each_checkpoint_and_the_final_model(hub, tmp_path, tiny_tokenizer_dir):
    from huggingface_hub import ModelCard

    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.pretrain import pretrain

    cfg = pretrain_cfg(tmp_path, tiny_tokenizer_dir, "hub.repo_id=alice/tiny-encoder")
    prepare_pretraining_data(cfg)
    final = pretrain(cfg)
    assert [c.title for c in hub.commits("alice/tiny-encoder")] == [
        "initial commit", "Training in progress, step 2", "Training in progress, step 4", "Upload pretrained encoder"]
    files = hub.files("alice/tiny-encoder")
    assert json.loads(files["last-checkpoint/checkpoint.json"])["step"] == 4
    assert files["model.safetensors"] == (final / "model.safetensors").read_bytes()
    card = ModelCard(files["README.md"].decode())
    saved = json.loads((final / "metrics.json").read_text())
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == \
        {k[len("eval/"):]: v for k, v in saved.items() if k.startswith("eval/") and isinstance(v, (int, float))}
    assert 'model="alice/tiny-encoder"' in card.text and ".tmp" not in card.text


@pytest.mark.slow
def test_pretrain_completes_when_the_hub_goes_down(hub, tmp_path, tiny_tokenizer_dir, monkeypatch, caplog):
    import mlm_pretrain.pretrain as pretrain_module
    from mlm_pretrain.checkpoints import list_checkpoints
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.pretrain import pretrain

    real_preflight = pretrain_module.preflight

    def preflight_then_down(cfg):  # the Hub is fine when training starts, then goes away
        real_preflight(cfg)
        hub.stop()

    monkeypatch.setattr(pretrain_module, "preflight", preflight_then_down)
    cfg = pretrain_cfg(tmp_path, tiny_tokenizer_dir, "hub.repo_id=alice/unlucky", "pretrain.keep_last=3")
    prepare_pretraining_data(cfg)
    with caplog.at_level(logging.WARNING):
        final = pretrain(cfg)
    assert (final / "model.safetensors").is_file()
    ckpts = list_checkpoints(cfg.run_dir / "pretrain" / "checkpoints")
    assert [p.name for p in ckpts] == ["step-2", "step-4"]  # every local checkpoint is complete and kept
    failed = [r for r in caplog.records if r.name == "mlm_pretrain.hub" and "failed after 3 attempt(s)" in r.getMessage()]
    assert len(failed) == 3  # both checkpoints and the final model, each reported
    assert [c.title for c in hub.commits("alice/unlucky")] == ["initial commit"]


@pytest.mark.slow
def test_finetune_from_a_hub_model_id(hub, run_dir, tmp_path):
    """`mlm-pretrain finetune finetune.model=alice/encoder` downloads the encoder from the (local) Hub."""
    from mlm_pretrain.hub import push_to_hub

    push_to_hub(run_dir / "pretrain" / "final", hub_cfg(run_dir, "hub.repo_id=alice/encoder"))
    out = tmp_path / "ft"
    proc = subprocess.run(
        [sys.executable, "-m", "mlm_pretrain", "finetune", f"output_dir={out}", "finetune.model=alice/encoder",
         "finetune.max_steps=2", "finetune.batch_size=8", "finetune.eval_steps=2", "tracking.report_to=[]",
         "tracking.plots=false"],
        capture_output=True, text=True, env=client_env(hub, tmp_path / "home"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r.status for r in hub.requests if r.method == "GET" and r.path.startswith("/alice/encoder/resolve/")
            and r.path.endswith("/model.safetensors")] == [200]  # the weights came from the server
    final = out / "finetune" / "sentiment" / "final"
    assert json.loads((final / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]


def _finetune_cfg(run_dir: Path, out: Path, *overrides: str):
    return hub_cfg(out, f"finetune.model={run_dir / 'pretrain' / 'final'}", "finetune.max_steps=2",
                   "finetune.batch_size=8", "finetune.eval_steps=2", "finetune.seeds=[1,2]", "finetune.max_length=64",
                   "tracking.report_to=[]", "tracking.plots=false", *overrides)


@pytest.mark.slow
def test_finetune_alone_pushes_the_median_seed_classifier(hub, run_dir, tmp_path):
    """`mlm-pretrain finetune hub.push=true hub.repo_id=...` publishes final/ (what `run` does per task)."""
    from mlm_pretrain.finetune import finetune

    final = finetune(_finetune_cfg(run_dir, tmp_path / "ft", "hub.push=true", "hub.repo_id=alice/classifier"))
    files = hub.files("alice/classifier")
    assert files["model.safetensors"] == (final / "model.safetensors").read_bytes()
    assert json.loads(files["config.json"])["architectures"] == ["BertForSequenceClassification"]
    assert "text-classification" in files["README.md"].decode()
    assert len(hub.commits("alice/classifier")) == 2  # the repo's initial commit, then the classifier


@pytest.mark.slow
def test_finetune_push_checks_the_token_before_training_and_keeps_the_model_when_the_push_fails(
        hub, run_dir, tmp_path, monkeypatch, caplog):
    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.hub import HubError

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="HF_TOKEN"):
        finetune(_finetune_cfg(run_dir, tmp_path / "a", "hub.push=true", "hub.repo_id=alice/c"))
    assert not (tmp_path / "a" / "finetune" / "sentiment" / "seed-1").exists()  # nothing trained

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.fail_next(50, status=500, path_contains="/commit/")  # every commit attempt dies
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.finetune"):
        final = finetune(_finetune_cfg(run_dir, tmp_path / "b", "hub.push=true", "hub.repo_id=alice/c",
                                       "hub.retries=1"))
    assert (final / "model.safetensors").is_file()
    assert f"`mlm-pretrain push {final} hub.repo_id=alice/c` tries again" in caplog.text
    assert "model.safetensors" not in hub.files("alice/c")


@pytest.mark.slow
def test_run_pushes_encoder_and_classifier_to_their_own_repos(hub, tmp_path, tiny_tokenizer_dir):
    """`mlm-pretrain run` with hub.push: the encoder to hub.repo_id, the classifier to <repo_id>-<task>."""
    from mlm_pretrain.pipeline import run_pipeline

    cfg = pretrain_cfg(tmp_path, tiny_tokenizer_dir, "hub.repo_id=alice/runner", "hub.strategy=end",
                       "finetune.max_steps=2", "finetune.batch_size=16", "finetune.max_length=64")
    run_pipeline(cfg)
    enc, clf = hub.files("alice/runner"), hub.files("alice/runner-sentiment")
    assert json.loads(enc["config.json"])["architectures"] == ["BertForPreTraining"]
    clf_config = json.loads(clf["config.json"])
    assert clf_config["architectures"] == ["BertForSequenceClassification"]
    assert sorted(clf_config["id2label"].values()) == ["negative", "neutral", "positive"]
    assert "text-classification" in clf["README.md"].decode()
