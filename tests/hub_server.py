"""A small in-process server speaking the parts of the Hugging Face Hub HTTP API that the real clients
use: ``huggingface_hub`` (uploads, ``hf_hub_download``, ``snapshot_download``, ``HfFileSystem``,
``model_info`` / ``dataset_info`` / ``list_repo_files``), ``transformers`` (``push_to_hub``,
``from_pretrained``) and ``datasets`` (``load_dataset`` of a Hub dataset repository without a script,
streaming or not).

The Hub cannot be reached from the test machines and no installable server accepts uploads, so the
Hub tests point the clients at this one::

    server = HubServer(tokens={"hf_alice": ("alice", "write")}).start()
    server.add_repo("alice/glue", {"README.md": card, "sst2/train-00000-of-00001.parquet": data},
                    repo_type="dataset")                  # seed a repository from the test
    env = client_env(server, tmp_path / "home", token="hf_alice")   # for a client subprocess
    point_clients_at(server, monkeypatch, tmp_path / "home")        # for clients in this process
    ...
    server.commits("alice/model")          # what was committed, oldest first
    server.fail_next(3, status=500)        # the next 3 requests answer 500
    server.stop(); server.start()          # the server goes down / comes back (same port, same repos)
    server.latency = 0.5                   # every request takes half a second longer

Standard library only (``http.server``, threaded) plus yaml. Repositories (models and datasets, with
or without a namespace: ``alice/bert`` or a legacy ``bert-base-uncased``), branches, commits and files
live in memory. Every request is recorded (method, path, status, user; never the token) so tests can
count commits and retries; requests the server has no route for are listed in ``unrouted``. No
spaces, no xet (clients must run with ``HF_HUB_DISABLE_XET=1``), no dataset viewer (``datasets`` asks
``datasets-server.<host>`` for exported infos: the name does not resolve and it carries on with the
README's ``dataset_info``), no pagination (one page holds every entry).

Behaviour mirrored from the real Hub where the clients depend on it:
- ``POST /api/repos/create`` answers 409 with a JSON ``url`` for an existing repo (``exist_ok=True``);
- ``GET /api/{models,datasets}/{repo}[/revision/{rev}]`` (``sha``, ``siblings``, ``cardData`` from the
  README's YAML, ``blobs=true`` for sizes and LFS data, ``expand=`` / ``expand[]=`` to pick fields);
  ``/tree/{rev}[/{path}]`` (``recursive``, ``expand`` for ``lastCommit`` and ``securityFileStatus``);
  ``POST /paths-info/{rev}`` (paths that do not exist are left out); ``/refs``, ``/commits/{rev}``;
- ``HEAD/GET /[datasets/]{repo}/resolve/{rev}/{path}`` carry ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``
  and sizes, and honour ``Range`` (206, or 416 past the end);
- errors carry ``X-Error-Code`` as the Hub's do, which the clients turn into typed exceptions: a
  missing repo, or a private one the caller may not see, is ``RepoNotFound`` (401 without a token, 404
  with one), a missing file or folder is a 404 ``EntryNotFound``, a missing revision a 404
  ``RevisionNotFound``;
- ``preupload`` marks binary weight files (and parquet/arrow) as LFS and returns the remote oid of
  unchanged files (so the client skips empty commits); LFS objects go through
  ``/[datasets/]{repo}.git/info/lfs/objects/batch``, a ``PUT`` (possibly chunked) and a verify ``POST``;
- an unknown token is a 401 ("Invalid credentials in Authorization header"); writing outside your
  namespace, with a read token, or to a repo the test forbade, is a 403.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

#: Files stored as LFS objects, as in the Hub's default ``.gitattributes``.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack", "*.onnx",
                "*.npy", "*.npz", "*.zip", "*.tar.gz", "*tfevents*", "*.parquet", "*.arrow")
GITATTRIBUTES = ("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)).encode()
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # larger files are LFS whatever their name
#: Fetched once per process by huggingface_hub (agent detection for its user agent); answered empty and
#: never subject to injected failures, so failure counts in tests do not depend on test order.
TELEMETRY_PATH = "/api/agent-harnesses"
REPO_TYPES = ("model", "dataset")
#: What may follow a repo id in a URL: with one of these second, ``/api/models/bert/tree/main`` is the
#: namespace-less repo ``bert`` (unless a repo ``bert/tree`` exists).
_REPO_SUBPATHS = {"revision", "tree", "paths-info", "refs", "commits", "commit", "preupload", "branch", "tag",
                  "auth-check", "resolve", "parquet", "treesize", "settings", "discussions", "blob", "raw",
                  "lfs-files", "xet-read-token", "xet-write-token", "super-squash"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class StoredFile:
    size: int
    content: Optional[bytes] = None    # regular (git) file
    lfs_sha256: Optional[str] = None   # LFS file: content lives in the server's LFS store

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or git_blob_sha1(self.content or b"")

    @property
    def blob_id(self) -> str:
        """The git oid of what git stores: the pointer file for an LFS file."""
        return git_blob_sha1(self.pointer()) if self.lfs_sha256 else self.etag

    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.lfs_sha256}\n"
                f"size {self.size}\n").encode()


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    title: str
    description: str
    files: dict[str, StoredFile]
    author: str
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)
    repo_type: str = "model"
    owner: Optional[str] = None  # who sees it when private: the namespace unless told otherwise

    def __post_init__(self):
        if self.owner is None and "/" in self.repo_id:
            self.owner = self.repo_id.split("/")[0]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    user: Optional[str]  # who the token belongs to (the token itself is never recorded)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None, body: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class HubServer:
    """The server and its state. ``start()`` binds 127.0.0.1 on a free port (the same port on restart)."""

    def __init__(self, tokens: Optional[dict[str, tuple[str, str]]] = None):
        #: token -> (user name, "write" | "read")
        self.tokens = dict(tokens or {})
        self.repos: dict[str, Repo] = {}          # model repositories
        self.dataset_repos: dict[str, Repo] = {}  # dataset repositories (a separate namespace, as on the Hub)
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.forbidden: set[tuple[str, str]] = set()  # (user, repo_id) pairs refused with a 403 on writes
        self.latency = 0.0  # seconds added to every request (a slow network)
        self.unrouted: list[str] = []  # "METHOD path" the server does not implement (a test can assert none)
        self._fail: list[tuple[int, int, Optional[str]]] = []  # [remaining, status, path substring]
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        if self.port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        handler = type("Handler", (_Handler,), {"hub": self})
        deadline = time.time() + 10
        while True:
            try:
                self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
                break
            except OSError:  # the port of a just-stopped server may take a moment to free
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="hub-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: stop accepting and close the socket (clients get 'connection refused'). State is kept."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    # ------------------------------------------------------------------ seeding from test code
    def add_repo(self, repo_id: str, files: dict[str, Union[bytes, str]], repo_type: str = "model",
                 private: bool = False, owner: Optional[str] = None, *, message: str = "Add files",
                 branch: str = "main") -> str:
        """Create ``repo_id`` (or reuse it) and commit ``files`` (path -> bytes, or str stored as utf-8)
        to ``branch`` (created from main when missing); returns the new commit's oid. Files are stored
        as uploads are: LFS for weights, parquet, arrow and anything over 10 MB. ``private`` and
        ``owner`` (who may see a private repo; the namespace by default) apply when the repo is created."""
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {REPO_TYPES}, not {repo_type!r}")
        with self._lock:
            store = self._store(repo_type)
            repo = store.get(repo_id)
            if repo is None:
                repo = self.create_repo(repo_id, private, owner or "system", repo_type=repo_type)
                if owner is not None:
                    repo.owner = owner
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            parent = repo.commits[repo.branches[branch]]
            tree = dict(parent.files)
            for path, data in files.items():
                data = data.encode() if isinstance(data, str) else bytes(data)
                if _is_lfs(path, len(data)):
                    sha = hashlib.sha256(data).hexdigest()
                    self.lfs_store[sha] = data
                    tree[path] = StoredFile(len(data), lfs_sha256=sha)
                else:
                    tree[path] = StoredFile(len(data), content=data)
            oid = self._new_oid(repo_id, parent.oid, message)
            repo.commits[oid] = Commit(oid, parent.oid, message, "", tree, owner or repo.owner or "system")
            repo.branches[branch] = oid
            return oid

    # ------------------------------------------------------------------ test switches and views
    def fail_next(self, n: int, status: int = 500, path_contains: Optional[str] = None) -> None:
        """Answer ``status`` to the next ``n`` requests (only those whose path contains ``path_contains``)."""
        with self._lock:
            self._fail.append([n, status, path_contains])

    def forbid(self, user: str, repo_id: str) -> None:
        """Writes by ``user`` to ``repo_id`` get a 403 (as for a repo the token has no write access to)."""
        self.forbidden.add((user, repo_id))

    def commits(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> list[Commit]:
        """Commits reachable from ``branch``, oldest first (the initial .gitattributes commit included)."""
        repo = self._store(repo_type)[repo_id]
        out, oid = [], repo.branches.get(branch)
        while oid is not None:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return out[::-1]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of every file at ``revision``."""
        repo = self._store(repo_type)[repo_id]
        commit = repo.commits[repo.branches.get(revision, revision)]
        return {p: (f.content if f.content is not None else self.lfs_store[f.lfs_sha256]) for p, f in commit.files.items()}

    def count(self, method: str, path_contains: str) -> int:
        return sum(1 for r in list(self.requests) if r.method == method and path_contains in r.path)

    # ------------------------------------------------------------------ internals used by the handler
    def _store(self, repo_type: str) -> dict[str, Repo]:
        if repo_type == "model":
            return self.repos
        if repo_type == "dataset":
            return self.dataset_repos
        raise HubError(400, f"the test server hosts no {repo_type} repositories")

    def _injected_failure(self, path: str) -> Optional[int]:
        with self._lock:
            for rule in self._fail:
                if rule[0] > 0 and (rule[2] is None or rule[2] in path):
                    rule[0] -= 1
                    return rule[1]
        return None

    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join((str(next(self._counter)), *parts)).encode()).hexdigest()

    def create_repo(self, repo_id: str, private: bool, user: str, repo_type: str = "model") -> Repo:
        repo = Repo(repo_id, private, repo_type=repo_type)
        oid = self._new_oid(repo_type, repo_id, "initial commit")
        repo.commits[oid] = Commit(oid, None, "initial commit", "",
                                   {".gitattributes": StoredFile(len(GITATTRIBUTES), content=GITATTRIBUTES)}, "system")
        repo.branches["main"] = oid
        self._store(repo_type)[repo_id] = repo
        return repo


def _is_lfs(path: str, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size > LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


def _card_data(data: Optional[bytes]) -> Optional[dict]:
    """The YAML front matter of a README, as the Hub's ``cardData`` (None without one)."""
    if not data:
        return None
    text = data.decode("utf-8", "replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return None
    return meta if isinstance(meta, dict) else None


def _truthy(query: dict, name: str) -> bool:
    return (query.get(name) or ["false"])[0].lower() in ("true", "1")


# ----------------------------------------------------------------------------------------------
# Pointing the real clients at a server
# ----------------------------------------------------------------------------------------------
_OFFLINE_AND_TOKEN_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
                          "HUGGING_FACE_HUB_TOKEN")


def client_env(server: HubServer, home: Union[str, Path], token: Optional[str] = None) -> dict:
    """Environment for a client subprocess talking to ``server``: online, ``HF_ENDPOINT`` at the server,
    no xet, a fresh ``HF_HOME`` (caches, no stored token), no progress bars, ``HF_TOKEN`` when given.
    ``datasets``' download counter (a HEAD to s3.amazonaws.com) is switched off."""
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE_AND_TOKEN_ENV}
    env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_PROGRESS_BARS="1",
               TOKENIZERS_PARALLELISM="false", HF_UPDATE_DOWNLOAD_COUNTS="0", HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return env


def point_clients_at(server: HubServer, monkeypatch, home: Union[str, Path], token: Optional[str] = None) -> None:
    """Make ``huggingface_hub``, ``datasets`` and ``transformers`` in this process talk to ``server``
    for the rest of the test (``monkeypatch`` undoes it): the module constants they read at import
    time (endpoint, URL templates, offline flags, caches under ``home``, no xet, no stored token) and
    the environment (conftest's HF_HUB_OFFLINE / HF_DATASETS_OFFLINE removed). ``datasets`` gets no
    download counter and no dataset-viewer lookup (hosts outside the server). ``token`` becomes HF_TOKEN."""
    import sys

    from huggingface_hub import constants

    home = Path(home)
    hub_cache, assets = str(home / "hub"), str(home / "assets")
    for name in _OFFLINE_AND_TOKEN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in client_env(server, home, token).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)

    for name, value in {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": hub_cache, "HUGGINGFACE_HUB_CACHE": hub_cache, "default_cache_path": hub_cache,
        "HF_ASSETS_CACHE": assets, "HUGGINGFACE_ASSETS_CACHE": assets, "default_assets_cache_path": assets,
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(home / ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # clients built at import with the endpoint of then: huggingface_hub's module-level HfApi (behind
    # list_repo_files, model_info, ...) and HfFileSystem (a fresh cache for it too)
    from huggingface_hub import hf_api, hf_file_system

    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    for obj, name, value in ((hf_file_system.hffs, "endpoint", server.url),
                             (hf_file_system.hffs._api, "endpoint", server.url),
                             (hf_file_system.hffs, "dircache", {}),
                             (hf_file_system.hffs, "_repo_and_revision_exists_cache", {})):
        monkeypatch.setattr(obj, name, value)
    # modules that copied a constant at import
    for module, name, value in (("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", hub_cache),
                                ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", assets),
                                ("transformers.utils.hub", "HF_MODULES_CACHE", str(home / "modules"))):
        if module in sys.modules and hasattr(sys.modules[module], name):
            monkeypatch.setattr(sys.modules[module], name, value)

    try:
        from datasets import config as dconfig
    except ImportError:  # a test of huggingface_hub alone
        return
    datasets_cache = home / "datasets"
    for name, value in {
        "HF_ENDPOINT": server.url,
        "HUB_DATASETS_URL": server.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False,
        "HF_UPDATE_DOWNLOAD_COUNTS": False,  # a HEAD to s3.amazonaws.com per load otherwise
        "USE_PARQUET_EXPORT": False,         # the dataset viewer at datasets-server.<endpoint host>
        "HF_CACHE_HOME": str(home),
        "HF_DATASETS_CACHE": datasets_cache,
        "HF_MODULES_CACHE": home / "modules",
        "DOWNLOADED_DATASETS_PATH": datasets_cache / dconfig.DOWNLOADED_DATASETS_DIR,
        "EXTRACTED_DATASETS_PATH": datasets_cache / dconfig.DOWNLOADED_DATASETS_DIR / dconfig.EXTRACTED_DATASETS_DIR,
    }.items():
        monkeypatch.setattr(dconfig, name, value)


# ----------------------------------------------------------------------------------------------
# The request handler
# ----------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the per-server subclass
    server_version = "hub-test-server/1.0"
    # HTTP/1.0: one request per connection, so a stopped server leaves no kept-alive connection serving.
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):  # quiet: tests read hub.requests instead
        pass

    # ------------------------------------------------------------------ plumbing
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict:
        raw = self._body()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            raise HubError(400, "body is not valid JSON")

    def _form_or_json_body(self) -> dict[str, list[str]]:
        """A form (``paths=a&paths=b&expand=false``, what huggingface_hub sends) or a JSON object."""
        raw = self._body()
        if "json" in self.headers.get("Content-Type", ""):
            try:
                data = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                raise HubError(400, "body is not valid JSON")
            return {k: [str(x).lower() if isinstance(x, bool) else x for x in (v if isinstance(v, list) else [v])]
                    for k, v in data.items()}
        return parse_qs(raw.decode(), keep_blank_values=True)

    def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None,
              content_type: str = "application/json") -> None:
        # recorded before the answer leaves, so a client that got it always finds it in hub.requests
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _record(self, status: int) -> None:
        if not self._recorded:
            self._recorded = True
            self.hub.requests.append(RecordedRequest(self.command, urlsplit(self.path).path, status, self._request_user))

    def _json(self, status: int, data, headers: Optional[dict] = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _user(self) -> tuple[Optional[str], Optional[str]]:
        """(user, role) of the bearer token; a token the server does not know is a 401."""
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None, None
        token = auth[7:].strip()
        if token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _dispatch(self, method: str) -> None:
        self._recorded = False
        self._request_user = None
        split = urlsplit(self.path)
        try:
            if self.hub.latency:
                time.sleep(self.hub.latency)
            failure = None if split.path == TELEMETRY_PATH else self.hub._injected_failure(split.path)
            if failure is not None:
                self._body()
                raise HubError(failure, "injected failure")
            self._request_user, role = self._user()
            self._route(method, split.path, parse_qs(split.query), self._request_user, role)
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json(e.status, e.body or {"error": e.message}, headers)
        except (BrokenPipeError, ConnectionResetError):
            self._record(599)  # the client went away
        except Exception as e:  # a bug in the server: say so loudly to the client
            self._json(500, {"error": f"test server error: {type(e).__name__}: {e}"})
            raise

    # ------------------------------------------------------------------ access rules
    def _split_repo(self, repo_type: str, segments: list[str]) -> tuple[str, list[str]]:
        """(repo id, what follows it) of URL segments starting at a repo id, with or without a namespace."""
        if len(segments) == 1:
            return segments[0], []
        store = self.hub._store(repo_type)
        if f"{segments[0]}/{segments[1]}" in store or segments[1] not in _REPO_SUBPATHS:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        return segments[0], segments[1:]

    def _repo(self, repo_id: str, user: Optional[str], repo_type: str = "model") -> Repo:
        repo = self.hub._store(repo_type).get(repo_id)
        if repo is None or (repo.private and repo.owner != user):
            # as the Hub: the same answer for missing and private, 401 without a token, 404 with one
            raise HubError(401 if user is None else 404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _check_write(self, repo_id: str, user: Optional[str], role: Optional[str]) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to write")
        if role != "write" or repo_id.split("/")[0] != user or (user, repo_id) in self.hub.forbidden:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def _commit_of(self, repo: Repo, rev: str) -> Commit:
        oid = repo.branches.get(rev, rev)
        if oid not in repo.commits:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict, user: Optional[str], role: Optional[str]) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if path == TELEMETRY_PATH:
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "whoami-v2"]:
            if user is None:
                raise HubError(401, "Unauthorized")
            return self._json(200, {"type": "user", "name": user, "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(self._json_body(), user, role)
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(self._json_body())
        if parts[0] == "api" and len(parts) >= 3 and parts[1] in ("models", "datasets"):
            repo_type = parts[1][:-1]
            repo_id, rest = self._split_repo(repo_type, parts[2:])
            return self._repo_api(method, repo_type, repo_id, rest[0] if rest else "", rest[1:], query, user, role)
        if parts[0] == "_lfs" and len(parts) == 3:
            return self._lfs_transfer(method, parts[1], parts[2])
        repo_type, segments = ("dataset", parts[1:]) if parts[0] == "datasets" else ("model", parts)
        if len(segments) >= 5 and segments[-4:] == ["info", "lfs", "objects", "batch"] \
                and segments[-5].endswith(".git"):
            repo_id = "/".join(segments[:-4])[:-4]
            return self._lfs_batch(repo_type, repo_id, self._json_body(), user, role)
        if len(segments) >= 2:
            repo_id, rest = self._split_repo(repo_type, segments)
            if len(rest) >= 3 and rest[0] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, repo_id, rest[1], "/".join(rest[2:]), user)
        self.hub.unrouted.append(f"{method} {path}")
        raise HubError(404, f"no route for {method} {path} in the test server")

    def _create_repo(self, body: dict, user: Optional[str], role: Optional[str]) -> None:
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"the test server hosts no {repo_type} repositories")
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{body['name']}"
        url = f"{self.hub.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        with self.hub._lock:
            existing = self.hub._store(repo_type).get(repo_id)
            if existing is not None and not (existing.private and existing.owner != user):
                message = f"You already created this {repo_type} repo"
                raise HubError(409, message, body={"error": message, "url": url})
            self._check_write(repo_id, user, role)
            private = body.get("private") or body.get("visibility") == "private"
            self.hub.create_repo(repo_id, bool(private), user, repo_type=repo_type)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, body: dict) -> None:
        content = body.get("content", "")
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end < 0:
                raise HubError(400, "metadata block is not closed", body={"errors": [{"message": "unclosed YAML"}]})
            try:
                meta = yaml.safe_load(content[3:end])
            except yaml.YAMLError as e:
                raise HubError(400, "invalid YAML", body={"errors": [{"message": str(e)}]})
            if meta is not None and not isinstance(meta, dict):
                raise HubError(400, "metadata must be a mapping", body={"errors": [{"message": "not a mapping"}]})
        self._json(200, {"errors": [], "warnings": []})

    def _repo_api(self, method, repo_type, repo_id, action, rest, query, user, role) -> None:
        if action in ("", "revision") and method == "GET":
            repo = self._repo(repo_id, user, repo_type)
            return self._json(200, self._repo_info(repo, self._commit_of(repo, "/".join(rest) or "main"), query))
        if action == "auth-check" and method == "GET":
            self._repo(repo_id, user, repo_type)
            if rest[:1] == ["write"]:
                self._check_write(repo_id, user, role)
            return self._json(200, {"success": True})
        if action == "tree" and method == "GET":
            if not rest:
                raise HubError(400, "a tree request names a revision")
            return self._tree(self._repo(repo_id, user, repo_type), rest[0], "/".join(rest[1:]),
                              _truthy(query, "recursive"), _truthy(query, "expand"))
        if action == "paths-info" and method == "POST":
            repo = self._repo(repo_id, user, repo_type)
            commit = self._commit_of(repo, "/".join(rest) or "main")
            form = self._form_or_json_body()
            expand = (form.get("expand") or ["false"])[0].lower() in ("true", "1")
            out = []
            for p in form.get("paths", []):
                entry = self._entry(repo, commit, p.strip("/"), expand)
                if entry is not None:
                    out.append(entry)
            return self._json(200, out)
        if action == "refs" and method == "GET":
            repo = self._repo(repo_id, user, repo_type)
            return self._json(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                                                 for b, oid in repo.branches.items()], "tags": [], "converts": []})
        if action == "commits" and method == "GET":
            repo = self._repo(repo_id, user, repo_type)
            commit = self._commit_of(repo, "/".join(rest) or "main")
            out = []
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": commit.description,
                            "authors": [{"user": commit.author}], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return self._json(200, out)
        if action == "branch":
            repo = self._repo(repo_id, user, repo_type)
            self._check_write(repo_id, user, role)
            name = "/".join(rest)
            if method == "POST":
                body = self._json_body()
                with self.hub._lock:
                    if name in repo.branches:
                        raise HubError(409, f"Branch {name} already exists")
                    repo.branches[name] = self._commit_of(repo, body.get("startingPoint") or "main").oid
                return self._json(200, {"success": True})
            if method == "DELETE":
                repo.branches.pop(name, None)
                return self._json(200, {"success": True})
        if action == "preupload" and method == "POST":
            repo = self._repo(repo_id, user, repo_type)
            self._check_write(repo_id, user, role)
            commit = self._commit_of(repo, "/".join(rest))
            files = []
            for f in self._json_body().get("files", []):
                lfs = _is_lfs(f["path"], f["size"])
                remote = commit.files.get(f["path"])
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": remote.etag if remote is not None else None})
            return self._json(200, {"files": files, "commitOid": commit.oid})
        if action == "commit" and method == "POST":
            return self._commit(self._repo(repo_id, user, repo_type), "/".join(rest), user, role)
        where = f"{method} /api/{repo_type}s/{repo_id}/{action}"
        self.hub.unrouted.append(where)
        raise HubError(404, f"no route for {where} in the test server")

    def _repo_info(self, repo: Repo, commit: Commit, query: dict) -> dict:
        namespace = repo.repo_id.split("/")[0] if "/" in repo.repo_id else repo.owner
        readme = commit.files.get("README.md")
        card = _card_data(self._content(readme)) if readme else None
        blobs = _truthy(query, "blobs")
        siblings = []
        for p, f in sorted(commit.files.items()):
            sibling = {"rfilename": p, "size": f.size}
            if blobs:
                sibling["blobId"] = f.blob_id
                if f.lfs_sha256:
                    sibling["lfs"] = {"sha256": f.lfs_sha256, "size": f.size, "pointerSize": len(f.pointer())}
            siblings.append(sibling)
        info = {"_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
                "id": repo.repo_id, "author": namespace, "sha": commit.oid, "private": repo.private,
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "createdAt": repo.created_at, "lastModified": commit.date, "siblings": siblings,
                "usedStorage": sum(f.size for f in commit.files.values())}
        if card is not None:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            if card is not None and card.get("library_name"):
                info["library_name"] = card["library_name"]
        else:
            info["description"] = ""
            info["citation"] = ""
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:  # as the Hub: only the properties asked for
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return info

    def _commit(self, repo: Repo, rev: str, user: str, role: str) -> None:
        self._check_write(repo.repo_id, user, role)
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with a header line")
        header = lines[0]["value"]
        with self.hub._lock:
            if rev not in repo.branches:
                raise HubError(404, f"Revision {rev} not found (commits go to a branch)", "RevisionNotFound")
            parent = repo.commits[repo.branches[rev]]
            if header.get("parentCommit") and header["parentCommit"] != parent.oid:
                raise HubError(412, "parent commit is not the head of the branch")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[value["path"]] = StoredFile(len(data), content=data)
                elif key == "lfsFile":
                    if value["oid"] not in self.hub.lfs_store:
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[value["path"]] = StoredFile(value["size"], lfs_sha256=value["oid"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            oid = self.hub._new_oid(repo.repo_id, parent.oid, header.get("summary", ""))
            repo.commits[oid] = Commit(oid, parent.oid, header.get("summary", ""), header.get("description", ""),
                                       files, user)
            repo.branches[rev] = oid
        url = f"{self.hub.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"
        self._json(200, {"success": True, "commitOid": oid, "commitUrl": f"{url}/commit/{oid}",
                         "commitMessage": header.get("summary", "")})

    # ------------------------------------------------------------------ tree and paths-info entries
    @staticmethod
    def _folder_state(commit: Commit, folder: str) -> tuple:
        base = folder + "/"
        return tuple(sorted((p, f.etag) for p, f in commit.files.items() if p.startswith(base)))

    def _last_commit(self, repo: Repo, commit: Commit, path: str, folder: bool) -> dict:
        """The newest commit (up to ``commit``) that changed ``path``: the tree's ``lastCommit``."""
        state = (lambda c: self._folder_state(c, path)) if folder else (lambda c: c.files.get(path))
        here = state(commit)
        while commit.parent is not None and state(repo.commits[commit.parent]) == here:
            commit = repo.commits[commit.parent]
        return {"id": commit.oid, "title": commit.title, "date": commit.date}

    def _folder_entry(self, repo: Repo, commit: Commit, folder: str, expand: bool) -> dict:
        entry = {"type": "directory", "path": folder,
                 "oid": hashlib.sha1(repr(self._folder_state(commit, folder)).encode()).hexdigest()}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, folder, folder=True)
        return entry

    def _file_entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        f = commit.files[path]
        entry = {"type": "file", "path": path, "size": f.size, "oid": f.blob_id}
        if f.lfs_sha256:
            entry["lfs"] = {"oid": f.lfs_sha256, "size": f.size, "pointerSize": len(f.pointer())}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, path, folder=False)
            entry["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                           "pickleImportScan": None}
        return entry

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> Optional[dict]:
        if path in commit.files:
            return self._file_entry(repo, commit, path, expand)
        if path and any(p.startswith(path + "/") for p in commit.files):
            return self._folder_entry(repo, commit, path, expand)
        return None

    def _tree(self, repo: Repo, rev: str, prefix: str, recursive: bool, expand: bool = False) -> None:
        commit = self._commit_of(repo, rev)
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        entries, folders = [], set()
        for p in sorted(commit.files):
            if not p.startswith(base):
                continue
            rel = p[len(base):].split("/")
            for depth in range(1, len(rel)):
                folder = base + "/".join(rel[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append(self._folder_entry(repo, commit, folder, expand))
            if len(rel) > 1 and not recursive:
                continue
            entries.append(self._file_entry(repo, commit, p, expand))
        if prefix and not entries:  # a missing folder, or a file (the Hub lists folders only)
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        self._json(200, entries)

    # ------------------------------------------------------------------ downloads
    def _content(self, f: StoredFile) -> bytes:
        return f.content if f.content is not None else self.hub.lfs_store[f.lfs_sha256]

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str, user: Optional[str]) -> None:
        repo = self._repo(repo_id, user, repo_type)
        commit = self._commit_of(repo, rev)
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = self._content(f)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{f.lfs_sha256}"', "X-Linked-Size": f.size})
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if m and self.command == "GET" and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            else:  # a suffix: the last N bytes
                start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
            if start >= len(data) or start > end:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(416, b"", headers, "application/octet-stream")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")

    # ------------------------------------------------------------------ LFS
    def _lfs_batch(self, repo_type: str, repo_id: str, body: dict, user: Optional[str], role: Optional[str]) -> None:
        self._repo(repo_id, user, repo_type)
        self._check_write(repo_id, user, role)
        objects = []
        for obj in body.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_store:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/upload/{obj['oid']}"},
                                    "verify": {"href": f"{self.hub.url}/_lfs/verify/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_transfer(self, method: str, action: str, oid: str) -> None:
        if action == "upload" and method == "PUT":
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "uploaded content does not match its sha256")
            self.hub.lfs_store[oid] = data
            return self._send(200)
        if action == "verify" and method == "POST":
            body = self._json_body()
            if body.get("oid") not in self.hub.lfs_store:
                raise HubError(404, "object not uploaded")
            return self._json(200, {"success": True})
        raise HubError(404, f"no LFS route {method} {action}")
