"""BERT models for pretraining: presets, checks, and the sparse pretraining loss.

    from mlm_pretrain.model import build_model
    model = build_model(cfg, tokenizer)        # a plain transformers BertForPreTraining

Presets follow Google's compact BERT grid (Turc et al. 2019): heads = hidden / 64 and
intermediate = 4 x hidden. ``model.config_path`` starts from a ``config.json`` instead; the explicit
fields (``num_hidden_layers``, ``hidden_size``, ...) override either.

The loss: ``BertForPreTraining.forward`` projects *every* position onto the vocabulary although only
~15% carry a label. :func:`pretraining_sums` runs the same modules (``model.bert``, then
``model.cls.predictions`` and ``model.cls.seq_relationship``) on the labelled positions only, gathered
first. Same parameters, same loss (tested to 1e-5 against HF's own), and the saved model stays a plain
``BertForPreTraining`` that loads anywhere.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, ModelConfig, resolve_path
from .errors import UserError

#: name -> (layers, hidden) of Google's compact BERT grid.
PRESETS: dict[str, tuple[int, int]] = {
    "tiny": (2, 128), "mini": (4, 256), "small": (4, 512),
    "medium": (8, 512), "base": (12, 768), "large": (24, 1024),
}

IGNORE_INDEX = -100


class ModelError(UserError):
    """A model configuration that cannot train on this tokenizer / data; the message says what to change."""


def build_bert_config(mcfg: ModelConfig, vocab_size: int, *, pad_token_id: int = 0):
    """The ``BertConfig`` described by ``mcfg`` with ``vocab_size`` taken from the tokenizer.

    With ``config_path`` the file is the base; the explicit size fields override it, and the fields
    that always have a value (``max_position_embeddings``, dropouts, ``attn_implementation``) override
    it only when set to something other than their default.
    """
    from transformers import BertConfig

    defaults = ModelConfig()
    if mcfg.config_path:
        path = resolve_path(mcfg.config_path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ModelError(f"model.config_path={mcfg.config_path!r}: no such config.json; "
                             "give a file (or a directory holding one) or use model.preset")
        try:
            config = BertConfig.from_json_file(str(path))
        except (OSError, ValueError) as e:
            raise ModelError(f"model.config_path={mcfg.config_path!r} is not a readable config.json ({e})") from None
        if config.vocab_size != vocab_size:
            raise ModelError(f"vocabulary mismatch: {path} has vocab_size={config.vocab_size} but the tokenizer has "
                             f"{vocab_size} entries; use the tokenizer the config was made for, or delete vocab_size "
                             "from the config (it is taken from the tokenizer)")
        for name in ("max_position_embeddings", "hidden_dropout_prob", "attention_probs_dropout_prob"):
            if getattr(mcfg, name) != getattr(defaults, name):
                setattr(config, name, getattr(mcfg, name))
    else:
        layers, hidden = PRESETS[mcfg.preset]
        config = BertConfig(vocab_size=vocab_size, num_hidden_layers=layers, hidden_size=hidden,
                            num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                            max_position_embeddings=mcfg.max_position_embeddings,
                            hidden_dropout_prob=mcfg.hidden_dropout_prob,
                            attention_probs_dropout_prob=mcfg.attention_probs_dropout_prob)
    if mcfg.hidden_size is not None:
        config.hidden_size = mcfg.hidden_size
        # derived sizes follow the new width unless they are given explicitly
        config.num_attention_heads = max(1, mcfg.hidden_size // 64)
        config.intermediate_size = 4 * mcfg.hidden_size
    for name in ("num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if getattr(mcfg, name) is not None:
            setattr(config, name, getattr(mcfg, name))
    if config.hidden_size % config.num_attention_heads:
        raise ModelError(f"hidden_size={config.hidden_size} is not a multiple of num_attention_heads="
                         f"{config.num_attention_heads}; set model.num_attention_heads to a divisor "
                         f"(e.g. {max(1, config.hidden_size // 64)})")
    config.vocab_size = vocab_size
    config.pad_token_id = pad_token_id
    config.architectures = ["BertForPreTraining"]
    config._attn_implementation = mcfg.attn_implementation
    return config


def check_model_config(config, vocab_size: int, max_seq_length: int) -> None:
    """Errors before training: a vocabulary that does not match the tokenizer, or positions too few
    for the data's sequence length."""
    if config.vocab_size != vocab_size:
        raise ModelError(f"vocabulary mismatch: the model has vocab_size={config.vocab_size} but the tokenizer has "
                         f"{vocab_size} entries; a model must be built (or resumed) with the tokenizer it was made "
                         "for: use the same tokenizer, or start a new run (new output_dir or pretrain.resume=never)")
    if config.max_position_embeddings < max_seq_length:
        raise ModelError(f"data.max_seq_length={max_seq_length} exceeds model.max_position_embeddings="
                         f"{config.max_position_embeddings}; raise model.max_position_embeddings to at least "
                         f"{max_seq_length} or lower data.max_seq_length")


def build_model(cfg: Config, tokenizer, *, seed: Optional[int] = None):
    """A freshly initialised ``BertForPreTraining`` for ``cfg.model`` and ``tokenizer`` (seeded with
    ``seed``, default ``cfg.seed``), checked against ``cfg.data.max_seq_length``."""
    from transformers import BertForPreTraining

    if cfg.model.init_from:  # continue from another run's weights (e.g. BERT's phase 2 at sequence 512)
        from .config import resolve_path

        src = resolve_path(cfg.model.init_from)
        if not (src / "config.json").is_file():
            raise ModelError(f"model.init_from={cfg.model.init_from!r} is not a save_pretrained directory (no "
                             "config.json); point it at a finished run's pretrain/final")
        model = BertForPreTraining.from_pretrained(str(src), attn_implementation=cfg.model.attn_implementation)
        check_model_config(model.config, len(tokenizer), cfg.data.max_seq_length)
        return model
    config = build_bert_config(cfg.model, len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    check_model_config(config, len(tokenizer), cfg.data.max_seq_length)
    torch.manual_seed(cfg.seed if seed is None else seed)
    return BertForPreTraining(config)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ----------------------------------------------------------------------------------------------
# The sparse pretraining loss
# ----------------------------------------------------------------------------------------------
#: Logits elements per chunk of :class:`LinearCrossEntropy` (128 MB in fp32): bounds its memory for
#: any batch while keeping the matmuls large.
CHUNK_ELEMENTS = 1 << 25


class LinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of ``x @ weight.T + bias`` against ``targets``, summed, without keeping the
    ``[rows, vocab]`` logits of all rows at once: rows are processed in chunks of bounded size.

    ``F.cross_entropy(F.linear(x, w, b))`` writes the logits, then log-softmax, then in backward a
    zero-filled gradient, a scatter and a log-softmax backward: five passes over the biggest tensor
    of a small BERT. Here each chunk's logits are made, reduced (max, argmax, sum of exponentials)
    and, when gradients are wanted, turned into ``softmax - one_hot`` in place and multiplied into the
    input and weight gradients right away (as fused linear-cross-entropy kernels do); backward only
    scales them by the incoming gradient. Same loss and gradients as the unfused form (tested).

    Returns ``(loss_sum, row_losses, row_correct)``; only ``loss_sum`` is differentiable.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk_rows: Optional[int] = None):
        device = x.device.type
        chunk_rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.size(0))
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        want_grad = any(ctx.needs_input_grad[:3])
        with torch.autocast(device, enabled=False):
            xc, wc = x.to(dtype), weight.to(dtype)
            bc = bias.to(dtype) if bias is not None else None
            n = x.size(0)
            row_loss = torch.empty(n, dtype=torch.float32, device=x.device)
            correct = torch.empty(n, dtype=torch.bool, device=x.device)
            if want_grad:
                grad_x = torch.empty_like(xc)
                grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
                grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=x.device)
            for s in range(0, n, chunk_rows):
                xs, ts = xc[s:s + chunk_rows], targets[s:s + chunk_rows]
                logits = (torch.addmm(bc, xs, wc.t()) if bc is not None else xs @ wc.t()).float()
                target_logit = logits.gather(1, ts[:, None]).squeeze(1)
                top, best = logits.max(1)
                correct[s:s + chunk_rows] = best == ts
                probs = logits.sub_(top[:, None]).exp_()  # in place: the logits are not needed again
                total = probs.sum(1)
                row_loss[s:s + chunk_rows] = top + total.log() - target_logit
                if want_grad:
                    probs.div_(total[:, None])  # softmax
                    probs[torch.arange(len(ts), device=x.device), ts] -= 1.0  # - one_hot: d(loss)/d(logits)
                    g = probs.to(dtype)
                    torch.mm(g, wc, out=grad_x[s:s + chunk_rows])
                    if dtype == torch.float32:
                        grad_w.addmm_(g.t(), xs)  # accumulates inside the matmul: no extra pass
                    else:
                        grad_w += (g.t() @ xs).float()
                    grad_b += probs.sum(0)
        if want_grad:
            ctx.save_for_backward(grad_x, grad_w, grad_b)
            ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(row_loss, correct)
        return row_loss.sum(), row_loss, correct

    @staticmethod
    def backward(ctx, grad_sum, _grad_rows, _grad_correct):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        return ((grad_x * grad_sum).to(x_dtype), (grad_w * grad_sum).to(w_dtype),
                (grad_b * grad_sum).to(b_dtype) if b_dtype is not None else None, None, None)


def pretraining_sums(model, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                     next_sentence_label=None, per_sequence: bool = False) -> dict[str, torch.Tensor]:
    """Summed (not averaged) losses and correct counts of a ``BertForPreTraining`` on one batch.

    Returns ``mlm_loss`` (sum of token cross-entropies over labelled positions), ``mlm_correct``,
    ``mlm_count``, and when ``next_sentence_label`` is given ``nsp_loss`` / ``nsp_correct`` /
    ``nsp_count``. The caller divides by counts over the *whole* optimizer step (all micro-batches, all
    processes), so accumulation and data parallelism equal one big batch. ``per_sequence=True`` gives
    each of them per sequence (shape ``[batch]``, not differentiable) instead, for evaluation gathered
    across processes.

    Only the labelled positions reach the prediction head (gathered first): the vocabulary projection,
    by far the largest matmul of a small BERT, runs on ~15% of the tokens, fused with the
    cross-entropy (:class:`LinearCrossEntropy`).
    """
    out = model.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
    hidden = out.last_hidden_state
    flat_labels = labels.reshape(-1)
    positions = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
    targets = flat_labels.index_select(0, positions)
    picked = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
    head = model.cls.predictions
    decoder = head.decoder
    bias = decoder.bias if decoder.bias is not None else head.bias
    loss_sum, token_loss, correct = LinearCrossEntropy.apply(head.transform(picked), decoder.weight, bias, targets)
    nsp_logits = model.cls.seq_relationship(out.pooler_output).float()
    if per_sequence:
        rows = positions // labels.size(1)

        def total(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(labels.size(0), device=values.device, dtype=torch.float32).index_add_(
                0, rows, values.float())

        sums = {"mlm_loss": total(token_loss), "mlm_correct": total(correct),
                "mlm_count": total(torch.ones_like(token_loss))}
    else:
        sums = {"mlm_loss": loss_sum, "mlm_correct": correct.sum(),
                "mlm_count": torch.tensor(targets.numel(), device=targets.device)}
    if next_sentence_label is not None:
        nsp_labels = next_sentence_label.reshape(-1)
        reduction = "none" if per_sequence else "sum"
        sums["nsp_loss"] = F.cross_entropy(nsp_logits, nsp_labels, reduction=reduction)
        nsp_correct = (nsp_logits.detach().argmax(-1) == nsp_labels)
        sums["nsp_correct"] = nsp_correct.float() if per_sequence else nsp_correct.sum()
        sums["nsp_count"] = torch.ones_like(nsp_labels, dtype=torch.float32) if per_sequence else \
            torch.tensor(nsp_labels.numel(), device=nsp_labels.device)
    elif not per_sequence:
        # MLM only: the pooler and NSP head take no part in the loss. A zero-weighted term keeps every
        # parameter in the graph, so DistributedDataParallel needs no (slow) find_unused_parameters.
        sums["mlm_loss"] = sums["mlm_loss"] + 0.0 * nsp_logits.sum()
    return sums


class PretrainingModule(nn.Module):
    """The training-time wrapper: ``forward(**batch)`` returns :func:`pretraining_sums`.

    It exists so that DistributedDataParallel / FSDP (which hook ``forward``) see the sparse-loss
    computation; ``.model`` is the plain ``BertForPreTraining`` that gets saved.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None,
                per_sequence: bool = False):
        return pretraining_sums(self.model, input_ids, attention_mask, token_type_ids, labels, next_sentence_label,
                                per_sequence=per_sequence)
