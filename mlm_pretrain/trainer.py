"""One fine-tuning seed on ``transformers.Trainer``: its ``TrainingArguments``, the three additions the
package makes to the Trainer (evaluation in input order with the CPU attention kernels and the embedding
learning rate; ``metrics.jsonl`` with the package's keys; CPU threads re-read at step ends), resume of
an interrupted seed from its newest complete checkpoint, and the seed's ``best/``, results and predictions.

    results = train_one_seed(cfg, task, tokenizer, src, seed, seed_dir, fingerprint)
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
from typing import Optional

import torch
from .artifacts import save_model, staged_dir
from .classifier import build_classifier, resolve_embedding_learning_rate, run_seeds, task_json
from .config import Config
from .errors import FinetuneError, UserError
from .finetune_data import TASK_FILE, LabelSpec, Task
from .hardware import HeapReuse, ThreadGovernor, cpu_training_kernels, resolve_mixed_precision, sdpa_backends
from .metrics import REGRESSION, default_metric, greater_is_better, metric_names
from .metrics_log import MetricsLog, available_trackers, plot_metrics, truncate_metrics
from .predict import PREDICTIONS_FILE, collator, prediction_rows, score, with_inputs, write_rows
from .textio import atomic_write_json
from .windows import pool, pooled_loss, window_logits

logger = logging.getLogger(__name__)


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
    """``(Trainer, MetricsFile, Threads)``: the package's additions to transformers (built on first use, so
    importing this module does not import transformers)."""
    return _ordered_eval_trainer(), _metrics_file_callback(), _threads_callback()


def _ordered_eval_trainer():
    from transformers import Trainer

    class OrderedEvalTrainer(Trainer):
        """``transformers.Trainer`` whose evaluation keeps the input order: with ``group_by_length`` it
        length-groups (shuffles) evaluation batches too, which would misalign predictions and rows."""

        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None or self.args.world_size > 1:  # distributed: accelerate shards in order
                return None
            return torch.utils.data.SequentialSampler(eval_dataset)

        def _get_train_sampler(self, train_dataset=None):
            """With ``group_by_length``, windowed documents (rows holding a list of windows) are grouped by
            their tokens, as truncated rows are: the Trainer's own count would be their windows, which
            leaves every one-window row of a short-text task in one group, padded to the longest."""
            dataset = self.train_dataset if train_dataset is None else train_dataset
            if self.args.train_sampling_strategy != "group_by_length" or self.args.world_size > 1 or \
                    not hasattr(dataset, "column_names") or "input_ids" not in dataset.column_names or \
                    not len(dataset) or not isinstance(dataset[0]["input_ids"][0], list):
                return super()._get_train_sampler(train_dataset)
            from transformers.trainer_pt_utils import LengthGroupedSampler

            lengths = [sum(map(len, windows)) for windows in dataset["input_ids"]]
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=lengths)

        #: ``finetune.embedding_learning_rate``: the input embedding matrix's own peak rate (None: the others').
        embedding_learning_rate: Optional[float] = None
        #: The attention kernels to train with (:func:`~mlm_pretrain.hardware.cpu_attention_backends`; None: any).
        attention_backends: Optional[list] = None

        #: ``finetune.window_pooling`` for batches of windowed documents (:mod:`mlm_pretrain.windows`).
        window_pooling: str = "mean"
        #: The classifiers return the batch's mean loss (they ignore ``num_items_in_batch``): the Trainer
        #: divides it by the gradient accumulation steps.
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """The classifier's own loss; for windowed documents, the loss of the documents' pooled logits."""
            if "window_counts" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            windows = {k: v for k, v in inputs.items() if k not in ("window_counts", "labels")}
            # a batch's documents hold many windows: a truncated batch's worth at a time (one process: DDP
            # expects one forward pass per step)
            chunk = self.args.per_device_train_batch_size if self.args.world_size == 1 else None
            logits = pool(window_logits(model, windows, chunk), inputs["window_counts"], self.window_pooling)
            loss = pooled_loss(logits, inputs["labels"], self.accelerator.unwrap_model(model).config.problem_type)
            return (loss, {"logits": logits}) if return_outputs else loss

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

    return OrderedEvalTrainer


def _metrics_file_callback():
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

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

    return MetricsFile


def _threads_callback():
    from transformers import TrainerCallback

    class Threads(TrainerCallback):
        """CPU threads from :class:`~mlm_pretrain.hardware.ThreadGovernor`, re-read at step ends."""

        def __init__(self, governor):
            self.governor = governor

        def on_step_end(self, args, state, control, **kwargs):
            self.governor.step()

    return Threads


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


def _start_checkpoints(f, seed_dir: Path, should_save: bool) -> Optional[Path]:
    """The checkpoint an interrupted seed resumes from (its metrics cut back to it), or None: a fresh
    start, with the old checkpoints and metrics removed."""
    from accelerate import PartialState

    ckpt_root, metrics_file = seed_dir / "checkpoints", seed_dir / "metrics.jsonl"
    resume = _resume_checkpoint(ckpt_root) if f.resume == "auto" and f.save_checkpoints else None
    if should_save:
        if resume is None:
            shutil.rmtree(ckpt_root, ignore_errors=True)
            metrics_file.unlink(missing_ok=True)
        else:
            truncate_metrics(metrics_file, int(resume.name.split("-")[-1]))
    PartialState().wait_for_everyone()
    return resume


def _callbacks(cfg: Config, seed_dir: Path, governor) -> list:
    from transformers import EarlyStoppingCallback

    _, MetricsFile, Threads = _trainer_classes()
    f = cfg.finetune
    callbacks = [MetricsFile(str(seed_dir / "metrics.jsonl"))]
    if governor is not None:
        callbacks.append(Threads(governor))
    if f.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=f.early_stopping_patience))
    if "tensorboard" in available_trackers(cfg.tracking.report_to):
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(seed_dir / "logs")
        callbacks.append(board)
    return callbacks


def train_one_seed(cfg: Config, task: Task, tokenizer, src: Optional[str], seed: int, seed_dir: Path,
                   fingerprint: str) -> dict:
    """Fine-tune once with ``seed`` on ``transformers.Trainer``; returns its results (also written to
    ``seed_dir/results.json``) and keeps the best model in ``seed_dir/best``."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    f, spec = cfg.finetune, task.spec
    metric = resolve_metric(f.metric_for_best, spec)
    train = task.encoded["train"]
    args = training_arguments(cfg, seed, seed_dir, metric, len(train))
    resume = _start_checkpoints(f, seed_dir, args.should_save)
    model = build_classifier(src, cfg, spec, tokenizer, seed=seed)
    embedding_lr = resolve_embedding_learning_rate(model, f, log=seed == run_seeds(cfg)[0])
    governor = ThreadGovernor(f.threads) if args.use_cpu else None
    heap = HeapReuse(f.malloc) if args.use_cpu else None
    # One process may run several stages (`mlm-pretrain run`, notebooks, tests) with different mixed
    # precision; accelerate keeps a process-wide state that refuses a change (the process group is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    trainer = _trainer_classes()[0](
        model=model, args=args, train_dataset=train, eval_dataset=task.encoded["validation"],
        data_collator=collator(tokenizer, f), processing_class=tokenizer,
        compute_metrics=lambda p: score(spec, torch.as_tensor(p.predictions).float(), torch.as_tensor(p.label_ids)),
        callbacks=_callbacks(cfg, seed_dir, governor))
    trainer.embedding_learning_rate, trainer.window_pooling = embedding_lr, f.window_pooling
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
        for part in (governor, heap):
            if part is not None:
                part.close()
    results = {"seed": seed, **_progress(trainer, len(train), f), "metric_for_best": metric,
               "fingerprint": fingerprint,
               "embedding_learning_rate": embedding_lr if embedding_lr is not None else f.learning_rate,
               "attention_backend": attention,
               **(governor.summary() if governor is not None else {}),
               **(heap.summary() if heap is not None else {})}
    _keep_best(trainer, cfg, task, tokenizer, seed_dir, results)
    PartialState().wait_for_everyone()
    return results


def _progress(trainer, n_train: int, f) -> dict:
    """Steps, epochs, examples and training seconds of a finished ``trainer``."""
    state, args = trainer.state, trainer.args
    record = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "train_seconds"))
    spe = steps_per_epoch(n_train, f, args.world_size)
    per_step = f.batch_size * f.gradient_accumulation_steps * args.world_size
    examples = (state.global_step // spe) * n_train + min((state.global_step % spe) * per_step, n_train)
    return {"best_step": state.best_global_step or state.global_step, "steps": state.global_step,
            "epochs_completed": state.global_step // spe, "train_examples_seen": examples,
            "train_seconds": round(record.train_seconds, 3),
            "train_examples_per_second": round(examples / max(record.train_seconds, 1e-9), 2)}


def _keep_best(trainer, cfg: Config, task: Task, tokenizer, seed_dir: Path, results: dict) -> None:
    """The best model evaluated once more (validation and test, into ``results``) and kept: ``best/`` with
    the weights gathered from every process (FSDP / DeepSpeed), as pretraining saves its final/, then
    ``results.json``, the validation predictions and the plots."""
    f, spec, state = cfg.finetune, task.spec, trainer.state
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    record = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "train_seconds"))
    logits = {}
    for split in ("validation", "test"):
        if split in task.encoded:
            out = trainer.predict(task.encoded[split], metric_key_prefix=split)
            logits[split] = torch.as_tensor(out.predictions).float()
            results[split] = score(spec, logits[split], torch.as_tensor(out.label_ids))
    if not trainer.is_world_process_zero():
        return
    record.write(state.global_step, {f"final/{s}/{k}": v for s in logits for k, v in results[s].items()})
    record.on_train_end(trainer.args, state, trainer.control)
    with staged_dir(seed_dir / "best") as tmp:
        save_model(tmp, trainer.accelerator.unwrap_model(trainer.model), state_dict, tokenizer)
        atomic_write_json(tmp / TASK_FILE, task_json(cfg, spec))
    # The seed is done once results.json is written: a re-run reuses it. What follows is derived
    # from best/ and can be made again without training (see finetune._ensure_predictions).
    atomic_write_json(seed_dir / "results.json", results)
    shutil.rmtree(seed_dir / "checkpoints", ignore_errors=True)  # only needed to resume this seed, which is done
    with keep_trained(seed_dir.parent):
        rows = with_inputs(task.raw["validation"], f, prediction_rows(spec, logits["validation"]), labels=True)
        write_rows(rows, seed_dir / PREDICTIONS_FILE)
    if cfg.tracking.plots:
        plot_metrics(seed_dir / "metrics.jsonl", seed_dir,
                     {"loss": ["train/loss", "eval/loss"],
                      "eval": [f"eval/{k}" for k in metric_names(spec.problem_type, spec.num_labels)]})


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
