"""Everything that talks to the Hugging Face Hub: pushes, background checkpoint pushes, preflight.

    mlm-pretrain push runs/tiny/pretrain/final hub.repo_id=you/bert-tiny-demo
    mlm-pretrain push runs/tiny/finetune/sentiment/final hub.repo_id=you/bert-tiny-sentiment hub.private=true
    mlm-pretrain pretrain hub.push=true hub.repo_id=you/bert-tiny-demo hub.strategy=checkpoint

The token comes from ``HF_TOKEN`` or the login cache (``hf auth login``) and the endpoint from
``HF_ENDPOINT``, both read by ``huggingface_hub``: neither is ever part of the config, printed, logged,
or written into a file of the run.

Where things land in ``hub.repo_id`` at ``hub.revision`` (a branch, created when missing):
model and tokenizer directories at the repository root (a model gets its ``README.md`` model card
first); a training checkpoint (``step-N``) under ``last-checkpoint/``, replaced at each push, so the
repository always holds the latest resumable state and its history holds one commit per checkpoint.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .checkpoints import CHECKPOINT_PREFIX, COMPLETE_MARKER
from .config import Config
from .errors import UserError
from .layout import RunLayout
from .model_card import model_kind, refresh_model_card

logger = logging.getLogger(__name__)

CHECKPOINT_DIR_IN_REPO = "last-checkpoint"
#: Never uploaded: half-written files of an interrupted save and write probes.
IGNORE_PATTERNS = ["*.tmp", ".write-test-*", ".tmp-*", "*/.tmp-*"]
RETRY_WAIT_CAP = 120.0  # seconds; the doubling backoff stops growing here
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"{_NAME}/{_NAME}")


class HubError(UserError):
    """The Hub cannot be used as configured (no token, bad repo id, no access, unreachable)."""


# ----------------------------------------------------------------------------------------------
# Access checks
# ----------------------------------------------------------------------------------------------
def _api():
    from huggingface_hub import HfApi

    from . import __version__

    return HfApi(library_name="mlm_pretrain", library_version=__version__)


def check_repo_id(repo_id: Optional[str]) -> str:
    """``user/name`` with the Hub's allowed characters, or a :class:`HubError` saying how to write it."""
    if not repo_id:
        raise HubError("no target repository: set hub.repo_id=<user or org>/<name> (e.g. hub.repo_id=you/bert-tiny)")
    if not REPO_ID_RE.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(f"hub.repo_id={repo_id!r} is not a valid repository id: write it as <user or org>/<name> "
                       "with letters, digits, '-', '_' or '.', e.g. hub.repo_id=you/bert-tiny")
    return repo_id


def _require_token() -> None:
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise HubError("pushing to the Hub needs network access but HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE "
                       "(and TRANSFORMERS_OFFLINE), or set hub.push=false")
    if get_token() is None:
        raise HubError("no Hugging Face token found: create a token with write access at "
                       "https://huggingface.co/settings/tokens, then `export HF_TOKEN=...` or run `hf auth login`")


def _hub_errors() -> tuple[type, ...]:
    """What a failed Hub call raises: ``HfHubHTTPError`` and the errors of the HTTP library under it
    (its base classes: network errors derive from the library's base error), ValueError for a
    malformed answer."""
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, *HfHubHTTPError.__bases__, ValueError)


def _status(exc: BaseException) -> Optional[int]:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _describe(exc: BaseException, repo_id: str) -> str:
    """A one-line, token-free reason for a failed Hub call."""
    status = _status(exc)
    if status == 401:
        return ("the Hub rejected the token (401: invalid or expired): set a valid HF_TOKEN or run "
                "`hf auth login --force`")
    if status == 403:
        return (f"the token has no write access to {repo_id} (403): use a token with write permission for that "
                "namespace, or push to a repository you own")
    if status is not None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"the Hub answered {status} ({type(exc).__name__}: {first})"
    return f"cannot reach the Hub ({type(exc).__name__}: {exc}); check the network or HF_ENDPOINT"


def _ensure_repo(api, cfg: Config, *, check_write: bool) -> None:
    """Create ``hub.repo_id`` (and ``hub.revision``) when missing; optionally check write permission."""
    repo_id, revision = cfg.hub.repo_id, cfg.hub.revision
    api.create_repo(repo_id, private=cfg.hub.private, exist_ok=True)
    if check_write:
        api.auth_check(repo_id, write=True)
    if revision != "main" and not api.revision_exists(repo_id, revision=revision):
        api.create_branch(repo_id, branch=revision, exist_ok=True)


def _check_access(cfg: Config):
    """Token present, repo id well formed, repository reachable and writable (created if missing)."""
    repo_id = check_repo_id(cfg.hub.repo_id)
    _require_token()
    api = _api()
    try:
        who = api.whoami()
        role = (who.get("auth") or {}).get("accessToken", {}).get("role")
        if role == "read":
            raise HubError(f"the Hugging Face token of {who.get('name')!r} is read-only: pushing to {repo_id} needs "
                           "a token with write access (https://huggingface.co/settings/tokens)")
        _ensure_repo(api, cfg, check_write=True)
    except HubError:
        raise
    except _hub_errors() as e:
        raise HubError(f"cannot push to {repo_id}: {_describe(e, repo_id)}") from None
    return api


def preflight(cfg: Config) -> None:
    """When ``hub.push`` is set: fail now, before any training, if the push at the end could not work.

    Checks the token is there (never printing it), ``hub.repo_id`` is well formed, and the repository
    is reachable and writable (it is created when missing, ``hub.revision`` too).
    """
    if not cfg.hub.push:
        return
    _check_access(cfg)
    logger.info("Hub preflight ok: %s (branch %s) is writable", cfg.hub.repo_id, cfg.hub.revision)


# ----------------------------------------------------------------------------------------------
# Pushing one directory
# ----------------------------------------------------------------------------------------------
def artifact_kind(path: Path) -> str:
    """``checkpoint`` (a step-N training state), ``model``, ``tokenizer`` or ``files``."""
    path = Path(path)
    if (path / COMPLETE_MARKER).is_file() or re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", path.name):
        return "checkpoint"
    if (path / "config.json").is_file():
        return "model"
    if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file():
        return "tokenizer"
    return "files"


def _default_message(path: Path, kind: str) -> str:
    if kind == "checkpoint":
        step = path.name[len(CHECKPOINT_PREFIX):] if path.name.startswith(CHECKPOINT_PREFIX) else "?"
        return f"Training in progress, step {step}"
    if kind == "model":
        return ("Upload fine-tuned classifier" if model_kind(path) == "finetune" else "Upload pretrained encoder")
    if kind == "tokenizer":
        return "Upload tokenizer"
    return f"Upload {path.name}"


def _upload(api, path: Path, cfg: Config, message: Optional[str]):
    """One commit with the content of ``path`` (see the module docstring for where it lands).

    A model directory gets its model card first: written from ``metrics.json`` when missing,
    re-rendered for this repository when mlm_pretrain wrote it, kept when it is the user's own.
    """
    kind = artifact_kind(path)
    if kind == "model":
        refresh_model_card(path, cfg)
    if message is None:
        message = cfg.hub.commit_message if cfg.hub.commit_message and kind != "checkpoint" else _default_message(path, kind)
    in_repo = CHECKPOINT_DIR_IN_REPO if kind == "checkpoint" else None
    return api.upload_folder(
        repo_id=cfg.hub.repo_id, folder_path=str(path), path_in_repo=in_repo, revision=cfg.hub.revision,
        commit_message=message, ignore_patterns=IGNORE_PATTERNS,
        # a checkpoint replaces the previous one entirely (files it no longer has are deleted)
        delete_patterns=["*"] if kind == "checkpoint" else None)


def _check_dir(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise HubError(f"nothing to push at {path}: give a run artifact directory (tokenizer/, pretrain/final, "
                       "finetune/<task>/final or a checkpoint step-N), or run the stage that writes it first")
    if not any(path.iterdir()):
        raise HubError(f"{path} is empty: nothing to push")
    return path


def push_to_hub(path: str | Path | None, cfg: Config) -> str:
    """Push a run artifact directory to ``hub.repo_id`` and return the commit URL.

    ``path`` None means ``<output_dir>/pretrain/final``. A model directory gets its ``README.md``
    model card written first (or refreshed, when the card was generated by mlm_pretrain).
    """
    path = _check_dir(Path(path) if path is not None else RunLayout.of(cfg).final)
    api = _check_access(cfg)
    try:
        info = _upload(api, path, cfg, None)
    except _hub_errors() as e:  # one clear line instead of a traceback
        raise HubError(f"push of {path} to {cfg.hub.repo_id} failed: {_describe(e, cfg.hub.repo_id)}") from None
    logger.info("pushed %s to %s@%s: %s", path, cfg.hub.repo_id, cfg.hub.revision, info.commit_url)
    return info.commit_url


# ----------------------------------------------------------------------------------------------
# Background pushes during training
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushFailure:
    path: Path
    error: str
    attempts: int


def _retryable(exc: BaseException) -> bool:
    """Server errors, rate limits and network failures are worth retrying; refusals (4xx) are not."""
    if isinstance(exc, (UserError, FileNotFoundError)):
        return False
    status = _status(exc)
    return status is None or status >= 500 or status in (408, 429)


class BackgroundPusher:
    """Pushes directories to the Hub from one background thread, in submission order.

    ``submit`` returns at once (training never waits for the network). Each push is retried
    ``hub.retries`` times with a doubling wait starting at ``hub.retry_wait`` seconds; when it finally
    fails a warning is logged and the failure is returned by :meth:`wait`. Only the main process
    should own a pusher. Use ``is_pending`` as ``save_checkpoint``'s ``protect`` callback so that
    ``keep_last`` never deletes a checkpoint whose push has not finished.
    """

    def __init__(self, cfg: Config):
        check_repo_id(cfg.hub.repo_id)
        self.cfg = cfg
        self._api = None
        self._repo_ready = False
        self._pending: list[tuple[Path, Optional[str]]] = []  # queued and running, in order
        self._failures: list[PushFailure] = []
        self.commit_urls: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hub-pusher", daemon=True)
        self._thread.start()

    def submit(self, path: Path, message: Optional[str] = None) -> None:
        """Queue ``path`` for upload and return immediately."""
        path = Path(path)
        with self._cond:
            if self._closed:
                raise RuntimeError("BackgroundPusher is closed")
            self._pending.append((path, message))
            self._cond.notify_all()
        logger.info("queued push of %s to %s", path, self.cfg.hub.repo_id)

    def is_pending(self, path: Path) -> bool:
        """True while ``path`` is queued or being uploaded."""
        target = Path(path).resolve()
        with self._cond:
            return any(p.resolve() == target for p, _ in self._pending)

    def wait(self, timeout: Optional[float] = None) -> list[PushFailure]:
        """Block until every submitted push has finished (or ``timeout`` seconds); return all failures."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    logger.warning("%d Hub push(es) still running after %.0f s", len(self._pending), timeout)
                    break
                self._cond.wait(left)
            return list(self._failures)

    @property
    def failures(self) -> list[PushFailure]:
        with self._cond:
            return list(self._failures)

    def close(self, wait: bool = True) -> list[PushFailure]:
        """Stop accepting pushes; by default wait for the queued ones first. Returns the failures."""
        failures = self.wait() if wait else self.failures
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            self._thread.join()
        return failures

    def __enter__(self) -> "BackgroundPusher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                path, message = self._pending[0]
            try:
                self._push_with_retries(path, message)
            finally:
                with self._cond:
                    self._pending.pop(0)
                    self._cond.notify_all()

    def _push_once(self, path: Path, message: Optional[str]) -> str:
        if self._api is None:
            self._api = _api()
        if not self._repo_ready:
            _ensure_repo(self._api, self.cfg, check_write=False)
            self._repo_ready = True
        # A cheap GET first: when the server is down it fails at once (upload calls retry internally).
        self._api.repo_info(self.cfg.hub.repo_id, revision=self.cfg.hub.revision)
        return _upload(self._api, _check_dir(path), self.cfg, message).commit_url

    def _push_with_retries(self, path: Path, message: Optional[str]) -> None:
        attempts = self.cfg.hub.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                url = self._push_once(path, message)
            except Exception as e:
                reason = _describe(e, self.cfg.hub.repo_id) if not isinstance(e, UserError) else str(e)
                if attempt < attempts and _retryable(e):
                    wait = min(self.cfg.hub.retry_wait * 2 ** (attempt - 1), RETRY_WAIT_CAP)
                    logger.info("push of %s failed (attempt %d/%d: %s); retrying in %.1f s",
                                path, attempt, attempts, reason, wait)
                    time.sleep(wait)
                    continue
                logger.warning("push of %s to %s failed after %d attempt(s): %s (the local copy is kept)",
                               path, self.cfg.hub.repo_id, attempt, reason)
                with self._cond:
                    self._failures.append(PushFailure(path, reason, attempt))
                return
            with self._cond:
                self.commit_urls.append(url)
            logger.info("pushed %s to %s: %s", path, self.cfg.hub.repo_id, url)
            return
