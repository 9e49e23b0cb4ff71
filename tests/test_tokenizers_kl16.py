"""KL-16: MAR's state-dict layout loads strictly, bad checkpoints are refused by key and file."""

import pytest
import torch

from mmar.tokenizers import KL16_SCALE, ImageTokenizerConfig, KL16Tokenizer, build_image_tokenizer


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory):
    """Random weights of the released architecture (ch 128), saved as MAR saves kl16.ckpt."""
    model = KL16Tokenizer(image_size=32)
    path = tmp_path_factory.mktemp("kl16") / "kl16.ckpt"
    torch.save({"model": model.state_dict()}, path)
    return path, model.state_dict()


def test_real_layout_has_mar_keys(real_ckpt):
    _, sd = real_ckpt
    assert sum(v.numel() for v in sd.values()) == 66_456_019  # MAR's AutoencoderKL(16, (1,1,2,2,4))
    for key, shape in {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down.0.block.0.norm1.weight": (128,),
        "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.3.downsample.conv.weight": (256, 256, 3, 3),
        "encoder.down.4.attn.1.proj_out.weight": (512, 512, 1, 1),  # attention at res 16
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.conv_out.weight": (32, 512, 3, 3),  # double_z
        "quant_conv.weight": (32, 32, 1, 1),
        "post_quant_conv.weight": (16, 16, 1, 1),
        "decoder.conv_in.weight": (512, 16, 3, 3),
        "decoder.up.4.block.2.conv2.weight": (512, 512, 3, 3),  # 3 blocks per decoder level
        "decoder.up.1.upsample.conv.weight": (128, 128, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(
        k.startswith("encoder.down.3.attn") or (".up." in k and ".attn." in k) for k in sd
    )
    assert (
        "decoder.up.0.upsample.conv.weight" not in sd
        and "encoder.down.4.downsample.conv.weight" not in sd
    )


def test_load_mar_checkpoint_and_roundtrip_shapes(real_ckpt, generator):
    path, sd = real_ckpt
    tok = build_image_tokenizer(
        ImageTokenizerConfig(kind="kl16", image_size=32, image_channels=3, path=str(path))
    )
    assert torch.equal(tok.state_dict()["decoder.conv_out.weight"], sd["decoder.conv_out.weight"])
    assert tok.scale == KL16_SCALE and (tok.channels, tok.stride) == (16, 16)
    x = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        z = tok.encode(x)
        raw = tok.quant_conv(tok.encoder(x))[:, :16]  # posterior mean
        assert z.shape == (2, 16, 2, 2)
        assert torch.allclose(z, KL16_SCALE * raw, atol=1e-6)
        y = tok.decode(z)
    assert y.shape == (2, 3, 32, 32) and y.abs().max() <= 1


def test_load_bare_state_dict(real_ckpt, tmp_path):
    _, _sd = real_ckpt
    small = KL16Tokenizer(image_size=32, _width=32)
    torch.save(small.state_dict(), tmp_path / "bare.pt")
    loaded = KL16Tokenizer(str(tmp_path / "bare.pt"), image_size=32, _width=32)
    assert torch.equal(loaded.quant_conv.weight, small.quant_conv.weight)


def test_load_raises_on_missing_key(tmp_path):
    sd = KL16Tokenizer(image_size=32, _width=32).state_dict()
    del sd["encoder.mid.attn_1.k.bias"]
    path = tmp_path / "missing.ckpt"
    torch.save({"model": sd}, path)
    with pytest.raises(
        ValueError, match=r"missing.ckpt.*missing keys \['encoder.mid.attn_1.k.bias'\]"
    ):
        KL16Tokenizer(str(path), image_size=32, _width=32)


def test_load_raises_on_unexpected_key(tmp_path):
    sd = KL16Tokenizer(image_size=32, _width=32).state_dict()
    sd["decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.ckpt"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"extra.ckpt.*unexpected keys \['decoder.extra.weight'\]"):
        KL16Tokenizer(str(path), image_size=32, _width=32)


def test_load_ignores_ldm_training_loss_weights(tmp_path):
    """LDM checkpoints may store their LPIPS/discriminator under "loss."; only those are dropped."""
    src = KL16Tokenizer(image_size=32, _width=32)
    sd = dict(src.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(2, 3)
    path = tmp_path / "with_loss.ckpt"
    torch.save({"model": sd}, path)
    tok = KL16Tokenizer(str(path), image_size=32, _width=32)
    assert "loss.discriminator.main.0.weight" not in tok.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(tok.state_dict()[k], v), k


def test_load_raises_on_wrong_width(real_ckpt):
    path, _ = real_ckpt
    with pytest.raises(
        ValueError,
        match=r"kl16.ckpt.*size mismatch .*'encoder.conv_in.weight: "
        r"\(128, 3, 3, 3\) vs \(32, 3, 3, 3\)'",
    ):
        KL16Tokenizer(str(path), image_size=32, _width=32)


def test_load_raises_on_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt does not exist"):
        KL16Tokenizer(str(tmp_path / "nope.ckpt"))


def test_narrow_forward_at_256_gives_256_tokens(generator):
    from mmar.tokenizers import patchify

    torch.manual_seed(0)
    tok = KL16Tokenizer(image_size=256, _width=32)
    x = torch.rand(1, 3, 256, 256, generator=generator) * 2 - 1
    with torch.no_grad():
        z = tok.encode(x)
    assert z.shape == (1, 16, 16, 16)
    assert patchify(z, 1).shape == (1, 256, 16) and patchify(z, 4).shape == (1, 16, 256)
