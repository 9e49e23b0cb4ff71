"""The diffusers_vq image tokenizer (a VQModel whose latents are codebook rows) and
`mmar train-tokenizer --kind vq`."""

import json

import pytest
import torch

from helpers_vq import D, K, save_tiny_vq, vq_tokenizer_config
from mmar.config import ConfigError
from mmar.tokenizers import DiffusersVQTokenizer, ImageTokenizerConfig, build_image_tokenizer
from mmar.tokenizers.diffusers_vq import nearest_codes
from mmar.training.tokenizer_config import load_tokenizer_train_config
from mmar.training.tokenizer_trainer import METRICS_FILE, summary_line, train_tokenizer
from mmar.training.tokenizer_vq import codebook_usage

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    return save_tiny_vq(tmp_path_factory.mktemp("vq"))


@pytest.fixture(scope="module")
def tok(vq_dir):
    return build_image_tokenizer(vq_tokenizer_config(vq_dir))


def test_geometry_and_codebook_size_from_config_json_alone(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"block_out_channels": [8, 16, 16], "latent_channels": 3, "vq_embed_dim": 6,
                    "num_vq_embeddings": 512})
    )  # fmt: skip
    g = ImageTokenizerConfig(
        kind="diffusers_vq", path=str(tmp_path), image_size=32, image_channels=3
    ).geometry()
    assert (g.stride, g.channels, g.num_tokens, g.token_dim) == (4, 6, 64, 6)
    assert g.codebook_size == 512
    assert ImageTokenizerConfig(kind="pixels").geometry().codebook_size is None


def test_tokens_are_codebook_rows_and_codes_round_trip(tok):
    assert isinstance(tok, DiffusersVQTokenizer)
    assert (tok.channels, tok.stride, tok.codebook_size, tok.scale, tok.shift) == (D, 2, K, 1, 0)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = tok.encode(images)  # (3, D, 4, 4)
    codes = tok.codes(z)  # (3, 4, 4)
    assert z.shape == (3, D, 4, 4) and codes.shape == (3, 4, 4)
    assert torch.equal(tok.embed_codes(codes), z)  # exactly codebook rows
    # the codes are those of diffusers' own quantiser on the unquantised encoder output
    _, _, (_, _, ref) = tok.vq.quantize(tok.vq.encode(images).latents)
    assert torch.equal(codes.reshape(-1), ref.reshape(-1))
    # decode = the VQ decoder on z_q (no second quantisation changes it), clamped
    want = tok.vq.decode(z).sample.clamp(-1, 1)
    torch.testing.assert_close(tok.decode(z), want)


def test_nearest_codes_closed_form():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    x = torch.tensor([[0.1, 0.1], [0.9, -0.5], [0.0, 1.2], [0.0, 2.0]])
    assert nearest_codes(x, codebook).tolist() == [0, 1, 2, 2]


def test_codebook_usage_closed_form():
    u = codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert u["codes_used"] == 0.5 and u["code_perplexity"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"patch_size": 2}, "patch_size"),
        ({"scale": 2.0}, "scale"),
        ({"path": None}, "path"),
    ],
)
def test_bad_vq_tokenizer_config_raises(vq_dir, changes, field):
    with pytest.raises(ConfigError, match=rf"ImageTokenizerConfig\.{field}"):
        vq_tokenizer_config(vq_dir).replace(**changes).validate()


TINY = [
    "kind=vq",
    "data.name=shapes",
    "data.image_size=32",
    "vq.block_out_channels=[8,16]",
    "vq.norm_num_groups=4",
    "vq.num_vq_embeddings=32",
    "batch_size=8",
    "warmup_steps=2",
    "log_every=5",
    "eval_images=32",
    "device=cpu",
]


def test_vq_trains_on_shapes_and_loads_as_a_diffusers_vq_tokenizer(tmp_path):
    cfg = load_tokenizer_train_config(None, [*TINY, "steps=15"])
    summary = train_tokenizer(cfg, tmp_path / "vq")
    first, last = summary["history"][0], summary["history"][-1]
    assert last["step"] == 15 and last["mse"] < first["mse"], summary["history"]
    assert (summary["latent_shape"], summary["stride"]) == ([4, 16, 16], 2)
    assert (summary["scaling_factor"], summary["shift_factor"]) == (1.0, 0.0)
    ev = summary["eval"]
    assert ev["images"] == 32 and 0 < ev["codes_used"] <= 1 and ev["code_perplexity"] >= 1
    assert "codebook" in summary_line(summary)
    assert json.loads((tmp_path / "vq" / METRICS_FILE).read_text())["eval"] == ev

    tok = build_image_tokenizer(
        ImageTokenizerConfig(
            kind="diffusers_vq", path=str(tmp_path / "vq"), image_size=32, image_channels=3
        )
    )
    assert (tok.channels, tok.stride, tok.codebook_size) == (4, 2, 32)
    z = tok.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert torch.equal(tok.embed_codes(tok.codes(z)), z)


@pytest.mark.parametrize(
    "override, field",
    [("vq.num_vq_embeddings=1", "num_vq_embeddings"), ("vq.beta=-1", "beta"),
     ("vq.norm_num_groups=3", "norm_num_groups"), ("data.image_size=30", "image_size")],
)  # fmt: skip
def test_bad_vq_train_config_raises(override, field):
    extra = ["vq.block_out_channels=[8,16,16]"] if "image_size" in override else []
    with pytest.raises(ConfigError, match=field):
        load_tokenizer_train_config(None, [*TINY, *extra, override])


def test_cli_kind_vq(tmp_path, capsys):
    from mmar.cli import main

    sets = [t for t in TINY if not t.startswith("kind=")] + ["steps=2", "eval_images=8"]
    rc = main(["train-tokenizer", "--kind", "vq", "--set", *sets, "--out", str(tmp_path / "v")])
    assert rc == 0
    assert "vq tokenizer" in capsys.readouterr().out
    summary = json.loads((tmp_path / "v" / METRICS_FILE).read_text())
    assert summary["kind"] == "vq" and summary["config"]["kind"] == "vq"


def test_vq_same_seed_same_weights_and_the_global_rng_is_left_alone(tmp_path):
    from safetensors.torch import load_file

    state = torch.random.get_rng_state()
    cfg = load_tokenizer_train_config(None, [*TINY, "steps=2", "eval_images=8"])
    for name in ("a", "b"):
        train_tokenizer(cfg, tmp_path / name)
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b = (load_file(tmp_path / n / "diffusion_pytorch_model.safetensors") for n in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
