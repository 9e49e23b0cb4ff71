"""RunConfig loading and validation: unknown keys, cross-section checks, overrides, presets."""

from pathlib import Path

import pytest

from mmar.config import ConfigError
from mmar.training.config import (
    PRESETS_DIR,
    RunConfig,
    apply_overrides,
    load_preset,
    load_run_config,
)

REPO = Path(__file__).resolve().parent.parent


def test_presets_load_and_configs_match_them():
    for name in ("tiny", "mnist_stage1", "mnist_stage2"):
        cfg = load_preset(name)
        assert isinstance(cfg, RunConfig)
        # configs/ are the user-facing copies of the packaged presets: they must not drift
        packaged = (PRESETS_DIR / f"{name}.yaml").read_text()
        assert (REPO / "configs" / f"{name}.yaml").read_text() == packaged
    s1, s2 = load_preset("mnist_stage1"), load_preset("mnist_stage2")
    assert (s1.model.mask.ratio_min, s1.model.mask.ratio_max) == (0.7, 1.0)
    assert (s2.model.mask.ratio_min, s2.model.mask.ratio_max) == (0.0, 1.0)
    assert s2.train.init_from == "runs/mnist_stage1/final" and s1.train.init_from is None


def test_unknown_key_raises_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stepz: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*RunConfig.train.*stepz"):
        load_run_config(path)


def test_mismatched_image_size_raises_with_the_fix():
    with pytest.raises(ConfigError, match=r"data.image_size.*model.image_tokenizer.image_size"):
        load_preset("tiny", ["data.image_size=16"])


def test_mismatched_channels_raises():
    with pytest.raises(ConfigError, match=r"data.channels.*image_channels is 1"):
        load_preset("tiny", ["data.channels=3"])


def test_bad_ranges_raise():
    with pytest.raises(ConfigError, match="OptimConfig.min_lr"):
        load_preset("tiny", ["optim.min_lr=1.0"])
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_preset("tiny", ["optim.warmup_steps=-1"])
    with pytest.raises(ConfigError, match="KindMix"):
        load_preset("tiny", ["train.kinds={t2i: 0, i2t: 0, img: 0}"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_preset("tiny", ["train.precision=fp16"])
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")


def test_overrides_parse_yaml_values_and_nest():
    data = apply_overrides(
        {"train": {"steps": 1}}, ["train.steps=7", "optim.lr=2e-3", "model.mask.ratio_min=0.0"]
    )
    assert data == {
        "train": {"steps": 7},
        "optim": {"lr": 2e-3},
        "model": {"mask": {"ratio_min": 0.0}},
    }
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["train.steps"])
    assert load_preset("tiny", ["train.steps=30"]).train.steps == 30
