"""Built-in digits (MNIST-5k, scikit-learn digits), their captions and held-out split."""

import numpy as np
import pytest
import torch

from mmar.config import ConfigError
from mmar.data import DIGIT_TEMPLATES, DataConfig, build_dataset, collate, corpus, parse_digit
from mmar.data.captions import DIGIT_NAMES, digit_caption, template_index


def test_at_least_five_templates_and_parse_digit_round_trips_every_one():
    assert len(DIGIT_TEMPLATES) >= 5
    for d in range(10):
        for k in range(len(DIGIT_TEMPLATES)):
            text = digit_caption(d, k)
            assert parse_digit(text) == d, text
            assert parse_digit(text.upper() + "!!") == d


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Seven.", 7),
        ("the number 7, written by hand", 7),
        ("(3)", 3),
        ("a 77", 7),
        ("a seven or a 7", 7),
        ("a handwritten digit", None),
        ("seven and eight", None),
        ("12", None),
        ("someone wrote this", None),  # "one" only counts as a whole word
        ("", None),
    ],
)
def test_parse_digit_cases(text, expected):
    assert parse_digit(text) == expected


def test_digit_caption_raises_on_bad_label():
    with pytest.raises(ValueError, match="0..9"):
        digit_caption(10)


def test_mnist_items_shapes_range_and_sizes():
    train, test = build_dataset(DataConfig(), "train"), build_dataset(DataConfig(), "test")
    assert (len(train), len(test)) == (4000, 1000)
    item = train[123]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() == -1.0 and item["image"].max() <= 1.0
    assert parse_digit(item["text"]) == item["label"]
    # the 28 -> 32 padding leaves a 2-pixel black border
    assert torch.all(train.images[:, :, :2] == -1) and torch.all(train.images[:, :, :, -2:] == -1)
    assert torch.bincount(test.labels).tolist() == [100] * 10  # stratified


def test_mnist_resize_and_channels():
    ds = build_dataset(DataConfig(image_size=16, channels=3), "test")
    x = ds[0]["image"]
    assert x.shape == (3, 16, 16)
    assert torch.equal(x[0], x[2]) and x.min() >= -1 and x.max() <= 1


def test_heldout_split_disjoint_stable_and_independent_of_run_seed():
    a_tr, a_te = (build_dataset(DataConfig(seed=0), s).source_index for s in ("train", "test"))
    b_te = build_dataset(DataConfig(seed=5), "test").source_index
    assert len(np.intersect1d(a_tr, a_te)) == 0
    assert len(a_tr) + len(a_te) == 5000
    assert np.array_equal(a_te, b_te)


def test_same_item_twice_and_test_templates_fixed():
    ds = build_dataset(DataConfig(), "test")
    a, b = ds[17], ds[17]
    assert torch.equal(a["image"], b["image"]) and a["text"] == b["text"]
    ds.set_epoch(3)
    assert ds[17]["text"] == a["text"]  # test captions never depend on the epoch
    assert {template_index(i, "test") for i in range(len(DIGIT_TEMPLATES))} == set(
        range(len(DIGIT_TEMPLATES))
    )


def test_train_templates_vary_with_epoch_and_are_seeded():
    ds = build_dataset(DataConfig(), "train")
    epoch0 = [ds[i]["text"] for i in range(40)]
    assert len({t for t in epoch0}) > 5
    ds.set_epoch(1)
    epoch1 = [ds[i]["text"] for i in range(40)]
    assert epoch0 != epoch1
    ds.set_epoch(0)
    assert [ds[i]["text"] for i in range(40)] == epoch0


def test_sklearn_digits_upsampled():
    cfg = DataConfig(name="digits", image_size=16)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    item = test[5]
    assert item["image"].shape == (1, 16, 16)
    assert item["image"].min() >= -1 and item["image"].max() <= 1 and item["image"].max() > 0
    assert len(np.intersect1d(train.source_index, test.source_index)) == 0


def test_collate_batches_and_counts_none():
    ds = build_dataset(DataConfig(name="digits"), "test")
    batch = collate([ds[0], None, ds[1], None])
    assert batch["images"].shape == (2, 1, 32, 32)
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [ds[0]["label"], ds[1]["label"]]
    assert batch["texts"] == [ds[0]["text"], ds[1]["text"]] and batch["skipped"] == 2
    empty = collate([None])
    assert empty["texts"] == [] and empty["skipped"] == 1 and empty["images"].numel() == 0


def test_corpus_has_every_digit_caption():
    texts = corpus(DataConfig(name="digits"))
    assert len(texts) == 10 * len(DIGIT_TEMPLATES)
    assert all(any(name in t or str(d) in t for t in texts) for d, name in enumerate(DIGIT_NAMES))


def test_build_dataset_raises_on_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset(DataConfig(name="digits"), "val")


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"name": "folder"}, "DataConfig.path"),
        ({"name": "latents"}, "DataConfig.path"),
        ({"channels": 2}, "DataConfig.channels"),
        ({"name": "shapes", "channels": 1}, "DataConfig.channels"),
        ({"test_fraction": 1.0}, "DataConfig.test_fraction"),
        ({"image_size": 4}, "DataConfig.image_size"),
    ],
)
def test_data_config_raises(kw, field):
    with pytest.raises(ConfigError, match=field):
        DataConfig.from_dict(kw)


def test_data_config_unknown_name_raises():
    with pytest.raises(ConfigError, match="DataConfig.name"):
        DataConfig.from_dict({"name": "imagenet"})


def test_max_shift_translates_train_images_only():
    import torch

    from mmar.data import DataConfig, build_dataset

    plain = build_dataset(DataConfig(name="digits", image_size=16), "train")
    shifted = build_dataset(DataConfig(name="digits", image_size=16, max_shift=2), "train")
    test_shifted = build_dataset(DataConfig(name="digits", image_size=16, max_shift=2), "test")
    test_plain = build_dataset(DataConfig(name="digits", image_size=16), "test")
    assert torch.equal(test_shifted[3]["image"], test_plain[3]["image"])
    moved = 0
    for i in range(40):
        a, b = plain[i]["image"], shifted[i]["image"]
        assert torch.equal(shifted[i]["image"], b)  # deterministic per (seed, epoch, index)
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(torch.roll(a, (dy, dx), (1, 2))[:, 2:-2, 2:-2], b[:, 2:-2, 2:-2])
        ]
        assert found, f"item {i} is not a translation of the original by at most 2 px"
        moved += found[0] != (0, 0)
        assert b.min() >= -1 and b.max() <= 1
    assert moved > 20  # most items move
    shifted.set_epoch(1)
    assert any(
        not torch.equal(shifted[i]["image"], b)
        for i in range(10)
        for b in [
            build_dataset(DataConfig(name="digits", image_size=16, max_shift=2), "train")[i][
                "image"
            ]
        ]
    )


def test_max_shift_out_of_range_raises():
    import pytest

    from mmar.config import ConfigError
    from mmar.data import DataConfig

    with pytest.raises(ConfigError, match=r"DataConfig.max_shift: must be in \[0, image_size/2\)"):
        DataConfig(name="mnist", max_shift=16).validate()
