"""Line-oriented files the way real-world text needs them: one definition of a line for the package.

    from mlm_pretrain.textio import read_jsonl, write_jsonl, iter_lines
    write_jsonl(path, rows)          # atomic; any text in the values round-trips
    rows = read_jsonl(path)          # splits on "\\n" only

Why a module: ``str.splitlines()`` also breaks at U+000B, U+000C, U+001C-U+001E, U+0085, U+2028 and
U+2029, characters that ``json.dumps(..., ensure_ascii=False)`` writes raw and that web text and
Windows-1252 conversions are full of. A JSON Lines reader that uses it cuts a record in two. Here:

- **JSON Lines** (predictions, metrics): a record ends at ``\\n`` and nowhere else (``\\r`` and
  ``\\n`` inside values are escaped by ``json.dumps``).
- **.txt corpora** (:func:`iter_lines`): a line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (files
  from every OS read the same); the other characters above are text inside a line. A UTF-8 byte-order
  mark at the start of a file is dropped. Files are read in 1 MiB chunks, and a line longer than
  :data:`MAX_LINE_CHARS` is cut (at the last whitespace before the limit when there is one) into
  pieces, so a file with no line breaks streams in bounded memory instead of becoming one giant
  document.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .errors import UserError

logger = logging.getLogger(__name__)

#: Longest line (characters) kept whole; longer ones are cut into pieces of at most this size.
MAX_LINE_CHARS = 1 << 20
READ_CHUNK = 1 << 20


def write_jsonl(path: str | Path, rows: Iterable[dict], *, atomic: bool = True) -> Path:
    """``rows`` as JSON Lines (UTF-8, non-ASCII kept readable), written to a temporary file and
    renamed when ``atomic`` (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".tmp") if atomic else path
    with open(target, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if atomic:
        target.replace(path)
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON Lines file (blank lines skipped); a bad line raises ``ValueError``
    naming the file and line number."""
    path = Path(path)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path} line {number}: not valid JSON ({e})") from None
    return out


def first_bad_jsonl_line(path: str | Path) -> Optional[tuple[int, str]]:
    """``(line number, reason)`` of the first line of a JSON Lines file that is not a JSON object,
    or None. Streams the file (for error messages after a parser gave a generic one)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        for number, line in enumerate(_split_newlines_only(fh), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as e:
                return number, f"not valid JSON ({e})"
            if not isinstance(value, dict):
                return number, f"a JSON {type(value).__name__}, not an object with fields"
    return None


def _split_newlines_only(fh) -> Iterator[str]:
    """Lines of a text file opened with ``newline=""``, split on ``\\n`` only (``\\r\\n`` ends too)."""
    buf = ""
    for chunk in iter(lambda: fh.read(READ_CHUNK), ""):
        buf += chunk
        *lines, buf = buf.split("\n")
        for line in lines:
            yield line[:-1] if line.endswith("\r") else line
    if buf:
        yield buf


def iter_lines(path: str | Path, *, encoding_errors: str = "strict",
               max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """Lines of a UTF-8 text file (see the module docstring: ``\\n``, ``\\r\\n``, ``\\r``; BOM dropped;
    lines longer than ``max_chars`` cut into pieces), without line ends, read in bounded memory."""
    cut = False
    # newline=None: universal newlines ("\r\n" and "\r" arrive as "\n"); utf-8-sig drops a leading BOM.
    with open(path, encoding="utf-8-sig", errors=encoding_errors, newline=None) as fh:
        buf = ""
        for chunk in iter(lambda: fh.read(READ_CHUNK), ""):
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                if len(line) > max_chars:
                    cut = True
                    yield from _cut(line, max_chars)
                else:
                    yield line
            if len(buf) > max_chars:  # no line end in sight: emit whole pieces now, keep the tail
                cut = True
                pieces = list(_cut(buf, max_chars))
                yield from pieces[:-1]
                buf = pieces[-1]
        if buf:
            yield from _cut(buf, max_chars)
    if cut:
        logger.warning("%s: lines longer than %d characters were cut into pieces of at most that size (a file "
                       "without line breaks?); each piece counts as one line", path, max_chars)


def _cut(text: str, max_chars: int) -> Iterator[str]:
    """``text`` in pieces of at most ``max_chars``, cut at the last whitespace of each window when it
    lies in the window's second half (never inside a word unless the word is that long)."""
    while len(text) > max_chars:
        window = text[:max_chars]
        at = max(window.rfind(" "), window.rfind("\t"))
        at = at if at > max_chars // 2 else max_chars
        yield text[:at]
        text = text[at:].lstrip(" \t")
    yield text


def split_oversized(texts: list[str], max_chars: int) -> list[str]:
    """Documents longer than ``max_chars`` split at line ends (then whitespace) into several documents
    of at most ``max_chars``; others unchanged."""
    out: list[str] = []
    for text in texts:
        if len(text) <= max_chars:
            out.append(text)
            continue
        piece: list[str] = []
        size = 0
        for line in text.split("\n"):
            for part in (_cut(line, max_chars) if len(line) > max_chars else (line,)):
                if piece and size + len(part) + 1 > max_chars:
                    out.append("\n".join(piece))
                    piece, size = [], 0
                piece.append(part)
                size += len(part) + 1
        if piece:
            out.append("\n".join(piece))
    return out


# ----------------------------------------------------------------------------------------------
# Files written whole
# ----------------------------------------------------------------------------------------------
def check_writable(directory: Path) -> None:
    """Fail before training when the output directory cannot be written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output directory {directory}: {e.strerror or e}; "
                        "choose another output_dir or fix its permissions") from None


def atomic_write_json(path: Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
