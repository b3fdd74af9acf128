"""mlm_pretrain: pretrain a BERT-style encoder from scratch on your corpus, fine-tune it for text
classification, and publish every checkpoint to the Hugging Face Hub.

Each stage is one function of a frozen :class:`Config` that returns the path it wrote::

    from mlm_pretrain import load_config, train_tokenizer
    cfg = load_config("tiny", ["output_dir=runs/demo"])
    tok_dir = train_tokenizer(cfg)

Stage functions are imported lazily, so ``import mlm_pretrain`` stays cheap.

Floors: the modules in import order, top first. A module imports only from its own floor or the floors
below (tests/test_floors.py checks every import, those inside functions too, and that there is no
circle); a name is imported from the module that defines it, never through one that re-exports it.

=======================================  ===============================================================
``cli``, ``pipeline``                    ``mlm-pretrain <stage>`` and ``run``: thin callers of the stages
``suite``                                fine-tune one encoder on a suite of tasks (a YAML file), one table
``pretrain``, ``finetune``               the two stages that train (a loop on one screen; the Trainer)
``predict``, ``probe``, ``trainer``,     scoring a classifier; the in-training probe; one fine-tuning seed;
``evaluation``                           an encoder on the fixed-mask validation set
``hub``                                  pushing to the Hub (preflight, background pushes)
``artifacts``, ``model_card``            a stage's ``final/`` folder and its model card
``hardware``, ``optim``,                 training parts: precision, kernels, threads, allocator, compile
``checkpoints``, ``metrics_log``         and the Accelerator; optimizer and schedule; checkpoints; logs;
``phases``                               pretraining's phases (a last one at a longer window)
``model``, ``objectives``,               building encoders (scratch or a checkpoint); the losses; the
``classifier``, ``flops``, ``dropout``   classifier to fine-tune; FLOPs; CPU dropout kernels;
``positions``                            a loaded encoder's positions extended to a longer window
``prepare``, ``batches``, ``examples``   the data stage (cached); batches for the loop; texts -> examples
``masking``, ``pairs``                   pure functions of token ids and seeded generators
``identity``                             what identifies a run's inputs, computed once per command
``tokenizer``                            train or load a tokenizer
``corpus``, ``finetune_data``,           read documents; read labelled tasks (files or Hub datasets);
``windows``                              long documents as overlapping windows, pooled
``sources``, ``layout``, ``metrics``     local path or Hub id; where a run's files go; task metrics
``config``, ``textio``, ``errors``       the frozen config; line-safe text and whole-file I/O; errors
=======================================  ===============================================================
"""
from __future__ import annotations

import importlib

from .config import (Config, ConfigError, CorpusConfig, DataConfig, FinetuneConfig, HubConfig, MaskingConfig,
                     ModelConfig, PretrainConfig, TokenizerConfig, TrackingConfig, from_dict, load_config,
                     save_resolved, to_dict)
from .errors import UserError

__version__ = "0.1.0"

#: The floors of the table above, top first (tests/test_floors.py reads them).
FLOORS = (("cli", "pipeline"), ("suite",), ("pretrain", "finetune"), ("predict", "probe", "trainer", "evaluation"), ("hub",),
          ("artifacts", "model_card"), ("hardware", "optim", "checkpoints", "metrics_log", "phases"),
          ("model", "objectives", "classifier", "flops", "dropout", "positions"),
          ("prepare", "batches", "examples"), ("masking", "pairs"), ("identity",), ("tokenizer",), ("corpus", "finetune_data", "windows"),
          ("sources", "layout", "metrics"), ("config", "textio", "errors"))

_LAZY = {
    "train_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "prepare_pretraining_data": "prepare",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "evaluate_model": "predict",
    "push_to_hub": "hub",
    "run_pipeline": "pipeline",
    "run_suite": "suite",
}

__all__ = ["Config", "ConfigError", "CorpusConfig", "DataConfig", "FinetuneConfig", "HubConfig", "MaskingConfig",
           "ModelConfig", "PretrainConfig", "TokenizerConfig", "TrackingConfig", "UserError", "from_dict",
           "load_config", "save_resolved", "to_dict", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mlm_pretrain' has no attribute {name!r}")
