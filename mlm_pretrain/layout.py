"""Where a run's files are and what stamps its inputs, resolved once from the config.

    layout = RunLayout.of(cfg)
    <output_dir>/                    layout.root
      config.yaml                    layout.config_yaml
      tokenizer/                     layout.tokenizer      (tokenizer.pretrained when set)
      data/<key>/                    layout.data_root      (data.cache_dir when set) / inputs.data_key
      pretrain/                      layout.pretrain       (metrics.jsonl, plots, config.yaml)
      pretrain/checkpoints/step-N/   layout.checkpoints
      pretrain/final/                layout.final
      finetune/<task>/               layout.finetune_task(task)   (<task>-random-init: the baseline)
      report.md                      layout.report

``tokenizer.pretrained`` may also be a Hub id: its tokenizer files are downloaded once
(:func:`mlm_pretrain.sources.local_folder`) and the layout points at that snapshot. The user paths
among them (``tokenizer.pretrained``, ``data.cache_dir``) go through
:func:`mlm_pretrain.config.resolve_path` like every other user path: as given when they exist or are
absolute, else under the project checkout when there, else as given (relative to the working directory,
where ``prepare`` then creates a new cache). Every stage and the model card read the same answer.

What the config alone does not pin (the tokenizer's content hash, the corpus fingerprint, the prepared
data's key) is :mod:`mlm_pretrain.identity`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import Config, resolve_path
from .sources import local_folder

#: ``run`` fine-tunes the same architecture from random weights as the task ``<task>`` + this.
RANDOM_INIT_SUFFIX = "-random-init"


@dataclass(frozen=True)
class RunLayout:
    """The run's folders (see the module docstring); build it with :meth:`of`."""

    root: Path          # output_dir
    config_yaml: Path   # the run's resolved config
    tokenizer: Path     # tokenizer.pretrained (resolved) or <root>/tokenizer
    data_root: Path     # data.cache_dir (resolved) or <root>/data: prepared data lives in <data_root>/<key>
    pretrain: Path      # the pretraining stage's folder (metrics.jsonl, plots, its config.yaml)
    checkpoints: Path   # pretrain/checkpoints/step-N
    final: Path         # pretrain/final: the exported encoder
    report: Path        # what `run` did

    @classmethod
    def of(cls, cfg: Config, root: Optional[Path] = None) -> "RunLayout":
        """The layout of ``cfg``'s run; ``root`` replaces ``output_dir`` (a run directory found on disk)."""
        root = Path(root) if root is not None else cfg.run_dir
        pretrain = root / "pretrain"
        return cls(root=root, config_yaml=root / "config.yaml",
                   tokenizer=(local_folder(cfg.tokenizer.pretrained, "tokenizer.pretrained", "tokenizer")
                              if cfg.tokenizer.pretrained else root / "tokenizer"),
                   data_root=resolve_path(cfg.data.cache_dir) if cfg.data.cache_dir else root / "data",
                   pretrain=pretrain, checkpoints=pretrain / "checkpoints", final=pretrain / "final",
                   report=root / "report.md")

    def finetune_task(self, task_name: str) -> Path:
        """finetune/<task>: the task's seeds, summary and final/ classifier."""
        return self.root / "finetune" / task_name
