"""The test Hub server (tests/hub_server.py) read by the real clients: ``huggingface_hub`` downloads and
repo info, ``transformers`` ``from_pretrained``, ``datasets.load_dataset`` of the layouts Hub dataset
repos use (per-config parquet with a README as ``nyu-mll/glue`` has it, ``data/*.jsonl``, root csv
files), and the typed errors the clients raise for what is missing or unreachable.

The clients run in this process, pointed at the server with ``point_clients_at`` (fresh caches under
tmp_path; conftest's offline flags lifted for the test only); one slow test runs them in a subprocess
with ``client_env``.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hub_server import HubServer, client_env, point_clients_at

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "hf_TESTread_alice_5b1e0c9d"
BOB_TOKEN = "hf_TESTread_bob_77aa0f3e"
WORDS = "the cat sat on the mat . a dog ran to the park and the cats saw dogs running".split()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A server with alice's and bob's tokens; this process's clients talk to it, without a token."""
    server = HubServer(tokens={TOKEN: ("alice", "write"), BOB_TOKEN: ("bob", "write")}).start()
    point_clients_at(server, monkeypatch, tmp_path / "home")
    yield server
    server.stop()


# ----------------------------------------------------------------------------------------------
# A tiny BERT model repository
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A tiny BERT (hidden 32, 2 layers) and a WordPiece tokenizer trained on a handful of words,
    saved with save_pretrained: (folder, path -> bytes of every file)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainers.WordPieceTrainer(vocab_size=80, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    return folder, files


def _same_weights(a, b) -> None:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_model_repo_snapshot_download_and_from_pretrained(hub, tiny_bert, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, list_repo_files, snapshot_download
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder, files = tiny_bert
    sha = hub.add_repo("alice/tiny-bert", files | {"README.md": "---\nlicense: mit\n---\n# tiny\n"})
    assert hub.repos["alice/tiny-bert"].commits[sha].files["model.safetensors"].lfs_sha256  # stored as LFS

    snap = Path(snapshot_download("alice/tiny-bert", allow_patterns=["*.json", "*.safetensors"],
                                  ignore_patterns=["tokenizer*"]))
    assert snap.name == sha
    got = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert got == sorted(p for p in files if p.endswith((".json", ".safetensors")) and not p.startswith("tokenizer"))
    assert (snap / "model.safetensors").read_bytes() == files["model.safetensors"]
    full = Path(snapshot_download("alice/tiny-bert"))
    assert {p.name for p in full.iterdir()} == set(files) | {"README.md", ".gitattributes"}

    assert Path(hf_hub_download("alice/tiny-bert", "config.json")).read_bytes() == files["config.json"]
    info = HfApi().model_info("alice/tiny-bert", files_metadata=True)
    assert info.sha == sha and info.card_data.license == "mit"
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model.safetensors"] == len(files["model.safetensors"])
    assert next(s for s in info.siblings if s.rfilename == "model.safetensors").lfs.size == sizes["model.safetensors"]
    assert sorted(list_repo_files("alice/tiny-bert")) == sorted(set(files) | {"README.md", ".gitattributes"})

    assert AutoConfig.from_pretrained("alice/tiny-bert").hidden_size == 32
    tok = AutoTokenizer.from_pretrained("alice/tiny-bert")
    local_tok = AutoTokenizer.from_pretrained(folder)
    assert tok("the cat sat on the mat")["input_ids"] == local_tok("the cat sat on the mat")["input_ids"]
    assert tok.convert_ids_to_tokens(tok("the dog")["input_ids"]) == ["[CLS]", "the", "dog", "[SEP]"]
    _same_weights(AutoModel.from_pretrained("alice/tiny-bert"), AutoModel.from_pretrained(folder))
    assert hub.unrouted == []


def test_model_repo_without_namespace(hub, tiny_bert):
    """A legacy id like ``bert-base-uncased``: validate_repo_id allows it, and so do the downloads."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import validate_repo_id
    from transformers import AutoModel

    folder, files = tiny_bert
    validate_repo_id("tiny-bert-legacy")
    sha = hub.add_repo("tiny-bert-legacy", files)
    assert HfApi().model_info("tiny-bert-legacy").sha == sha
    snap = Path(snapshot_download("tiny-bert-legacy", allow_patterns=["config.json"]))
    assert json.loads((snap / "config.json").read_text())["num_hidden_layers"] == 2
    _same_weights(AutoModel.from_pretrained("tiny-bert-legacy"), AutoModel.from_pretrained(folder))
    assert any(r.method == "GET" and r.path == f"/tiny-bert-legacy/resolve/{sha}/model.safetensors" and r.status == 200
               for r in hub.requests)
    assert hub.unrouted == []


def test_dataset_repo_without_namespace(hub):
    """The server serves one, huggingface_hub downloads from it, but datasets' HfFileSystem paths
    need a namespace: load_dataset refuses it (client side, after finding the repo)."""
    import datasets
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfUriError

    sha = hub.add_repo("legacy-lines", {"data/train.jsonl": _jsonl(JSONL_TRAIN)}, repo_type="dataset")
    assert HfApi().dataset_info("legacy-lines").sha == sha
    downloaded = hf_hub_download("legacy-lines", "data/train.jsonl", repo_type="dataset")
    assert Path(downloaded).read_text() == _jsonl(JSONL_TRAIN)
    with pytest.raises(HfUriError, match="Repository id must be 'namespace/name'"):
        datasets.load_dataset("legacy-lines")


def test_model_repo_errors(hub, tiny_bert):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    hub.add_repo("alice/tiny-bert", tiny_bert[1])
    hub.add_repo("alice/secret", {"config.json": "{}"}, private=True)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("alice/missing")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/tiny-bert", "nope.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/tiny-bert", "config.json", revision="no-such-branch")
    # private: hidden without a token (401) and from bob (404), readable by its owner
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=BOB_TOKEN).model_info("alice/secret")
    assert [r.status for r in hub.requests if r.path == "/api/models/alice/secret"] == [401, 404]
    assert Path(hf_hub_download("alice/secret", "config.json", token=TOKEN)).read_text() == "{}"


# ----------------------------------------------------------------------------------------------
# Dataset repositories
# ----------------------------------------------------------------------------------------------
SST2 = {"train": [("a lovely film", 1), ("dull and slow", 0), ("the cast shines", 1)],
        "validation": [("not worth it", 0), ("a small gem", 1)]}
COLA = {"train": [("the cat sat", 1), ("sat cat the", 0)], "validation": [("a dog ran", 1)]}

GLUE_README = """\
---
dataset_info:
- config_name: cola
  features:
  - name: sentence
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': unacceptable
          '1': acceptable
  - name: idx
    dtype: int32
  splits:
  - name: train
    num_bytes: 200
    num_examples: 2
  - name: validation
    num_bytes: 100
    num_examples: 1
- config_name: sst2
  features:
  - name: sentence
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': negative
          '1': positive
  - name: idx
    dtype: int32
  splits:
  - name: train
    num_bytes: 300
    num_examples: 3
  - name: validation
    num_bytes: 200
    num_examples: 2
configs:
- config_name: cola
  data_files:
  - split: train
    path: cola/train-*
  - split: validation
    path: cola/validation-*
- config_name: sst2
  data_files:
  - split: train
    path: sst2/train-*
  - split: validation
    path: sst2/validation-*
---
# GLUE (a test copy)
"""


def _parquet(rows: list[tuple[str, int]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"sentence": [s for s, _ in rows], "label": pa.array([l for _, l in rows], pa.int64()),
                      "idx": pa.array(range(len(rows)), pa.int32())})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _glue_files() -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {"README.md": GLUE_README}
    for name, data in (("sst2", SST2), ("cola", COLA)):
        for split, rows in data.items():
            files[f"{name}/{split}-00000-of-00001.parquet"] = _parquet(rows)
    return files


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


JSONL_TRAIN = [{"text": "first line", "score": 0.5}, {"text": "second line", "score": 1.5}]
JSONL_VALIDATION = [{"text": "held out", "score": 2.0}]


def test_parquet_configs_with_class_labels(hub):
    import datasets
    from huggingface_hub import HfApi

    sha = hub.add_repo("alice/glue", _glue_files(), repo_type="dataset")
    assert "alice/glue" not in hub.repos and hub.dataset_repos["alice/glue"].branches["main"] == sha

    train = datasets.load_dataset("alice/glue", "sst2", split="train")
    assert isinstance(train, datasets.Dataset)
    assert train.column_names == ["sentence", "label", "idx"]
    assert isinstance(train.features["label"], datasets.ClassLabel)
    assert train.features["label"].names == ["negative", "positive"]
    assert [(r["sentence"], r["label"]) for r in train] == SST2["train"]
    assert train["idx"] == [0, 1, 2]

    dd = datasets.load_dataset("alice/glue", "cola")
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "validation"}
    assert dd["train"].features["label"].names == ["unacceptable", "acceptable"]
    assert [(r["sentence"], r["label"]) for r in dd["validation"]] == COLA["validation"]

    info = HfApi().dataset_info("alice/glue")
    assert info.sha == sha and info.id == "alice/glue"
    assert [c["config_name"] for c in info.card_data.configs] == ["cola", "sst2"]
    assert {s.rfilename for s in info.siblings} >= {"README.md", "sst2/train-00000-of-00001.parquet"}
    assert hub.unrouted == []


def test_parquet_streaming(hub):
    import datasets

    hub.add_repo("alice/glue", _glue_files(), repo_type="dataset")
    stream = datasets.load_dataset("alice/glue", "sst2", split="validation", streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert stream.features["label"].names == ["negative", "positive"]
    assert [(r["sentence"], r["label"], r["idx"]) for r in stream] == [(s, l, i) for i, (s, l) in
                                                                       enumerate(SST2["validation"])]
    assert hub.count("GET", "/datasets/alice/glue/resolve/") >= 1  # read from the server, not a cache
    assert hub.unrouted == []


def test_jsonl_data_folder_default_config(hub):
    import datasets

    hub.add_repo("alice/lines", {"data/train.jsonl": _jsonl(JSONL_TRAIN),
                                 "data/validation.jsonl": _jsonl(JSONL_VALIDATION)}, repo_type="dataset")
    dd = datasets.load_dataset("alice/lines")
    assert set(dd) == {"train", "validation"}
    assert dd["train"].to_list() == JSONL_TRAIN and dd["validation"].to_list() == JSONL_VALIDATION
    validation = datasets.load_dataset("alice/lines", "default", split="validation")
    assert validation.column_names == ["text", "score"] and validation["text"] == ["held out"]
    assert hub.unrouted == []


def test_csv_files_at_the_root(hub):
    import datasets

    hub.add_repo("alice/csv", {"train.csv": "sentence,label\ngood,1\nbad,0\nfine,1\n",
                               "test.csv": "sentence,label\nok,1\n"}, repo_type="dataset")
    dd = datasets.load_dataset("alice/csv")
    assert set(dd) == {"train", "test"}
    assert dd["train"].to_dict() == {"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}
    assert dd["test"].to_list() == [{"sentence": "ok", "label": 1}]
    assert hub.unrouted == []


def test_uploaded_dataset_reads_back(hub, monkeypatch):
    """Dataset repositories take uploads too (create_repo / upload_file with repo_type="dataset")."""
    import datasets
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    api.create_repo("alice/uploaded", repo_type="dataset")
    api.upload_file(path_or_fileobj=_jsonl(JSONL_TRAIN).encode(), path_in_repo="data/train.jsonl",
                    repo_id="alice/uploaded", repo_type="dataset")
    assert [c.title for c in hub.commits("alice/uploaded", repo_type="dataset")][0] == "initial commit"
    assert datasets.load_dataset("alice/uploaded", split="train").to_list() == JSONL_TRAIN
    assert hub.unrouted == []


def test_hf_file_system_lists_and_reads_ranges(hub):
    """What datasets reads through: glob (recursive tree), info (paths-info), ranged and streamed reads."""
    from huggingface_hub import HfFileSystem
    from huggingface_hub.utils import get_session

    data = _jsonl(JSONL_TRAIN).encode()
    sha = hub.add_repo("alice/lines", {"data/train.jsonl": data, "data/extra/notes.txt": "n"}, repo_type="dataset")
    fs = HfFileSystem(endpoint=hub.url)
    root = f"datasets/alice/lines@{sha}"
    assert fs.glob(f"{root}/**/*.jsonl") == [f"{root}/data/train.jsonl"]
    assert sorted(fs.find(f"{root}/data")) == [f"{root}/data/extra/notes.txt", f"{root}/data/train.jsonl"]
    assert fs.info(f"{root}/data/train.jsonl", refresh=True)["size"] == len(data)
    assert fs.isdir(f"{root}/data/extra") and not fs.exists(f"{root}/data/missing.jsonl")
    with fs.open(f"{root}/data/train.jsonl", "rb", block_size=8) as f:
        f.seek(5)
        assert f.read(10) == data[5:15]
    with fs.open(f"{root}/data/train.jsonl", "rb", block_size=0) as f:  # streamed
        assert f.read(4) == data[:4] and f.read() == data[4:] and f.read() == b""
    assert any(r.status == 206 for r in hub.requests) and hub.count("POST", "/paths-info/") >= 1
    url = f"{hub.url}/datasets/alice/lines/resolve/{sha}/data/train.jsonl"
    assert get_session().get(url, headers={"Range": "bytes=-4"}).content == data[-4:]  # a suffix
    past_end = get_session().get(url, headers={"Range": f"bytes={len(data)}-"})
    assert past_end.status_code == 416 and past_end.headers["Content-Range"] == f"bytes */{len(data)}"
    assert hub.unrouted == []


def test_load_dataset_errors(hub):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    hub.add_repo("alice/glue", _glue_files(), repo_type="dataset")
    hub.add_repo("alice/private-lines", {"data/train.jsonl": _jsonl(JSONL_TRAIN)}, repo_type="dataset", private=True)

    with pytest.raises(DatasetNotFoundError, match="'alice/nope' doesn't exist on the Hub"):
        datasets.load_dataset("alice/nope")
    with pytest.raises(ValueError, match=r"BuilderConfig 'qnli' not found. Available: \['cola', 'sst2'\]"):
        datasets.load_dataset("alice/glue", "qnli")
    with pytest.raises(ValueError, match=r"Unknown split \"test\". Should be one of \['train', 'validation'\]"):
        datasets.load_dataset("alice/glue", "sst2", split="test")
    with pytest.raises(DatasetNotFoundError, match="Revision 'v9' doesn't exist"):
        datasets.load_dataset("alice/glue", "sst2", revision="v9")
    with pytest.raises(DatasetNotFoundError, match="'alice/private-lines' doesn't exist"):
        datasets.load_dataset("alice/private-lines")  # no token: the Hub hides private repos
    assert datasets.load_dataset("alice/private-lines", split="train", token=TOKEN).to_list() == JSONL_TRAIN
    assert hub.unrouted == []


def test_hub_errors_for_datasets(hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    hub.add_repo("alice/glue", _glue_files(), repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().dataset_info("alice/nope")
    with pytest.raises(RepositoryNotFoundError):  # a dataset is not a model
        HfApi().model_info("alice/glue")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/glue", "sst2/test-00000-of-00001.parquet", repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        HfApi().dataset_info("alice/glue", revision="v9")
    paths = HfApi().get_paths_info("alice/glue", ["sst2", "README.md", "missing.txt"], repo_type="dataset",
                                   expand=True)
    assert [p.path for p in paths] == ["sst2", "README.md"] and paths[1].last_commit.title == "Add files"


def test_server_down_is_a_connection_error(hub, monkeypatch):
    import types

    import datasets
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.utils import _http

    slept: list[float] = []  # the client's backoff between retries (1+2+4+8+8 s), recorded instead of slept
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=slept.append))
    hub.add_repo("alice/glue", _glue_files(), repo_type="dataset")
    hub.add_repo("alice/model", {"config.json": "{}"})
    hub.stop()
    with pytest.raises(ConnectionError, match="Couldn't reach 'alice/glue' on the Hub"):
        datasets.load_dataset("alice/glue", "sst2", split="train")
    assert slept == [1, 2, 4, 8, 8]  # it retried, then gave up
    with pytest.raises(LocalEntryNotFoundError):  # nothing cached: the download cannot go on
        snapshot_download("alice/model")
    hub.start()
    assert datasets.load_dataset("alice/glue", "sst2", split="train").num_rows == 3


@pytest.mark.slow
def test_clients_in_a_subprocess_with_client_env(tmp_path, tiny_bert):
    """What a CLI run sees: the endpoint, token and caches come from the environment alone."""
    server = HubServer(tokens={TOKEN: ("alice", "write")}).start()
    try:
        server.add_repo("alice/tiny-bert", tiny_bert[1], private=True)
        server.add_repo("alice/glue", _glue_files(), repo_type="dataset")
        script = textwrap.dedent("""
            import json, datasets
            from transformers import AutoModel, AutoTokenizer
            ds = datasets.load_dataset("alice/glue", "sst2", split="validation")
            model = AutoModel.from_pretrained("alice/tiny-bert")
            tok = AutoTokenizer.from_pretrained("alice/tiny-bert")
            print(json.dumps({"rows": ds.num_rows, "names": ds.features["label"].names,
                              "layers": model.config.num_hidden_layers, "ids": tok("the cat")["input_ids"]}))
        """)
        env = client_env(server, tmp_path / "home", token=TOKEN)
        assert env["HF_ENDPOINT"] == server.url and "HF_HUB_OFFLINE" not in env and "HF_DATASETS_OFFLINE" not in env
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        from transformers import AutoTokenizer

        assert result == {"rows": 2, "names": ["negative", "positive"], "layers": 2,
                          "ids": AutoTokenizer.from_pretrained(tiny_bert[0])("the cat")["input_ids"]}
        assert {r.user for r in server.requests if "tiny-bert" in r.path} == {"alice"}  # the token was sent
        assert (tmp_path / "home" / "hub").is_dir() and server.unrouted == []
    finally:
        server.stop()
