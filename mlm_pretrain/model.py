"""Encoder models for pretraining: presets, checks, and the sparse pretraining loss.

    from mlm_pretrain.model import build_model, build_generator
    model = build_model(cfg, tokenizer)        # BertForPreTraining / ModernBertForMaskedLM / ElectraForPreTraining
                                               # / ModernBertForTokenClassification (modernbert-electra)
    generator = build_generator(cfg, model)    # ELECTRA's MLM generator (embeddings shared), else None

``model.architecture`` picks a stock transformers family (:data:`PRETRAINING_CLASSES`); presets follow
Google's compact BERT grid (Turc et al. 2019): heads = hidden / 64, feed-forward 4 x hidden (ModernBERT's
GeGLU: 8/3 x hidden, the same parameters). ``model.config_path`` starts from a ``config.json`` of the same
family instead; the explicit fields (``num_hidden_layers``, ``hidden_size``, ...) override either.

The loss: the stock heads project *every* position onto the vocabulary although only ~15% carry a
label. :func:`pretraining_sums` runs the same modules (the encoder, then the family's prediction head:
:func:`mlm_head`) on the labelled positions only, gathered first. Same parameters, same loss (tested to
1e-5 against the stock classes' own), and the saved model stays a plain transformers class that loads
anywhere. ELECTRA (:func:`replaced_token_sums`): the generator's head runs on the masked positions only
and samples the replacements in the same fused pass; the discriminator scores every token. Two ELECTRA
families (:data:`RTD_ARCHITECTURES`): ``electra`` (HF's post-LN Electra classes, a narrower generator
as in the paper) and ``modernbert-electra`` (the pre-norm ModernBERT backbone: a shallower
``ModernBertForMaskedLM`` generator of the same width, as DeBERTa-v3's, and a one-logit
``ModernBertForTokenClassification`` discriminator).
"""
from __future__ import annotations

import json
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import RTD_ARCHITECTURES, Config, ModelConfig, resolve_path
from .sources import SourceError, local_folder
from .errors import UserError

#: name -> (layers, hidden) of Google's compact BERT grid.
PRESETS: dict[str, tuple[int, int]] = {
    "tiny": (2, 128), "mini": (4, 256), "small": (4, 512),
    "medium": (8, 512), "base": (12, 768), "large": (24, 1024),
}

#: model.architecture -> the transformers class pretraining trains and ``pretrain/final`` holds.
PRETRAINING_CLASSES = {"bert": "BertForPreTraining", "modernbert": "ModernBertForMaskedLM",
                       "electra": "ElectraForPreTraining", "modernbert-electra": "ModernBertForTokenClassification"}
#: model.architecture -> the transformers ``model_type`` of its models.
MODEL_TYPES = {"bert": "bert", "modernbert": "modernbert", "electra": "electra", "modernbert-electra": "modernbert"}
CONFIG_CLASSES = {"bert": "BertConfig", "modernbert": "ModernBertConfig", "electra": "ElectraConfig",
                  "modernbert-electra": "ModernBertConfig"}
#: Each ELECTRA family's generator class (saved in ``pretrain/final/generator/``).
GENERATOR_CLASSES = {"electra": "ElectraForMaskedLM", "modernbert-electra": "ModernBertForMaskedLM"}
#: ELECTRA's generator is saved beside the discriminator, in this subfolder of ``pretrain/final``.
GENERATOR_DIR = "generator"
#: The family's own dropout default (model.hidden_dropout_prob / attention_probs_dropout_prob = null).
DEFAULT_DROPOUT = {"bert": 0.1, "modernbert": 0.0, "electra": 0.1, "modernbert-electra": 0.0}

IGNORE_INDEX = -100


class ModelError(UserError):
    """A model configuration that cannot train on this tokenizer / data; the message says what to change."""


def _transformers_class(name: str):
    import transformers

    return getattr(transformers, name)


def token_ids(tokenizer) -> dict[str, int]:
    """The special-token ids a model config records (``pad_token_id`` sizes the embedding's padding row)."""
    ids = {"pad_token_id": tokenizer.pad_token_id}
    for name in ("cls_token_id", "sep_token_id"):
        if getattr(tokenizer, name, None) is not None:
            ids[name] = getattr(tokenizer, name)
    return ids


def _feed_forward(architecture: str, hidden: int) -> int:
    # GeGLU has three hidden x intermediate matrices (two in, one out); 8/3 x hidden gives the
    # parameters (and FLOPs) of BERT's two-matrix 4 x hidden feed-forward, so a preset costs the same.
    if MODEL_TYPES[architecture] == "modernbert":
        return -(-(8 * hidden) // (3 * 64)) * 64
    return 4 * hidden


def _read_config_file(mcfg: ModelConfig, vocab_size: int) -> dict:
    path = resolve_path(mcfg.config_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"model.config_path={mcfg.config_path!r}: no such config.json; "
                         "give a file (or a directory holding one) or use model.preset")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise ModelError(f"model.config_path={mcfg.config_path!r} is not a readable config.json ({e})") from None
    model_type, wanted = values.get("model_type"), MODEL_TYPES[mcfg.architecture]
    if model_type is not None and model_type != wanted:
        known = f"model.architecture={model_type}" if model_type in PRETRAINING_CLASSES else \
            f"a config.json of model_type {wanted!r}"
        raise ModelError(f"model.config_path={mcfg.config_path!r} is a {model_type!r} config but "
                         f"model.architecture={mcfg.architecture}; set {known} (or give a {wanted} config)")
    if values.get("vocab_size", vocab_size) != vocab_size:
        raise ModelError(f"vocabulary mismatch: {path} has vocab_size={values['vocab_size']} but the tokenizer has "
                         f"{vocab_size} entries; use the tokenizer the config was made for, or delete vocab_size "
                         "from the config (it is taken from the tokenizer)")
    return values


def build_config(mcfg: ModelConfig, vocab_size: int, *, pad_token_id: int = 0, cls_token_id: Optional[int] = None,
                 sep_token_id: Optional[int] = None):
    """The transformers config of ``mcfg.architecture`` (for ELECTRA: the discriminator's) with
    ``vocab_size`` and special-token ids taken from the tokenizer.

    With ``config_path`` the file is the base; the explicit size fields override it, and the fields that
    always have a value (``max_position_embeddings``) or a family default (dropouts) override it only when
    set (to something other than the default / not null).
    """
    arch = mcfg.architecture
    defaults = ModelConfig()
    if mcfg.config_path:
        values = _read_config_file(mcfg, vocab_size)
        if mcfg.max_position_embeddings != defaults.max_position_embeddings:
            values["max_position_embeddings"] = mcfg.max_position_embeddings
    else:
        layers, hidden = PRESETS[mcfg.preset]
        values = {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": hidden // 64,
                  "intermediate_size": _feed_forward(arch, hidden),
                  "max_position_embeddings": mcfg.max_position_embeddings}
    if mcfg.hidden_size is not None:
        values["hidden_size"] = mcfg.hidden_size
        # derived sizes follow the new width unless they are given explicitly
        values["num_attention_heads"] = max(1, mcfg.hidden_size // 64)
        values["intermediate_size"] = _feed_forward(arch, mcfg.hidden_size)
    for name in ("num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if getattr(mcfg, name) is not None:
            values[name] = getattr(mcfg, name)
    modernbert = MODEL_TYPES[arch] == "modernbert"
    if mcfg.num_hidden_layers is not None and modernbert:
        values.pop("layer_types", None)  # recomputed for the new depth (global attention every 3rd layer)
    if values["hidden_size"] % values["num_attention_heads"]:
        raise ModelError(f"hidden_size={values['hidden_size']} is not a multiple of num_attention_heads="
                         f"{values['num_attention_heads']}; set model.num_attention_heads to a divisor "
                         f"(e.g. {max(1, values['hidden_size'] // 64)})")
    hidden_dropout = mcfg.hidden_dropout_prob
    attention_dropout = mcfg.attention_probs_dropout_prob
    if not mcfg.config_path:  # a config file keeps its own dropouts unless they are set
        hidden_dropout = DEFAULT_DROPOUT[arch] if hidden_dropout is None else hidden_dropout
        attention_dropout = DEFAULT_DROPOUT[arch] if attention_dropout is None else attention_dropout
    if modernbert:
        if hidden_dropout is not None:
            values["embedding_dropout"] = values["mlp_dropout"] = hidden_dropout
        if attention_dropout is not None:
            values["attention_dropout"] = attention_dropout
        values.update(bos_token_id=cls_token_id, eos_token_id=sep_token_id, cls_token_id=cls_token_id,
                      sep_token_id=sep_token_id)
        # The head runs on the labelled positions only (in pretraining_sums, and in the stock forward too,
        # for anyone training the saved model further with labels). Mean pooling for classification:
        # MLM-only pretraining gives [CLS] no objective of its own (ModernBERT's released checkpoints pool
        # the same way).
        values.setdefault("sparse_prediction", True)
        values.setdefault("sparse_pred_ignore_index", IGNORE_INDEX)
        values.setdefault("classifier_pooling", "mean")
        if arch == "modernbert-electra":  # the discriminator: one logit per token, "replaced"
            values.update(num_labels=1, id2label={0: "replaced"}, label2id={"replaced": 0})
    else:
        if hidden_dropout is not None:
            values["hidden_dropout_prob"] = hidden_dropout
        if attention_dropout is not None:
            values["attention_probs_dropout_prob"] = attention_dropout
        if arch == "electra" and not mcfg.config_path:
            values["embedding_size"] = values["hidden_size"]
    if mcfg.tie_word_embeddings is not None and arch not in RTD_ARCHITECTURES:
        values["tie_word_embeddings"] = mcfg.tie_word_embeddings
    values["vocab_size"] = vocab_size
    values["pad_token_id"] = pad_token_id
    values["architectures"] = [PRETRAINING_CLASSES[arch]]
    for key in ("model_type", "transformers_version", "_attn_implementation_autoset", "dtype", "torch_dtype"):
        values.pop(key, None)
    config = _transformers_class(CONFIG_CLASSES[arch])(**values)
    config._attn_implementation = mcfg.attn_implementation
    return config


def build_bert_config(mcfg: ModelConfig, vocab_size: int, *, pad_token_id: int = 0):
    """:func:`build_config` of a ``bert`` model (the historical entry point)."""
    if mcfg.architecture != "bert":
        raise ModelError(f"build_bert_config got model.architecture={mcfg.architecture}; use build_config")
    return build_config(mcfg, vocab_size, pad_token_id=pad_token_id)


def build_generator_config(mcfg: ModelConfig, config):
    """ELECTRA's generator config. ``electra``: the discriminator ``config`` narrowed by
    ``generator_size_ratio`` (or to ``generator_hidden_size``), same depth (unless
    ``generator_num_hidden_layers``), vocabulary and ``embedding_size`` (the embeddings are shared; each
    model projects them to its own width). ``modernbert-electra``: the same
    width (ModernBERT has no embedding projection, and the embeddings are shared), ``generator_size_ratio``
    of the depth (or ``generator_num_hidden_layers``), at least one layer."""
    if mcfg.architecture == "modernbert-electra":
        return _modernbert_generator_config(mcfg, config)
    hidden = mcfg.generator_hidden_size or max(1, int(round(config.hidden_size * mcfg.generator_size_ratio)))
    heads = mcfg.generator_num_attention_heads or max(
        1, int(round(config.num_attention_heads * hidden / config.hidden_size)))
    where = ("model.generator_hidden_size" if mcfg.generator_hidden_size
             else f"model.generator_size_ratio={mcfg.generator_size_ratio:g} x {config.hidden_size}")
    if hidden % heads:
        raise ModelError(f"the ELECTRA generator's hidden size {hidden} ({where}) is not a multiple of its "
                         f"{heads} attention heads; set model.generator_hidden_size to a multiple of {heads} "
                         f"(e.g. {max(heads, hidden // heads * heads)}) or model.generator_num_attention_heads to a "
                         "divisor of it")
    changes = dict(hidden_size=hidden, num_attention_heads=heads,
                   intermediate_size=max(1, int(round(config.intermediate_size * hidden / config.hidden_size))))
    if mcfg.generator_num_hidden_layers:
        changes["num_hidden_layers"] = mcfg.generator_num_hidden_layers
    return _generator_config(mcfg, config, **changes)


def _generator_config(mcfg: ModelConfig, config, **changes):
    """The discriminator's ``config`` with ``changes``, as the config of its family's generator class
    (:data:`GENERATOR_CLASSES`), with the same attention kernel."""
    name = GENERATOR_CLASSES[mcfg.architecture]
    values = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "dtype", "torch_dtype", "layer_types",
                "num_labels", "id2label", "label2id"):
        values.pop(key, None)  # layer_types: ModernBERT recomputes them for the generator's depth
    values.update(changes, architectures=[name])
    gen = _transformers_class(CONFIG_CLASSES[mcfg.architecture])(**values)
    gen._attn_implementation = config._attn_implementation
    return gen


def _modernbert_generator_config(mcfg: ModelConfig, config):
    if mcfg.generator_hidden_size not in (None, config.hidden_size):
        raise ModelError(f"model.generator_hidden_size={mcfg.generator_hidden_size}: model.architecture=modernbert-electra "
                         f"shares the {config.hidden_size}-wide embeddings with its generator, which has no projection, "
                         "so the generator is as wide as the discriminator and shallower instead; unset "
                         "model.generator_hidden_size and set model.generator_num_hidden_layers (or generator_size_ratio)")
    layers = mcfg.generator_num_hidden_layers or max(1, int(round(config.num_hidden_layers * mcfg.generator_size_ratio)))
    heads = mcfg.generator_num_attention_heads or config.num_attention_heads
    if config.hidden_size % heads:
        raise ModelError(f"the generator's hidden size {config.hidden_size} is not a multiple of "
                         f"model.generator_num_attention_heads={heads}; give a divisor of it")
    return _generator_config(mcfg, config, num_hidden_layers=layers, num_attention_heads=heads)


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


def check_model_settings(cfg: Config, tokenizer) -> None:
    """Every model error :func:`build_model` / :func:`build_generator` would raise, without building
    weights: run before any data work."""
    if cfg.model.init_from:
        return  # checked when the weights are loaded
    config = build_config(cfg.model, len(tokenizer), **token_ids(tokenizer))
    check_model_config(config, len(tokenizer), cfg.data.max_seq_length)
    if cfg.model.architecture in RTD_ARCHITECTURES:
        build_generator_config(cfg.model, config)


def architecture_of(config: dict) -> Optional[str]:
    """The ``model.architecture`` whose pretraining class a ``config.json`` (as a dict) records, else the
    architecture named like its ``model_type``; None for another family."""
    model_type, saved = config.get("model_type"), config.get("architectures") or []
    for arch, cls in PRETRAINING_CLASSES.items():
        if MODEL_TYPES[arch] == model_type and cls in saved:
            return arch
    return model_type if model_type in PRETRAINING_CLASSES else None


def _is_generator_folder(model_dir, config: dict) -> bool:
    """An ELECTRA generator: an ``ElectraForMaskedLM`` (no other model has that class), or the
    ``generator/`` folder beside a discriminator (a ``modernbert-electra`` generator is a plain masked LM)."""
    if GENERATOR_CLASSES["electra"] in (config.get("architectures") or []):
        return True
    if model_dir.name != GENERATOR_DIR:
        return False
    try:
        parent = json.loads((model_dir.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return architecture_of(parent) in RTD_ARCHITECTURES


def load_pretraining_model(model_dir, *, attn_implementation: Optional[str] = None, architecture: Optional[str] = None):
    """The pretraining model saved in ``model_dir`` (``pretrain/final`` or a checkpoint export), as the
    class of its family; ``architecture`` given: it must match."""
    from pathlib import Path

    from transformers import AutoConfig

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a save_pretrained directory (no config.json); point it at a finished "
                         "run's pretrain/final, or at a Hub model id")
    config = AutoConfig.from_pretrained(str(model_dir))
    arch = architecture_of(config.to_dict())
    if arch is None:
        raise ModelError(f"{model_dir} holds a {config.model_type!r} model; pretraining handles "
                         f"{', '.join(MODEL_TYPES.values())}")
    if _is_generator_folder(model_dir, config.to_dict()):
        raise ModelError(f"{model_dir} is an ELECTRA generator; give the discriminator's folder, {model_dir.parent}")
    if architecture is not None and arch != architecture:
        raise ModelError(f"{model_dir} holds a {arch} model but model.architecture={architecture}; set "
                         f"model.architecture={arch}")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return _transformers_class(PRETRAINING_CLASSES[arch]).from_pretrained(str(model_dir), **kwargs)


def init_folder(cfg: Config):
    """``model.init_from`` as a folder: a local one, or the Hub snapshot of a repository id."""
    try:
        return local_folder(cfg.model.init_from, "model.init_from")
    except SourceError as e:
        raise ModelError(str(e)) from e


def build_model(cfg: Config, tokenizer, *, seed: Optional[int] = None):
    """A freshly initialised pretraining model of ``cfg.model.architecture`` (:data:`PRETRAINING_CLASSES`;
    ELECTRA: the discriminator) for ``tokenizer``, seeded with ``seed`` (default ``cfg.seed``), checked
    against ``cfg.data.max_seq_length``."""
    if cfg.model.init_from:  # continue from another run's weights (e.g. BERT's phase 2 at sequence 512)
        model = load_pretraining_model(init_folder(cfg), architecture=cfg.model.architecture,
                                       attn_implementation=cfg.model.attn_implementation)
        check_model_config(model.config, len(tokenizer), cfg.data.max_seq_length)
        return model
    config = build_config(cfg.model, len(tokenizer), **token_ids(tokenizer))
    check_model_config(config, len(tokenizer), cfg.data.max_seq_length)
    torch.manual_seed(cfg.seed if seed is None else seed)
    return _transformers_class(PRETRAINING_CLASSES[cfg.model.architecture])(config)


def build_generator(cfg: Config, model):
    """ELECTRA's generator (:data:`GENERATOR_CLASSES`) for the discriminator ``model``, or None for the
    other architectures. Initialised after ``model`` (same seed sequence), or loaded from ``init_from``'s
    ``generator/``; its embeddings *are* the discriminator's (``electra``: token, position and type
    embeddings and their LayerNorm, shared as in the paper; ``modernbert-electra``: token embeddings and
    their norm), so its vocabulary projection is tied to them too."""
    arch = cfg.model.architecture
    if arch not in RTD_ARCHITECTURES:
        return None
    if cfg.model.init_from:
        src = init_folder(cfg)
        if not (src / GENERATOR_DIR / "config.json").is_file():
            raise ModelError(f"model.init_from={cfg.model.init_from!r} has no {GENERATOR_DIR}/ folder: it is not an "
                             "ELECTRA run's pretrain/final")
        return load_generator(src, model, attn_implementation=cfg.model.attn_implementation)
    generator = _transformers_class(GENERATOR_CLASSES[arch])(build_generator_config(cfg.model, model.config))
    share_embeddings(generator, model)
    return generator


def load_generator(model_dir, model, *, attn_implementation: Optional[str] = None):
    """The generator saved in ``model_dir/generator/`` beside the discriminator ``model``, sharing its embeddings."""
    from pathlib import Path

    arch = architecture_of(model.config.to_dict())
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    generator = _transformers_class(GENERATOR_CLASSES[arch]).from_pretrained(str(Path(model_dir) / GENERATOR_DIR),
                                                                             **kwargs)
    share_embeddings(generator, model)
    return generator


def share_embeddings(generator, model) -> None:
    """Make ``generator`` use ``model``'s embedding module (and tie its vocabulary projection to it)."""
    if model.config.model_type == "modernbert":
        if generator.config.hidden_size != model.config.hidden_size:
            raise ModelError(f"the generator's hidden size {generator.config.hidden_size} differs from the "
                             f"discriminator's {model.config.hidden_size}: they cannot share embeddings")
        generator.model.embeddings = model.model.embeddings
        generator.decoder.weight = model.model.embeddings.tok_embeddings.weight
        return
    if generator.config.embedding_size != model.config.embedding_size:
        raise ModelError(f"the generator's embedding_size {generator.config.embedding_size} differs from the "
                         f"discriminator's {model.config.embedding_size}: they cannot share embeddings")
    generator.electra.embeddings = model.electra.embeddings
    generator.generator_lm_head.weight = model.electra.embeddings.word_embeddings.weight


def check_finetuning_source(model_dir) -> None:
    """Fine-tuning starts from an encoder; an ELECTRA generator folder (``pretrain/final/generator``) is
    a mistake worth naming before any work."""
    from pathlib import Path

    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # loading it later gives the precise error
    if _is_generator_folder(model_dir, config):
        raise ModelError(f"{model_dir} is an ELECTRA generator ({(config.get('architectures') or ['?'])[0]}): "
                         f"fine-tuning uses the discriminator, saved one folder up; set finetune.model={model_dir.parent}")


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ----------------------------------------------------------------------------------------------
# The sparse pretraining loss
# ----------------------------------------------------------------------------------------------
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
    (AMX Xeon, 2 threads; ``docs/benchmarks.md``)."""
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
    """The encoder (embeddings + layers, no heads) of any pretraining or MLM model of the three families."""
    arch = model.config.model_type
    return model.model if arch == "modernbert" else model.bert if arch == "bert" else model.electra


def encode(model, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """The encoder's last hidden states of any pretraining or MLM model of the three families."""
    encoder = encoder_of(model)
    if model.config.model_type == "modernbert":  # rotary positions, no token types
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
