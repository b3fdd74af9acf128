"""What identifies a run's inputs and results: computed once per command and passed down to the stages.

    from mlm_pretrain.identity import run_inputs
    inputs = run_inputs(cfg)         # tokenizer hash, corpus fingerprint, prepared-data key (None: no tokenizer yet)
    inputs.data_dir                  # <data_root>/<key>: the prepared data of exactly these inputs
    inputs.stamp()                   # what checkpoints and metrics.json record, compared on resume

Every cache and every "already done" decision reads its answer here: :func:`cache_key` names the
prepared data (corpus, tokenizer, data and masking settings, seed), :func:`pretrain_fingerprint` and
:func:`finetune_fingerprint` decide whether a finished pretraining or fine-tuning seed is reused, and
:func:`config_hash` hashes any such payload. The parts come from the modules that read the inputs: the
corpus fingerprint (files by path, size and mtime, or a Hub dataset's commit, plus the task's texts)
from :mod:`mlm_pretrain.corpus`, the tokenizer's content hash from :mod:`mlm_pretrain.tokenizer`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import Config, fingerprint_dict, resolve_path, to_dict
from .corpus import corpus_fingerprint, sentence_split_mode
from .finetune_data import task_text
from .layout import RunLayout
from .sources import LOCAL_TASK_KEYS, hub_dataset_revision
from .tokenizer import tokenizer_hash

#: Bump when the layout or the construction of examples changes: old caches are then not reused.
FORMAT_VERSION = 2
#: Data settings that do not change the examples (left out of the cache key).
_NOT_IN_KEY = ("num_proc", "cache_dir", "shuffle_buffer")


def config_hash(payload) -> str:
    """A short stable hash of a JSON-able payload (a config subset, file stamps): what a result depends on."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_key(cfg: Config, tok_hash: str, corpus: Optional[str] = None) -> str:
    """Hash of everything that determines the prepared data (``corpus``: the corpus fingerprint when
    already computed; see :func:`run_inputs`)."""
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in _NOT_IN_KEY}
    masking = {k: v for k, v in to_dict(cfg.masking).items() if k != "pad_to_multiple_of"}
    corpus = corpus if corpus is not None else corpus_fingerprint(cfg.corpus, task_text(cfg))
    payload = {"format": FORMAT_VERSION, "corpus": corpus,
               "tokenizer": tok_hash, "data": data, "masking": masking, "seed": cfg.seed,
               "split_mode": sentence_split_mode(cfg)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunInputs:
    """What the prepared data and a trained model depend on besides the config."""

    layout: RunLayout
    tokenizer_hash: str       # content of the tokenizer directory (:func:`mlm_pretrain.tokenizer.tokenizer_hash`)
    corpus_fingerprint: str   # corpus files by path, size and mtime (:func:`mlm_pretrain.corpus.corpus_fingerprint`)
    data_key: str             # the prepared data's cache key (:func:`cache_key`)

    @property
    def data_dir(self) -> Path:
        """The prepared data's folder (it may not exist yet)."""
        return self.layout.data_root / self.data_key

    def stamp(self) -> dict[str, str]:
        """What checkpoints and ``metrics.json`` record of the inputs (compared on resume and re-runs)."""
        return {"tokenizer_hash": self.tokenizer_hash, "data_key": self.data_key}


def run_inputs(cfg: Config, layout: Optional[RunLayout] = None) -> Optional[RunInputs]:
    """The input stamps of ``cfg``'s run; None while it has no tokenizer directory."""
    layout = layout if layout is not None else RunLayout.of(cfg)
    if not layout.tokenizer.is_dir():
        return None
    tok_hash = tokenizer_hash(layout.tokenizer)
    corpus = corpus_fingerprint(cfg.corpus, task_text(cfg))
    return RunInputs(layout=layout, tokenizer_hash=tok_hash, corpus_fingerprint=corpus,
                     data_key=cache_key(cfg, tok_hash, corpus=corpus))


def pretrain_fingerprint(cfg: Config) -> str:
    """Hash of what determines the pretrained model (not where it is written or how it is logged)."""
    d = fingerprint_dict(cfg)
    keep = {k: d[k] for k in ("seed", "corpus", "tokenizer", "data", "masking", "model", "pretrain")}
    for k in ("eval_steps", "save_steps", "keep_last", "logging_steps", "resume", "dataloader_num_workers"):
        keep["pretrain"].pop(k, None)
    return config_hash(keep)


def finetune_fingerprint(cfg: Config, src: Optional[str]) -> str:
    """What a finished fine-tuning seed's result depends on (not the list of seeds nor resume/logging knobs):
    the settings, the encoder folder (``src``: its path and newest file), and the task's files by path, size
    and mtime, or its Hub dataset's commit."""
    d = fingerprint_dict(cfg)
    f = {k: v for k, v in d["finetune"].items() if k not in ("seeds", "resume", "logging_steps")}
    files = {}
    for name in ("train_file", "validation_file", "test_file"):
        p = getattr(cfg.finetune, name)
        if p and resolve_path(p).is_file():
            st = resolve_path(p).stat()
            files[name] = [str(resolve_path(p).resolve()), st.st_size, st.st_mtime_ns]
    model_stamp = None
    if src and (Path(src) / "config.json").is_file():
        st = max(((p.stat().st_mtime_ns, p.stat().st_size) for p in Path(src).iterdir() if p.is_file()), default=None)
        model_stamp = [str(Path(src).resolve()), st]
    payload = {"finetune": f, "seed": cfg.seed, "model": src, "model_stamp": model_stamp, "files": files,
               "model_cfg": d["model"] if src is None else None}
    if cfg.finetune.hub_dataset:  # only then: a task read from files keeps the fingerprint it always had
        payload["hub_revision"] = hub_dataset_revision(cfg.finetune.hub_dataset, cfg.finetune.hub_config,
                                                       key="finetune.hub_dataset", local=LOCAL_TASK_KEYS)
    return config_hash(payload)
