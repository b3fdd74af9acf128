"""Shared fixtures: the bundled data, a tiny tokenizer trained once per session, config factories."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # tests never reach the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
#: The real public data beside the checkout (../shared/data), for the tests that read it. A user's clone
#: has none: MLM_PRETRAIN_SHARED_DATA=none hides it (CI runs the fast tier so, to prove nothing else needs
#: it), and MLM_PRETRAIN_SHARED_DATA=DIR points at a copy elsewhere.
SHARED_DATA_ENV = "MLM_PRETRAIN_SHARED_DATA"


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is absent or hidden by :data:`SHARED_DATA_ENV`."""
    value = os.environ.get(SHARED_DATA_ENV, "")
    if value.lower() in ("none", "0", "off"):
        return None
    path = Path(value) if value else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public corpora); tests that need it skip when it is absent or hidden."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"../shared/data is not present (or hidden by {SHARED_DATA_ENV}=none): real-data test")
    return path


@pytest.fixture
def corpus_copies(tmp_path, data_dir):
    """A copy of the bundled ``corpus.txt`` in ``tmp_path``, and ``same_bytes(after)``: touch it to a
    second after ``after`` (a file written from it) and copy it to another folder; returns both paths,
    the same bytes under a new mtime and under a new path."""
    import shutil

    corpus = tmp_path / "corpus.txt"
    shutil.copy(data_dir / "corpus.txt", corpus)

    def same_bytes(after: Path) -> list[Path]:
        later = after.stat().st_mtime_ns + 10**9
        os.utime(corpus, ns=(later, later))  # touched
        moved = tmp_path / "elsewhere" / "corpus.txt"
        moved.parent.mkdir()
        shutil.copy(corpus, moved)  # and copied to another path
        return [corpus, moved]

    return corpus, same_bytes


@pytest.fixture
def make_config(tmp_path):
    """``make_config(**dotted_overrides)`` -> Config from the tiny recipe, writing under tmp_path."""
    from mlm_pretrain.config import load_config

    def _make(*args: str, **overrides):
        items = [f"output_dir={tmp_path / 'run'}", *args]
        items += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
        return load_config("tiny-bert", items)

    return _make


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A 2000-entry WordPiece tokenizer trained once on data/corpus.txt."""
    from mlm_pretrain.config import load_config
    from mlm_pretrain.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    cfg = load_config("tiny-bert", [f"output_dir={out}", "tokenizer.vocab_size=2000"])
    return train_tokenizer(cfg)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from mlm_pretrain.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny BertForPreTraining (1 layer, 32 wide) and its tokenizer in a save_pretrained folder: an encoder
    as pretraining exports it, or as a Hub model repository holds it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    out = tmp_path_factory.mktemp("tiny-encoder")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    BertForPreTraining(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                                  intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny BertForPreTraining (2 layers, 64 wide) + tokenizer, saved like pretrain/final: the encoder the
    fine-tuning tests start from."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=128, max_position_embeddings=128))
    out = tmp_path_factory.mktemp("encoder")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and far faster when other processes share the cores
    (modules use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def plain_allocator(monkeypatch):
    """No C-allocator variables in the environment (a test run may carry some), so the stages'
    ``malloc: auto`` acts as it does by default (:class:`mlm_pretrain.hardware.HeapReuse`)."""
    from mlm_pretrain.hardware import ALLOCATOR_ENV

    for name in (*ALLOCATOR_ENV, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def recipe_hub(tmp_path, monkeypatch):
    """The local test Hub server (tests/hub_server.py) holding tiny stand-ins of the public datasets the
    packaged recipes name (tests/hub_data.py), with this process's Hub clients pointed at it and fresh
    caches: a recipe runs as on a user's machine, its data read from "the Hub"."""
    from hub_data import seed_recipe_data
    from hub_server import HubServer, point_clients_at

    from mlm_pretrain import sources

    server = HubServer().start()
    seed_recipe_data(server)
    point_clients_at(server, monkeypatch, tmp_path / "hf-home")
    sources.forget()
    yield server
    server.stop()
    sources.forget()
