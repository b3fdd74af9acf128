"""Stage 6: fine-tune one encoder on a suite of tasks and write one table, beside its baselines.

    mlm-pretrain suite --suite glue finetune.model=runs/cpu-1h/pretrain/final       # the five GLUE tasks, Hub data
    mlm-pretrain suite --suite glue --tasks cola,rte finetune.model=bert-base-uncased
    mlm-pretrain suite --suite reviews --data ../shared/data finetune.model=DIR      # local files instead of the Hub
    mlm-pretrain suite --suite my_suite.yaml finetune.model=DIR                     # your own tasks

A suite is data, not code: a YAML file (packaged: ``mlm_pretrain/suites/*.yaml``) with one fine-tuning
setting for every task (``finetune:``, as Cramming's GLUE-sane uses one hyperparameter set), the tasks
(each a ``finetune:`` section: Hub dataset or files, columns, the metric that picks the best checkpoint,
and the metrics its score averages), optionally how to read each task from local files under
``--data`` (``local:``), and published figures to print beside the results (``published:``).

Each task is the fine-tuning stage as it is (:func:`mlm_pretrain.finetune.finetune`: several seeds,
median and spread, the best checkpoint on the dev split, ``evaluate`` metrics), then the same
architecture from random weights (same rows, seeds and settings) and TF-IDF on the same rows
(:func:`mlm_pretrain.probe.tfidf_scores`). A task's score is the mean of its ``score`` metrics x 100,
per seed, then the median over seeds (GLUE's convention: Matthews correlation for CoLA, the mean of F1
and accuracy for MRPC, of Pearson and Spearman for STS-B); the suite's score is the mean of its tasks'.
Settings: the recipe and ``key=value`` overrides < the suite's ``finetune:`` < the task's < the command's
``key=value`` overrides again (so ``finetune.learning_rate=1e-4`` on the command line wins everywhere).

Output, under ``<output_dir>/suite/<suite>/``::

    finetune/<task>/                 each task's seeds, summary.json and final/ (and <task>-random-init/)
    results.json                     every figure of the table, the settings, the time per task
    results.md, results.png          the table (and a bar chart of it)

A ``split: test`` task that trains exactly as an earlier task of the suite (only its ``test_file`` differs:
the reviews suite's cross-domain tasks) is not trained again: that task's seeds are scored on its file.
An interrupted suite resumes: finished task-seeds are reused (the fine-tuning stage's own fingerprints),
and so are finished TF-IDF scores. ``--tasks`` runs a subset; the table still shows the suite's other
tasks finished earlier with the same settings (each task's row is kept in ``finetune/<task>/``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml

from .config import Config, ConfigError, parse_override
from .finetune import finetune
from .finetune_data import load_splits
from .identity import finetune_fingerprint
from .layout import RANDOM_INIT_SUFFIX, RunLayout
from .model import load_model_tokenizer, model_source
from .probe import tfidf_scores
from .textio import atomic_write_json

logger = logging.getLogger(__name__)

SUITE_DIR = Path(__file__).resolve().parent / "suites"
BASELINES = ("random", "tfidf")
#: The finetune keys a task sets, reset before each task so that nothing of the recipe's own task leaks in.
TASK_DEFAULTS = {"train_file": None, "validation_file": None, "test_file": None, "hub_dataset": None,
                 "hub_config": None, "text_column": "text", "text_pair_column": None, "label_column": "label",
                 "label_names": [], "problem_type": "auto", "csv_quoting": "auto", "metric_for_best": "auto",
                 "validation_fraction": 0.1}


class SuiteError(ConfigError):
    """A suite file that cannot be run; the message names the key or task and the fix."""


@dataclass(frozen=True)
class SuiteTask:
    name: str
    finetune: dict                 # finetune.* keys of the task
    score: tuple[str, ...]         # metrics averaged (x 100) into the task's score
    local: dict = field(default_factory=dict)   # finetune.* keys reading it from files under --data
    split: str = "validation"      # the split the score is read on (test: a test_file, e.g. another domain)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    finetune: dict
    tasks: tuple[SuiteTask, ...]
    published: dict = field(default_factory=dict)
    path: Optional[Path] = None

    def task(self, name: str) -> SuiteTask:
        for t in self.tasks:
            if t.name == name:
                return t
        raise SuiteError(f"suite {self.name!r} has no task {name!r}; its tasks: {', '.join(t.name for t in self.tasks)}")


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def load_suite(name_or_file: str) -> Suite:
    """A packaged suite (``glue``, ``reviews``) or a suite YAML file, checked: every task's settings must
    make a valid config (unknown keys and wrong types fail here, naming the task)."""
    path = Path(name_or_file)
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        path = SUITE_DIR / f"{name_or_file}.yaml"
        if not path.is_file():
            raise SuiteError(f"no packaged suite named {name_or_file!r}; choose one of {', '.join(suite_names())} "
                             "or pass a suite YAML file")
    elif not path.is_file():
        raise SuiteError(f"suite file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite must be a mapping (name, description, finetune, tasks, published)")
    unknown = set(data) - {"name", "description", "finetune", "tasks", "published"}
    if unknown:
        raise SuiteError(f"{path}: unknown suite key(s) {sorted(unknown)}; a suite has name, description, "
                         "finetune, tasks and published")
    if not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise SuiteError(f"{path}: a suite needs `tasks:`, a mapping of task name -> settings")
    tasks = []
    for name, spec in data["tasks"].items():
        spec = dict(spec or {})
        unknown = set(spec) - {"finetune", "score", "local", "split"}
        if unknown:
            raise SuiteError(f"{path}: task {name!r}: unknown key(s) {sorted(unknown)}; a task has finetune, score, "
                             "local and split")
        if not spec.get("score"):
            raise SuiteError(f"{path}: task {name!r} needs `score:`, the metrics its score averages (e.g. [accuracy])")
        tasks.append(SuiteTask(name=str(name), finetune=dict(spec.get("finetune") or {}),
                               score=tuple(spec["score"]), local=dict(spec.get("local") or {}),
                               split=spec.get("split", "validation")))
    suite = Suite(name=str(data.get("name") or path.stem), description=str(data.get("description") or ""),
                  finetune=dict(data.get("finetune") or {}), tasks=tuple(tasks),
                  published=dict(data.get("published") or {}), path=path)
    for task in suite.tasks:  # every task's settings as a config: a typo fails before any training
        try:
            task_config(Config(), suite, task)
            if task.local:
                task_config(Config(), suite, task, data=Path("."))
        except ConfigError as e:
            raise SuiteError(f"{path}: task {task.name!r}: {e}") from None
    return suite


def task_config(cfg: Config, suite: Suite, task: SuiteTask, *, data: Optional[Path] = None,
                overrides: Sequence[str] = (), out: Optional[Path] = None) -> Config:
    """``cfg`` with the suite's fine-tuning settings, then the task's (its ``local:`` files under ``data``
    when given), then ``overrides`` again; writing under ``out``."""
    changes: dict[str, Any] = {f"finetune.{k}": v for k, v in {**TASK_DEFAULTS, **suite.finetune}.items()}
    changes.update({f"finetune.{k}": v for k, v in task.finetune.items()})
    changes["finetune.task_name"] = task.name
    if data is not None:
        if not task.local:
            raise SuiteError(f"task {task.name!r} of suite {suite.name!r} names no local files (`local:`); run it "
                             "without --data (it reads its Hub dataset)")
        for k, v in task.local.items():
            is_file = k.endswith("_file") and v
            changes[f"finetune.{k}"] = str(Path(data) / v) if is_file else v
        changes.update({"finetune.hub_dataset": None, "finetune.hub_config": None})
    changes.update(dict(parse_override(o) for o in overrides))
    if out is not None:  # after the overrides: the command's output_dir is the suite folder's parent
        changes["output_dir"] = str(out)
    return cfg.replace(**changes)


@dataclass
class TaskResult:
    task: str
    scores: dict = field(default_factory=dict)      # encoder / random init / tfidf -> score (median) x 100
    spread: dict = field(default_factory=dict)      # encoder / random init -> std of the per-seed scores x 100
    metrics: dict = field(default_factory=dict)     # encoder / random init / tfidf -> {metric: median}
    seconds: dict = field(default_factory=dict)     # encoder / random init -> training seconds, all seeds
    examples: dict = field(default_factory=dict)    # split -> rows
    lengths: dict = field(default_factory=dict)     # split -> rows longer than the window, and what was done
    trained_as: Optional[str] = None                # the task whose classifiers it scores (the same training)


def task_score(metrics: dict, score: Sequence[str]) -> float:
    """The mean of the ``score`` metrics x 100 (GLUE reports Matthews correlation and correlations x 100)."""
    missing = [m for m in score if m not in metrics]
    if missing:
        raise SuiteError(f"score metric(s) {missing} not among the task's metrics ({', '.join(metrics)})")
    return float(np.mean([metrics[m] for m in score]) * 100)


def _seed_scores(summary: dict, task: SuiteTask) -> tuple[float, float, dict]:
    """(median, std) of the per-seed scores, and the median of each metric, on ``task.split``."""
    runs = [r for r in summary["runs"] if task.split in r]
    if not runs:
        raise SuiteError(f"task {task.name!r}: the fine-tuning summary has no {task.split!r} results (set a "
                         f"{'test_file' if task.split == 'test' else 'validation split'} for it)")
    per_seed = [task_score(r[task.split], task.score) for r in runs]
    medians = {k: v["median"] for k, v in summary[task.split].items()}
    return float(np.median(per_seed)), float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0, medians


def run_task(cfg: Config, suite: Suite, task: SuiteTask, out: Path, *, data: Optional[Path] = None,
             overrides: Sequence[str] = (), baselines: Sequence[str] = BASELINES) -> TaskResult:
    """The encoder fine-tuned on ``task`` (and its baselines); finished seeds and scores are reused."""
    tcfg = task_config(cfg, suite, task, data=data, overrides=overrides, out=out)
    result = TaskResult(task.name)
    trainer = _trained_as(cfg, suite, task, tcfg, data=data, overrides=overrides, out=out)
    trained = {}  # side -> the config that trains its classifiers, when another task's
    if trainer is not None:
        logger.info("task %s trains as task %s (the same rows and settings; only the scored file differs): "
                    "its classifiers are %s's, scored on %s's %s rows", task.name, trainer.name, trainer.name,
                    task.name, task.split)
        result.trained_as = trainer.name
        trained = dict(_sides(task_config(cfg, suite, trainer, data=data, overrides=overrides, out=out), trainer,
                              baselines))
    for side, side_cfg in _sides(tcfg, task, baselines):
        if side in trained:
            summary = _score_trained(trained[side], side_cfg, task.split)
        else:
            summary = json.loads((finetune(side_cfg).parent / "summary.json").read_text())
        result.scores[side], result.spread[side], result.metrics[side] = _seed_scores(summary, task)
        result.seconds[side] = round(sum(r.get("train_seconds", 0.0) for r in summary["runs"]), 3)
        result.examples, result.lengths = summary.get("examples", {}), summary.get("lengths", {})
    if "tfidf" in baselines:
        cached = out / "finetune" / task.name / "tfidf.json"
        # the task's rows (settings, files or Hub commit, seed) and the split scored
        fingerprint = finetune_fingerprint(tcfg, "tfidf") + "/" + task.split
        saved = json.loads(cached.read_text()) if cached.is_file() else {}
        if saved.get("fingerprint") != fingerprint:
            tokenizer = load_model_tokenizer(model_source(tcfg), tcfg)
            saved = {"fingerprint": fingerprint, "metrics": tfidf_scores(tcfg, tokenizer, task.split)}
            atomic_write_json(cached, saved)
        result.metrics["tfidf"] = saved["metrics"]
        result.scores["tfidf"] = task_score(saved["metrics"], task.score)
    atomic_write_json(out / "finetune" / task.name / RESULT_FILE,
                      {"fingerprint": _task_fingerprint(tcfg, baselines), "result": asdict(result)})
    return result


def _sides(tcfg: Config, task: SuiteTask, baselines: Sequence[str]) -> list[tuple[str, Config]]:
    """The fine-tuned sides of a task: the encoder, and random initialisation when asked for."""
    sides = [("encoder", tcfg)]
    if "random" in baselines:
        sides.append(("random init", tcfg.replace(**{"finetune.init": "random",
                                                      "finetune.task_name": task.name + RANDOM_INIT_SUFFIX})))
    return sides


def _training_key(tcfg: Config) -> str:
    """What a task's classifiers depend on: its fine-tuning fingerprint without its name and scored file."""
    return finetune_fingerprint(tcfg.replace(**{"finetune.task_name": "-", "finetune.test_file": None}),
                                tcfg.finetune.model)


def _trained_as(cfg: Config, suite: Suite, task: SuiteTask, tcfg: Config, *, data, overrides,
                out) -> Optional[SuiteTask]:
    """The suite's first task that trains exactly as ``task`` (whose config is ``tcfg``) does: the same rows,
    settings and seeds, only the file it is scored on differs; None when that is ``task`` itself. The reviews
    suite's cross-domain tasks train as the in-domain task of their source domain: their classifiers are
    that task's, scored on the other domain's test file, so the suite trains four times, not eight."""
    if task.split != "test":
        return None
    key = _training_key(tcfg)
    for other in suite.tasks:
        if other is task:
            return None
        if other.split == "test" and _training_key(
                task_config(cfg, suite, other, data=data, overrides=overrides, out=out)) == key:
            return other
    return None


def _score_trained(trainer_cfg: Config, cfg: Config, split: str) -> dict:
    """``trainer_cfg``'s fine-tuning summary with each seed's best classifier scored on ``cfg``'s ``split``
    instead (its seeds are trained first when they are not yet: :func:`finetune` reuses finished ones)."""
    from transformers import AutoModelForSequenceClassification

    from .finetune_data import column, prepare_task
    from .predict import predict_logits, score

    trained = finetune(trainer_cfg).parent
    summary = json.loads((trained / "summary.json").read_text())
    task = None
    for run in summary["runs"]:
        best = trained / f"seed-{run['seed']}" / "best"
        tokenizer = load_model_tokenizer(str(best), cfg)
        if task is None:  # the rows as this task's settings read them (windows, lengths), once
            task = prepare_task(cfg, tokenizer)
            if split not in task.encoded:
                raise SuiteError(f"task {cfg.finetune.task_name!r} has no {split} split to score")
        model = AutoModelForSequenceClassification.from_pretrained(str(best))
        logits = predict_logits(model, tokenizer, task.encoded[split], cfg.finetune)
        run[split] = score(task.spec, logits, torch.as_tensor(column(task.encoded[split], "labels")))
        run["train_seconds"] = 0.0  # trained (and counted) as the other task
    runs = summary["runs"]
    summary[split] = {k: {"median": float(np.median([r[split][k] for r in runs]))} for k in runs[0][split]}
    summary.update(lengths=task.lengths, examples={s: len(d) for s, d in task.encoded.items()})
    return summary


#: Each task's row of the table, kept beside its seeds: a later run of a subset (``--tasks``) still
#: reports the tasks finished earlier with the same settings.
RESULT_FILE = "suite_result.json"


def _task_fingerprint(tcfg: Config, baselines: Sequence[str]) -> str:
    return finetune_fingerprint(tcfg, tcfg.finetune.model) + "/" + ",".join(sorted(baselines))


def _earlier_result(cfg: Config, suite: Suite, task: SuiteTask, out: Path, *, data, overrides,
                    baselines) -> Optional[TaskResult]:
    """``task``'s row from an earlier run of this suite with the same settings, or None."""
    path = out / "finetune" / task.name / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    tcfg = task_config(cfg, suite, task, data=data, overrides=overrides, out=out)
    return TaskResult(**saved["result"]) if saved.get("fingerprint") == _task_fingerprint(tcfg, baselines) else None


def check_tasks(cfg: Config, suite: Suite, tasks: Sequence[SuiteTask], *, data: Optional[Path] = None,
                overrides: Sequence[str] = (), data_only: bool = False) -> None:
    """Every task's settings and source, before any training: local files where ``data`` is given, and the
    encoder (``data_only``: the Hub datasets and their columns instead, for a run whose encoder is not
    trained yet)."""
    for task in tasks:
        tcfg = task_config(cfg, suite, task, data=data, overrides=overrides)
        if not (tcfg.finetune.hub_dataset or tcfg.finetune.train_file):
            raise SuiteError(f"task {task.name!r} of suite {suite.name!r} reads local files only: pass --data DIR, "
                             f"the folder its `local:` paths are under (e.g. {next(iter(task.local.values()), '')})")
        if data_only:
            load_splits(tcfg)
        else:
            model_source(tcfg)


def run_suite(cfg: Config, suite: Suite | str, *, tasks: Optional[Sequence[str]] = None, data: Optional[Path] = None,
              overrides: Sequence[str] = (), baselines: Sequence[str] = BASELINES) -> Path:
    """Stage function: every task of ``suite`` (or ``tasks``), then ``results.json``, ``results.md`` and
    ``results.png`` under ``<output_dir>/suite/<suite>/``; returns that folder."""
    suite = load_suite(suite) if isinstance(suite, str) else suite
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise SuiteError(f"unknown baseline(s) {unknown}; choose among {', '.join(BASELINES)}")
    chosen = [suite.task(t) for t in tasks] if tasks else list(suite.tasks)
    out = Path(cfg.output_dir) / "suite" / suite.name
    check_tasks(cfg, suite, chosen, data=data, overrides=overrides)
    results, seconds = [], {}
    for task in suite.tasks:  # in the suite's order; tasks not asked for: their earlier row, if any
        if task not in chosen:
            earlier = _earlier_result(cfg, suite, task, out, data=data, overrides=overrides, baselines=baselines)
            results += [earlier] if earlier is not None else []
            continue
        t0 = time.perf_counter()
        logger.info("=== suite %s: task %s ===", suite.name, task.name)
        results.append(run_task(cfg, suite, task, out, data=data, overrides=overrides, baselines=baselines))
        seconds[task.name] = round(time.perf_counter() - t0, 1)
    first = task_config(cfg, suite, chosen[0], data=data, overrides=overrides)
    model = first.finetune.model or str(RunLayout.of(cfg).final)
    if first.finetune.init == "random":
        hidden = f", hidden {first.model.hidden_size}" if first.model.hidden_size else ""
        model = f"random init ({first.model.architecture} {first.model.preset}{hidden})"
    report = suite_report(suite, results, model=model,
                          settings=task_config(cfg, suite, chosen[0], overrides=overrides).finetune, data=data)
    atomic_write_json(out / "results.json", {**report, "wall_seconds": seconds})
    (out / "results.md").write_text(format_table(report), encoding="utf-8")
    if cfg.tracking.plots:
        plot_results(report, out / "results.png")
    print(format_table(report))
    return out


def suite_report(suite: Suite, results: list[TaskResult], *, model: str, settings, data: Optional[Path]) -> dict:
    """Everything the table shows, as JSON: per task and side the score, spread, metrics and time, the
    suite means, and the published figures (for the tasks run)."""
    names = [r.task for r in results]
    sides = [s for s in ("encoder", "random init", "tfidf") if all(s in r.scores for r in results)]
    means = {s: float(np.mean([r.scores[s] for r in results])) for s in sides}
    published = {}
    for label, figures in (suite.published.get("models") or {}).items():
        cells = {t: figures.get(t) for t in names}
        if all(v is not None for v in cells.values()):
            cells["mean"] = float(np.mean([np.mean(v) if isinstance(v, list) else v for v in cells.values()]))
        published[label] = cells
    task_meta = {t.name: {"score": list(t.score), "split": t.split} for t in suite.tasks if t.name in names}
    return {"suite": suite.name, "description": suite.description, "model": model,
            "data": str(data) if data else "Hub datasets named in the suite",
            "settings": {k: getattr(settings, k) for k in ("learning_rate", "num_epochs", "batch_size", "max_length",
                                                           "seeds", "max_train_examples", "embedding_learning_rate",
                                                           "long_documents")},
            "tasks": {r.task: {"scores": r.scores, "spread": r.spread, "metrics": r.metrics, "train_seconds": r.seconds,
                               "examples": r.examples, "lengths": r.lengths, "trained_as": r.trained_as,
                               **task_meta[r.task]} for r in results},
            "means": means, "published": published,
            "published_source": suite.published.get("source", "")}


def format_table(report: dict) -> str:
    """The suite's markdown table: one column per task, one row per side (median of seeds ± spread)."""
    tasks, s = list(report["tasks"]), report["settings"]
    head = ["", *tasks, "mean"]
    rows = []
    for side in ("encoder", "random init", "tfidf"):
        if side not in report["means"]:
            continue
        cells = []
        for t in tasks:
            r = report["tasks"][t]
            spread = r["spread"].get(side)
            cells.append(f"{r['scores'][side]:.1f}" + (f" ± {spread:.1f}" if spread is not None else ""))
        label = {"encoder": f"`{report['model']}`", "random init": "same architecture, random init",
                 "tfidf": "TF-IDF + linear model"}[side]
        rows.append([label, *cells, f"{report['means'][side]:.1f}"])
    for label, cells in report["published"].items():
        fmt = lambda v: "-" if v is None else ("/".join(f"{x:.1f}" for x in v) if isinstance(v, list) else f"{v:.1f}")  # noqa: E731
        rows.append([f"{label} (published, test set)", *[fmt(cells.get(t)) for t in tasks], fmt(cells.get("mean"))])
    metrics_row = ["score", *[" + ".join(report["tasks"][t]["score"]) + f" ({report['tasks'][t]['split']})"
                              for t in tasks], ""]
    time_row = ["fine-tuning seconds (encoder / random)",
                *[f"trained as {report['tasks'][t]['trained_as']}" if report["tasks"][t].get("trained_as") else
                  " / ".join(f"{report['tasks'][t]['train_seconds'].get(s, 0):.1f}" for s in ("encoder", "random init")
                             if s in report["tasks"][t]["train_seconds"]) for t in tasks], ""]
    rows_row = ["train rows", *[str(report["tasks"][t]["examples"].get("train", "?")) for t in tasks], ""]
    long_row = [f"rows longer than {s['max_length']} tokens (train / scored)",
                *[_longer(report["tasks"][t]) for t in tasks], ""]
    lines = [f"### Suite `{report['suite']}`: {report['description']}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in [*rows, metrics_row, rows_row, long_row, time_row]]
    lines += ["", f"Median over seeds {', '.join(map(str, s['seeds']))} ± their standard deviation; "
                  f"lr {s['learning_rate']:g}, "
                  f"{s['num_epochs']:g} epochs, batch {s['batch_size']}, max length {s['max_length']}"
                  + (" (longer rows cut to it)" if s.get("long_documents", "truncate") == "truncate" else
                     " (longer rows read whole as overlapping windows, their logits pooled)")
                  + (f", at most {s['max_train_examples']:,} training rows per task" if s["max_train_examples"] else "")
                  + f". Data: {report['data']}."]
    if report["published"]:
        lines.append(f"Published rows: {report['published_source']} (another protocol: test sets, a grid of "
                     "settings; MRPC and STS-B show both figures); not comparable figure for figure.")
    return "\n".join(lines) + "\n"


def _longer(task: dict) -> str:
    """``train / scored split`` counts of rows longer than the window (percent), '-' when not recorded."""
    cells = []
    for split in ("train", task["split"]):
        x = task.get("lengths", {}).get(split)
        cells.append("-" if not x else f"{x['longer_than_window']:,} ({100 * x['longer_than_window'] / max(x['rows'], 1):.0f}%)")
    return " / ".join(cells)


def plot_results(report: dict, path: Path) -> Optional[Path]:
    """A bar chart of the table (each side's score per task); None when matplotlib cannot draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001 - a picture of results.json: never an error that loses results
        logger.warning("no results.png (%s)", e)
        return None
    tasks, sides = list(report["tasks"]), [s for s in ("encoder", "random init", "tfidf") if s in report["means"]]
    x, width = np.arange(len(tasks) + 1), 0.8 / max(len(sides), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(x) + 2, 4))
    for i, side in enumerate(sides):
        values = [report["tasks"][t]["scores"][side] for t in tasks] + [report["means"][side]]
        ax.bar(x + i * width, values, width, label=side)
    ax.set_xticks(x + width * (len(sides) - 1) / 2, [*tasks, "mean"])
    ax.set_ylabel("score (x 100)")
    ax.set_title(f"suite {report['suite']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def dump_suite(suite: Suite) -> str:
    """The suite as YAML (``mlm-pretrain suite --suite glue --show``)."""
    return yaml.safe_dump({"name": suite.name, "description": suite.description, "finetune": suite.finetune,
                           "tasks": {t.name: {"finetune": t.finetune, "score": list(t.score), "local": t.local,
                                              "split": t.split} for t in suite.tasks},
                           "published": suite.published}, sort_keys=False, allow_unicode=True)

