"""KV-cached captioning: equals uncached greedy decoding; input handling and errors."""

import pytest
import torch
from helpers_model import random_images, tiny_model, one_thread  # noqa: F401 (fixture)
from PIL import Image

from mmar.generation.captioning import caption, caption_ids, pil_to_tensor
from mmar.model.sequence import pack_sequences


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_cached_greedy_equals_full_recompute(model):
    x = random_images(2, seed=4)
    ids = caption_ids(model, x, max_new_tokens=6)
    eos = model.special.eos
    with torch.no_grad():
        for b in range(2):
            row = ids[b].tolist()
            for t in range(len(row)):
                if t and row[t - 1] == eos:
                    break
                # [bos][boi] img [eoi] y_<t [eos]: the logits before the eos slot predict y_t
                batch = pack_sequences([row[:t]], ["i2t"], 16, model.special)
                h, _ = model.backbone_hidden(model.embed(batch, model.image_tokens(x[b:b + 1])),
                                             batch.attention_mask, batch.position_ids)
                assert model.logits(h[0, -2]).argmax().item() == row[t]


def test_returns_strings_per_image(model):
    caps = caption(model, random_images(3), max_new_tokens=4)
    assert len(caps) == 3 and all(isinstance(c, str) for c in caps)
    assert model.caption(random_images(3), max_new_tokens=4) == caps


def test_sampling_is_seeded(model):
    x = random_images(2)
    a = caption_ids(model, x, max_new_tokens=5, temperature=1.0, seed=0)
    assert torch.equal(a, caption_ids(model, x, max_new_tokens=5, temperature=1.0, seed=0))


def test_pil_inputs_converted_and_resized(model):
    rgb_big = Image.new("RGB", (20, 13), (200, 10, 10))
    grey = Image.new("L", (8, 8), 128)
    caps = caption(model, [rgb_big, grey], max_new_tokens=3)
    assert len(caps) == 2
    t = pil_to_tensor([rgb_big], 1, 8)
    assert t.shape == (1, 1, 8, 8) and t.min() >= -1 and t.max() <= 1


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (1, 1, 16, 16), (1, 8, 8)])
def test_wrong_tensor_shape_raises(model, shape):
    with pytest.raises(ValueError, match=r"expected images .*\(B, 1, 8, 8\).*got"):
        caption(model, torch.zeros(shape))


def test_empty_or_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="non-empty list"):
        caption(model, [])
    with pytest.raises(ValueError, match="max_new_tokens"):
        caption(model, random_images(1), max_new_tokens=0)
