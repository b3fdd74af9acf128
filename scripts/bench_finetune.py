#!/usr/bin/env python
"""Fine-tuning benchmark on GLUE SST-2 and MRPC (``../shared/data``): our stage beside the stock paths.

    python scripts/bench_finetune.py --model runs/mini/pretrain/final            # a pretrained encoder
    python scripts/bench_finetune.py --preset mini --max-train 2000 --epochs 1    # random init, quick
    python scripts/bench_finetune.py --preset mini --tasks mrpc --seeds 1 2 3

For each task, in one run and on the same training rows, initial weights and hyperparameters:

* ``mlm_pretrain``: :func:`mlm_pretrain.finetune.finetune` with the packaged ``sst2`` / ``mrpc`` recipe
  (``transformers.Trainer`` per seed, dynamic padding to a multiple of 8, evaluation once per epoch, best
  epoch kept, the median seed's ``final/``);
* ``HF Trainer``: the same model, tokenized data and schedule through a plain ``transformers.Trainer``
  (what a user would write instead), scored after its last step. Since the stage runs on the Trainer
  too, the two rows differ only by what the stage adds (per-epoch evaluation, best epoch, outputs);
* ``TF-IDF + LR``: word 1-2-gram TF-IDF and logistic regression (for pairs: the products and absolute
  differences of the two sentences' vectors): the floor a useful encoder must beat.

Without ``--model`` the encoder is the ``--preset`` architecture with random weights (``init=random``)
and a 16k WordPiece trained on the Reuters corpus of ``../shared/data`` (cached in the output folder).
Examples per second count training only (evaluation and checkpoints excluded, for both loops). The
wall time of ``mlm_pretrain`` is the whole stage (read, tokenize, train, evaluate, save ``final/``); the
Trainer's is ``train()`` alone.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlm_pretrain.config import load_config  # noqa: E402
from mlm_pretrain.classifier import build_classifier
from mlm_pretrain.finetune import finetune
from mlm_pretrain.finetune_data import prepare_task
from mlm_pretrain.model import load_model_tokenizer, model_source
from mlm_pretrain.predict import score  # noqa: E402

TASKS = ("sst2", "mrpc")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="encoder directory (save_pretrained + tokenizer); default: random init of --preset")
    p.add_argument("--preset", default="mini", help="architecture for random init (tiny, mini, small, ...)")
    p.add_argument("--tokenizer", help="tokenizer directory for random init (default: train 16k WordPiece on Reuters)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding sst2/ and mrpc/")
    p.add_argument("--max-train", type=int, default=None, help="seeded subset of training rows (quick runs)")
    p.add_argument("--max-eval", type=int, default=None, help="seeded subset of validation rows")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both loops")
    p.add_argument("--group-by-length", action="store_true", help="length-grouped batches in both loops (less padding)")
    p.add_argument("--malloc", default="auto", choices=["auto", "system"],
                   help="finetune.malloc of our stage (system: glibc's allocator as configured, no reuse)")
    p.add_argument("--no-trainer", action="store_true", help="skip the HF Trainer baseline")
    p.add_argument("--no-tfidf", action="store_true", help="skip the TF-IDF + logistic regression baseline")
    p.add_argument("--output-dir", default="runs/bench_finetune")
    return p.parse_args(argv)


def reuters_tokenizer(out: Path, data: Path) -> Path:
    from mlm_pretrain.tokenizer import train_tokenizer

    cfg = load_config("tiny", [f"output_dir={out}", f"corpus.files=[{data / 'pretrain_reuters21578' / 'train.jsonl'}]",
                               "tokenizer.vocab_size=16000", "tokenizer.model_max_length=512"])
    return train_tokenizer(cfg)


#: The GLUE tasks as ../shared/data holds them: training and dev files, and the columns they name where
#: those differ from the Hub's GLUE, which the packaged recipes read.
LOCAL_TASKS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv", ()),
               "mrpc": ("mrpc/glue_train.tsv", "mrpc/glue_dev.tsv",
                        ('finetune.text_column="#1 String"', 'finetune.text_pair_column="#2 String"',
                         "finetune.label_column=Quality"))}


def local_task_overrides(task: str, data: Path) -> list[str]:
    """The overrides that make ``task``'s recipe read its files from ``data`` instead of the Hub."""
    train, dev, columns = LOCAL_TASKS[task]
    return [f"finetune.train_file={Path(data) / train}", f"finetune.validation_file={Path(data) / dev}", *columns]


def task_config(task: str, args, out: Path, tokenizer_dir: Path | None, seeds: list[int]):
    over = [f"output_dir={out}", *local_task_overrides(task, args.data), f"finetune.num_epochs={args.epochs}",
            f"finetune.batch_size={args.batch_size}", f"finetune.learning_rate={args.lr}",
            f"finetune.max_length={args.max_length}", f"finetune.seeds=[{', '.join(map(str, seeds))}]",
            "finetune.eval_steps=null", f"finetune.group_by_length={str(args.group_by_length).lower()}", "finetune.save_checkpoints=false",
            "finetune.long_documents=truncate",  # the plain Trainer reads one row a row: the same rows on both sides
            "finetune.resume=never", "finetune.mixed_precision=" + ("bf16" if args.bf16 else "'no'"),
            "tracking.report_to=[]", "tracking.plots=false", "finetune.metric_for_best=accuracy",
            f"finetune.malloc={args.malloc}"]
    if args.max_train:
        over.append(f"finetune.max_train_examples={args.max_train}")
    if args.max_eval:
        over.append(f"finetune.max_eval_examples={args.max_eval}")
    if args.model:
        over += [f"finetune.model={args.model}", "finetune.init=pretrained"]
    else:
        over += ["finetune.init=random", f"model.preset={args.preset}", f"tokenizer.pretrained={tokenizer_dir}",
                 f"model.max_position_embeddings={max(512, args.max_length)}"]
    return load_config(task, over)


def run_ours(cfg) -> dict:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as table:
        final = finetune(cfg)
    wall = time.perf_counter() - t0
    summary = json.loads((final.parent / "summary.json").read_text())
    val = summary["validation"]
    return {"accuracy": val["accuracy"]["median"], "accuracy_std": val["accuracy"]["std"],
            "f1": val.get("f1", {}).get("median"), "f1_std": val.get("f1", {}).get("std"),
            "ex_per_s": float(np.median([r["train_examples_per_second"] for r in summary["runs"]])),
            "wall": wall, "train": summary["examples"]["train"], "table": table.getvalue()}


def run_trainer(cfg, seed: int) -> dict:
    """The same initial model, rows and schedule through transformers.Trainer."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    f = cfg.finetune
    src = model_source(cfg)
    tok = load_model_tokenizer(src, cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        task = prepare_task(cfg, tok)
    model = build_classifier(src, cfg, task.spec, tok, seed=seed)
    args = TrainingArguments(
        output_dir=str(cfg.run_dir / "trainer"), per_device_train_batch_size=f.batch_size,
        per_device_eval_batch_size=f.batch_size, learning_rate=f.learning_rate, num_train_epochs=f.num_epochs,
        warmup_steps=f.warmup_ratio, weight_decay=f.weight_decay, lr_scheduler_type=f.lr_scheduler,
        max_grad_norm=f.max_grad_norm, seed=seed, bf16=f.mixed_precision == "bf16", eval_strategy="no",
        save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if f.group_by_length else "random")
    trainer = Trainer(model=model, args=args, train_dataset=task.encoded["train"],
                      data_collator=DataCollatorWithPadding(tok), processing_class=tok)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    pred = trainer.predict(task.encoded["validation"])
    metrics = score(task.spec, torch.tensor(pred.predictions).float(), torch.tensor(pred.label_ids))
    n = len(task.encoded["train"])
    return {"accuracy": metrics["accuracy"], "f1": metrics.get("f1"),
            "ex_per_s": n * f.num_epochs / out.metrics["train_runtime"], "wall": wall, "train": n}


def run_tfidf(cfg) -> dict:
    """TF-IDF + logistic regression (``mlm_pretrain.probe.tfidf_accuracy``, the package's one copy, which
    ``mlm-pretrain run`` reports too) on the rows the fine-tuning reads."""
    from mlm_pretrain.finetune_data import drop_missing, load_splits
    from mlm_pretrain.probe import tfidf_accuracy

    f = cfg.finetune
    splits = load_splits(cfg)
    cols = [f.text_column] + ([f.text_pair_column] if f.text_pair_column else [])
    for s in splits:
        splits[s], _ = drop_missing(splits[s], cols + [f.label_column])
    train = splits["train"]
    if f.max_train_examples and f.max_train_examples < len(train):
        train = train.shuffle(seed=cfg.seed).select(range(f.max_train_examples))
    val = splits["validation"]
    if f.max_eval_examples and f.max_eval_examples < len(val):
        val = val.shuffle(seed=cfg.seed).select(range(f.max_eval_examples))

    def split(ds):
        return (ds[f.text_column], ds[f.text_pair_column] if f.text_pair_column else None, ds[f.label_column])

    t0 = time.perf_counter()
    out = tfidf_accuracy(split(train), split(val))
    wall = time.perf_counter() - t0
    return {"accuracy": out["accuracy"], "f1": out.get("f1"), "ex_per_s": len(train) / wall, "wall": wall,
            "train": len(train)}


def fmt(x, std=None):
    if x is None:
        return "-"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.output_dir)
    if not (Path(args.data) / "sst2").is_dir():
        print(f"no GLUE data under {args.data}; pass --data", file=sys.stderr)
        return 2
    tok_dir = None
    if not args.model:
        tok_dir = Path(args.tokenizer) if args.tokenizer else reuters_tokenizer(out / "reuters_tok", Path(args.data))
    init = f"pretrained {args.model}" if args.model else f"random {args.preset}"
    rows = []
    for task in args.tasks:
        cfg = task_config(task, args, out / task / "ours", tok_dir, args.seeds)
        r = run_ours(cfg)
        print(r["table"])
        rows.append((task, "mlm_pretrain finetune", r))
        if not args.no_trainer:
            tcfg = task_config(task, args, out / task / "trainer", tok_dir, args.seeds[:1])
            rows.append((task, f"HF Trainer (seed {args.seeds[0]})", run_trainer(tcfg, args.seeds[0])))
        if not args.no_tfidf:
            rows.append((task, "TF-IDF 1-2gram + LR", run_tfidf(cfg)))
    print(f"\nencoder: {init}; epochs {args.epochs}, batch {args.batch_size}, lr {args.lr}, max_length "
          f"{args.max_length}, seeds {args.seeds}, {'bf16' if args.bf16 else 'fp32'}"
          f"{', length-grouped batches' if args.group_by_length else ''}")
    head = "| task | system | train rows | dev accuracy % | dev F1 % | train ex/s | wall s |"
    print(head + "\n|" + "---|" * 7)
    for task, system, r in rows:
        print(f"| {task} | {system} | {r['train']} | {fmt(r['accuracy'], r.get('accuracy_std'))} | "
              f"{fmt(r['f1'], r.get('f1_std'))} | {r['ex_per_s']:.0f} | {r['wall']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
