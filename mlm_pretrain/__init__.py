"""mlm_pretrain: pretrain a BERT-style encoder from scratch on your corpus, fine-tune it for text
classification, and publish every checkpoint to the Hugging Face Hub.

Each stage is one function of a frozen :class:`Config` that returns the path it wrote::

    from mlm_pretrain import load_config, train_tokenizer
    cfg = load_config("tiny", ["output_dir=runs/demo"])
    tok_dir = train_tokenizer(cfg)

Stage functions are imported lazily, so ``import mlm_pretrain`` stays cheap.
"""
from __future__ import annotations

import importlib

from .config import (Config, ConfigError, CorpusConfig, DataConfig, FinetuneConfig, HubConfig, MaskingConfig,
                     ModelConfig, PretrainConfig, TokenizerConfig, TrackingConfig, from_dict, load_config,
                     save_resolved, to_dict)
from .errors import UserError

__version__ = "0.1.0"

_LAZY = {
    "train_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "prepare_pretraining_data": "prepare",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "evaluate_model": "predict",
    "push_to_hub": "hub",
    "run_pipeline": "pipeline",
}

__all__ = ["Config", "ConfigError", "CorpusConfig", "DataConfig", "FinetuneConfig", "HubConfig", "MaskingConfig",
           "ModelConfig", "PretrainConfig", "TokenizerConfig", "TrackingConfig", "UserError", "from_dict",
           "load_config", "save_resolved", "to_dict", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mlm_pretrain' has no attribute {name!r}")
