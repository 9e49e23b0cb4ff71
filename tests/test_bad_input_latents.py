"""Bad input around latent caches and the KL-16 tokenizer (issue 9): a cache is checked against
the model before any work starts, a random-init KL-16 is the same VAE in `cache-latents` and
in the trainer, the README's `cache-latents` command works on WebDataset shards, and damaged
cache files are refused with one line naming the file (fuzzed)."""

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import mmar.cli.cache_latents as cache_latents_cli
from mmar.cli import main
from mmar.config import ConfigError
from mmar.data.latents import LatentDataset
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer

PIXELS_8 = {"kind": "pixels", "image_size": 8, "image_channels": 1}  # the tiny preset's


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


@pytest.fixture(scope="module")
def pixel_cache(tmp_path_factory):
    """A cache that fits the tiny preset (8 px grey pixels; patch_size 1, the model's is 2)."""
    return cache(tmp_path_factory.mktemp("pixels") / "c", PIXELS_8)


# --- item 3: a cache is checked against the model -----------------------------------------------
def test_cache_of_another_image_size_raises(tmp_path, capsys):
    c = cache(tmp_path / "c16", {**PIXELS_8, "image_size": 16})
    with pytest.raises(ConfigError, match=r"c16/manifest.json.*image_size: cache 16, model 8"):
        tiny_on(c)
    # through the CLI: one line, before anything is written
    capsys.readouterr()
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--out", str(out)]
    rc = main([*argv, "--set", "data.name=latents", f"data.path={c}", "train.progress=false"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "latent_size: cache 16, model 8" in err
    assert not out.exists()


def test_cache_of_another_scale_raises_before_work(tmp_path):
    c = cache(tmp_path / "c", {**PIXELS_8, "scale": 2.0})  # same shapes, other latents
    with pytest.raises(ConfigError, match=r"c/manifest.json.*scale: cache 2(\.0)?, model 1(\.0)?"):
        tiny_on(c, "model.image_tokenizer.scale=1.0")
    cfg = tiny_on(c)  # scale: null, the pixels' default 1.0, known once the tokenizer is built
    with pytest.raises(ConfigError, match=r"c/manifest.json.*scale: cache 2(\.0)?, model 1(\.0)?"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cache_of_a_random_kl16_of_another_seed_raises(tmp_path):
    kl16 = {"kind": "kl16", "image_size": 16, "image_channels": 3}
    data = {"name": "shapes", "image_size": 16, "length": 2, "test_length": 1}
    c = cache(tmp_path / "c", kl16, data)
    tok = "model.image_tokenizer={kind: kl16, image_size: 16, image_channels: 3, seed: 1}"
    with pytest.raises(ConfigError, match=r"c/manifest.json.*seed: cache 0, model 1"):
        tiny_on(c, tok)


def save_tiny_vae(directory: Path, seed: int) -> None:
    """A random diffusers AutoencoderKL (stride 2, 4 latent channels) whose weights depend on
    ``seed``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)  # diffusers' init draws from the global RNG
    AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).save_pretrained(str(directory))


def test_cache_of_other_vae_weights_raises_naming_both(tmp_path):
    save_tiny_vae(tmp_path / "vae_a", 0)
    save_tiny_vae(tmp_path / "vae_b", 1)  # the same config: only the weights differ
    vae = {"kind": "diffusers", "image_size": 16, "image_channels": 3}
    data = {"name": "shapes", "image_size": 16, "length": 3, "test_length": 1}
    c = cache(tmp_path / "c", {**vae, "path": str(tmp_path / "vae_a")}, data)
    recorded = json.loads((c / "manifest.json").read_text())["weights_sha256"]

    def model_tok(path):
        return f"model.image_tokenizer={json.dumps({**vae, 'path': str(path), 'patch_size': 4})}"

    with pytest.raises(ConfigError, match=rf"weights_sha256: cache {recorded[:16]}\S*, model"):
        Trainer(tiny_on(c, model_tok(tmp_path / "vae_b")), tmp_path / "run_b")
    assert not (tmp_path / "run_b").exists()
    cfg = tiny_on(c, model_tok(tmp_path / "vae_a"), "train.batch_size=2")  # its own VAE: fits
    assert Trainer(cfg, tmp_path / "run_a").step == 0


def test_cache_without_the_record_raises(tmp_path, pixel_cache):
    old = tmp_path / "old"
    shutil.copytree(pixel_cache, old)
    m = json.loads((old / "manifest.json").read_text())
    for key in ("geometry", "shift", "weights_sha256"):  # what version 1 did not record
        m.pop(key)
    m["version"] = 1
    (old / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"old/manifest.json.*version 1.*mmar cache-latents"):
        tiny_on(old)
    with pytest.raises(ConfigError, match=r"old/manifest.json.*version 1.*mmar cache-latents"):
        LatentDataset(old)


def test_cache_of_another_patch_size_trains(tmp_path, pixel_cache):
    """Latents are cached before patchify: a p = 1 cache serves the p = 2 model."""
    summary = Trainer(tiny_on(pixel_cache, "train.steps=1"), tmp_path / "run").fit()
    assert summary["step"] == 1


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


# --- the README's cache-latents command on WebDataset shards ------------------------------------
def write_shard(path: Path, n: int) -> None:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((12, 12, 3), 20 * i, dtype=np.uint8)).save(buf, format="PNG")
            sink.write({"__key__": f"{i:04d}", "png": buf.getvalue(), "txt": f"grey {i}"})


def test_cache_latents_webdataset_without_splits(tmp_path, capsys):
    write_shard(tmp_path / "train.tar", 3)
    tok = tmp_path / "tok.yaml"
    tok.write_text("{kind: pixels, image_size: 8, image_channels: 3}\n")
    data = tmp_path / "data.yaml"
    data.write_text(f"{{name: webdataset, path: {tmp_path / 'train.tar'}, image_size: 8}}\n")
    argv = ["cache-latents", "--data", str(data), "--tokenizer-config", str(tok)]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0  # the README's command
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["splits"].keys() == {"train"}
    write_shard(tmp_path / "test.tar", 2)  # with held-out shards, both splits
    data.write_text(
        f"{{name: webdataset, path: {tmp_path / 'train.tar'}, "
        f"test_path: {tmp_path / 'test.tar'}, image_size: 8}}\n"
    )
    assert main([*argv, "--out", str(tmp_path / "c2")]) == 0
    splits = json.loads((tmp_path / "c2" / "manifest.json").read_text())["splits"]
    assert (splits["train"]["count"], splits["test"]["count"]) == (3, 2)
    data.write_text(f"{{name: webdataset, path: {tmp_path / 'train.tar'}, image_size: 8}}\n")
    assert main([*argv, "--out", str(tmp_path / "c3"), "--splits", "train,test"]) == 2
    assert "test_path" in capsys.readouterr().err  # asked for explicitly: refused by name


# --- damaged cache files: refused with one line naming the file --------------------------------
@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """Two shards (4 + 2 latents and flips) and the captions of 6 coloured shapes."""
    data = {"name": "shapes", "image_size": 16, "length": 6, "test_length": 1}
    tok = {"kind": "pixels", "image_size": 16, "image_channels": 3}
    args = ("--batch-size", "2", "--shard-size", "4")
    return cache(tmp_path_factory.mktemp("small") / "c", tok, data, *args)


@pytest.fixture(scope="module")
def pristine(small_cache):
    return LatentDataset(small_cache, "train", flip="both")


FILES = ["manifest.json", "train/shard-00000.safetensors", "train/shard-00001.safetensors"]
FILES += ["train/captions.jsonl"]


def damage(data: bytes, how: str, where: float, junk: bytes) -> bytes:
    """data truncated, cut to nothing, overwritten with junk at a point, or replaced by junk."""
    at = int(where * len(data))
    if how == "truncate":
        return data[:at]
    if how == "overwrite":
        return data[:at] + junk + data[at + len(junk) :]
    return {"empty": b"", "replace": junk}[how]


def check_refused_or_intact(root: Path, pristine: LatentDataset, name: str) -> str:
    """Load the cache at root: a damaged file must be refused by a LatentCacheError (a
    ConfigError) of one line naming the file, or the data must be exactly the pristine data."""
    try:
        ds = LatentDataset(root, "train", flip="both")
    except (ConfigError, FileNotFoundError) as e:
        msg = str(e)
        assert "\n" not in msg and Path(name).name in msg, msg
        return "refused"
    assert torch.equal(ds.latents, pristine.latents) and ds.texts == pristine.texts
    assert torch.equal(ds.flipped, pristine.flipped) and torch.equal(ds.labels, pristine.labels)
    return "intact"


@settings(max_examples=240, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(FILES),
    how=st.sampled_from(["truncate", "overwrite", "empty", "replace"]),
    where=st.floats(0.0, 1.0),
    junk=st.binary(min_size=1, max_size=64),
)
def test_fuzz_damaged_cache_files_are_refused_by_name(
    small_cache, pristine, name, how, where, junk
):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "c"
        shutil.copytree(small_cache, root)
        original = (root / name).read_bytes()
        damaged = damage(original, how, where, junk)
        (root / name).write_bytes(damaged)
        outcome = check_refused_or_intact(root, pristine, name)
        if damaged != original and name != "manifest.json":
            assert outcome == "refused"  # a shard or caption byte changed: never loaded


def test_damaged_shard_stops_train_with_one_line(tmp_path, pixel_cache, capsys):
    c = tmp_path / "c"
    shutil.copytree(pixel_cache, c)
    shard = c / "train" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF  # one bit pattern inside the tensor bytes: a valid file with other values
    shard.write_bytes(bytes(data))
    argv = ["train", "--config", "tiny", "--out", str(tmp_path / "run")]
    rc = main([*argv, "--set", "data.name=latents", f"data.path={c}", "train.progress=false"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and "shard-00000.safetensors" in err and "sha256" in err


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = ["format", "version", "tokenizer", "geometry", "scale", "shift", "weights_sha256"]
FIELDS += ["latent_shape", "splits", "tokenizer.image_size", "geometry.channels"]
FIELDS += [f"splits.train.{k}" for k in ("count", "skipped", "flip", "shards", "captions")]
FIELDS += ["splits.train.sha256", "splits.train.sha256.captions.jsonl"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(field=st.sampled_from(FIELDS), value=JSON, delete=st.booleans())
def test_fuzz_manifest_fields_of_any_value_are_refused_by_name(
    small_cache, pristine, field, value, delete
):
    """A manifest that is valid JSON with any value (or none) in a field: the cache is refused
    with one line naming a file, or loads the same data; the fit check refuses or passes."""
    from mmar.data.latent_manifest import check_fits
    from mmar.tokenizers.config import ImageTokenizerConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "c"
        shutil.copytree(small_cache, root)
        manifest = json.loads((root / "manifest.json").read_text())
        *parents, leaf = field.split(".", 3) if "sha256." in field else field.split(".")
        node = manifest
        for p in parents:
            node = node[p]
        if delete:
            node.pop(leaf)
        else:
            node[leaf] = value
        (root / "manifest.json").write_text(json.dumps(manifest))
        names = ["manifest.json", *FILES]
        try:
            ds = LatentDataset(root, "train", flip="both")
        except (ConfigError, FileNotFoundError) as e:
            assert "\n" not in str(e) and any(Path(n).name in str(e) for n in names), str(e)
            return
        assert torch.equal(ds.latents, pristine.latents) and ds.texts == pristine.texts
        tok = ImageTokenizerConfig(kind="pixels", image_size=16, image_channels=3)
        try:
            check_fits(ds.manifest, ds.manifest_path, tok)
        except ConfigError as e:
            assert "\n" not in str(e) and "manifest.json" in str(e)
