"""ImageTokenizerConfig / TextTokenizerConfig: validation messages and token geometry."""

import json

import pytest

from mmar.config import ConfigError
from mmar.tokenizers import KL16_SCALE, ImageTokenizerConfig, TextTokenizerConfig


@pytest.mark.parametrize(
    "p, num_tokens, token_dim",
    [(1, 256, 16), (2, 64, 64), (4, 16, 256)],  # p=1: MAR's 256 x 16; p=4: the paper's 16 x 256
)
def test_kl16_geometry_at_256(p, num_tokens, token_dim):
    cfg = ImageTokenizerConfig(kind="kl16", image_size=256, image_channels=3, patch_size=p)
    cfg.validate()
    g = cfg.geometry()
    assert (g.stride, g.channels, g.latent_size) == (16, 16, 16)
    assert (g.num_tokens, g.token_dim) == (num_tokens, token_dim)


def test_pixel_geometry():
    g = ImageTokenizerConfig.from_dict(
        {"image_size": 28, "image_channels": 1, "patch_size": 4}
    ).geometry()
    assert (g.stride, g.channels, g.num_tokens, g.token_dim) == (1, 1, 49, 16)


def test_diffusers_geometry_reads_config_json(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"block_out_channels": [32, 64, 64, 64], "latent_channels": 4})
    )
    cfg = ImageTokenizerConfig(
        kind="diffusers", image_size=64, image_channels=3, path=str(tmp_path), patch_size=2
    )
    g = cfg.geometry()
    assert (g.stride, g.channels, g.num_tokens, g.token_dim) == (8, 4, 16, 16)
    with pytest.raises(ConfigError, match=r"image_size.*8 \* 2 = 16"):
        cfg.replace(image_size=40).geometry()


def test_kl16_scale_is_mar_value():
    assert KL16_SCALE == 0.2325


def test_image_config_raises_on_indivisible_size():
    with pytest.raises(
        ConfigError, match=r"ImageTokenizerConfig.image_size.*16 \* 4 = 64.*e\.g\. image_size: 192"
    ):
        ImageTokenizerConfig.from_dict(
            {"kind": "kl16", "image_size": 200, "image_channels": 3, "patch_size": 4}
        )


def test_image_config_raises_on_grey_vae():
    with pytest.raises(ConfigError, match="image_channels.*RGB.*image_channels: 3"):
        ImageTokenizerConfig.from_dict({"kind": "kl16", "image_size": 256, "image_channels": 1})


def test_image_config_raises_on_missing_diffusers_path():
    with pytest.raises(ConfigError, match="ImageTokenizerConfig.path"):
        ImageTokenizerConfig.from_dict(
            {"kind": "diffusers", "image_size": 256, "image_channels": 3}
        )


def test_image_config_raises_on_missing_diffusers_config(tmp_path):
    cfg = ImageTokenizerConfig(
        kind="diffusers", image_size=64, image_channels=3, path=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="config.json does not exist"):
        cfg.geometry()


def test_image_config_raises_on_bad_values():
    with pytest.raises(ConfigError, match="ImageTokenizerConfig.kind"):
        ImageTokenizerConfig.from_dict({"kind": "vq"})
    with pytest.raises(ConfigError, match="ImageTokenizerConfig.scale"):
        ImageTokenizerConfig.from_dict({"scale": -1.0})
    with pytest.raises(ConfigError, match="ImageTokenizerConfig.patch_size"):
        ImageTokenizerConfig.from_dict({"patch_size": 0})


def test_text_config_raises():
    with pytest.raises(ConfigError, match="TextTokenizerConfig.path"):
        TextTokenizerConfig.from_dict({"kind": "pretrained"})
    with pytest.raises(ConfigError, match="TextTokenizerConfig.vocab_size"):
        TextTokenizerConfig.from_dict({"kind": "qwen", "vocab_size": 100})
    with pytest.raises(ConfigError, match="TextTokenizerConfig.gguf_file"):
        TextTokenizerConfig.from_dict({"kind": "gguf", "path": "/models"})
    assert TextTokenizerConfig.from_dict({"kind": "words", "vocab_size": 50}).vocab_size == 50
