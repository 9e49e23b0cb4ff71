"""Bad input around latent caches and the KL-16 tokenizer (issue 9): a random-init KL-16 is
the same VAE in `cache-latents` and in the trainer."""

import json
from pathlib import Path

import torch

import mmar.cli.cache_latents as cache_latents_cli
from mmar.cli import main
from mmar.data.latents import LatentDataset
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer


def cache(out: Path, tokenizer: dict, data: dict | None = None, *args: str) -> Path:
    """`mmar cache-latents` of ``data`` (default: digits) with ``tokenizer``, train split."""
    tok = out.with_name(out.name + "-tok.yaml")
    tok.write_text(json.dumps(tokenizer))  # JSON is YAML
    if data is None:
        data_arg = "digits"
    else:
        (data_file := out.with_name(out.name + "-data.yaml")).write_text(json.dumps(data))
        data_arg = str(data_file)
    argv = ["cache-latents", "--data", data_arg, "--tokenizer-config", str(tok), "--out", str(out)]
    assert main([*argv, "--splits", "train", "--batch-size", "512", *args]) == 0
    return out


def tiny_on(path: Path, *overrides: str):
    """The tiny preset (8 px grey pixels, p = 2) training on the latent cache at ``path``."""
    return load_preset(
        "tiny",
        [
            "train.progress=false",
            "data.name=latents",
            f"data.path={path}",
            "data.latent_flip=none",
            *overrides,
        ],
    )


# --- item 4: KL-16 with random weights is the same VAE in the cache and in the model -----------
def test_random_kl16_cache_decodes_through_the_trained_model(tmp_path, monkeypatch):
    from mmar.pipelines.mmar import MMAR

    used = []  # the VAE cache-latents encodes with

    def spy(args):
        cfg, tok = real(args)
        used.append(tok)
        return cfg, tok

    real = cache_latents_cli._image_tokenizer
    monkeypatch.setattr(cache_latents_cli, "_image_tokenizer", spy)
    torch.manual_seed(12345)  # another process's global RNG: must not matter
    kl16 = {"kind": "kl16", "image_size": 16, "image_channels": 3}
    data = {"name": "shapes", "image_size": 16, "length": 4, "test_length": 1}
    c = cache(tmp_path / "c", kl16, data)
    tok = "model.image_tokenizer={kind: kl16, image_size: 16, image_channels: 3}"
    steps = ["train.steps=1", "train.batch_size=4", "train.ckpt_every=0"]
    Trainer(tiny_on(c, tok, *steps), tmp_path / "run").fit()
    trained = MMAR.from_pretrained(tmp_path / "run" / "final", device="cpu")
    latents = LatentDataset(c, flip="none").latents  # (4, 16, 1, 1)
    with torch.no_grad():
        expected = used[0].decode(latents)
        got = trained.processor.image_tokenizer.decode(latents)
    # the same weights (float32 round-off of the loaded copy); another VAE is off by ~0.1
    assert torch.allclose(got, expected, atol=1e-4)
