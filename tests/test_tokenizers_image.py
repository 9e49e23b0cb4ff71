"""Contract every ImageTokenizer passes (pixels, KL-16 narrow random, tiny diffusers VAE)."""

import pytest
import torch

from mmar.tokenizers import (
    DiffusersVAETokenizer,
    ImageTokenizerConfig,
    KL16Tokenizer,
    PixelTokenizer,
    build_image_tokenizer,
    patchify,
    unpatchify,
)


def save_tiny_vae(directory, scaling_factor=0.5, shift_factor=0.1):
    """A random diffusers AutoencoderKL with stride 2 and 4 latent channels, saved to directory."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)  # diffusers' own init draws from the global RNG; fixed for the test
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    )
    vae.save_pretrained(str(directory))
    return vae


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_vae")
    save_tiny_vae(d)
    return d


def _make(kind, tiny_vae_dir):
    if kind == "pixels":
        return build_image_tokenizer(ImageTokenizerConfig(image_size=8, image_channels=1))
    if kind == "kl16":
        return KL16Tokenizer(image_size=32, _width=32).eval()
    return build_image_tokenizer(
        ImageTokenizerConfig(
            kind="diffusers", image_size=16, image_channels=3, path=str(tiny_vae_dir)
        )
    )


@pytest.mark.parametrize("kind", ["pixels", "kl16", "diffusers"])
def test_image_tokenizer_contract(kind, tiny_vae_dir, generator):
    tok = _make(kind, tiny_vae_dir)
    s, c_img = tok.image_size, tok.image_channels
    images = torch.rand(2, c_img, s, s, generator=generator) * 2 - 1
    with torch.no_grad():
        latents = tok.encode(images)
        assert latents.shape == (2, tok.channels, s // tok.stride, s // tok.stride)
        assert tok.latent_size == s // tok.stride
        decoded = tok.decode(latents * 50)  # far outside the data range: must still clamp
    assert decoded.shape == images.shape
    assert decoded.min() >= -1 and decoded.max() <= 1
    assert isinstance(tok.scale, float) and tok.scale > 0

    for p in (1, 2):
        tokens = patchify(latents, p)
        h = latents.shape[-1]
        assert tokens.shape == (2, (h // p) ** 2, tok.channels * p * p)
        assert torch.equal(unpatchify(tokens, p, h, h), latents)

    with pytest.raises(ValueError, match=rf"expected .*\(B, {c_img}, {s}, {s}\).*data pipeline"):
        tok.check_images(torch.zeros(1, c_img + 1, s, s))
    with pytest.raises(ValueError, match=rf"got \(1, {c_img}, {2 * s}, {2 * s}\)"):
        tok.encode(torch.zeros(1, c_img, 2 * s, 2 * s))
    with pytest.raises(ValueError, match=f"C = {tok.channels}"):
        tok.decode(torch.zeros(1, tok.channels + 1, 2, 2))


def test_pixel_tokenizer_is_identity_times_scale(generator):
    tok = PixelTokenizer(image_channels=3, image_size=4, scale=2.0)
    x = torch.rand(2, 3, 4, 4, generator=generator) * 2 - 1
    assert torch.equal(tok.encode(x), 2.0 * x)
    assert torch.allclose(tok.decode(tok.encode(x)), x)
    assert PixelTokenizer().scale == 1.0 and PixelTokenizer().stride == 1


def test_diffusers_wrapper_applies_shift_and_scale(tiny_vae_dir, generator):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(tiny_vae_dir))
    tok = DiffusersVAETokenizer(tiny_vae_dir, image_size=16)
    assert (tok.scale, tok.shift, tok.channels, tok.stride) == (0.5, 0.1, 4, 2)
    x = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert torch.allclose(tok.encode(x), (z - 0.1) * 0.5, atol=1e-6)
        expected = vae.decode(z).sample.clamp(-1, 1)
        assert torch.allclose(tok.decode((z - 0.1) * 0.5), expected, atol=1e-5)
    override = DiffusersVAETokenizer(tiny_vae_dir, image_size=16, scale=2.0)
    assert override.scale == 2.0


@pytest.mark.parametrize("kind", ["kl16", "diffusers"])
def test_posterior_sample_uses_generator(kind, tiny_vae_dir):
    tok = _make(kind, tiny_vae_dir)
    tok.posterior = "sample"
    x = torch.zeros(1, 3, tok.image_size, tok.image_size)
    with torch.no_grad():
        a = tok.encode(x, generator=torch.Generator().manual_seed(1))
        b = tok.encode(x, generator=torch.Generator().manual_seed(1))
        c = tok.encode(x, generator=torch.Generator().manual_seed(2))
        tok.posterior = "mode"
        m = tok.encode(x)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, m)


def test_posterior_sample_raises_without_generator():
    tok = KL16Tokenizer(image_size=16, posterior="sample", _width=32)
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        tok.encode(torch.zeros(1, 3, 16, 16))


def test_build_freezes_vaes(tiny_vae_dir):
    tok = _make("diffusers", tiny_vae_dir)
    assert not tok.training and not any(p.requires_grad for p in tok.parameters())
