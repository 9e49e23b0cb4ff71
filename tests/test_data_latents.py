"""Latent cache: `mmar cache-latents` with the pixel tokenizer stores the images and their flips."""

import json

import pytest
import torch

from mmar.cli import main
from mmar.data import DataConfig, build_dataset, collate
from mmar.data.latents import LatentDataset


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    tok = root / "tok.yaml"
    tok.write_text("kind: pixels\nimage_size: 16\nimage_channels: 1\n")
    out = root / "cache"
    rc = main(
        [
            "cache-latents",
            "--data",
            "digits",
            "--tokenizer-config",
            str(tok),
            "--out",
            str(out),
            "--batch-size",
            "100",
            "--shard-size",
            "150",
        ]
    )
    assert rc == 0
    return out


def test_manifest(cache):
    m = json.loads((cache / "manifest.json").read_text())
    assert m["tokenizer"]["kind"] == "pixels" and m["latent_shape"] == [1, 16, 16]
    assert m["splits"]["train"]["count"] == 1437 and m["splits"]["test"]["count"] == 360
    assert len(m["splits"]["test"]["shards"]) == 2 and m["data"]["image_size"] == 16


def test_round_trip_latents_equal_images_and_flips(cache):
    src = build_dataset(DataConfig(name="digits", image_size=16), "test")
    none = LatentDataset(cache, "test", flip="none")
    both = LatentDataset(cache, "test", flip="both")
    assert len(none) == 360 and len(both) == 720
    for i in (0, 149, 150, 359):  # across the shard boundary
        assert torch.equal(none[i]["latents"], src[i]["image"])
        assert torch.equal(both[360 + i]["latents"], src[i]["image"].flip(-1))
        assert none[i]["text"] == src[i]["text"] and none[i]["label"] == src[i]["label"]


def test_random_flip_is_seeded_per_index_and_epoch(cache):
    ds = LatentDataset(cache, "test", flip="random", seed=0)
    flips0 = [not torch.equal(ds[i]["latents"], ds.latents[i]) for i in range(64)]
    assert 10 < sum(flips0) < 54
    assert flips0 == [not torch.equal(ds[i]["latents"], ds.latents[i]) for i in range(64)]
    ds.set_epoch(1)
    assert flips0 != [not torch.equal(ds[i]["latents"], ds.latents[i]) for i in range(64)]


def test_build_dataset_latents_and_collate(cache):
    ds = build_dataset(DataConfig(name="latents", path=str(cache)), "train")
    batch = collate([ds[0], ds[1], None])
    assert batch["latents"].shape == (2, 1, 16, 16) and batch["skipped"] == 1
    assert "images" not in batch and len(ds.captions()) == 1437


def test_missing_cache_and_split_raise(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        LatentDataset(tmp_path)
    with pytest.raises(ValueError, match="no split 'val'"):
        LatentDataset(cache, "val")


def test_no_flip_cache_refuses_flip_modes(tmp_path):
    tok = tmp_path / "tok.yaml"
    tok.write_text("kind: pixels\nimage_size: 32\nimage_channels: 3\n")
    out = tmp_path / "c"
    rc = main(
        [
            "cache-latents",
            "--data",
            "shapes",
            "--tokenizer-config",
            str(tok),
            "--out",
            str(out),
            "--splits",
            "test",
            "--no-flip",
        ]
    )
    assert rc == 0
    with pytest.raises(ValueError, match="latent_flip: none"):
        LatentDataset(out, "test", flip="random")
    assert LatentDataset(out, "test", flip="none")[0]["latents"].shape == (3, 32, 32)


def test_cli_bad_data_config_returns_error(tmp_path, capsys):
    tok = tmp_path / "tok.yaml"
    tok.write_text("kind: pixels\nimage_size: 32\nimage_channels: 1\n")
    rc = main(
        [
            "cache-latents",
            "--data",
            "folder",
            "--tokenizer-config",
            str(tok),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "DataConfig.path" in capsys.readouterr().err


def test_cli_model_dir_and_data_yaml(tmp_path):
    from mmar.model.config import tiny_config
    from mmar.pipelines.mmar import MMAR
    from mmar.tokenizers.config import ImageTokenizerConfig

    model = tmp_path / "model"  # a checkpoint: --model encodes with its own image tokenizer
    tok = ImageTokenizerConfig(kind="pixels", image_size=32, image_channels=3, patch_size=8)
    MMAR.from_config(tiny_config(image_tokenizer=tok), ["a red circle"]).save_pretrained(model)
    data = tmp_path / "data.yaml"
    data.write_text("name: shapes\nlength: 7\ntest_length: 3\n")
    out = tmp_path / "c"
    assert (
        main(
            [
                "cache-latents",
                "--data",
                str(data),
                "--model",
                str(model),
                "--out",
                str(out),
                "--splits",
                "train",
            ]
        )
        == 0
    )
    ds = LatentDataset(out, "train", flip="both")
    src = build_dataset(DataConfig(name="shapes", length=7), "train")
    assert len(ds) == 14 and torch.equal(ds[9]["latents"], src[2]["image"].flip(-1))
    assert ds[2]["text"] == src[2]["text"]


def test_cli_model_dir_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    rc = main(
        ["cache-latents", "--data", "mnist", "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert rc == 2 and "missing model.safetensors, backbone/, tokenizer/" in capsys.readouterr().err
