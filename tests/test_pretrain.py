"""The pretraining loop: positional data, one-big-batch equivalence, exact resume, evaluation, export,
time budgets, non-finite losses, bad input. Tiny models, a few steps each."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from mlm_pretrain.config import load_config
from mlm_pretrain.errors import UserError
from mlm_pretrain.metrics_log import read_metrics
from mlm_pretrain.optim import make_progress_scheduler

FAST = ["model.preset=tiny", "model.max_position_embeddings=64", "data.max_seq_length=64", "data.dupe_factor=1",
        "pretrain.batch_size=8", "pretrain.max_steps=4", "pretrain.eval_steps=0", "pretrain.save_steps=0",
        "pretrain.logging_steps=1", "pretrain.warmup_steps=1", "pretrain.learning_rate=1e-3",
        "tracking.report_to=[]", "tracking.plots=false", "pretrain.probe_examples=0",
        "pretrain.mixed_precision=no"]  # fp32 on every CPU (`auto` picks bf16 where its matmuls are fast): exact sums
NO_DROPOUT = ["model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0"]
#: model.architecture -> the overrides that select it (the new families train on MLM-only examples).
ARCH = {"bert": [], "modernbert": ["model.architecture=modernbert", "data.objective=mlm"],
        "electra": ["model.architecture=electra", "data.objective=mlm"],
        "modernbert-electra": ["model.architecture=modernbert-electra", "data.objective=mlm"]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory, tiny_tokenizer_dir):
    """Prepared data for FAST, built once per session (runs share it through data.cache_dir)."""
    from mlm_pretrain.prepare import prepare_pretraining_data

    cache = tmp_path_factory.mktemp("prepared")
    cfg = load_config("tiny-bert", [f"output_dir={cache / 'run'}", f"tokenizer.pretrained={tiny_tokenizer_dir}",
                               f"data.cache_dir={cache}", *FAST])
    prepare_pretraining_data(cfg)
    return cache


@pytest.fixture
def config(tmp_path, tiny_tokenizer_dir, data_cache):
    def make(*overrides: str, name: str = "run"):
        return load_config("tiny-bert", [f"output_dir={tmp_path / name}", f"tokenizer.pretrained={tiny_tokenizer_dir}",
                                    f"data.cache_dir={data_cache}", *FAST, *overrides])
    return make


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir / "pretrain" / "metrics.jsonl") if "train/loss" in r}


def _weights(final: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(final / "model.safetensors"))


# ----------------------------------------------------------------------------------------------
# Positional data
# ----------------------------------------------------------------------------------------------
def test_epoch_batches_split_one_global_batch_across_processes():
    from mlm_pretrain.batches import epoch_batches

    one = epoch_batches(50, 8, seed=1, epoch=0)
    assert len(one) == 6 and all(len(b) == 8 for b in one)
    assert len({i for b in one for i in b}) == 48
    assert one == epoch_batches(50, 8, seed=1, epoch=0)
    assert one != epoch_batches(50, 8, seed=1, epoch=1)
    ranks = [epoch_batches(50, 4, seed=1, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    for big, a, b in zip(one, *ranks):
        assert not set(a) & set(b)  # disjoint data on the two processes
        assert a + b == big         # together: the one-process global batch
    halves = epoch_batches(50, 4, seed=1, epoch=0)  # two accumulation micro-batches = one big batch
    assert [halves[2 * k] + halves[2 * k + 1] for k in range(6)] == one


def test_group_by_length_makes_batches_of_similar_lengths():
    from mlm_pretrain.batches import epoch_batches

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 129, (1000,), generator=g).tolist()
    plain = epoch_batches(1000, 8, seed=3, epoch=0)
    grouped = epoch_batches(1000, 8, seed=3, epoch=0, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == sorted(i for b in plain for i in b)  # the same rows
    assert grouped == epoch_batches(1000, 8, seed=3, epoch=0, lengths=lengths)
    assert grouped != epoch_batches(1000, 8, seed=3, epoch=1, lengths=lengths)

    def padding(batches):  # padded positions / real tokens, padding each batch to its longest row
        real = sum(lengths[i] for b in batches for i in b)
        return sum(len(b) * max(lengths[i] for i in b) for b in batches) / real - 1

    assert padding(grouped) < 0.05 < 0.3 < padding(plain)
    first = [lengths[i] for i in grouped[0]]
    assert max(first) - min(first) <= 10
    ranks = [epoch_batches(1000, 4, seed=3, epoch=0, rank=r, world_size=2, lengths=lengths) for r in range(2)]
    assert all(not set(a) & set(b) for a, b in zip(*ranks))


def test_a_row_is_masked_the_same_whatever_its_batch(tiny_tokenizer):
    from mlm_pretrain.config import MaskingConfig
    from mlm_pretrain.masking import MLMCollator
    from mlm_pretrain.batches import collate_masked, mix_seed

    collator = MLMCollator(tiny_tokenizer, MaskingConfig(), seed=0)
    rows = [{"input_ids": [2] + list(range(10, 10 + n)) + [3], "token_type_ids": [0] * (n + 2),
             "next_sentence_label": n % 2} for n in (5, 40, 17)]
    seeds = [mix_seed(7, 0, i) for i in range(3)]
    alone = collate_masked(collator, rows[:1], seeds[:1])
    together = collate_masked(collator, rows, seeds)
    n = alone["input_ids"].size(1)
    assert together["input_ids"].size(1) == 48  # padded to a multiple of 8
    assert torch.equal(together["input_ids"][0, :n], alone["input_ids"][0])
    assert torch.equal(together["labels"][0, :n], alone["labels"][0])
    assert (together["labels"][0, n:] == -100).all()
    assert together["next_sentence_label"].tolist() == [1, 0, 1]
    assert (together["labels"] != -100).sum(1).tolist() == [1, 6, 3]  # round(15% of the non-special tokens)
    other = collate_masked(collator, rows[:1], [mix_seed(7, 1, 0)])  # another epoch: another mask
    assert not torch.equal(other["labels"], alone["labels"]) or not torch.equal(other["input_ids"], alone["input_ids"])


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_resume_at_any_position(tiny_tokenizer, workers):
    from datasets import Dataset

    from mlm_pretrain.config import MaskingConfig
    from mlm_pretrain.masking import MLMCollator
    from mlm_pretrain.batches import TrainBatches

    rows = Dataset.from_dict({"input_ids": [[2] + [10 + i] * (3 + i % 7) + [3] for i in range(20)],
                              "token_type_ids": [[0] * (5 + i % 7) for i in range(20)]})
    data = TrainBatches(rows, MLMCollator(tiny_tokenizer, MaskingConfig(), seed=0), batch_size=3, seed=5, rank=0,
                        world_size=1, num_workers=workers)
    assert data.per_epoch == 6

    def take(start, n):
        it = data.batches(start)
        return [next(it) for _ in range(n)]

    full = take(0, 14)  # crosses two epoch boundaries
    for start in (4, 6, 11):
        for a, b in zip(full[start:], take(start, 14 - start)):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(full[0]["input_ids"][:, :4], full[6]["input_ids"][:, :4])  # new order / masks per epoch


def test_too_few_rows_for_one_global_batch(tiny_tokenizer):
    from datasets import Dataset

    from mlm_pretrain.config import MaskingConfig
    from mlm_pretrain.masking import MLMCollator
    from mlm_pretrain.batches import TrainBatches
    from mlm_pretrain.errors import PretrainError

    rows = Dataset.from_dict({"input_ids": [[2, 9, 3]] * 5, "token_type_ids": [[0, 0, 0]] * 5})
    with pytest.raises(PretrainError, match="fewer than one global batch"):
        TrainBatches(rows, MLMCollator(tiny_tokenizer, MaskingConfig(), seed=0), batch_size=4, seed=0, rank=0,
                     world_size=2)


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_exports_a_plain_hugging_face_model(config, tmp_path, monkeypatch):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline

    from mlm_pretrain import pretrain as pt
    from mlm_pretrain.pretrain import pretrain

    monkeypatch.setattr(pt, "PEAK_MIN_TRAIN_SECONDS", 0.0)  # measure the peak even for this short run

    cfg = config("pretrain.eval_steps=2", "pretrain.save_steps=2", "tracking.plots=true",
                 "tracking.report_to=[tensorboard]")
    final = pretrain(cfg)
    assert final == tmp_path / "run" / "pretrain" / "final"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt", "metrics.json", "config.yaml"):
        assert (final / name).is_file(), name
    assert not list(final.glob("*.bin"))
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["completed"]
    assert 0 <= metrics["eval/mlm_accuracy"] <= 1 and 0 <= metrics["eval/nsp_accuracy"] <= 1
    assert metrics["eval/perplexity"] == pytest.approx(math.exp(metrics["eval/mlm_loss"]))
    assert metrics["train/tokens_per_second"] > 0 and 0 < metrics["mfu"] < 1
    assert "MFU of the measured fp32 matmul peak" in metrics["summary"]
    log = read_metrics(final.parent / "metrics.jsonl")
    assert [r["step"] for r in log if "train/loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in log if "eval/mlm_loss" in r] == [2, 4]
    lrs = [r["train/learning_rate"] for r in log if "train/learning_rate" in r]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(0.0)  # warmup 1 step, linear decay to 0
    assert {p.name for p in final.parent.glob("*.png")} >= {"loss.png", "accuracy.png", "learning_rate.png"}
    assert list((final.parent / "logs").rglob("events.out.tfevents*"))
    assert sorted(p.name for p in (final.parent / "checkpoints").iterdir()) == ["step-2", "step-4"]

    # plain transformers: both heads load, and the fill-mask pipeline works
    pre = AutoModelForPreTraining.from_pretrained(str(final))
    assert type(pre).__name__ == "BertForPreTraining"
    mlm = AutoModelForMaskedLM.from_pretrained(str(final))
    assert torch.equal(mlm.cls.predictions.transform.dense.weight, pre.cls.predictions.transform.dense.weight)
    assert torch.equal(mlm.bert.embeddings.word_embeddings.weight, mlm.cls.predictions.decoder.weight)
    tok = AutoTokenizer.from_pretrained(str(final))
    fill = pipeline("fill-mask", model=str(final), top_k=3)
    out = fill(f"the company said {tok.mask_token} would rise.")
    assert len(out) == 3 and all(isinstance(o["token_str"], str) for o in out)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_accumulation_equals_one_big_batch(config, arch):
    from mlm_pretrain.pretrain import pretrain

    plain = ("pretrain.group_by_length=false", "pretrain.max_steps=3")  # grouping cuts by micro-batch size
    big = pretrain(config(*ARCH[arch], *NO_DROPOUT, *plain, name="big"))
    acc = pretrain(config(*ARCH[arch], *NO_DROPOUT, *plain, "pretrain.batch_size=4",
                          "pretrain.gradient_accumulation_steps=2", name="acc"))
    a, b = _losses(big.parent.parent), _losses(acc.parent.parent)
    assert a.keys() == b.keys() == {1, 2, 3}
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5)
    wa, wb = _weights(big), _weights(acc)
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5), name


def test_batch_ramp_grows_the_step_from_one_micro_batch(config):
    """batch_ramp=0.5 over 8 steps of up to 4 micro-batches: 1 + int(3 x (step / 8) / 0.5) micro-batches,
    then 4; the loop logs the sequences per step and consumes exactly that many micro-batches."""
    from mlm_pretrain.pretrain import pretrain

    final = pretrain(config("pretrain.batch_size=2", "pretrain.gradient_accumulation_steps=4",
                            "pretrain.batch_ramp=0.5", "pretrain.max_steps=8", "pretrain.group_by_length=false"))
    sizes = [r["train/batch_size"] for r in read_metrics(final.parent / "metrics.jsonl") if "train/batch_size" in r]
    assert sizes == [2, 2, 4, 6, 8, 8, 8, 8]
    assert json.loads((final / "metrics.json").read_text())["step"] == 8
    card = (final / "README.md").read_text()
    assert "| Batch ramp | 1 to 4 micro-batches per step over the first 50% of the run |" in card


def test_batch_ramp_follows_the_time_budget():
    """With a time budget the ramp follows the clock every process shares (or the steps, if further)."""
    from types import SimpleNamespace

    from mlm_pretrain.pretrain import _Run

    run = SimpleNamespace(pcfg=SimpleNamespace(gradient_accumulation_steps=5, batch_ramp=0.4, time_budget_minutes=10),
                          total_steps=None, clock=SimpleNamespace(shared=0.0))
    run.progress = lambda step: _Run.progress(run, step)
    counts = []
    for seconds in (0, 60, 119, 120, 180, 239, 240, 600):
        run.clock.shared = seconds
        counts.append(_Run.accumulation(run, step=10_000))
    assert counts == [1, 2, 2, 3, 4, 4, 5, 5]  # 1 + int(4 x (t / 600) / 0.4), at most 5
    run.total_steps, run.clock.shared = 100, 0.0
    assert _Run.accumulation(run, step=40) == 5  # 40% of max_steps is 40% of the run too
    run.pcfg.batch_ramp = 0.0
    run.clock.shared = 0.0
    assert _Run.accumulation(run, step=0) == 5


def test_loss_is_normalised_over_the_whole_step(config, monkeypatch):
    """Per-micro-batch averaging would weight a micro-batch with few masked tokens as much as one with
    many; the step loss must be sum(token losses) / (masked tokens of the whole step)."""
    from mlm_pretrain import pretrain as pt

    seen = []
    original = pt._Run._forward_backward

    def spy(self, micro, counts):
        masked = [int((b["labels"] != -100).sum()) for b in micro]
        stats = original(self, micro, counts)
        seen.append((masked, counts["mlm_count"], stats))
        return stats

    monkeypatch.setattr(pt._Run, "_forward_backward", spy)
    pt.pretrain(config("pretrain.max_steps=2", "pretrain.batch_size=4", "pretrain.gradient_accumulation_steps=3"))
    assert len(seen) == 2  # one call per optimizer step: the checks below ran on both
    for masked, n_masked, stats in seen:
        assert n_masked == sum(masked) and len(masked) == 3
        assert stats["mlm_count"] == n_masked
        expected = stats["mlm_loss"] / n_masked + stats["nsp_loss"] / stats["nsp_count"]
        assert stats["loss"] == pytest.approx(expected, rel=1e-5)


def test_electra_step_loss_is_generator_plus_weighted_discriminator(config, monkeypatch):
    """ELECTRA: loss = MLM sum / masked tokens of the step + weight x RTD sum / real tokens of the step."""
    from mlm_pretrain import pretrain as pt

    seen = []
    original = pt._Run._forward_backward

    def spy(self, micro, counts):
        real = sum(int(b["attention_mask"].sum()) for b in micro)
        stats = original(self, micro, counts)
        seen.append((real, counts, stats))
        return stats

    monkeypatch.setattr(pt._Run, "_forward_backward", spy)
    pt.pretrain(config(*ARCH["electra"], "pretrain.max_steps=2", "pretrain.batch_size=4",
                       "pretrain.gradient_accumulation_steps=2", "pretrain.electra_disc_weight=20"))
    assert len(seen) == 2
    for real, counts, stats in seen:
        assert counts["rtd_count"] == stats["rtd_count"] == real
        expected = stats["mlm_loss"] / counts["mlm_count"] + 20 * stats["rtd_loss"] / real
        assert stats["loss"] == pytest.approx(expected, rel=1e-5)
        assert 0 <= stats["rtd_correct"] <= real


@pytest.mark.slow
def test_modernbert_run_exports_plain_hugging_face_folders_and_fine_tunes(config, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.evaluation import evaluate_checkpoint
    from mlm_pretrain.pretrain import pretrain

    cfg = config(*ARCH["modernbert"], "pretrain.eval_steps=2", "pretrain.save_steps=2")
    final = pretrain(cfg)
    config_json = json.loads((final / "config.json").read_text())
    assert config_json["model_type"] == "modernbert" and config_json["architectures"] == ["ModernBertForMaskedLM"]
    assert config_json["sparse_prediction"] and config_json["classifier_pooling"] == "mean"
    assert config_json["mlp_dropout"] == config_json["attention_dropout"] == 0.0  # the family's pretraining default
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0 <= metrics["eval/mlm_accuracy"] <= 1 and "eval/nsp_loss" not in metrics
    again = evaluate_checkpoint(cfg, final)
    assert again["eval/mlm_loss"] == pytest.approx(metrics["eval/mlm_loss"], rel=1e-5)
    card = (final / "README.md").read_text()
    assert "ModernBERT encoder" in card and "modernbert" in card
    mlm = AutoModelForMaskedLM.from_pretrained(str(final))
    assert type(mlm).__name__ == "ModernBertForMaskedLM"
    tok = AutoTokenizer.from_pretrained(str(final))
    out = pipeline("fill-mask", model=str(final), top_k=2)(f"the company said {tok.mask_token} would rise.")
    assert len(out) == 2
    clf = AutoModelForSequenceClassification.from_pretrained(str(final), num_labels=2)
    assert type(clf).__name__ == "ModernBertForSequenceClassification"
    assert torch.equal(clf.model.layers[0].attn.Wqkv.weight, mlm.model.layers[0].attn.Wqkv.weight)

    ft = {"finetune.max_train_examples": 16, "finetune.max_eval_examples": 8, "finetune.num_epochs": 1,
          "finetune.batch_size": 8, "finetune.save_checkpoints": False, "finetune.max_length": 64}
    clf_dir = finetune(cfg.replace(**ft))
    saved = json.loads((clf_dir / "config.json").read_text())
    assert saved["architectures"] == ["ModernBertForSequenceClassification"]
    assert type(AutoModelForSequenceClassification.from_pretrained(str(clf_dir))).__name__ == \
        "ModernBertForSequenceClassification"
    rand = finetune(cfg.replace(**ft, **{"finetune.init": "random", "finetune.task_name": "rand"}))
    assert json.loads((rand / "config.json").read_text())["model_type"] == "modernbert"


@pytest.mark.slow
def test_electra_run_exports_discriminator_and_generator(config, tmp_path):
    from transformers import (AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForSequenceClassification,
                              AutoTokenizer, pipeline)

    from mlm_pretrain.errors import UserError as _UserError
    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.evaluation import evaluate_checkpoint
    from mlm_pretrain.pretrain import pretrain

    cfg = config(*ARCH["electra"], "pretrain.eval_steps=2", "pretrain.save_steps=2")
    final = pretrain(cfg)
    disc = AutoModelForPreTraining.from_pretrained(str(final))
    assert type(disc).__name__ == "ElectraForPreTraining"
    gen = AutoModelForMaskedLM.from_pretrained(str(final / "generator"))
    assert type(gen).__name__ == "ElectraForMaskedLM"
    assert gen.config.hidden_size == disc.config.hidden_size // 4
    # the embeddings were one module in training: both exports hold the same values
    assert torch.equal(gen.electra.embeddings.word_embeddings.weight, disc.electra.embeddings.word_embeddings.weight)
    assert torch.equal(gen.electra.embeddings.position_embeddings.weight,
                       disc.electra.embeddings.position_embeddings.weight)
    tok = AutoTokenizer.from_pretrained(str(final / "generator"))
    out = pipeline("fill-mask", model=str(final / "generator"), top_k=2)(f"the company said {tok.mask_token} would rise.")
    assert len(out) == 2
    clf = AutoModelForSequenceClassification.from_pretrained(str(final), num_labels=2)
    assert type(clf).__name__ == "ElectraForSequenceClassification"
    assert torch.equal(clf.electra.encoder.layer[0].attention.self.query.weight,
                       disc.electra.encoder.layer[0].attention.self.query.weight)

    metrics = json.loads((final / "metrics.json").read_text())
    for key in ("eval/mlm_accuracy", "eval/rtd_accuracy", "eval/rtd_precision", "eval/rtd_recall"):
        assert 0 <= metrics[key] <= 1, key
    log = read_metrics(final.parent / "metrics.jsonl")
    evals = [r for r in log if "eval/rtd_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    again = evaluate_checkpoint(cfg, final)  # the same seeded replacements as the run's own evaluation
    for key in ("eval/mlm_loss", "eval/rtd_loss", "eval/rtd_accuracy", "eval/rtd_recall"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-5), key
    assert "Replaced-token detection" in (final / "README.md").read_text()
    assert metrics["train/model_flops"] if "train/model_flops" in metrics else True

    ft = {"finetune.max_train_examples": 16, "finetune.max_eval_examples": 8, "finetune.num_epochs": 1,
          "finetune.batch_size": 8, "finetune.save_checkpoints": False, "finetune.max_length": 64}
    clf_dir = finetune(cfg.replace(**ft))
    assert json.loads((clf_dir / "config.json").read_text())["architectures"] == ["ElectraForSequenceClassification"]
    with pytest.raises(_UserError, match=r"ELECTRA generator.*finetune.model=.*final$"):
        finetune(cfg.replace(**ft, **{"finetune.model": str(final / "generator"), "finetune.task_name": "gen"}))


@pytest.mark.slow
def test_modernbert_electra_run_exports_discriminator_and_generator_and_fine_tunes(config):
    """Replaced-token detection on the ModernBERT backbone: a ModernBertForTokenClassification discriminator
    (one logit per token) and a one-layer ModernBertForMaskedLM generator in generator/, the same embeddings
    in both; evaluation repeats exactly; fine-tuning loads the discriminator's encoder and head."""
    from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              pipeline)

    from mlm_pretrain.errors import UserError as _UserError
    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.evaluation import evaluate_checkpoint
    from mlm_pretrain.pretrain import pretrain

    cfg = config(*ARCH["modernbert-electra"], "pretrain.eval_steps=2")
    final = pretrain(cfg)
    disc = AutoModelForTokenClassification.from_pretrained(str(final))
    gen = AutoModelForMaskedLM.from_pretrained(str(final / "generator"))
    assert type(disc).__name__ == "ModernBertForTokenClassification" and disc.config.num_labels == 1
    assert type(gen).__name__ == "ModernBertForMaskedLM"
    assert (disc.config.num_hidden_layers, gen.config.num_hidden_layers) == (2, 1)  # tiny: 2 layers; a quarter -> 1
    assert torch.equal(gen.model.embeddings.tok_embeddings.weight, disc.model.embeddings.tok_embeddings.weight)
    assert len(pipeline("fill-mask", model=str(final / "generator"), top_k=2)("the company said [MASK] would rise.")) == 2
    metrics = json.loads((final / "metrics.json").read_text())
    for key in ("eval/mlm_accuracy", "eval/rtd_accuracy", "eval/rtd_precision", "eval/rtd_recall"):
        assert 0 <= metrics[key] <= 1, key
    again = evaluate_checkpoint(cfg, final)
    for key in ("eval/mlm_loss", "eval/rtd_loss", "eval/rtd_accuracy"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-5), key
    card = (final / "README.md").read_text()
    assert "ELECTRA discriminator on the ModernBERT backbone" in card and "AutoModelForTokenClassification" in card

    ft = {"finetune.max_train_examples": 16, "finetune.max_eval_examples": 8, "finetune.num_epochs": 1,
          "finetune.batch_size": 8, "finetune.save_checkpoints": False, "finetune.max_length": 64}
    clf_dir = finetune(cfg.replace(**ft))
    assert json.loads((clf_dir / "config.json").read_text())["architectures"] == ["ModernBertForSequenceClassification"]
    assert "num_labels=2, ignore_mismatched_sizes=True)" in card  # the card's line, as a user runs it:
    clf = AutoModelForSequenceClassification.from_pretrained(str(final), num_labels=2, ignore_mismatched_sizes=True)
    assert torch.equal(clf.head.dense.weight, disc.head.dense.weight)  # the detector's head starts the classifier
    with pytest.raises(_UserError, match=r"ELECTRA generator \(ModernBertForMaskedLM\).*finetune.model=.*final$"):
        finetune(cfg.replace(**ft, **{"finetune.model": str(final / "generator"), "finetune.task_name": "gen"}))


def test_electra_flops_count_the_generator(config):
    from mlm_pretrain import pretrain as pt
    from mlm_pretrain.flops import pretraining_flops

    final = pt.pretrain(config(*ARCH["electra"], "pretrain.max_steps=2"))
    log = [r for r in read_metrics(final.parent / "metrics.jsonl") if "train/model_flops" in r]
    disc = json.loads((final / "config.json").read_text())
    from transformers import ElectraConfig

    d = ElectraConfig(**{k: v for k, v in disc.items() if k != "model_type"})
    alone = pretraining_flops(d, 1000, 64, 150)
    with_gen = pretraining_flops(d, 1000, 64, 150, generator_config=ElectraConfig.from_pretrained(
        str(final / "generator")))
    assert with_gen > alone and log[-1]["train/model_flops"] > 0


@pytest.mark.parametrize("arch", ["modernbert", "electra", "modernbert-electra"])
def test_sentence_objectives_are_refused_before_work(config, arch, tmp_path):
    from mlm_pretrain.config import ConfigError

    for objective in ("nsp", "sop"):
        with pytest.raises(ConfigError, match=f"data.objective={objective}: model.architecture={arch} .*set "
                                              "data.objective=mlm"):
            config(f"model.architecture={arch}", f"data.objective={objective}")


def test_electra_generator_heads_must_divide_its_width_before_work(config):
    from mlm_pretrain.model import ModelError
    from mlm_pretrain.pretrain import pretrain

    cfg = config(*ARCH["electra"], "model.generator_hidden_size=50", "model.generator_num_attention_heads=3")
    with pytest.raises(ModelError, match="generator's hidden size 50 .* not a multiple of its 3 attention heads"):
        pretrain(cfg)
    assert not (cfg.run_dir / "pretrain" / "checkpoints").exists()


def _crash_after_step_2_save(monkeypatch, cfg) -> None:
    """Run ``cfg``'s pretraining until it crashes right after writing the step-2 checkpoint, then
    restore the real ``save`` so the same command can resume."""
    from mlm_pretrain import pretrain as pt

    original = pt._Run.save

    def crash(self):
        path = original(self)
        if self.state.step == 2:
            raise RuntimeError("simulated crash")
        return path

    monkeypatch.setattr(pt._Run, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pt.pretrain(cfg)
    monkeypatch.setattr(pt._Run, "save", original)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCH))
def test_resume_after_a_crash_is_exact(config, monkeypatch, arch):
    """A crash right after the step-2 checkpoint, then the same command: same losses, same weights (and
    for ELECTRA the same generator: its samples come from the RNG the checkpoint restores)."""
    from mlm_pretrain import pretrain as pt

    whole = pt.pretrain(config(*ARCH[arch], "pretrain.save_steps=2", "pretrain.max_steps=5", name="whole"))

    cfg = config(*ARCH[arch], "pretrain.save_steps=2", "pretrain.max_steps=5", name="crashed")
    _crash_after_step_2_save(monkeypatch, cfg)
    resumed = pt.pretrain(cfg)
    assert _losses(whole.parent.parent) == _losses(resumed.parent.parent)  # bit-identical floats
    for sub in ([".", "generator"] if "electra" in arch else ["."]):
        wa, wb = _weights(whole / sub), _weights(resumed / sub)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resume_mid_ramp_is_exact(config, monkeypatch):
    """A crash at step 2 of a batch ramp: the resumed run takes the same micro-batches per step."""
    from mlm_pretrain import pretrain as pt

    ramp = ("pretrain.batch_size=2", "pretrain.gradient_accumulation_steps=3", "pretrain.batch_ramp=0.8",
            "pretrain.save_steps=2", "pretrain.max_steps=5")
    whole = pt.pretrain(config(*ramp, name="whole"))
    cfg = config(*ramp, name="crashed")
    _crash_after_step_2_save(monkeypatch, cfg)
    resumed = pt.pretrain(cfg)
    assert _losses(whole.parent.parent) == _losses(resumed.parent.parent)
    sizes = [[r["train/batch_size"] for r in read_metrics(d.parent / "metrics.jsonl") if "train/batch_size" in r]
             for d in (whole, resumed)]
    assert sizes[0] == sizes[1] == [2, 2, 4, 4, 6]
    wa, wb = _weights(whole), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resume_skips_corrupt_and_partial_checkpoints(config, caplog):
    from mlm_pretrain.pretrain import pretrain

    pretrain(config("pretrain.save_steps=2", "pretrain.max_steps=4"))
    ckpts = config().run_dir / "pretrain" / "checkpoints"
    (ckpts / "step-4" / "model.safetensors").write_bytes(b"\0garbage")  # corrupt newest
    (ckpts / "step-6").mkdir()                                           # partial: no checkpoint.json
    (ckpts / "step-6" / "model.safetensors").write_bytes(b"half")
    with caplog.at_level(logging.WARNING):
        final = pretrain(config("pretrain.save_steps=2", "pretrain.max_steps=6"))
    text = caplog.text
    assert "step-6" in text and "incomplete" in text
    assert "step-4" in text and "cannot be loaded" in text
    losses = _losses(final.parent.parent)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]  # steps 3-4 re-done from step-2, the log has no duplicates
    assert json.loads((final / "metrics.json").read_text())["step"] == 6


def test_all_checkpoints_corrupt_is_an_error(config):
    from mlm_pretrain.pretrain import pretrain

    pretrain(config("pretrain.save_steps=2", "pretrain.max_steps=2"))
    ckpt = config().run_dir / "pretrain" / "checkpoints" / "step-2"
    (ckpt / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="no checkpoint .* can be loaded.*resume=never"):
        pretrain(config("pretrain.max_steps=3"))


def test_a_finished_run_is_not_trained_again(config):
    from mlm_pretrain.pretrain import pretrain

    final = pretrain(config("pretrain.max_steps=2"))
    log = final.parent / "metrics.jsonl"
    before = log.read_text()
    assert pretrain(config("pretrain.max_steps=2")) == final
    assert log.read_text() == before
    pretrain(config("pretrain.max_steps=3"))  # more steps: resumes from the step-2 checkpoint
    assert sorted(_losses(final.parent.parent)) == [1, 2, 3]


def test_plain_batches_run(config):
    from mlm_pretrain.pretrain import pretrain

    final = pretrain(config("pretrain.group_by_length=false", "pretrain.max_steps=3"))
    assert sorted(_losses(final.parent.parent)) == [1, 2, 3]


@pytest.mark.slow
def test_streaming_data_trains_and_resumes_exactly(config, monkeypatch):
    from mlm_pretrain import pretrain as pt

    args = ("data.streaming=true", "data.shuffle_buffer=50", "pretrain.save_steps=2", "pretrain.max_steps=4")
    whole = pt.pretrain(config(*args, name="stream-whole"))
    _crash_after_step_2_save(monkeypatch, config(*args, name="stream-crashed"))
    resumed = pt.pretrain(config(*args, name="stream-crashed"))
    assert sorted(_losses(whole.parent.parent)) == [1, 2, 3, 4]
    assert _losses(whole.parent.parent) == _losses(resumed.parent.parent)
    with pytest.raises(UserError, match="num_epochs needs cached data"):
        pt.pretrain(config("data.streaming=true", "pretrain.num_epochs=1", name="stream-epochs"))


@pytest.mark.slow
def test_time_budget_stops_the_run_and_decays_the_rate(config):
    from mlm_pretrain.pretrain import pretrain

    final = pretrain(config("pretrain.max_steps=null", "pretrain.time_budget_minutes=0.05",
                            "pretrain.lr_scheduler=linear", "pretrain.warmup_steps=0", "pretrain.warmup_ratio=0"))
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["step"] >= 2
    lrs = [r["train/learning_rate"] for r in read_metrics(final.parent / "metrics.jsonl") if "train/learning_rate" in r]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.5e-3  # decays with elapsed time


def test_the_progress_bar_in_a_log_file_is_not_redrawn_every_step(config, capfd):
    """Written to a file (stderr not a terminal), the bar is drawn at start, at most once a minute and at
    the end, not once per logging step: an hour's log stays readable. Per-step lines stay in metrics.jsonl."""
    from mlm_pretrain.pretrain import pretrain

    final = pretrain(config("pretrain.max_steps=20", "pretrain.logging_steps=1"))
    err = capfd.readouterr().err
    draws = err.count("pretrain:")
    assert 1 <= draws <= 3, err[-2000:]
    assert "20/20" in err  # the last draw shows the finished run
    assert len([r for r in read_metrics(final.parent / "metrics.jsonl") if "train/loss" in r]) == 20


def test_progress_scheduler_follows_a_fake_clock():
    now = {"t": 0.0}
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = make_progress_scheduler("linear", opt, lambda step: now["t"] / 100.0, warmup_fraction=0.1)
    lrs = []
    for t in (0, 5, 10, 55, 100, 150):
        now["t"] = t
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    opt = torch.optim.SGD([param], lr=2.0)
    sched = make_progress_scheduler("cosine", opt, lambda step: 0.5, warmup_steps=4)
    opt.step()
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(2.0 * 0.5 * 0.25)  # half-way cosine x warmup 1/4


def test_nonfinite_losses_skip_steps_then_stop_with_advice(config, monkeypatch):
    from mlm_pretrain import objectives
    from mlm_pretrain import pretrain as pt

    original = objectives.pretraining_sums
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in poison:
            out["mlm_loss"] = out["mlm_loss"] * float("nan")
        return out

    monkeypatch.setattr(objectives, "pretraining_sums", poisoned)
    poison = {2}
    final = pt.pretrain(config("pretrain.max_steps=3", name="one-nan"))
    metrics = read_metrics(final.parent / "metrics.jsonl")
    assert [r["step"] for r in metrics if "train/loss" in r] == [1, 2, 3]
    assert all(math.isfinite(r["train/loss"]) for r in metrics if "train/loss" in r)
    assert metrics[-2]["train/nonfinite_steps"] == 1
    poison = set(range(2, 100))
    with pytest.raises(pt.TrainingDiverged, match="3 optimizer steps in a row.*learning_rate.*bf16"):
        pt.pretrain(config("pretrain.max_steps=10", "pretrain.max_nonfinite_steps=3", name="diverged"))


def test_hub_call_sites(config, monkeypatch):
    """hub.push: preflight before training, checkpoints pushed in the background, final pushed and waited for."""
    from mlm_pretrain import pretrain as pt

    events = []

    class FakePusher:
        def __init__(self, cfg):
            events.append("pusher")

        def submit(self, path):
            events.append(("submit", Path(path).name))

        def is_pending(self, path):
            return False

        def wait(self):
            events.append("wait")
            return []

    monkeypatch.setattr(pt, "preflight", lambda cfg: events.append("preflight"))
    monkeypatch.setattr(pt, "BackgroundPusher", FakePusher)
    pt.pretrain(config("hub.push=true", "hub.repo_id=me/model", "hub.strategy=checkpoint", "pretrain.save_steps=2"))
    assert events == ["preflight", "pusher", ("submit", "step-2"), ("submit", "step-4"), ("submit", "final"), "wait"]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_vocabulary_mismatch_is_an_error_before_training(config, tmp_path):
    from transformers import BertConfig

    from mlm_pretrain.pretrain import pretrain

    path = tmp_path / "bert.json"
    BertConfig(vocab_size=999, hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
               max_position_embeddings=64).to_json_file(str(path))
    with pytest.raises(UserError, match="vocabulary mismatch.*999"):
        pretrain(config(f"model.config_path={path}"))
    assert not (config().run_dir / "pretrain" / "checkpoints").exists()


def test_resuming_with_another_tokenizer_is_an_error(config, tmp_path):
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.tokenizer import train_tokenizer

    pretrain(config("pretrain.max_steps=2", "pretrain.save_steps=2"))
    other = train_tokenizer(load_config("tiny-bert", [f"output_dir={tmp_path / 'tok'}", "tokenizer.vocab_size=1500"]))
    with pytest.raises(UserError, match="1500.*vocabulary|vocabulary.*1500"):
        pretrain(config("pretrain.max_steps=3", f"tokenizer.pretrained={other}"))


def _swap_two_ids(tok_dir: Path) -> None:
    """The same pieces and size, two of them with each other's id: what a WordPiece retraining gives."""
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted((t for t in vocab if t.isalpha()), key=vocab.get)[:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tok_dir / "tokenizer.json").write_text(json.dumps(data))
    (tok_dir / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)))


def test_resuming_with_a_retrained_tokenizer_of_the_same_size_is_an_error(config, tmp_path, tiny_tokenizer_dir):
    import shutil

    from mlm_pretrain.pretrain import pretrain

    tok = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    final = pretrain(config("pretrain.max_steps=2", "pretrain.save_steps=2", f"tokenizer.pretrained={tok}"))
    weights = (final / "model.safetensors").read_bytes()
    _swap_two_ids(tok)
    for steps in (2, 3):  # neither "already finished" nor resumed: the ids mean other pieces now
        with pytest.raises(UserError, match="another tokenizer.*same .* entries.*new run"):
            pretrain(config(f"pretrain.max_steps={steps}", f"tokenizer.pretrained={tok}"))
    assert (final / "model.safetensors").read_bytes() == weights
    assert (final.parent / "checkpoints" / "step-2").is_dir()


@pytest.mark.slow
def test_a_finished_run_whose_corpus_changed_goes_on_from_its_checkpoint(config, tmp_path, caplog):
    from mlm_pretrain.pretrain import pretrain

    corpus = tmp_path / "corpus.txt"
    source = Path(__file__).resolve().parent.parent / "data" / "corpus.txt"
    corpus.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    final = pretrain(config("pretrain.max_steps=2", "pretrain.save_steps=2", f"corpus.files=[{corpus}]"))
    first = json.loads((final / "metrics.json").read_text())
    with corpus.open("a", encoding="utf-8") as f:
        f.write("\nA new document arrived. It has two sentences.\n")
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.pretrain"):
        pretrain(config("pretrain.max_steps=2", f"corpus.files=[{corpus}]"))
    assert "prepared data changed since the checkpoints" in caplog.text
    second = json.loads((final / "metrics.json").read_text())
    assert second["data_key"] != first["data_key"] and second["tokenizer_hash"] == first["tokenizer_hash"]
    assert second["step"] == 2


def test_sequence_longer_than_the_model_is_an_error(config):
    from mlm_pretrain.pretrain import pretrain

    with pytest.raises(UserError, match="max_seq_length=64 exceeds model.max_position_embeddings=32"):
        pretrain(config("model.max_position_embeddings=32"))


def test_unwritable_output_dir_is_an_error_before_training(config, tmp_path):
    from mlm_pretrain.pretrain import pretrain

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = config().replace(output_dir=str(blocker / "run"))
    with pytest.raises(UserError, match="cannot write to output directory"):
        pretrain(cfg)


def test_missing_tokenizer_says_what_to_run(config, tmp_path):
    from mlm_pretrain.pretrain import pretrain

    cfg = config().replace(**{"tokenizer.pretrained": None})
    with pytest.raises(UserError, match="mlm-pretrain tokenizer"):
        pretrain(cfg)


def test_fp16_on_cpu_is_an_error(config):
    from mlm_pretrain.pretrain import pretrain

    with pytest.raises(UserError, match="fp16 needs a GPU"):
        pretrain(config("pretrain.mixed_precision=fp16"))


def test_a_run_resolves_its_paths_and_stamps_its_inputs_once(config, monkeypatch):
    """The tokenizer folder, its hash and the corpus fingerprint are worked out once before training
    (mlm_pretrain.identity), not again by each module that needs them."""
    from mlm_pretrain import corpus, identity, prepare, pretrain as pt, tokenizer

    calls = []
    for module, name in ((tokenizer, "tokenizer_hash"), (identity, "tokenizer_hash"), (tokenizer, "load_tokenizer"),
                         (prepare, "load_tokenizer"), (pt, "load_tokenizer"), (corpus, "corpus_fingerprint"),
                         (identity, "corpus_fingerprint")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))

    class Started(Exception):
        pass

    def train(self):
        raise Started
    monkeypatch.setattr(pt._Run, "train", train)
    with pytest.raises(Started):
        pt.pretrain(config("pretrain.max_steps=1"))
    assert sorted(calls) == ["corpus_fingerprint", "load_tokenizer", "tokenizer_hash"]


@pytest.mark.slow
def test_bf16_runs_on_cpu_with_a_warning_where_the_probe_measured_it_slow(config, monkeypatch, caplog):
    from mlm_pretrain import hardware
    from mlm_pretrain.pretrain import pretrain

    monkeypatch.setattr(hardware, "cpu_matmul_probe", lambda: {"cpu": "Test CPU (avx2)", "fp32_gflops": 100.0,
                                                               "bf16_gflops": 10.0})
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.pretrain"):
        final = pretrain(config("pretrain.mixed_precision=bf16", "pretrain.max_steps=2"))
    assert "bf16 autocast runs slower than fp32 on this CPU (Test CPU (avx2): bf16 matmul 10 GFLOP/s" in caplog.text
    losses = _losses(final.parent.parent)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses.values())


# ----------------------------------------------------------------------------------------------
# Evaluating an exported encoder on another config's validation masks
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_checkpoint_reproduces_the_run_and_compares_masking_on_the_same_masks(config, tmp_path):
    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.evaluation import evaluate_checkpoint
    from mlm_pretrain.pretrain import pretrain

    cfg = config()
    final = pretrain(cfg)
    logged = json.loads((final / "metrics.json").read_text())
    again = evaluate_checkpoint(cfg, final)
    for key in ("eval/mlm_loss", "eval/mlm_accuracy", "eval/nsp_loss", "eval/nsp_accuracy"):
        assert again[key] == pytest.approx(logged[key], rel=1e-5), key

    # a run that masks 40% is evaluated by its own run on 40% masks, by the base config on 15% masks
    m40 = config("masking.probability=0.4", name="m40")
    final40 = pretrain(m40)
    own = json.loads((final40 / "metrics.json").read_text())
    on_base = evaluate_checkpoint(cfg, final40)
    assert on_base["eval/mlm_loss"] != pytest.approx(own["eval/mlm_loss"], rel=1e-4)
    assert evaluate_checkpoint(m40, final40)["eval/mlm_loss"] == pytest.approx(own["eval/mlm_loss"], rel=1e-5)
    assert len(list(RunLayout.of(cfg).data_root.iterdir())) >= 2  # the 40% run's validation masks are a cache entry of their own


def test_evaluate_checkpoint_with_another_vocabulary_is_an_error(config, tmp_path):
    from mlm_pretrain.evaluation import evaluate_checkpoint
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.tokenizer import train_tokenizer

    final = pretrain(config("pretrain.max_steps=1"))
    other = train_tokenizer(load_config("tiny-bert", [f"output_dir={tmp_path / 'tok'}", "tokenizer.vocab_size=1500"]))
    with pytest.raises(UserError, match="another vocabulary.*tokenizer.pretrained="):
        evaluate_checkpoint(config(f"tokenizer.pretrained={other}"), final)


def test_pretraining_keeps_freed_memory_while_it_trains_and_gives_it_back(config, monkeypatch, plain_allocator):
    """pretrain.malloc: the stage's HeapReuse is active over the steps, closed at the end, and named in
    final/metrics.json; ``system`` leaves the allocator alone (tests/test_malloc.py: the faults)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from mlm_pretrain import pretrain as pt
    from mlm_pretrain import hardware

    heaps, active_at_steps = [], []

    class Recorded(hardware.HeapReuse):
        def __init__(self, setting):
            super().__init__(setting)
            heaps.append(self)
    monkeypatch.setattr(hardware, "HeapReuse", Recorded)  # what the loop's machine set-up builds
    hook = register_optimizer_step_post_hook(lambda *a: active_at_steps.append(heaps[-1].active))
    try:
        final = pt.pretrain(config("pretrain.max_steps=2"))
        metrics = json.loads((final / "metrics.json").read_text())
        glibc = hardware._glibc() is not None
        assert active_at_steps == [glibc] * 2 and len(heaps) == 1 and not heaps[0].active  # closed
        assert metrics["malloc"] == ("reuse" if glibc else "system") and metrics["malloc_reason"] == heaps[0].reason
        active_at_steps.clear()
        final = pt.pretrain(config("pretrain.max_steps=2", "pretrain.malloc=system", name="system"))
    finally:
        hook.remove()
    assert active_at_steps == [False] * 2
    assert json.loads((final / "metrics.json").read_text())["malloc_reason"] == "system: left as it is (malloc=system)"


def test_pretraining_trains_with_the_attention_kernels_the_probe_chose(config, monkeypatch, caplog):
    """On a CPU: without attention dropout, the SDPA kernels the probe picked for every forward; with
    it (tiny-bert keeps BERT's 0.1), mlm_pretrain.dropout's attention and no probe."""
    from torch.nn.attention import SDPBackend

    from mlm_pretrain import pretrain as pt
    from mlm_pretrain import hardware

    used, probed = [], []

    def probe(precision, **shape):
        probed.append((precision, shape))
        return [SDPBackend.MATH], "math (test figures)"
    real = pt.sdpa_backends
    monkeypatch.setattr(hardware, "cpu_attention_backends", probe)
    monkeypatch.setattr(pt, "sdpa_backends", lambda b: used.append(b) or real(b))
    cfg = config("pretrain.max_steps=2", "pretrain.gradient_accumulation_steps=2", *NO_DROPOUT)
    final = pt.pretrain(cfg)
    assert json.loads((final / "metrics.json").read_text())["attention_backend"] == "math (test figures)"
    mc = json.loads((final / "config.json").read_text())
    assert probed == [("no", {"batch": cfg.pretrain.batch_size, "heads": mc["num_attention_heads"],
                              "seq": cfg.data.max_seq_length,
                              "head_dim": mc["hidden_size"] // mc["num_attention_heads"]})]
    assert used == [[SDPBackend.MATH]] * 4  # every micro-batch's forward (2 steps x 2)

    used.clear()
    with caplog.at_level(logging.INFO, logger="mlm_pretrain.hardware"):
        final = pt.pretrain(config("pretrain.max_steps=2", name="dropout"))
    assert "CPU dropout masks from 64-bit random words" in caplog.text
    reason = json.loads((final / "metrics.json").read_text())["attention_backend"]
    assert reason == "softmax(q k^T) v with CPU dropout masks (attention dropout 0.1: mlm_pretrain.dropout)"
    assert len(probed) == 1 and used == [None, None]
    assert "sdpa_cpu_dropout" not in (final / "config.json").read_text()  # a plain transformers config


def test_the_log_says_how_much_of_the_time_goes_to_building_batches(config, monkeypatch):
    """train/data_wait_fraction: the share of each logging window spent getting the step's batches."""
    import time

    import mlm_pretrain.batches as batches
    from mlm_pretrain.pretrain import pretrain

    final = pretrain(config("pretrain.max_steps=3", "pretrain.logging_steps=1"))
    quick = [r["train/data_wait_fraction"] for r in read_metrics(final.parent / "metrics.jsonl")
             if "train/loss" in r]
    real = batches.collate_masked

    def slow(*args):  # a data source far slower than the tiny model's steps
        time.sleep(0.4)
        return real(*args)

    monkeypatch.setattr(batches, "collate_masked", slow)
    final = pretrain(config("pretrain.max_steps=3", "pretrain.logging_steps=1", name="slow"))
    starved = [r["train/data_wait_fraction"] for r in read_metrics(final.parent / "metrics.jsonl")
               if "train/loss" in r]
    assert len(quick) == len(starved) == 3 and all(0 <= f < 1 for f in quick + starved)
    assert min(starved) > 0.6 and min(starved) > max(quick)
