"""The classifier fine-tuning trains: the encoder with a classification (or regression) head, from a
pretrained folder or freshly initialised with the same architecture, and the learning rate of its
input embeddings.

    model = build_classifier(model_source(cfg), cfg, task.spec, tokenizer, seed=1)
    rate = resolve_embedding_learning_rate(model, cfg.finetune)    # finetune.embedding_learning_rate
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from .config import Config
from .errors import FinetuneError
from .finetune_data import LabelSpec
from .metrics import REGRESSION
from .model import build_config, token_ids
from .windows import WINDOW_SETTINGS, overlap_of

logger = logging.getLogger(__name__)


def run_seeds(cfg: Config) -> tuple:
    """The seeds fine-tuning runs, in order: ``finetune.seeds``, or the run's ``seed`` alone."""
    return tuple(cfg.finetune.seeds) or (cfg.seed,)


def _is_classifier(config) -> bool:
    return any("ForSequenceClassification" in a for a in (getattr(config, "architectures", None) or []))


def build_classifier(src: Optional[str], cfg: Config, spec: LabelSpec, tokenizer, *, seed: int):
    """``AutoModelForSequenceClassification`` with this task's labels, from ``src``'s weights
    (``init=pretrained``) or freshly initialised with the same architecture (``init=random``).

    A checkpoint that already has a classification head for another number of labels gets a new head
    (``ignore_mismatched_sizes``), with a warning.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    f = cfg.finetune
    if src is None:
        config = build_config(cfg.model, len(tokenizer), **token_ids(tokenizer))  # model.architecture's encoder
    else:
        config = AutoConfig.from_pretrained(src)
    old_labels = list(config.id2label.values()) if _is_classifier(config) else None
    if spec.problem_type == REGRESSION:
        config.num_labels = 1
    else:
        config.id2label = spec.id2label
        config.label2id = {n: i for i, n in spec.id2label.items()}
    config.problem_type = spec.problem_type
    if f.classifier_dropout is not None:
        config.classifier_dropout = f.classifier_dropout
    if getattr(config, "vocab_size", len(tokenizer)) < len(tokenizer):
        raise FinetuneError(f"the tokenizer has {len(tokenizer)} entries but the model's vocab_size is "
                            f"{config.vocab_size}; use the tokenizer saved with the model")
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos is not None and f.max_length > max_pos:
        raise FinetuneError(f"finetune.max_length={f.max_length} exceeds the model's max_position_embeddings="
                            f"{max_pos}; set finetune.max_length to {max_pos} or less")
    torch.manual_seed(seed)  # the new head (and, for init=random, every weight) depends on the seed
    if f.init == "random":
        return AutoModelForSequenceClassification.from_config(config)
    if old_labels is not None and len(old_labels) != spec.num_labels:
        logger.warning("%s has a classification head for %d label(s) (%s) but this task has %d (%s): the head is "
                       "re-initialised", src, len(old_labels), ", ".join(map(str, old_labels)), spec.num_labels,
                       ", ".join(spec.names) or "regression")
    elif old_labels is not None and spec.problem_type != REGRESSION and list(old_labels) != list(spec.names):
        logger.warning("%s's head was trained for labels %s; they are renamed %s (same number, weights kept)",
                       src, old_labels, list(spec.names))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(src, config=config, ignore_mismatched_sizes=True)
    except OSError as e:
        raise FinetuneError(f"cannot load model weights from {src}: {e}") from e
    return model


#: A pretrained input embedding table this many times a fresh one's scale or more adapts that many times
#: more slowly than a fresh one under Adam: ``embedding_learning_rate=auto`` compensates from here on,
#: and when the setting is unset the run logs a note.
EMBEDDING_SCALE_NOTE = 2.0


def embedding_scale(model) -> Optional[float]:
    """The standard deviation of ``model``'s input embedding table over that of a freshly initialised one
    (the same config, built one layer deep from a fixed seed on a forked random state, so the seeded run
    is unchanged and every seed gets the same ratio); None when the model cannot be rebuilt from its config."""
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.config)
    config.num_hidden_layers = 1
    if getattr(config, "layer_types", None) is not None:  # ModernBERT: one attention type per layer
        config.layer_types = config.layer_types[:1]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)  # the same reference for every seed of a run
            fresh = AutoModelForSequenceClassification.from_config(config).get_input_embeddings().weight
    except Exception as e:  # noqa: BLE001 - a custom or unusual config: no auto rate, not a failed run
        logger.warning("cannot rebuild a fresh %s to compare embedding scales (%s: %s)", config.model_type,
                       type(e).__name__, e)
        return None
    return model.get_input_embeddings().weight.detach().float().std().item() / fresh.detach().float().std().item()


def resolve_embedding_learning_rate(model, f, *, log: bool = True) -> Optional[float]:
    """``finetune.embedding_learning_rate`` as a rate for the optimizer (None: ``learning_rate``).

    ``auto``: ``learning_rate`` times the table's growth (:func:`embedding_scale`) when it is
    :data:`EMBEDDING_SCALE_NOTE` or more (a pretrained tied table), else ``learning_rate`` (random init, an
    untied or fresh-scale table). Unset: ``learning_rate``, with a note suggesting ``auto`` for a grown
    table. ``log`` (the run's first seed) says the choice and why."""
    value = f.embedding_learning_rate
    if value not in (None, "auto"):
        return value
    if f.init != "pretrained" or (value is None and not log):  # unset: only the first seed's note needs the ratio
        return None
    ratio = embedding_scale(model)
    grown = ratio is not None and ratio >= EMBEDDING_SCALE_NOTE
    if log and value == "auto" and ratio is not None:
        logger.info("finetune.embedding_learning_rate=auto: the input embeddings are %.1fx a fresh table's scale, "
                    "so they train at %.2g (%s)", ratio, f.learning_rate * ratio if grown else f.learning_rate,
                    f"{ratio:.1f}x finetune.learning_rate" if grown else
                    f"finetune.learning_rate: below {EMBEDDING_SCALE_NOTE:g}x")
    elif log and grown:
        logger.info("the pretrained input embeddings are %.1fx a fresh table's scale, so they adapt %.1fx more "
                    "slowly than the other weights; on a task far from the pretraining corpus try "
                    "finetune.embedding_learning_rate=auto (here %.2g; docs/finetuning.md)", ratio, ratio,
                    f.learning_rate * ratio)
    return f.learning_rate * ratio if value == "auto" and grown else None


def task_json(cfg: Config, spec: LabelSpec) -> dict:
    f = cfg.finetune
    return {"task_name": f.task_name, "text_column": f.text_column, "text_pair_column": f.text_pair_column,
            "label_column": f.label_column, "max_length": f.max_length,
            **{k: getattr(f, k) for k in WINDOW_SETTINGS}, "window_overlap": overlap_of(f), "labels": spec.to_json()}
