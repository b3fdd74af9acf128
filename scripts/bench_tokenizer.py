"""Tokenizer throughput: WordPiece training and batch encoding, in MB of raw text per second.

    python scripts/bench_tokenizer.py                         # Reuters train.jsonl from ../shared/data
    python scripts/bench_tokenizer.py --corpus FILE.jsonl --vocab-size 16000 --max-mb 5

Rows, measured in one run on the same text:
- ``train_tokenizer`` (our stage: datasets reading, batching, WordPiece training, saving),
- :func:`train_wordpiece` from an in-memory list (two passes: the alphabet, then training with the
  ``##`` pieces numbered in sorted order, so the ids are the same every time),
- ``tokenizers``' WordPiece trainer alone from the same list, one pass (the floor; hash-order ids),
- fast ``BertTokenizer`` batch encoding (what the prepare stage uses),
- slow ``BertTokenizerLegacy`` encoding of a sample (the pure-Python baseline).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from mlm_pretrain.config import load_config  # noqa: E402
from mlm_pretrain.tokenizer import (load_tokenizer, train_tokenizer, train_wordpiece,  # noqa: E402
                                    train_wordpiece_once)

DEFAULT = ROOT.parent / "shared" / "data" / "pretrain_reuters21578" / "train.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(DEFAULT), help="a .jsonl corpus with a `text` field")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--max-mb", type=float, default=None, help="use only the first N MB of text")
    ap.add_argument("--slow-sample", type=int, default=500, help="documents encoded by the slow tokenizer")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()

    src = Path(args.corpus)
    if not src.is_file():
        sys.exit(f"corpus {src} not found (pass --corpus)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    texts, size = [], 0
    with open(src, encoding="utf-8") as f_in, open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f_out:
        for line in f_in:
            t = json.loads(line)["text"]
            texts.append(t)
            size += len(t.encode("utf-8"))
            f_out.write(json.dumps({"text": t}) + "\n")
            if args.max_mb and size >= args.max_mb * 1e6:
                break
    mb = size / 1e6
    cfg = load_config("tiny", [f"output_dir={tmp / 'run'}", f"corpus.files=[{tmp / 'corpus.jsonl'}]",
                               f"tokenizer.vocab_size={args.vocab_size}", "tokenizer.model_max_length=100000"])
    rows = []

    t0 = time.perf_counter()
    out = train_tokenizer(cfg)
    rows.append(("train_tokenizer (stage: datasets + WordPiece + save)", mb, time.perf_counter() - t0))

    t0 = time.perf_counter()
    train_wordpiece(lambda: (texts[i:i + 1000] for i in range(0, len(texts), 1000)), cfg.tokenizer)
    rows.append(("train_wordpiece, in-memory list (2 passes, same ids)", mb, time.perf_counter() - t0))

    t0 = time.perf_counter()
    train_wordpiece_once((texts[i:i + 1000] for i in range(0, len(texts), 1000)), cfg.tokenizer,
                         cfg.tokenizer.vocab_size)  # the baseline: one pass, as before the seeded ## order
    rows.append(("tokenizers trainer alone, 1 pass (hash-order ids)", mb, time.perf_counter() - t0))

    tok = load_tokenizer(out)
    t0 = time.perf_counter()
    n_tokens = 0
    for i in range(0, len(texts), 1000):
        n_tokens += sum(len(x) for x in tok(texts[i:i + 1000], add_special_tokens=False)["input_ids"])
    rows.append(("fast BertTokenizer batch encoding", mb, time.perf_counter() - t0))

    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy.from_pretrained(str(out))
    sample = texts[: args.slow_sample]
    smb = sum(len(t.encode("utf-8")) for t in sample) / 1e6
    t0 = time.perf_counter()
    slow(sample, add_special_tokens=False)
    rows.append((f"slow BertTokenizerLegacy encoding ({len(sample)} docs)", smb, time.perf_counter() - t0))

    print(f"\ncorpus: {src} ({len(texts)} documents, {mb:.2f} MB, {n_tokens / 1e6:.2f} M tokens), "
          f"vocab {args.vocab_size}, {os.cpu_count()} CPU cores")
    print(f"| {'what':<55} | {'MB':>6} | {'seconds':>8} | {'MB/s':>7} |")
    print(f"|{'-' * 57}|{'-' * 8}|{'-' * 10}|{'-' * 9}|")
    for name, m, s in rows:
        print(f"| {name:<55} | {m:>6.2f} | {s:>8.2f} | {m / s:>7.2f} |")


if __name__ == "__main__":
    main()
