"""Model cards (``README.md``) for the models this package writes, built with ``huggingface_hub``.

    from mlm_pretrain.hub import write_model_card
    write_model_card(final_dir, cfg, kind="pretrain", metrics={"eval/mlm_accuracy": 0.41}, extra={"hardware": "1x CPU"})

Written by the training loops beside ``save_pretrained`` and refreshed by ``mlm-pretrain push`` (so
the usage snippet names the repository it is pushed to). The card is assembled from facts on disk
(the model's ``config.json`` and weights, the run's ``config.yaml``, ``data/*/stats.json``,
``metrics.json``) plus the ``metrics`` and ``extra`` the caller passes; a fact that is not available
is left out, never guessed. The metadata carries ``model-index`` evaluation results, so the Hub shows
them and ``huggingface_hub.ModelCard.load`` parses them back.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import RTD_ARCHITECTURES, Config, from_dict, resolve_path
from .corpus import expand_files
from .identity import run_inputs
from .layout import RunLayout

logger = logging.getLogger(__name__)

#: Marks a card written by this module; the JSON after it holds the card's inputs so that
#: ``refresh_model_card`` can re-render it (e.g. for another repository id). Cards without it are
#: the user's own and are never overwritten.
CARD_MARKER = "mlm_pretrain model card inputs:"

PIPELINE_TAG = {"pretrain": "fill-mask", "finetune": "text-classification"}
OBJECTIVE_NAMES = {"nsp": "next sentence prediction (NSP)", "sop": "sentence order prediction (SOP)", "mlm": None}
#: model.architecture -> how the card introduces the encoder.
ARCHITECTURE_NAMES = {
    "bert": "A BERT encoder (post-LayerNorm, learned positions)",
    "modernbert": "A ModernBERT encoder (pre-norm, GeGLU feed-forward, rotary positions, no biases)",
    "electra": "An ELECTRA discriminator (BERT-style encoder)",
    "modernbert-electra": "An ELECTRA discriminator on the ModernBERT backbone (pre-norm, GeGLU feed-forward, rotary "
                          "positions, no biases)",
}
#: Keys of ``metrics`` that describe the training run rather than an evaluation result.
TRAINING_KEYS = {"step", "steps", "global_step", "epoch", "epochs", "time", "runtime", "learning_rate", "lr",
                 "tokens_seen", "samples_seen", "examples_seen", "num_processes", "world_size"}
SPLIT_PREFIXES = {"eval": "validation", "validation": "validation", "val": "validation", "dev": "validation",
                  "test": "test"}


# ----------------------------------------------------------------------------------------------
# Facts from disk
# ----------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_kind(model_dir: Path) -> str:
    """``finetune`` for a sequence classifier, ``pretrain`` for an encoder (from ``config.json``)."""
    config = _read_json(Path(model_dir) / "config.json") or {}
    archs = config.get("architectures") or []
    return "finetune" if any("SequenceClassification" in a for a in archs) else "pretrain"


def _run_config(model_dir: Path, cfg: Config) -> tuple[Config, Path]:
    """The config of the run that wrote ``model_dir`` and that run's directory.

    The config is ``mlm_pretrain_config.yaml`` in the folder or the nearest ``config.yaml`` up to three
    levels above; the run directory is the nearest ancestor holding ``config.yaml`` beside a stage
    folder (tokenizer/, data/, pretrain/, finetune/). Without them: ``cfg`` and its output_dir.
    """
    here = [model_dir, *list(model_dir.resolve().parents)[:3]]
    run_dir = next((d for d in here if (d / "config.yaml").is_file()
                    and any((d / s).is_dir() for s in ("tokenizer", "data", "pretrain", "finetune"))), None)
    for f in [model_dir / "mlm_pretrain_config.yaml", *[d / "config.yaml" for d in here]]:
        if f.is_file():
            try:
                run_cfg = from_dict(yaml.safe_load(f.read_text(encoding="utf-8")) or {})
                return run_cfg, run_dir or (run_cfg.run_dir if run_cfg.run_dir.is_dir() else f.parent)
            except Exception as e:  # a config from another version: describe with the current one
                logger.warning("cannot read %s (%s); the model card uses the current config", f, e)
                break
    return cfg, run_dir or cfg.run_dir


def _data_stats(run_dir: Path, run_cfg: Config) -> tuple[dict, bool]:
    """(``stats.json`` of the run's prepared data, whether it is verified to match the run's corpus).

    The folder named by ``identity.cache_key`` of the run's config (corpus files with their sizes and
    mtimes, tokenizer, data settings) is the data this run trained on, with the corpus unchanged
    since; when it cannot be recomputed (files moved, another working directory), the newest
    prepared folder is described, unverified. ({}, False) when there is none.
    """
    layout = RunLayout.of(run_cfg, root=run_dir)  # the folders prepare wrote to, found from where the run is now
    root = layout.data_root
    if not root.is_dir():
        return {}, False
    try:
        inputs = run_inputs(run_cfg, layout)
        exact = inputs.data_dir / "stats.json" if inputs is not None else None
        if exact is not None and exact.is_file():
            return _read_json(exact) or {}, True
    except Exception as e:  # corpus files gone or moved: fall back to the newest prepared data
        logger.debug("cannot recompute the prepared-data key (%s)", e)
    found = sorted(root.glob("*/stats.json"), key=lambda p: p.stat().st_mtime)
    return ((_read_json(found[-1]) or {}) if found else {}), False


def _corpus_sha256(run_cfg: Config, limit_bytes: int = 4 << 30) -> Optional[str]:
    """SHA-256 over the corpus files' bytes (in reading order; then the task's training file with
    ``corpus.include_task_text``); None for Hub datasets or > 4 GiB."""
    ft = run_cfg.finetune
    if run_cfg.corpus.hub_dataset or (run_cfg.corpus.include_task_text and ft.hub_dataset):
        return None
    import hashlib

    try:
        paths = expand_files(run_cfg.corpus).paths
        if run_cfg.corpus.include_task_text:
            paths += (resolve_path(ft.train_file),)
        if sum(p.stat().st_size for p in paths) > limit_bytes:
            return None
        h = hashlib.sha256()
        for p in paths:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()
    except Exception:
        return None


def _corpus_facts(stats: dict, verified: bool, run_cfg: Config) -> dict:
    """Card rows from prepare's ``stats.json`` (corpus_documents, train/validation counts)."""
    train, val = stats.get("train") or {}, stats.get("validation") or {}
    both = lambda k: (train.get(k, 0) + val.get(k, 0)) if (k in train or k in val) else None  # noqa: E731
    examples = train.get("examples")
    if examples is not None and train.get("tokens"):
        passes = f", {run_cfg.data.dupe_factor} passes over the corpus" if verified and run_cfg.data.dupe_factor > 1 else ""
        examples = f"{examples:,} ({train['tokens']:,} tokens{passes})"
    return {
        "Documents": stats.get("corpus_documents") or both("documents"),
        "Held-out documents (validation)": val.get("documents"),
        "Sentences": both("sentences"),
        "Characters": both("characters"),
        "Training examples": examples,
        "Validation examples": val.get("examples"),
        "Prepared data key": stats.get("key"),
        "Corpus SHA-256": _corpus_sha256(run_cfg) if verified else None,
    }


def _count_parameters(model_dir: Path) -> Optional[int]:
    """Parameters in the safetensors weights (read from the headers, no tensor is loaded)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    try:
        from safetensors import safe_open

        total = 0
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
        return total
    except Exception:  # unreadable weights: leave the count out rather than guess
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) or "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _table(rows: list[tuple[str, Any]], header=("", "")) -> str:
    rows = [(k, v) for k, v in rows if v is not None and v != "" and v != []]
    if not rows:
        return ""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Metrics -> model-index
# ----------------------------------------------------------------------------------------------
def split_metrics(metrics: dict) -> tuple[list[tuple[str, str, float]], dict]:
    """(evaluation results as (metric, split, value), training facts) from a flat metrics dict.

    ``eval/mlm_accuracy`` or ``eval_mlm_accuracy`` -> ("mlm_accuracy", "validation", value) and
    ``test/accuracy`` -> split ``test``. When some keys carry such a split prefix, only those are
    results and every other entry (seed, best_step, ``train/...``) is a training fact; without any
    prefix, numbers are results except ``train...`` keys and run facts (steps, epoch, runtime...).
    Non-finite numbers are left out.
    """
    def split_of(key: str):
        m = re.match(r"([A-Za-z]+)[/_](.+)", key)
        return (SPLIT_PREFIXES[m.group(1).lower()], m.group(2)) if m and m.group(1).lower() in SPLIT_PREFIXES else None

    numeric = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    prefixed = any(split_of(k) for k in numeric)
    results, facts = [], {}
    for key, value in metrics.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        where = split_of(key) if key in numeric else None
        if where:
            results.append((where[1], where[0], numeric[key]))
        elif key in numeric and not prefixed and not key.lower().startswith("train") \
                and key.lower() not in TRAINING_KEYS:
            results.append((key, "validation", numeric[key]))
        else:
            facts[key] = value
    return results, facts


def _eval_results(results, *, kind: str, run_cfg: Config, corpus_name: str):
    from huggingface_hub import EvalResult

    if kind == "pretrain":
        task_type, task_name = "fill-mask", "Masked language modelling"
        dataset_type = run_cfg.corpus.hub_dataset or "text"
        dataset_name = f"held-out documents of {corpus_name}"
        dataset_config = run_cfg.corpus.hub_config
    else:
        ft = run_cfg.finetune
        task_type, task_name = "text-classification", "Text classification"
        dataset_type = ft.hub_dataset or ft.task_name
        dataset_name = ft.hub_dataset or ft.task_name
        dataset_config = ft.hub_config
    return [EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset_type,
                       dataset_name=dataset_name, dataset_config=dataset_config, dataset_split=split,
                       metric_type=metric, metric_name=metric, metric_value=value)
            for metric, split, value in results]


# ----------------------------------------------------------------------------------------------
# The card
# ----------------------------------------------------------------------------------------------
def _looks_like_hub_id(name: Optional[str]) -> bool:
    return bool(name) and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not resolve_path(name).exists()


def _objective_section(run_cfg: Config) -> list[str]:
    m, objective = run_cfg.masking, run_cfg.data.objective
    keep = max(0.0, 1.0 - m.mask_replace_prob - m.random_replace_prob)
    out = ["## Training objective", "",
           f"- **Masked language modelling**: {m.probability:.0%} of the tokens are selected"
           + (" as whole words" if m.whole_word else "")
           + f"; of those {m.mask_replace_prob:.0%} become `[MASK]`, {m.random_replace_prob:.0%} a random token "
             f"and {keep:.0%} stay unchanged. Masks are drawn anew for every batch."]
    if run_cfg.model.architecture in RTD_ARCHITECTURES:
        out[-1] = out[-1].replace("Masked language modelling**", "Masked language modelling** (the generator)")
        out.append(f"- **Replaced-token detection** (ELECTRA): a small generator (saved in `generator/`) fills the "
                   f"masked positions with tokens sampled from its predictions; this discriminator learns which tokens "
                   f"of every sequence were replaced. Loss = generator MLM loss + "
                   f"{run_cfg.pretrain.electra_disc_weight:g} x discriminator loss.")
    if objective == "nsp":
        out.append("- **Next sentence prediction**: segment B follows segment A in the document half of the time "
                   "and is taken from another document otherwise.")
    elif objective == "sop":
        out.append("- **Sentence order prediction**: two consecutive segments, swapped half of the time.")
    return out + [f"- Sequences of up to {run_cfg.data.max_seq_length} tokens.", ""]


def _usage(kind: str, model_ref: str, model_dir: Path, ft) -> str:
    if kind == "pretrain" and (model_dir / "generator" / "config.json").is_file():  # ELECTRA
        # the discriminator: ElectraForPreTraining, or ModernBertForTokenClassification, whose one-logit
        # classifier a sequence classifier replaces (ignore_mismatched_sizes)
        one_logit = "TokenClassification" in "".join((_read_json(model_dir / "config.json") or {}).get("architectures") or [])
        auto = "AutoModelForTokenClassification" if one_logit else "AutoModelForPreTraining"
        new_head = ", ignore_mismatched_sizes=True" if one_logit else ""
        return (f'from transformers import {auto}, AutoModelForSequenceClassification, pipeline\n\n'
                f'# the discriminator: which tokens look replaced (logit > 0), or a classifier to fine-tune\n'
                f'detector = {auto}.from_pretrained("{model_ref}")\n'
                f'model = AutoModelForSequenceClassification.from_pretrained("{model_ref}", num_labels=2{new_head})\n\n'
                f'# the generator (subfolder generator/) fills masks\n'
                f'from transformers import AutoModelForMaskedLM, AutoTokenizer\n'
                f'fill = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained("{model_ref}", '
                f'subfolder="generator"), tokenizer=AutoTokenizer.from_pretrained("{model_ref}"))')
    if kind == "pretrain":
        tok_cfg = _read_json(model_dir / "tokenizer_config.json") or {}
        mask = tok_cfg["mask_token"] if isinstance(tok_cfg.get("mask_token"), str) else "[MASK]"
        return (f'from transformers import pipeline\n\nfill = pipeline("fill-mask", model="{model_ref}")\n'
                f'print(fill("The meeting was moved to {mask}."))\n\n'
                f'# or as the starting point of a classifier:\n'
                f'from transformers import AutoModelForSequenceClassification\n'
                f'model = AutoModelForSequenceClassification.from_pretrained("{model_ref}", num_labels=2)')
    example = ('{"text": "The first sentence.", "text_pair": "The second sentence."}' if ft.text_pair_column
               else '"This is a sentence to classify."')
    return (f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{model_ref}")\n'
            f"print(classify({example}))")


def _limitations(kind: str, corpus_facts: dict, corpus_name: str, mconf: dict, run_cfg: Config) -> list[str]:
    docs, chars = corpus_facts["Documents"], corpus_facts["Characters"]
    scale = (f"{docs:,} documents" + (f" ({_human(chars)} characters)" if chars else "")) if docs else corpus_name
    if kind == "pretrain":
        out = [f"Pretrained only on {scale}: it knows the vocabulary and style of that corpus and little else; "
               "expect weak results on text far from it."]
    else:
        out = [f"Trained for the `{run_cfg.finetune.task_name}` labels only; inputs unlike its training data get "
               "confident but unreliable predictions."]
    if mconf.get("max_position_embeddings"):
        out.append(f"Inputs longer than {mconf['max_position_embeddings']} tokens must be truncated.")
    if run_cfg.tokenizer.lowercase:
        out.append("Uncased: the tokenizer lowercases text, so case distinctions are lost.")
    out.append("Not evaluated for bias, toxicity or factual accuracy; check it on your own data before relying on it.")
    return out


@dataclass(frozen=True)
class _Card:
    """What a card says, gathered once from the model folder, the run that made it and the metrics."""

    kind: str
    cfg: Config          # the command's config (hub settings)
    run_cfg: Config      # the config of the run that wrote the model
    run_dir: Path
    mconf: dict          # the model's config.json
    stats: Optional[dict]
    corpus_facts: dict
    n_params: Optional[int]
    results: list
    facts: dict
    model_ref: str       # what `from_pretrained` takes: the repo id, else the local folder
    model_name: str
    corpus_name: str
    corpus_files: list
    task_text: Optional[str]
    base_model: Optional[str]
    labels: list


def _gather(model_dir: Path, cfg: Config, kind: str, metrics: dict, base_model: Optional[str]) -> _Card:
    run_cfg, run_dir = _run_config(model_dir, cfg)
    mconf = _read_json(model_dir / "config.json") or {}
    stats, verified = _data_stats(run_dir, run_cfg)
    results, facts = split_metrics(metrics or {})
    repo_id = cfg.hub.repo_id
    # the loops write the card into ".final.tmp" and rename it to "final" once complete: name the latter
    tmp = re.fullmatch(r"\.(.+)\.tmp", model_dir.name)
    local = model_dir.with_name(tmp.group(1)) if tmp else model_dir
    model_name = (repo_id or local.name).split("/")[-1]
    if model_name in ("final", "."):
        model_name = f"{local.parent.name}-classifier" if kind == "finetune" else f"{run_dir.name}-encoder"
    corpus, ft = run_cfg.corpus, run_cfg.finetune
    corpus_files = [Path(f).name for f in corpus.files] if not corpus.hub_dataset else []
    corpus_name = corpus.hub_dataset or ", ".join(corpus_files) or "the training corpus"
    task_text = None
    if corpus.include_task_text:  # the task's training texts joined the corpus (task-adaptive pretraining)
        source = ft.hub_dataset or Path(ft.train_file).name
        task_text = f"the `{ft.task_name}` task's training texts ({source}, no labels)"
        corpus_name += f" and {task_text}"
    if base_model is None and kind == "finetune" and _looks_like_hub_id(ft.model):
        base_model = ft.model
    labels = [mconf["id2label"][k] for k in sorted(mconf.get("id2label", {}), key=lambda k: int(k))] \
        if kind == "finetune" and mconf.get("id2label") else []
    return _Card(kind=kind, cfg=cfg, run_cfg=run_cfg, run_dir=run_dir, mconf=mconf, stats=stats,
                 corpus_facts=_corpus_facts(stats, verified, run_cfg), n_params=_count_parameters(model_dir),
                 results=results, facts=facts, model_ref=repo_id or str(local), model_name=model_name,
                 corpus_name=corpus_name, corpus_files=corpus_files, task_text=task_text, base_model=base_model,
                 labels=labels)


def _card_data(c: _Card, extra: dict):
    """The card's YAML metadata (``extra`` may give ``datasets`` and ``tags``; they are taken out of it)."""
    from huggingface_hub import ModelCardData

    run_cfg, kind = c.run_cfg, c.kind
    datasets = extra.pop("datasets", None)
    if datasets is None:
        hub_sets = [run_cfg.corpus.hub_dataset] if kind == "pretrain" else [run_cfg.finetune.hub_dataset]
        datasets = [d for d in hub_sets if d] or None
    tags = ["mlm_pretrain", c.mconf.get("model_type") or "bert", PIPELINE_TAG[kind]]
    if kind == "pretrain":
        tags += ["masked-lm"] + ([run_cfg.data.objective] if run_cfg.data.objective != "mlm" else [])
        if run_cfg.model.architecture in RTD_ARCHITECTURES:
            tags.append("replaced-token-detection")
    tags += list(extra.pop("tags", []) or [])
    return ModelCardData(
        library_name="transformers", pipeline_tag=PIPELINE_TAG[kind], license=c.cfg.hub.license,
        language=list(c.cfg.hub.language) or None, tags=tags, datasets=datasets, base_model=c.base_model,
        model_name=c.model_name,
        eval_results=_eval_results(c.results, kind=kind, run_cfg=run_cfg, corpus_name=c.corpus_name) or None)


def _size(c: _Card) -> Optional[str]:
    layers, hidden = c.mconf.get("num_hidden_layers"), c.mconf.get("hidden_size")
    size = f"{layers} layers, hidden size {hidden}" if layers and hidden else None
    return f"{size}, {_human(c.n_params)} parameters" if size and c.n_params else size


def _intro(c: _Card) -> list[str]:
    run_cfg, ft, size = c.run_cfg, c.run_cfg.finetune, _size(c)
    if c.kind == "pretrain":
        objective_name = OBJECTIVE_NAMES.get(run_cfg.data.objective)
        what = "masked language modelling (MLM)" + (f" and {objective_name}" if objective_name else "")
        if run_cfg.model.architecture in RTD_ARCHITECTURES:
            what = "replaced-token detection (ELECTRA: a small MLM generator proposes replacements)"
        intro = ARCHITECTURE_NAMES.get(run_cfg.model.architecture, "A BERT-style encoder")
        return [f"{intro}{f' ({size})' if size else ''} pretrained from scratch with {what} "
                f"on {c.corpus_name} with mlm_pretrain. It is meant to be fine-tuned "
                "(e.g. for text classification) or used for masked-token prediction.", ""]
    if ft.init == "random":
        origin = "trained from a random initialisation (no pretraining)"
    elif c.base_model:
        origin = f"fine-tuned from `{c.base_model}`"
    else:  # a local encoder directory: its path means nothing to a reader of the card
        origin = "fine-tuned from an encoder pretrained from scratch with mlm_pretrain"
    return [f"A text classifier{f' ({size})' if size else ''} {origin} for the `{ft.task_name}` task"
            + (f", predicting one of: {', '.join(map(str, c.labels))}." if c.labels else "."), ""]


def _data_section(c: _Card) -> list[str]:
    corpus, ft, mconf = c.run_cfg.corpus, c.run_cfg.finetune, c.mconf
    data_rows = [
        ("Corpus", corpus.hub_dataset and f"{corpus.hub_dataset}" + (f" ({corpus.hub_config})" if corpus.hub_config else "")),
        ("Corpus files", c.corpus_files or None),
        ("Also pretrained on", c.task_text),
        *c.corpus_facts.items(),
        ("Tokenizer", f"WordPiece, {mconf['vocab_size']:,} entries"
                      + (", lowercased" if c.run_cfg.tokenizer.lowercase else ", cased") if mconf.get("vocab_size") else None),
    ]
    out = ["## Training data", ""]
    if c.kind == "pretrain":
        return out + [_table(data_rows, ("", "")), ""] + _objective_section(c.run_cfg)
    ft_rows = [("Task", ft.task_name), ("Dataset", ft.hub_dataset),
               ("Training file", ft.train_file and Path(ft.train_file).name if not ft.hub_dataset else None),
               ("Validation file", ft.validation_file and Path(ft.validation_file).name if not ft.hub_dataset else None),
               ("Text column(s)", ", ".join(col for col in (ft.text_column, ft.text_pair_column) if col)),
               ("Labels", c.labels or None)]
    out += [_table(ft_rows, ("", "")), ""]
    if c.stats and ft.init != "random" and not c.base_model:  # this run pretrained the encoder: say on what
        out += ["The encoder was pretrained on:", "", _table(data_rows, ("", "")), ""]
    return out


def _architecture_section(c: _Card) -> list[str]:
    mconf = c.mconf
    arch_rows = [("Architecture", ", ".join(mconf.get("architectures") or []) or None),
                 ("Layers", mconf.get("num_hidden_layers")), ("Hidden size", mconf.get("hidden_size")),
                 ("Attention heads", mconf.get("num_attention_heads")),
                 ("Feed-forward size", mconf.get("intermediate_size")), ("Vocabulary", mconf.get("vocab_size")),
                 ("Max positions", mconf.get("max_position_embeddings")), ("Parameters", c.n_params)]
    arch = _table(arch_rows, ("", ""))
    return ["## Architecture", "", arch, ""] if arch else []


def _training_section(c: _Card, extra: dict) -> list[str]:
    ft = c.run_cfg.finetune
    tc = c.run_cfg.pretrain if c.kind == "pretrain" else ft
    setup = {"Batch size per device": tc.batch_size, "Gradient accumulation": tc.gradient_accumulation_steps,
             "Peak learning rate": tc.learning_rate, "Schedule": tc.lr_scheduler, "Weight decay": tc.weight_decay,
             "Mixed precision": tc.mixed_precision, "Seed": c.run_cfg.seed}
    if c.kind == "finetune":
        setup["Epochs (configured)"] = ft.num_epochs
    elif tc.batch_ramp > 0:
        setup["Batch ramp"] = (f"1 to {tc.gradient_accumulation_steps} micro-batches per step over the first "
                               f"{tc.batch_ramp:.0%} of the run")
    # measured facts (metrics, extra) come last and win over a configured value of the same name
    setup.update({(k if "/" in k else k.replace("_", " ").capitalize()): v for k, v in {**c.facts, **extra}.items()
                  if not (c.kind == "finetune" and k == "task")})
    return ["## Training procedure", "", _table(list(setup.items()), ("", "")), ""]


def build_model_card(model_dir: Path, cfg: Config, *, kind: str, metrics: dict, extra: Optional[dict] = None):
    """The :class:`huggingface_hub.ModelCard` for ``model_dir`` (see the module docstring)."""
    from huggingface_hub import ModelCard

    if kind not in PIPELINE_TAG:
        raise ValueError(f"kind must be 'pretrain' or 'finetune', got {kind!r}")
    model_dir = Path(model_dir)
    extra = dict(extra or {})
    c = _gather(model_dir, cfg, kind, metrics, extra.pop("base_model", None))
    card_data = _card_data(c, extra)
    out = [f"# {c.model_name}", "", *_intro(c), *_data_section(c), *_architecture_section(c),
           *_training_section(c, extra)]
    if c.results:
        res_rows = [f"| {metric} | {split} | {_fmt(value)} |" for metric, split, value in c.results]
        out += ["## Evaluation results", "", "| Metric | Split | Value |", "|---|---|---|", *res_rows, ""]
    out += ["## How to use", "", "```python", _usage(kind, c.model_ref, model_dir, c.run_cfg.finetune), "```", ""]
    out += ["## Limitations", "",
            *[f"- {x}" for x in _limitations(kind, c.corpus_facts, c.corpus_name, c.mconf, c.run_cfg)], ""]
    body = "\n".join(out)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_model_card(model_dir: Path, cfg: Config, *, kind: str, metrics: dict, extra: Optional[dict] = None) -> Path:
    """Write ``model_dir/README.md``: metadata + a readable body (see the module docstring).

    ``kind``: ``pretrain`` (fill-mask encoder) or ``finetune`` (text classifier). ``metrics``: the
    run's final metrics (``eval/...``, ``test/...`` become evaluation results; ``train/...``, steps,
    runtime become training facts). ``extra``: further training facts for the card (hardware,
    training time, ...); the keys ``base_model``, ``datasets`` and ``tags`` go to the metadata.
    """
    model_dir = Path(model_dir)
    card = build_model_card(model_dir, cfg, kind=kind, metrics=metrics, extra=extra)
    # ">" only occurs inside JSON strings: escaping it keeps the HTML comment unbroken
    inputs = json.dumps({"kind": kind, "metrics": metrics or {}, "extra": extra or {}}, default=str).replace(">", "\\u003e")
    path = model_dir / "README.md"
    _atomic_write(path, f"{card.content.rstrip()}\n\n<!-- {CARD_MARKER} {inputs} -->\n")
    return path


def _card_inputs(text: str) -> Optional[dict]:
    m = re.search(r"<!-- " + re.escape(CARD_MARKER) + r" (.*) -->", text)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


def refresh_model_card(model_dir: Path, cfg: Config) -> Optional[Path]:
    """Before a push: (re)write the card of a model directory for ``cfg`` (repository id, license).

    A card written by :func:`write_model_card` is re-rendered from its recorded inputs; a missing card
    is written from ``metrics.json``; a card without the mlm_pretrain marker (the user's own) is kept.
    """
    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    if readme.is_file():
        inputs = _card_inputs(readme.read_text(encoding="utf-8"))
        if inputs is None:
            logger.info("keeping the existing %s (not written by mlm_pretrain)", readme)
            return None
        return write_model_card(model_dir, cfg, kind=inputs.get("kind") or model_kind(model_dir),
                                metrics=inputs.get("metrics") or {}, extra=inputs.get("extra") or None)
    metrics = _read_json(model_dir / "metrics.json") or {}
    return write_model_card(model_dir, cfg, kind=model_kind(model_dir), metrics=metrics)
