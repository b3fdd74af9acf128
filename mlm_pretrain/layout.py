"""Where a run's files are and what stamps its inputs, resolved once from the config.

    layout = RunLayout.of(cfg)
    <output_dir>/                    layout.root
      config.yaml                    layout.config_yaml
      tokenizer/                     layout.tokenizer      (tokenizer.pretrained when set; else model.init_from's own)
      data/<key>/                    layout.data_root      (data.cache_dir when set) / inputs.data_key
      pretrain/                      layout.pretrain       (metrics.jsonl, plots, config.yaml)
      pretrain/checkpoints/step-N/   layout.checkpoints
      pretrain/final/                layout.final          (the run's encoder: the last phase's final/)
      pretrain/long-<length>/        layout.long_phase     (pretrain.long_phase: a phase's folders, like pretrain/)
      finetune/<task>/               layout.finetune_task(task)   (<task>-random-init: the baseline;
                                                                   <task>-start: model.init_from as it is)
      report.md                      layout.report

``tokenizer.pretrained`` may also be a Hub id: its tokenizer files are downloaded once
(:func:`mlm_pretrain.sources.local_folder`) and the layout points at that snapshot. Without it,
``model.init_from`` (a checkpoint from outside the run) brings its own tokenizer: the model's embeddings
are indexed by its ids, so the layout points at the checkpoint's folder (:func:`run_tokenizer`). The user paths
among them (``tokenizer.pretrained``, ``data.cache_dir``) go through
:func:`mlm_pretrain.config.resolve_path` like every other user path: as given when they exist or are
absolute, else under the project checkout when there, else as given (relative to the working directory,
where ``prepare`` then creates a new cache). Every stage and the model card read the same answer.

What the config alone does not pin (the tokenizer's content hash, the corpus fingerprint, the prepared
data's key) is :mod:`mlm_pretrain.identity`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from .config import Config, ConfigError, resolve_path
from .sources import local_folder

#: ``run`` fine-tunes the same architecture from random weights as the task ``<task>`` + this.
RANDOM_INIT_SUFFIX = "-random-init"
#: ``run`` with ``model.init_from`` fine-tunes the starting encoder as it is as the task ``<task>`` + this.
START_SUFFIX = "-start"


@dataclass(frozen=True)
class RunLayout:
    """The run's folders (see the module docstring); build it with :meth:`of`."""

    root: Path          # output_dir
    config_yaml: Path   # the run's resolved config
    tokenizer: Path     # tokenizer.pretrained (resolved) or <root>/tokenizer
    data_root: Path     # data.cache_dir (resolved) or <root>/data: prepared data lives in <data_root>/<key>
    pretrain: Path      # the pretraining stage's folder (metrics.jsonl, plots, its config.yaml)
    checkpoints: Path   # pretrain/checkpoints/step-N
    final: Path         # the run's exported encoder: pretrain/final, or the long phase's final/
    report: Path        # what `run` did
    long_phase: Optional[Path] = None  # pretrain/long-<length> with pretrain.long_phase, else None

    @classmethod
    def of(cls, cfg: Config, root: Optional[Path] = None) -> "RunLayout":
        """The layout of ``cfg``'s run; ``root`` replaces ``output_dir`` (a run directory found on disk)."""
        root = Path(root) if root is not None else cfg.run_dir
        pretrain = root / "pretrain"
        long = cfg.pretrain.long_phase.max_seq_length
        long_phase = pretrain / f"long-{long}" if long else None
        return cls(root=root, config_yaml=root / "config.yaml",
                   tokenizer=run_tokenizer(cfg, root),
                   data_root=resolve_path(cfg.data.cache_dir) if cfg.data.cache_dir else root / "data",
                   pretrain=pretrain, checkpoints=pretrain / "checkpoints", final=(long_phase or pretrain) / "final",
                   report=root / "report.md", long_phase=long_phase)

    def phase(self, folder: Path) -> "RunLayout":
        """This layout with one pretraining phase's folders: ``folder`` (its metrics and config), its
        ``checkpoints/`` and ``final/``."""
        return replace(self, pretrain=folder, checkpoints=folder / "checkpoints", final=folder / "final",
                       long_phase=None)

    def finetune_task(self, task_name: str) -> Path:
        """finetune/<task>: the task's seeds, summary and final/ classifier."""
        return self.root / "finetune" / task_name


def run_tokenizer(cfg: Config, root: Path) -> Path:
    """The run's tokenizer folder: ``tokenizer.pretrained`` when set; else, with ``model.init_from`` outside
    the run (another run's ``final/``, a public checkpoint), that checkpoint's folder (its own tokenizer);
    else ``<root>/tokenizer`` (trained by the run; a checkpoint of this very run, as the long phase starts
    from, was trained with it)."""
    if cfg.tokenizer.pretrained:
        return local_folder(cfg.tokenizer.pretrained, "tokenizer.pretrained", "tokenizer")
    if cfg.model.init_from:
        folder = local_folder(cfg.model.init_from, "model.init_from")
        run = Path(root).resolve()
        if run != folder.resolve() and run not in folder.resolve().parents:
            if cfg.tokenizer.type != "wordpiece":
                raise ConfigError(f"tokenizer.type={cfg.tokenizer.type} with model.init_from={cfg.model.init_from}: "
                                  "continued pretraining uses the checkpoint's own tokenizer (its embeddings are indexed "
                                  "by its ids), so no tokenizer is trained; drop tokenizer.type, or drop model.init_from "
                                  "to train from scratch with a new tokenizer")
            return folder
    return root / "tokenizer"
