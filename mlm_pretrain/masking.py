"""Dynamic masked-LM masking: the collator that turns example rows into padded, masked batches.

    from mlm_pretrain.masking import MLMCollator
    collator = MLMCollator(tokenizer, cfg.masking, seed=cfg.seed)
    loader = DataLoader(train_rows, batch_size=32, collate_fn=collator)
    state = collator.generator.get_state()          # save with the checkpoint for an exact resume

Masking happens each time a batch is built, so every pass over the data sees new masks (RoBERTa's
dynamic masking). Per sequence, ``round(probability x n)`` of its ``n`` non-special, non-padding
tokens are selected (at least one, at most ``max_predictions_per_seq``), as in Google's BERT; of
those, ``mask_replace_prob`` become ``[MASK]``, ``random_replace_prob`` a random non-special token and
the rest stay unchanged. ``labels`` hold the original ids at selected positions and -100 elsewhere.

Whole-word masking selects words (a token and its continuations) and keeps 80/10/10 per token,
unlike transformers 5.x ``DataCollatorForLanguageModeling(whole_word_mask=True)``, which masks 100%.
Word boundaries come from the tokenizer itself, one flag per vocabulary id
(:func:`mlm_pretrain.tokenizer.word_starts`: WordPiece's ``##`` continues a word, byte-level BPE's ``Ġ``
and SentencePiece's ``▁`` start one), so the example rows need no extra column.

Rows that already carry ``labels`` (the validation set, masked once when it was prepared) are only
padded, never re-masked.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .config import MaskingConfig
from .tokenizer import check_tokenizer, word_starts

IGNORE_INDEX = -100


def draw(batch: int, length: int, choices: int,
         generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers :func:`mask_tokens` uses for a ``batch x length`` batch, in the order it draws
    them: a score per word slot (``batch x length + 1``), a uniform per token choosing [MASK] / random /
    unchanged, and the index of each token's random replacement among ``choices`` ids."""
    return (torch.rand(batch, length + 1, generator=generator), torch.rand(batch, length, generator=generator),
            torch.randint(choices, (batch, length), generator=generator))


def draw_per_row(lengths: Sequence[int], width: int, seeds: Sequence[int], choices: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`draw` for each row alone, ``generator`` re-seeded with the row's seed and the row
    ``lengths[i]`` long, placed in ``width``-wide batch tensors. ``mask_tokens(..., draws=...)`` with these
    masks every row exactly as masking it alone (a one-row batch of its own length) with its seed would:
    the mask depends on the row and its seed only, not on the batch-mates or the batch's width."""
    batch = len(lengths)
    score, r, pick = torch.zeros(batch, width + 1), torch.ones(batch, width), torch.zeros(batch, width, dtype=torch.long)
    for i, (n, seed) in enumerate(zip(lengths, seeds)):
        generator.manual_seed(seed)
        s, u, k = draw(1, n, choices, generator)
        score[i, :n + 1], r[i, :n], pick[i, :n] = s[0], u[0], k[0]
    return score, r, pick


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, cfg: MaskingConfig, vocab_size: int,
                mask_id: int, generator: Optional[torch.Generator] = None,
                word_starts: Optional[torch.Tensor] = None,
                random_ids: Optional[torch.Tensor] = None,
                draws: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Select and corrupt tokens of a padded batch. Returns (masked input_ids, labels); the input is
    not modified.

    ``special_mask`` (bool, like ``input_ids``) is True at special and padding positions: never
    selected. ``word_starts`` (bool) is True where a word starts; None = every token is a word.
    ``random_ids``: the ids random replacements are drawn from (default: all of ``range(vocab_size)``).
    All randomness comes from ``generator`` (the global torch RNG when None), or from ``draws``
    (:func:`draw`'s three tensors for this batch, e.g. :func:`draw_per_row`'s).

    Each row is masked on its own: its result depends on its ids and its part of the draws only, and
    padding beyond a row's length changes nothing (no draw there is ever used).
    """
    batch, length = input_ids.shape
    choices = vocab_size if random_ids is None else len(random_ids)
    uniform_words, r, pick = draws if draws is not None else draw(batch, length, choices, generator)
    cand = ~special_mask
    n_cand = cand.sum(1)
    n_pred = torch.floor(n_cand * cfg.probability + 0.5).long().clamp(min=1)
    if cfg.max_predictions_per_seq:
        n_pred = n_pred.clamp(max=cfg.max_predictions_per_seq)
    n_pred = torch.where(n_cand > 0, n_pred, torch.zeros_like(n_pred))

    # Words: a start is a word-start candidate, or the first candidate after a special token.
    prev_cand = torch.nn.functional.pad(cand[:, :-1], (1, 0), value=False)
    starts = cand if word_starts is None else cand & (word_starts | ~prev_cand)
    word_id = torch.cumsum(starts.long(), 1)  # every token of a word shares its id (0 = before any word)

    # One random score per word; tokens sorted by their word's score. Sorting is stable, so a word's
    # tokens stay together (words are contiguous spans), and taking words in this order until the
    # budget is spent selects a uniformly random set of words.
    score = uniform_words.gather(1, word_id).masked_fill(~cand, 2.0)
    order = torch.argsort(score, dim=1, stable=True)
    taken = torch.cumsum(cand.gather(1, order).long(), 1)  # candidates up to here, in score order
    taken = torch.empty_like(taken).scatter_(1, order, taken).masked_fill(~cand, 0)
    zeros = torch.zeros(batch, length + 1, dtype=torch.long)
    word_end = zeros.scatter_reduce(1, word_id, taken, reduce="amax").gather(1, word_id)
    word_len = zeros.scatter_add(1, word_id, cand.long()).gather(1, word_id)
    fits = word_end <= n_pred[:, None]
    first = (word_end == word_len) & (n_pred[:, None] > 0)  # the first word always goes in
    selected = cand & (fits | first)

    to_mask = selected & (r < cfg.mask_replace_prob)
    to_random = selected & (r >= cfg.mask_replace_prob) & (r < cfg.mask_replace_prob + cfg.random_replace_prob)
    replacement = pick if random_ids is None else random_ids[pick]
    masked = input_ids.masked_fill(to_mask, mask_id)
    masked = torch.where(to_random, replacement, masked)
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    return masked, labels


class MLMCollator:
    """Callable on a list of example rows -> dict of tensors ``input_ids``, ``token_type_ids``,
    ``attention_mask``, ``labels`` (+ ``next_sentence_label`` when the rows have it).

    Pads to the longest row rounded up to ``pad_to_multiple_of``. Randomness comes from
    ``self.generator`` (a ``torch.Generator`` seeded with ``seed``; None = the global torch RNG).
    In a DataLoader worker process the generator is re-seeded once from ``seed`` and the worker's
    seed, so workers do not repeat each other's masks (seed the DataLoader for reproducibility).
    """

    def __init__(self, tokenizer, masking_cfg: MaskingConfig, seed: Optional[int] = None):
        check_tokenizer(tokenizer)
        self.cfg = masking_cfg
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        special = torch.zeros(self.vocab_size, dtype=torch.bool)
        special[[i for i in tokenizer.all_special_ids if i < self.vocab_size]] = True
        self.special_lookup = special
        self.random_ids = (~special).nonzero().squeeze(1)
        # whole-word masking: per vocabulary id, whether its piece starts a word (one lookup per batch)
        self.word_start_lookup = torch.tensor(word_starts(tokenizer)) if masking_cfg.whole_word else None
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._worker_id: Optional[int] = None

    def _maybe_reseed_for_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None or self.seed is None or self._worker_id == info.id:
            return
        self._worker_id = info.id
        self.generator = torch.Generator().manual_seed((self.seed * 1_000_003 + info.seed) % 2 ** 63)

    def padded_length(self, n: int) -> int:
        """A row of ``n`` tokens padded up to ``masking.pad_to_multiple_of``."""
        return -(-n // self.cfg.pad_to_multiple_of) * self.cfg.pad_to_multiple_of

    def pad(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad rows to one length; no masking. ``labels`` are padded with -100 when present."""
        lengths = [len(r["input_ids"]) for r in rows]
        length = self.padded_length(max(lengths))
        out = {
            "input_ids": torch.full((len(rows), length), self.pad_id, dtype=torch.long),
            "token_type_ids": torch.zeros((len(rows), length), dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
        }
        has_labels = [r.get("labels") is not None for r in rows]
        if any(has_labels):
            out["labels"] = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for i, (row, n) in enumerate(zip(rows, lengths)):
            out["input_ids"][i, :n] = torch.as_tensor(row["input_ids"], dtype=torch.long)
            if row.get("token_type_ids") is not None:
                out["token_type_ids"][i, :n] = torch.as_tensor(row["token_type_ids"], dtype=torch.long)
            out["attention_mask"][i, :n] = 1
            if has_labels[i]:
                out["labels"][i, :n] = torch.as_tensor(row["labels"], dtype=torch.long)
        if rows[0].get("next_sentence_label") is not None:
            out["next_sentence_label"] = torch.tensor([int(r["next_sentence_label"]) for r in rows], dtype=torch.long)
        return out

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             draws: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input_ids, labels) for a padded batch; ``draws``: see :func:`mask_tokens`."""
        special = self.special_lookup[input_ids] | (attention_mask == 0)
        starts = None if self.word_start_lookup is None else self.word_start_lookup[input_ids]
        return mask_tokens(input_ids, special, self.cfg, self.vocab_size, self.mask_id, self.generator,
                           word_starts=starts, random_ids=self.random_ids, draws=draws)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        self._maybe_reseed_for_worker()
        batch = self.pad(rows)
        given = [r.get("labels") is not None for r in rows]
        if all(given):
            return batch
        masked, labels = self.mask(batch["input_ids"], batch["attention_mask"])
        if any(given):  # a mixed batch: keep the precomputed masks of the rows that have them
            keep = torch.tensor(given)
            masked = torch.where(keep[:, None], batch["input_ids"], masked)
            labels = torch.where(keep[:, None], batch["labels"], labels)
        batch["input_ids"], batch["labels"] = masked, labels
        return batch

