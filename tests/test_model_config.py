import pytest

from mmar.config import ConfigError
from mmar.model.config import (
    BackboneConfig,
    MaskConfig,
    MMARConfig,
    SamplingConfig,
    ViTConfig,
    tiny_config,
)


def test_defaults_validate_and_round_trip():
    cfg = MMARConfig()
    cfg.validate()
    again = MMARConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.backbone.lora_targets[0] == "q_proj" and again.mask.ratio_min == 0.7


def test_sampling_spacing_and_precision_default_to_todays_sampler():
    """A config.json written before these fields reads as the sampler it was sampled with."""
    old = SamplingConfig().to_dict()
    del old["timestep_spacing"], old["precision"]
    s = SamplingConfig.from_dict(old)
    assert (s.timestep_spacing, s.precision) == ("linspace", "fp32")
    s = SamplingConfig(timestep_spacing="leading", precision="bf16")
    assert SamplingConfig.from_dict(s.to_dict()) == s


def test_tiny_config_geometry():
    cfg = tiny_config()
    geo = cfg.image_tokenizer.geometry()
    assert (geo.num_tokens, geo.token_dim) == (16, 4)
    assert cfg.backbone.hidden_size == 32


def test_unknown_key_raises():
    with pytest.raises(ConfigError, match="foo"):
        MMARConfig.from_dict({"foo": 1})
    with pytest.raises(ConfigError, match=r"MMARConfig\.backbone: unknown field.*bar"):
        MMARConfig.from_dict({"backbone": {"bar": 2}})


@pytest.mark.parametrize(
    "cls, data, field",
    [
        (ViTConfig, {"width": 30, "num_heads": 4}, "ViTConfig.width"),
        (ViTConfig, {"width": 34, "num_heads": 2, "pos_emb": "sincos"}, "ViTConfig.width"),
        (MaskConfig, {"ratio_min": 0.9, "ratio_max": 0.5}, "MaskConfig.ratio_min"),
        (BackboneConfig, {"hidden_size": 30, "num_heads": 4}, "BackboneConfig.hidden_size"),
        (BackboneConfig, {"num_heads": 4, "num_kv_heads": 3}, "BackboneConfig.num_kv_heads"),
        (BackboneConfig, {"kind": "pretrained"}, "BackboneConfig.path"),
        (MMARConfig, {"prompt_dropout": 1.5}, "MMARConfig.prompt_dropout"),
        (MMARConfig, {"sampling": {"num_steps": 1001}}, "MMARConfig.sampling.num_steps"),
        (SamplingConfig, {"num_iter": 0}, "SamplingConfig.num_iter"),
        (SamplingConfig, {"num_steps": 0}, "SamplingConfig.num_steps"),
        (SamplingConfig, {"batch_size": 0}, "SamplingConfig.batch_size"),
        (SamplingConfig, {"guidance_scale": -1.0}, "SamplingConfig.guidance_scale"),
        (SamplingConfig, {"scheduler": "euler"}, "SamplingConfig.scheduler"),
        (SamplingConfig, {"eta": 1.5}, "SamplingConfig.eta"),
        (SamplingConfig, {"temperature": -1.0}, "SamplingConfig.temperature"),
        (SamplingConfig, {"text_temperature": -0.5}, "SamplingConfig.text_temperature"),
        (SamplingConfig, {"max_new_tokens": 0}, "SamplingConfig.max_new_tokens"),
        (SamplingConfig, {"timestep_spacing": "trailing"}, "SamplingConfig.timestep_spacing"),
        (SamplingConfig, {"precision": "fp16"}, "SamplingConfig.precision"),
    ],
)
def test_bad_values_raise_naming_the_field(cls, data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        cls.from_dict(data)


def test_sequence_must_fit_positions_raises():
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        tiny_config().replace(max_text_len=200)
