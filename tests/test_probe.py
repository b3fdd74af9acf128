"""The downstream probe during pretraining and the unigram plateau line: pure baselines on hand-made
numbers, the probe on a tiny encoder, and both in a pretraining run's logs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mlm_pretrain.config import load_config
from mlm_pretrain.prepare import unigram_cross_entropy
from mlm_pretrain.probe import Probe, linear_probe_accuracy, plateau_reading, pooled_features, tfidf_accuracy


pytestmark = pytest.mark.usefixtures("one_thread")


def test_unigram_cross_entropy():
    uniform = np.full(8, 1000.0)
    assert unigram_cross_entropy(uniform, uniform) == pytest.approx(math.log(8))
    skewed = np.array([900.0, 100.0])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert unigram_cross_entropy(skewed, skewed) == pytest.approx(h, abs=1e-3)
    # evaluated on other tokens than it was counted on: the cross-entropy is higher than the entropy
    assert unigram_cross_entropy(skewed, np.array([100.0, 900.0])) > h + 1


def test_plateau_reading():
    assert "still at the unigram level (6.06)" in plateau_reading(6.02, 6.06)
    assert plateau_reading(4.5, 6.0) == "validation MLM loss 4.50 nats is 1.50 nats below the unigram level (6.00)"
    assert plateau_reading(5.0, None) == ""


def test_tfidf_and_linear_probe_separate_what_is_separable():
    pos = [f"great movie number {i}" for i in range(20)]
    neg = [f"awful film number {i}" for i in range(20)]
    texts, labels = pos + neg, ["pos"] * 20 + ["neg"] * 20
    out = tfidf_accuracy((texts[::2], None, labels[::2]), (texts[1::2], None, labels[1::2]))
    assert out == {"accuracy": 1.0, "f1": 1.0}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] > 0).astype(int)
    assert linear_probe_accuracy(x[:100], y[:100], x[100:], y[100:]) > 0.9
    assert linear_probe_accuracy(x[:100], rng.integers(0, 2, 100), x[100:], y[100:]) < 0.75  # noise labels


@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
def test_pooled_features_ignore_padding(tiny_tokenizer, architecture):
    from transformers import BertConfig, BertForPreTraining, ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    sizes = dict(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, pad_token_id=tiny_tokenizer.pad_token_id)
    model = (BertForPreTraining(BertConfig(**sizes)) if architecture == "bert"
             else ModernBertForMaskedLM(ModernBertConfig(**sizes, attn_implementation="sdpa")))
    one = tiny_tokenizer(["a short text"], return_tensors="pt")
    padded = tiny_tokenizer(["a short text", "a much longer text than the first one is"], padding=True,
                            return_tensors="pt")
    a = pooled_features(model, [dict(one)])
    b = pooled_features(model, [dict(padded)])
    assert a.shape == (1, 32) and b.shape == (2, 32)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)  # padding changes nothing
    assert model.training  # restored


def test_probe_on_the_bundled_task(tiny_tokenizer_dir, tiny_tokenizer, tmp_path):
    from transformers import BertConfig, BertModel

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", f"tokenizer.pretrained={tiny_tokenizer_dir}",
                               "pretrain.probe_examples=200", "pretrain.probe_eval_examples=100"])
    config = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    probe = Probe.from_config(cfg, tiny_tokenizer, config)
    # the probe is built at a run's first evaluation, a step that differs after a resume: it must leave
    # the global RNG (dropout, ELECTRA's samples) as it was, or exact resume breaks
    assert torch.equal(torch.get_rng_state(), before)
    assert len(probe.y_train) == 200 and len(probe.y_test) == 100
    base = probe.baselines
    assert base["probe/tfidf_accuracy"] > 0.7 > base["probe/majority_accuracy"]
    torch.manual_seed(3)
    model = BertModel(config)
    first, second = probe(model), probe(model)
    assert first["probe/accuracy"] == second["probe/accuracy"]  # fixed rows, deterministic fit
    assert 0.3 < first["probe/accuracy"] <= 1.0 and first["probe/seconds"] > 0
    assert Probe.from_config(cfg.replace(**{"pretrain.probe_examples": 0}), tiny_tokenizer, config) is None
    assert Probe.from_config(cfg.replace(**{"finetune.train_file": None}), tiny_tokenizer, config) is None


@pytest.mark.slow
def test_pretraining_logs_the_probe_and_the_unigram_line(tiny_tokenizer_dir, tmp_path):
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.metrics_log import read_metrics

    cfg = load_config("tiny-bert", [
        f"output_dir={tmp_path / 'run'}", f"tokenizer.pretrained={tiny_tokenizer_dir}", "data.max_seq_length=64",
        "model.max_position_embeddings=64", "model.hidden_size=64", "model.num_hidden_layers=1", "data.dupe_factor=1",
        "pretrain.max_steps=4", "pretrain.batch_size=8", "pretrain.eval_steps=2", "pretrain.save_steps=0",
        "tracking.report_to=[]", "pretrain.probe_examples=100", "pretrain.probe_eval_examples=50",
        "finetune.max_length=64"])
    final = pretrain(cfg)
    stats = json.loads(next((tmp_path / "run" / "data").glob("*/stats.json")).read_text())
    unigram = stats["unigram_cross_entropy"]
    assert 4.0 < unigram < 8.0  # ln(vocab) is 7.6 for the 2,000-entry tokenizer; frequencies make it lower
    evals = [r for r in read_metrics(cfg.run_dir / "pretrain" / "metrics.jsonl") if "eval/mlm_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert r["eval/unigram_loss"] == unigram
        assert 0.0 <= r["probe/accuracy"] <= 1.0 and "probe/tfidf_accuracy" in r and "probe/random_init_accuracy" in r
    metrics = json.loads((final / "metrics.json").read_text())
    assert "unigram level" in metrics["plateau"] and 0 < metrics["eval_share_of_time"] < 1
    assert metrics["mixed_precision"] in ("no", "bf16") and metrics["mixed_precision_reason"].startswith("auto: ")
    assert (cfg.run_dir / "pretrain" / "probe.png").is_file()


def test_run_comparison_table_reads_the_gain_against_the_spread():
    from mlm_pretrain.pipeline import format_comparison

    def summary(median, std):
        return {"seeds": [1, 2, 3], "validation": {"accuracy": {"median": median, "std": std}}}

    text = format_comparison("sentiment", summary(0.90, 0.01), summary(0.80, 0.02), {"accuracy": 0.85},
                             {"plateau": "validation MLM loss 2.00 nats is 4.00 nats below the unigram level (6.00)"})
    assert "| fine-tuned from the pretrained encoder | 90.0 ± 1.0 |" in text
    assert "| same architecture from random weights | 80.0 ± 2.0 |" in text
    assert "pretraining pays: above random initialisation by more than the spread; at least level with TF-IDF." in text
    assert "Pretraining: validation MLM loss 2.00 nats is 4.00 nats below" in text
    worse = format_comparison("t", summary(0.81, 0.02), summary(0.80, 0.02), {"accuracy": 0.85}, {})
    assert "does not beat random initialisation beyond the spread here; 4.0 points below TF-IDF." in worse
