"""Stage 1: train (or reuse) a tokenizer on the corpus: WordPiece (BERT), byte-level BPE (RoBERTa,
ModernBERT) or Unigram (ALBERT), by ``tokenizer.type``.

    mlm-pretrain tokenizer --config tiny                       # -> runs/tiny/tokenizer/
    mlm-pretrain tokenizer --config tiny tokenizer.type=bpe    # byte-level BPE
    mlm-pretrain tokenizer tokenizer.pretrained=path/to/tok    # reuse an existing tokenizer directory

The corpus is streamed to the ``tokenizers`` trainer in batches (memory does not grow with the
corpus). The saved directory is a plain Hugging Face tokenizer: ``AutoTokenizer.from_pretrained(dir)``
gives a fast ``BertTokenizer`` (WordPiece; the slow ``BertTokenizerLegacy`` loads the same ``vocab.txt``
with identical ids) or a fast ``TokenizersBackend`` (BPE, Unigram). Whatever the kind, the rest of the
pipeline finds the special tokens by role (``cls_token``, ``sep_token``, ``mask_token``, ``pad_token``)
and word starts from the tokenizer itself (:func:`word_starts`). A report on held-out documents
(:func:`tokenizer_report`) goes to ``<output_dir>/tokenizer/report.json``.
"""
from __future__ import annotations

from .errors import UserError

import json
import logging
import shutil
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from .config import Config, TokenizerConfig, fingerprint_dict, resolve_path, save_resolved
from .corpus import corpus_content_hash, corpus_fingerprint, is_validation_document, iter_batches, load_documents
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


def _normalizer(cfg: TokenizerConfig, unicode_form: str):
    """``unicode_form`` (NFC for byte-level BPE, NFKC for Unigram), then accents stripped and lower case
    as ``strip_accents`` / ``lowercase`` say (``strip_accents: null`` follows ``lowercase``, as BERT's)."""
    from tokenizers import normalizers

    steps = [getattr(normalizers, unicode_form)()]
    if cfg.strip_accents or (cfg.strip_accents is None and cfg.lowercase):
        steps += [normalizers.NFD(), normalizers.StripAccents(), getattr(normalizers, unicode_form)()]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def wrap_backend(backend, cfg: TokenizerConfig):
    """A transformers fast tokenizer over a trained BPE / Unigram ``backend``, with the roles of
    ``tokenizer.special_tokens`` and BERT's pair template (``[CLS] A [SEP] B [SEP]``, token types 0/1), as
    ModernBERT's and ALBERT's tokenizers have."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    special = _special(cfg)
    cls, sep = special["cls_token"], special["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=cfg.model_max_length, **special)
    extra = list(cfg.special_tokens[len(ROLES):])
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


def train_bpe(batches, cfg: TokenizerConfig, length: int | None = None):
    """Train a byte-level BPE vocabulary (RoBERTa's and ModernBERT's kind: every byte is a piece, so no
    text is ever unknown; a ``Ġ`` marks a piece that follows a space). ``batches()`` returns an iterator of
    text batches. Deterministic as trained: the alphabet is the 256 bytes numbered in a fixed order, and
    merges of equal count are chosen by those numbers (tested: identical ``tokenizer.json`` every time)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    n_special = len(cfg.special_tokens)
    if cfg.vocab_size < 256 + n_special:
        raise TokenizerError(f"tokenizer.vocab_size={cfg.vocab_size} is smaller than byte-level BPE's alphabet: "
                             f"256 bytes plus {n_special} special tokens; raise tokenizer.vocab_size to at least "
                             f"{256 + n_special + 100}")
    backend = Tokenizer(models.BPE())
    backend.normalizer = _normalizer(cfg, "NFC")
    # add_prefix_space: a sentence's first word gets its Ġ too, so it has the ids it has inside a sentence
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                  special_tokens=list(cfg.special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(batches(), trainer=trainer, length=length)
    if backend.get_vocab_size() <= n_special + 256:
        raise TokenizerError("the tokenizer learned no merges: the corpus has no text (or too little for "
                             f"tokenizer.min_frequency={cfg.min_frequency})")
    return wrap_backend(backend, cfg)


def train_unigram(batches, cfg: TokenizerConfig, length: int | None = None):
    """Train a Unigram vocabulary (ALBERT's and T5's kind, SentencePiece's algorithm: ``▁`` marks a word
    start). ``batches()`` returns an iterator of text batches.

    The ``tokenizers`` Unigram trainer (0.23.3) is not deterministic: its sums run in hash-map order, so
    scores differ in the last bits between trainings, pieces of near-equal score swap ids, and the rare
    characters it appends get their scores in hash-set order. The vocabulary is therefore rebuilt in a
    fixed order: scores rounded to 1e-8, the appended characters given their scores in character order,
    pieces sorted by score then text (tested: identical ``tokenizer.json`` every time)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    special = _special(cfg)
    backend = Tokenizer(models.Unigram())
    # Whitespace as SentencePiece reads it (remove_extra_whitespaces): a run of spaces, tabs or newlines
    # is one space and the ends are stripped. Metaspace splits on " " only, so without this a line break
    # glues two words into one piece ("foreign\nexchange") and hides the word boundary from whole-word
    # masking and the tokenizer report.
    backend.normalizer = normalizers.Sequence([_normalizer(cfg, "NFKC"),
                                               normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=cfg.vocab_size, special_tokens=list(cfg.special_tokens),
                                      unk_token=special["unk_token"], show_progress=False)
    backend.train_from_iterator(batches(), trainer=trainer, length=length)
    spec = json.loads(backend.to_str())
    pieces = [(p, s) for p, s in spec["model"]["vocab"] if p not in cfg.special_tokens]
    if not pieces:
        raise TokenizerError("the tokenizer learned no vocabulary: the corpus has no text")
    vocab = [(t, 0.0) for t in cfg.special_tokens] + _fixed_order(pieces)
    backend.model = models.Unigram(vocab, unk_id=cfg.special_tokens.index(special["unk_token"]), byte_fallback=False)
    return wrap_backend(backend, cfg)


def _fixed_order(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Unigram pieces in an order (and with scores) that do not depend on the trainer's hash maps. The
    characters the trainer adds back after pruning get the scores ``min + k x 1e-4`` (``k`` = 0, 1, ...) in
    hash-set order: the same scores are given to the same characters, sorted."""
    low = min(s for _, s in pieces)
    appended = [i for i, (p, s) in enumerate(pieces)
                if len(p) == 1 and abs((s - low) / 1e-4 - round((s - low) / 1e-4)) < 1e-4 and s - low < 1.0]
    if len(appended) > 1:
        scores = sorted((pieces[i][1] for i in appended), reverse=True)
        for i, (p, s) in zip(appended, zip(sorted(pieces[i][0] for i in appended), scores)):
            pieces[i] = (p, s)
    return sorted(((p, round(s, 8)) for p, s in pieces), key=lambda ps: (-ps[1], ps[0]))


def save_tokenizer(tok, out_dir: Path) -> Path:
    """Save atomically (temporary folder then rename) so a crash never leaves half a tokenizer."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    # transformers 5 saves only tokenizer.json; vocab.txt keeps a WordPiece directory loadable by the slow
    # BertTokenizerLegacy and by tools that read BERT vocabularies (Google's and NVIDIA's code).
    if json.loads(tok.backend_tokenizer.to_str())["model"]["type"] == "WordPiece":
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


#: Files of which one makes a folder a tokenizer (a checkpoint's own: transformers 5's tokenizer.json, a BERT
#: vocab.txt, a GPT-2 / RoBERTa vocab.json, a SentencePiece model).
GIVEN_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
#: tokenizer.type -> the name of the vocabulary it trains (logs and reports).
KIND_NAMES = {"wordpiece": "WordPiece", "bpe": "byte-level BPE", "unigram": "Unigram"}


def _components(spec: Optional[dict]) -> list[dict]:
    """A pre-tokenizer's or decoder's JSON and, for a ``Sequence``, its members."""
    if not spec:
        return []
    members = spec.get("pretokenizers") or spec.get("decoders")
    return [spec] + [m for s in (members or []) for m in _components(s)]


def _byte_level_start(piece: str, byte_of: dict[str, int]) -> bool:
    """A byte-level piece starts a word when its first byte is a space or newline (``Ġ``, ``Ċ``...) or an
    ASCII character that is not a letter or digit: GPT-2's pre-tokenizer splits punctuation from the word
    before it, as BERT's does. Letters, digits and the bytes of non-ASCII characters continue a word."""
    b = byte_of.get(piece[0]) if piece else None
    return b is None or (b < 128 and not chr(b).isalnum())


def word_starts(tokenizer) -> list[bool]:
    """For every id of ``tokenizer``, whether its piece starts a word (whole-word masking's boundaries),
    read off the tokenizer's model, pre-tokenizer and decoder rather than guessed from the strings:

    * WordPiece (or a BPE with a ``continuing_subword_prefix``): a piece without the prefix (``##``);
    * byte-level (a ``ByteLevel`` pre-tokenizer or decoder: RoBERTa, ModernBERT, GPT-2): a piece that
      begins with a space byte (``Ġ``) or with punctuation (:func:`_byte_level_start`);
    * SentencePiece-style (a ``Metaspace`` pre-tokenizer or decoder: ALBERT, T5, Llama): a piece that
      begins with its replacement character (``▁``).

    Added tokens are words of their own. Special tokens are never masked, whatever their entry."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    parts = _components(spec.get("pre_tokenizer")) + _components(spec.get("decoder"))
    kinds = {p.get("type"): p for p in parts}
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    prefix = model.get("continuing_subword_prefix")
    if model.get("type") == "WordPiece" or prefix:
        prefix = prefix or "##"
        starts = [not (t or "").startswith(prefix) for t in tokens]
    elif "ByteLevel" in kinds:
        byte_of = _byte_decoder()
        starts = [_byte_level_start(t or "", byte_of) for t in tokens]
    elif "Metaspace" in kinds:
        replacement = kinds["Metaspace"].get("replacement") or "▁"
        starts = [(t or "").startswith(replacement) for t in tokens]
    else:
        raise TokenizerError(
            f"masking.whole_word needs word boundaries, but this tokenizer ({model.get('type')} model, pre-tokenizer "
            f"{', '.join(p.get('type', '?') for p in parts) or 'none'}) marks none that can be read: WordPiece's ## "
            "prefix, byte-level BPE's Ġ and SentencePiece's ▁ are understood; use masking.whole_word=false, or "
            "a tokenizer of one of those kinds")
    for i in tokenizer.added_tokens_decoder:
        if i < len(starts):
            starts[i] = True
    return starts


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-character table, reversed: the character a byte-level piece shows -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


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
    if getattr(tok, "backend_tokenizer", None) is not None:
        plain_backend(tok.backend_tokenizer)
    check_tokenizer(tok, str(p))
    return tok


def plain_backend(backend):
    """``backend`` (a ``tokenizers.Tokenizer``) with the truncation and padding stored in its
    ``tokenizer.json`` switched off; returned. sentence-transformers checkpoints (all-MiniLM-L6-v2 and its
    kind) save theirs with ``truncation: 128`` and ``padding: Fixed 128``; ``tokenizer(...)`` sets both per
    call, but the stages that encode through the backend (examples, word starts, the tokenizer report) would
    read every document as its first 128 pieces padded to 128."""
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return backend


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


#: The tokenizer report reads at most this many characters of held-out documents, and of the corpus for
#: the vocabulary's use (a bounded cost on any corpus).
REPORT_CHARS = 2_000_000
REPORT_CORPUS_CHARS = 20_000_000


def _sample(texts, limit: int) -> list[str]:
    out, n = [], 0
    for t in texts:
        if n >= limit:
            break
        out.append(t)
        n += len(t)
    return out


def tokenizer_report(tok, docs, validation_fraction: float, longest: int = 10) -> dict:
    """How ``tok`` cuts the corpus ``docs`` (a ``datasets`` (Iterable)Dataset with ``text``, or a list of
    texts; read in batches, never whole).

    On the held-out documents (pretraining's validation documents, by the same rule; the first documents
    when ``validation_fraction`` is 0), at most :data:`REPORT_CHARS` characters: tokens per word
    (whitespace-separated), tokens per character (spaces included) and the share of unknown tokens. On
    the corpus (at most :data:`REPORT_CORPUS_CHARS` characters): the share of the vocabulary's non-special
    entries it uses. And the ``longest`` longest pieces, as text. No special tokens are counted.

    Texts are read as the pretraining examples hold them: each run of whitespace is one space (the
    examples are sentences joined by the prepare stage). A byte-level BPE keeps line breaks as pieces of
    their own, which pretraining never sees: counted, they made a Reuters BPE look 11% costlier than it is."""
    def texts():
        return iter(docs) if isinstance(docs, list) else (t for b in iter_batches(docs, 1000) for t in b)

    def spaced(raw):
        return (" ".join(t.split()) for t in raw)

    held = _sample(spaced(t for t in texts() if is_validation_document(t, validation_fraction)), REPORT_CHARS)
    source = "held-out documents (data.validation_fraction)"
    if not held:
        held, source = _sample(spaced(texts()), REPORT_CHARS), "the first documents (no held-out documents)"
    backend = tok.backend_tokenizer
    special = set(tok.all_special_ids)

    def ids_of(batch: list[str]) -> list[list[int]]:
        return [e.ids for e in backend.encode_batch_fast(batch, add_special_tokens=False)] if batch else []

    held_ids = ids_of(held)
    tokens = sum(len(i) for i in held_ids)
    words = sum(len(t.split()) for t in held)
    chars = sum(len(t) for t in held)
    unk = tok.unk_token_id
    used: set[int] = set()
    sample = _sample(spaced(texts()), REPORT_CORPUS_CHARS)
    for start in range(0, len(sample), 1000):  # a batch at a time: ids of 20M characters would be ~200 MB
        for ids in ids_of(sample[start:start + 1000]):
            used.update(ids)
    vocab = [i for i in range(len(tok)) if i not in special]
    pieces = sorted(((tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]).strip(), i) for i in vocab),
                    key=lambda p: (-len(p[0]), p[1]))
    return {"type": json.loads(backend.to_str())["model"]["type"], "vocab_size": len(tok),
            "held_out": {"source": source, "documents": len(held), "words": words, "characters": chars,
                         "tokens": tokens},
            "tokens_per_word": round(tokens / words, 4) if words else None,
            "tokens_per_character": round(tokens / chars, 4) if chars else None,
            "unknown_share": round(sum(i.count(unk) for i in held_ids) / tokens, 6) if tokens and unk is not None
            else 0.0,
            "vocabulary_used_share": round(len(used - special) / len(vocab), 4) if vocab else None,
            "longest_pieces": [p for p, _ in pieces[:longest]]}


def format_tokenizer_report(report: dict) -> str:
    """The report as a markdown section (the run's ``report.md``)."""
    held = report["held_out"]
    return "\n".join([
        f"### Tokenizer ({report['type']}, {report['vocab_size']} entries)", "",
        f"On {held['documents']} {held['source']} ({held['words']} words):", "",
        "| tokens per word | tokens per character | unknown tokens | vocabulary used by the corpus |",
        "|---:|---:|---:|---:|",
        f"| {report['tokens_per_word']} | {report['tokens_per_character']} | {100 * report['unknown_share']:.2f}% "
        f"| {100 * (report['vocabulary_used_share'] or 0):.1f}% |", "",
        "Longest pieces: " + ", ".join(f"`{p}`" for p in report["longest_pieces"])])


def write_report(report: dict, folder: Path) -> Path:
    """``folder/report.json``, and the report in the log."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "report.json"
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    logger.info("tokenizer report (%s): %s tokens per word, %s per character, %.2f%% unknown, %.1f%% of the "
                "vocabulary used; longest pieces %s -> %s", report["held_out"]["source"], report["tokens_per_word"],
                report["tokens_per_character"], 100 * report["unknown_share"],
                100 * (report["vocabulary_used_share"] or 0), report["longest_pieces"][:5], out)
    return out


def train_tokenizer(cfg: Config) -> Path:
    """Stage function: train the tokenizer of ``tokenizer.type`` on ``cfg.corpus`` and save it; returns its
    directory.

    With ``tokenizer.pretrained`` set, checks that directory and returns it instead. A tokenizer
    already trained by this run on the same corpus and settings is reused. Either way the tokenizer report
    (:func:`tokenizer_report`) is in ``<output_dir>/tokenizer/report.json``.
    """
    layout = RunLayout.of(cfg)
    out = layout.tokenizer  # the run's tokenizer: tokenizer.pretrained or <output_dir>/tokenizer
    task = task_text(cfg)
    if cfg.tokenizer.pretrained or out != layout.root / "tokenizer":  # given, or model.init_from's own
        if not cfg.tokenizer.pretrained and not any((out / f).is_file() for f in GIVEN_FILES):
            raise TokenizerError(f"model.init_from={cfg.model.init_from!r} has no tokenizer ({' / '.join(GIVEN_FILES)}), "
                                 "and continued pretraining must use the tokenizer the checkpoint was trained with; set "
                                 "tokenizer.pretrained to it (a folder or a Hub id)")
        tok = load_tokenizer(out)
        report_given(cfg, tok, tokenizer_hash(out))
        return out

    # the settings as the fingerprints hold them: one added later (tokenizer.type) at its default keeps the key
    key = {"corpus": corpus_fingerprint(cfg.corpus, task), "tokenizer": fingerprint_dict(cfg)["tokenizer"]}
    stamp = out / "mlm_pretrain_tokenizer.json"
    saved = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if saved.get("key") == key:
        logger.info("tokenizer up to date in %s (same corpus and settings); reusing it", out)
        report_given(cfg, load_tokenizer(out), tokenizer_hash(out))
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
    kind = cfg.tokenizer.type
    passes = iter(("tokenizer: alphabet", "tokenizer: pieces") if kind == "wordpiece" else ("tokenizer",))
    trainer = {"wordpiece": train_wordpiece, "bpe": train_bpe, "unigram": train_unigram}[kind]
    tok = trainer(lambda: tqdm(iter_batches(docs, cfg.tokenizer.batch_size), total=n_batches,
                               desc=next(passes), unit="batch", disable=None),
                  cfg.tokenizer, length=len(docs))
    save_tokenizer(tok, out)
    stamp.write_text(json.dumps({"key": key, "corpus_content": content, "documents": len(docs), "vocab_size": len(tok)},
                                indent=1))
    logger.info("trained a %d-entry %s vocabulary on %d documents -> %s", len(tok), KIND_NAMES[kind], len(docs), out)
    report = tokenizer_report(tok, docs, cfg.data.validation_fraction)
    write_report({**report, "key": report_key(tokenizer_hash(out), key["corpus"])}, layout.root / "tokenizer")
    return out


#: Bumped when the report's numbers change for the same tokenizer and corpus, so that an older report is
#: not kept. 2: a tokenizer.json's stored truncation and padding no longer cut the documents. 3: runs of
#: whitespace read as one space (a byte-level BPE's line-break pieces are not counted).
REPORT_VERSION = 3


def report_key(tok_hash: str, corpus: str) -> dict:
    """What a ``report.json`` is about: the tokenizer, the corpus, and the reader that wrote it."""
    return {"tokenizer": tok_hash, "corpus": corpus, "version": REPORT_VERSION}


def report_given(cfg: Config, tok, tok_hash: str) -> None:
    """The tokenizer report for a tokenizer this run did not just train (``tokenizer.pretrained``, or one
    trained before), unless ``<output_dir>/tokenizer/report.json`` is already about it and this corpus."""
    folder = RunLayout.of(cfg).root / "tokenizer"
    key = report_key(tok_hash, corpus_fingerprint(cfg.corpus, task_text(cfg)))
    try:
        if json.loads((folder / "report.json").read_text(encoding="utf-8")).get("key") == key:
            return
    except (OSError, ValueError):
        pass
    docs = load_documents(cfg.corpus, streaming=cfg.data.streaming, task=task_text(cfg))
    write_report({**tokenizer_report(tok, docs, cfg.data.validation_fraction), "key": key}, folder)
