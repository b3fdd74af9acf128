"""Does pretraining pay? Pretrain with the CPU recipe for a fixed time budget, then fine-tune SST-2 and
MRPC with several seeds from (a) that encoder and (b) random initialisation of the same architecture.

    python scripts/bench_quality.py                                  # the cpu-1h recipe, 60 minutes, 3 seeds
    python scripts/bench_quality.py --budget-minutes 20 --max-train 20000 --epochs 1   # a shorter run

Fine-tuning uses the `sst2` / `mrpc` recipes (files, columns, lengths, epochs) at the pretraining recipe's
own fine-tuning rates (`finetune.learning_rate`, `finetune.embedding_learning_rate`: cpu-1h's 6e-4 and `auto`
suit its 4 x 128 encoder, where the task recipes' 1e-4 was tuned for BERT mini); --finetune-overrides
adds key=value settings to both.

--data names the folder laid out as ../shared/data: pretrain_reuters21578/train.jsonl (the corpus),
sst2/train.tsv + dev.tsv and mrpc/glue_train.tsv + glue_dev.tsv (the tasks, as the sst2/mrpc recipes read them).

Prints one table: median ± standard deviation of each task's metrics for both initialisations and the
TF-IDF (1-2 grams) + logistic regression reference, computed in the same run on the very rows the
fine-tuning read (``bench_finetune.run_tfidf``: for pairs, the products and absolute differences of the
two sentences' vectors; ../shared/data/README.md quotes 82.0% on SST-2 dev). The table also goes to
<work-dir>/results.json. Every stage is cached in --work-dir, so a re-run
with the same arguments only prints the table again.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
CORPUS = "pretrain_reuters21578/train.jsonl"

from mlm_pretrain.config import load_config  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))

from bench_finetune import LOCAL_TASKS as TASK_FILES, local_task_overrides  # noqa: E402


def task_config(task: str, data: Path, over=()):
    """The task's fine-tuning recipe reading its files from ``data`` (the recipes name the Hub's GLUE)."""
    return load_config(task, [*local_task_overrides(task, data), *over])


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="cpu-1h", help="pretraining recipe")
    ap.add_argument("--budget-minutes", type=float, default=60.0, help="pretraining wall-clock budget")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--tasks", nargs="+", default=list(TASK_FILES), choices=list(TASK_FILES))
    ap.add_argument("--data", type=Path, default=SHARED, help="folder with the corpus and the tasks' files")
    ap.add_argument("--max-train", type=int, default=None, help="subsample each task's training set")
    ap.add_argument("--epochs", type=float, default=None, help="override the fine-tuning recipes' epochs")
    ap.add_argument("--work-dir", default="runs/bench_quality")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra key=value for the pretraining recipe")
    ap.add_argument("--finetune-overrides", nargs="*", default=[], help="extra key=value for the fine-tuning recipes")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    data = args.data.resolve()
    missing = [str(data / f) for f in (CORPUS, *(f for t in args.tasks for f in TASK_FILES[t][:2]))
               if not (data / f).is_file()]
    if missing:
        sys.exit(f"{', '.join(missing)} not found: this benchmark reads the Reuters corpus, SST-2 and MRPC "
                 f"from ../shared/data; pass --data FOLDER laid out the same way")

    from bench_finetune import run_tfidf  # the one TF-IDF baseline of both fine-tuning benchmarks

    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.tokenizer import train_tokenizer

    work = Path(args.work_dir).resolve()
    probe_task = load_config(args.recipe).finetune.task_name  # the in-training probe reads it from --data too
    local_probe = local_task_overrides(probe_task, data) if probe_task in TASK_FILES else []
    pcfg = load_config(args.recipe, [f"output_dir={work / 'pretrain-run'}", f"corpus.files=[{data / CORPUS}]", *local_probe,
                                     f"pretrain.time_budget_minutes={args.budget_minutes}", *args.overrides])
    t0 = time.perf_counter()
    train_tokenizer(pcfg)
    prepare_pretraining_data(pcfg)
    encoder = pretrain(pcfg)
    pretrain_s = time.perf_counter() - t0
    pmetrics = json.loads((encoder / "metrics.json").read_text()) if (encoder / "metrics.json").is_file() else {}

    rows = []
    rows_over = [f"finetune.max_train_examples={args.max_train}"] if args.max_train else []
    emb = pcfg.finetune.embedding_learning_rate
    rates = [f"finetune.learning_rate={pcfg.finetune.learning_rate}",
             f"finetune.embedding_learning_rate={'null' if emb is None else emb}", *args.finetune_overrides]
    for task in args.tasks:
        summaries = {}
        for init in ("pretrained", "random"):
            over = [*rows_over, *rates, f"output_dir={work / f'finetune-{init}'}", f"finetune.model={encoder}",
                    f"finetune.init={init}", f"finetune.seeds=[{','.join(map(str, args.seeds))}]"]
            if args.epochs:
                over.append(f"finetune.num_epochs={args.epochs}")
            final = finetune(task_config(task, data, over))
            summaries[init] = json.loads((final.parent / "summary.json").read_text())
        ref = run_tfidf(task_config(task, data, rows_over))  # same recipe seed, so the same training rows
        for metric in ("accuracy", "f1"):
            a = summaries["pretrained"]["validation"][metric]
            b = summaries["random"]["validation"][metric]
            rows.append((task, metric, a, b, ref[metric], ref["train"]))

    print(f"\npretraining: recipe {args.recipe}, budget {args.budget_minutes:g} min on "
          f"{pcfg.corpus.files[0]} ({pretrain_s / 60:.1f} min incl. tokenizer and data; final "
          + ", ".join(f"{k} {v:.3f}" for k, v in pmetrics.items() if k.startswith("eval/") and isinstance(v, float))
          + f"); fine-tuning: seeds {args.seeds}, {', '.join(rates)}"
          + (f", {args.max_train} training examples" if args.max_train else ""))
    print("| task | metric | pretrained (median ± std) | random init (median ± std) | gain | gain > spread | TF-IDF + LR |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for task, metric, a, b, ref, ref_rows in rows:
        gain = a["median"] - b["median"]
        beyond = gain > max(a["std"], b["std"])
        print(f"| {task} | {metric} | {100 * a['median']:.1f} ± {100 * a['std']:.1f} | {100 * b['median']:.1f} ± "
              f"{100 * b['std']:.1f} | {100 * gain:+.1f} | {'yes' if beyond else 'no'} | "
              + ("n/a" if ref is None else f"{100 * ref:.1f}") + " |")
        results.append({"task": task, "metric": metric, "pretrained": a, "random": b, "gain": gain,
                        "gain_beyond_spread": beyond, "tfidf": ref, "tfidf_train_rows": ref_rows})
    (work / "results.json").write_text(json.dumps({"encoder": str(encoder), "pretrain_metrics": pmetrics,
                                                   "seeds": args.seeds, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
