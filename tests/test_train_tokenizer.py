"""`mmar train-tokenizer`: a KL autoencoder trained on mmar's data, loaded as a diffusers VAE."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmar.cli import main
from mmar.config import ConfigError
from mmar.tokenizers import ImageTokenizerConfig, build_image_tokenizer
from mmar.training.tokenizer_config import TokenizerTrainConfig, load_tokenizer_train_config
from mmar.training.tokenizer_trainer import CONFIG_FILE, METRICS_FILE, train_tokenizer

pytest.importorskip("diffusers")

# 16 px MNIST digits (repeated to RGB), a stride-2 VAE of ~44k parameters: seconds on one core
TINY = [
    "data.name=mnist",
    "data.image_size=16",
    "kl.block_out_channels=[8,16]",
    "kl.norm_num_groups=4",
    "batch_size=16",
    "warmup_steps=5",
    "lr=2e-3",
    "log_every=5",
    "eval_images=64",
    "scale_images=64",
    "device=cpu",
]
WEIGHTS = "diffusion_pytorch_model.safetensors"


def tiny(*overrides):
    return load_tokenizer_train_config(None, [*TINY, *overrides])


def test_reconstruction_loss_drops_and_the_output_loads_as_a_diffusers_tokenizer(tmp_path):
    out = tmp_path / "kl"
    summary = train_tokenizer(tiny("steps=40"), out)
    first, last = summary["history"][0], summary["history"][-1]
    assert (first["step"], last["step"]) == (1, 40)
    assert last["l1"] < 0.6 * first["l1"], summary["history"]
    assert summary["steps"] == 40 and summary["stopped"] == "steps"

    tok = build_image_tokenizer(
        ImageTokenizerConfig(kind="diffusers", path=str(out), image_size=16, image_channels=3)
    )
    assert (tok.channels, tok.stride, tok.latent_size) == (4, 2, 8)
    assert tok.scale == pytest.approx(summary["scaling_factor"])
    assert tok.shift == pytest.approx(summary["shift_factor"])
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    latents = tok.encode(images)
    assert latents.shape == (5, 4, 8, 8)
    assert tok.decode(latents).shape == (5, 3, 16, 16)
    # scale and shift were measured on training images: held-out latents are ~N(0, 1) overall
    ev = summary["eval"]
    assert ev["split"] == "test" and ev["images"] == 64
    assert abs(ev["latent_mean"]) < 0.3 and 0.7 < ev["latent_std"] < 1.4
    assert ev["psnr"] == pytest.approx(10 * np.log10(4 / ev["mse"]))

    saved = json.loads((out / METRICS_FILE).read_text())
    assert saved["eval"] == ev and saved["config"] == tiny("steps=40").to_dict()
    assert load_tokenizer_train_config(out / CONFIG_FILE) == tiny("steps=40")


def test_same_seed_same_weights_and_the_global_rng_is_left_alone(tmp_path):
    state = torch.random.get_rng_state()
    for name in ("a", "b"):
        train_tokenizer(tiny("steps=3", "log_every=1"), tmp_path / name)
    assert torch.equal(torch.random.get_rng_state(), state)
    train_tokenizer(tiny("steps=3", "seed=1"), tmp_path / "c")
    a, b, c = (load_file(tmp_path / n / WEIGHTS) for n in "abc")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    ma, mb = (json.loads((tmp_path / n / METRICS_FILE).read_text()) for n in "ab")
    assert [h["loss"] for h in ma["history"]] == [h["loss"] for h in mb["history"]]


@pytest.mark.parametrize(
    "override, field",
    [
        ("kind=rq", "kind"),
        ("kl.block_out_channels=[]", "block_out_channels"),
        ("kl.norm_num_groups=3", "norm_num_groups"),  # does not divide 8 and 16
        ("kl.latent_channels=0", "latent_channels"),
        ("kl.kl_weight=-1e-6", "kl_weight"),
        ("loss={l1: 0, l2: 0}", "ReconstructionLoss"),  # no reconstruction term
        ("loss.l2=-1", "l2"),
        ("lr=0", "lr"),
        ("batch_size=0", "batch_size"),
        ("minutes=0", "minutes"),
        ("steps=0", "steps"),
        ("seed=-1", "seed"),
        ("data.channels=1", "data.channels"),
        ("data.name=latents", "data.name"),  # with a path below
        ("data.image_size=18", "data.image_size"),  # with stride 4 below
        ("no_such_field=1", "no_such_field"),
    ],
)
def test_bad_config_value_raises(override, field):
    extra = ["kl.block_out_channels=[8,16,16]"] if "image_size" in override else []
    extra += ["data.path=cache/mnist"] if "latents" in override else []
    with pytest.raises(ConfigError, match=field):
        tiny(*extra, override)


def test_no_budget_at_all_raises():
    with pytest.raises(ConfigError, match="steps and minutes are both null"):
        tiny("steps=null")


def test_bad_data_path_raises_before_writing_anything(tmp_path):
    cfg = tiny("data.name=folder", f"data.path={tmp_path / 'missing'}", "steps=2")
    with pytest.raises(FileNotFoundError, match="missing"):
        train_tokenizer(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_out_with_a_model_already_raises(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a model"):
        train_tokenizer(tiny("steps=1"), tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA has the device")
def test_missing_device_raises(tmp_path):
    with pytest.raises(ConfigError, match="TokenizerTrainConfig.device"):
        train_tokenizer(tiny("steps=1", "device=cuda"), tmp_path / "out")


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        arr = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"{i:02d}.png")
        (root / f"{i:02d}.txt").write_text("noise")
    (root / "broken.png").write_bytes(b"not a png")
    (root / "broken.txt").write_text("noise")
    cfg = tiny(
        "data.name=folder",
        f"data.path={root}",
        "data.test_fraction=0",  # no held-out split: measured on training images, said so
        "data.max_unreadable_share=0.5",
        "batch_size=4",
        "steps=6",
    )
    summary = train_tokenizer(cfg, tmp_path / "out")
    assert summary["skipped"] == 1
    assert summary["eval"]["split"] == "train"
    listed = (tmp_path / "out" / "skipped.jsonl").read_text()
    assert "broken.png" in listed


def test_cli_end_to_end_with_config_file_and_minutes_budget(tmp_path, capsys):
    config = tmp_path / "tok.yaml"
    TokenizerTrainConfig.from_dict(
        {"data": {"name": "mnist", "image_size": 16, "channels": 3}, "steps": 1000}
    ).to_yaml(config)
    sets = [s for s in TINY if not s.startswith("data.name")]
    out = tmp_path / "kl"
    args = ["--config", str(config), "--set", *sets, "steps=null", "minutes=0.001"]
    rc = main(["train-tokenizer", *args, "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / METRICS_FILE).read_text())
    assert summary["stopped"] == "minutes" and summary["minutes"] >= 0.001
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"kl tokenizer, 8x8x4 latents (stride 2): {summary['steps']} steps")
    assert f"held-out PSNR {summary['eval']['psnr']:.2f} dB" in line
    assert (out / WEIGHTS).is_file()

    # a bad value: one line naming the field, exit status 2, nothing trained
    rc = main(["train-tokenizer", "--set", "kl.latent_channels=0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "latent_channels" in err and len(err.strip().splitlines()) == 1
