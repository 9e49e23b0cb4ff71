"""Procedural shapes: rendering, exact captions, and reading the specs back from pixels."""

import numpy as np
import pytest
import torch

from mmar.data import (
    DataConfig,
    ShapeSpec,
    build_dataset,
    caption_for,
    check_shapes,
    parse_shapes_caption,
    render_shapes,
)
from mmar.data.shapes import COLORS, POSITIONS, SHAPES


def test_palette_and_vocabulary_sizes():
    assert len(COLORS) >= 6 and set(SHAPES) == {"circle", "square", "triangle"}
    assert len(POSITIONS) == 4


def test_caption_and_parse_round_trip_every_single_and_a_pair():
    for c in COLORS:
        for s in SHAPES:
            for p in POSITIONS:
                spec = ShapeSpec(c, s, p)
                assert parse_shapes_caption(caption_for([spec])) == [spec]
    pair = [ShapeSpec("red", "circle", "top left"), ShapeSpec("blue", "square", "bottom right")]
    text = caption_for(pair)
    assert text == "a red circle in the top left and a blue square in the bottom right"
    assert parse_shapes_caption(text.upper().replace("top left", "top-left") + ".") == pair


@pytest.mark.parametrize(
    "text",
    [
        "a red circle",
        "a red hexagon in the top left",
        "",
        "a red circle in the top left and",
        "a red circle in the top left and a blue square in the top left",
    ],
)
def test_parse_shapes_caption_rejects(text):
    assert parse_shapes_caption(text) is None


def test_shape_spec_raises_naming_field():
    with pytest.raises(ValueError, match="ShapeSpec.color"):
        ShapeSpec("mauve", "circle", "top left")


def test_render_same_quadrant_raises():
    with pytest.raises(ValueError, match="same quadrant"):
        render_shapes([ShapeSpec("red", "circle", "top left")] * 2)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_checker_exact_on_every_clean_single_object(size):
    for c in COLORS:
        for s in SHAPES:
            for p in POSITIONS:
                spec = [ShapeSpec(c, s, p)]
                assert check_shapes(render_shapes(spec, size)) == spec


def test_checker_exact_on_hundreds_of_dataset_images_and_robust_to_noise():
    ds = build_dataset(DataConfig(name="shapes", two_objects=True, length=300), "train")
    g = torch.Generator().manual_seed(0)
    n_two = 0
    for i in range(len(ds)):
        item = ds[i]
        specs = parse_shapes_caption(item["text"])
        n_two += len(specs) == 2
        assert check_shapes(item["image"]) == specs, (i, item["text"])
        noisy = item["image"] + 0.1 * torch.randn(item["image"].shape, generator=g)
        assert check_shapes(noisy) == specs, (i, item["text"])
    assert 100 < n_two < 200  # two_objects: about half the images


def test_items_range_determinism_and_labels():
    ds = build_dataset(DataConfig(name="shapes", length=50), "train")
    a, b = ds[7], ds[7]
    assert a["image"].shape == (3, 32, 32) and a["image"].min() == -1 and a["image"].max() == 1
    assert torch.equal(a["image"], b["image"]) and a["text"] == b["text"]
    spec = parse_shapes_caption(a["text"])[0]
    assert a["label"] == spec.label and 0 <= a["label"] < 72
    with pytest.raises(IndexError):
        ds[50]


def test_splits_come_from_disjoint_streams_and_test_ignores_run_seed():
    def images(seed, split):
        ds = build_dataset(DataConfig(name="shapes", seed=seed, length=40, test_length=40), split)
        return torch.stack([ds[i]["image"] for i in range(40)])

    train0, test0 = images(0, "train"), images(0, "test")
    assert not torch.equal(train0, test0)
    assert not torch.equal(train0, images(1, "train"))
    assert torch.equal(test0, images(1, "test"))


def test_length_is_configurable_and_large():
    ds = build_dataset(DataConfig(name="shapes", length=10**9), "train")
    assert len(ds) == 10**9 and ds[10**9 - 1]["image"].shape == (3, 32, 32)


def test_captions_cover_dataset():
    ds = build_dataset(DataConfig(name="shapes", two_objects=True, length=100), "train")
    all_caps = set(ds.captions())
    assert len(all_caps) == 72 + 6 * 18 * 18
    assert all(ds[i]["text"] in all_caps for i in range(100))


def test_check_shapes_accepts_arrays_and_ignores_specks():
    spec = [ShapeSpec("yellow", "triangle", "bottom left")]
    arr = np.asarray(render_shapes(spec, 32)).copy()
    arr[1, 30] = 255  # an isolated bright pixel is noise, not an object
    assert check_shapes(arr) == spec
