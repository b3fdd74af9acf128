"""Stage 5: fine-tune the encoder for sequence classification (or regression), one run per seed.

    mlm-pretrain finetune --config tiny                                  # data/sentiment, the run's pretrain/final
    mlm-pretrain finetune --config sst2 finetune.model=runs/mini/pretrain/final finetune.seeds=[1,2,3]
    mlm-pretrain finetune finetune.init=random                           # same architecture, no pretraining
    accelerate launch --num_processes 2 -m mlm_pretrain finetune ...    # data parallel (DDP, FSDP, DeepSpeed)

Each seed trains with ``transformers.Trainer`` (what users of the ecosystem know; measured as fast as
a hand-written loop here, see ``scripts/bench_finetune.py``): evaluation every ``eval_steps`` (default
once per epoch), the best checkpoint by ``metric_for_best`` loaded at the end, early stopping, length
grouping, dynamic padding to a multiple of 8, resume of an interrupted seed from its checkpoint. This
module adds what the Trainer does not know: several seeds and their summary, the median seed's
``final/``, reuse of finished seeds. One seed on the Trainer: :mod:`mlm_pretrain.trainer`; the
classifier it trains: :mod:`mlm_pretrain.classifier`; inputs and labels: :mod:`mlm_pretrain.finetune_data`;
prediction and ``mlm-pretrain evaluate``: :mod:`mlm_pretrain.predict`.

Output, under ``<output_dir>/finetune/<task>/``::

    seed-<s>/           one fine-tune per seed: best/ (model + tokenizer), checkpoints/, metrics.jsonl,
                        results.json, validation_predictions.jsonl, loss.png / eval.png
    summary.json        every seed's validation (and test) metrics, their median and standard deviation
    final/              the classifier of the *median* seed (see below), plus metrics.json,
                        validation_predictions.jsonl, confusion_matrix.png, task.json, README.md

``final/`` holds the best checkpoint (by ``metric_for_best``) of the seed whose validation score is the
median of the seeds (for an even count, the better of the two middle ones). Publishing the best seed
would report the luckiest draw; the median seed is the model whose score the summary's median
describes. ``final/`` loads with ``AutoModelForSequenceClassification`` and
``pipeline("text-classification")`` returns the label names.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .artifacts import write_final
from .classifier import run_seeds
from .config import Config, save_resolved
from .finetune_data import Task, prepare_task
from .hub import BackgroundPusher, preflight
from .identity import finetune_fingerprint
from .layout import RunLayout
from .metrics import REGRESSION, confusion_matrix, greater_is_better, plot_confusion_matrix
from .model import load_model_tokenizer, model_source
from .predict import PREDICTIONS_FILE, predict_logits, prediction_rows, with_inputs, write_rows
from .textio import atomic_write_json, check_writable, read_jsonl
from .trainer import keep_trained, resolve_metric, train_one_seed

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Seeds, summary and the stage
# ----------------------------------------------------------------------------------------------
def summarise(results: list[dict], metric: str) -> dict:
    """Each seed's validation/test metrics with their median and standard deviation (sample, ddof=1;
    0 for one seed), and the seed whose best model becomes ``final/`` (the median seed)."""
    out: dict[str, Any] = {"metric_for_best": metric, "seeds": [r["seed"] for r in results], "runs": results}
    for split in ("validation", "test"):
        if not all(split in r for r in results):
            continue
        keys = [k for k in results[0][split] if all(k in r[split] for r in results)]
        vals = {k: np.array([r[split][k] for r in results], dtype=float) for k in keys}
        out[split] = {k: {"median": float(np.median(v)), "mean": float(np.mean(v)),
                          "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                          "min": float(np.min(v)), "max": float(np.max(v))} for k, v in vals.items()}
    out["selected_seed"] = median_seed(results, metric)
    return out


def median_seed(results: list[dict], metric: str) -> int:
    """The seed at the median of ``validation[metric]`` (the better middle one for an even count)."""
    sign = 1.0 if greater_is_better(metric) else -1.0

    def quality(r):
        v = r["validation"][metric]
        return -math.inf if v is None or math.isnan(v) else sign * v

    ranked = sorted(results, key=quality)  # worst first; stable, so ties keep seed order
    return ranked[len(ranked) // 2]["seed"]


def format_summary(summary: dict, task: str) -> str:
    """The printed table: one row per seed, then median and std."""
    runs = summary["runs"]
    splits = [s for s in ("validation", "test") if s in summary]
    cols = [(s, k) for s in splits for k in summary[s] if k != "loss"]
    short = {"validation": "val", "test": "test", "matthews_correlation": "mcc"}
    head = ["seed", "best step", *[f"{short[s]} {short.get(k, k)}" for s, k in cols], "train ex/s"]
    rows = [[str(r["seed"]) + ("*" if r["seed"] == summary["selected_seed"] else ""), str(r["best_step"]),
             *[f"{r[s][k]:.4f}" for s, k in cols], f"{r['train_examples_per_second']:.1f}"] for r in runs]
    for stat in ("median", "std"):
        rows.append([stat, "", *[f"{summary[s][k][stat]:.4f}" for s, k in cols], ""])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [f"finetune {task}: {len(runs)} seed(s), best checkpoint by validation {summary['metric_for_best']}; "
           f"* = median seed, in final/", line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(r) for r in rows])


def _same_settings(seed_dir: Path, fingerprint: str) -> bool:
    stamp = seed_dir / "fingerprint.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint


def _finished(seed_dir: Path, fingerprint: str, resume: str) -> Optional[dict]:
    """The results of a seed already fine-tuned with the same settings (``resume=auto``), else None."""
    results = seed_dir / "results.json"
    if resume == "auto" and _same_settings(seed_dir, fingerprint) and results.is_file() and (seed_dir / "best").is_dir():
        return json.loads(results.read_text())
    return None


def _prepare_seed_dir(seed_dir: Path, fingerprint: str, resume: str) -> None:
    """Keep a seed folder made with the same settings (finished: reused; unfinished: resumed from its
    checkpoint); otherwise clear what a different run left there."""
    if resume == "auto" and _same_settings(seed_dir, fingerprint):
        return
    if seed_dir.exists():
        if resume == "auto":
            logger.warning("%s was made with other settings; starting this seed afresh", seed_dir)
        shutil.rmtree(seed_dir)
    seed_dir.mkdir(parents=True)
    atomic_write_json(seed_dir / "fingerprint.json", {"fingerprint": fingerprint})


def finetune(cfg: Config) -> Path:
    """Stage function: fine-tune once per seed, summarise, and write ``finetune/<task>/final``.

    Returns the ``final/`` directory (the best checkpoint of the median seed). Runs unchanged under
    ``accelerate launch``: the main process writes the files, the others wait for it.
    """
    from accelerate import PartialState

    f = cfg.finetune
    dist = PartialState(cpu=f.cpu or not torch.cuda.is_available())  # cpu=True: gloo DDP on CPUs
    task_dir = RunLayout.of(cfg).finetune_task(f.task_name)
    if dist.is_main_process:
        check_writable(task_dir)
        if cfg.hub.push:  # ---- Hub call site (mlm_pretrain/hub.py): credentials and repo before any work
            preflight(cfg)
    src = model_source(cfg)
    tokenizer = load_model_tokenizer(src, cfg)
    if f.long_documents == "windows" and not getattr(tokenizer, "is_fast", False):
        logger.warning("finetune.long_documents=windows needs a fast tokenizer (a tokenizer.json), and %s has a "
                       "slow one: longer rows are cut to finetune.max_length=%d tokens instead (save the tokenizer "
                       "with a tokenizer.json to read them whole)", src or "this tokenizer", f.max_length)
        cfg = cfg.replace(**{"finetune.long_documents": "truncate"})
        f = cfg.finetune
    with dist.main_process_first():  # one process fills the datasets cache, the others read it
        task = prepare_task(cfg, tokenizer)
    metric = resolve_metric(f.metric_for_best, task.spec)  # before any training: a typo fails now
    fingerprint = finetune_fingerprint(cfg, src)
    if dist.is_main_process:
        save_resolved(cfg, task_dir / "config.yaml")
    logger.info("task %s: %s, %d train / %d validation%s examples, model %s (init=%s)", f.task_name,
                "regression" if task.spec.problem_type == REGRESSION else f"{task.spec.num_labels} classes "
                f"({', '.join(task.spec.names)})", len(task.encoded["train"]), len(task.encoded["validation"]),
                f" / {len(task.encoded['test'])} test" if "test" in task.encoded else "", src or f"preset {cfg.model.preset}",
                f.init)

    results = []
    for seed in run_seeds(cfg):
        seed_dir = task_dir / f"seed-{seed}"
        if dist.is_main_process:
            _prepare_seed_dir(seed_dir, fingerprint, f.resume)
        dist.wait_for_everyone()
        done = _finished(seed_dir, fingerprint, f.resume)
        if done is not None:
            logger.info("seed %d already fine-tuned with these settings; reusing %s", seed, seed_dir)
            results.append(done)
            continue
        results.append(train_one_seed(cfg, task, tokenizer, src, seed, seed_dir, fingerprint))

    summary = summarise(results, metric)
    summary.update(task=f.task_name, init=f.init, model=src, labels=task.spec.to_json(), skipped=task.skipped,
                   lengths=task.lengths,
                   examples={s: len(d) for s, d in task.encoded.items()})
    final = task_dir / "final"
    if dist.is_main_process:
        with keep_trained(task_dir):
            atomic_write_json(task_dir / "summary.json", summary)
            _ensure_predictions(task_dir / f"seed-{summary['selected_seed']}", task, cfg)
            _write_final(task_dir, summary, task, cfg)
        print(format_summary(summary, f.task_name))
        if cfg.hub.push:  # ---- Hub call site: the median seed's classifier, retried in the background
            pusher = BackgroundPusher(cfg)
            pusher.submit(final)
            failures = pusher.close(wait=True)
            if failures:
                logger.warning("the push of %s to %s failed (%s); the classifier is kept: `mlm-pretrain push %s "
                               "hub.repo_id=%s` tries again", final, cfg.hub.repo_id, failures[-1].error, final,
                               cfg.hub.repo_id)
    dist.wait_for_everyone()
    return final


def _ensure_predictions(seed_dir: Path, task: Task, cfg: Config) -> None:
    """The seed's validation predictions, made again from its best model when a finished seed lacks
    them (a run that failed while writing them)."""
    from transformers import AutoModelForSequenceClassification

    if (seed_dir / PREDICTIONS_FILE).is_file():
        return
    logger.info("%s has no %s: predicting with its best model", seed_dir, PREDICTIONS_FILE)
    best = seed_dir / "best"
    model = AutoModelForSequenceClassification.from_pretrained(str(best))
    tokenizer = load_model_tokenizer(str(best), cfg)
    logits = predict_logits(model, tokenizer, task.encoded["validation"], cfg.finetune)
    rows = with_inputs(task.raw["validation"], cfg.finetune, prediction_rows(task.spec, logits), labels=True)
    write_rows(rows, seed_dir / PREDICTIONS_FILE)


def _write_final(task_dir: Path, summary: dict, task: Task, cfg: Config) -> Path:
    """``final/`` (see :func:`mlm_pretrain.artifacts.write_final`): the median seed's best model with
    metrics.json, its predictions and the confusion matrix."""
    seed = summary["selected_seed"]
    seed_dir = task_dir / f"seed-{seed}"
    run = next(r for r in summary["runs"] if r["seed"] == seed)
    metrics = {"task": cfg.finetune.task_name, "seed": seed, "best_step": run["best_step"],
               "metric_for_best": summary["metric_for_best"], "init": cfg.finetune.init,
               **{f"eval/{k}": v for k, v in run["validation"].items()},
               **{f"test/{k}": v for k, v in run.get("test", {}).items()},
               "train_examples_per_second": run["train_examples_per_second"],
               "seeds": summary["seeds"], "skipped": summary["skipped"]}
    for split in ("validation", "test"):
        if split in summary:
            prefix = "eval" if split == "validation" else "test"
            metrics.update({f"{prefix}/{k}_median": v["median"] for k, v in summary[split].items()})
            metrics.update({f"{prefix}/{k}_std": v["std"] for k, v in summary[split].items()})

    def save(tmp: Path) -> None:  # best/ was saved by the Trainer (gathered under FSDP / DeepSpeed): a copy
        shutil.copytree(seed_dir / "best", tmp, dirs_exist_ok=True)
        shutil.copy2(seed_dir / PREDICTIONS_FILE, tmp / PREDICTIONS_FILE)
        spec = task.spec
        if spec.problem_type != REGRESSION:
            rows = read_jsonl(tmp / PREDICTIONS_FILE)
            index = {n: i for i, n in enumerate(spec.names)}
            preds = [index[r["label"]] for r in rows]
            refs = [spec.encode(r["reference"]) for r in rows]
            try:  # a picture of metrics.json: never an error that could cost the trained models
                plot_confusion_matrix(confusion_matrix(preds, refs, spec.num_labels), spec.names,
                                      tmp / "confusion_matrix.png",
                                      title=f"{cfg.finetune.task_name} validation (seed {seed})")
            except Exception as e:  # noqa: BLE001
                logger.warning("could not draw the confusion matrix (%s: %s)", type(e).__name__, e)

    return write_final(task_dir / "final", cfg, kind="finetune", metrics=metrics, save=save,
                       config_name="mlm_pretrain_config.yaml")
