"""The pretraining losses, computed sparsely: the masked-LM head on the labelled positions only, NSP/SOP,
and ELECTRA's replaced-token detection; one step's loss normalised over every token of the step.

    from mlm_pretrain.objectives import PretrainingModule, loss_normalisers, step_loss
    module = PretrainingModule(model, generator)          # what the loop trains (and compiles)
    sums = module(**batch)                                 # loss sums and counts of a micro-batch
    loss = step_loss(sums, loss_normalisers(batch), cfg.pretrain.electra_disc_weight)

The stock heads project *every* position onto the vocabulary although only ~15% carry a label.
:func:`pretraining_sums` runs the same modules (the encoder, then the family's prediction head:
:func:`mlm_head`) on the labelled positions only, gathered first. Same parameters, same loss (tested to
1e-5 against the stock classes' own), and the saved model stays a plain transformers class that loads
anywhere. ELECTRA (:func:`replaced_token_sums`): the generator's head runs on the masked positions only
and samples the replacements in the same fused pass; the discriminator scores every token. The models
themselves are built by :mod:`mlm_pretrain.model`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .model import IGNORE_INDEX

#: Logits elements per chunk of :class:`LinearCrossEntropy` (128 MB in fp32): bounds its memory for
#: any batch while keeping the matmuls large.
CHUNK_ELEMENTS = 1 << 25


def sample_rows(weights: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One column index per row of ``weights`` (non-negative, unnormalised), drawn with probability
    proportional to its weight, from ``generator`` (None: the global RNG of the device).

    Inverse CDF: a running sum in float64 (as ``torch.multinomial`` accumulates on a CPU) and one
    uniform draw per row. An exponential race (``argmax(p / E)``, ``E ~ Exp(1)``) needs a draw per
    element, and PyTorch draws exponentials one at a time on one thread: for ELECTRA's 440 x 30,522
    generator logits per ``mini`` step that took 319 ms, ``torch.multinomial`` 311 ms, this 56 ms
    (measured on an AMX Xeon, 2 threads)."""
    cdf = weights.cumsum(1, dtype=torch.float64)
    u = torch.rand(weights.size(0), 1, generator=generator, dtype=torch.float64, device=weights.device)
    picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # the first index whose sum exceeds u
    return picked.squeeze(1).clamp_(max=weights.size(1) - 1)


class LinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of ``x @ weight.T + bias`` against ``targets``, summed, without keeping the
    ``[rows, vocab]`` logits of all rows at once: rows are processed in chunks of bounded size.

    ``F.cross_entropy(F.linear(x, w, b))`` writes the logits, then log-softmax, then in backward a
    zero-filled gradient, a scatter and a log-softmax backward: five passes over the biggest tensor
    of a small BERT. Here each chunk's logits are made, reduced (max, argmax, sum of exponentials)
    and, when gradients are wanted, turned into ``softmax - one_hot`` in place and multiplied into the
    input and weight gradients right away (as fused linear-cross-entropy kernels do); backward only
    scales them by the incoming gradient. Same loss and gradients as the unfused form (tested).

    Returns ``(loss_sum, row_losses, row_correct)``; only ``loss_sum`` is differentiable. With ``sample``
    (True: the global torch RNG; or a ``torch.Generator``) a fourth output holds one token per row drawn
    from ``softmax(logits)`` (:func:`sample_rows`), from the chunk's
    logits while they exist: ELECTRA's generator samples its replacements without a second projection.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk_rows: Optional[int] = None, sample=None):
        device = x.device.type
        chunk_rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.size(0))
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        want_grad = any(ctx.needs_input_grad[:3])
        rng = sample if isinstance(sample, torch.Generator) else None
        with torch.autocast(device, enabled=False):
            xc, wc = x.to(dtype), weight.to(dtype)
            bc = bias.to(dtype) if bias is not None else None
            n = x.size(0)
            row_loss = torch.empty(n, dtype=torch.float32, device=x.device)
            correct = torch.empty(n, dtype=torch.bool, device=x.device)
            sampled = torch.empty(n, dtype=torch.long, device=x.device) if sample else None
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
                if sampled is not None:
                    sampled[s:s + chunk_rows] = sample_rows(probs, rng)
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
        if sampled is None:
            ctx.mark_non_differentiable(row_loss, correct)
            return row_loss.sum(), row_loss, correct
        ctx.mark_non_differentiable(row_loss, correct, sampled)
        return row_loss.sum(), row_loss, correct, sampled

    @staticmethod
    def backward(ctx, grad_sum, *_grad_rest):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        return ((grad_x * grad_sum).to(x_dtype), (grad_w * grad_sum).to(w_dtype),
                (grad_b * grad_sum).to(b_dtype) if b_dtype is not None else None, None, None, None)


def encoder_of(model) -> nn.Module:
    """The encoder (embeddings + layers, no heads) of any pretraining or MLM model of the families."""
    arch = model.config.model_type
    return model.model if arch == "modernbert" else getattr(model, arch)  # .bert .electra .roberta .distilbert


def encode(model, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """The encoder's last hidden states of any pretraining or MLM model of the families."""
    encoder = encoder_of(model)
    if model.config.model_type in ("modernbert", "distilbert"):  # no token types
        return encoder(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
    return encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                   return_dict=True).last_hidden_state


def mlm_head(model):
    """(transform, decoder weight, decoder bias) of a model's masked-LM head: ``logits = transform(h) @
    weight.T + bias``, split so the projection can be fused with the loss."""
    arch = model.config.model_type
    if arch == "bert":
        head = model.cls.predictions
        bias = head.decoder.bias if head.decoder.bias is not None else head.bias
        return head.transform, head.decoder.weight, bias
    if arch == "modernbert":
        return model.head, model.decoder.weight, model.decoder.bias
    if arch == "roberta":  # RobertaLMHead: dense, gelu, LayerNorm, decoder
        head = model.lm_head
        return (lambda x: head.layer_norm(F.gelu(head.dense(x)))), head.decoder.weight, head.decoder.bias
    if arch == "distilbert":
        return (lambda x: model.vocab_layer_norm(model.activation(model.vocab_transform(x))),
                model.vocab_projector.weight, model.vocab_projector.bias)
    return model.generator_predictions, model.generator_lm_head.weight, model.generator_lm_head.bias


def _masked_lm(model, hidden, labels, per_sequence: bool, sample=None):
    """MLM sums over the labelled positions (gathered before the head); with ``sample``, also a token
    sampled from the head's softmax at each of them: True = fused into the loss pass, from the global
    RNG; a list of per-sequence seeds = each sequence's samples from its own seeded generator (whatever
    batch it is in). Returns (sums, positions, targets, sampled)."""
    flat_labels = labels.reshape(-1)
    positions = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
    targets = flat_labels.index_select(0, positions)
    picked = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
    transform, weight, bias = mlm_head(model)
    x = transform(picked)
    fused = sample if isinstance(sample, (bool, torch.Generator)) else None
    out = LinearCrossEntropy.apply(x, weight, bias, targets, None, fused)
    loss_sum, token_loss, correct = out[:3]
    rows = positions // labels.size(1)
    sampled = out[3] if fused else None
    if sample is not None and fused is None:
        sampled = torch.empty_like(targets)
        with torch.no_grad():
            for i, seed in enumerate(sample):
                at = (rows == i).nonzero().squeeze(1)
                if len(at):
                    rng = torch.Generator(device=x.device).manual_seed(int(seed))
                    logits = F.linear(x.index_select(0, at), weight, bias).float()
                    sampled[at] = sample_rows(logits.softmax(-1), rng)
    if per_sequence:
        n = labels.size(0)
        sums = {"mlm_loss": _per_row(token_loss, rows, n), "mlm_correct": _per_row(correct, rows, n),
                "mlm_count": _per_row(torch.ones_like(token_loss), rows, n)}
    else:
        sums = {"mlm_loss": loss_sum, "mlm_correct": correct.sum(),
                "mlm_count": torch.tensor(targets.numel(), device=targets.device)}
    return sums, positions, targets, sampled


def _per_row(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, device=values.device, dtype=torch.float32).index_add_(0, rows, values.float())


def pretraining_sums(model, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                     next_sentence_label=None, per_sequence: bool = False) -> dict[str, torch.Tensor]:
    """Summed (not averaged) losses and correct counts of a ``BertForPreTraining`` or
    ``ModernBertForMaskedLM`` on one batch.

    Returns ``mlm_loss`` (sum of token cross-entropies over labelled positions), ``mlm_correct``,
    ``mlm_count``, and when ``next_sentence_label`` is given (BERT) ``nsp_loss`` / ``nsp_correct`` /
    ``nsp_count``. The caller divides by counts over the *whole* optimizer step (all micro-batches, all
    processes; :data:`LOSS_TERMS`), so accumulation and data parallelism equal one big batch.
    ``per_sequence=True`` gives each of them per sequence (shape ``[batch]``, not differentiable)
    instead, for evaluation gathered across processes.

    Only the labelled positions reach the prediction head (gathered first): the vocabulary projection,
    by far the largest matmul of a small encoder, runs on ~15% of the tokens, fused with the
    cross-entropy (:class:`LinearCrossEntropy`).
    """
    if model.config.model_type != "bert":
        hidden = encode(model, input_ids, attention_mask)
        return _masked_lm(model, hidden, labels, per_sequence)[0]
    out = model.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
    sums = _masked_lm(model, out.last_hidden_state, labels, per_sequence)[0]
    nsp_logits = model.cls.seq_relationship(out.pooler_output).float()
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


def replaced_token_sums(generator, discriminator, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                        per_sequence: bool = False, sample=True) -> dict[str, torch.Tensor]:
    """ELECTRA's sums on one masked batch: the generator's MLM sums (as :func:`pretraining_sums`; its head
    runs on the masked positions only and samples a replacement at each), then the discriminator's
    replaced-token detection over every real token of the corrupted sequence (the original with the
    samples at the masked positions; a sample equal to the original counts as original, as in the paper).

    Adds ``rtd_loss`` (summed binary cross-entropy), ``rtd_correct``, ``rtd_count`` (real tokens) and, for
    precision / recall, ``rtd_true_positive``, ``rtd_predicted`` and ``rtd_replaced``. No gradient flows
    from the discriminator into the generator (sampling is discrete). ``sample``: True = the global RNG
    (restored on resume), or one seed per sequence (fixed validation replacements, whatever the batching).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    hidden = encode(generator, input_ids, attention_mask, token_type_ids)
    sums, positions, targets, sampled = _masked_lm(generator, hidden, labels, per_sequence, sample=sample)
    with torch.no_grad():
        original = torch.where(labels != IGNORE_INDEX, labels, input_ids).reshape(-1)
        corrupted = original.index_copy(0, positions, sampled)
        replaced = (corrupted != original).view_as(input_ids)
        corrupted = corrupted.view_as(input_ids)
    d_hidden = encode(discriminator, corrupted, attention_mask, token_type_ids)
    logits = rtd_logits(discriminator, d_hidden).float()
    real = attention_mask.bool()
    target = replaced.float()
    token_loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * real
    with torch.no_grad():
        predicted = (logits > 0) & real
        replaced = replaced & real
        stats = {"rtd_correct": (predicted == replaced) & real, "rtd_count": real,
                 "rtd_true_positive": predicted & replaced, "rtd_predicted": predicted, "rtd_replaced": replaced}
    if per_sequence:
        sums["rtd_loss"] = token_loss.detach().sum(1)
        sums.update({k: v.float().sum(1) for k, v in stats.items()})
    else:
        sums["rtd_loss"] = token_loss.sum()
        sums.update({k: v.sum() for k, v in stats.items()})
    return sums


def rtd_logits(discriminator, hidden: torch.Tensor) -> torch.Tensor:
    """The discriminator's replaced-token logit at every position (``[batch, seq]``) from its encoder's
    last hidden states: ``ElectraForPreTraining``'s head, or ``ModernBertForTokenClassification``'s
    prediction head and one-logit classifier."""
    if discriminator.config.model_type == "modernbert":
        return discriminator.classifier(discriminator.drop(discriminator.head(hidden))).squeeze(-1)
    return discriminator.discriminator_predictions(hidden)


#: (loss sum, count it is divided by, weight) of every term a step's loss can have:
#: loss = sum over terms of weight x (loss sum over the step) / (count over the step). The counts come
#: from the batches (:func:`loss_normalisers`) before any forward pass; ``None`` weight = pretrain.electra_disc_weight.
LOSS_TERMS = (("mlm_loss", "mlm_count", 1.0), ("nsp_loss", "nsp_count", 1.0), ("rtd_loss", "rtd_count", None))


def loss_normalisers(batch: dict) -> dict[str, int]:
    """The counts of :data:`LOSS_TERMS` in one (micro-)batch, known before the forward pass: masked
    tokens, sentence pairs, real tokens."""
    return {"mlm_count": int((batch["labels"] != IGNORE_INDEX).sum()),
            "nsp_count": batch["next_sentence_label"].numel() if "next_sentence_label" in batch else 0,
            "rtd_count": int(batch["attention_mask"].sum())}


def step_loss(sums: dict, counts: dict, disc_weight: float) -> torch.Tensor:
    """This micro-batch's share of the step loss (:data:`LOSS_TERMS`), ``counts`` summed over the whole step."""
    loss = None
    for key, count, weight in LOSS_TERMS:
        if key in sums:
            term = sums[key] * ((disc_weight if weight is None else weight) / max(counts[count], 1.0))
            loss = term if loss is None else loss + term
    return loss


class PretrainingModule(nn.Module):
    """The training-time wrapper: ``forward(**batch)`` returns :func:`pretraining_sums` (or, with an
    ELECTRA ``generator``, :func:`replaced_token_sums`).

    It exists so that DistributedDataParallel / FSDP (which hook ``forward``) see the sparse-loss
    computation; ``.model`` is the plain transformers model that gets saved (``.generator`` beside it).
    """

    def __init__(self, model, generator=None):
        super().__init__()
        self.model = model
        self.generator = generator

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None,
                per_sequence: bool = False, sample_seeds: Optional[list[int]] = None):
        if self.generator is None:
            return pretraining_sums(self.model, input_ids, attention_mask, token_type_ids, labels,
                                    next_sentence_label, per_sequence=per_sequence)
        return replaced_token_sums(self.generator, self.model, input_ids, attention_mask, token_type_ids, labels,
                                   per_sequence=per_sequence, sample=True if sample_seeds is None else sample_seeds)
