"""Benchmark: raw text -> cached pretraining examples, against plain fast-tokenizer batch encoding.

    python scripts/bench_prepare.py                               # Reuters train.jsonl, num_proc 1 and 2
    python scripts/bench_prepare.py --max-mb 2 --num-proc 1       # quick smoke run

Every measurement runs in a fresh subprocess (so peak RSS is its own) on the same text:

* ``plain tokenizer(texts)``: ``tokenizer(batch_of_1000_documents)`` over the corpus, i.e. what
  tokenizing costs before any pair is built: the ceiling. Measured with the Rust thread pool off
  (``TOKENIZERS_PARALLELISM=false``, one core: the target) and on (all cores, for reference).
* ``prepare num_proc=N``: ``prepare_pretraining_data`` end to end (read the corpus, split sentences,
  encode, build NSP pairs, write Arrow, validation with fixed masks, ``save_to_disk``), cold cache.

MB/s is megabytes of raw UTF-8 text per wall-clock second; CPU s counts the process and its
workers (less perturbed than wall time when other work shares the machine). The paths run in
``--repeat`` interleaved rounds and each path's fastest run is reported. The corpus is converted to Arrow by
``datasets`` once before timing (the same for every prepare run).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "pretrain_reuters21578" / "train.jsonl"


def peak_rss_mb() -> tuple[float, float]:
    """(this process, largest child) peak resident set size in MB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(me, 1), round(kids, 1)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the datasets.map workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def warm_imports() -> None:
    """Import the libraries before the clock starts: process start-up is not text processing."""
    import datasets  # noqa: F401
    import transformers
    from transformers import AutoTokenizer  # noqa: F401

    transformers.BertTokenizer  # noqa: B018 - resolves the lazy module


def read_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def child_plain(args) -> dict:
    from mlm_pretrain.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    texts = read_texts(Path(args.corpus))
    t0, c0 = time.perf_counter(), cpu_seconds()
    n_tokens = 0
    for i in range(0, len(texts), 1000):
        n_tokens += sum(len(x) for x in tok(texts[i:i + 1000])["input_ids"])
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "tokens": n_tokens}


def child_prepare(args) -> dict:
    from mlm_pretrain.config import load_config
    from mlm_pretrain.prepare import prepare_pretraining_data

    cfg = load_config("tiny-bert", [f"output_dir={args.workdir}", f"tokenizer.pretrained={args.tokenizer}",
                               f"corpus.files=[{args.corpus}]", f"data.num_proc={args.num_proc}",
                               f"data.objective={args.objective}", f"data.max_seq_length={args.max_seq_length}",
                               f"data.dupe_factor={args.dupe_factor}", "data.validation_fraction=0.02",
                               "model.max_position_embeddings=512", f"data.cache_dir={args.workdir}/cache"])
    warm_imports()
    t0, c0 = time.perf_counter(), cpu_seconds()
    path = prepare_pretraining_data(cfg)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    stats = json.loads((path / "stats.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "examples": stats["train"]["examples"], "tokens": stats["train"]["tokens"],
            "cpu_time_s": stats["train"]["cpu_time_s"], "time_s": stats["time_s"],
            "label_1": stats["train"].get("label_1_fraction"), "num_proc": stats["num_proc"],
            "padding": stats["train"]["padding_fraction_at_max_seq_length"]}


def run_child(mode: str, args, extra_env=None, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--corpus", str(args.corpus), "--tokenizer", str(args.tokenizer),
           "--objective", args.objective, "--max-seq-length", str(args.max_seq_length),
           "--dupe-factor", str(args.dupe_factor)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def subset_corpus(src: Path, max_mb: float | None, tmp: Path) -> Path:
    if not max_mb:
        return src
    out, size = tmp / "corpus.jsonl", 0
    with open(src, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        for line in f:
            size += len(json.loads(line)["text"].encode())
            if size > max_mb * 1e6:
                break
            g.write(line)
    return out


def ensure_tokenizer(corpus: Path, vocab_size: int) -> Path:
    """A WordPiece tokenizer trained on the corpus (cached between benchmark runs; not timed)."""
    from mlm_pretrain.config import load_config
    from mlm_pretrain.tokenizer import train_tokenizer

    tag = hashlib.sha256(f"{corpus.resolve()}:{corpus.stat().st_size}:{vocab_size}".encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"mlm_bench_tok_{tag}"
    cfg = load_config("tiny", [f"output_dir={out}", f"corpus.files=[{corpus}]", f"tokenizer.vocab_size={vocab_size}"])
    return train_tokenizer(cfg)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="jsonl corpus (field text)")
    p.add_argument("--max-mb", type=float, default=None, help="use only the first MB of text (smoke runs)")
    p.add_argument("--num-proc", default="1,2", help="comma-separated data.num_proc values")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer dir (default: train 16k WordPiece)")
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--objective", default="nsp")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--dupe-factor", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the fastest run of each path counts")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()

    if args.child:
        result = child_plain(args) if args.child == "plain" else child_prepare(args)
        result["rss_main_mb"], result["rss_children_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    if not args.corpus.is_file():
        sys.exit(f"corpus {args.corpus} not found (give --corpus)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args.corpus = subset_corpus(args.corpus, args.max_mb, tmp)
        mb = sum(len(t.encode()) for t in read_texts(args.corpus)) / 1e6
        args.tokenizer = args.tokenizer or ensure_tokenizer(args.corpus, args.vocab_size)
        from mlm_pretrain.config import CorpusConfig
        from mlm_pretrain.corpus import load_documents

        load_documents(CorpusConfig(files=(str(args.corpus),)))  # json -> Arrow once, outside the timings
        print(f"corpus {args.corpus} ({mb:.1f} MB of text), tokenizer {args.tokenizer}, objective "
              f"{args.objective}, max_seq_length {args.max_seq_length}, dupe_factor {args.dupe_factor}, "
              f"{os.cpu_count()} CPUs\n", flush=True)
        def plain(env):
            return lambda: run_child("plain", args, env)

        def prepare(n):
            def go():
                work = tmp / f"prep{n}"
                try:
                    return run_child("prepare", args, workdir=work, num_proc=n)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            return go

        paths = [("plain tokenizer(texts), 1 thread", plain({"TOKENIZERS_PARALLELISM": "false"})),
                 ("plain tokenizer(texts), all cores", plain({"TOKENIZERS_PARALLELISM": "true"}))]
        paths += [(f"prepare num_proc={n}", prepare(n)) for n in [int(x) for x in args.num_proc.split(",")]]
        best: dict[str, dict] = {}
        for rep in range(args.repeat):  # interleaved rounds; keep each path's fastest (least disturbed) run
            for label, measure in paths:
                r = measure()
                if label not in best or r["wall_s"] < best[label]["wall_s"]:
                    best[label] = r
            print(f"round {rep + 1}/{args.repeat}: " + ", ".join(f"{lab}: {mb / best[lab]['wall_s']:.2f} MB/s"
                                                               for lab, _ in paths), flush=True)
        rows = [(label, best[label]) for label, _ in paths]

        print("| path | MB/s (wall) | wall s | CPU s | MB per CPU-s | tokens | examples | peak RSS main MB | "
              "peak RSS workers MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, r in rows:
            print(f"| {label} | {mb / r['wall_s']:.2f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{mb / r['cpu_s']:.2f} | {r['tokens']:,} | {r.get('examples', '-')} | {r['rss_main_mb']:.0f} | "
                  f"{r['rss_children_mb']:.0f} |")
        load = os.getloadavg()[0]
        print(f"\nload average at the end: {load:.1f} on {os.cpu_count()} CPUs"
              + (" (other work was running: wall-clock figures are perturbed)" if load > 1.5 else ""))
        print("\nprojection for idle cores (when other work shares the machine, wall time cannot show a second "
              "core):\n  plain 1 thread: wall = its CPU s; prepare: wall = serial CPU s + (CPU s in the example "
              "builders) / num_proc")
        for label, r in rows:
            if label.endswith("1 thread"):
                print(f"  {label}: {mb / r['cpu_s']:.2f} MB/s")
            elif "cpu_time_s" in r:
                n = r["num_proc"]  # processes actually used (at most one per group of documents)
                parallel = sum(r["cpu_time_s"].values())
                print(f"  {label}: {mb / (r['cpu_s'] - parallel + parallel / n):.2f} MB/s "
                      f"(serial {r['cpu_s'] - parallel:.1f} CPU s, parallel {parallel:.1f} CPU s)")
        print("\nwhere prepare's time goes (CPU seconds summed over processes; wall seconds per phase):")
        for label, r in rows:
            if "cpu_time_s" in r:
                print(f"  {label}: cpu {r['cpu_time_s']}  wall {r['time_s']}  "
                      f"label-1 {r['label_1']}  padding {r['padding']}")


if __name__ == "__main__":
    main()
