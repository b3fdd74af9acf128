"""What both stages write the same way: flat hyperparameters, and ``final/`` folders with their model card.

    pretrain/final/            <- pretrain: save_pretrained of the gathered state dict (see below)
    finetune/<task>/final/     <- finetune: the median seed's best model (saved by transformers.Trainer)

A ``final/`` folder is a plain Hugging Face model directory (safetensors + tokenizer) with the run's
``metrics.json``, its resolved config and a model card. It is written to a temporary folder that is
renamed once complete, so a crash never leaves half a model where a finished one is expected.

Saving under FSDP / DeepSpeed: the weights must be gathered from every process before the main one
writes them. Both stages do it the same way: every process calls ``accelerator.get_state_dict(model)``
(a full state dict, whatever ``fsdp_state_dict_type`` the checkpoints use), then the main process
writes it with :func:`save_model` (pretraining: its ``final/``; fine-tuning: each seed's ``best/``,
which ``final/`` copies). Training checkpoints stay each loop's own: ``accelerator.save_state`` in
pretraining, the Trainer's in fine-tuning (sharded under ``SHARDED_STATE_DICT``).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional

from .config import Config, save_resolved, to_dict
from .model_card import write_model_card
from .textio import atomic_write_json

logger = logging.getLogger(__name__)


def flat_config(cfg: Config) -> dict:
    """The config as flat scalars (what TensorBoard's hparams accept)."""
    flat = {}
    for section, values in to_dict(cfg).items():
        for k, v in (values.items() if isinstance(values, dict) else [("", values)]):
            key = f"{section}.{k}" if k else section
            flat[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def save_model(out: Path, model, state_dict: dict, tokenizer, *, strip_prefix: str = "",
               only_prefixed: bool = False) -> None:
    """``save_pretrained`` (safetensors) of ``state_dict`` (gathered by ``accelerator.get_state_dict`` on
    every process; call this on the main process only) and the tokenizer. ``strip_prefix``: a wrapper's
    prefix on the keys (pretraining's ``model.``); with ``only_prefixed`` the other keys are left out (the
    ELECTRA wrapper holds two models: ``model.`` and ``generator.``)."""
    n = len(strip_prefix)
    weights = {k[n:] if strip_prefix and k.startswith(strip_prefix) else k: v for k, v in state_dict.items()
               if not only_prefixed or k.startswith(strip_prefix)}
    model.save_pretrained(str(out), state_dict=weights, safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move a completed folder ``tmp`` to ``final``, replacing what was there."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; it becomes ``final`` when the block completes
    (an exception leaves the previous ``final`` untouched)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    replace_dir(tmp, final)


def write_final(final: Path, cfg: Config, *, kind: str, metrics: dict, save: Callable[[Path], None],
                config_name: str = "config.yaml", card_extra: Optional[dict] = None) -> Path:
    """``final/``: the model that ``save(folder)`` writes there, plus ``metrics.json``, the resolved config
    (``config_name``) and a ``README.md`` model card (``kind``: pretrain or finetune), atomically."""
    with staged_dir(final) as tmp:
        save(tmp)
        atomic_write_json(tmp / "metrics.json", metrics)
        save_resolved(cfg, tmp / config_name)
        try:  # ---- model card call site (mlm_pretrain/model_card.py)
            write_model_card(tmp, cfg, kind=kind, metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))
                                                           and not isinstance(v, bool) and k.startswith(("eval/", "test/"))},
                             extra=card_extra)
        except Exception as e:  # noqa: BLE001 - a card is documentation; never lose the model over it
            logger.warning("could not write the model card: %s", e)
    return Path(final)
