"""KV-cached captioning: equals uncached greedy decoding; batch-invariant sampling; input handling
and errors."""

import pytest
import torch
from PIL import Image

from helpers_model import one_thread, random_images, tiny_model  # noqa: F401 (fixture)
from mmar.data.images import pil_to_tensor
from mmar.model.config import SamplingConfig
from mmar.model.sequence import pack_sequences

S = SamplingConfig(max_new_tokens=6)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_cached_greedy_equals_full_recompute(model):
    x = random_images(2, seed=4)
    ids = model.captioner.generate_ids(x, S)
    eos, net, proc = model.processor.special.eos, model.model, model.processor
    assert ids.shape[0] == 2 and 1 <= ids.shape[1] <= 6
    with torch.no_grad():
        for b in range(2):
            row = ids[b].tolist()
            for t in range(len(row)):
                if t and row[t - 1] == eos:
                    break
                # [bos][boi] img [eoi] y_<t [eos]: the logits before the eos slot predict y_t
                batch = pack_sequences([row[:t]], ["i2t"], 16, proc.special)
                h = net.hidden_states(batch, proc.encode_images(x[b : b + 1]))
                assert net.logits(h[0, -2]).argmax().item() == row[t]


def test_decodes_the_ids_up_to_eos(model):
    x = random_images(3)
    ids = model.captioner.generate_ids(x, S.replace(max_new_tokens=4))
    caps = model.caption(x, max_new_tokens=4)
    eos = model.processor.special.eos
    want = []
    for row in ids.tolist():
        row = row[: row.index(eos)] if eos in row else row
        want.append(model.processor.tokenizer.decode(row, skip_special_tokens=True).strip())
    assert caps == want and len(caps) == 3
    assert caps == model.caption(x, max_new_tokens=4)  # greedy: deterministic


def test_sampling_is_seeded_and_batch_invariant(model):
    x = random_images(4)
    s = S.replace(text_temperature=1.0, max_new_tokens=5)
    a = model.captioner.generate_ids(x, s, seed=0)
    assert torch.equal(a, model.captioner.generate_ids(x, s, seed=0))
    assert not torch.equal(a, model.captioner.generate_ids(x, s, seed=1))
    alone = model.captioner.generate_ids(x[2:3], s, seed=2)  # image 2 uses seed 0 + 2
    assert torch.equal(alone[0], a[2, : alone.shape[1]])
    chunked = model.captioner.generate_ids(x, s.replace(batch_size=3), seed=0)
    assert torch.equal(chunked[:, : a.shape[1]], a)


def test_pil_inputs_converted_and_resized(model):
    rgb_big = Image.new("RGB", (20, 13), (200, 10, 10))
    grey = Image.new("L", (8, 8), 128)
    caps = model.caption([rgb_big, grey], max_new_tokens=3)
    assert len(caps) == 2
    resized = model.processor.preprocess([rgb_big, grey])
    assert resized.shape == (2, 1, 8, 8)
    assert torch.equal(resized[1], torch.full((1, 8, 8), 128.0) / 127.5 - 1)
    # the caption of a PIL image is that of its converted tensor
    assert model.caption([grey], max_new_tokens=3) == model.caption(pil_to_tensor([grey], 1))


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (1, 1, 16, 16), (1, 8, 8)])
def test_wrong_tensor_shape_raises(model, shape):
    with pytest.raises(ValueError, match=r"expected images .*\(B, 1, 8, 8\).*got"):
        model.caption(torch.zeros(shape))


def test_empty_or_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="non-empty list"):
        model.caption([])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.caption(random_images(1), max_new_tokens=0)
