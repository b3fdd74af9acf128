"""Dynamic masking: the pure ``mask_tokens`` on hand-written ids and the ``MLMCollator``."""
from __future__ import annotations

import copy

import pytest
import torch

from mlm_pretrain.config import MaskingConfig
from mlm_pretrain.errors import UserError
from mlm_pretrain.masking import IGNORE_INDEX, MLMCollator, draw_per_row, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 1000


def batch_of(lengths, seed=0):
    """[CLS] w... [SEP] w... [SEP] rows with padding; words are ids 5..VOCAB-1."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.full((len(lengths), L), PAD)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, VOCAB, (n,), generator=g)
        ids[i, 0], ids[i, n // 2], ids[i, n - 1] = CLS, SEP, SEP
    return ids, ids < 5


def test_specials_and_padding_never_selected_and_exact_count_per_sequence():
    ids, special = batch_of([128, 64, 20, 9])
    masked, labels = mask_tokens(ids, special, MaskingConfig(), VOCAB, MASK, torch.Generator().manual_seed(0))
    assert (labels[special] == IGNORE_INDEX).all() and (masked[special] == ids[special]).all()
    selected = labels != IGNORE_INDEX
    n_cand = (~special).sum(1)
    assert selected.sum(1).tolist() == [max(1, int(n * 0.15 + 0.5)) for n in n_cand.tolist()]
    assert (labels[selected] == ids[selected]).all()  # labels are the original ids
    assert (masked[~selected] == ids[~selected]).all()  # nothing else changes


@pytest.mark.parametrize("whole_word", [False, True])
def test_a_batch_masked_with_per_row_draws_equals_each_row_masked_alone(whole_word):
    # The training batches' contract (mlm_pretrain.batches.collate_masked): each row's mask is the one
    # mask_tokens gives that row alone, at its own length, from a generator seeded with the row's seed;
    # the masking itself runs once for the whole, wider batch.
    lengths, width, seeds = [37, 128, 9, 64, 100], 136, [11, 7, 2 ** 62 + 5, 0, 11]
    ids, special = batch_of(lengths, seed=3)
    ids = torch.nn.functional.pad(ids, (0, width - ids.size(1)), value=PAD)
    special = ids < 5
    starts = (ids % 3 != 0) if whole_word else None  # every third id continues a word
    random_ids, cfg = torch.arange(5, VOCAB), MaskingConfig(probability=0.3)
    g = torch.Generator()
    draws = draw_per_row(lengths, width, seeds, len(random_ids), g)
    masked, labels = mask_tokens(ids, special, cfg, VOCAB, MASK, word_starts=starts, random_ids=random_ids,
                                 draws=draws)
    for i, (n, seed) in enumerate(zip(lengths, seeds)):
        one, one_labels = mask_tokens(ids[i:i + 1, :n], special[i:i + 1, :n], cfg, VOCAB, MASK, g.manual_seed(seed),
                                      word_starts=None if starts is None else starts[i:i + 1, :n],
                                      random_ids=random_ids)
        assert torch.equal(masked[i, :n], one[0]) and torch.equal(labels[i, :n], one_labels[0])
        assert (masked[i, n:] == PAD).all() and (labels[i, n:] == IGNORE_INDEX).all()
    budget = [int(0.3 * (n - 3) + 0.5) for n in lengths]  # 30% of the tokens other than [CLS] and two [SEP]
    counts = (labels != IGNORE_INDEX).sum(1).tolist()
    assert counts == budget if not whole_word else all(0 < c <= b for c, b in zip(counts, budget))
    assert not torch.equal(labels[0, :37], labels[4, :37])  # same seed, other ids: another mask


def test_mask_rate_and_80_10_10_over_many_batches():
    cfg = MaskingConfig()
    gen = torch.Generator().manual_seed(1)
    random_ids = torch.arange(5, VOCAB)
    total = sel = n_mask = n_rand = n_keep = 0
    for step in range(50):
        ids, special = batch_of([128] * 16, seed=step)
        masked, labels = mask_tokens(ids, special, cfg, VOCAB, MASK, gen, random_ids=random_ids)
        s = labels != IGNORE_INDEX
        total += (~special).sum().item()
        sel += s.sum().item()
        n_mask += (masked[s] == MASK).sum().item()
        n_keep += (masked[s] == ids[s]).sum().item()
        n_rand += ((masked[s] != MASK) & (masked[s] != ids[s])).sum().item()
        assert ((masked >= 5) | (masked == MASK) | special).all()  # random replacements are never special
    assert abs(sel / total - 0.15) < 0.005
    assert abs(n_mask / sel - 0.8) < 0.02
    assert abs(n_rand / sel - 0.1) < 0.015  # (a random token equal to the original counts as kept)
    assert abs(n_keep / sel - 0.1) < 0.015


def test_cap_and_configurable_split():
    ids, special = batch_of([128] * 8)
    cfg = MaskingConfig(probability=0.5, mask_replace_prob=1.0, random_replace_prob=0.0, max_predictions_per_seq=20)
    masked, labels = mask_tokens(ids, special, cfg, VOCAB, MASK, torch.Generator().manual_seed(0))
    s = labels != IGNORE_INDEX
    assert s.sum(1).tolist() == [20] * 8
    assert (masked[s] == MASK).all()


def test_whole_word_masking_takes_all_pieces_and_keeps_80_10_10():
    gen = torch.Generator().manual_seed(2)
    cfg = MaskingConfig(whole_word=True)
    sel = total = n_mask = 0
    for step in range(30):
        ids, special = batch_of([128] * 8, seed=step)
        g = torch.Generator().manual_seed(100 + step)
        word_starts = torch.rand(ids.shape, generator=g) < 0.5  # words of 1-5+ pieces
        masked, labels = mask_tokens(ids, special, cfg, VOCAB, MASK, gen, word_starts=word_starts)
        s = labels != IGNORE_INDEX
        for row in range(ids.shape[0]):
            word = -1
            words: dict[int, set] = {}
            for pos in range(ids.shape[1]):
                if special[row, pos]:
                    word = -1
                    continue
                if word_starts[row, pos] or word == -1:
                    word = pos
                words.setdefault(word, set()).add(bool(s[row, pos]))
            assert all(len(v) == 1 for v in words.values())  # a word is all in or all out
        sel += s.sum().item()
        total += (~special).sum().item()
        n_mask += (masked[s] == MASK).sum().item()
    assert 0.12 < sel / total <= 0.16
    assert abs(n_mask / sel - 0.8) < 0.03  # not 100% [MASK] (transformers' whole_word_mask does that)


def test_same_generator_state_same_masks_and_global_rng_when_none():
    ids, special = batch_of([50, 40])
    a = mask_tokens(ids, special, MaskingConfig(), VOCAB, MASK, torch.Generator().manual_seed(5))
    b = mask_tokens(ids, special, MaskingConfig(), VOCAB, MASK, torch.Generator().manual_seed(5))
    c = mask_tokens(ids, special, MaskingConfig(), VOCAB, MASK, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[1], c[1])
    torch.manual_seed(3)
    d = mask_tokens(ids, special, MaskingConfig(), VOCAB, MASK, None)
    torch.manual_seed(3)
    e = mask_tokens(ids, special, MaskingConfig(), VOCAB, MASK, None)
    assert all(torch.equal(x, y) for x, y in zip(d, e))


# ----------------------------------------------------------------------------------------------
# The collator (with the tiny tokenizer)
# ----------------------------------------------------------------------------------------------
def rows_from(tok, texts, label=None):
    rows = []
    for t in texts:
        enc = tok(t, "and then something else happened")
        row = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]}
        if label is not None:
            row["next_sentence_label"] = label
        rows.append(row)
    return rows


def test_collator_pads_masks_and_passes_labels(tiny_tokenizer):
    tok = tiny_tokenizer
    collator = MLMCollator(tok, MaskingConfig(), seed=0)
    rows = rows_from(tok, ["the market rose today", "a much longer sentence about the prices of many goods"], 1)
    batch = collator(rows)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    n = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (2, -(-n // 8) * 8)
    assert batch["next_sentence_label"].tolist() == [1, 1]
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        assert batch["attention_mask"][i].tolist() == [1] * k + [0] * (batch["input_ids"].shape[1] - k)
        assert (batch["input_ids"][i, k:] == tok.pad_token_id).all()
        assert (batch["labels"][i, k:] == IGNORE_INDEX).all()
        assert batch["token_type_ids"][i, :k].tolist() == r["token_type_ids"]
        specials = torch.tensor(r["input_ids"]) < 5
        assert (batch["labels"][i, :k][specials] == IGNORE_INDEX).all()
        assert (batch["labels"][i] != IGNORE_INDEX).sum() >= 1


def test_collator_never_remasks_rows_with_labels_and_resumes_from_generator_state(tiny_tokenizer):
    tok = tiny_tokenizer
    collator = MLMCollator(tok, MaskingConfig(pad_to_multiple_of=1), seed=0)
    fixed = collator(rows_from(tok, ["the market rose today"]))
    fixed_row = {"input_ids": fixed["input_ids"][0].tolist(), "token_type_ids": fixed["token_type_ids"][0].tolist(),
                 "labels": fixed["labels"][0].tolist()}
    for _ in range(3):
        again = collator([fixed_row])
        assert again["input_ids"][0].tolist() == fixed_row["input_ids"]
        assert again["labels"][0].tolist() == fixed_row["labels"]
    mixed = collator([fixed_row, *rows_from(tok, ["prices fell sharply on monday"])])
    k = len(fixed_row["labels"])
    assert mixed["labels"][0, :k].tolist() == fixed_row["labels"] and (mixed["labels"][0, k:] == IGNORE_INDEX).all()
    assert mixed["input_ids"][0, :k].tolist() == fixed_row["input_ids"]
    assert (mixed["labels"][1] != IGNORE_INDEX).any()
    # exact resume: restoring the generator state replays the same masks
    rows = rows_from(tok, ["the market rose today", "prices fell"] * 4)
    state = collator.generator.get_state()
    first = collator(rows)
    collator.generator.set_state(state)
    replay = collator(rows)
    assert all(torch.equal(first[k], replay[k]) for k in first)
    assert not torch.equal(collator(rows)["labels"], first["labels"])  # new masks each time


def test_collator_whole_word_uses_wordpiece_continuations(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "unbelievably extraordinary circumstances notwithstanding internationally"
    row = {"input_ids": tok(text)["input_ids"]}
    pieces = tok.convert_ids_to_tokens(row["input_ids"])
    assert any(p.startswith("##") for p in pieces)
    collator = MLMCollator(tok, MaskingConfig(whole_word=True, probability=0.3), seed=1)
    for _ in range(20):
        labels = collator([row])["labels"][0, :len(pieces)].tolist()
        word_selected = None
        for piece, lab in zip(pieces, labels):
            if piece.startswith("##"):
                assert (lab != IGNORE_INDEX) == word_selected
            else:
                word_selected = lab != IGNORE_INDEX


def test_collator_refuses_a_tokenizer_without_mask(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.mask_token = None
    with pytest.raises(UserError, match="mask_token"):
        MLMCollator(tok, MaskingConfig())


def test_collator_in_dataloader_workers_gives_each_worker_its_own_masks(tiny_tokenizer):
    tok = tiny_tokenizer
    rows = rows_from(tok, ["the market rose today"]) * 8
    collator = MLMCollator(tok, MaskingConfig(probability=0.3), seed=0)
    loader = torch.utils.data.DataLoader(rows, batch_size=4, num_workers=2, collate_fn=collator,
                                         generator=torch.Generator().manual_seed(0))
    a, b = [x["labels"] for x in loader]
    assert not torch.equal(a, b)  # same rows, different workers: different masks
    again = [x["labels"] for x in torch.utils.data.DataLoader(rows, batch_size=4, num_workers=2, collate_fn=collator,
                                                              generator=torch.Generator().manual_seed(0))]
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])  # reproducible from the loader's seed
