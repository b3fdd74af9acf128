"""Raw documents from the corpus spec, read through ``datasets``.

    from mlm_pretrain.corpus import load_documents
    docs = load_documents(cfg.corpus)        # a datasets.Dataset with one column "text", one row per document

One row is one document: in ``.txt`` files a blank line separates documents (Google BERT format) or,
with ``document_separator=line``, each line is a document; in structured files (jsonl/json, parquet,
csv) one record is one document and ``text_field`` names its column. With
``corpus.include_task_text`` the fine-tuning task's training texts follow as more documents
(:class:`MoreDocuments`; pass ``task=mlm_pretrain.finetune_data.task_text(cfg)``).

``.txt`` files are read by :func:`mlm_pretrain.textio.iter_lines` (a line ends at ``\\n``, ``\\r\\n`` or
``\\r``; a BOM is dropped; lines without end are cut into bounded pieces) into a ``datasets`` dataset
cached under the files' fingerprint; other formats by the ``datasets`` builders. Documents longer than
:data:`MAX_DOCUMENT_CHARS` become several documents, so later stages hold bounded pieces.

Problems are found before any long work: a missing file or empty glob names the path, an unknown
extension lists the known ones, a missing text column lists the columns that exist, invalid UTF-8 is
counted (``encoding_errors=replace``) or rejected with the file and byte offset (``strict``), an
empty file is skipped (all empty: an error naming them), a malformed JSON Lines record is named by file
and line, and a corpus with no text says so.
"""
from __future__ import annotations

from .errors import UserError

import glob
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol

from .config import Config, CorpusConfig, resolve_path
from .sources import LOCAL_CORPUS_KEYS, hub_dataset_revision, load_hub_dataset
from .textio import MAX_LINE_CHARS, first_bad_jsonl_line, iter_lines, split_oversized

logger = logging.getLogger(__name__)

EXTENSIONS = {
    ".txt": "text", ".text": "text",
    ".jsonl": "json", ".json": "json", ".ndjson": "json",
    ".parquet": "parquet",
    ".csv": "csv", ".tsv": "csv",
}


class CorpusError(UserError):
    """A corpus that cannot be read; the message names the file or field and the fix."""


@dataclass(frozen=True)
class CorpusFiles:
    """The expanded corpus: concrete files and their common ``datasets`` builder name."""

    paths: tuple[Path, ...]
    format: str

    def fingerprint(self) -> str:
        """Hash of the file paths, sizes and modification times (cheap; changes when a file changes)."""
        h = hashlib.sha256()
        for p in self.paths:
            st = p.stat()
            h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(self.format.encode())
        return h.hexdigest()[:16]

    def content_hash(self) -> str:
        """Hash of the files' bytes, in order (a full read: for checks that must not trust mtimes)."""
        h = hashlib.sha256()
        for p in self.paths:
            h.update(f"{p.stat().st_size}\0".encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(self.format.encode())
        return h.hexdigest()[:16]


def expand_files(cfg: CorpusConfig) -> CorpusFiles:
    """Expand globs, check every file exists and share one known format."""
    if not cfg.files:
        raise CorpusError("corpus.files is empty: give at least one file or glob (corpus.files=[path, ...])")
    paths: list[Path] = []
    for spec in cfg.files:
        if glob.has_magic(spec):
            matches = sorted(glob.glob(str(Path(spec).expanduser())))
            if not matches:  # try the project checkout, as for plain paths
                matches = sorted(glob.glob(str(resolve_path(".") / spec)))
            if not matches:
                raise CorpusError(f"corpus file pattern {spec!r} matches no file (working directory {Path.cwd()})")
            paths.extend(Path(m) for m in matches if Path(m).is_file())
        else:
            p = resolve_path(spec)
            if not p.is_file():
                raise CorpusError(f"corpus file {spec!r} does not exist (looked for {p.resolve()}); "
                                  "fix corpus.files")
            paths.append(p)
    if cfg.format != "auto":
        fmt = cfg.format
    else:
        formats = set()
        for p in paths:
            ext = p.suffix.lower()
            if ext not in EXTENSIONS:
                raise CorpusError(f"corpus file {str(p)!r} has an unknown format {ext or '(no extension)'!r}; "
                                  f"known extensions: {', '.join(sorted(EXTENSIONS))}; or set corpus.format "
                                  "to text, json, parquet or csv")
            formats.add(EXTENSIONS[ext])
        if len(formats) > 1:
            raise CorpusError(f"corpus files mix formats {sorted(formats)}; use files of one format per run")
        fmt = formats.pop()
    return CorpusFiles(tuple(paths), "text" if fmt == "text" else fmt)


def scan_utf8(path: Path) -> tuple[int, Optional[int]]:
    """(number of invalid UTF-8 sequences, byte offset of the first) of a file, read in 1 MiB chunks."""
    count, first = 0, None
    pos, buf = 0, b""  # pos: absolute offset of buf[0]
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            final = not chunk
            buf += chunk
            while True:
                try:
                    buf.decode("utf-8")
                    consumed = len(buf)
                    break
                except UnicodeDecodeError as e:
                    if not final and e.end == len(buf) and e.reason == "unexpected end of data":
                        consumed = e.start  # a character cut by the chunk boundary: read on
                        break
                    count += 1
                    first = pos + e.start if first is None else first
                    pos, buf = pos + e.end, buf[e.end:]
            pos, buf = pos + consumed, buf[consumed:]
            if final:
                return count, first


def check_encoding(paths: tuple[Path, ...], errors: str) -> dict[str, int]:
    """Scan files for invalid UTF-8 before loading. Returns {file: number of bad byte sequences};
    with ``errors='strict'`` raises on the first one, naming the file and byte offset."""
    bad: dict[str, int] = {}
    for p in paths:
        if p.suffix.lower() == ".parquet":
            continue
        count, first = scan_utf8(p)
        if not count:
            continue
        if errors == "strict":
            raise CorpusError(f"{p}: invalid UTF-8 at byte offset {first} ({count} bad sequence(s)); "
                              "re-encode the file as UTF-8 or set corpus.encoding_errors=replace")
        bad[str(p)] = count
        logger.warning("%s: %d invalid UTF-8 sequence(s) (first at byte %d) replaced by U+FFFD; "
                       "set corpus.encoding_errors=strict to refuse the file", p, count, first)
    return bad


class MoreDocuments(Protocol):
    """Documents that join the corpus after its own: the fine-tuning task's training texts
    (:class:`mlm_pretrain.finetune_data.TaskText`, ``corpus.include_task_text``)."""

    def identity(self, content: bool = False) -> Optional[str]:
        """Their part of the corpus fingerprint; with ``content``, of its bytes (None when those cannot be
        hashed here, e.g. a Hub dataset)."""

    def documents(self):
        """A ``datasets.Dataset`` with one ``text`` column."""


def load_documents(cfg: CorpusConfig, streaming: bool = False, task: Optional[MoreDocuments] = None):
    """The corpus as a ``datasets`` (Iterable)Dataset with a single ``text`` column, one row per document;
    then ``task``'s texts, when given (:func:`mlm_pretrain.finetune_data.task_text`).

    Empty documents are dropped. Raises :class:`CorpusError` for unreadable input.
    """
    ds = corpus_documents(cfg, streaming)
    if task is not None:
        import datasets

        extra = task.documents()
        ds = datasets.concatenate_datasets([ds, extra.to_iterable_dataset() if streaming else extra])
    return _bounded(ds, cfg, streaming)


def corpus_documents(cfg: CorpusConfig, streaming: bool = False):
    """The corpus' own documents (files or Hub dataset) with their text column checked; no task texts,
    no splitting of long documents yet."""
    import datasets

    if cfg.hub_dataset:
        ds = load_hub_dataset(cfg.hub_dataset, cfg.hub_config, split=cfg.split, streaming=streaming,
                              key="corpus.hub_dataset", local=LOCAL_CORPUS_KEYS)
        return _select_text(ds, cfg.text_field, f"{cfg.hub_dataset} [{cfg.split}]")

    files = expand_files(cfg)
    check_encoding(files.paths, cfg.encoding_errors)
    paths = _non_empty_files(files)
    data_files = [str(p) for p in paths]
    if files.format == "text":
        ds = _read_text(data_files, cfg, files.fingerprint(), streaming)
    else:
        kwargs: dict = {}
        if files.format == "json":
            kwargs = dict(encoding_errors=cfg.encoding_errors)
        elif files.format == "csv" and all(p.suffix.lower() == ".tsv" for p in paths):
            kwargs = dict(delimiter="\t", quoting=3)
        try:
            ds = datasets.load_dataset(files.format, data_files=data_files, split="train",
                                       streaming=streaming, **kwargs)
        except Exception as e:  # datasets wraps parser errors: find the file and line, name the fix
            raise CorpusError(_read_error(paths, files.format, e)) from e
        ds = _select_text(ds, cfg.text_field, ", ".join(data_files))
    return ds


def _bounded(ds, cfg: CorpusConfig, streaming: bool):
    # Bounded documents: one giant record (a book in one JSON field, a file without line breaks) would
    # cost memory in proportion to its size in every later stage.
    ds = ds.map(_split_oversized, batched=True).filter(_non_empty, batched=True)
    if not streaming and len(ds) == 0:
        files = None if cfg.hub_dataset else expand_files(cfg)
        source = cfg.hub_dataset or ", ".join(str(p) for p in _non_empty_files(files))
        raise CorpusError(f"the corpus is empty: {source} contain no non-blank text"
                          + ("" if files is not None and files.format == "text" else f" in field {cfg.text_field!r}"))
    return ds


#: Longest document (characters) kept whole; longer ones become several documents (cut at line ends).
MAX_DOCUMENT_CHARS = MAX_LINE_CHARS


def _non_empty_files(files: CorpusFiles) -> tuple[Path, ...]:
    """The files that hold bytes; empty ones are skipped with a warning, and a corpus of only empty
    files is an error naming them (before any parser sees them: datasets' message says nothing useful)."""
    empty = [p for p in files.paths if p.stat().st_size == 0]
    if len(empty) == len(files.paths):
        raise CorpusError(f"the corpus file(s) {', '.join(str(p) for p in empty)} are empty (0 bytes); "
                          "point corpus.files at files that hold text")
    if empty:
        logger.warning("skipping %d empty corpus file(s): %s", len(empty), ", ".join(str(p) for p in empty))
    return tuple(p for p in files.paths if p.stat().st_size > 0)


def _read_error(paths: tuple[Path, ...], fmt: str, exc: Exception) -> str:
    """The clearest message for a parser failure: the file and line of a malformed JSON Lines record."""
    if fmt == "json":
        for p in paths:
            if p.suffix.lower() == ".json" and not _looks_jsonl(p):
                continue  # one JSON document, not JSON Lines: the parser's own message stands
            bad = first_bad_jsonl_line(p)
            if bad is not None:
                return (f"{p} line {bad[0]}: {bad[1]}; every line of a JSON Lines corpus must be one JSON object "
                        "(fix or delete that line)")
    cause = exc.__cause__ or exc.__context__
    detail = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")
    return f"could not read corpus files {[str(p) for p in paths]} as {fmt}: {detail}"


def _looks_jsonl(path: Path) -> bool:
    """A .json file holding one object per line (datasets reads both kinds from .json)."""
    with open(path, "rb") as f:
        return b"\n{" in f.read(1 << 16)


def _read_text(data_files: list[str], cfg: CorpusConfig, fingerprint: str, streaming: bool):
    """.txt files as documents through :func:`mlm_pretrain.textio.iter_lines` (one definition of a line,
    bounded memory), cached by ``datasets`` under the files' fingerprint (paths, sizes, mtimes)."""
    import datasets

    kwargs = dict(files=data_files, separator=cfg.document_separator, encoding_errors=cfg.encoding_errors)
    features = datasets.Features({"text": datasets.Value("string")})
    if streaming:  # one shard per file, like datasets' own text builder
        return datasets.IterableDataset.from_generator(_text_documents, features=features, gen_kwargs=kwargs)
    key = hashlib.sha256(json.dumps([TEXT_READER_VERSION, fingerprint, cfg.document_separator,
                                     cfg.encoding_errors]).encode()).hexdigest()[:16]
    try:
        return datasets.Dataset.from_generator(_text_documents, features=features, gen_kwargs=kwargs,
                                               fingerprint=f"mlm_pretrain-text-{key}")
    except ValueError as e:  # datasets refuses a generator that yields nothing
        if "corresponds to no data" not in str(e):
            raise
        raise CorpusError(f"the corpus is empty: {', '.join(data_files)} contain no non-blank text") from None


#: Bump when :func:`_text_documents` changes what it yields (invalidates cached readings).
TEXT_READER_VERSION = 1


def _text_documents(files: list[str], separator: str, encoding_errors: str) -> Iterator[dict]:
    """Documents of .txt files: blank-line separated (lines kept, joined by ``\n``) or one per line."""
    for path in files:
        lines: list[str] = []
        for line in iter_lines(path, encoding_errors=encoding_errors):
            if separator == "line":
                if line.strip():
                    yield {"text": line}
            elif line:  # only an empty line ends a document (Google BERT format); "   " is an empty sentence
                lines.append(line)
            elif lines:
                yield {"text": "\n".join(lines)}
                lines = []
        if lines:
            yield {"text": "\n".join(lines)}


def _split_oversized(batch: dict) -> dict:
    return {"text": split_oversized(batch["text"], MAX_DOCUMENT_CHARS)}


def _non_empty(batch: dict) -> list[bool]:
    return [bool(t) and not t.isspace() for t in batch["text"]]


def _select_text(ds, field: str, source: str):
    columns = list(ds.column_names or [])
    if columns and field not in columns:
        raise CorpusError(f"text field {field!r} not found in {source}; the columns are: "
                          f"{', '.join(columns)}; set corpus.text_field")
    ds = ds.select_columns([field])
    if field != "text":
        ds = ds.rename_column(field, "text")
    return ds.map(lambda b: {"text": [t if isinstance(t, str) else "" for t in b["text"]]}, batched=True)


def iter_batches(ds, batch_size: int, column: str = "text") -> Iterator[list[str]]:
    """Batches of texts from a Dataset or IterableDataset without materialising the whole corpus."""
    if hasattr(ds, "iter"):
        for batch in ds.iter(batch_size=batch_size):
            yield batch[column]
    else:  # pragma: no cover - every datasets object has .iter
        buf = []
        for row in ds:
            buf.append(row[column])
            if len(buf) == batch_size:
                yield buf
                buf = []
        if buf:
            yield buf


def corpus_fingerprint(cfg: CorpusConfig, task: Optional[MoreDocuments] = None) -> str:
    """Identity of the corpus for content-addressed caches: files (path, size, mtime), reading options,
    and the task texts that join it."""
    h = hashlib.sha256()
    if cfg.hub_dataset:  # the dataset's commit: a newer version of it is a new corpus
        revision = hub_dataset_revision(cfg.hub_dataset, cfg.hub_config, key="corpus.hub_dataset", local=LOCAL_CORPUS_KEYS)
        h.update(json.dumps([cfg.hub_dataset, cfg.hub_config, cfg.split, revision]).encode())
    else:
        h.update(expand_files(cfg).fingerprint().encode())
    h.update(json.dumps([cfg.text_field, cfg.document_separator, cfg.encoding_errors]).encode())
    if task is not None:  # only then: a corpus without task texts keeps the fingerprint it always had
        h.update(task.identity().encode())
    return h.hexdigest()[:16]


def corpus_content_hash(cfg: CorpusConfig, task: Optional[MoreDocuments] = None) -> Optional[str]:
    """:meth:`CorpusFiles.content_hash` plus the reading options (and the task file's bytes); None for a
    Hub dataset."""
    task_content = task.identity(content=True) if task is not None else None
    if cfg.hub_dataset or (task is not None and task_content is None):
        return None
    h = hashlib.sha256(expand_files(cfg).content_hash().encode())
    h.update(json.dumps([cfg.text_field, cfg.document_separator, cfg.encoding_errors]).encode())
    if task_content is not None:
        h.update(task_content.encode())
    return h.hexdigest()[:16]


def sentence_split_mode(cfg: Config) -> str:
    """``line`` or ``rules``: ``auto`` means ``line`` for blank-line separated .txt files (one sentence
    per line, Google's format) and ``rules`` for everything else (running text)."""
    if cfg.data.sentence_split != "auto":
        return cfg.data.sentence_split
    if cfg.corpus.hub_dataset:
        return "rules"
    fmt = expand_files(cfg.corpus).format
    return "line" if fmt == "text" and cfg.corpus.document_separator == "blank_line" else "rules"


def corpus_stats(ds) -> Optional[dict]:
    """Documents and characters of a (non-streaming) corpus."""
    if not hasattr(ds, "__len__"):
        return None
    chars = sum(len(t) for batch in iter_batches(ds, 10000) for t in batch)
    return {"documents": len(ds), "characters": chars}


# The held-out rule (prepare's validation documents; the tokenizer report's held-out documents)
def text_hash(text: str) -> int:
    """A stable 64-bit hash of a text (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "big")


def is_validation_document(text: str, fraction: float) -> bool:
    """The held-out rule: a document is validation when its text hash falls below ``fraction``.

    Decided by content, so the split is the same in cached and streaming mode, for any number of
    processes, and duplicate documents never straddle train and validation."""
    return fraction > 0 and text_hash(text) < fraction * 2.0 ** 64
