"""Continued pretraining from existing encoders (``model.init_from``): a BERT without its pretraining head,
a RoBERTa-style byte-level BPE checkpoint, a ModernBERT and a DistilBERT checkpoint, tiny ones built here
and served by the test Hub server (tests/hub_server.py). Each runs every stage with the checkpoint's own
tokenizer and exports a model of the same family that loads in ``Auto*`` classes and ``pipeline("fill-mask")``."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from hub_data import model_files
from mlm_pretrain.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["data.dupe_factor=1", "data.max_validation_examples=16", "data.max_seq_length=48",
         "pretrain.max_steps=2", "pretrain.eval_steps=2", "pretrain.save_steps=2", "pretrain.batch_size=8",
         "pretrain.probe_examples=0", "pretrain.mixed_precision=no", "pretrain.time_budget_minutes=null",
         "tracking.report_to=none", "tracking.plots=false", "finetune.max_steps=2", "finetune.seeds=[1]",
         "finetune.compare_baselines=false", "finetune.max_train_examples=32", "finetune.max_eval_examples=16",
         "finetune.batch_size=8", "finetune.max_length=48", "finetune.save_checkpoints=false"]
ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@pytest.fixture(scope="module")
def corpus_lines(data_dir) -> list[str]:
    return [line for line in (data_dir / "corpus.txt").read_text(encoding="utf-8").split("\n") if line.strip()][:800]


def _roberta_tokenizer(lines):
    """A RoBERTa-style tokenizer: byte-level BPE, ``<s> A </s></s> B </s>``, no prefix space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([lines], trainers.BpeTrainer(vocab_size=700, special_tokens=ROBERTA_SPECIAL,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                             show_progress=False))
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", cls_token="<s>", eos_token="</s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   model_max_length=64)


def _bpe_tokenizer(lines):
    """ModernBERT's kind: byte-level BPE with [CLS]/[SEP] (this package's tokenizer.type=bpe)."""
    from mlm_pretrain.config import TokenizerConfig
    from mlm_pretrain.tokenizer import train_bpe

    return train_bpe(lambda: iter([lines]), TokenizerConfig(vocab_size=700, model_max_length=64))


def _wordpiece(tiny_tokenizer_dir):
    from mlm_pretrain.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


def _checkpoint(kind: str, folder: Path, lines, tiny_tokenizer_dir) -> Path:
    """A tiny checkpoint of ``kind`` with its tokenizer, as a Hub model repository holds it."""
    import transformers as T

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    if kind == "bert":  # the encoder alone: no MLM or NSP head
        tok = _wordpiece(tiny_tokenizer_dir)
        model = T.BertModel(T.BertConfig(vocab_size=len(tok), max_position_embeddings=64, **small))
    elif kind == "roberta":
        tok = _roberta_tokenizer(lines)
        model = T.RobertaForMaskedLM(T.RobertaConfig(vocab_size=len(tok), max_position_embeddings=66, pad_token_id=1,
                                                     type_vocab_size=1, **small))
    elif kind == "modernbert":
        tok = _bpe_tokenizer(lines)
        model = T.ModernBertForMaskedLM(T.ModernBertConfig(  # its table padded to a multiple of 64, as ModernBERT's
            vocab_size=-(-len(tok) // 64) * 64 + 64, max_position_embeddings=64, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
            local_attention=16, **small))
    elif kind == "electra":  # a discriminator alone, as Google's released ones (no generator/ folder)
        tok = _wordpiece(tiny_tokenizer_dir)
        model = T.ElectraForPreTraining(T.ElectraConfig(vocab_size=len(tok), max_position_embeddings=64, embedding_size=32,
                                                        **small))
    else:  # distilbert, without head
        tok = _wordpiece(tiny_tokenizer_dir)
        model = T.DistilBertModel(T.DistilBertConfig(vocab_size=len(tok), max_position_embeddings=64, dim=32,
                                                     n_layers=1, n_heads=2, hidden_dim=64))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


ARCH = {"bert": ["model.architecture=bert", "data.objective=nsp"],
        "roberta": ["model.architecture=roberta", "data.objective=mlm", "masking.whole_word=true"],
        "modernbert": ["model.architecture=modernbert", "data.objective=mlm", "masking.whole_word=true"],
        "distilbert": ["model.architecture=distilbert", "data.objective=mlm"],
        "electra": ["model.architecture=electra", "data.objective=mlm", "model.generator_size_ratio=0.5"]}
#: The run's random-init baseline too (the same family built from scratch) for one of them.
BASELINE = {"distilbert": ["finetune.compare_baselines=true"]}
FAMILY = {"bert": ("bert", "BertForPreTraining", "BertForMaskedLM"),
          "roberta": ("roberta", "RobertaForMaskedLM", "RobertaForMaskedLM"),
          "modernbert": ("modernbert", "ModernBertForMaskedLM", "ModernBertForMaskedLM"),
          "distilbert": ("distilbert", "DistilBertForMaskedLM", "DistilBertForMaskedLM"),
          "electra": ("electra", "ElectraForPreTraining", "ElectraForMaskedLM")}  # fill-mask: the new generator/


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "roberta", "modernbert", "distilbert", "electra"])
def test_every_stage_continues_from_a_hub_checkpoint(kind, recipe_hub, tmp_path, corpus_lines, tiny_tokenizer_dir,
                                                    data_dir, caplog):
    from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline)

    from mlm_pretrain.pipeline import run_pipeline

    src = _checkpoint(kind, tmp_path / "ckpt", corpus_lines, tiny_tokenizer_dir)
    repo = f"someone/tiny-{kind}"
    recipe_hub.add_repo(repo, model_files(src))
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"corpus.files=[{data_dir / 'corpus.txt'}]",
                                    f"model.init_from={repo}", *ARCH[kind], *SMALL, *BASELINE.get(kind, [])])
    with caplog.at_level(logging.WARNING, logger="mlm_pretrain.model"):
        run_pipeline(cfg)
    if kind in ("bert", "distilbert"):  # the checkpoint had no pretraining head: initialised, and said so
        assert "initialised" in caplog.text and "tied to the input embeddings" in caplog.text
    if kind == "electra":
        assert "a new generator is initialised" in caplog.text
        final_generator = tmp_path / "run" / "pretrain" / "final" / "generator"
        assert json.loads((final_generator / "config.json").read_text())["hidden_size"] == 16
    assert not (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()  # no tokenizer trained: the checkpoint's
    final = tmp_path / "run" / "pretrain" / "final"
    saved = json.loads((final / "config.json").read_text())
    model_type, pretraining_class, mlm_class = FAMILY[kind]
    assert saved["model_type"] == model_type and saved["architectures"] == [pretraining_class]
    assert saved["hidden_size" if kind != "distilbert" else "dim"] == 32  # the checkpoint's sizes, not the recipe's
    tok, start = AutoTokenizer.from_pretrained(str(final)), AutoTokenizer.from_pretrained(str(src))
    assert tok.get_vocab() == start.get_vocab() and tok.mask_token == start.mask_token
    masked_lm = final / "generator" if kind == "electra" else final  # ELECTRA: the generator fills masks
    mlm = AutoModelForMaskedLM.from_pretrained(str(masked_lm))
    assert type(mlm).__name__ == mlm_class
    out = mlm.get_output_embeddings().weight
    assert out.data_ptr() == mlm.get_input_embeddings().weight.data_ptr()  # the family ties them
    fill = pipeline("fill-mask", model=str(masked_lm), top_k=2)(f"the company said {tok.mask_token} would rise.")
    assert len(fill) == 2
    assert type(AutoModelForSequenceClassification.from_pretrained(str(final), num_labels=2)).__name__ == \
        mlm_class.replace("ForMaskedLM", "ForSequenceClassification")
    assert (tmp_path / "run" / "finetune" / "sentiment" / "final" / "config.json").is_file()
    if kind in BASELINE:
        random_init = json.loads((tmp_path / "run" / "finetune" / "sentiment-random-init" / "final" / "config.json")
                                 .read_text())
        assert random_init["model_type"] == model_type
        # and the question a user with a public encoder asks: the start fine-tuned as it is, in the report
        as_is = json.loads((tmp_path / "run" / "finetune" / "sentiment-start" / "summary.json").read_text())
        assert "models--someone--tiny-distilbert" in as_is["model"]  # the Hub snapshot of the starting repo
        report = (tmp_path / "run" / "report.md").read_text()
        assert "| the starting encoder (model.init_from), fine-tuned as it is |" in report
        assert "continuing it did" in report  # the verdict reads the start too
    report = json.loads((tmp_path / "run" / "tokenizer" / "report.json").read_text())
    assert report["vocab_size"] == len(start)


def test_roberta_pairs_and_masking_use_the_checkpoints_own_template(corpus_lines):
    from mlm_pretrain.examples import template_of
    from mlm_pretrain.pairs import SEGMENT_A, SEGMENT_B
    from mlm_pretrain.tokenizer import word_starts

    tok = _roberta_tokenizer(corpus_lines)
    assert template_of(tok).pair == ((0, 0), (SEGMENT_A, 0), (2, 0), (2, 0), (SEGMENT_B, 0), (2, 0))
    ids = tok("the company said", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    starts = word_starts(tok)
    # the text's first word has no Ġ (RoBERTa adds no prefix space): the collator starts a word after <s>
    assert not pieces[0].startswith("Ġ") and [starts[i] for i in ids] == [p.startswith("Ġ") for p in pieces]
    assert sum(starts[i] for i in ids) == 2  # Ġcompany, Ġsaid


def test_a_checkpoint_of_another_family_than_model_architecture_is_named_before_work(tmp_path, corpus_lines,
                                                                                    tiny_tokenizer_dir):
    from mlm_pretrain.model import ModelError, check_model_settings

    src = _checkpoint("roberta", tmp_path / "ckpt", corpus_lines, tiny_tokenizer_dir)
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"model.init_from={src}"])
    with pytest.raises(ModelError, match="holds a roberta model.*set model.architecture=roberta data.objective=mlm"):
        check_model_settings(cfg, None)
    other = cfg.replace(**{"model.architecture": "roberta", "data.objective": "mlm",
                           "tokenizer.pretrained": str(tiny_tokenizer_dir)})  # not the checkpoint's tokenizer
    with pytest.raises(ModelError, match="vocabulary mismatch.*vocab_size=700 but the tokenizer has 2000"):
        check_model_settings(other, _wordpiece(tiny_tokenizer_dir))


def test_a_checkpoint_without_tokenizer_needs_tokenizer_pretrained(tmp_path, corpus_lines, tiny_tokenizer_dir):
    from mlm_pretrain.tokenizer import TokenizerError, train_tokenizer

    src = _checkpoint("bert", tmp_path / "ckpt", corpus_lines, tiny_tokenizer_dir)
    for f in src.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            f.unlink()
    cfg = load_config("tiny-bert", [f"output_dir={tmp_path / 'run'}", f"model.init_from={src}"])
    with pytest.raises(TokenizerError, match="has no tokenizer.*set tokenizer.pretrained"):
        train_tokenizer(cfg)
    given = cfg.replace(**{"tokenizer.pretrained": str(tiny_tokenizer_dir)})
    assert train_tokenizer(given) == tiny_tokenizer_dir


@pytest.mark.parametrize("arch", ["roberta", "distilbert"])
def test_sparse_loss_of_the_new_families_equals_the_stock_loss(arch, tmp_path, tiny_tokenizer):
    from mlm_pretrain.model import build_model
    from mlm_pretrain.objectives import pretraining_sums

    cfg = load_config("tiny-bert", [f"output_dir={tmp_path}", "model.hidden_size=32", "model.num_attention_heads=2",
                                    "model.num_hidden_layers=1", "data.objective=mlm", f"model.architecture={arch}"])
    model = build_model(cfg, tiny_tokenizer).eval()
    assert type(model).__name__ == {"roberta": "RobertaForMaskedLM", "distilbert": "DistilBertForMaskedLM"}[arch]
    if arch == "roberta":  # positions after padding_idx: the recipe's 128 tokens fit
        assert model.config.max_position_embeddings == 128 + tiny_tokenizer.pad_token_id + 1
    ids = torch.randint(5, len(tiny_tokenizer), (2, 16), generator=torch.Generator().manual_seed(0))
    labels = ids.masked_fill(torch.arange(16) % 3 != 0, -100)
    sums = pretraining_sums(model, ids, torch.ones_like(ids), torch.zeros_like(ids), labels)
    stock = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    assert float(sums["mlm_loss"] / sums["mlm_count"]) == pytest.approx(float(stock), rel=1e-5)


def test_a_tokenizer_saved_with_truncation_and_padding_reads_whole_documents(tmp_path, tiny_tokenizer_dir):
    """sentence-transformers checkpoints (all-MiniLM-L6-v2) save ``tokenizer.json`` with truncation at 128 and
    fixed padding to 128. The stages encode through the backend, so loaded as saved, every document was its first
    pieces padded out: the report counted fewer tokens than words, and building examples failed."""
    from mlm_pretrain.examples import template_of
    from mlm_pretrain.tokenizer import load_tokenizer, tokenizer_report

    plain = load_tokenizer(tiny_tokenizer_dir)
    saved = tmp_path / "st-tokenizer"
    plain.save_pretrained(str(saved))
    spec = json.loads((saved / "tokenizer.json").read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": plain.pad_token_id, "pad_type_id": 0, "pad_token": plain.pad_token}
    (saved / "tokenizer.json").write_text(json.dumps(spec))
    tok = load_tokenizer(saved)
    text = "the company said on monday that its quarterly profit rose sharply after the sale of two units ."
    whole = plain(text, add_special_tokens=False)["input_ids"]
    assert len(whole) > 8
    assert tok.backend_tokenizer.encode(text, add_special_tokens=False).ids == whole  # not cut, not padded
    assert template_of(tok) == template_of(plain)
    assert tokenizer_report(tok, [text], 0.0)["held_out"]["tokens"] == len(whole)
    assert tok(text, truncation=True, max_length=8)["input_ids"] == plain(text, truncation=True, max_length=8)["input_ids"]


def test_a_public_checkpoint_continued_at_a_rate_for_random_weights_is_warned_about(tmp_path, caplog,
                                                                                    tiny_tokenizer_dir):
    from mlm_pretrain.model import check_continuing_rate

    public = _checkpoint("bert", tmp_path / "public", [], tiny_tokenizer_dir)
    ours = tmp_path / "ours"  # a final/ this package wrote (metrics.json beside the weights): its own rate stands
    ours.mkdir()
    (ours / "metrics.json").write_text("{}")

    def warned(folder, rate) -> bool:
        caplog.clear()
        cfg = load_config("cpu-1h", [f"model.init_from={folder}", f"pretrain.learning_rate={rate}"])
        with caplog.at_level(logging.WARNING, logger="mlm_pretrain.model"):
            check_continuing_rate(cfg, folder)
        return "is a rate for random weights" in caplog.text

    assert warned(public, 3e-3) and "pretrain.learning_rate=1e-4" in caplog.text
    assert not warned(public, 1e-4)
    assert not warned(ours, 3e-3)  # pretrain.long_phase and phase 2 continue a run at its own rate
