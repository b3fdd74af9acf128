"""CPU dropout masks from 64-bit random words (mlm_pretrain.dropout)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mlm_pretrain.dropout import (ATTENTION, CPUDropout, cpu_dropout, cpu_dropout_attention, dropout_noise,
                                  use_cpu_dropout)


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_noise_keeps_each_element_with_probability_one_minus_p(p, dtype):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of four
    noise = dropout_noise((n,), p, dtype)
    assert noise.shape == (n,) and noise.dtype == dtype
    values = noise.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-2)
    kept = (noise > 0).double().mean().item()
    assert abs(kept - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)  # 4 sigma
    assert noise.double().mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept
    # 16-bit draws from every one of the four: no slot of a 64-bit word is biased
    per_slot = (noise[: n - n % 4].view(-1, 4) > 0).double().mean(0)
    assert torch.all((per_slot - (1 - p)).abs() < 4 * math.sqrt(4 * p * (1 - p) / n))


def test_the_noise_comes_from_the_global_rng_so_seeds_and_resume_hold():
    torch.manual_seed(3)
    a = dropout_noise((7, 9), 0.1, torch.float32)
    state = torch.get_rng_state()
    b = dropout_noise((7, 9), 0.1, torch.float32)
    torch.manual_seed(3)
    assert torch.equal(dropout_noise((7, 9), 0.1, torch.float32), a)
    torch.set_rng_state(state)  # what a checkpoint restores
    assert torch.equal(dropout_noise((7, 9), 0.1, torch.float32), b)
    assert not torch.equal(a, b)


def test_cpu_dropout_is_plain_dropout_outside_training_and_scales_its_gradient():
    x = torch.randn(64, 32, requires_grad=True)
    assert torch.equal(cpu_dropout(x, 0.1, training=False), x)
    assert torch.equal(cpu_dropout(x, 0.0), x)
    torch.manual_seed(1)
    noise = dropout_noise(x.shape, 0.1, x.dtype)
    torch.manual_seed(1)
    y = cpu_dropout(x, 0.1)
    assert torch.equal(y, x * noise)
    y.sum().backward()
    assert torch.equal(x.grad, noise)  # dropped elements get no gradient, kept ones 1 / (1 - p)
    module = CPUDropout(0.1).eval()
    assert torch.equal(module(x), x)


class _Attn(nn.Module):
    is_causal = False


def _qkv(dtype=torch.float32, padded=True):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 10, 8, dtype=dtype) for _ in range(3))
    mask = torch.ones(3, 1, 10, 10, dtype=torch.bool)
    if padded:
        mask[0, :, :, 7:] = False
    return q, k, v, mask


def test_the_attention_is_sdpa_without_dropout_and_matches_sdpa_math_with_it():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v, mask = _qkv()
    ours, _ = cpu_dropout_attention(_Attn(), q, k, v, mask, dropout=0.0, scaling=0.3)
    torch.testing.assert_close(ours, sdpa_attention_forward(_Attn(), q, k, v, mask, dropout=0.0, scaling=0.3)[0],
                               rtol=0, atol=0)  # no dropout: transformers' own SDPA function
    # a p so small that no 16-bit draw falls under it: only the 1 / (1 - p) scale remains
    tiny = 0.4 / 65536
    ours, _ = cpu_dropout_attention(_Attn(), q, k, v, mask, dropout=tiny, scaling=0.3)
    ref = sdpa_attention_forward(_Attn(), q, k, v, mask, dropout=0.0, scaling=0.3)[0] / (1 - tiny)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # with dropout: softmax(q k^T s + mask) with the noise on the probabilities, then v
    torch.manual_seed(5)
    ours, _ = cpu_dropout_attention(_Attn(), q, k, v, mask, dropout=0.25, scaling=0.3)
    torch.manual_seed(5)
    scores = (q @ k.transpose(2, 3) * 0.3).masked_fill(~mask, -math.inf)
    probs = torch.softmax(scores, -1)
    ref = ((probs * dropout_noise(probs.shape, 0.25, probs.dtype)) @ v).transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert ours[0, :, :, :].abs().sum() > 0


def _bert(dropout=0.1):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    return BertForPreTraining(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=32,
                                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                         attn_implementation="sdpa"))


def test_use_cpu_dropout_swaps_every_dropout_and_changes_nothing_outside_training(tmp_path):
    model = _bert()
    ids = torch.randint(5, 60, (4, 12))
    am = torch.ones_like(ids)
    am[1, 9:] = 0
    before = model.eval()(input_ids=ids, attention_mask=am).prediction_logits
    # embeddings + per layer (attention's p holder, attention output, FFN output) + the pretraining heads'
    stock = [m for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    assert use_cpu_dropout(model) == len(stock) == 1 + 3 * 2
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == ATTENTION
    assert torch.equal(model(input_ids=ids, attention_mask=am).prediction_logits, before)  # eval: identical
    model.train()
    torch.manual_seed(1)
    a = model(input_ids=ids, attention_mask=am).prediction_logits
    b = model(input_ids=ids, attention_mask=am).prediction_logits
    torch.manual_seed(1)
    assert not torch.equal(a, b) and torch.equal(model(input_ids=ids, attention_mask=am).prediction_logits, a)
    model.save_pretrained(tmp_path)  # a plain transformers model: nothing of ours in its config
    saved = json.loads((tmp_path / "config.json").read_text())
    assert ATTENTION not in json.dumps(saved)
    from transformers import BertForPreTraining
    reloaded = BertForPreTraining.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=am).prediction_logits, before)


def test_training_with_cpu_dropout_learns_like_stock_dropout():
    """Same model, same data, 60 steps: the loss falls as far with either mask source."""
    def train(swap: bool) -> tuple[float, float]:
        model = _bert(0.1).train()
        if swap:
            use_cpu_dropout(model)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(5, 25, (16, 12), generator=gen)  # a small vocabulary slice: learnable
        losses = []
        for _ in range(60):
            out = model(input_ids=ids, labels=ids, next_sentence_label=torch.zeros(16, dtype=torch.long))
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(out.loss.item())
        return losses[0], sum(losses[-5:]) / 5
    (stock0, stock), (ours0, ours) = train(False), train(True)
    assert stock0 == pytest.approx(ours0, rel=0.05)
    assert stock < 0.5 * stock0 and ours < 0.5 * ours0
    assert ours == pytest.approx(stock, rel=0.25)
