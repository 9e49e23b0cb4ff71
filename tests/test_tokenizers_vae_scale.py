"""`mmar vae-scale`: the printed estimate is 1/std of the raw latents, computed directly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmar.cli import main


def _write_images(folder, n, size, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(n):
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")


def _load_folder(folder):
    """The images as the VAE sees them (already the right size: no crop or resize)."""
    arrs = [
        np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)
        for f in sorted(folder.glob("*.png"))
    ]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, 3, S, S)


@pytest.fixture
def tiny_vae(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)  # diffusers' init draws from the global RNG
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=0.3,
    )
    vae.save_pretrained(str(tmp_path / "vae"))
    return vae, tmp_path / "vae"


def test_vae_scale_diffusers_equals_direct_std(tiny_vae, tmp_path, capsys):
    vae, vae_dir = tiny_vae
    _write_images(tmp_path / "imgs", 5, 16)
    rc = main(
        [
            "vae-scale",
            "--tokenizer",
            "diffusers",
            "--path",
            str(vae_dir),
            "--data",
            str(tmp_path / "imgs"),
            "--num",
            "5",
            "--image-size",
            "16",
            "--batch-size",
            "2",
            "--json",
            "-",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        z = vae.encode(_load_folder(tmp_path / "imgs")).latent_dist.mode().double()
    assert result["num_images"] == 5 and result["latent_shape"] == [4, 8, 8]
    assert result["std"] == pytest.approx(z.std().item(), rel=1e-5)
    assert result["mean"] == pytest.approx(z.mean().item(), rel=1e-4, abs=1e-6)
    assert result["scale"] == pytest.approx(1.0 / z.std().item(), rel=1e-5)


def test_vae_scale_kl16_random_subset_and_text_output(tmp_path, capsys):
    _write_images(tmp_path / "imgs", 4, 40)  # center-cropped/resized to 32
    rc = main(
        [
            "vae-scale",
            "--tokenizer",
            "kl16",
            "--data",
            str(tmp_path / "imgs"),
            "--num",
            "2",
            "--image-size",
            "32",
            "--posterior",
            "sample",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "images 2, latents (16, 2, 2)" in out and "estimated scale 1/std =" in out


def test_vae_scale_raises_on_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["vae-scale", "--tokenizer", "kl16", "--data", str(tmp_path / "empty")]
    assert main([*argv, "--image-size", "32"]) == 2
    assert "mmar vae-scale: no image files" in capsys.readouterr().err


def test_vae_scale_help_lists_command(capsys):
    with pytest.raises(SystemExit):
        main(["vae-scale", "--help"])
    assert "1 / std" in capsys.readouterr().out


def test_vae_scale_builtin_dataset(tiny_vae, capsys):
    data = pytest.importorskip("mmar.data")
    if not hasattr(data, "build_dataset"):
        pytest.skip("mmar.data.build_dataset not available")
    _, vae_dir = tiny_vae
    rc = main(
        [
            "vae-scale",
            "--tokenizer",
            "diffusers",
            "--path",
            str(vae_dir),
            "--data",
            "digits",
            "--num",
            "3",
            "--image-size",
            "16",
            "--json",
            "-",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_images"] == 3 and result["latent_shape"] == [4, 8, 8] and result["scale"] > 0
