"""Documents longer than the encoder's window: overlapping windows over the whole text, one prediction
per document (``finetune.long_documents=windows``).

    docs = window_encodings(tokenizer, texts, None, max_length=128, overlap=32)   # per document: windows
    batch = WindowCollator(tokenizer)(rows)          # every window of the batch's documents, padded
    logits = pool(model(**windows).logits, batch["window_counts"], "mean")        # one row per document

A document of ``n`` tokens becomes the windows a fast tokenizer's ``return_overflowing_tokens`` makes:
``max_length`` tokens each (special tokens included), each sharing ``overlap`` tokens with the one before,
so every token is read at least once. A sentence pair keeps its shorter text whole in every window and
windows the longer one (``only_second`` or ``only_first``; question answering keeps the question so).
While training, a document keeps at most ``max_windows`` of its windows, spread evenly from its first to
its last, and a batch's windows run ``batch_size`` at a time (:func:`window_logits`); evaluation and
prediction read every window. The classifier is an ordinary ``AutoModelForSequenceClassification``: the windows'
logits are pooled outside it (mean or max), so the saved model stays a plain Hugging Face artifact.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from .errors import FinetuneError
from .metrics import REGRESSION

logger = logging.getLogger(__name__)

#: Columns a windowed row holds: one list per window (``labels``: one value per document).
WINDOW_KEYS = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("mean", "max")
#: The ``finetune.*`` settings a classifier folder's task.json records: how it reads long documents.
WINDOW_SETTINGS = ("long_documents", "window_overlap", "window_pooling")


def overlap_of(f) -> int:
    """``finetune.window_overlap``, or a quarter of ``max_length`` when it is null."""
    return f.max_length // 4 if f.window_overlap is None else f.window_overlap


def spread(n: int, k: Optional[int]) -> list[int]:
    """``k`` indices out of ``range(n)`` spread evenly from the first to the last (all of them when
    ``k`` is None or at least ``n``)."""
    if k is None or k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def window_encodings(tokenizer, texts: Sequence[str], pairs: Optional[Sequence[str]], *, max_length: int,
                     overlap: int, max_windows: Optional[int] = None) -> list[dict]:
    """Per document, its windows: ``{"input_ids": [[...], ...], "attention_mask": ..., ["token_type_ids"],
    "document_tokens": n}`` (``n``: the document's length in tokens, special tokens included, uncut)."""
    if not getattr(tokenizer, "is_fast", False):
        raise FinetuneError("finetune.long_documents=windows needs a fast tokenizer (tokenizer.json); this one is "
                            "a slow one: save the tokenizer with a tokenizer.json, or use long_documents=truncate")
    texts, pairs = list(texts), list(pairs) if pairs is not None else None
    if pairs is None:
        groups: dict[tuple, list[int]] = {(True, overlap): list(range(len(texts)))}
        full = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]
    else:
        groups, full = _pair_groups(tokenizer, texts, pairs, max_length, overlap)
    docs: list[dict] = [{} for _ in texts]
    for (truncation, stride), rows in groups.items():
        if not rows:
            continue
        enc = tokenizer([texts[i] for i in rows], [pairs[i] for i in rows] if pairs is not None else None,
                        max_length=max_length, truncation=truncation, stride=stride,
                        return_overflowing_tokens=truncation is not False and truncation != "longest_first")
        if "overflow_to_sample_mapping" not in enc:  # cut once, one window each
            enc["overflow_to_sample_mapping"] = list(range(len(rows)))
        for i, row in enumerate(enc["overflow_to_sample_mapping"]):
            doc = docs[rows[row]]
            for k in WINDOW_KEYS:
                if k in enc:
                    doc.setdefault(k, []).append(enc[k][i])
    for doc, n in zip(docs, full):
        keep = spread(len(doc["input_ids"]), max_windows)
        for k in list(doc):
            doc[k] = [doc[k][j] for j in keep]
        doc["document_tokens"] = n
    return docs


def _pair_groups(tokenizer, texts: list, pairs: list, max_length: int,
                 overlap: int) -> tuple[dict[tuple, list[int]], list[int]]:
    """Rows of pairs by how they are cut, ``(truncation, stride) -> rows``, and each pair's length in tokens
    (special tokens included, uncut). Each pair windows its longer text
    (``only_first`` / ``only_second``) and keeps the shorter whole in every window, with ``overlap`` tokens
    shared by neighbouring windows, or fewer where the shorter text leaves less room than that (half the
    room); a pair whose shorter text leaves no room for two tokens of the longer is cut once
    (``longest_first``: both texts trimmed to fit, one window)."""
    a = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    b = [len(x) for x in tokenizer(pairs, add_special_tokens=False)["input_ids"]]
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    groups: dict[tuple, list[int]] = {}
    for i, (x, y) in enumerate(zip(a, b)):
        room = max_length - specials - min(x, y)  # tokens of the longer text a window holds
        if x + y + specials <= max_length:
            key = ("only_second", 0)  # fits: one window
        elif room < 2:
            key = ("longest_first", 0)
        else:
            key = ("only_first" if x > y else "only_second", min(overlap, room // 2))
        groups.setdefault(key, []).append(i)
    cut = len(groups.get(("longest_first", 0), []))
    if cut:
        logger.warning("%d pair(s) whose shorter text leaves no room in a window of finetune.max_length=%d tokens "
                       "for the longer: cut to fit (both texts trimmed), not read whole; raise finetune.max_length "
                       "to read them whole", cut, max_length)
    return groups, [x + y + specials for x, y in zip(a, b)]


class WindowCollator:
    """Batches of windowed documents: every window of the batch's documents as one padded batch (padded to
    a multiple of ``pad_to_multiple_of``), ``window_counts`` (windows per document, in order) and the
    documents' ``labels``."""

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = 8):
        self.tokenizer, self.pad_to_multiple_of = tokenizer, pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        flat = [{k: f[k][j] for k in WINDOW_KEYS if k in f} for f in features for j in range(len(f["input_ids"]))]
        batch = self.tokenizer.pad(flat, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                   return_tensors="pt")
        batch = dict(batch)
        batch["window_counts"] = torch.tensor([len(f["input_ids"]) for f in features], dtype=torch.long)
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
        return batch


def _logits(model, windows: dict) -> torch.Tensor:
    return model(**windows).logits


def window_logits(model, windows: dict, chunk: Optional[int]) -> torch.Tensor:
    """The classifier's logits for a batch of windows, ``chunk`` windows at a time when there are more.
    While gradients are on, each chunk's activations are recomputed in the backward pass
    (``torch.utils.checkpoint``), so memory holds one chunk's activations, not the batch's: 32 documents of 16
    windows each are 512 windows, 16 times a truncated batch (all-MiniLM-L6-v2 then needed 22 GB on a CPU).
    The result, and its gradients, are those of one pass over the whole batch."""
    n = windows["input_ids"].size(0)
    if chunk is None or n <= chunk:
        return _logits(model, windows)
    from torch.utils.checkpoint import checkpoint

    out = []
    for i in range(0, n, chunk):
        part = {k: v[i:i + chunk] for k, v in windows.items()}
        out.append(checkpoint(_logits, model, part, use_reentrant=False) if torch.is_grad_enabled()
                   else _logits(model, part))
    return torch.cat(out)


def pool(logits: torch.Tensor, counts: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """One row per document from its windows' rows (``counts`` windows each, in order): their ``mean``
    or elementwise ``max``."""
    if how not in POOLINGS:
        raise FinetuneError(f"finetune.window_pooling={how!r}: choose one of {', '.join(POOLINGS)}")
    doc = torch.repeat_interleave(torch.arange(len(counts), device=logits.device), counts.to(logits.device))
    index = doc.unsqueeze(1).expand_as(logits)
    out = torch.zeros(len(counts), logits.size(1), dtype=logits.dtype, device=logits.device)
    if how == "mean":
        return out.scatter_add(0, index, logits) / counts.to(logits.device, logits.dtype).unsqueeze(1)
    return out.scatter_reduce(0, index, logits, reduce="amax", include_self=False)


def pooled_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: Optional[str]) -> torch.Tensor:
    """The documents' loss from their pooled logits, as the classifier computes it for one window:
    mean squared error for regression, cross-entropy for classes."""
    if problem_type == REGRESSION:
        return torch.nn.functional.mse_loss(logits[:, 0].float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels.long())


def length_summary(lengths: Sequence[int], windows: Sequence[int], max_length: int) -> dict:
    """How many rows were longer than the window, and how long (tokens; windows per row where windowed)."""
    n = len(lengths)
    longer = sum(1 for x in lengths if x > max_length)
    out = {"rows": n, "longer_than_window": longer, "window": max_length,
           "mean_tokens": round(sum(lengths) / max(n, 1), 1), "max_tokens": max(lengths, default=0)}
    if windows:
        out.update(mean_windows=round(sum(windows) / max(n, 1), 2), max_windows=max(windows, default=0))
    return out


def describe_lengths(lengths: dict) -> str:
    """One sentence for a report: how many rows of each split were longer than the window and what was
    done with them ('' when none was)."""
    parts, mode, window = [], None, None
    for split, x in lengths.items():
        if x.get("longer_than_window"):
            parts.append(f"{x['longer_than_window']:,} of {x['rows']:,} {split} rows")
            mode, window = x.get("long_documents"), x["window"]
    if not parts:
        return ""
    done = (f"cut to their first {window} tokens (finetune.long_documents=windows reads them whole)"
            if mode == "truncate" else "read whole, as overlapping windows whose logits are pooled")
    return f"Longer than the {window}-token window: {', '.join(parts)}; {done}."
