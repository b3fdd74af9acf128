"""Evaluating an encoder on the fixed-mask validation set: during pretraining (every ``eval_steps``) and
afterwards for an exported one, on any run's masks.

    metrics = evaluate(accelerator, module, loader, cfg.data.objective, seed=cfg.seed)   # eval/mlm_loss, ...
    metrics = evaluate_checkpoint(cfg, "runs/other/pretrain/final")       # another run, on cfg's masks

MLM figures per masked token, NSP/SOP per sequence, ELECTRA's replaced-token detection per real token;
sums are gathered over processes, so the figures do not depend on the number of processes.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .batches import check_token_ids, mix_seed
from .config import RTD_ARCHITECTURES, Config
from .errors import PretrainError
from .hardware import make_accelerator
from .layout import RunLayout
from .masking import MLMCollator
from .model import GENERATOR_DIR, architecture_of, check_model_config, load_generator, load_pretraining_model
from .objectives import PretrainingModule
from .prepare import load_prepared
from .tokenizer import load_tokenizer

#: The loss terms' sums as the model returns them (training windows and evaluations: :func:`means`).
TERM_KEYS = tuple(f"{term}_{what}" for term in ("mlm", "nsp", "rtd") for what in ("loss", "correct", "count"))
#: Per-sequence sums :func:`evaluate` gathers (those a model does not produce count as zero).
EVAL_KEYS = (*TERM_KEYS, "rtd_true_positive", "rtd_predicted", "rtd_replaced")


def means(sums: dict[str, float], prefix: str, objective: str) -> dict[str, float]:
    """``<prefix>/<term>_loss`` and ``_accuracy`` from summed statistics: MLM per masked token, NSP/SOP
    (named after ``objective``) per sequence, RTD per real token; a term with nothing counted is left out
    (but MLM)."""
    out = {}
    for term, name in (("mlm", "mlm"), ("nsp", objective), ("rtd", "rtd")):
        count = sums[f"{term}_count"]
        if count or term == "mlm":
            out[f"{prefix}/{name}_loss"] = sums[f"{term}_loss"] / max(count, 1.0)
            out[f"{prefix}/{name}_accuracy"] = sums[f"{term}_correct"] / max(count, 1.0)
    return out


def evaluate(accelerator, module, loader, objective: str, seed: int = 0) -> dict[str, float]:
    """MLM loss / accuracy / perplexity and NSP/SOP loss / accuracy on the fixed-mask validation set,
    gathered over processes (``gather_for_metrics`` drops the duplicates that even out shards).

    ELECTRA: the MLM figures are the generator's, and the discriminator's replaced-token loss, accuracy,
    precision and recall (``eval/rtd_*``) are added; each sequence's replacements are sampled with a
    generator seeded by ``seed`` and the sequence's tokens, so they are the same at every evaluation
    (given the same generator weights) whatever the batch size or number of processes, and never touch
    the training RNG."""
    model = accelerator.unwrap_model(module)
    was_training = model.training
    model.eval()
    totals = torch.zeros(len(EVAL_KEYS), dtype=torch.float64, device=accelerator.device)
    with torch.no_grad(), accelerator.autocast():
        for batch in loader:
            extra = {}
            if getattr(model, "generator", None) is not None:
                extra["sample_seeds"] = [mix_seed(seed, *ids[mask.bool()].tolist())
                                         for ids, mask in zip(batch["input_ids"].cpu(), batch["attention_mask"].cpu())]
            per = model(**batch, per_sequence=True, **extra)
            zero = torch.zeros(batch["input_ids"].size(0), device=accelerator.device)
            cols = [per.get(key, zero).double() for key in EVAL_KEYS]
            stats = accelerator.gather_for_metrics(torch.stack(cols, 1))
            totals += stats.sum(0)
    model.train(was_training)
    t = dict(zip(EVAL_KEYS, totals.tolist()))
    out = means(t, "eval", objective)
    out["eval/perplexity"] = math.exp(min(out["eval/mlm_loss"], 50.0))
    if t["rtd_count"]:
        out["eval/rtd_precision"] = t["rtd_true_positive"] / max(t["rtd_predicted"], 1)
        out["eval/rtd_recall"] = t["rtd_true_positive"] / max(t["rtd_replaced"], 1)
    return out


def evaluate_checkpoint(cfg: Config, model_dir: str | Path, batch_size: int = 32) -> dict[str, float]:
    """:func:`evaluate` for an exported encoder (``pretrain/final`` or a pushed folder) on ``cfg``'s
    fixed-mask validation set. Runs trained with different data or masking settings are compared on the
    same masks by evaluating them all with one ``cfg`` (``scripts/sweep_pretrain.py``)."""
    model_dir = Path(model_dir)
    tokenizer = load_tokenizer(model_dir)
    data_tokenizer = RunLayout.of(cfg).tokenizer
    if load_tokenizer(data_tokenizer).get_vocab() != tokenizer.get_vocab():
        raise PretrainError(f"{model_dir} was trained with another vocabulary than the data's tokenizer "
                            f"({data_tokenizer}); set tokenizer.pretrained={model_dir} to evaluate it")
    model = load_pretraining_model(model_dir)
    generator = None  # ELECTRA: the generator makes the replacements the discriminator judges
    if architecture_of(model.config.to_dict()) in RTD_ARCHITECTURES:
        if not (model_dir / GENERATOR_DIR / "config.json").is_file():
            raise PretrainError(f"{model_dir} holds an ELECTRA discriminator without its {GENERATOR_DIR}/ folder; "
                                "evaluation needs the generator saved beside it (a run's pretrain/final has both)")
        generator = load_generator(model_dir, model)
    _, val_rows = load_prepared(cfg, None, tokenizer)
    check_model_config(model.config, len(tokenizer), cfg.data.max_seq_length)
    check_token_ids(val_rows, model.config.vocab_size)
    if not len(val_rows):
        raise PretrainError("the prepared data has no validation rows; set data.validation_fraction > 0")
    accelerator = make_accelerator(mixed_precision=cfg.pretrain.mixed_precision, cpu=cfg.pretrain.cpu)
    pad = MLMCollator(tokenizer, cfg.masking, seed=cfg.seed).pad
    loader = accelerator.prepare(torch.utils.data.DataLoader(val_rows, batch_size=batch_size, collate_fn=pad))
    return evaluate(accelerator, accelerator.prepare(PretrainingModule(model, generator)), loader, cfg.data.objective,
                    seed=cfg.seed)
