"""A longer window for a loaded encoder: its positions extended before it trains at a longer sequence length.

    from mlm_pretrain.positions import extend_positions, rope_theta_for
    notes = extend_positions(model, 512)      # in place; one line per change, e.g.
    # "extended the position table from 128 to 512 rows by tiling the trained rows"
    # "rotary: max positions 128 -> 512, global rope theta 160000 kept (covers 8192 tokens)"

**Learned absolute positions** (BERT, ELECTRA; DistilBERT and RoBERTa-style tables too): the table grows by
repeating the trained rows, new row ``i`` = trained row ``i % old`` (Longformer's start from RoBERTa's 512
rows, Beltagy et al. 2020: the copies keep the local structure the attention learned, which fresh random
rows would not). RoBERTa-style embeddings number positions from ``padding_idx + 1``: their first rows stay
as they are and only the rows after them are tiled. DistilBERT's sinusoidal tables are recomputed.

**Rotary positions** (ModernBERT) have no table: ``max_position_embeddings`` is raised, and the global
layers' rotary base follows the window, by ModernBERT's own schedule (Warner et al. 2024: theta 10,000 for
its 1,024-token pretraining, 160,000 for 8,192 tokens, i.e. theta grows as ``length ** (4/3)`` above 1,024
tokens, :func:`rope_theta_for`). A base is never lowered: one that already covers the new window is kept,
so the model computes exactly what it learned on the short sequences when the long phase starts (this
package's ModernBERT configs keep transformers' default global base, 160,000, which covers 8,192 tokens).
The local (sliding-window) layers keep their window (``local_attention``, 128 tokens by default) and
their base (10,000): ModernBERT reads 8,192 tokens with exactly those; a window is what a layer was trained
to look at, whatever the sequence length.

The loaded model and its config are changed in place; ``save_pretrained`` then records the new window.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .config import Config
from .errors import UserError

logger = logging.getLogger(__name__)

#: ModernBERT's schedule for the global rotary base: this base up to this many tokens, then ``** (4/3)``.
ROPE_BASE, ROPE_BASE_TOKENS = 10_000.0, 1024


class WindowError(UserError):
    """A checkpoint whose positions are fewer than the data's sequence length, without leave to extend them."""


def rope_theta_for(length: int) -> float:
    """The global rotary base ModernBERT's schedule gives a ``length``-token window (10,000 up to 1,024
    tokens, 160,000 at 8,192)."""
    return float(round(ROPE_BASE * max(1.0, length / ROPE_BASE_TOKENS) ** (4 / 3)))


def _is_rotary(model: nn.Module) -> bool:
    """Rotary positions: a ``rotary_emb`` module (ModernBERT) and no learned table."""
    return not _learned_modules(model) and any(isinstance(getattr(m, "rotary_emb", None), nn.Module)
                                                 for m in model.modules())


def _learned_modules(model: nn.Module) -> list[nn.Module]:
    """The distinct embedding modules holding a learned position table (``position_embeddings``)."""
    found = {id(m): m for m in model.modules() if isinstance(getattr(m, "position_embeddings", None), nn.Embedding)}
    return list(found.values())


def position_offset(module: nn.Module) -> int:
    """Rows before the first position: RoBERTa-style embeddings (they have a ``padding_idx``) count positions
    from ``padding_idx + 1``; 0 for the others."""
    pad = getattr(module, "padding_idx", None)
    return pad + 1 if isinstance(pad, int) else 0


def window(model: nn.Module) -> int:
    """The longest sequence (tokens) ``model``'s positions cover."""
    modules = _learned_modules(model)
    return model.config.max_position_embeddings - (position_offset(modules[0]) if modules else 0)


def tile_rows(table: torch.Tensor, rows: int, offset: int = 0) -> torch.Tensor:
    """``table`` grown to ``rows`` rows: the first ``offset`` rows as they are, then the trained position
    rows repeated (new row ``offset + i`` = row ``offset + i % (len(table) - offset)``)."""
    trained = table.size(0) - offset
    index = torch.arange(rows - offset, device=table.device) % trained + offset
    return torch.cat([table[:offset], table[index]])


def _extend_learned(model: nn.Module, length: int) -> list[str]:
    modules, notes = _learned_modules(model), []
    if not modules:
        raise WindowError(f"cannot extend the positions of a {model.config.model_type!r} model: it has neither a "
                          "learned position table nor rotary positions")
    for module in modules:
        old_table, offset = module.position_embeddings, position_offset(module)
        rows = length + offset
        if old_table.num_embeddings >= rows:  # shared with a model already extended (ELECTRA's generator)
            continue
        table = nn.Embedding(rows, old_table.embedding_dim, padding_idx=old_table.padding_idx).to(
            device=old_table.weight.device, dtype=old_table.weight.dtype)
        with torch.no_grad():
            if getattr(model.config, "sinusoidal_pos_embds", False):  # DistilBERT's fixed sinusoids
                from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

                create_sinusoidal_embeddings(rows, old_table.embedding_dim, table.weight)
                how = "recomputing its sinusoids"
            else:
                table.weight.copy_(tile_rows(old_table.weight, rows, offset))
                how = "tiling the trained rows" + (f" (the first {offset} kept: positions start at {offset})"
                                                   if offset else "")
        table.weight.requires_grad_(old_table.weight.requires_grad)
        module.position_embeddings = table
        ids = torch.arange(rows, device=old_table.weight.device).expand((1, -1))
        if isinstance(getattr(module, "position_ids", None), torch.Tensor):
            module.position_ids = ids
        if isinstance(getattr(module, "token_type_ids", None), torch.Tensor):
            module.token_type_ids = torch.zeros_like(ids)
        notes.append(f"extended the position table from {old_table.num_embeddings} to {rows} rows by {how}")
    model.config.max_position_embeddings = length + position_offset(modules[0])
    return notes


def _extend_rotary(model: nn.Module, length: int) -> list[str]:
    config = model.config
    old = config.max_position_embeddings
    config.max_position_embeddings = length
    notes = [f"rotary: max positions {old} -> {length}"]
    params = config.rope_parameters
    full = params.get("full_attention") if "full_attention" in params else params
    theta, needed = float(full["rope_theta"]), rope_theta_for(length)
    if needed > theta:
        full["rope_theta"] = needed
        notes[0] += f", global rope theta {theta:g} -> {needed:g} (ModernBERT's schedule for {length} tokens)"
    else:
        notes[0] += f", global rope theta {theta:g} kept (at least the {needed:g} that {length} tokens need)"
    local = params.get("sliding_attention") if "sliding_attention" in params else None
    if local is not None and "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        notes.append(f"rotary: local attention window {config.local_attention} tokens and local rope theta "
                     f"{float(local['rope_theta']):g} kept")
    for module in model.modules():  # the inverse frequencies are buffers computed from the config
        rotary = getattr(module, "rotary_emb", None)
        if isinstance(rotary, nn.Module):
            device = next(iter(rotary.buffers()), torch.empty(0)).device
            module.rotary_emb = type(rotary)(config=config, device=device)
    return notes


def extend_positions(model: nn.Module, length: int) -> list[str]:
    """Extend ``model`` (in place) to read ``length``-token sequences (see the module docstring); returns
    what changed, one line per change, each also logged. Nothing changes when it already reads them."""
    if window(model) >= length:
        return []
    notes = _extend_rotary(model, length) if _is_rotary(model) else _extend_learned(model, length)
    for line in notes:
        logger.info("%s", line)
    return notes


def match_window(generator: nn.Module, model: nn.Module) -> list[str]:
    """ELECTRA: the generator loaded beside ``model`` reads as long sequences as ``model`` (they share the
    embeddings; a rotary generator has its own base and config)."""
    return extend_positions(generator, window(model))


def _refusal(cfg: Config, has: int) -> str:
    length = cfg.data.max_seq_length
    return (f"data.max_seq_length={length} exceeds the {has} positions of model.init_from={cfg.model.init_from!r}; "
            f"set model.extend_positions=true to extend its window to {length} before training (learned position "
            "tables are tiled from the trained rows, rotary ones get a base for the longer window: "
            "docs/pretraining.md, \"A longer window after pretraining\"), or pretrain.long_phase.max_seq_length to "
            "pretrain at the shorter length first and end with a longer phase, or lower data.max_seq_length")


def check_window(cfg: Config, folder: Path) -> None:
    """Before any data work: ``model.init_from``'s ``config.json`` covers ``data.max_seq_length``, or
    ``model.extend_positions`` allows extending it; a :class:`WindowError` naming the fix otherwise."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # loading the weights gives the precise error
    has = config.get("max_position_embeddings")
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") and isinstance(has, int):
        has -= (config.get("pad_token_id") or 0) + 1
    if isinstance(has, int) and has < cfg.data.max_seq_length and not cfg.model.extend_positions:
        raise WindowError(_refusal(cfg, has))


def fit_window(model: nn.Module, cfg: Config) -> list[str]:
    """``model`` (loaded from ``model.init_from``) made to read ``data.max_seq_length`` tokens: extended when
    ``model.extend_positions`` allows it, else a :class:`WindowError` naming the fix."""
    has, length = window(model), cfg.data.max_seq_length
    if has >= length:
        return []
    if not cfg.model.extend_positions:
        raise WindowError(_refusal(cfg, has))
    return extend_positions(model, length)
