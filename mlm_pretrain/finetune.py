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
``final/``, reuse of finished seeds. Inputs and labels: :mod:`mlm_pretrain.finetune_data`; prediction
and ``mlm-pretrain evaluate``: :mod:`mlm_pretrain.predict`.

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

import contextlib
import functools
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .artifacts import save_model, staged_dir, write_final
from .config import Config, save_resolved
from .errors import FinetuneError, UserError
from .finetune_data import TASK_FILE, LabelSpec, Task, prepare_task
from .hardware import HeapReuse, ThreadGovernor, cpu_training_kernels, resolve_mixed_precision, sdpa_backends
from .hub import BackgroundPusher, preflight
from .identity import finetune_fingerprint
from .layout import RunLayout
from .metrics import (REGRESSION, confusion_matrix, default_metric, greater_is_better, metric_names,
                      plot_confusion_matrix)
from .metrics_log import MetricsLog, available_trackers, plot_metrics, truncate_metrics
from .model import build_config, load_model_tokenizer, model_source, token_ids
from .predict import PREDICTIONS_FILE, predict_logits, prediction_rows, score, with_inputs, write_rows
from .textio import atomic_write_json, check_writable, read_jsonl

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------
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
                    "finetune.embedding_learning_rate=auto (here %.2g; docs/quality.md)", ratio, ratio,
                    f.learning_rate * ratio)
    return f.learning_rate * ratio if value == "auto" and grown else None


def _task_json(cfg: Config, spec: LabelSpec) -> dict:
    f = cfg.finetune
    return {"task_name": f.task_name, "text_column": f.text_column, "text_pair_column": f.text_pair_column,
            "label_column": f.label_column, "max_length": f.max_length, "labels": spec.to_json()}


# ----------------------------------------------------------------------------------------------
# One fine-tune: transformers.Trainer
# ----------------------------------------------------------------------------------------------
def steps_per_epoch(n_train: int, f, world_size: int = 1) -> int:
    """Optimizer steps in one pass over ``n_train`` rows (the last step of an epoch may accumulate fewer
    batches, as in the Trainer)."""
    batches = math.ceil(math.ceil(n_train / f.batch_size) / world_size)
    return max(math.ceil(batches / f.gradient_accumulation_steps), 1)


def training_arguments(cfg: Config, seed: int, seed_dir: Path, metric: str, n_train: int):
    """``finetune.*`` as ``TrainingArguments``: evaluation and a checkpoint every ``eval_steps`` (default
    once per epoch, and always at the last step), the best checkpoint loaded at the end."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType
    from transformers import TrainingArguments

    f = cfg.finetune
    use_cpu = f.cpu or not torch.cuda.is_available()
    if f.mixed_precision == "fp16" and use_cpu:
        raise FinetuneError("finetune.mixed_precision=fp16 needs a GPU (loss scaling); on a CPU use bf16 or no")
    precision, reason = resolve_mixed_precision(f.mixed_precision, cpu=use_cpu)  # ``auto``: what fits this machine
    if reason != "set explicitly":
        logger.info("mixed precision %s (%s)", precision, reason)
    dist = PartialState()
    every = f.eval_steps or steps_per_epoch(n_train, f, dist.num_processes)
    # FSDP / DeepSpeed load the best model from a full checkpoint only (the Trainer refuses weights-only ones)
    sharded = dist.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    weights_only = not f.save_checkpoints and not sharded
    trackers = [t for t in available_trackers(cfg.tracking.report_to) if t != "tensorboard"]  # tensorboard: below
    return TrainingArguments(
        output_dir=str(seed_dir / "checkpoints"), seed=seed, use_cpu=use_cpu,
        per_device_train_batch_size=f.batch_size, per_device_eval_batch_size=f.batch_size,
        gradient_accumulation_steps=f.gradient_accumulation_steps, num_train_epochs=f.num_epochs,
        max_steps=f.max_steps or -1, learning_rate=f.learning_rate, weight_decay=f.weight_decay,
        max_grad_norm=f.max_grad_norm, lr_scheduler_type=f.lr_scheduler, warmup_steps=f.warmup_ratio,  # < 1: a ratio
        bf16=precision == "bf16", fp16=precision == "fp16",
        train_sampling_strategy="group_by_length" if f.group_by_length else "random",
        eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every,
        save_total_limit=1,  # with load_best_model_at_end: the best and the newest checkpoint are kept
        save_only_model=weights_only,  # weights only: the best is kept, but a seed cannot resume
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=greater_is_better(metric),
        restore_callback_states_from_checkpoint=True,  # early-stopping patience and training seconds resume too
        logging_strategy="steps", logging_steps=f.logging_steps, report_to=trackers or "none",
        run_name=f"{cfg.tracking.project_name}-{f.task_name}-seed{seed}", dataloader_num_workers=0)


@functools.cache
def _trainer_classes():
    """``(Trainer, MetricsFile)``: the two additions to transformers (built on first use, so importing
    this module does not import transformers)."""
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState

    class OrderedEvalTrainer(Trainer):
        """``transformers.Trainer`` whose evaluation keeps the input order: with ``group_by_length`` it
        length-groups (shuffles) evaluation batches too, which would misalign predictions and rows."""

        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None or self.args.world_size > 1:  # distributed: accelerate shards in order
                return None
            return torch.utils.data.SequentialSampler(eval_dataset)

        #: ``finetune.embedding_learning_rate``: the input embedding matrix's own peak rate (None: the others').
        embedding_learning_rate: Optional[float] = None
        #: The attention kernels to train with (:func:`~mlm_pretrain.training.cpu_attention_backends`; None: any).
        attention_backends: Optional[list] = None

        def training_step(self, *args, **kwargs):
            with sdpa_backends(self.attention_backends):  # forward and backward
                return super().training_step(*args, **kwargs)

        def create_optimizer(self, model=None):
            """The Trainer's AdamW, with the input embedding matrix in a group of its own at
            ``embedding_learning_rate`` (same weight decay; the schedule scales every group alike)."""
            optimizer = super().create_optimizer(model)
            lr = self.embedding_learning_rate
            if lr is None or lr == self.args.learning_rate:
                return optimizer
            embedding = (self.model if model is None else model).get_input_embeddings().weight
            for group in optimizer.param_groups:
                kept = [p for p in group["params"] if p is not embedding]
                if len(kept) < len(group["params"]):
                    group["params"] = kept
                    optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"},
                                               "params": [embedding], "lr": lr})
                    return optimizer
            raise FinetuneError("finetune.embedding_learning_rate: the input embedding matrix is not among the "
                                "optimizer's parameters (sharded by FSDP / DeepSpeed?); leave it null there")

    class MetricsFile(TrainerCallback, ExportableState):
        """``metrics.jsonl`` with the package's keys (``train/loss``, ``train/lr``, ``eval/<metric>``), and the
        seconds spent in training steps (evaluation and checkpoints excluded); both survive a resume."""

        def __init__(self, path: str, train_seconds: float = 0.0):
            self.path, self.train_seconds, self._t0, self._log = path, train_seconds, None, None

        def state(self) -> dict:
            return {"args": {"path": self.path}, "attributes": {"train_seconds": self.train_seconds}}

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is not None:
                self.train_seconds += time.perf_counter() - self._t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:  # not the end-of-run summary
                return
            names = {"loss": "train/loss", "learning_rate": "train/lr", "grad_norm": "train/grad_norm",
                     "epoch": "train/epoch"}
            evaluating = any(k.startswith("eval_") for k in logs)
            record = {}
            for k, v in logs.items():
                if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")):
                    record[f"eval/{k[5:]}"] = v
                elif k in names and not evaluating:
                    record[names[k]] = v
            self.write(state.global_step, record)

        def write(self, step: int, record: dict) -> None:
            if self._log is None:
                self._log = MetricsLog(Path(self.path), append=True)
            self._log.log(step, record)

        def on_train_end(self, args, state, control, **kwargs):
            if self._log is not None:
                self._log.close()
                self._log = None

    class Threads(TrainerCallback):
        """CPU threads from :class:`~mlm_pretrain.training.ThreadGovernor`, re-read at step ends."""

        def __init__(self, governor):
            self.governor = governor

        def on_step_end(self, args, state, control, **kwargs):
            self.governor.step()

    return OrderedEvalTrainer, MetricsFile, Threads


def _resume_checkpoint(root: Path) -> Optional[Path]:
    """The newest complete Trainer checkpoint under ``root``; a partial or unreadable one (an interrupted
    save) is skipped with a warning, as pretraining does."""
    from safetensors import safe_open

    found = sorted((p for p in Path(root).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True) if Path(root).is_dir() else []
    for p in found:
        try:
            json.loads((p / "trainer_state.json").read_text())
            if not any(q.name.startswith("optimizer") for q in p.iterdir()):  # optimizer.pt, or FSDP's optimizer_0/
                raise FileNotFoundError("no optimizer state")
            if (p / "model.safetensors").is_file():  # (FSDP's sharded checkpoints hold pytorch_model_fsdp_0/)
                with safe_open(str(p / "model.safetensors"), framework="pt") as weights:
                    weights.keys()
        except Exception as e:  # noqa: BLE001 - any missing or unreadable file: try the previous one
            logger.warning("skipping checkpoint %s: it is incomplete or unreadable (%s: %s)", p, type(e).__name__, e)
            continue
        return p
    return None


def train_one_seed(cfg: Config, task: Task, tokenizer, src: Optional[str], seed: int, seed_dir: Path,
                   fingerprint: str) -> dict:
    """Fine-tune once with ``seed`` on ``transformers.Trainer``; returns its results (also written to
    ``seed_dir/results.json``) and keeps the best model in ``seed_dir/best``."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    f, spec = cfg.finetune, task.spec
    metric = resolve_metric(f.metric_for_best, spec)
    train = task.encoded["train"]
    args = training_arguments(cfg, seed, seed_dir, metric, len(train))
    ckpt_root, metrics_file = seed_dir / "checkpoints", seed_dir / "metrics.jsonl"
    resume = _resume_checkpoint(ckpt_root) if f.resume == "auto" and f.save_checkpoints else None
    if args.should_save:
        if resume is None:
            shutil.rmtree(ckpt_root, ignore_errors=True)
            metrics_file.unlink(missing_ok=True)
        else:
            truncate_metrics(metrics_file, int(resume.name.split("-")[-1]))
    PartialState().wait_for_everyone()

    model = build_classifier(src, cfg, spec, tokenizer, seed=seed)
    embedding_lr = resolve_embedding_learning_rate(model, f, log=seed == run_seeds(cfg)[0])
    Trainer, MetricsFile, Threads = _trainer_classes()
    callbacks = [MetricsFile(str(metrics_file))]
    governor = ThreadGovernor(f.threads) if args.use_cpu else None
    heap = HeapReuse(f.malloc) if args.use_cpu else None
    if governor is not None:
        callbacks.append(Threads(governor))
    if f.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=f.early_stopping_patience))
    if "tensorboard" in available_trackers(cfg.tracking.report_to):
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(seed_dir / "logs")
        callbacks.append(board)
    # One process may run several stages (`mlm-pretrain run`, notebooks, tests) with different mixed
    # precision; accelerate keeps a process-wide state that refuses a change (the process group is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=task.encoded["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8), processing_class=tokenizer,
                      compute_metrics=lambda p: score(spec, torch.as_tensor(p.predictions).float(),
                                                      torch.as_tensor(p.label_ids)),
                      callbacks=callbacks)
    trainer.embedding_learning_rate = embedding_lr
    attention = "PyTorch's choice"
    if args.use_cpu:  # dropout masks, flash or math attention (measured)
        trainer.attention_backends, attention = cpu_training_kernels(
            model, model.config, "bf16" if args.bf16 else "no", batch=f.batch_size, seq=f.max_length)
        if seed == run_seeds(cfg)[0]:
            logger.info("CPU dropout masks from 64-bit random words; attention while training: %s", attention)
    if resume is not None:
        logger.info("seed %d: resumed from %s", seed, resume)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)  # the best model is loaded
    finally:
        if governor is not None:
            governor.close()
        if heap is not None:
            heap.close()

    # best/: the weights gathered from every process (FSDP / DeepSpeed), as pretraining saves its final/;
    # then the best model is evaluated once more (validation and test) and kept as this seed's result.
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    state, record = trainer.state, next(c for c in trainer.callback_handler.callbacks if hasattr(c, "train_seconds"))
    spe = steps_per_epoch(len(train), f, args.world_size)
    per_step = f.batch_size * f.gradient_accumulation_steps * args.world_size
    examples = (state.global_step // spe) * len(train) + min((state.global_step % spe) * per_step, len(train))
    results = {"seed": seed, "best_step": state.best_global_step or state.global_step, "steps": state.global_step,
               "epochs_completed": state.global_step // spe, "train_examples_seen": examples,
               "train_seconds": round(record.train_seconds, 3),
               "train_examples_per_second": round(examples / max(record.train_seconds, 1e-9), 2),
               "metric_for_best": metric, "fingerprint": fingerprint,
               "embedding_learning_rate": embedding_lr if embedding_lr is not None else f.learning_rate,
               "attention_backend": attention,
               **(governor.summary() if governor is not None else {}),
               **(heap.summary() if heap is not None else {})}
    logits = {}
    for split in ("validation", "test"):
        if split in task.encoded:
            out = trainer.predict(task.encoded[split], metric_key_prefix=split)
            logits[split] = torch.as_tensor(out.predictions).float()
            results[split] = score(spec, logits[split], torch.as_tensor(out.label_ids))
    if trainer.is_world_process_zero():
        record.write(state.global_step, {f"final/{s}/{k}": v for s in logits for k, v in results[s].items()})
        record.on_train_end(args, state, trainer.control)
        with staged_dir(seed_dir / "best") as tmp:
            save_model(tmp, trainer.accelerator.unwrap_model(trainer.model), state_dict, tokenizer)
            atomic_write_json(tmp / TASK_FILE, _task_json(cfg, spec))
        # The seed is done once results.json is written: a re-run reuses it. What follows is derived
        # from best/ and can be made again without training (see _ensure_predictions).
        atomic_write_json(seed_dir / "results.json", results)
        shutil.rmtree(ckpt_root, ignore_errors=True)  # only needed to resume this seed, which is done
        with keep_trained(seed_dir.parent):
            rows = with_inputs(task.raw["validation"], f, prediction_rows(spec, logits["validation"]), labels=True)
            write_rows(rows, seed_dir / PREDICTIONS_FILE)
        if cfg.tracking.plots:
            plot_metrics(metrics_file, seed_dir,
                         {"loss": ["train/loss", "eval/loss"],
                          "eval": [f"eval/{k}" for k in metric_names(spec.problem_type, spec.num_labels)]})
    PartialState().wait_for_everyone()
    return results


def resolve_metric(name: str, spec: LabelSpec) -> str:
    """``metric_for_best`` checked against the task's metrics (``auto`` -> accuracy / pearson)."""
    if name == "auto":
        return default_metric(spec.problem_type)
    name = name.removeprefix("eval/").removeprefix("eval_")
    valid = ["loss", *metric_names(spec.problem_type, spec.num_labels)]
    if name not in valid:
        kind = "regression" if spec.problem_type == REGRESSION else f"{spec.num_labels}-class classification"
        raise FinetuneError(f"finetune.metric_for_best={name!r} is not a metric of this {kind} task; choose one of "
                            f"{', '.join(valid)} (or auto)")
    return name


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


@contextlib.contextmanager
def keep_trained(task_dir: Path):
    """Turn a failure after training (predictions, summary, final/) into an error that says the trained
    models are kept and how to finish, instead of a traceback that reads like the training was lost."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        logger.exception("writing the fine-tuning outputs failed")
        raise FinetuneError(f"fine-tuning finished, but writing its outputs failed ({type(e).__name__}: {e}); the "
                            f"trained models are kept in {task_dir}/seed-*/best. Run the same command again to "
                            "finish: finished seeds are reused, not trained again") from e


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
