"""Every Hub-id key of the config, read end to end from the local test Hub server (tests/hub_server.py):
``corpus.hub_dataset`` (tokenizer + prepare, cached and streaming), ``finetune.hub_dataset`` (a single
sentence and a pair task), ``tokenizer.pretrained``, ``model.init_from`` and ``finetune.model``, each
with its failures (missing repository, configuration, split or column; the server down), and the cache
that lets a second run go on without the Hub. No test reaches the network.
"""
from __future__ import annotations

import json

import pytest
import torch

from hub_data import GLUE, WIKITEXT, glue_files, model_files, wikitext_files, wikitext_rows
from mlm_pretrain import sources
from mlm_pretrain.config import load_config
from mlm_pretrain.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["tokenizer.vocab_size=600", "data.dupe_factor=1", "data.max_validation_examples=16", "data.num_proc=1",
         "model.num_hidden_layers=1", "model.hidden_size=32", "model.num_attention_heads=1", "model.intermediate_size=64",
         "pretrain.max_steps=2", "pretrain.eval_steps=2", "pretrain.save_steps=2", "pretrain.batch_size=8",
         "pretrain.time_budget_minutes=null", "tracking.report_to=none", "tracking.plots=false"]
FINETUNE_SMALL = ["finetune.max_steps=2", "finetune.eval_steps=2", "finetune.seeds=[1]", "finetune.batch_size=8",
                  "finetune.max_train_examples=32", "finetune.save_checkpoints=false", "tracking.report_to=none",
                  "tracking.plots=false"]
MODEL = "tiny-bert"         # a legacy id without a namespace, like bert-base-uncased
NAMESPACED = "alice/tiny-encoder"


@pytest.fixture(scope="module")
def encoder_folder(tiny_encoder_dir):
    """The tiny encoder, saved as a Hub model repository holds it (a save_pretrained folder)."""
    return tiny_encoder_dir


@pytest.fixture
def hub(recipe_hub, encoder_folder):
    """The server with the recipes' datasets and two model repositories; this process reads from it."""
    for repo in (MODEL, NAMESPACED):
        recipe_hub.add_repo(repo, model_files(encoder_folder))
    return recipe_hub


def _cfg(tmp_path, recipe="cpu-1h", *over):
    return load_config(recipe, [f"output_dir={tmp_path / 'run'}", *SMALL, *over])


# ----------------------------------------------------------------------------------------------
# corpus.hub_dataset
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("streaming", [False, True])
def test_a_hub_corpus_trains_the_tokenizer_and_prepares_the_data(hub, tmp_path, streaming):
    from mlm_pretrain.corpus import load_documents
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.tokenizer import train_tokenizer

    cfg = _cfg(tmp_path, "cpu-1h", f"data.streaming={str(streaming).lower()}")
    assert cfg.corpus.hub_dataset == WIKITEXT
    cut = len(wikitext_rows()) * 9 // 10
    expected = [r.strip() for r in wikitext_rows()[:cut] if r.strip()]
    docs = load_documents(cfg.corpus)  # one document per non-blank row of the train split
    assert [d.strip() for d in docs["text"]] == expected
    tok_dir = train_tokenizer(cfg)
    stamp = json.loads((tok_dir / "mlm_pretrain_tokenizer.json").read_text())
    assert stamp["documents"] == len(expected)
    data = prepare_pretraining_data(cfg)
    stats = json.loads((data / "stats.json").read_text())
    assert stats["streaming"] is streaming and stats["validation"]["examples"] > 0
    if not streaming:  # streaming builds train examples on the fly, while pretraining reads them
        assert stats["train"]["tokens"] > 10_000
    else:
        from mlm_pretrain.examples import pretraining_stream
        from mlm_pretrain.tokenizer import load_tokenizer

        rows = iter(pretraining_stream(cfg, load_tokenizer(tok_dir)))
        assert len(next(rows)["input_ids"]) == cfg.data.max_seq_length
    assert any(r.path.startswith(f"/datasets/{WIKITEXT}/resolve/") for r in hub.requests)


def test_a_hub_corpus_is_read_from_the_cache_once_the_hub_is_gone(hub, tmp_path):
    from mlm_pretrain.corpus import load_documents

    cfg = _cfg(tmp_path)
    first = load_documents(cfg.corpus)["text"]
    hub.stop()
    sources.forget()
    assert sources.offline_if_unreachable() is True  # the probe finds no Hub: cache only, at once
    assert load_documents(cfg.corpus)["text"] == first


def test_a_new_version_of_a_hub_dataset_is_a_new_corpus(hub, tmp_path):
    """Prepared data and tokenizers are keyed on the corpus fingerprint: it holds the dataset's commit, so
    data built from an older version is never reused for a newer one, and the fingerprint is the same
    offline (from the cache) as online."""
    from mlm_pretrain.corpus import corpus_fingerprint, load_documents
    from mlm_pretrain.finetune_data import task_text

    cfg = _cfg(tmp_path, "cpu-1h-tapt")
    load_documents(cfg.corpus, task=task_text(cfg))  # downloaded (both datasets) and cached
    before = corpus_fingerprint(cfg.corpus, task_text(cfg))
    hub.stop()
    sources.forget()
    assert corpus_fingerprint(cfg.corpus, task_text(cfg)) == before  # offline: the cached commit
    hub.start()
    sources.forget()
    files = wikitext_files()
    files["wikitext-2-raw-v1/train-00000-of-00001.parquet"] = files["wikitext-2-raw-v1/test-00000-of-00001.parquet"]
    hub.add_repo(WIKITEXT, files, repo_type="dataset")
    changed_corpus = corpus_fingerprint(cfg.corpus, task_text(cfg))
    assert changed_corpus != before
    glue = glue_files()
    glue["sst2/train-00000-of-00001.parquet"] = glue["sst2/validation-00000-of-00001.parquet"]
    hub.add_repo(GLUE, glue, repo_type="dataset")
    sources.forget()
    assert corpus_fingerprint(cfg.corpus, task_text(cfg)) not in (before, changed_corpus)  # the task's texts too


# ----------------------------------------------------------------------------------------------
# finetune.hub_dataset
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe, n_train, n_validation, labels", [
    ("sst2", 600, 150, ["negative", "positive"]),
    ("mrpc", 400, 100, ["not_equivalent", "equivalent"]),
])
def test_a_hub_task_fine_tunes_single_sentences_and_pairs(hub, tmp_path, encoder_folder, recipe, n_train,
                                                          n_validation, labels):
    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.finetune_data import load_splits

    cfg = load_config(recipe, [f"output_dir={tmp_path}", f"finetune.model={encoder_folder}", *FINETUNE_SMALL])
    assert (cfg.finetune.hub_dataset, cfg.finetune.hub_config) == (GLUE, recipe)
    splits = load_splits(cfg)
    assert set(splits) == {"train", "validation"}  # GLUE's test split is unlabelled (-1): left out
    assert (len(splits["train"]), len(splits["validation"])) == (n_train, n_validation)
    final = finetune(cfg)
    config = json.loads((final / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(2)] == labels
    metrics = json.loads((final / "metrics.json").read_text())
    assert 0.0 <= metrics["eval/accuracy"] <= 1.0


# ----------------------------------------------------------------------------------------------
# tokenizer.pretrained, model.init_from, finetune.model
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("repo", [MODEL, NAMESPACED])
def test_a_hub_tokenizer_is_the_runs_tokenizer(hub, tmp_path, encoder_folder, repo):
    from mlm_pretrain.layout import RunLayout
    from mlm_pretrain.tokenizer import load_tokenizer, train_tokenizer

    cfg = _cfg(tmp_path, "tiny", f"tokenizer.pretrained={repo}")
    folder = train_tokenizer(cfg)
    assert folder == RunLayout.of(cfg).tokenizer and folder != encoder_folder
    assert not (folder / "model.safetensors").exists()  # the tokenizer's files only
    assert load_tokenizer(folder).get_vocab() == load_tokenizer(encoder_folder).get_vocab()


def test_pretraining_continues_from_a_hub_model(hub, tmp_path, encoder_folder):
    from safetensors.torch import load_file

    from mlm_pretrain.model import build_model
    from mlm_pretrain.prepare import prepare_pretraining_data
    from mlm_pretrain.pretrain import pretrain
    from mlm_pretrain.tokenizer import load_tokenizer

    cfg = _cfg(tmp_path, "tiny-bert", f"model.init_from={MODEL}", f"tokenizer.pretrained={MODEL}",
               "corpus.files=[data/corpus.txt]")
    model = build_model(cfg, load_tokenizer(encoder_folder))
    saved = load_file(str(encoder_folder / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    prepare_pretraining_data(cfg)
    final = pretrain(cfg)
    assert json.loads((final / "config.json").read_text())["hidden_size"] == 32


def test_fine_tuning_starts_from_a_hub_model(hub, tmp_path):
    from mlm_pretrain.finetune import finetune
    from mlm_pretrain.model import model_source

    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"finetune.model={NAMESPACED}", *FINETUNE_SMALL])
    src = model_source(cfg)
    assert (hub.url and "models--alice--tiny-encoder" in src)
    final = finetune(cfg)
    assert (final / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------
# Failures: each a clear error naming the key and the way out, before any work
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("over, match", [
    (["corpus.hub_dataset=nobody/nothing"], r"corpus.hub_dataset='nobody/nothing'.*no dataset repository"),
    (["corpus.hub_config=wikitext-3"], r"wikitext-3.*set corpus.hub_config to one of them"),
    (["corpus.split=dev"], r"dev.*set corpus.split to one of them"),
    (["corpus.text_field=body"], r"text field 'body' not found in Salesforce/wikitext \[train\]; the columns are: text"),
])
def test_a_bad_hub_corpus_is_a_clear_error(hub, tmp_path, over, match):
    from mlm_pretrain.tokenizer import train_tokenizer

    with pytest.raises(UserError, match=match):
        train_tokenizer(_cfg(tmp_path, "cpu-1h", *over))
    assert not (tmp_path / "run" / "tokenizer").exists()


@pytest.mark.parametrize("over, match", [
    (["finetune.hub_dataset=nobody/glue"], r"finetune.hub_dataset='nobody/glue'.*no dataset repository"),
    (["finetune.hub_config=qqp"], r"qqp.*set finetune.hub_config to one of them"),
    (["finetune.text_column=text"], r"finetune.text_column='text' is not a column of nyu-mll/glue \[train\]; its columns are: sentence, label, idx"),
])
def test_a_bad_hub_task_is_a_clear_error(hub, tmp_path, over, match):
    from mlm_pretrain.finetune_data import load_splits

    with pytest.raises(UserError, match=match):
        load_splits(load_config("sst2", [f"output_dir={tmp_path}", *over]))


@pytest.mark.parametrize("key", ["finetune.model", "model.init_from", "tokenizer.pretrained"])
def test_a_missing_hub_model_is_a_clear_error(hub, tmp_path, key):
    from mlm_pretrain.pipeline import check_sources

    with pytest.raises(UserError, match=rf"{key}='alice/no-such-model'.*no model repository 'alice/no-such-model'"):
        check_sources(_cfg(tmp_path, "tiny", f"{key}=alice/no-such-model"))


def test_the_hub_down_is_a_clear_error_before_any_work(hub, tmp_path):
    from mlm_pretrain.pipeline import run_pipeline

    hub.stop()
    with pytest.raises(UserError) as e:
        run_pipeline(_cfg(tmp_path, "cpu-1h"))
    text = str(e.value)
    assert "Salesforce/wikitext" in text and "corpus.files=" in text and "connect to the Hub once" in text
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_run_checks_the_task_before_pretraining(hub, tmp_path):
    """A task whose Hub data cannot be read stops `run` before the tokenizer, not after pretraining."""
    from mlm_pretrain.pipeline import run_pipeline

    with pytest.raises(UserError, match="finetune.hub_dataset='nyu-mll/glue'.*qqq"):
        run_pipeline(_cfg(tmp_path, "cpu-1h", "finetune.hub_config=qqq"))
    assert not (tmp_path / "run" / "tokenizer").exists()
