"""Tiny stand-ins for the public Hub data the packaged recipes name, in the Hub's own layouts, and tiny
model repositories, to seed tests/hub_server.py with (tests/test_hub_inputs.py, tests/test_recipes.py).

- ``Salesforce/wikitext``: configurations ``wikitext-2-raw-v1`` and ``wikitext-103-raw-v1``, one parquet
  file per split under ``<config>/``, rows as WikiText has them (headings `` = Title = ``, paragraphs,
  blank rows), made from the bundled ``data/corpus.txt``;
- ``nyu-mll/glue``: configurations ``sst2`` (``sentence``, ``label``: negative/positive, ``idx``),
  ``mrpc`` (``sentence1``, ``sentence2``, ``label``: not_equivalent/equivalent, ``idx``), and ``cola``,
  ``rte`` and ``stsb`` (a float ``label``) in GLUE's columns, parquet under
  ``<config>/`` with a README whose ``configs:`` name the files as GLUE's does, and a ``test`` split of
  label -1 (GLUE's unlabelled test rows), made from the bundled ``data/sentiment`` and ``data/paraphrase``;
- ``sentence-transformers/all-MiniLM-L6-v2`` (the ``continue`` recipe's start): a tiny ``BertModel``
  without pretraining head and its WordPiece tokenizer, saved as sentence-transformers saves that
  checkpoint (``tokenizer.json`` with truncation and fixed padding at 128, ``modules.json``, ``1_Pooling/``);
- a model repository: a save_pretrained folder of a tiny model and its tokenizer.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

WIKITEXT = "Salesforce/wikitext"
WIKITEXT_CONFIGS = ("wikitext-2-raw-v1", "wikitext-103-raw-v1")
GLUE = "nyu-mll/glue"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def parquet_bytes(columns: dict, features=None) -> bytes:
    """A parquet file as ``datasets`` writes it (its features, ClassLabel names included, in the schema)."""
    import datasets

    buf = io.BytesIO()
    datasets.Dataset.from_dict(columns, features=features).to_parquet(buf)
    return buf.getvalue()


def wikitext_rows() -> list[str]:
    """data/corpus.txt as WikiText rows: per document a heading row, then its sentences as one paragraph
    row (WikiText's rows are whole paragraphs), with blank rows between."""
    docs = [d.strip().splitlines() for d in (DATA / "corpus.txt").read_text(encoding="utf-8").split("\n\n") if d.strip()]
    rows: list[str] = []
    for i, lines in enumerate(docs):
        rows += ["", f" = Document {i} = ", "", " " + " ".join(line.strip() for line in lines) + " ", ""]
    return rows


def wikitext_files() -> dict[str, bytes]:
    rows = wikitext_rows()
    cut = len(rows) * 9 // 10
    splits = {"train": rows[:cut], "validation": rows[cut:], "test": rows[cut:]}
    files = {f"{config}/{split}-00000-of-00001.parquet": parquet_bytes({"text": texts})
             for config in WIKITEXT_CONFIGS for split, texts in splits.items()}
    files["README.md"] = _readme({config: list(splits) for config in WIKITEXT_CONFIGS})
    return files


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def glue_files() -> dict[str, bytes]:
    import datasets

    files: dict[str, bytes] = {}
    sst2 = datasets.Features({"sentence": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["negative", "positive"]),
                              "idx": datasets.Value("int32")})
    mrpc = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                              "idx": datasets.Value("int32")})
    for split, name in (("train", "train"), ("validation", "validation")):
        rows = _read_csv(DATA / "sentiment" / f"{name}.csv")
        files[f"sst2/{split}-00000-of-00001.parquet"] = parquet_bytes(
            {"sentence": [r["text"] for r in rows], "label": [int(r["label"] == "positive") for r in rows],
             "idx": list(range(len(rows)))}, sst2)
        rows = _read_csv(DATA / "paraphrase" / f"{name}.csv")
        files[f"mrpc/{split}-00000-of-00001.parquet"] = parquet_bytes(
            {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows],
             "label": [int(r["label"]) for r in rows], "idx": list(range(len(rows)))}, mrpc)
    # the other three GLUE tasks of the suite, made from the same rows: CoLA (one sentence, acceptability),
    # RTE (pairs, entailment) and STS-B (pairs, a 0-5 similarity: a regression task)
    cola = datasets.Features({"sentence": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["unacceptable", "acceptable"]),
                              "idx": datasets.Value("int32")})
    rte = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                             "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                             "idx": datasets.Value("int32")})
    stsb = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                              "label": datasets.Value("float32"), "idx": datasets.Value("int32")})
    for split, name in (("train", "train"), ("validation", "validation")):
        rows = _read_csv(DATA / "sentiment" / f"{name}.csv")
        files[f"cola/{split}-00000-of-00001.parquet"] = parquet_bytes(
            {"sentence": [r["text"] for r in rows], "label": [int(r["label"] == "positive") for r in rows],
             "idx": list(range(len(rows)))}, cola)
        rows = _read_csv(DATA / "paraphrase" / f"{name}.csv")
        pairs = {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows],
                 "idx": list(range(len(rows)))}
        files[f"rte/{split}-00000-of-00001.parquet"] = parquet_bytes(
            {**pairs, "label": [1 - int(r["label"]) for r in rows]}, rte)
        files[f"stsb/{split}-00000-of-00001.parquet"] = parquet_bytes(
            {**pairs, "label": [4.0 * int(r["label"]) + (i % 5) / 5 for i, r in enumerate(rows)]}, stsb)
    files["stsb/test-00000-of-00001.parquet"] = parquet_bytes(
        {"sentence1": ["a"], "sentence2": ["b"], "label": [-1.0], "idx": [0]}, stsb)
    files["sst2/test-00000-of-00001.parquet"] = parquet_bytes(
        {"sentence": ["an unlabelled test sentence", "another one"], "label": [-1, -1], "idx": [0, 1]}, sst2)
    files["mrpc/test-00000-of-00001.parquet"] = parquet_bytes(
        {"sentence1": ["a"], "sentence2": ["b"], "label": [-1], "idx": [0]}, mrpc)
    files["README.md"] = _readme({"sst2": ["train", "validation", "test"], "mrpc": ["train", "validation", "test"],
                                  "cola": ["train", "validation"], "rte": ["train", "validation"],
                                  "stsb": ["train", "validation", "test"]})
    return files


def _readme(configs: dict[str, list[str]]) -> bytes:
    """A dataset card whose YAML ``configs:`` names each configuration's files per split, as GLUE's does."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {config}/{s}-*" for s in splits]
    return ("\n".join(lines) + "\n---\n\n# A test stand-in\n").encode()


def model_files(folder: Path) -> dict[str, bytes]:
    """Every file of a save_pretrained folder (subfolders too), for ``HubServer.add_repo``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@functools.lru_cache(maxsize=1)
def minilm_files() -> dict[str, bytes]:
    """A 1-layer, 32-wide ``BertModel`` (no MLM or NSP head) with an 800-piece WordPiece tokenizer trained on
    the bundled corpus, in all-MiniLM-L6-v2's repository layout."""
    import torch
    import transformers as T

    from mlm_pretrain.config import TokenizerConfig
    from mlm_pretrain.tokenizer import train_wordpiece

    lines = [line for line in (DATA / "corpus.txt").read_text(encoding="utf-8").split("\n") if line.strip()]
    tok = train_wordpiece(lambda: iter([lines]), TokenizerConfig(vocab_size=800, model_max_length=512))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T.BertModel(T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=512))
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        model.save_pretrained(str(folder))
        tok.save_pretrained(str(folder))
        spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        spec["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}
        spec["padding"] = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
                           "pad_id": tok.pad_token_id, "pad_type_id": 0, "pad_token": tok.pad_token}
        (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                       "pooling_mode_mean_tokens": True}))
        return model_files(folder)


def seed_recipe_data(server) -> None:
    """The Hub datasets and the starting model the packaged recipes name, as tiny stand-ins."""
    server.add_repo(WIKITEXT, wikitext_files(), repo_type="dataset")
    server.add_repo(GLUE, glue_files(), repo_type="dataset")
    server.add_repo(MINILM, minilm_files())
