#!/usr/bin/env python
"""Benchmark: building one masked training batch, row by row against batched with per-row draws.

    python scripts/bench_masking.py                                  # the cpu-1h recipe's data (WikiText-2, Hub)
    python scripts/bench_masking.py --set corpus.files=[../shared/data/pretrain_reuters21578/train.jsonl]  # Reuters
    python scripts/bench_masking.py --config tiny --batches 20       # the bundled corpus: a smoke run
    python scripts/bench_masking.py --set masking.whole_word=true    # any recipe override

A training row's mask is a function of the row and its seed only (``mlm_pretrain.batches``): the row
masked alone, at its own length, with the collator's generator seeded by ``mix_seed(seed, epoch, row)``.
The reference builds each batch that way, one ``mask_tokens`` call per row. Ours
(``collate_masked``, what ``TrainBatches`` runs) draws each row's random numbers with its own seed and
masks the whole batch in one call. Both run on the same batches of the recipe's prepared data (the
first ``--batches`` of epoch 0, its length grouping if the recipe has one), in interleaved rounds
with the fastest round of each kept; the output of the two is checked to be identical, tensor for tensor.
The time includes reading the rows from the Arrow cache and padding them, as in training.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cpu-1h", help="recipe whose tokenizer, data and masking are used")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override (repeatable)")
    p.add_argument("--batches", type=int, default=200, help="batches built per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest of each side is kept")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_masking"), help="tokenizer and data go here")
    return p.parse_args(argv)


def row_by_row(collator, rows: list[dict], seeds: list[int]) -> dict[str, torch.Tensor]:
    """The definition: each row padded and masked alone with its own seed, then placed in the batch."""
    from mlm_pretrain.masking import IGNORE_INDEX

    batch = collator.pad(rows)
    batch["labels"] = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    for i, (row, seed) in enumerate(zip(rows, seeds)):
        one = collator.pad([row])
        collator.generator.manual_seed(seed)
        ids, labels = collator.mask(one["input_ids"], one["attention_mask"])
        batch["input_ids"][i, :ids.size(1)], batch["labels"][i, :labels.size(1)] = ids[0], labels[0]
    return batch


def main(argv=None) -> int:
    import logging

    from datasets import load_from_disk

    from mlm_pretrain.batches import _row_lengths, _rows, collate_masked, epoch_batches, mix_seed
    from mlm_pretrain.config import load_config
    from mlm_pretrain.masking import MLMCollator
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.tokenizer import load_tokenizer, train_tokenizer
    from mlm_pretrain.hardware import cpu_name

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    cfg = load_config(args.config, [f"output_dir={work}", f"data.cache_dir={work / 'data'}", *args.set])
    tokenizer = load_tokenizer(train_tokenizer(cfg))
    train = load_from_disk(str(prepare_pretraining_data(cfg, tokenizer=tokenizer)))["train"]
    collator = MLMCollator(tokenizer, cfg.masking, seed=cfg.seed)
    lengths = _row_lengths(train) if cfg.pretrain.group_by_length else None
    keys = epoch_batches(len(train), cfg.pretrain.batch_size, seed=cfg.seed, epoch=0, lengths=lengths)[:args.batches]
    if not keys:
        raise SystemExit(f"the prepared data has no full batch of {cfg.pretrain.batch_size} rows")

    def build(fn) -> tuple[float, list[dict]]:
        t0 = time.perf_counter()
        out = [fn(collator, _rows(train[idx]), [mix_seed(cfg.seed, 0, i) for i in idx]) for idx in keys]
        return (time.perf_counter() - t0) / len(keys), out

    sides = {"row by row (each row masked alone)": row_by_row, "batched, per-row draws (collate_masked)": collate_masked}
    best: dict[str, float] = {}
    outputs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            secs, outputs[name] = build(fn)
            best[name] = min(best.get(name, secs), secs)
    reference, ours = outputs.values()
    identical = all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(reference, ours))
    width = sum(b["input_ids"].size(1) for b in ours) / len(ours)
    masked = sum(int((b["labels"] != -100).sum()) for b in ours) / len(ours)
    print(f"recipe {args.config}, batch {cfg.pretrain.batch_size}, {len(keys)} batches (mean width {width:.1f}, "
          f"{masked:.0f} masked tokens each), whole-word masking {cfg.masking.whole_word}, CPU {cpu_name()} "
          f"({torch.get_num_threads()} threads), fastest of {args.rounds} rounds")
    print("| masking | ms per batch | speed-up |\n|---|---:|---:|")
    base = next(iter(best.values()))
    for name, secs in best.items():
        print(f"| {name} | {secs * 1e3:.2f} | {base / secs:.2f}x |")
    print(f"identical batches: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
