"""Stage 3: pretrain the encoder (masked LM + NSP/SOP, or ELECTRA's replaced-token detection) with Accelerate.

    mlm-pretrain pretrain --config tiny                                   # -> runs/tiny/pretrain/final/
    mlm-pretrain pretrain pretrain.time_budget_minutes=60 model.preset=mini
    accelerate launch --num_processes 2 -m mlm_pretrain pretrain --config tiny     # data parallel (CPU: gloo)
    torchrun --nproc_per_node 8 -m mlm_pretrain pretrain --config my.yaml
    mlm-pretrain pretrain model.architecture=modernbert data.objective=mlm pretrain.learning_rate=3e-3

What the loop promises:

* **One big batch.** The loss of an optimizer step is the MLM cross-entropy summed over every masked
  token of the step (all accumulation micro-batches, all processes) divided by their global count,
  plus the NSP/SOP loss averaged over the step's sequences (ELECTRA: plus ``electra_disc_weight`` x the
  discriminator's loss averaged over the step's real tokens). Counts are all-reduced *before* the
  forward passes, so gradient accumulation and data parallelism give the update of one big batch.
* **Positional data** (:mod:`mlm_pretrain.batches`). Which rows a micro-batch holds and how each row is
  masked are functions of (seed, epoch, row) only, so the data position is one integer (micro-batches
  consumed). By default rows of similar length are batched together (``group_by_length``).
* **Sparse, fused head.** The vocabulary projection runs only on masked positions, fused with the
  cross-entropy (:mod:`mlm_pretrain.objectives`); the model stays a plain transformers class
  (``BertForPreTraining``, ``ModernBertForMaskedLM``, or ELECTRA's discriminator with its generator in
  ``final/generator/``).
* **CPU kernels that fit the machine.** On a CPU, dropout masks come from 64-bit random words
  (:mod:`mlm_pretrain.dropout`; PyTorch draws one Bernoulli per element on one thread) and attention
  runs on whichever SDPA kernel, flash or math, a short probe measured faster at the model's shape
  (:func:`mlm_pretrain.hardware.cpu_training_kernels`; ``attention_backend`` in ``final/metrics.json``).
  Freed memory stays in the process for the next step (:class:`mlm_pretrain.hardware.HeapReuse`):
  glibc would otherwise hand each step's large tensors back as freshly faulted pages.
* **A compiled encoder** (``pretrain.compile``; :func:`mlm_pretrain.hardware.compile_encoders`): the
  encoders' training forward and backward by ``torch.compile``; evaluation and the probe run eager.
* **Exact resume.** Checkpoints (every ``save_steps``, at the end, and on SIGTERM/SIGINT) hold the
  model, optimizer, scheduler, scaler, every RNG (dropout), the data position and the logging window.
  A run killed with SIGKILL and resumed logs the same losses and ends with the same weights, bit for
  bit on CPU fp32 -- with any ``dataloader_num_workers``. Streaming data resumes by re-reading the
  stream up to the position (exact for a deterministic corpus, but it costs the time to re-read).
  Runs bounded by ``time_budget_minutes`` resume exactly too, but their learning rate follows the
  wall clock, which no two runs share.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from .artifacts import flat_config as _flat_config, save_model, write_final
from .batches import TrainBatches, check_token_ids, load_pretraining_data
from .checkpoints import SignalStop, resume_from_checkpoints, save_checkpoint
from .config import Config, save_resolved
from .errors import PretrainError
from .evaluation import TERM_KEYS, evaluate, means
from .finetune_data import load_splits
from .flops import measure_matmul_peak, pretraining_flops
from .hardware import cpu_bf16_reading, sdpa_backends, set_up_machine
from .hub import BackgroundPusher, preflight
from .identity import RunInputs, pretrain_fingerprint, run_inputs
from .layout import RunLayout
from .masking import MLMCollator
from .metrics_log import MetricsLog, plot_metrics, truncate_metrics
from .model import GENERATOR_DIR, build_generator, build_model, check_model_settings
from .objectives import LOSS_TERMS, PretrainingModule, loss_normalisers, step_loss
from .optim import make_optimizer, make_progress_scheduler, make_scheduler, warmup_steps_for
from .phases import already_done, end_accelerator, pretraining_phases, set_aside
from .probe import Probe, plateau_reading
from .textio import check_writable
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)


class TrainingDiverged(PretrainError):
    """Too many optimizer steps in a row had a non-finite loss."""


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------
def pretrain(cfg: Config) -> Path:
    """Stage function: pretrain ``cfg.model`` on the prepared data, phase by phase (with
    ``pretrain.long_phase``, a last one at a longer window: :mod:`mlm_pretrain.phases`); returns the last
    phase's ``final/`` (``<output_dir>/pretrain/final`` without a long phase)."""
    phases = pretraining_phases(cfg)
    if len(phases) > 1 and cfg.hub.push:  # the last phase pushes: its repository is checked before any training
        preflight(cfg)
    for i, phase in enumerate(phases):
        final = _pretrain_phase(phase.cfg, phase.layout, later=phases[i + 1:])
    return final


def _pretrain_phase(cfg: Config, layout: RunLayout, later: list) -> Path:
    """One phase, as a run without phases: resumed from its checkpoints, skipped once finished."""
    check_writable(layout.pretrain)  # before any work
    final = layout.final
    inputs = run_inputs(cfg, layout)
    if cfg.pretrain.resume == "auto" and already_done(final, cfg, inputs):
        logger.info("pretraining already finished in %s with this config; delete it or set pretrain.resume=never "
                    "to train again", final)
        return final
    set_aside(later)  # the later phases started from this phase's earlier weights
    run = _Run(cfg, layout, inputs)
    try:
        with run.stopper:
            run.train()
        if run.stopper.signum is not None:
            run.save()
            name = signal.Signals(run.stopper.signum).name
            logger.warning("stopped by %s at step %d; checkpoint saved in %s; run the same command again to resume",
                           name, run.state.step, run.ckpt_root)
            raise KeyboardInterrupt if run.stopper.signum == signal.SIGINT else SystemExit(128 + run.stopper.signum)
        return run.finish(final)
    finally:
        run.close(keep_group=bool(later))  # a later phase trains in the same process group


@dataclass
class LoopState:
    """What a checkpoint carries besides what ``accelerator.save_state`` saves."""

    step: int = 0                 # optimizer steps taken
    micro_batches: int = 0        # data position: micro-batches consumed by each process
    elapsed: float = 0.0          # wall-clock seconds of the run over all sessions (time budget)
    train_seconds: float = 0.0    # seconds inside training steps (throughput)
    eval_seconds: float = 0.0     # seconds in evaluations and the downstream probe
    tokens: float = 0.0           # non-padding tokens trained on, all processes
    flops: float = 0.0            # model FLOPs done, all processes
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    window: dict = field(default_factory=dict)  # sums since the last logged step


STAT_KEYS = ("loss", *TERM_KEYS, "tokens", "token_positions", "sequences")
PLOTS = {"loss": ["train/loss", "train/mlm_loss", "eval/mlm_loss", "eval/unigram_loss", "train/rtd_loss", "eval/rtd_loss"],
         "probe": ["probe/accuracy", "probe/random_init_accuracy", "probe/tfidf_accuracy", "probe/majority_accuracy"],
         "accuracy": ["train/mlm_accuracy", "eval/mlm_accuracy", "train/nsp_accuracy", "eval/nsp_accuracy",
                      "train/sop_accuracy", "eval/sop_accuracy", "train/rtd_accuracy", "eval/rtd_accuracy",
                      "eval/rtd_precision", "eval/rtd_recall"],
         "learning_rate": ["train/learning_rate"]}


class _Run:
    """One pretraining session: setup in ``__init__``, the loop in :meth:`train`, export in :meth:`finish`."""

    def __init__(self, cfg: Config, layout: RunLayout, inputs: Optional[RunInputs]):
        from accelerate.utils import set_seed

        self.cfg, self.pcfg, self.layout, self.out = cfg, cfg.pretrain, layout, layout.pretrain
        pcfg, out = self.pcfg, self.out
        if inputs is None:  # run_inputs found no tokenizer directory
            raise PretrainError(f"no tokenizer at {layout.tokenizer}: run `mlm-pretrain tokenizer` first (same "
                                "config), or set tokenizer.pretrained to an existing tokenizer directory")
        self.tokenizer = tokenizer = load_tokenizer(layout.tokenizer)
        self.vocab_size = len(tokenizer)
        self.inputs = inputs
        check_model_settings(cfg, tokenizer)  # before any data work
        machine = set_up_machine(pcfg, project_dir=out, report_to=cfg.tracking.report_to)
        self.accelerator = acc = machine.accelerator
        self.precision, self.precision_reason = machine.precision, machine.precision_reason
        self.threads, self.heap = machine.threads, machine.heap
        if self.precision == "bf16" and acc.device.type == "cpu":  # ``auto`` picks bf16 only where it is fast
            fast, figures = cpu_bf16_reading()
            if not fast:
                logger.warning("bf16 autocast runs slower than fp32 on this CPU (%s); pretrain.mixed_precision=no is "
                               "the fast choice", figures)
        self.pusher = None
        if cfg.hub.push:  # ---- Hub call site (mlm_pretrain/hub.py): fail before training; push in background
            preflight(cfg)
            self.pusher = BackgroundPusher(cfg) if acc.is_main_process else None

        if cfg.finetune.hub_dataset and pcfg.probe_examples:  # the probe's task: read now, not at the first evaluation
            load_splits(cfg)
        train_rows, val_rows, data_stats = load_pretraining_data(cfg, tokenizer, acc, inputs)
        self.unigram = data_stats.get("unigram_cross_entropy")  # the plateau line (mlm_pretrain.probe)
        check_token_ids(val_rows, self.vocab_size)
        set_seed(cfg.seed)  # the same initial weights on every process
        self.model = build_model(cfg, tokenizer)
        self.generator = build_generator(cfg, self.model)  # ELECTRA only (else None)
        set_seed(cfg.seed + acc.process_index)  # but different dropout masks
        self.collator = collator = MLMCollator(tokenizer, cfg.masking, seed=cfg.seed)
        self.data = TrainBatches(train_rows, collator, batch_size=pcfg.batch_size, seed=cfg.seed,
                                 rank=acc.process_index, world_size=acc.num_processes,
                                 num_workers=pcfg.dataloader_num_workers, group_by_length=pcfg.group_by_length)
        self.total_steps = _total_steps(pcfg, self.data.per_epoch)
        self.state = LoopState()
        self.clock = _Clock()
        module = PretrainingModule(self.model, self.generator)
        self.attention, self.attention_reason, self.compiled, self.compile_reason = machine.tune(
            module, (self.model, self.generator), self.model.config, batch=pcfg.batch_size, seq=cfg.data.max_seq_length,
            compile_setting=pcfg.compile)
        optimizer = make_optimizer(module, lr=pcfg.learning_rate, weight_decay=pcfg.weight_decay,
                                   betas=(pcfg.adam_beta1, pcfg.adam_beta2), eps=pcfg.adam_epsilon)
        self.scheduler = self._make_scheduler(optimizer)
        # Not passed to prepare(): accelerate would step the scheduler once per process per step.
        self.module, self.optimizer = acc.prepare(module, optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.val_loader = acc.prepare(torch.utils.data.DataLoader(
            val_rows, batch_size=pcfg.batch_size, collate_fn=collator.pad)) if len(val_rows) else None

        self.ckpt_root = layout.checkpoints
        resumed, saved = resume_from_checkpoints(acc, self.ckpt_root, pcfg.resume, check=self._check_checkpoint)
        if resumed is not None:
            self._restore(saved)
            logger.info("resumed from %s: step %d, micro-batch %d", resumed, self.state.step, self.state.micro_batches)
        self.saved_at = self.state.step if resumed is not None else -1
        if acc.is_main_process:
            save_resolved(cfg, out / "config.yaml")
            if resumed is not None:
                truncate_metrics(out / "metrics.jsonl", self.state.step)
            acc.init_trackers(cfg.tracking.project_name, config=_flat_config(cfg))
        self.log = MetricsLog(out / "metrics.jsonl", acc, append=resumed is not None)
        self.stopper = SignalStop()
        self.eval_metrics: dict[str, float] = {}
        self.probe = None  # mlm_pretrain.probe.Probe, built at the first evaluation; False: none for this run

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Optimizer steps until the step limit, the time budget or a stop signal."""
        from tqdm.auto import tqdm

        acc, pcfg, state = self.accelerator, self.pcfg, self.state
        budget = pcfg.time_budget_minutes * 60 if pcfg.time_budget_minutes else None
        batches = self.data.batches(state.micro_batches)
        # In a terminal the bar redraws ten times a second; written to a file (nohup, a scheduler's log)
        # it adds a line a minute instead of one per step (an hour's log: ~60 lines, not ~19,000).
        interactive = sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=state.step, desc="pretrain", unit="step", dynamic_ncols=True,
                   mininterval=0.1 if interactive else 60.0, disable=not acc.is_main_process)
        self.window_start, evaluated_at = time.perf_counter(), -1
        self.module.train()
        while self.total_steps is None or state.step < self.total_steps:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(self.accumulation(state.step))]
            waited = time.perf_counter() - t0  # building the batches (or waiting for DataLoader workers)
            # One small all-reduce before the forward passes: the step's global normalisers, the main
            # process's clock (every process then sets the same learning rate) and any stop request.
            names = [count for _, count, _ in LOSS_TERMS]
            local = [loss_normalisers(b) for b in micro]
            *totals, self.clock.shared, stop = _reduce(acc, [sum(c[n] for c in local) for n in names] + [
                self.clock() if acc.is_main_process else 0.0,
                float(self.stopper.signum is not None or (budget is not None and self.clock() >= budget))])
            if stop:
                break
            stats = self._forward_backward(micro, dict(zip(names, totals)))
            state.micro_batches += len(micro)
            if not math.isfinite(stats["loss"]):
                self._skip_nonfinite()
                continue
            grad_norm = acc.clip_grad_norm_(self.module.parameters(),
                                            pcfg.max_grad_norm if pcfg.max_grad_norm > 0 else math.inf)
            self.optimizer.step()
            if not acc.optimizer_step_was_skipped:  # fp16 loss scaling skips steps whose gradients overflowed
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.nonfinite_in_row = 0
            if self.threads is not None:
                self.threads.step()  # fewer threads while other processes hold cores
            state.train_seconds += time.perf_counter() - t0
            stats["grad_norm"], stats["steps"], stats["data_seconds"] = float(grad_norm), 1.0, waited
            for k, v in stats.items():
                state.window[k] = state.window.get(k, 0.0) + v
            bar.update(1)
            if state.step % pcfg.logging_steps == 0 or state.step == self.total_steps:
                values = self._log_window()
                bar.set_postfix(loss=f"{values['train/loss']:.3f}", lr=f"{values['train/learning_rate']:.2e}",
                                tok_s=f"{values['train/tokens_per_second']:.0f}",
                                **({"left": _fmt_time(budget - self.clock.shared)} if budget else {}),
                                refresh=interactive)
            if pcfg.eval_steps and state.step % pcfg.eval_steps == 0:
                self.evaluate(bar)
                evaluated_at = state.step
            if pcfg.save_steps and state.step % pcfg.save_steps == 0:
                self.save()
        bar.close()
        if self.stopper.signum is None and evaluated_at != state.step:
            self.evaluate(None)

    def _forward_backward(self, micro: list[dict], counts: dict[str, float]) -> dict[str, float]:
        """Forward and backward over the micro-batches of one step; ``counts``: the step's global
        normalisers (:func:`~mlm_pretrain.model.loss_normalisers`). Returns the step's global sums."""
        acc = self.accelerator
        world = acc.num_processes
        local = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=acc.device)
        for k, batch in enumerate(micro):
            batch = {name: t.to(acc.device, non_blocking=True) for name, t in batch.items()}
            with contextlib.nullcontext() if k == len(micro) - 1 else acc.no_sync(self.module):
                with sdpa_backends(self.attention):  # the backward follows the forward's kernels
                    sums = self.module(**batch)
                loss = step_loss(sums, counts, self.pcfg.electra_disc_weight)
                # DDP averages gradients over processes; the normalisers are already global.
                acc.backward(loss * world)
            tokens = batch["attention_mask"].sum()
            zero = torch.zeros((), device=acc.device)
            values = {**{key: v.detach() for key, v in sums.items()}, "loss": loss.detach(), "tokens": tokens,
                      "token_positions": tokens * batch["input_ids"].size(1),
                      "sequences": torch.full_like(tokens, batch["input_ids"].size(0))}  # no host-to-device copy
            local += torch.stack([values.get(key, zero).double() for key in STAT_KEYS])
        stats = dict(zip(STAT_KEYS, _reduce(acc, local)))
        self.state.tokens += stats["tokens"]
        seq_len = stats["token_positions"] / max(stats["tokens"], 1.0)  # token-weighted padded length
        self.state.flops += pretraining_flops(self.model.config, stats["tokens"], seq_len, stats["mlm_count"],
                                              generator_config=self.generator.config if self.generator else None)
        return stats

    def _skip_nonfinite(self) -> None:
        state = self.state
        self.optimizer.zero_grad(set_to_none=True)
        state.nonfinite_in_row += 1
        state.nonfinite_total += 1
        logger.warning("non-finite loss at step %d: update skipped (%d in a row, %d in all)", state.step + 1,
                       state.nonfinite_in_row, state.nonfinite_total)
        if state.nonfinite_in_row >= self.pcfg.max_nonfinite_steps:
            raise TrainingDiverged(
                f"{state.nonfinite_in_row} optimizer steps in a row had a non-finite loss (at step {state.step + 1}): "
                "training diverged. Try a lower pretrain.learning_rate, a longer warmup (pretrain.warmup_ratio), "
                "gradient clipping (pretrain.max_grad_norm=1.0), or mixed_precision=bf16 instead of fp16 (or no); "
                "then run again: it resumes from the last checkpoint")

    # ------------------------------------------------------------------ logging, evaluation, checkpoints
    def _log_window(self) -> dict[str, float]:
        w, state, objective = self.state.window, self.state, self.cfg.data.objective
        now = time.perf_counter()
        seconds = max(now - self.window_start, 1e-9)
        values = {"train/loss": w["loss"] / w["steps"], **means(w, "train", objective),
                  "train/learning_rate": self.scheduler.get_last_lr()[0],
                  "train/grad_norm": w["grad_norm"] / w["steps"],
                  "train/batch_size": w["sequences"] / w["steps"],  # sequences per optimizer step, all processes
                  "train/tokens_per_second": w["tokens"] / seconds,
                  # the share of the window spent getting batches: high means the step waits on its input
                  "train/data_wait_fraction": w["data_seconds"] / seconds}
        if self.data.per_epoch:
            values["train/epoch"] = state.micro_batches / self.data.per_epoch
        values["train/nonfinite_steps"] = state.nonfinite_total
        values["train/threads"] = torch.get_num_threads()
        values["train/tokens_seen"] = state.tokens  # cumulative, all processes
        values["train/model_flops"] = state.flops   # cumulative model FLOPs (see mlm_pretrain.flops)
        self.log.log(state.step, values)
        state.window = {}
        self.window_start = now
        return values

    def evaluate(self, bar) -> None:
        if self.val_loader is None:
            return
        t0 = time.perf_counter()
        # compiled encoders run eager here: no recompilation for no_grad and other batch shapes
        with torch.compiler.set_stance("force_eager") if self.compiled else contextlib.nullcontext():
            self.eval_metrics = evaluate(self.accelerator, self.module, self.val_loader, self.cfg.data.objective,
                                         seed=self.cfg.seed)
            if self.unigram is not None:
                self.eval_metrics["eval/unigram_loss"] = self.unigram
            if self.accelerator.is_main_process:
                self.eval_metrics.update(self._probe())
        self.log.log(self.state.step, self.eval_metrics)
        self.state.eval_seconds += time.perf_counter() - t0
        if self.accelerator.is_main_process:
            m = self.eval_metrics
            shown = [f"{k[5:]} {v:.4g}" for k, v in m.items() if k.startswith("eval/") and k != "eval/unigram_loss"]
            if "probe/accuracy" in m:
                shown.append(f"probe accuracy {m['probe/accuracy']:.3f} (random init {m['probe/random_init_accuracy']:.3f}, "
                             f"TF-IDF {m['probe/tfidf_accuracy']:.3f})")
            reading = plateau_reading(m["eval/mlm_loss"], self.unigram)
            (bar.write if bar is not None else logger.info)(f"step {self.state.step}: " + ", ".join(shown)
                                                            + (f"; {reading}" if reading else ""))

    def _probe(self) -> dict[str, float]:
        """The downstream probe (mlm_pretrain/probe.py) on the encoder now; built at the first evaluation."""
        from accelerate.utils import DistributedType

        if not self.pcfg.probe_examples or self.probe is False:
            return {}
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            logger.info("no downstream probe under sharded training (the main process alone cannot run the encoder)")
            self.probe = False
            return {}
        if self.probe is None:
            self.probe = Probe.from_config(self.cfg, self.tokenizer, self.model.config) or False
            if self.probe is False:
                return {}
        return self.probe(self.accelerator.unwrap_model(self.module).model)

    def save(self) -> Path:
        """Checkpoint the full state (every process calls this); pushes it when ``hub.strategy=checkpoint``."""
        if self.saved_at == self.state.step:
            return self.ckpt_root / f"step-{self.state.step}"
        self.state.elapsed = self.clock()
        pusher = self.pusher
        payload = {"vocab_size": self.vocab_size, **self.inputs.stamp(), "batch_size": self.pcfg.batch_size,
                   "gradient_accumulation_steps": self.pcfg.gradient_accumulation_steps,
                   "num_processes": self.accelerator.num_processes, "loop": asdict(self.state)}
        path = save_checkpoint(self.accelerator, self.ckpt_root, self.state.step, payload, keep_last=self.pcfg.keep_last,
                               protect=pusher.is_pending if pusher is not None else (lambda p: False))
        self.saved_at = self.state.step
        if pusher is not None and self.cfg.hub.strategy == "checkpoint":  # ---- Hub call site
            pusher.submit(path)
        return path

    def _check_checkpoint(self, saved: dict) -> None:
        if saved.get("vocab_size") not in (None, self.vocab_size):
            raise PretrainError(f"the checkpoints in {self.ckpt_root} are of a model with a {saved['vocab_size']}-entry "
                                f"vocabulary, but the tokenizer has {self.vocab_size}; use the run's tokenizer, or "
                                "start a new run (another output_dir, or pretrain.resume=never)")
        if saved.get("tokenizer_hash") not in (None, self.inputs.tokenizer_hash):
            raise PretrainError(
                f"the checkpoints in {self.ckpt_root} were trained with another tokenizer than the one now in "
                f"{self.layout.tokenizer} (same {self.vocab_size} entries, other pieces or ids): it was trained again, e.g. "
                "because the corpus bytes changed, or the directory was deleted and trained again by another "
                "version of mlm_pretrain or tokenizers, whose ids differ. Resuming would feed the model ids it never "
                "learned. Start a new run (another output_dir, or pretrain.resume=never), or restore the tokenizer "
                "directory the checkpoints were trained with")
        if saved.get("data_key") not in (None, self.inputs.data_key):
            logger.warning("the prepared data changed since the checkpoints in %s were written (key %s, now %s: "
                           "the corpus files were edited, copied or touched); resuming goes on with the data as it is "
                           "now, so if the corpus bytes changed this run no longer replays the interrupted one "
                           "exactly; pretrain.resume=never starts over", self.ckpt_root, saved["data_key"],
                           self.inputs.data_key)

    def _restore(self, saved: dict) -> None:
        self.state = LoopState(**saved["loop"])
        self.clock.reset(self.state.elapsed)
        layout = (self.pcfg.batch_size, self.pcfg.gradient_accumulation_steps, self.accelerator.num_processes)
        was = (saved.get("batch_size"), saved.get("gradient_accumulation_steps"), saved.get("num_processes"))
        if was != layout:
            logger.warning("resuming with batch size / accumulation / processes %s instead of %s: training goes on, "
                           "but not on the same batches as an uninterrupted run", layout, was)

    def progress(self, step: int) -> float:
        """The share of the run done after ``step`` optimizer steps: of the time budget (on the clock shared
        by all processes) or of the steps, whichever is further; of the steps without a budget."""
        total = self.total_steps
        by_steps = step / total if total else 0.0
        if not self.pcfg.time_budget_minutes:
            return by_steps
        return max(self.clock.shared / (self.pcfg.time_budget_minutes * 60), by_steps)

    def accumulation(self, step: int) -> int:
        """Micro-batches in the optimizer step after ``step``: ``gradient_accumulation_steps``, or with
        ``batch_ramp`` one at the start, rising linearly to it at that share of the run. Every process
        computes the same count (the shared clock, the step)."""
        full, ramp = self.pcfg.gradient_accumulation_steps, self.pcfg.batch_ramp
        if ramp <= 0:
            return full
        return min(full, 1 + int((full - 1) * self.progress(step) / ramp + 1e-9))  # 1e-9: 3.0 is not 2.99..

    def _make_scheduler(self, optimizer):
        pcfg, total = self.pcfg, self.total_steps
        if not pcfg.time_budget_minutes:
            return make_scheduler(pcfg.lr_scheduler, optimizer, num_training_steps=total,
                                  num_warmup_steps=warmup_steps_for(total, pcfg.warmup_steps, pcfg.warmup_ratio))
        return make_progress_scheduler(pcfg.lr_scheduler, optimizer, self.progress, warmup_fraction=pcfg.warmup_ratio,
                                       warmup_steps=pcfg.warmup_steps)

    # ------------------------------------------------------------------ the end
    def finish(self, final: Path) -> Path:
        """Save the last checkpoint, export ``final/`` (+ plots, summary, Hub push); returns ``final``."""
        acc = self.accelerator
        summary = _throughput_summary(acc, self.state, self.precision)
        self.save()
        metrics = {**self.eval_metrics, **summary, "step": self.state.step, "completed": True,
                   "mixed_precision": self.precision, "mixed_precision_reason": self.precision_reason,
                   "attention_backend": self.attention_reason,
                   "compiled": self.compiled, "compile_reason": self.compile_reason,
                   "plateau": plateau_reading(self.eval_metrics.get("eval/mlm_loss", math.nan), self.unigram),
                   "eval_share_of_time": self.state.eval_seconds / max(self.state.eval_seconds + self.state.train_seconds, 1e-9),
                   **(self.threads.summary() if self.threads is not None else {}),
                   **(self.heap.summary() if self.heap is not None else {}),
                   "config_fingerprint": pretrain_fingerprint(self.cfg), **self.inputs.stamp()}
        state_dict = acc.get_state_dict(self.module)  # gathered from every process under FSDP / DeepSpeed
        if acc.is_main_process:
            try:
                _export(self.cfg, acc.unwrap_model(self.module), state_dict, self.tokenizer, final, metrics,
                        vocab=self.layout.tokenizer / "vocab.txt")
            except Exception as e:
                logger.exception("exporting %s failed", final)
                raise PretrainError(f"pretraining finished and its last checkpoint is saved in {self.ckpt_root}, but "
                                    f"exporting {final} failed ({type(e).__name__}: {e}). Run the same command again "
                                    "to finish: it resumes from that checkpoint and exports, without training "
                                    "again") from e
            if self.cfg.tracking.plots:
                plot_metrics(self.out / "metrics.jsonl", self.out, PLOTS)
            logger.info(summary["summary"])
        acc.wait_for_everyone()
        if self.pusher is not None:  # ---- Hub call site: the final model, then wait for every push
            self.pusher.submit(final)
            failures = self.pusher.wait()
            if failures:
                logger.warning("%d Hub push(es) failed: %s", len(failures), failures)
        return final

    def close(self, keep_group: bool = False) -> None:
        if getattr(self, "threads", None) is not None:
            self.threads.close()
        if getattr(self, "heap", None) is not None:
            self.heap.close()
        if hasattr(self, "log"):
            self.log.close()
        if hasattr(self, "accelerator"):
            end_accelerator(self.accelerator, keep_group=keep_group)


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
def _reduce(accelerator, values) -> list[float]:
    """Sum over processes (one all-reduce) of a list / tensor of numbers; returns floats."""
    t = torch.as_tensor(values, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t.tolist()


class _Clock:
    """Seconds of the run over all sessions; ``shared`` is the main process's reading of this step."""

    def __init__(self):
        self.reset(0.0)

    def reset(self, elapsed: float) -> None:
        self.base, self.start, self.shared = elapsed, time.monotonic(), elapsed

    def __call__(self) -> float:
        return self.base + time.monotonic() - self.start


def _total_steps(pcfg, per_epoch: Optional[int]) -> Optional[int]:
    """Optimizer steps of the run (None: only the time budget bounds it)."""
    ga = pcfg.gradient_accumulation_steps
    limits = []
    if pcfg.max_steps:
        limits.append(pcfg.max_steps)
    if pcfg.num_epochs:
        if per_epoch is None:
            raise PretrainError("pretrain.num_epochs needs cached data (a stream has no known length); with "
                                "data.streaming=true bound the run by pretrain.max_steps or pretrain.time_budget_minutes")
        limits.append(max(1, int(pcfg.num_epochs * per_epoch) // ga))
    if not limits and not pcfg.time_budget_minutes:
        if per_epoch is None:
            raise PretrainError("with data.streaming=true set pretrain.max_steps or pretrain.time_budget_minutes "
                                "(a stream has no epoch length)")
        logger.info("no pretrain.max_steps / num_epochs / time_budget_minutes: training for one epoch")
        limits.append(max(1, per_epoch // ga))
    return min(limits) if limits else None


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


#: Runs shorter than this skip measuring the matmul peak (it takes seconds) and report no MFU.
PEAK_MIN_TRAIN_SECONDS = 30.0


def _throughput_summary(accelerator, state: LoopState, mixed_precision: str) -> dict[str, Any]:
    """Tokens/s and model FLOPs utilisation against this machine's measured matmul peak."""
    secs = max(state.train_seconds, 1e-9)
    precision = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[mixed_precision]
    peak = 0.0
    if accelerator.is_main_process and state.train_seconds >= PEAK_MIN_TRAIN_SECONDS:
        peak = measure_matmul_peak(precision, str(accelerator.device), seconds=0.5) * accelerator.num_processes
    tokens_s, flops_s = state.tokens / secs, state.flops / secs
    out = {"train/tokens_per_second": tokens_s, "train/model_tflops_per_second": flops_s / 1e12,
           "train/steps": state.step, "train/tokens": state.tokens, "train/seconds": state.train_seconds,
           "matmul_peak_tflops": peak / 1e12, "mfu": flops_s / peak if peak else None}
    mfu_text = f"{100 * out['mfu']:.1f}% MFU" if out["mfu"] is not None else "MFU n/a (run too short to measure the peak)"
    peak_text = (f" of the measured {precision} matmul peak ({peak / 1e9:,.1f} GFLOP/s, "
                 f"{accelerator.num_processes} process(es))" if peak else "")
    out["summary"] = (f"pretrained {state.step} steps, {state.tokens:,.0f} tokens in {state.train_seconds:.1f} s: "
                      f"{tokens_s:,.0f} tokens/s, {flops_s / 1e9:,.1f} model GFLOP/s = {mfu_text}{peak_text}")
    return out


def _export(cfg: Config, module, state_dict: dict, tokenizer, final: Path, metrics: dict, vocab: Path) -> None:
    """``final/`` (see :func:`mlm_pretrain.artifacts.write_final`) from the state dict gathered on every
    process (``accelerator.get_state_dict``: safe under FSDP / DeepSpeed). ELECTRA: the discriminator
    there, the generator (with the tokenizer, for ``pipeline("fill-mask")``) in ``final/generator/``.
    ``vocab``: the run tokenizer's ``vocab.txt``, copied beside the model when it exists."""
    import shutil

    def save(tmp: Path) -> None:
        # the tokenizer says the window the model was trained at (a long phase: longer than the tokenizer's)
        tokenizer.model_max_length = max(tokenizer.model_max_length, cfg.data.max_seq_length)
        save_model(tmp, module.model, state_dict, tokenizer, strip_prefix="model.", only_prefixed=True)
        if module.generator is not None:
            save_model(tmp / GENERATOR_DIR, module.generator, state_dict, tokenizer, strip_prefix="generator.",
                       only_prefixed=True)
        if vocab.is_file():  # the plain-BERT vocabulary file, for tools that read it
            shutil.copy2(vocab, tmp / "vocab.txt")

    write_final(final, cfg, kind="pretrain", metrics=metrics, save=save, card_extra={"throughput": metrics.get("summary")})
    logger.info("pretrained model -> %s", final)
