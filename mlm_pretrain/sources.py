"""Where a run's inputs come from: a local path, or the Hugging Face Hub (read as every HF tool reads it).

    from mlm_pretrain.sources import local_folder, load_hub_dataset
    local_folder("bert-base-uncased", "model.init_from")      # a folder: the given one, or the Hub snapshot
    load_hub_dataset("nyu-mll/glue", "sst2", key="finetune.hub_dataset")   # a DatasetDict, cached by datasets

A reference that names an existing folder is that folder. Otherwise, when it reads as a Hub repository
id (``bert-base-uncased``, ``answerdotai/ModernBERT-base``), the files the stages need are downloaded
once with ``huggingface_hub.snapshot_download`` into the Hugging Face cache, and every later stage reads
them from there: the rest of the package only ever sees folders. Hub datasets go through
``datasets.load_dataset`` and its cache. The endpoint is ``HF_ENDPOINT`` and the token ``HF_TOKEN`` (or
the login cache), as for ``huggingface_hub`` itself.

Every way this fails is a :class:`SourceError` naming the key, the repository and the fix, raised before
any long work: no such repository (or no access to it), no such configuration, split or file, the Hub
unreachable, or offline (``HF_HUB_OFFLINE=1``) with the data not in the cache. When the Hub cannot be
reached at all, :func:`offline_if_unreachable` switches this process to the cache at once instead of
letting each client retry for half a minute.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Optional

from .config import resolve_path
from .errors import UserError

logger = logging.getLogger(__name__)

#: What a tokenizer needs from a model repository (every tokenizer family's files, and config.json,
#: which ``AutoTokenizer`` reads for the tokenizer class of older repositories).
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken")
#: What a model needs besides its tokenizer: safetensors weights (``pytorch_model*.bin`` only when a
#: repository has no safetensors), and an ELECTRA run's ``generator/`` folder.
MODEL_PATTERNS = (*TOKENIZER_PATTERNS, "*.safetensors", "generator/*")
LEGACY_WEIGHTS = ("pytorch_model*.bin",)


#: The settings that read the corpus, or the task, from local files instead of the Hub (named in errors).
LOCAL_CORPUS_KEYS = "corpus.files=[path/to/*.txt] (or .jsonl / .parquet / .csv with corpus.text_field)"
LOCAL_TASK_KEYS = "finetune.train_file=PATH finetune.validation_file=PATH (and the task's columns)"


class SourceError(UserError):
    """An input named by a Hub id or path that cannot be had; the message names it and the way out."""


def forget() -> None:
    """Forget what this process learnt of the Hub (reachable or not, snapshots, dataset revisions): for
    tests that point the clients at another server."""
    for cached in (offline_if_unreachable, local_folder, hub_dataset_revision):
        cached.cache_clear()
    while _SWITCHED_OFFLINE:  # undo offline_if_unreachable's switch
        module, name, value = _SWITCHED_OFFLINE.pop()
        setattr(module, name, value)


#: (module, attribute, value before) of each offline flag :func:`offline_if_unreachable` set.
_SWITCHED_OFFLINE: list = []


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def looks_like_repo_id(ref: str) -> bool:
    """Whether ``ref`` can name a Hub repository (``name`` or ``namespace/name``); a path that exists
    locally is never asked about."""
    if not ref or ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def offline_if_unreachable() -> bool:
    """When the Hub endpoint does not answer at all (no network, no DNS), read from the local cache only
    for the rest of this process, with a warning; returns whether the process is offline. Once per
    process: without it each client call retries for up to half a minute before failing."""
    if is_offline():
        return True
    from huggingface_hub import constants, get_session

    try:
        get_session().head(hub_endpoint(), timeout=float(os.environ.get("MLM_PRETRAIN_HUB_PROBE_TIMEOUT", 10)))
        return False
    except Exception as e:  # any answer at all (even an error status) means the Hub is reachable
        logger.warning("the Hub at %s cannot be reached (%s): reading Hub models and datasets from the local "
                       "cache only", hub_endpoint(), type(e).__name__)
    import datasets

    for module in (constants, datasets.config):
        _SWITCHED_OFFLINE.append((module, "HF_HUB_OFFLINE", module.HF_HUB_OFFLINE))
        module.HF_HUB_OFFLINE = True
    return True


def _ways_out(local: str) -> str:
    return (f"connect to the Hub once (it is cached after that; {hub_endpoint()}, HF_ENDPOINT), or use local "
            f"files instead: {local}")


@functools.lru_cache(maxsize=None)
def local_folder(ref: str, key: str, kind: str = "model") -> Path:
    """The folder ``ref`` names: an existing local path as it is; else, when ``ref`` reads as a Hub
    repository id, its snapshot (``kind="tokenizer"``: the tokenizer files only; ``"model"``: weights
    too); else the path as given, for the caller to report missing in its own terms."""
    path = resolve_path(ref)
    if path.exists() or not looks_like_repo_id(ref):
        return path
    return _snapshot(ref, key, kind)


def _snapshot(repo_id: str, key: str, kind: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    offline_if_unreachable()
    patterns = list(TOKENIZER_PATTERNS if kind == "tokenizer" else MODEL_PATTERNS)
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if kind == "model" and not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns + list(LEGACY_WEIGHTS)))
    except GatedRepoError as e:
        raise SourceError(f"{key}={repo_id!r}: the repository is gated; accept its terms on the Hub and log in "
                          "(HF_TOKEN or `hf auth login`)") from e
    except RepositoryNotFoundError as e:
        raise SourceError(f"{key}={repo_id!r}: no local folder of that name, and no model repository {repo_id!r} "
                          f"on the Hub ({hub_endpoint()}); check the id (and log in with HF_TOKEN for a private "
                          "one), or give a local folder") from e
    except RevisionNotFoundError as e:  # pragma: no cover - we always ask for the default branch
        raise SourceError(f"{key}={repo_id!r}: {e}") from e
    except (LocalEntryNotFoundError, OSError) as e:  # offline and not cached, or the connection failed
        raise SourceError(f"{key}={repo_id!r}: not in the local Hugging Face cache and the Hub cannot be reached"
                          f"{' (HF_HUB_OFFLINE is set)' if is_offline() else ''}; "
                          + _ways_out(f"{key}=/path/to/a/save_pretrained/folder")) from e
    if not (folder / "config.json").is_file() and kind == "model":
        raise SourceError(f"{key}={repo_id!r}: the Hub repository has no config.json: it is not a transformers "
                          "model; point it at one")
    logger.info("%s=%s: the Hub snapshot in %s", key, repo_id, folder)
    return folder


def load_hub_dataset(repo_id: str, config: Optional[str], *, split: Optional[str] = None, streaming: bool = False,
                     key: str, local: str):
    """``datasets.load_dataset(repo_id, config, split=split, streaming=streaming)`` with each failure
    turned into a :class:`SourceError` that names ``key`` and the way out (``local``: the settings that
    read local files instead)."""
    import datasets

    with _dataset_errors(repo_id, config, key, local):
        return datasets.load_dataset(repo_id, config, split=split, streaming=streaming)


@functools.lru_cache(maxsize=None)
def hub_dataset_revision(repo_id: str, config: Optional[str], *, key: str, local: str) -> str:
    """The commit of the Hub dataset that ``load_hub_dataset`` reads (the one in the cache when offline):
    part of the corpus fingerprint, so that prepared data built from an older version of a dataset is
    never reused for a newer one."""
    import datasets

    with _dataset_errors(repo_id, config, key, local):
        return datasets.load_dataset_builder(repo_id, config).hash


@contextlib.contextmanager
def _dataset_errors(repo_id: str, config: Optional[str], key: str, local: str):
    """``datasets``' failures to find a Hub dataset as :class:`SourceError` naming ``key`` and the way out."""
    from datasets.exceptions import DatasetNotFoundError

    offline_if_unreachable()
    what = f"{key}={repo_id!r}" + (f" (configuration {config!r})" if config else "")
    try:
        yield
    except DatasetNotFoundError as e:
        if is_offline():
            raise SourceError(f"{what}: not in the local datasets cache, and offline"
                              f"{' (HF_HUB_OFFLINE is set)' if os.environ.get('HF_HUB_OFFLINE') else ''}; "
                              + _ways_out(local)) from e
        raise SourceError(f"{what}: no dataset repository {repo_id!r} on the Hub ({hub_endpoint()}); check the id "
                          f"(and log in with HF_TOKEN for a private one), or use local files: {local}") from e
    except ConnectionError as e:  # offline (or unreachable) and not cached
        raise SourceError(f"{what}: not in the local datasets cache and the Hub cannot be reached"
                          f"{' (offline)' if is_offline() else ''}; " + _ways_out(local)) from e
    except ValueError as e:  # an unknown configuration or split: datasets lists the ones that exist
        text, section = str(e), key.rsplit(".", 1)[0]
        if "split" in text.lower():
            fix = f"set {section}.split to one of them"
        elif "config" in text.lower():
            fix = f"set {section}.hub_config to one of them"
        else:
            raise
        raise SourceError(f"{what}: {text}; {fix}") from e
