"""Config: presets, dotted overrides, rejection of unknown keys and wrong types, saved YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from freezeempath.config import Config, ConfigError, from_dict, load_config, save_config, to_dict
from freezeempath.config.presets import NAMES
from helpers import ROOT


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert cfg.preset == name
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_paper_preset_matches_the_method():
    m = load_config("paper").model
    assert (m.encoder.d_model, m.encoder.layers, m.encoder.n_mels) == (1280, 32, 128)
    assert (m.llm.hidden, m.llm.layers, m.llm.vocab) == (3584, 28, 152064)
    assert (m.speech_decoder.hidden, m.speech_decoder.layers) == (896, 24)
    assert (m.codec.n_units, m.codec.unit_rate, m.speech_decoder.read, m.speech_decoder.write) == (
        8192,
        50,
        3,
        15,
    )


def test_dotted_overrides_are_typed():
    cfg = load_config("tiny", ["model.adapter.k=4", "model.generation.temperature=0", "output_dir=/tmp/x"])
    assert cfg.model.adapter.k == 4
    assert cfg.model.generation.temperature == 0.0 and isinstance(cfg.model.generation.temperature, float)
    assert cfg.output_dir == "/tmp/x"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.adapter.kk=4", "unknown config key model.adapter.kk"),
        ("model.adapter.k=four", "model.adapter.k: expected int"),
        ("model.llm.arch=gpt2", "model.llm.arch: 'gpt2' is not one of"),
        ("model.llm.hidden.x=1", "model.llm.hidden: expected int"),
        ("model.adapter", "not of the form key.sub=value"),
        ("model.encoder.max_input_seconds=60", "max_input_seconds must be in"),
        ("data.feature_prefetch=0", "data.feature_prefetch must be >= 1"),
        ("targets.codec_decoder_steps=-1", "targets.codec_decoder_steps must be >= 0"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config("tiny", [override])


def test_yaml_file_with_preset_and_unknown_key(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"preset": "tiny", "model": {"adapter": {"hidden": 8}}}))
    assert load_config(good).model.adapter.hidden == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"preset": "tiny", "model": {"emotion": {"heads": 2, "head": 1}}}))
    with pytest.raises(ConfigError, match="unknown config key model.emotion.head"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config("demo", ["model.generation.max_new_tokens=7"])
    path = save_config(cfg, tmp_path / "run")
    assert load_config(path) == cfg


def test_every_shipped_yaml_loads():
    from freezeempath.evaluation.suite import load_suite

    files = sorted((ROOT / "jobs" / "configs").rglob("*.yaml"))
    assert files, "jobs/configs has no YAML"
    for f in files:
        (load_suite if f.parent.name == "eval" else load_config)(f)  # eval/: evaluation suites


PAPER_STAGES = {
    "stage1_semantic": ("s1", 1, 128, 1e-3),
    "stage2a_ser": ("s2a", 3, 128, 2e-4),
    "stage2b_empathy": ("s2b", 1, 128, 5e-6),
    "stage3a_decoder_pretrain": ("s3a", 5, 32, 5e-4),
    "stage3b_decoder_joint": ("s3b", 1, 32, 1e-5),
}


@pytest.mark.parametrize("name", sorted(PAPER_STAGES))
def test_paper_stage_configs_carry_the_published_settings(name):
    cfg = load_config(ROOT / "jobs" / "configs" / "train" / "paper" / f"{name}.yaml")
    stage, epochs, batch, lr = PAPER_STAGES[name]
    t = cfg.train
    assert (t.stage, t.epochs, t.global_batch, t.lr, t.warmup_ratio) == (stage, epochs, batch, lr, 0.03)
    assert t.micro_batch * t.grad_accum * t.num_workers == batch
    assert t.zero_stage == 3 and t.offload_param and t.precision == "bf16"
    if stage == "s2a":
        assert cfg.model.emotion.aux_weight == 0.8


def test_stage_configs_read_only_training_splits():
    # a folder or an unqualified glob would also read the validation and test speakers an evaluation holds out
    for path in sorted((ROOT / "jobs" / "configs" / "train").rglob("*.yaml")):
        cfg = load_config(path)
        for spec in cfg.data.train_shards:
            assert Path(spec).name.startswith("train-") and spec.endswith(".parquet"), f"{path.name}: {spec}"
        assert not any("test-" in spec for spec in cfg.data.eval_shards), f"{path.name} evaluates on a test split"
