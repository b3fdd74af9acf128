"""Stage 1: train (or reuse) a BERT WordPiece tokenizer on the corpus.

    mlm-pretrain tokenizer --config tiny                       # -> runs/tiny/tokenizer/
    mlm-pretrain tokenizer tokenizer.pretrained=path/to/tok    # reuse an existing tokenizer directory

The corpus is streamed to ``tokenizers``' WordPiece trainer in batches (memory does not grow with the
corpus). The saved directory is a plain Hugging Face tokenizer: ``AutoTokenizer.from_pretrained(dir)``
gives a fast ``BertTokenizer`` and the slow ``BertTokenizerLegacy`` loads the same ``vocab.txt`` with
identical ids.
"""
from __future__ import annotations

from .errors import UserError

import json
import logging
import shutil
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .config import Config, TokenizerConfig, resolve_path, save_resolved, to_dict
from .corpus import corpus_content_hash, corpus_fingerprint, iter_batches, load_documents
from .finetune_data import task_text
from .layout import RunLayout

logger = logging.getLogger(__name__)

#: Roles of the first five special tokens, in the order of ``tokenizer.special_tokens``.
ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
REQUIRED_TOKENS = ("cls_token", "sep_token", "mask_token", "pad_token")


class TokenizerError(UserError):
    """A tokenizer that cannot be trained or used; the message says why and what to change."""


def _special(cfg: TokenizerConfig) -> dict[str, str]:
    return dict(zip(ROLES, cfg.special_tokens))


def build_bert_tokenizer(vocab: dict[str, int], cfg: TokenizerConfig):
    """A transformers fast ``BertTokenizer`` over ``vocab`` with the BERT normalizer, pre-tokenizer,
    ``[CLS] A [SEP] B [SEP]`` post-processor (token type ids 0/1) and WordPiece decoder."""
    from transformers import BertTokenizer

    special = _special(cfg)
    extra = [t for t in cfg.special_tokens[len(ROLES):]]
    tok = BertTokenizer(
        vocab=vocab,
        do_lower_case=cfg.lowercase,
        strip_accents=cfg.strip_accents,
        tokenize_chinese_chars=cfg.handle_chinese_chars,
        model_max_length=cfg.model_max_length,
        **special,
    )
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


def train_wordpiece_once(batches, cfg: TokenizerConfig, vocab_size: int, seeded: Sequence[str] = (),
                         length: int | None = None):
    """One run of ``tokenizers``' WordPiece trainer (BERT normalizer and pre-tokenizer) over an iterator of
    text batches; returns the backend ``tokenizers.Tokenizer``. ``seeded`` pieces are numbered right after
    the special tokens. Alone (no ``seeded``), its ids follow hash-map order: use :func:`train_wordpiece`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.WordPiece(unk_token=_special(cfg)["unk_token"]))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=cfg.handle_chinese_chars,
        strip_accents=cfg.strip_accents, lowercase=cfg.lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=cfg.min_frequency, limit_alphabet=cfg.limit_alphabet,
        special_tokens=[*cfg.special_tokens, *seeded], continuing_subword_prefix="##", show_progress=False)
    backend.train_from_iterator(batches, trainer=trainer, length=length)
    return backend


def train_wordpiece(batches, cfg: TokenizerConfig, length: int | None = None):
    """Train a WordPiece vocabulary; returns the fast tokenizer. ``batches()`` returns a fresh iterator
    of text batches (the corpus is read twice).

    The same corpus and settings give the same pieces under the same ids, every time. The ``tokenizers``
    trainer alone does not (huggingface/tokenizers#1794, 0.23.3): it numbers the ``##c`` continuation
    characters in hash-map order, and merges of equal count are chosen by those numbers, so two
    trainings differ in ids and, on ties, in pieces (the bundled corpus: 3 of 4 trainings in one process
    numbered 572-977 of 3,604 pieces differently, and their piece sets differed). So a first pass counts
    the words and collects the ``##c`` pieces (no merges), and the second pass numbers them in sorted
    order before training, by giving them to the trainer after the special tokens: every id, and so
    every tie-break, is then fixed. They become ordinary pieces of the vocabulary (the tokenizer built
    from it knows only ``tokenizer.special_tokens`` as special). The price is a second read of the
    corpus (``scripts/bench_tokenizer.py``)."""
    def train(vocab_size: int, seeded: list[str]) -> dict[str, int]:
        return train_wordpiece_once(batches(), cfg, vocab_size, seeded, length=length).get_vocab()

    # vocab_size=1 stops before the first merge: the alphabet and its ## forms only
    continuation = sorted(t for t in train(1, []) if t.startswith("##") and len(t) == 3
                          and t not in cfg.special_tokens)
    vocab = train(cfg.vocab_size, continuation)
    if len(vocab) > cfg.vocab_size:
        n_chars = sum(1 for t in vocab if len(t) == 1 or (t.startswith("##") and len(t) == 3))
        raise TokenizerError(
            f"tokenizer.vocab_size={cfg.vocab_size} is smaller than the alphabet plus special tokens: the "
            f"corpus needs {len(vocab)} entries ({len(cfg.special_tokens)} special, about {n_chars} single "
            f"characters and their ## forms); raise tokenizer.vocab_size to at least {len(vocab) + 100} "
            "or lower tokenizer.limit_alphabet")
    if len(vocab) <= len(cfg.special_tokens):
        raise TokenizerError("the tokenizer learned no vocabulary: the corpus has no text")
    return build_bert_tokenizer(vocab, cfg)


def save_tokenizer(tok, out_dir: Path) -> Path:
    """Save atomically (temporary folder then rename) so a crash never leaves half a tokenizer."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    # transformers 5 saves only tokenizer.json; vocab.txt keeps the directory loadable by the slow
    # BertTokenizerLegacy and by tools that read BERT vocabularies (Google's and NVIDIA's code).
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (tmp / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def check_tokenizer(tok, source: str = "tokenizer") -> None:
    """A tokenizer must define the BERT special tokens the pipeline relies on."""
    missing = [role for role in REQUIRED_TOKENS if getattr(tok, f"{role}_id", None) is None]
    if missing:
        raise TokenizerError(f"{source} has no {', '.join(missing)} (needed for MLM pretraining and pairs); "
                             "train one with `mlm-pretrain tokenizer` or add the tokens")
    special = set(tok.all_special_ids)
    if all(i in special for i in range(len(tok))):
        raise TokenizerError(f"{source} holds only special tokens ({len(tok)} entries: {', '.join(tok.all_special_tokens)}): "
                             "every word would become [UNK] and masking has no token to draw; train one with "
                             "`mlm-pretrain tokenizer` (without tokenizer.pretrained) or point tokenizer.pretrained "
                             "at a full vocabulary")


def load_tokenizer(path: str | Path):
    """Load a tokenizer directory with ``AutoTokenizer`` and check its special tokens."""
    from transformers import AutoTokenizer

    p = resolve_path(path)
    if not p.is_dir():
        raise TokenizerError(f"tokenizer directory {str(path)!r} does not exist; run `mlm-pretrain tokenizer` "
                             "first or fix tokenizer.pretrained (a tokenizer folder, or a Hub model id)")
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except Exception as e:
        raise TokenizerError(f"{p} is not a loadable tokenizer directory: {e}") from e
    check_tokenizer(tok, str(p))
    return tok


def tokenizer_hash(path: str | Path) -> str:
    """Content hash of a tokenizer directory's vocabulary and settings (for cache keys)."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        f = p / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def train_tokenizer(cfg: Config) -> Path:
    """Stage function: train the WordPiece tokenizer on ``cfg.corpus`` and save it; returns its directory.

    With ``tokenizer.pretrained`` set, checks that directory and returns it instead. A tokenizer
    already trained by this run on the same corpus and settings is reused.
    """
    layout = RunLayout.of(cfg)
    out = layout.tokenizer  # the run's tokenizer: tokenizer.pretrained or <output_dir>/tokenizer
    if cfg.tokenizer.pretrained:
        load_tokenizer(out)
        return out

    task = task_text(cfg)
    key = {"corpus": corpus_fingerprint(cfg.corpus, task), "tokenizer": to_dict(cfg.tokenizer)}
    stamp = out / "mlm_pretrain_tokenizer.json"
    saved = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if saved.get("key") == key:
        logger.info("tokenizer up to date in %s (same corpus and settings); reusing it", out)
        return out
    # Training again costs two reads of the corpus and, for a tokenizer trained by a version before the
    # seeded ## order (tokenizers#1794), would renumber pieces and orphan the checkpoints and caches built
    # on it: when only the files' paths or mtimes changed, compare the bytes.
    content = corpus_content_hash(cfg.corpus, task)
    if saved.get("key", {}).get("tokenizer") == key["tokenizer"] and content and saved.get("corpus_content") == content:
        stamp.write_text(json.dumps({**saved, "key": key}, indent=1))
        logger.info("tokenizer up to date in %s: the corpus files were moved, copied or touched but hold the same "
                    "bytes; reusing it", out)
        return out

    layout.root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, layout.config_yaml)
    docs = load_documents(cfg.corpus, task=task)
    n_batches = -(-len(docs) // cfg.tokenizer.batch_size)
    passes = iter(("tokenizer: alphabet", "tokenizer: pieces"))
    tok = train_wordpiece(lambda: tqdm(iter_batches(docs, cfg.tokenizer.batch_size), total=n_batches,
                                       desc=next(passes), unit="batch", disable=None),
                          cfg.tokenizer, length=len(docs))
    save_tokenizer(tok, out)
    stamp.write_text(json.dumps({"key": key, "corpus_content": content, "documents": len(docs), "vocab_size": len(tok)},
                                indent=1))
    logger.info("trained a %d-entry WordPiece vocabulary on %d documents -> %s", len(tok), len(docs), out)
    return out
