"""A small in-process server speaking the parts of the Hugging Face Hub HTTP API that the real clients
(``huggingface_hub`` uploads/downloads, ``transformers`` ``push_to_hub`` / ``from_pretrained``) use.

The Hub cannot be reached from the test machines and no installable server accepts uploads, so the
Hub tests point ``HF_ENDPOINT`` at this one::

    server = HubServer(tokens={"hf_alice": ("alice", "write")}).start()
    env = {"HF_ENDPOINT": server.url, "HF_TOKEN": "hf_alice", "HF_HUB_DISABLE_XET": "1"}
    ...
    server.commits("alice/model")          # what was committed, oldest first
    server.fail_next(3, status=500)        # the next 3 requests answer 500
    server.stop(); server.start()          # the server goes down / comes back (same port, same repos)
    server.latency = 0.5                   # every request takes half a second longer

Standard library only (``http.server``, threaded). Repositories, branches, commits and files live in
memory. Every request is recorded (method, path, status, user; never the token) so tests can count
commits and retries. Model repositories only (no datasets/spaces), no xet: clients must run with
``HF_HUB_DISABLE_XET=1``.

Behaviour mirrored from the real Hub where the clients depend on it:
- ``POST /api/repos/create`` answers 409 with a JSON ``url`` for an existing repo (``exist_ok=True``);
- ``HEAD/GET /{repo}/resolve/{rev}/{path}`` carry ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` and
  sizes; a missing file is a 404 with ``X-Error-Code: EntryNotFound`` (missing repo: ``RepoNotFound``,
  missing revision: ``RevisionNotFound``);
- ``preupload`` marks binary weight files as LFS and returns the remote oid of unchanged files (so the
  client skips empty commits); LFS objects go through ``/{repo}.git/info/lfs/objects/batch``, a
  ``PUT`` (possibly chunked) and a verify ``POST``;
- an unknown token is a 401 ("Invalid credentials in Authorization header"); writing outside your
  namespace, with a read token, or to a repo the test forbade, is a 403.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

#: Files stored as LFS objects, as in the Hub's default ``.gitattributes``.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack", "*.onnx",
                "*.npy", "*.npz", "*.zip", "*.tar.gz", "*tfevents*")
GITATTRIBUTES = ("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)).encode()
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # larger files are LFS whatever their name
#: Fetched once per process by huggingface_hub (agent detection for its user agent); answered empty and
#: never subject to injected failures, so failure counts in tests do not depend on test order.
TELEMETRY_PATH = "/api/agent-harnesses"


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
        self.repos: dict[str, Repo] = {}
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

    # ------------------------------------------------------------------ test switches and views
    def fail_next(self, n: int, status: int = 500, path_contains: Optional[str] = None) -> None:
        """Answer ``status`` to the next ``n`` requests (only those whose path contains ``path_contains``)."""
        with self._lock:
            self._fail.append([n, status, path_contains])

    def forbid(self, user: str, repo_id: str) -> None:
        """Writes by ``user`` to ``repo_id`` get a 403 (as for a repo the token has no write access to)."""
        self.forbidden.add((user, repo_id))

    def commits(self, repo_id: str, branch: str = "main") -> list[Commit]:
        """Commits reachable from ``branch``, oldest first (the initial .gitattributes commit included)."""
        repo = self.repos[repo_id]
        out, oid = [], repo.branches.get(branch)
        while oid is not None:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return out[::-1]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path -> content of every file at ``revision``."""
        repo = self.repos[repo_id]
        commit = repo.commits[repo.branches.get(revision, revision)]
        return {p: (f.content if f.content is not None else self.lfs_store[f.lfs_sha256]) for p, f in commit.files.items()}

    def count(self, method: str, path_contains: str) -> int:
        return sum(1 for r in list(self.requests) if r.method == method and path_contains in r.path)

    # ------------------------------------------------------------------ internals used by the handler
    def _injected_failure(self, path: str) -> Optional[int]:
        with self._lock:
            for rule in self._fail:
                if rule[0] > 0 and (rule[2] is None or rule[2] in path):
                    rule[0] -= 1
                    return rule[1]
        return None

    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join((str(next(self._counter)), *parts)).encode()).hexdigest()

    def create_repo(self, repo_id: str, private: bool, user: str) -> Repo:
        repo = Repo(repo_id, private)
        oid = self._new_oid(repo_id, "initial commit")
        repo.commits[oid] = Commit(oid, None, "initial commit", "",
                                   {".gitattributes": StoredFile(len(GITATTRIBUTES), content=GITATTRIBUTES)}, "system")
        repo.branches["main"] = oid
        self.repos[repo_id] = repo
        return repo


def _is_lfs(path: str, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size > LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


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
    def _repo(self, repo_id: str, user: Optional[str]) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and repo_id.split("/")[0] != user):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _check_write(self, repo_id: str, user: Optional[str], role: Optional[str]) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to write")
        if role != "write" or repo_id.split("/")[0] != user or (user, repo_id) in self.hub.forbidden:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def _commit_of(self, repo: Repo, rev: str) -> Commit:
        oid = repo.branches.get(rev, rev)
        if oid not in repo.commits:
            raise HubError(404, f"Revision {rev} not found", "RevisionNotFound")
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
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4] if len(parts) > 4 else "", parts[5:]
            return self._model_api(method, repo_id, action, rest, query, user, role)
        if parts[0] == "_lfs":
            return self._lfs_transfer(method, parts[1], parts[2])
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{parts[0]}/{parts[1][:-4]}", self._json_body(), user, role)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), user)
        self.hub.unrouted.append(f"{method} {path}")
        raise HubError(404, f"no route for {method} {path} in the test server")

    def _create_repo(self, body: dict, user: Optional[str], role: Optional[str]) -> None:
        if body.get("type", "model") not in ("model", None):
            raise HubError(400, "the test server only hosts model repositories")
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{body['name']}"
        with self.hub._lock:
            if repo_id in self.hub.repos and not (self.hub.repos[repo_id].private and namespace != user):
                raise HubError(409, "You already created this model repo",
                               body={"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"})
            self._check_write(repo_id, user, role)
            private = body.get("private") or body.get("visibility") == "private"
            self.hub.create_repo(repo_id, bool(private), user)
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

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

    def _model_api(self, method, repo_id, action, rest, query, user, role) -> None:
        if action in ("", "revision") and method == "GET":
            repo = self._repo(repo_id, user)
            commit = self._commit_of(repo, rest[0] if rest else "main")
            return self._json(200, {
                "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid,
                "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "createdAt": repo.created_at, "lastModified": commit.date,
                "siblings": [{"rfilename": p, "size": f.size} for p, f in sorted(commit.files.items())]})
        if action == "auth-check" and method == "GET":
            self._repo(repo_id, user)
            if rest[:1] == ["write"]:
                self._check_write(repo_id, user, role)
            return self._json(200, {"success": True})
        if action == "tree" and method == "GET":
            return self._tree(self._repo(repo_id, user), rest[0], "/".join(rest[1:]),
                              query.get("recursive", ["false"])[0].lower() in ("true", "1"))
        if action == "refs" and method == "GET":
            repo = self._repo(repo_id, user)
            return self._json(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                                                 for b, oid in repo.branches.items()], "tags": [], "converts": []})
        if action == "commits" and method == "GET":
            repo = self._repo(repo_id, user)
            commit = self._commit_of(repo, rest[0] if rest else "main")
            out = []
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": commit.description,
                            "authors": [{"user": commit.author}], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return self._json(200, out)
        if action == "branch":
            repo = self._repo(repo_id, user)
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
            repo = self._repo(repo_id, user)
            self._check_write(repo_id, user, role)
            commit = self._commit_of(repo, rest[0])
            files = []
            for f in self._json_body().get("files", []):
                lfs = _is_lfs(f["path"], f["size"])
                remote = commit.files.get(f["path"])
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": remote.etag if remote is not None else None})
            return self._json(200, {"files": files, "commitOid": commit.oid})
        if action == "commit" and method == "POST":
            return self._commit(self._repo(repo_id, user), rest[0], user, role)
        self.hub.unrouted.append(f"{method} /api/models/{repo_id}/{action}")
        raise HubError(404, f"no route for {method} /api/models/{repo_id}/{action} in the test server")

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
        self._json(200, {"success": True, "commitOid": oid, "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{oid}",
                         "commitMessage": header.get("summary", "")})

    def _tree(self, repo: Repo, rev: str, prefix: str, recursive: bool) -> None:
        commit = self._commit_of(repo, rev)
        base = prefix.rstrip("/") + "/" if prefix else ""
        entries, folders = [], set()
        for p, f in sorted(commit.files.items()):
            if not p.startswith(base):
                continue
            rel = p[len(base):].split("/")
            for depth in range(1, len(rel)):
                folder = base + "/".join(rel[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if len(rel) > 1 and not recursive:
                continue
            entry = {"type": "file", "path": p, "size": f.size,
                     "oid": git_blob_sha1(f.pointer()) if f.lfs_sha256 else f.etag}
            if f.lfs_sha256:
                entry["lfs"] = {"oid": f.lfs_sha256, "size": f.size, "pointerSize": len(f.pointer())}
            entries.append(entry)
        if prefix and not entries:
            raise HubError(404, f"{prefix} not found", "EntryNotFound")
        self._json(200, entries)

    def _resolve(self, repo_id: str, rev: str, path: str, user: Optional[str]) -> None:
        repo = self._repo(repo_id, user)
        commit = self._commit_of(repo, rev)
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        data = f.content if f.content is not None else self.hub.lfs_store[f.lfs_sha256]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{f.lfs_sha256}"', "X-Linked-Size": f.size})
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and self.command == "GET":
            start, _, end = rng[6:].partition("-")
            start, end = int(start or 0), int(end) if end else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")

    # ------------------------------------------------------------------ LFS
    def _lfs_batch(self, repo_id: str, body: dict, user: Optional[str], role: Optional[str]) -> None:
        self._repo(repo_id, user)
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
