"""The config system: recipes, overrides, validation messages, the resolved config on disk."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mlm_pretrain.config import (Config, ConfigError, describe_fields, field_docs, from_dict, load_config,
                                 recipe_names, recipe_path, save_resolved, to_dict)


@pytest.mark.parametrize("name", recipe_names())
def test_every_packaged_recipe_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    # round trip: the resolved dict rebuilds the same config
    assert from_dict(to_dict(cfg)) == cfg


def test_tiny_is_the_default_and_uses_bundled_data():
    assert "tiny" in recipe_names()
    cfg = load_config()
    assert cfg == load_config("tiny")
    assert cfg.corpus.files == ("data/corpus.txt",)
    assert cfg.model.preset == "tiny"


def test_overrides_apply_with_types():
    cfg = load_config("tiny-bert", ["pretrain.max_steps=7", "pretrain.learning_rate=3e-4", "data.objective=sop",
                               "corpus.files=[a.txt, b.txt]", "tokenizer.strip_accents=null",
                               "tracking.report_to=none", "seed=3"])
    assert cfg.pretrain.max_steps == 7
    assert cfg.pretrain.learning_rate == pytest.approx(3e-4)
    assert cfg.data.objective == "sop"
    assert cfg.corpus.files == ("a.txt", "b.txt")
    assert cfg.tokenizer.strip_accents is None
    assert cfg.tracking.report_to == ("none",)
    assert cfg.seed == 3
    # an int where a float is expected is accepted and becomes a float
    assert load_config("tiny", ["pretrain.learning_rate=1"]).pretrain.learning_rate == 1.0


def test_later_override_wins_and_recipe_file_works(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: tiny\npretrain:\n  max_steps: 11\nmodel:\n  preset: mini\n")
    cfg = load_config(str(recipe), ["model.preset=small", "model.preset=base"])
    assert cfg.pretrain.max_steps == 11
    assert cfg.model.preset == "base"
    assert cfg.tokenizer.vocab_size == load_config("tiny").tokenizer.vocab_size  # inherited from base


def test_unknown_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError, match=r"pretrain\.max_stepz.*did you mean pretrain\.max_steps"):
        load_config("tiny", ["pretrain.max_stepz=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'nosuchsection'"):
        load_config("tiny", ["nosuchsection.x=1"])


def test_bad_type_names_the_key():
    with pytest.raises(ConfigError, match=r"pretrain\.max_steps: expected int \| null, got 'abc'"):
        load_config("tiny", ["pretrain.max_steps=abc"])
    with pytest.raises(ConfigError, match=r"tokenizer\.lowercase: expected true or false"):
        load_config("tiny", ["tokenizer.lowercase=3"])
    with pytest.raises(ConfigError, match=r"data\.max_seq_length: expected an integer"):
        load_config("tiny", ["data.max_seq_length=12.5"])


def test_bad_value_names_the_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"data\.objective: 'xx' is not allowed; choose one of 'nsp', 'sop', 'mlm'"):
        load_config("tiny", ["data.objective=xx"])
    with pytest.raises(ConfigError, match=r"masking\.probability: must be in \(0, 1\)"):
        load_config("tiny", ["masking.probability=1.5"])
    with pytest.raises(ConfigError, match=r"data\.max_seq_length: must be >= 8"):
        load_config("tiny", ["data.max_seq_length=4"])
    with pytest.raises(ConfigError, match=r"mask_replace_prob \+ random_replace_prob must be <= 1"):
        load_config("tiny", ["masking.mask_replace_prob=0.9", "masking.random_replace_prob=0.2"])
    with pytest.raises(ConfigError, match=r"pretrain\.batch_ramp: grows the step .*gradient_accumulation_steps > 1"):
        load_config("tiny", ["pretrain.batch_ramp=0.3"])
    with pytest.raises(ConfigError, match=r"pretrain\.batch_ramp: needs .*max_steps or .*time_budget_minutes"):
        load_config("tiny", ["pretrain.batch_ramp=0.3", "pretrain.gradient_accumulation_steps=4",
                             "pretrain.max_steps=null", "pretrain.num_epochs=1"])
    with pytest.raises(ConfigError, match=r"pretrain\.batch_ramp: must be in \[0, 1\]"):
        load_config("tiny", ["pretrain.batch_ramp=1.5", "pretrain.gradient_accumulation_steps=4"])


def test_bad_override_syntax_and_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config("tiny", ["pretrain.max_steps"])
    with pytest.raises(ConfigError, match="no packaged recipe named 'nope'; choose one of"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        recipe_path(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(str(bad))


def test_config_is_frozen_and_replace_validates():
    cfg = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    new = cfg.replace(**{"pretrain.max_steps": 5, "seed": 9})
    assert (new.pretrain.max_steps, new.seed, cfg.seed) == (5, 9, 42)
    with pytest.raises(ConfigError, match="data.objective"):
        cfg.replace(**{"data.objective": "bogus"})


def test_save_resolved_round_trips(tmp_path):
    cfg = load_config("tiny", ["pretrain.max_steps=3"])
    path = save_resolved(cfg, tmp_path / "run" / "config.yaml")
    assert from_dict(yaml.safe_load(path.read_text())) == cfg
    # the saved file is itself a usable recipe
    assert load_config(str(path)) == cfg


def test_every_field_has_a_docstring():
    rows = describe_fields()
    assert len(rows) > 60
    missing = [key for key, _, _, doc in rows if not doc]
    assert not missing, f"fields without a docstring: {missing}"
    assert "Peak learning rate" in field_docs(type(load_config().pretrain))["learning_rate"]


def test_folder_named_like_a_recipe_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny") == load_config(str(recipe_path("tiny")))


def test_an_unquoted_no_is_the_string_no():
    """YAML 1.1 reads `no` as false; `pretrain.mixed_precision=no` on a command line means the string."""
    assert load_config("tiny", ["pretrain.mixed_precision=no"]).pretrain.mixed_precision == "no"
    assert load_config("tiny", ["finetune.mixed_precision=no"]).finetune.mixed_precision == "no"


def test_the_run_layout_names_every_folder_of_a_run(tmp_path):
    from mlm_pretrain.layout import RunLayout

    lay = RunLayout.of(load_config("tiny", [f"output_dir={tmp_path}"]))
    assert (lay.root, lay.config_yaml, lay.tokenizer, lay.data_root) == (
        tmp_path, tmp_path / "config.yaml", tmp_path / "tokenizer", tmp_path / "data")
    assert (lay.pretrain, lay.checkpoints, lay.final, lay.report) == (
        tmp_path / "pretrain", tmp_path / "pretrain" / "checkpoints", tmp_path / "pretrain" / "final",
        tmp_path / "report.md")
    assert lay.finetune_task("sentiment") == tmp_path / "finetune" / "sentiment"
    (tmp_path / "tok").mkdir()
    lay = RunLayout.of(load_config("tiny", [f"output_dir={tmp_path}", f"tokenizer.pretrained={tmp_path / 'tok'}",
                                            "data.cache_dir=~/prepared"]))
    assert lay.tokenizer == tmp_path / "tok" and lay.data_root == Path("~/prepared").expanduser()
    assert RunLayout.of(load_config("tiny", [f"output_dir={tmp_path}"]), root=tmp_path / "moved").final == (
        tmp_path / "moved" / "pretrain" / "final")


#: How many settings of each section the fingerprints held at their defaults before ADDED_LATER's (2026-12-07,
#: with tokenizer.type, finetune.long_documents and the window settings added to ADDED_LATER). A new setting
#: goes into ADDED_LATER, which keeps these counts; an upgrade that changed them would retrain every finished
#: run (tokenizer.type, left out of ADDED_LATER, changed every pretraining fingerprint).
#: finetune: 42 since long_documents defaults to windows (2026-12-07): a run at the new default is a new run.
FINGERPRINTED = {"corpus": 8, "tokenizer": 10, "data": 12, "masking": 6, "model": 16, "pretrain": 30, "finetune": 42,
                 "hub": 10, "tracking": 3}


def test_a_new_setting_joins_added_later():
    from mlm_pretrain.config import fingerprint_dict

    kept = fingerprint_dict(Config())
    counts = {section: len(v) for section, v in kept.items() if isinstance(v, dict)}
    assert counts == FINGERPRINTED, ("a setting was added to (or removed from) the config without joining "
                                     "config.ADDED_LATER: finished runs would be retrained after an upgrade",
                                     {s: sorted(kept[s]) for s in counts if counts[s] != FINGERPRINTED.get(s)})


def test_a_changed_default_of_a_setting_added_later_keeps_its_old_runs_apart():
    """finetune.long_documents was added with truncate as its default, then became windows: a run at the new
    default is not mistaken for the finished runs made under the old one (the fingerprint drops a setting
    added later only at the value that does what the package did before it existed, not at its default),
    and a run that asks for truncation keeps their fingerprint."""
    from mlm_pretrain.config import fingerprint_dict
    from mlm_pretrain.identity import finetune_fingerprint

    cfg = load_config("tiny")
    assert cfg.finetune.long_documents == "windows"
    truncating = cfg.replace(**{"finetune.long_documents": "truncate"})
    assert fingerprint_dict(cfg)["finetune"]["long_documents"] == "windows"
    assert "long_documents" not in fingerprint_dict(truncating)["finetune"]  # as in every run made before it
    assert finetune_fingerprint(cfg, None) != finetune_fingerprint(truncating, None)


def test_settings_added_later_stay_out_of_fingerprints_while_unset():
    """A setting added after runs were made (config.ADDED_LATER) must not change the fingerprint of a
    finished pretraining or fine-tuning seed while it is unset, or an upgrade retrains them; set, it counts."""
    from mlm_pretrain.config import ADDED_LATER, fingerprint_dict
    from mlm_pretrain.identity import finetune_fingerprint, pretrain_fingerprint

    cfg = load_config("tiny")
    full, kept, default = to_dict(cfg), fingerprint_dict(cfg), to_dict(Config())
    for section, before in ADDED_LATER.items():
        for name, value in before.items():  # every one but long_documents defaults to what the package did before
            if (section, name) == ("finetune", "long_documents"):
                assert default[section][name] == "windows" and kept[section][name] == "windows"
                continue
            assert full[section][name] == default[section][name] == value and name not in kept[section], name
            full[section].pop(name)
    assert kept == full  # nothing else is dropped
    later = load_config("tiny", ["model.tie_word_embeddings=false", "finetune.embedding_learning_rate=1e-3",
                                 "corpus.include_task_text=true", "pretrain.batch_ramp=0.5",
                                 "pretrain.gradient_accumulation_steps=2"])
    assert fingerprint_dict(later)["model"]["tie_word_embeddings"] is False  # set, even to a false value
    assert fingerprint_dict(later)["corpus"]["include_task_text"] is True
    assert fingerprint_dict(later)["pretrain"]["batch_ramp"] == 0.5
    assert pretrain_fingerprint(later) != pretrain_fingerprint(cfg)
    assert finetune_fingerprint(later, None) != finetune_fingerprint(cfg, None)


def test_local_files_replace_a_recipes_hub_data(tmp_path):
    """Packaged recipes name public Hub data; files given in a recipe on top, or as overrides, replace it
    (the Hub dataset is dropped, not silently preferred), and naming a Hub dataset keeps it."""
    cfg = load_config("cpu-1h")
    assert (cfg.corpus.hub_dataset, cfg.corpus.hub_config) == ("Salesforce/wikitext", "wikitext-2-raw-v1")
    assert (cfg.finetune.hub_dataset, cfg.finetune.hub_config, cfg.finetune.train_file) == ("nyu-mll/glue", "sst2", None)
    mine = load_config("cpu-1h", ["corpus.files=[my/corpus.txt]", "finetune.train_file=my/train.csv"])
    assert (mine.corpus.hub_dataset, mine.corpus.hub_config, mine.corpus.files) == (None, None, ("my/corpus.txt",))
    assert (mine.finetune.hub_dataset, mine.finetune.hub_config, mine.finetune.train_file) == (None, None, "my/train.csv")
    assert mine.finetune.text_column == "sentence"  # the rest of the section stays the recipe's
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("base: cpu-1h\ncorpus:\n  files: [a.jsonl]\n")
    assert load_config(str(recipe)).corpus.hub_dataset is None
    assert load_config(str(recipe)).finetune.hub_dataset == "nyu-mll/glue"  # only the section that names files
    back = load_config(str(recipe), ["corpus.hub_dataset=user/corpus"])
    assert (back.corpus.hub_dataset, back.corpus.hub_config) == ("user/corpus", None)
    assert load_config("tiny", ["corpus.hub_dataset=user/corpus", "corpus.files=[b.txt]"]).corpus.hub_dataset == (
        "user/corpus")  # both in one layer: the Hub dataset is what was asked for


def test_no_packaged_recipe_needs_the_benchmark_data_beside_the_checkout():
    from mlm_pretrain.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        assert "shared" not in path.read_text(), path.name
