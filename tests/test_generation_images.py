"""Masked-AR text-to-image sampling: cache equivalence, seeding, output format, errors."""

import pytest
import torch
from helpers_model import tiny_model, one_thread  # noqa: F401 (fixture)

from mmar.generation.image_generation import generate_images, generate_tokens

KW = dict(num_iter=4, num_steps=3)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_cached_equals_uncached(model, cfg):
    prompts = ["a red circle at the top", "", "digit one"]  # different lengths: left padding
    a = generate_tokens(model, prompts, cfg=cfg, seed=3, **KW)
    b = generate_tokens(model, prompts, cfg=cfg, seed=3, use_cache=False, **KW)
    assert a.shape == (3, 16, 4)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert a.std() > 0.1  # the head (randomised) actually produced tokens


def test_tokens_depend_on_the_llm(model):
    # sanity for the test above: the condition z reaches the tokens
    a = generate_tokens(model, ["digit one"], cfg=1.0, seed=0, **KW)
    b = generate_tokens(model, ["a blue square"], cfg=1.0, seed=0, **KW)
    assert (a - b).abs().max() > 1e-3


def test_seeded_reproducible_and_seed_matters(model):
    a = generate_tokens(model, ["digit one"], seed=0, **KW)
    assert torch.equal(a, generate_tokens(model, ["digit one"], seed=0, **KW))
    assert not torch.equal(a, generate_tokens(model, ["digit one"], seed=1, **KW))


def test_returns_pil_of_right_size_and_mode(model):
    images = generate_images(model, ["digit one", "", "digit seven"], **KW)
    assert len(images) == 3
    assert all(im.size == (8, 8) and im.mode == "L" for im in images)
    assert model.generate_images([""], **KW)[0].size == (8, 8)  # empty prompt works


def test_rgb_images():
    from mmar.tokenizers.config import ImageTokenizerConfig

    rgb = tiny_model(image_tokenizer=ImageTokenizerConfig(kind="pixels", image_size=8,
                                                          image_channels=3, patch_size=2))
    images = rgb.generate_images(["digit one"], **KW)
    assert images[0].mode == "RGB" and images[0].size == (8, 8)


def test_batch_size_chunks(model):
    tokens = generate_tokens(model, ["a", "b", "c"], batch_size=2, **KW)
    assert tokens.shape == (3, 16, 4) and torch.isfinite(tokens).all()


@pytest.mark.parametrize("num_iter", [1, 16, 40])  # K = 1, K = N, K > N
def test_any_number_of_iterations(model, num_iter):
    tokens = generate_tokens(model, ["digit one"], num_iter=num_iter, num_steps=2)
    assert torch.isfinite(tokens).all()


def test_ddpm_sampler_and_temperature(model):
    a = generate_tokens(model, ["a"], sampler="ddpm", temperature=0.5, **KW)
    assert torch.isfinite(a).all()


def test_empty_prompt_list_raises(model):
    with pytest.raises(ValueError, match="prompts is empty"):
        generate_images(model, [], **KW)


def test_bad_sampler_raises(model):
    with pytest.raises(ValueError, match="sampler"):
        generate_images(model, ["a"], sampler="euler", **KW)
