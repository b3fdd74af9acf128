#!/usr/bin/env python
"""What reading whole documents costs: one epoch of fine-tuning per way of handling long rows, side by side.

    python scripts/bench_long_documents.py --model runs/cpu-1h/pretrain/final --train ../shared/data/reviews_multidomain/books_train.jsonl
    python scripts/bench_long_documents.py --config cpu-1h --tokenizer runs/cpu-1h/tokenizer --train FILE   # random init
    python scripts/bench_long_documents.py --model DIR --train FILE --modes truncate:128,truncate:256,windows:128

Each mode fine-tunes the same encoder on the same rows (``--rows``, a seeded subset) for one epoch with
one seed, through :func:`mlm_pretrain.finetune.finetune`: ``truncate:N`` keeps the first N tokens of each
row, ``windows:N`` reads whole rows as overlapping windows of N tokens (``finetune.long_documents``). The
table gives the training seconds of the epoch (evaluation and saving excluded: the stage's own
``train_seconds``), documents per second, the windows a document was read as, and the cost relative to
the first mode. Run it alone on the machine: it times.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlm_pretrain.config import load_config  # noqa: E402
from mlm_pretrain.finetune import finetune  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="encoder folder or Hub id; default: random init of --config's architecture")
    p.add_argument("--config", default="cpu-1h", help="recipe for the settings (and the random-init architecture)")
    p.add_argument("--tokenizer", help="tokenizer folder for random init")
    p.add_argument("--train", required=True, help="labelled file (text, label) of long documents")
    p.add_argument("--rows", type=int, default=400, help="seeded subset of training rows timed")
    p.add_argument("--modes", default="truncate:128,windows:128", help="comma-separated MODE:LENGTH")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--output-dir", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", help="more key=value settings for every mode")
    return p.parse_args(argv)


def run_mode(args, mode: str, length: int, out: Path) -> dict:
    model = [f"finetune.model={args.model}"] if args.model else [
        "finetune.init=random", f"model.max_position_embeddings={max(length, 128)}",
        *([f"tokenizer.pretrained={args.tokenizer}"] if args.tokenizer else [])]
    cfg = load_config(args.config, [
        f"output_dir={out}", *model, f"finetune.train_file={args.train}", "finetune.validation_file=null",
        "finetune.hub_dataset=null", "finetune.text_column=text", "finetune.label_column=label", "finetune.label_names=[]",
        f"finetune.task_name={mode}-{length}", f"finetune.long_documents={mode}", f"finetune.max_length={length}",
        f"finetune.max_train_examples={args.rows}", "finetune.max_eval_examples=32", "finetune.num_epochs=1",
        "finetune.seeds=[1]", f"finetune.batch_size={args.batch_size}", "finetune.save_checkpoints=false",
        "finetune.group_by_length=false", "finetune.compare_baselines=false", "tracking.report_to=[]",
        "tracking.plots=false", *args.overrides])
    final = finetune(cfg)
    summary = json.loads((final.parent / "summary.json").read_text())
    run = summary["runs"][0]
    train = summary["lengths"]["train"]
    return {"mode": f"{mode}:{length}", "rows": train["rows"], "longer": train["longer_than_window"],
            "windows": train.get("mean_windows", 1.0), "seconds": run["train_seconds"],
            "docs_per_s": run["train_examples_per_second"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="bench_long_"))
    rows = []
    for spec in args.modes.split(","):
        mode, length = spec.split(":")
        rows.append(run_mode(args, mode, int(length), out))
    print(f"\nOne epoch of fine-tuning on {rows[0]['rows']} rows of {args.train} (batch {args.batch_size}, one seed)")
    print("| mode | rows longer than the window | windows per row | train seconds | rows/s | cost |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['longer']} | {r['windows']:.2f} | {r['seconds']:.1f} | {r['docs_per_s']:.1f} | "
              f"{r['seconds'] / max(rows[0]['seconds'], 1e-9):.2f}x |")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
