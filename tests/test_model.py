"""Model presets and checks, the sparse pretraining loss against HF's own, model FLOPs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlm_pretrain.config import ModelConfig, load_config
from mlm_pretrain.errors import UserError
from mlm_pretrain.flops import layer_params, measure_matmul_peak, non_embedding_params, pretraining_flops
from mlm_pretrain.model import (PRESETS, ModelError, build_bert_config, build_model, check_model_config,
                                count_parameters)
from mlm_pretrain.objectives import PretrainingModule, pretraining_sums


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_follow_the_compact_bert_grid(preset):
    config = build_bert_config(ModelConfig(preset=preset), vocab_size=1234, pad_token_id=0)
    layers, hidden = PRESETS[preset]
    assert (config.num_hidden_layers, config.hidden_size) == (layers, hidden)
    assert config.num_attention_heads == hidden // 64
    assert config.intermediate_size == 4 * hidden
    assert config.vocab_size == 1234
    assert config._attn_implementation == "sdpa"


def test_field_overrides_and_derived_sizes():
    config = build_bert_config(ModelConfig(preset="mini", hidden_size=128, num_hidden_layers=3), vocab_size=100)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size) == (3, 128, 2, 512)
    config = build_bert_config(ModelConfig(preset="mini", num_attention_heads=8, intermediate_size=300), 100)
    assert (config.num_attention_heads, config.intermediate_size) == (8, 300)
    with pytest.raises(ModelError, match="multiple of num_attention_heads"):
        build_bert_config(ModelConfig(preset="mini", num_attention_heads=3), 100)


def test_config_path_is_the_base_and_checks_its_vocabulary(tmp_path):
    from transformers import BertConfig

    path = tmp_path / "config.json"
    BertConfig(vocab_size=500, hidden_size=96, num_hidden_layers=1, num_attention_heads=3, intermediate_size=200,
               max_position_embeddings=64).to_json_file(str(path))
    config = build_bert_config(ModelConfig(config_path=str(path)), vocab_size=500)
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size,
            config.max_position_embeddings) == (96, 3, 200, 64)  # defaults of ModelConfig do not override the file
    config = build_bert_config(ModelConfig(config_path=str(tmp_path), num_hidden_layers=2,
                                           max_position_embeddings=128), vocab_size=500)
    assert (config.num_hidden_layers, config.max_position_embeddings) == (2, 128)
    with pytest.raises(ModelError, match="vocabulary mismatch.*vocab_size=500.*tokenizer has 600"):
        build_bert_config(ModelConfig(config_path=str(path)), vocab_size=600)
    with pytest.raises(ModelError, match="no such config.json"):
        build_bert_config(ModelConfig(config_path=str(tmp_path / "missing.json")), vocab_size=500)
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not a readable config.json"):
        build_bert_config(ModelConfig(config_path=str(path)), vocab_size=500)


def test_checks_before_training():
    config = build_bert_config(ModelConfig(preset="tiny", max_position_embeddings=64), vocab_size=100)
    check_model_config(config, 100, 64)
    with pytest.raises(ModelError, match="max_seq_length=128 exceeds model.max_position_embeddings=64") as e:
        check_model_config(config, 100, 128)
    assert isinstance(e.value, UserError)
    with pytest.raises(ModelError, match="vocabulary mismatch"):
        check_model_config(config, 101, 64)


def test_build_model_is_seeded_and_checks_sequence_length(tiny_tokenizer, tmp_path):
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", "model.max_position_embeddings=128"])
    a, b = build_model(cfg, tiny_tokenizer), build_model(cfg, tiny_tokenizer)
    assert type(a).__name__ == "BertForPreTraining"
    assert a.config.vocab_size == len(tiny_tokenizer)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    too_long = cfg.replace(**{"data.max_seq_length": 256})
    with pytest.raises(ModelError, match="max_position_embeddings"):
        build_model(too_long, tiny_tokenizer)


def _batch(vocab: int, batch: int = 6, length: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    attention = torch.ones(batch, length, dtype=torch.long)
    attention[0, 15:] = 0
    attention[3, 9:] = 0
    labels = torch.full((batch, length), -100)
    pick = (torch.rand(batch, length, generator=g) < 0.2) & attention.bool()
    pick[:, 1] = True  # at least one per row
    labels[pick] = ids[pick]
    token_types = (torch.arange(length) > length // 2).long().expand(batch, -1).clone()
    nsp = torch.randint(0, 2, (batch,), generator=g)
    return dict(input_ids=ids, attention_mask=attention, token_type_ids=token_types, labels=labels,
                next_sentence_label=nsp)


def _tiny_model(vocab: int = 300, attn: str = "sdpa"):
    from transformers import BertForPreTraining

    torch.manual_seed(0)
    config = build_bert_config(ModelConfig(preset="tiny", max_position_embeddings=64, attn_implementation=attn), vocab)
    return BertForPreTraining(config).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sparse_loss_equals_hf_loss_and_gradients(attn):
    model = _tiny_model(attn=attn)
    batch = _batch(300)
    hf = model(**batch).loss
    hf.backward()
    hf_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sums = PretrainingModule(model)(**batch)
    ours = sums["mlm_loss"] / sums["mlm_count"] + sums["nsp_loss"] / sums["nsp_count"]
    ours.backward()
    assert abs(ours.item() - hf.item()) < 1e-5
    assert int(sums["mlm_count"]) == int((batch["labels"] != -100).sum())
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, hf_grads[name], atol=1e-6, rtol=1e-4), name


def test_sparse_loss_mlm_only_and_accuracy():
    model = _tiny_model()
    batch = _batch(300)
    batch.pop("next_sentence_label")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"]).prediction_logits
        dense = F.cross_entropy(logits.view(-1, 300), batch["labels"].view(-1), reduction="sum")
        sel = batch["labels"] != -100
        correct = (logits.argmax(-1)[sel] == batch["labels"][sel]).sum()
        sums = pretraining_sums(model, **batch)
    assert "nsp_loss" not in sums
    assert abs(sums["mlm_loss"].item() - dense.item()) < 1e-3 * max(1.0, dense.item() / 100)
    assert int(sums["mlm_correct"]) == int(correct)


def test_mlm_only_keeps_every_parameter_in_the_graph():
    # DistributedDataParallel without find_unused_parameters needs a gradient for every parameter.
    model = _tiny_model().train()
    batch = _batch(300)
    batch.pop("next_sentence_label")
    pretraining_sums(model, **batch)["mlm_loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_per_sequence_sums_add_up_to_the_batch_sums():
    model = _tiny_model()
    batch = _batch(300)
    with torch.no_grad():
        total = pretraining_sums(model, **batch)
        per = pretraining_sums(model, **batch, per_sequence=True)
    assert per["mlm_loss"].shape == (6,)
    for key in ("mlm_loss", "mlm_correct", "mlm_count", "nsp_loss", "nsp_correct", "nsp_count"):
        assert abs(per[key].sum().item() - float(total[key])) < 1e-3, key
    assert per["mlm_count"].tolist() == (batch["labels"] != -100).sum(1).float().tolist()


def test_flops_count_matches_the_model():
    model = _tiny_model(vocab=300)
    c = model.config
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    assert layer_params(c) == layer
    pooler = sum(p.numel() for p in model.bert.pooler.parameters())
    transform = sum(p.numel() for p in model.cls.predictions.transform.parameters())
    assert non_embedding_params(c) == c.num_hidden_layers * layer + pooler + transform
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    head_extra = model.cls.predictions.bias.numel() + sum(p.numel() for p in model.cls.seq_relationship.parameters())
    assert count_parameters(model) == non_embedding_params(c) + embeddings + head_extra  # tied decoder counted once
    tokens, seq, masked = 1000, 100, 150
    expected = (6 * c.num_hidden_layers * layer * tokens + 12 * c.num_hidden_layers * seq * c.hidden_size * tokens
                + 6 * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size) * masked + 6 * c.hidden_size ** 2 * tokens / seq)
    assert pretraining_flops(c, tokens, seq, masked) == pytest.approx(expected)


def test_measured_matmul_peak_is_plausible():
    peak = measure_matmul_peak("fp32", "cpu", n=256, seconds=0.05)
    assert 1e8 < peak < 1e14  # FLOP/s of any CPU this runs on


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_cross_entropy_matches_the_unfused_form(chunk, with_bias):
    from mlm_pretrain.objectives import LinearCrossEntropy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    b = torch.randn(50, generator=g, requires_grad=True) if with_bias else None
    t = torch.randint(0, 50, (20,), generator=g)
    logits = F.linear(x, w, b)
    ref = F.cross_entropy(logits, t, reduction="sum")
    (ref * 0.3).backward()
    ref_grads = [p.grad.clone() for p in (x, w, b) if p is not None]
    for p in (x, w, b):
        if p is not None:
            p.grad = None
    total, rows, correct = LinearCrossEntropy.apply(x, w, b, t, chunk)
    (total * 0.3).backward()
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(rows, F.cross_entropy(logits, t, reduction="none"), atol=1e-5)
    assert torch.equal(correct, logits.argmax(-1) == t)
    for p, r in zip([p for p in (x, w, b) if p is not None], ref_grads):
        assert torch.allclose(p.grad, r, atol=1e-5)
    with torch.no_grad():  # evaluation: no gradient work, same values
        assert LinearCrossEntropy.apply(x, w, b, t, chunk)[0].item() == pytest.approx(ref.item(), rel=1e-6)


def test_linear_cross_entropy_under_bf16_autocast():
    from mlm_pretrain.objectives import LinearCrossEntropy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 16, generator=g, requires_grad=True)
    w = torch.randn(40, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 40, (12,), generator=g)
    ref = F.cross_entropy(F.linear(x, w), t, reduction="sum")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _, _ = LinearCrossEntropy.apply(x, w, None, t)
    total.backward()
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(ref.item(), rel=2e-2)
    assert x.grad.dtype == w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()


# ----------------------------------------------------------------------------------------------
# Architectures: modernbert and electra
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "modernbert", "electra", "modernbert-electra"])
@pytest.mark.parametrize("preset", ["tiny", "mini", "base"])
def test_presets_map_onto_every_family(arch, preset):
    from mlm_pretrain.model import MODEL_TYPES, build_config

    config = build_config(ModelConfig(architecture=arch, preset=preset), vocab_size=500, pad_token_id=0,
                          cls_token_id=2, sep_token_id=3)
    layers, hidden = PRESETS[preset]
    assert config.model_type == MODEL_TYPES[arch]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, hidden, hidden // 64)
    assert config.vocab_size == 500 and config.pad_token_id == 0
    if config.model_type == "modernbert":
        # GeGLU's three matrices hold as many parameters as BERT's 4 x hidden pair
        assert config.intermediate_size % 64 == 0 and abs(3 * config.intermediate_size - 8 * hidden) < 3 * 64
        assert config.sparse_prediction and config.sparse_pred_ignore_index == -100
        assert config.mlp_dropout == config.embedding_dropout == config.attention_dropout == 0.0
        assert config.cls_token_id == 2 and config.sep_token_id == 3
    else:
        assert config.intermediate_size == 4 * hidden and config.hidden_dropout_prob == 0.1


def test_dropouts_override_the_family_default():
    from mlm_pretrain.model import build_config

    mb = build_config(ModelConfig(architecture="modernbert", preset="tiny", hidden_dropout_prob=0.1,
                                  attention_probs_dropout_prob=0.05), 100)
    assert mb.mlp_dropout == mb.embedding_dropout == 0.1 and mb.attention_dropout == 0.05
    bert = build_config(ModelConfig(preset="tiny", hidden_dropout_prob=0.0), 100)
    assert bert.hidden_dropout_prob == 0.0 and bert.attention_probs_dropout_prob == 0.1


def test_config_path_of_another_family_is_an_error(tmp_path):
    from transformers import ModernBertConfig

    from mlm_pretrain.model import build_config

    ModernBertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=96, pad_token_id=0).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="is a 'modernbert' config but model.architecture=bert; set "
                                         "model.architecture=modernbert"):
        build_config(ModelConfig(config_path=str(tmp_path)), 500)
    config = build_config(ModelConfig(architecture="modernbert", config_path=str(tmp_path), num_hidden_layers=4), 500)
    assert config.num_hidden_layers == 4 and len(config.layer_types) == 4 and config.hidden_size == 64


def _modernbert(vocab: int = 300, sparse: bool = True, **model_fields):
    from transformers import ModernBertForMaskedLM

    from mlm_pretrain.model import build_config

    torch.manual_seed(0)
    config = build_config(ModelConfig(architecture="modernbert", preset="tiny", max_position_embeddings=64,
                                      **model_fields), vocab)
    config.sparse_prediction = sparse
    return ModernBertForMaskedLM(config).eval()


@pytest.mark.parametrize("tie", [None, False])
def test_modernbert_masked_only_loss_equals_the_stock_full_loss_and_gradients(tie):
    dense = _modernbert(sparse=False, tie_word_embeddings=tie)  # the stock head over every position
    batch = _batch(300)
    batch.pop("next_sentence_label")
    hf = dense(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    hf.backward()
    hf_grads = {n: p.grad.clone() for n, p in dense.named_parameters()}
    dense.zero_grad()
    sums = PretrainingModule(dense)(**batch)
    ours = sums["mlm_loss"] / sums["mlm_count"]
    ours.backward()
    assert abs(ours.item() - hf.item()) < 1e-5
    assert "nsp_loss" not in sums
    for name, p in dense.named_parameters():
        assert torch.allclose(p.grad, hf_grads[name], atol=1e-6, rtol=1e-4), name
    with torch.no_grad():
        per = pretraining_sums(dense, **batch, per_sequence=True)
    assert abs(per["mlm_loss"].sum().item() - sums["mlm_loss"].item()) < 1e-3


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_untied_embeddings_move_only_the_pieces_in_the_batch(arch, tmp_path):
    """model.tie_word_embeddings=false: the decoder is a matrix of its own, so a piece absent from the
    batch gets no gradient on its input embedding (tied, every prediction's softmax moves every row);
    save_pretrained / from_pretrained keep the two matrices apart."""
    from mlm_pretrain.model import build_config, load_pretraining_model
    from mlm_pretrain.objectives import mlm_head
    from transformers import BertForPreTraining, ModernBertForMaskedLM

    cls = {"bert": BertForPreTraining, "modernbert": ModernBertForMaskedLM}[arch]
    batch = _batch(300)
    if arch == "modernbert":
        batch.pop("next_sentence_label")
    absent = sorted(set(range(5, 300)) - set(batch["input_ids"].flatten().tolist()))[:5]
    assert absent
    rows = {}
    for tie in (None, False):
        torch.manual_seed(0)
        model = cls(build_config(ModelConfig(architecture=arch, preset="tiny", max_position_embeddings=64,
                                             tie_word_embeddings=tie), 300))
        embedding, decoder = model.get_input_embeddings().weight, mlm_head(model)[1]
        assert (decoder is embedding) == (tie is None), tie
        sums = PretrainingModule(model)(**batch)
        (sums["mlm_loss"] / sums["mlm_count"]).backward()
        rows[tie] = embedding.grad[absent].abs().sum().item()
        if tie is False:
            model.save_pretrained(tmp_path)
            loaded = load_pretraining_model(tmp_path)
            assert not loaded.config.tie_word_embeddings
            assert mlm_head(loaded)[1] is not loaded.get_input_embeddings().weight
            assert torch.equal(mlm_head(loaded)[1], decoder) and torch.equal(loaded.get_input_embeddings().weight, embedding)
    assert rows[None] > 0 and rows[False] == 0, rows


@pytest.mark.parametrize("arch", ["electra", "modernbert-electra"])
def test_electra_refuses_untied_embeddings(arch):
    with pytest.raises(UserError, match=f"tie_word_embeddings.*model.architecture={arch}"):
        load_config(None, [f"model.architecture={arch}", "data.objective=mlm", "model.tie_word_embeddings=false"])


def _rtd_pair(mcfg: ModelConfig, vocab: int = 300):
    """(generator, discriminator) of an ELECTRA family, seeded, sharing their embeddings, in eval mode."""
    import transformers

    from mlm_pretrain.model import (GENERATOR_CLASSES, PRETRAINING_CLASSES, build_config, build_generator_config,
                                    share_embeddings)

    torch.manual_seed(0)
    disc = getattr(transformers, PRETRAINING_CLASSES[mcfg.architecture])(build_config(mcfg, vocab))
    gen = getattr(transformers, GENERATOR_CLASSES[mcfg.architecture])(build_generator_config(mcfg, disc.config))
    share_embeddings(gen, disc)
    return gen.eval(), disc.eval()


def _electra(vocab: int = 300, **model_fields):
    return _rtd_pair(ModelConfig(architecture="electra", preset="tiny", max_position_embeddings=64,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **model_fields), vocab)


def test_electra_generator_is_a_quarter_wide_and_shares_the_embeddings():
    gen, disc = _electra()
    assert (gen.config.hidden_size, gen.config.num_attention_heads, gen.config.intermediate_size) == (32, 1, 128)
    assert gen.config.embedding_size == disc.config.embedding_size == 128
    assert gen.config.num_hidden_layers == disc.config.num_hidden_layers
    assert gen.electra.embeddings is disc.electra.embeddings
    assert gen.generator_lm_head.weight is disc.electra.embeddings.word_embeddings.weight
    half, _ = _electra(generator_size_ratio=0.5)
    assert half.config.hidden_size == 64
    shallow, _ = _electra(generator_num_hidden_layers=1)
    assert (shallow.config.num_hidden_layers, shallow.config.hidden_size) == (1, 32)
    with pytest.raises(ModelError, match="generator's hidden size 50 .*not a multiple of its 3 attention heads"):
        _electra(generator_hidden_size=50, generator_num_attention_heads=3)


def _rtd_forward(gen, disc, batch: dict, monkeypatch) -> tuple[dict, list]:
    """The ELECTRA sums of ``batch`` (seeded samples), and every ``input_ids`` the encoders were given
    from then on (generator: the masked batch; discriminator: the corrupted one)."""
    from mlm_pretrain import objectives

    inputs = []
    real_encode = objectives.encode
    monkeypatch.setattr(objectives, "encode", lambda m, ids, *a, **k: inputs.append(ids) or real_encode(m, ids, *a, **k))
    return PretrainingModule(disc, gen)(**batch, sample_seeds=list(range(6))), inputs


def _corruption(inputs: list, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(the discriminator's input, where it differs from the original); only masked positions may differ."""
    corrupted = inputs[1]
    original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
    replaced = corrupted != original
    assert replaced.any() and not (replaced & (batch["labels"] == -100)).any()
    return corrupted, replaced


def test_electra_sums_equal_the_stock_generator_and_discriminator_losses(monkeypatch):
    gen, disc = _electra()
    batch = _batch(300)
    batch.pop("next_sentence_label")
    sums, inputs = _rtd_forward(gen, disc, batch, monkeypatch)
    corrupted, replaced = _corruption(inputs, batch)
    hf_gen = gen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"], labels=batch["labels"]).loss
    assert abs((sums["mlm_loss"] / sums["mlm_count"]).item() - hf_gen.item()) < 1e-5
    hf_disc = disc(input_ids=corrupted, attention_mask=batch["attention_mask"],
                   token_type_ids=batch["token_type_ids"], labels=replaced.long()).loss
    assert abs((sums["rtd_loss"] / sums["rtd_count"]).item() - hf_disc.item()) < 1e-5
    assert int(sums["rtd_count"]) == int(batch["attention_mask"].sum())
    assert int(sums["rtd_replaced"]) == int((replaced & batch["attention_mask"].bool()).sum())
    again = PretrainingModule(disc, gen)(**batch, sample_seeds=list(range(6)))  # a seeded sample repeats exactly
    assert torch.equal(inputs[3], corrupted) and again["rtd_loss"].item() == sums["rtd_loss"].item()
    # ... and does not depend on the batch: the first three rows alone get the same replacements
    half = {k: v[:3] for k, v in batch.items()}
    PretrainingModule(disc, gen)(**half, sample_seeds=[0, 1, 2])
    assert torch.equal(inputs[5], corrupted[:3])
    with torch.no_grad():
        per = PretrainingModule(disc, gen)(**batch, sample_seeds=list(range(6)), per_sequence=True)
    for key in ("mlm_loss", "rtd_loss", "rtd_correct", "rtd_count", "rtd_true_positive", "rtd_predicted"):
        assert per[key].shape == (6,) and abs(per[key].sum().item() - float(sums[key].detach())) < 1e-3, key


def test_electra_discriminator_gradients_do_not_reach_the_generator_head_through_sampling():
    gen, disc = _electra()
    batch = _batch(300)
    batch.pop("next_sentence_label")
    PretrainingModule(disc, gen)(**batch, sample_seeds=[1] * 6)["rtd_loss"].backward()
    assert gen.generator_predictions.dense.weight.grad is None  # discrete samples: no path
    assert disc.discriminator_predictions.dense.weight.grad is not None


def _modernbert_electra(vocab: int = 300, **model_fields):
    return _rtd_pair(ModelConfig(architecture="modernbert-electra", preset="mini", hidden_size=64,
                                 max_position_embeddings=64, **model_fields), vocab)


def test_modernbert_electra_generator_is_as_wide_a_quarter_as_deep_and_shares_the_embeddings():
    gen, disc = _modernbert_electra()
    assert disc.config.architectures == ["ModernBertForTokenClassification"] and disc.config.num_labels == 1
    assert disc.config.id2label == {0: "replaced"}
    assert (disc.config.num_hidden_layers, gen.config.num_hidden_layers) == (4, 1)
    assert gen.config.hidden_size == disc.config.hidden_size == 64
    assert gen.config.intermediate_size == disc.config.intermediate_size
    assert len(gen.config.layer_types) == 1 and gen.config.architectures == ["ModernBertForMaskedLM"]
    assert gen.model.embeddings is disc.model.embeddings
    assert gen.decoder.weight is disc.model.embeddings.tok_embeddings.weight
    half, _ = _modernbert_electra(generator_size_ratio=0.5)
    assert half.config.num_hidden_layers == 2
    three, _ = _modernbert_electra(generator_num_hidden_layers=3)
    assert three.config.num_hidden_layers == 3
    with pytest.raises(ModelError, match="generator_hidden_size=32: model.architecture=modernbert-electra shares the "
                                         "64-wide embeddings.*set model.generator_num_hidden_layers"):
        _modernbert_electra(generator_hidden_size=32)


def test_modernbert_electra_sums_equal_the_stock_generator_and_discriminator_losses(monkeypatch):
    """The generator's sums are ModernBertForMaskedLM's own loss; the replaced-token loss is the binary
    cross-entropy of ModernBertForTokenClassification's own (one-logit) output on the corrupted batch."""
    import torch.nn.functional as F

    gen, disc = _modernbert_electra()
    batch = _batch(300)
    batch.pop("next_sentence_label")
    batch.pop("token_type_ids")
    sums, inputs = _rtd_forward(gen, disc, batch, monkeypatch)
    corrupted, replaced = _corruption(inputs, batch)
    hf_gen = gen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert abs((sums["mlm_loss"] / sums["mlm_count"]).item() - hf_gen.item()) < 1e-5
    logits = disc(input_ids=corrupted, attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    real = batch["attention_mask"].bool()
    hf_rtd = F.binary_cross_entropy_with_logits(logits[real], replaced[real].float())
    assert abs((sums["rtd_loss"] / sums["rtd_count"]).item() - hf_rtd.item()) < 1e-5
    assert int(sums["rtd_predicted"]) == int(((logits > 0) & real).sum())
    (sums["mlm_loss"] / sums["mlm_count"] + sums["rtd_loss"] / sums["rtd_count"]).backward()
    assert gen.head.dense.weight.grad is not None and disc.classifier.weight.grad is not None
    assert disc.model.embeddings.tok_embeddings.weight.grad is not None  # both losses train the shared table


def test_modernbert_electra_exports_load_as_their_family_and_the_generator_is_refused_as_an_encoder(tmp_path):
    from mlm_pretrain.model import GENERATOR_DIR, check_finetuning_source, load_generator, load_pretraining_model

    gen, disc = _modernbert_electra()
    disc.save_pretrained(tmp_path)
    gen.save_pretrained(tmp_path / GENERATOR_DIR)
    loaded = load_pretraining_model(tmp_path, architecture="modernbert-electra")
    assert type(loaded).__name__ == "ModernBertForTokenClassification"
    again = load_generator(tmp_path, loaded)
    assert again.model.embeddings is loaded.model.embeddings
    assert torch.equal(again.head.dense.weight, gen.head.dense.weight)
    with pytest.raises(ModelError, match="holds a modernbert-electra model but model.architecture=modernbert"):
        load_pretraining_model(tmp_path, architecture="modernbert")
    with pytest.raises(ModelError, match="is an ELECTRA generator"):
        load_pretraining_model(tmp_path / GENERATOR_DIR)
    with pytest.raises(ModelError, match=r"ELECTRA generator \(ModernBertForMaskedLM\).*finetune.model="):
        check_finetuning_source(tmp_path / GENERATOR_DIR)
    check_finetuning_source(tmp_path)


def test_linear_cross_entropy_samples_from_the_softmax():
    from mlm_pretrain.objectives import LinearCrossEntropy

    w = torch.eye(4)
    x = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).repeat(20000, 1)  # logits = log p
    t = torch.zeros(20000, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    total, _, _, sampled = LinearCrossEntropy.apply(x, w, None, t, 3000, g)
    freq = torch.bincount(sampled, minlength=4).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015)
    assert total.item() == pytest.approx(20000 * -math.log(0.1), rel=1e-5)
    again = LinearCrossEntropy.apply(x, w, None, t, 3000, torch.Generator().manual_seed(0))[3]
    assert torch.equal(again, sampled)


def test_flops_count_modernbert_and_electra_parameters():
    from mlm_pretrain.flops import encoder_params

    mb = _modernbert()
    assert encoder_params(mb.config) == sum(p.numel() for p in mb.model.layers.parameters())
    gen, disc = _electra()
    assert encoder_params(disc.config) == sum(p.numel() for p in disc.electra.encoder.parameters())
    assert encoder_params(gen.config) == sum(p.numel() for p in gen.electra.encoder.parameters())
    tokens, seq, masked = 1000, 64, 150
    both = pretraining_flops(disc.config, tokens, seq, masked, generator_config=gen.config)
    assert both > pretraining_flops(disc.config, tokens, seq, masked) > pretraining_flops(gen.config, tokens, seq, masked)


def test_sample_rows_draws_each_index_in_proportion_to_its_weight():
    from mlm_pretrain.objectives import sample_rows

    weights = torch.tensor([[0.0, 1.0, 2.0, 0.0, 7.0], [5.0, 0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_rows(weights, g) for _ in range(20000)])  # [20000, 3]
    for row in range(3):
        freq = torch.bincount(draws[:, row], minlength=5).double() / 20000
        torch.testing.assert_close(freq, weights[row].double() / weights[row].sum(), atol=0.012, rtol=0)
        assert freq[weights[row] == 0].sum() == 0  # a zero weight is never drawn
    again = torch.stack([sample_rows(weights, torch.Generator().manual_seed(0)) for _ in range(1)])
    assert torch.equal(again[0], draws[0])  # seeded: reproducible
