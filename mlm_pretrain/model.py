"""Encoder models: building them from scratch (presets, checks) or loading an existing checkpoint, and the
encoder fine-tuning starts from.

    from mlm_pretrain.model import build_model, build_generator
    model = build_model(cfg, tokenizer)        # BertForPreTraining / ModernBertForMaskedLM / ElectraForPreTraining
                                               # / ModernBertForTokenClassification (modernbert-electra)
    generator = build_generator(cfg, model)    # ELECTRA's MLM generator (embeddings shared), else None
    src = model_source(cfg)                    # finetune.model (a folder or a Hub id) or the run's pretrain/final

``model.architecture`` picks a stock transformers family (:data:`PRETRAINING_CLASSES`); presets follow
Google's compact BERT grid (Turc et al. 2019): heads = hidden / 64, feed-forward 4 x hidden (ModernBERT's
GeGLU: 8/3 x hidden, the same parameters). ``model.config_path`` starts from a ``config.json`` of the same
family instead; the explicit fields (``num_hidden_layers``, ``hidden_size``, ...) override either.
``model.init_from`` loads a checkpoint instead: a folder or a Hub id (:mod:`mlm_pretrain.sources`). Two
ELECTRA families (:data:`RTD_ARCHITECTURES`): ``electra`` (HF's post-LN Electra classes, a narrower
generator as in the paper) and ``modernbert-electra`` (the pre-norm ModernBERT backbone: a shallower
``ModernBertForMaskedLM`` generator of the same width, as DeBERTa-v3's, and a one-logit
``ModernBertForTokenClassification`` discriminator). The losses they train with: :mod:`mlm_pretrain.objectives`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .config import RTD_ARCHITECTURES, Config, ModelConfig, resolve_path
from .errors import FinetuneError, UserError
from .layout import RunLayout
from .positions import check_window, fit_window, match_window
from .sources import SourceError, local_folder
from .tokenizer import load_tokenizer

#: name -> (layers, hidden) of Google's compact BERT grid.
PRESETS: dict[str, tuple[int, int]] = {
    "tiny": (2, 128), "mini": (4, 256), "small": (4, 512),
    "medium": (8, 512), "base": (12, 768), "large": (24, 1024),
}

#: model.architecture -> the transformers class pretraining trains and ``pretrain/final`` holds.
PRETRAINING_CLASSES = {"bert": "BertForPreTraining", "modernbert": "ModernBertForMaskedLM",
                       "electra": "ElectraForPreTraining", "modernbert-electra": "ModernBertForTokenClassification",
                       "roberta": "RobertaForMaskedLM", "distilbert": "DistilBertForMaskedLM"}
#: model.architecture -> the transformers ``model_type`` of its models.
MODEL_TYPES = {"bert": "bert", "modernbert": "modernbert", "electra": "electra", "modernbert-electra": "modernbert",
               "roberta": "roberta", "distilbert": "distilbert"}
CONFIG_CLASSES = {"bert": "BertConfig", "modernbert": "ModernBertConfig", "electra": "ElectraConfig",
                  "modernbert-electra": "ModernBertConfig", "roberta": "RobertaConfig", "distilbert": "DistilBertConfig"}
#: Each ELECTRA family's generator class (saved in ``pretrain/final/generator/``).
GENERATOR_CLASSES = {"electra": "ElectraForMaskedLM", "modernbert-electra": "ModernBertForMaskedLM"}
#: ELECTRA's generator is saved beside the discriminator, in this subfolder of ``pretrain/final``.
GENERATOR_DIR = "generator"
#: The family's own dropout default (model.hidden_dropout_prob / attention_probs_dropout_prob = null).
DEFAULT_DROPOUT = {"bert": 0.1, "modernbert": 0.0, "electra": 0.1, "modernbert-electra": 0.0, "roberta": 0.1,
                   "distilbert": 0.1}

IGNORE_INDEX = -100
#: At most this many embedding rows past the tokenizer's entries (a table padded to a multiple of 64 or 128).
PADDED_ROWS = 512


def table_fits(rows: int, entries: int) -> bool:
    """An embedding table of ``rows`` rows serves a tokenizer of ``entries`` entries: as many, or padded past
    them by fewer than :data:`PADDED_ROWS` (ModernBERT's 50,368 rows for 50,280 entries)."""
    return 0 <= rows - entries < PADDED_ROWS

logger = logging.getLogger(__name__)


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


def _family_names(arch: str, values: dict, pad_token_id: int, from_file: bool) -> None:
    """RoBERTa's and DistilBERT's own spellings of the config (the families continued pretraining starts
    from): RoBERTa numbers positions after ``padding_idx`` (``pad_token_id + 1`` more rows) and has one
    token type; DistilBERT names its sizes and dropouts its own way."""
    if arch == "roberta":
        if not from_file:
            values["max_position_embeddings"] += pad_token_id + 1
        values.setdefault("type_vocab_size", 1)
    elif arch == "distilbert":
        for ours, theirs in (("intermediate_size", "hidden_dim"), ("hidden_dropout_prob", "dropout"),
                             ("attention_probs_dropout_prob", "attention_dropout")):
            if ours in values:
                values[theirs] = values.pop(ours)


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
    _family_names(arch, values, pad_token_id, from_file=bool(mcfg.config_path))
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
    for the data's sequence length. A checkpoint's embedding table padded past its tokenizer (ModernBERT's
    50,368 rows for 50,280 entries) is accepted: the rows past the tokenizer are never fed nor labelled."""
    if not table_fits(config.vocab_size, vocab_size):
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
        folder = init_folder(cfg)
        check_family(cfg, folder, tokenizer)
        check_window(cfg, folder)  # its positions against data.max_seq_length; the rest when loaded
        check_continuing_rate(cfg, folder)
        return
    config = build_config(cfg.model, len(tokenizer), **token_ids(tokenizer))
    check_model_config(config, len(tokenizer), cfg.data.max_seq_length)
    if cfg.model.architecture in RTD_ARCHITECTURES:
        build_generator_config(cfg.model, config)


#: A peak learning rate at or above this is one for random weights (the from-scratch recipes use 3e-3).
SCRATCH_RATE = 1e-3


def check_continuing_rate(cfg: Config, folder: Path) -> None:
    """A warning when a public checkpoint (a folder this package's pretraining did not write: no
    ``metrics.json``) is continued at a from-scratch learning rate, as ``--config cpu-1h model.init_from=...``
    gives: at 3e-3, 400 steps took all-MiniLM-L6-v2 back to the unigram level
    (docs/studies/continued-pretraining.md). Not an error: the user may mean it."""
    rate = cfg.pretrain.learning_rate
    if rate >= SCRATCH_RATE and not (Path(folder) / "metrics.json").is_file():
        logger.warning("pretrain.learning_rate=%g is a rate for random weights: continuing the trained encoder "
                       "model.init_from=%r at it undoes much of what it knows; the `continue` recipe uses 1e-4 "
                       "(mlm-pretrain run --config continue, or set pretrain.learning_rate=1e-4 "
                       "pretrain.warmup_ratio=0.06)", rate, cfg.model.init_from)


def check_family(cfg: Config, folder: Path, tokenizer=None) -> None:
    """Before any data work: ``model.init_from``'s family is ``model.architecture`` (its sizes, vocabulary and
    positions come from the checkpoint; the family is named, since the objective and the export follow it),
    and its vocabulary is the tokenizer's."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # loading it gives the precise error
    rows = config.get("vocab_size")
    if tokenizer is not None and isinstance(rows, int) and not table_fits(rows, len(tokenizer)):
        raise ModelError(f"vocabulary mismatch: model.init_from={cfg.model.init_from!r} has vocab_size={rows} but the "
                         f"tokenizer has {len(tokenizer)} entries; continued pretraining needs the checkpoint's own "
                         "tokenizer: unset tokenizer.pretrained (the checkpoint's folder holds it) or name the right one")
    arch = architecture_of(config)
    if arch is None:
        raise ModelError(f"model.init_from={cfg.model.init_from!r} holds a {config.get('model_type')!r} model; continued "
                         f"pretraining handles {', '.join(sorted(set(MODEL_TYPES.values())))} checkpoints")
    if arch != cfg.model.architecture:
        objective = "" if arch == "bert" or cfg.data.objective == "mlm" else " data.objective=mlm"
        raise ModelError(f"model.init_from={cfg.model.init_from!r} holds a {arch} model "
                         f"({', '.join(config.get('architectures') or [config.get('model_type')])}) but "
                         f"model.architecture={cfg.model.architecture}; set model.architecture={arch}{objective}")


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
    model, info = _transformers_class(PRETRAINING_CLASSES[arch]).from_pretrained(
        str(model_dir), output_loading_info=True, **kwargs)
    _log_new_weights(model, info, model_dir, config)
    return model


def _log_new_weights(model, info: dict, model_dir, config) -> None:
    """Say which weights the checkpoint lacked (a ``BertModel`` without its pretraining head, say) and
    were initialised, and whether the masked-LM decoder is tied to the input embeddings."""
    missing = sorted(info.get("missing_keys") or [])
    if not missing:
        return
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    decoder = ("the masked-LM decoder is tied to the input embeddings" if tied else "no masked-LM decoder"
               if out is None else "the masked-LM decoder has a matrix of its own (the checkpoint's setting)")
    logger.warning("%s (a %s) lacks %d tensors of a %s (its pretraining head): initialised %s; %s", model_dir,
                   ", ".join(config.architectures or [config.model_type]), len(missing), type(model).__name__, shown,
                   decoder)


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
        fit_window(model, cfg)  # a longer data.max_seq_length: extended with model.extend_positions, else refused
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
    if cfg.model.init_from and (init_folder(cfg) / GENERATOR_DIR / "config.json").is_file():
        src = init_folder(cfg)
        generator = load_generator(src, model, attn_implementation=cfg.model.attn_implementation)
        match_window(generator, model)  # extended with the discriminator (its config; a rotary generator's base)
        return generator
    if cfg.model.init_from:  # a discriminator alone (a public ELECTRA checkpoint): a new generator beside it
        logger.warning("model.init_from=%r has no %s/ folder (a discriminator alone): a new generator is initialised, "
                       "sized by model.generator_size_ratio", cfg.model.init_from, GENERATOR_DIR)
    generator = _transformers_class(GENERATOR_CLASSES[arch])(build_generator_config(cfg.model, model.config))
    share_embeddings(generator, model)
    return generator


def load_generator(model_dir, model, *, attn_implementation: Optional[str] = None):
    """The generator saved in ``model_dir/generator/`` beside the discriminator ``model``, sharing its embeddings."""
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
# The encoder fine-tuning starts from, and its tokenizer
# ----------------------------------------------------------------------------------------------
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def model_source(cfg: Config) -> Optional[str]:
    """The encoder to start from, as a local folder: ``finetune.model`` (a folder, or a Hub id whose
    snapshot is downloaded once), else this run's ``pretrain/final``; None when ``init=random`` and there
    is no model (the architecture then comes from ``cfg.model``)."""
    f = cfg.finetune
    src = f.model or str(RunLayout.of(cfg).final)
    try:
        p = local_folder(src, "finetune.model")
    except SourceError as e:
        raise FinetuneError(str(e)) from e
    if not p.is_dir():
        if f.init == "random" and not f.model:
            return None
        raise FinetuneError(f"no encoder at {src!r}: run `mlm-pretrain pretrain` first, set finetune.model to a "
                            "model folder or a Hub model id (e.g. bert-base-uncased), or use finetune.init=random")
    if not (p / "config.json").is_file():
        raise FinetuneError(f"finetune.model={src!r} has no config.json: it is not a save_pretrained model "
                            "directory; point it at one (e.g. <output_dir>/pretrain/final)")
    check_finetuning_source(p)  # an ELECTRA generator folder: name the discriminator's instead
    return str(p)


def load_model_tokenizer(src: Optional[str], cfg: Config):
    """The tokenizer saved with the model (or ``tokenizer.pretrained`` when set); for a random model
    without directory, the run's tokenizer."""
    if src is None:
        return load_tokenizer(RunLayout.of(cfg).tokenizer)
    p = Path(src)
    if p.is_dir():
        if not any((p / name).is_file() for name in TOKENIZER_FILES):
            if cfg.tokenizer.pretrained:
                return load_tokenizer(RunLayout.of(cfg).tokenizer)
            raise FinetuneError(f"model directory {p} has no tokenizer ({' / '.join(TOKENIZER_FILES)}); save one "
                                f"there with tokenizer.save_pretrained({str(p)!r}), or set tokenizer.pretrained=DIR")
    return load_tokenizer(p)
