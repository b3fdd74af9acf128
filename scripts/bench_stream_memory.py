"""Benchmark: streaming mode's peak memory does not grow with the corpus.

    python scripts/bench_stream_memory.py                       # Reuters train.jsonl repeated 1x and 10x
    python scripts/bench_stream_memory.py --max-mb 1 --factors 1,3   # quick smoke run

For each factor the corpus is written N times into a temporary jsonl, and a fresh subprocess
iterates every training batch of ``pretraining_stream`` through a ``DataLoader`` with the
``MLMCollator`` (what the training loop does), then reports its peak RSS. Beside it, the same process
size right after start-up (libraries and tokenizer loaded, nothing streamed) shows what the stream
itself adds. Cached mode is the comparison: it converts the corpus to Arrow on disk first (disk, not
RAM, grows with the corpus).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlm_pretrain.textio import read_jsonl  # noqa: E402
from bench_prepare import DEFAULT_CORPUS, ensure_tokenizer, peak_rss_mb, subset_corpus  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> dict:
    import torch

    from mlm_pretrain.config import load_config
    from mlm_pretrain.masking import MLMCollator
    from mlm_pretrain.examples import pretraining_stream
    from mlm_pretrain.tokenizer import load_tokenizer

    cfg = load_config("tiny-bert", [f"output_dir={args.workdir}", f"tokenizer.pretrained={args.tokenizer}",
                               f"corpus.files=[{args.corpus}]", "data.streaming=true",
                               f"data.objective={args.objective}", f"data.max_seq_length={args.max_seq_length}",
                               "data.dupe_factor=1", "model.max_position_embeddings=512"])
    tok = load_tokenizer(args.tokenizer)
    collator = MLMCollator(tok, cfg.masking, seed=0)
    start_rss = rss_mb()
    t0 = time.perf_counter()
    stream = pretraining_stream(cfg, tok, rank=0, world_size=1)
    loader = torch.utils.data.DataLoader(stream, batch_size=32, collate_fn=collator, num_workers=args.num_workers)
    examples = tokens = 0
    for batch in loader:
        examples += batch["input_ids"].shape[0]
        tokens += int(batch["attention_mask"].sum())
    wall = time.perf_counter() - t0
    me, kids = peak_rss_mb()
    return {"wall_s": wall, "examples": examples, "tokens": tokens, "start_rss_mb": start_rss,
            "peak_rss_mb": me, "peak_worker_rss_mb": kids}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="jsonl corpus (field text)")
    p.add_argument("--max-mb", type=float, default=None, help="base corpus: only the first MB of text")
    p.add_argument("--factors", default="1,10", help="comma-separated repetition factors")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer dir (default: train 16k WordPiece)")
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--objective", default="nsp")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    if not args.corpus.is_file():
        sys.exit(f"corpus {args.corpus} not found (give --corpus)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = subset_corpus(args.corpus, args.max_mb, tmp)
        tok = args.tokenizer or ensure_tokenizer(base, args.vocab_size)
        text = base.read_text(encoding="utf-8")
        mb = sum(len(row["text"].encode()) for row in read_jsonl(base)) / 1e6
        print(f"base corpus {args.corpus} ({mb:.1f} MB of text), tokenizer {tok}, objective {args.objective}, "
              f"DataLoader workers {args.num_workers}\n", flush=True)
        rows = []
        for factor in [int(x) for x in args.factors.split(",")]:
            corpus = tmp / f"corpus_x{factor}.jsonl"
            with open(corpus, "w", encoding="utf-8") as f:
                for _ in range(factor):
                    f.write(text if text.endswith("\n") else text + "\n")
            cmd = [sys.executable, __file__, "--child", "--corpus", str(corpus), "--tokenizer", str(tok),
                   "--objective", args.objective, "--max-seq-length", str(args.max_seq_length),
                   "--num-workers", str(args.num_workers), "--workdir", str(tmp / f"run{factor}")]
            env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"factor {factor} failed:\n{out.stderr[-3000:]}")
            rows.append((factor, json.loads(out.stdout.strip().splitlines()[-1])))
            corpus.unlink()

        print("| corpus | MB of text | examples | MB/s | RSS after start-up MB | peak RSS MB | "
              "peak RSS of workers MB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for factor, r in rows:
            print(f"| {factor}x | {mb * factor:.0f} | {r['examples']:,} | {mb * factor / r['wall_s']:.2f} | "
                  f"{r['start_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_worker_rss_mb']:.0f} |")
        if len(rows) >= 2:
            (f0, r0), (f1, r1) = rows[0], rows[-1]
            grow = max(r1["peak_rss_mb"], r1["peak_worker_rss_mb"]) / max(r0["peak_rss_mb"], r0["peak_worker_rss_mb"])
            print(f"\npeak RSS x{grow:.2f} for a corpus x{f1 / f0:.0f} larger")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
