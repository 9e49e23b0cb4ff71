"""The "holes" measures: completion accuracy per given fraction (shapes and digits) and the image
loss per mask-ratio bucket, on tiny random models, with perfect / empty fakes as controls."""

import pytest
import torch

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.data import DataConfig, build_dataset
from mmar.data.scene_text import parse_scene_text
from mmar.evaluation.completion import completion_accuracy, kept_tokens, mask_ratio_losses
from mmar.evaluation.evaluate import eval_data_config, load_split
from mmar.model.config import MaskConfig, SamplingConfig
from mmar.tokenizers.config import ImageTokenizerConfig

S = SamplingConfig(num_iter=4, num_steps=3)
# the tiny models' vocabulary is a few words: the prompts' others are read as unknown
pytestmark = pytest.mark.filterwarnings("ignore:.*prompts lose words:UserWarning")
DIGITS = DataConfig(name="digits")


@pytest.fixture(scope="module")
def shapes_model():
    tok = ImageTokenizerConfig(kind="pixels", image_size=32, image_channels=3, patch_size=4)
    return tiny_model(image_tokenizer=tok)


@pytest.fixture(scope="module")
def digits_model():
    return tiny_model()  # 8 x 8 grey: the size of scikit-learn's digits


def describe(prompt):
    q = parse_scene_text(prompt)
    return q is not None and all(g.size and g.color for g in q.groups)


class NearestJudge:
    """A judge that reads an image as the label of the nearest real test digit: exact on the
    test images themselves (the control a perfect completion must pass)."""

    def __init__(self, model):
        split = load_split(eval_data_config(model, "digits"), "test")
        self.images, self.labels = split["images"].flatten(1), split["labels"]

    def predict(self, x):
        return self.labels[torch.cdist(x.flatten(1).float(), self.images).argmin(1)]


def fake_generation(monkeypatch, model, fill):
    """Make the model's sampler return ``fill(known)``: the tokens it was given everywhere (a
    perfect completion, since completion_accuracy passes the true tokens) or anything else."""
    calls = []

    def generate_tokens(prompts, sampling=None, seed=0, use_cache=True, known=None):
        calls.append((list(prompts), known.keep.clone()))
        return fill(known)

    monkeypatch.setattr(model.text_to_image, "generate_tokens", generate_tokens)
    return calls


# ---------------------------------------------------------------- kept positions
def test_kept_tokens_counts_nested_and_seeded():
    masks = {f: kept_tokens(5, 16, f, seed=3) for f in (0.0, 0.25, 0.5, 0.9)}
    for f, m in masks.items():
        assert m.shape == (5, 16) and m.sum(1).tolist() == [round(16 * f)] * 5
    assert bool((masks[0.25] <= masks[0.5]).all() and (masks[0.5] <= masks[0.9]).all())
    assert torch.equal(masks[0.5], kept_tokens(5, 16, 0.5, seed=3))
    assert not torch.equal(masks[0.5], kept_tokens(5, 16, 0.5, seed=4))
    assert torch.equal(masks[0.5][2], kept_tokens(1, 16, 0.5, seed=5)[0])  # image i: seed + i


@pytest.mark.parametrize("fractions", [(1.0,), (-0.1,), (), (0.5, 1.2), (float("nan"),)])
def test_bad_fractions_raise(shapes_model, fractions):
    with pytest.raises(ValueError, match=r"fractions: .* each in \[0, 1\)"):
        completion_accuracy(shapes_model, "shapes", fractions, n=1, sampling=S)


def test_bad_bench_and_n_raise(shapes_model, digits_model):
    with pytest.raises(ValueError, match="bench must be one of"):
        completion_accuracy(shapes_model, "cifar", n=1, sampling=S)
    with pytest.raises(ValueError, match="n must be >= 1"):
        completion_accuracy(shapes_model, "shapes", n=0, sampling=S)
    with pytest.raises(ValueError, match="shapes are coloured: use channels: 3"):
        completion_accuracy(digits_model, "shapes", n=1, sampling=S)


# ---------------------------------------------------------------- completion accuracy
def test_shapes_completion_random_model_in_range_and_deterministic(shapes_model):
    a = completion_accuracy(shapes_model, "shapes", (0, 0.5, 0.9), n=3, seed=1, sampling=S)
    assert list(a) == ["0.0", "0.5", "0.9"]
    assert all(0.0 <= v <= 1.0 for v in a.values())
    assert a == completion_accuracy(shapes_model, "shapes", (0, 0.5, 0.9), n=3, seed=1, sampling=S)


def test_shapes_perfect_completion_scores_one_and_empty_scores_zero(shapes_model, monkeypatch):
    calls = fake_generation(monkeypatch, shapes_model, lambda known: known.tokens)
    perfect = completion_accuracy(shapes_model, "shapes", (0, 0.9), n=4, seed=2, sampling=S)
    assert perfect == {"0.0": 1.0, "0.9": 1.0}
    (p0, keep0), (p9, keep9) = calls
    # the prompt is the scene's full description (every group's size and colour)
    assert p0 == p9 and all(describe(p) for p in p0)
    assert keep0.sum().item() == 0 and keep9.sum(1).tolist() == [round(0.9 * 64)] * 4
    # black everywhere not kept: no object at f = 0
    fake_generation(
        monkeypatch, shapes_model, lambda k: torch.where(k.keep[..., None], k.tokens, -1)
    )
    assert completion_accuracy(shapes_model, "shapes", (0,), n=4, seed=2, sampling=S) == {
        "0.0": 0.0
    }


def test_digits_completion_with_a_judge(digits_model, monkeypatch):
    judge = NearestJudge(digits_model)
    a = completion_accuracy(digits_model, "digits", (0, 0.9), n=4, seed=0, sampling=S, judge=judge)
    assert list(a) == ["0.0", "0.9"] and all(0.0 <= v <= 1.0 for v in a.values())
    b = completion_accuracy(digits_model, "digits", (0, 0.9), n=4, seed=0, sampling=S, judge=judge)
    assert a == b
    fake_generation(monkeypatch, digits_model, lambda known: known.tokens)
    perfect = completion_accuracy(digits_model, "digits", (0.9,), n=6, seed=0, judge=judge)
    assert perfect == {"0.9": 1.0}


# ---------------------------------------------------------------- loss per mask-ratio bucket
def test_mask_ratio_losses_finite_deterministic_batch_invariant(digits_model):
    cfg = digits_model.model.config
    a = mask_ratio_losses(digits_model, DIGITS, n=6, seed=0)
    assert list(a) == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert all(v == v and 0 < v < float("inf") for v in a.values())
    assert a == mask_ratio_losses(digits_model, DIGITS, n=6, seed=0)
    assert digits_model.model.config is cfg  # restored
    b = mask_ratio_losses(digits_model, DIGITS, n=6, seed=0, batch_size=4)
    assert b == pytest.approx(a, rel=1e-5)
    assert mask_ratio_losses(digits_model, DIGITS, n=6, seed=1) != a


def test_one_uniform_bucket_is_a_direct_forward(digits_model):
    got = mask_ratio_losses(digits_model, DIGITS, buckets=((0, 1),), n=5, seed=7)
    proc, net = digits_model.processor, digits_model.model
    data = DIGITS.replace(image_size=8, channels=1)
    ds = build_dataset(data, "test")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(7))[:5].tolist()
    items = [ds[i] for i in idx]
    images = torch.stack([it["image"] for it in items]).float()
    inputs = proc([it["text"] for it in items], ["t2i"] * 5, images=images)
    tokens = proc.encode_images(inputs.images)
    original = net.config
    net.config = original.replace(mask=MaskConfig(distribution="uniform", ratio_min=0, ratio_max=1))
    try:
        with torch.no_grad():
            out = net(
                inputs.batch,
                tokens,
                generator=[torch.Generator().manual_seed(7 + i) for i in range(5)],
            )
    finally:
        net.config = original
    assert got == {"0.0-1.0": pytest.approx(float(out["loss_diff"]), rel=1e-6)}


def test_mask_ratio_losses_transfusion_has_no_buckets(digits_model):
    net = digits_model.model
    original = net.config
    net.config = original.replace(image_head="transfusion")
    try:
        assert mask_ratio_losses(digits_model, DIGITS, n=2) == {}
    finally:
        net.config = original


@pytest.mark.parametrize("buckets", [(), ((0.5, 0.5),), ((0.2, 0.1),), ((0, 1.5),)])
def test_bad_buckets_raise(digits_model, buckets):
    with pytest.raises(ValueError, match=r"buckets: .* 0 <= lo < hi <= 1"):
        mask_ratio_losses(digits_model, DIGITS, buckets=buckets, n=2)
