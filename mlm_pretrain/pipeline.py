"""``mlm-pretrain run``: every stage from one recipe.

    mlm-pretrain run                                   # the tiny recipe on the bundled data/, a few minutes on a CPU
    mlm-pretrain run --config cpu-1h pretrain.time_budget_minutes=30

tokenizer -> prepare -> pretrain -> finetune (with ``pretrain.long_phase``, the data of both phases is prepared
first, and the long phase's encoder is the one fine-tuned); with ``hub.push`` pretraining pushes the encoder to
``hub.repo_id`` and fine-tuning the classifier to ``<repo_id>-<task>``. Each stage reuses its
artifact when it already exists for the same inputs (the tokenizer and prepared data are
content-addressed, pretraining resumes from its newest checkpoint and is skipped once its final model
exists), so re-running after an interruption continues where it stopped. The run ends with a summary
table (stage, time, key metric, output path) and ``<output_dir>/report.md``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .config import Config, save_resolved
from .layout import RANDOM_INIT_SUFFIX, START_SUFFIX, RunLayout
from .phases import pretraining_phases
from .windows import describe_lengths

logger = logging.getLogger(__name__)


def _stage(name: str, fn: Callable[[], Any], key_metric: Callable[[Path], str], rows: list) -> Any:
    """Run one stage, timing it; a row of the summary table records its key metric and output."""
    logger.info("=== stage %s ===", name)
    t0 = time.perf_counter()
    out = fn()
    rows.append((name, time.perf_counter() - t0, key_metric(Path(out)), str(out)))
    return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _tok_metric(p: Path) -> str:
    vocab = p / "vocab.txt"
    if vocab.is_file():
        return f"vocab {sum(1 for _ in vocab.open(encoding='utf-8'))}"
    size = _read_json(p / "report.json").get("vocab_size")  # BPE and Unigram have no vocab.txt
    return f"vocab {size}" if size else ""


def _prep_metric(p: Path) -> str:
    s = _read_json(p / "stats.json")
    return f"{s.get('train_examples', s.get('examples', '?'))} examples" if s else ""


def _pretrain_metric(p: Path) -> str:
    m = _read_json(p / "metrics.json")
    acc = m.get("eval/mlm_accuracy", m.get("mlm_accuracy"))
    return f"MLM acc {acc:.3f}" if isinstance(acc, (int, float)) else ""


def _finetune_metric(p: Path) -> str:
    m = _read_json(p / "metrics.json")
    for k in ("eval/accuracy", "accuracy", "eval_accuracy"):
        if isinstance(m.get(k), (int, float)):
            return f"accuracy {m[k]:.3f}"
    return ""


def format_summary(rows: list[tuple[str, float, str, str]]) -> str:
    lines = [f"| {'stage':<10} | {'time':>8} | {'key metric':<22} | output |",
             f"|{'-' * 12}|{'-' * 10}|{'-' * 24}|--------|"]
    for name, secs, metric, out in rows:
        lines.append(f"| {name:<10} | {secs:>7.1f}s | {metric:<22} | {out} |")
    return "\n".join(lines)


def run_pipeline(cfg: Config, suite: Optional[str] = None, suite_data: Optional[str] = None) -> Path:
    """Run every stage of ``cfg``; returns the run directory (with ``report.md``). ``suite`` (a packaged
    suite or a suite file; its local files under ``suite_data``) then fine-tunes the encoder on that suite
    too, and the report gains its table and mean (:func:`run_suite_stage`)."""
    from . import finetune as ft
    from . import prepare, pretrain, tokenizer
    from .model import init_folder

    layout = RunLayout.of(cfg)
    layout.root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, layout.config_yaml)
    # with hub.push the encoder goes to hub.repo_id (pushed by pretrain), the classifier to <repo_id>-<task>
    classifier_repo = {"hub.repo_id": f"{cfg.hub.repo_id}-{cfg.finetune.task_name}"} if cfg.hub.push else {}
    if cfg.hub.push:
        from .hub import preflight

        preflight(cfg)  # both repositories, before hours of training
        preflight(cfg.replace(**classifier_repo))
    check_sources(cfg)
    if suite:  # the suite's file, tasks and data too, before hours of training
        from .suite import check_tasks, load_suite

        loaded = load_suite(suite)
        check_tasks(cfg, loaded, loaded.tasks, data=Path(suite_data) if suite_data else None, data_only=True)
    rows: list = []
    _stage("tokenizer", lambda: tokenizer.train_tokenizer(cfg), _tok_metric, rows)
    phases = pretraining_phases(cfg)  # with pretrain.long_phase its data too, before the first phase trains
    for phase in phases:
        _stage("prepare" if len(phases) == 1 else f"prepare {phase.cfg.data.max_seq_length}",
               lambda c=phase.cfg: prepare.prepare_pretraining_data(c), _prep_metric, rows)
    final = Path(_stage("pretrain", lambda: pretrain.pretrain(cfg), _pretrain_metric, rows))
    ft_cfg = cfg.replace(**classifier_repo, **({} if cfg.finetune.model else {"finetune.model": str(final)}))
    classifier = Path(_stage("finetune", lambda: ft.finetune(ft_cfg), _finetune_metric, rows))
    comparison = None
    if cfg.finetune.compare_baselines and cfg.finetune.init == "pretrained":
        start = str(init_folder(cfg)) if cfg.model.init_from else None
        comparison = compare_baselines(ft_cfg, classifier, rows, start=start)
    if suite:
        table = run_suite_stage(ft_cfg, suite, suite_data, rows)
        comparison = "\n\n".join(part for part in (comparison, table) if part)
    summary = format_summary(rows)
    print("\n" + summary)
    if comparison:
        print("\n" + comparison)
    write_report(cfg, rows, comparison)
    return layout.root


def run_suite_stage(ft_cfg: Config, suite: str, data: Optional[str], rows: list) -> str:
    """The run's encoder on a task suite (beside random initialisation and TF-IDF, nothing pushed); a row
    of the summary with the suite means, and the suite's table for the report."""
    from .suite import load_suite, run_suite

    loaded = load_suite(suite)

    def metric(out: Path) -> str:
        means = _read_json(out / "results.json").get("means", {})
        return " ".join(f"{k.split()[0]} {v:.1f}" for k, v in means.items())

    out = Path(_stage(f"suite {loaded.name}", lambda: run_suite(ft_cfg.replace(**{"hub.push": False}), loaded,
                                                                data=Path(data) if data else None), metric, rows))
    return (out / "results.md").read_text(encoding="utf-8")


def check_sources(cfg: Config) -> None:
    """Every input the run reads from the Hub (corpus, task, tokenizer, starting weights), fetched into the
    Hugging Face cache or found there, and its columns checked, before the first stage: an unreachable or
    misnamed dataset stops the run in seconds, not after an hour of pretraining."""
    from .corpus import corpus_documents
    from .finetune_data import load_splits
    from .model import model_source
    from .model import init_folder

    if cfg.tokenizer.pretrained:
        RunLayout.of(cfg)  # resolves (downloads) a Hub tokenizer
    if cfg.model.init_from:
        init_folder(cfg)
    if cfg.corpus.hub_dataset:
        corpus_documents(cfg.corpus, streaming=cfg.data.streaming)
    if cfg.finetune.hub_dataset:
        load_splits(cfg)
    if cfg.finetune.model:
        model_source(cfg)


def compare_baselines(ft_cfg: Config, classifier: Path, rows: list, start: Optional[str] = None) -> str:
    """What pretraining bought: the same fine-tuning from random weights (same architecture, rows, seeds
    and settings), TF-IDF + logistic regression on the same rows, and, for continued pretraining
    (``start``: ``model.init_from``'s folder), the starting encoder fine-tuned as it is; returns the
    comparison table."""
    from . import finetune as ft
    from .probe import task_tfidf

    task = ft_cfg.finetune.task_name
    random_cfg = ft_cfg.replace(**{"finetune.init": "random", "finetune.task_name": task + RANDOM_INIT_SUFFIX,
                                   "hub.push": False})
    random_final = Path(_stage("random init", lambda: ft.finetune(random_cfg), _finetune_metric, rows))
    start_summary = None
    if start:  # the question a user with a public encoder asks: did continuing it beat it as it is?
        start_cfg = ft_cfg.replace(**{"finetune.model": start, "finetune.task_name": task + START_SUFFIX,
                                      "hub.push": False})
        start_final = Path(_stage("start as is", lambda: ft.finetune(start_cfg), _finetune_metric, rows))
        start_summary = _read_json(start_final.parent / "summary.json")
    t0 = time.perf_counter()
    tfidf = task_tfidf(ft_cfg, ft.load_model_tokenizer(str(classifier), ft_cfg))
    rows.append(("TF-IDF", time.perf_counter() - t0, f"accuracy {tfidf['accuracy']:.3f}", "(same rows)"))
    return format_comparison(task, _read_json(classifier.parent / "summary.json"),
                             _read_json(random_final.parent / "summary.json"), tfidf,
                             _read_json(Path(ft_cfg.finetune.model) / "metrics.json"), start=start_summary)


def _accuracy_cell(summary: Optional[dict]) -> tuple[str, Optional[float]]:
    v = (summary or {}).get("validation", {}).get("accuracy")
    if not v:
        return "n/a", None
    return f"{100 * v['median']:.1f} ± {100 * v['std']:.1f}", v["median"]


def _spread(*summaries: dict) -> float:
    return max(s["validation"]["accuracy"]["std"] for s in summaries)


def format_comparison(task: str, pretrained: dict, random_init: dict, tfidf: dict, pretrain_metrics: dict,
                      start: Optional[dict] = None) -> str:
    """A markdown table: validation accuracy (median ± std over seeds) of the classifiers (with ``start``,
    the starting encoder of a continued pretraining fine-tuned as it is), and one line of reading
    (including the pretraining's plateau reading)."""
    p_text, p = _accuracy_cell(pretrained)
    r_text, r = _accuracy_cell(random_init)
    s_text, s = _accuracy_cell(start)
    t = tfidf.get("accuracy")
    seeds = len(pretrained.get("seeds", [])) or 1
    lines = [f"### Does pretraining pay? ({task}, validation accuracy %, median ± std over {seeds} seed(s))", "",
             "| classifier | accuracy |", "|---|---:|",
             f"| fine-tuned from the pretrained encoder | {p_text} |",
             *([f"| the starting encoder (model.init_from), fine-tuned as it is | {s_text} |"] if start else []),
             f"| same architecture from random weights | {r_text} |",
             f"| TF-IDF (1-2 grams) + logistic regression | {100 * t:.1f} |" if t is not None else "", ""]
    if p is not None and r is not None and t is not None:
        verdict = ("pretraining pays: above random initialisation by more than the spread"
                   if p - r > _spread(pretrained, random_init)
                   else "pretraining does not beat random initialisation beyond the spread here")
        if s is not None:
            verdict += ("; continuing it beat the starting encoder as it is by more than the spread"
                        if p - s > _spread(pretrained, start) else
                        "; continuing it did not beat the starting encoder as it is beyond the spread")
        verdict += "; at least level with TF-IDF" if p >= t else f"; {100 * (t - p):.1f} points below TF-IDF"
        lines.append(verdict + ".")
    lengths = describe_lengths(pretrained.get("lengths", {}))
    if lengths:
        lines.append(lengths)
    if pretrain_metrics.get("plateau"):
        lines.append(f"Pretraining: {pretrain_metrics['plateau']}.")
    return "\n".join(lines)


def write_report(cfg: Config, rows: list, extra: Optional[str] = None) -> Path:
    layout = RunLayout.of(cfg)
    run_dir = layout.root
    plots = sorted(run_dir.rglob("*.png"))
    parts = [f"# Run report: {run_dir}", "", format_summary(rows), ""]
    if extra:
        parts += [extra, ""]
    tok_report = _read_json(run_dir / "tokenizer" / "report.json")
    if tok_report.get("held_out"):
        from .tokenizer import format_tokenizer_report

        parts += [format_tokenizer_report(tok_report), ""]
    for p in plots:
        rel = p.relative_to(run_dir)
        parts += [f"## {rel}", "", f"![{rel.stem}]({rel.as_posix()})", ""]
    out = layout.report
    out.write_text("\n".join(parts), encoding="utf-8")
    logger.info("report written to %s", out)
    return out
