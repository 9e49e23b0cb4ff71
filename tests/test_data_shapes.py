"""The shapes dataset: items, determinism, held-out compositions, tokenizer words, benchmark
prompt sets and the export to PNG + JSONL."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from mmar.config import ConfigError
from mmar.data import DataConfig, build_dataset, corpus, parse_scene_text
from mmar.data.scene import (
    COLORS,
    HELDOUT_PAIRS,
    INVERSE,
    SHAPES,
    heldout_violations,
    is_heldout_triple,
)
from mmar.data.scene_text import REL_ANSWERS, question_kind
from mmar.data.shapes import (
    CATEGORIES,
    HELDOUT_CATEGORIES,
    ShapesDataset,
    benchmark_prompts,
    category_queries,
    export_split,
    main,
)
from mmar.evaluation.check_scene import caption_matches, matches


def shapes(split="train", **kw):
    return build_dataset(DataConfig(name="shapes", **kw), split)


def test_item_fields_and_range():
    item = shapes(length=20)[7]
    assert set(item) == {"image", "text", "prompt", "qa", "label", "key"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() == -1 and item["image"].max() == 1
    assert item["label"] == -1 and item["key"] == 7
    assert all(len(qa) == 2 and question_kind(qa[0]) for qa in item["qa"])
    with pytest.raises(IndexError):
        shapes(length=20)[20]


def test_texts_describe_the_image():
    ds = shapes(length=200)
    for i in range(200):
        scene, texts = ds.scene(i), ds.texts(i)
        assert caption_matches(texts["text"], scene), (i, texts["text"])
        assert matches(parse_scene_text(texts["prompt"]), scene.objects), (i, texts["prompt"])


def test_deterministic_from_seed_and_index_and_test_ignores_seed():
    def items(seed, split):
        ds = shapes(split, seed=seed, length=30, test_length=30)
        return [ds[i] for i in range(30)]

    a, b = items(0, "train"), items(0, "train")
    assert all(torch.equal(x["image"], y["image"]) and x["qa"] == y["qa"] for x, y in zip(a, b))
    assert [x["text"] for x in a] == [y["text"] for y in b]
    other = items(1, "train")
    assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(a, other))
    test0, test1 = items(0, "test"), items(1, "test")
    assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(a, test0))
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(test0, test1))
    # an item does not depend on the split's length
    assert shapes(length=10**9)[5]["text"] == a[5]["text"]


def test_max_objects_and_image_size():
    ds = shapes(length=100, max_objects=2, image_size=64)
    assert ds[0]["image"].shape == (3, 64, 64)
    assert {len(ds.scene(i).objects) for i in range(100)} == {1, 2}


def held_out_facts(text):
    """The held-out (colour, shape) pairs and relation triples a text or Q/A states."""
    out = [f"{c} {s}" for c, s in HELDOUT_PAIRS if re.search(rf"\b{c} {s}", text)]
    q = parse_scene_text(text)
    if q is not None and q.relation is not None:
        a, b = q.groups
        if is_heldout_triple(a.shape, q.relation, b.shape):
            out.append(text)
    return out


def test_heldout_compositions_absent_from_5000_training_items():
    assert held_out_facts("two small red triangles") and held_out_facts("a triangle over a diamond")
    assert held_out_facts("there is a square to the right of a small red circle")
    assert not held_out_facts("a circle right of a square")
    ds = shapes(length=5000, seed=3)
    answer_rel = {v: k for k, v in REL_ANSWERS.items()}
    for i in range(5000):
        scene = ds.scene(i)
        assert not heldout_violations(scene), (i, scene)  # the image, by its specification
        t = ds.texts(i, scene)
        texts = [t["text"], t["prompt"]] + [" ".join(qa) for qa in t["qa"]]
        assert not any(held_out_facts(x) for x in texts), (i, texts)
        for q, a in t["qa"]:
            if q.startswith("what colour is"):
                assert (a, q.rstrip("?").split()[-1]) not in HELDOUT_PAIRS
            if q.startswith("where is"):
                m = re.fullmatch(r"where is the .*?(\w+) relative to the .*?(\w+)\?", q)
                assert not is_heldout_triple(m[1], answer_rel[a], m[2]), q
                assert not is_heldout_triple(m[2], INVERSE[answer_rel[a]], m[1]), q


def test_question_answers_balanced():
    ds = shapes(length=400)
    answers = [a for i in range(400) for q, a in ds.texts(i)["qa"] if q.startswith("is there")]
    assert answers.count("yes") == answers.count("no") == 400


def test_corpus_tokenizer_has_every_word():
    from mmar.tokenizers.text import build_word_tokenizer

    cfg = DataConfig(name="shapes", length=300)
    tok = build_word_tokenizer(corpus(cfg))
    ds = build_dataset(cfg, "train")
    for i in range(300):
        t = ds.texts(i)
        for text in [t["text"], t["prompt"], *(x for qa in t["qa"] for x in qa)]:
            ids = tok(text)["input_ids"]
            assert tok.unk_token_id not in ids, text
            assert tok.decode(ids) == text


def test_config_raises():
    with pytest.raises(ConfigError, match="DataConfig.max_objects"):
        DataConfig(name="shapes", max_objects=5).validate()
    with pytest.raises(ConfigError, match="DataConfig.max_objects"):
        DataConfig.from_dict({"name": "shapes", "max_objects": 0})
    with pytest.raises(ConfigError, match="DataConfig.two_objects: removed"):
        DataConfig.from_dict({"name": "shapes", "two_objects": True})
    with pytest.raises(ValueError, match="split must be one of"):
        ShapesDataset(DataConfig(name="shapes"), "val")


def test_benchmark_prompts():
    prompts = benchmark_prompts(12, seed=0)
    assert len(prompts) == 10 * 12 and prompts == benchmark_prompts(12, seed=0)
    assert prompts != benchmark_prompts(12, seed=1)
    groups = {(p.category, p.heldout) for p in prompts}
    assert groups == {(c, False) for c in CATEGORIES} | {(c, True) for c in HELDOUT_CATEGORIES}
    for p in prompts:
        assert parse_scene_text(p.text) == p.query
        pairs = [(g.color, g.shape) in HELDOUT_PAIRS for g in p.query.groups]
        triple = p.query.relation is not None and is_heldout_triple(
            p.query.groups[0].shape, p.query.relation, p.query.groups[1].shape
        )
        assert (any(pairs) or triple) == p.heldout, p
    text = {p.category: p.text for p in prompts if not p.heldout}
    assert re.fullmatch(r"a (small |large )?\w+", text["single_object"])
    assert re.fullmatch(r"a \w+ and a \w+", text["two_objects"])
    assert re.fullmatch(r"(two|three|four) \w+ \w+s", text["counting"])
    assert re.fullmatch(r"a \w+ \w+ and a \w+ \w+", text["color_attr"])
    assert len(category_queries("colors", True)) == 4
    assert len(category_queries("position", True)) == 4  # 2 triples, each in both directions
    # cycling: every query of a small set appears before any repeats
    seen_colors = [
        p.text for p in benchmark_prompts(40) if p.category == "colors" and not p.heldout
    ]
    assert len(set(seen_colors[:20])) == 20 == len(COLORS) * len(SHAPES) - len(HELDOUT_PAIRS)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: benchmark_prompts(0), "n_per_category"),
        (lambda: category_queries("counting_objects", False), "benchmark category"),
        (lambda: category_queries("two_objects", True), "no held-out compositions"),
    ],
)
def test_benchmark_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_export_split_round_trip(tmp_path):
    cfg = DataConfig(name="shapes", test_length=6)
    path = export_split(cfg, "test", tmp_path, n=4)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    ds = ShapesDataset(cfg, "test")
    assert len(lines) == 4 and set(lines[0]) == {"image", "text", "prompt", "qa", "scene"}
    assert lines[2]["text"] == ds[2]["text"] and lines[2]["qa"] == ds[2]["qa"]
    assert ds.scene(2).to_dict() == lines[2]["scene"]
    back = build_dataset(DataConfig(name="jsonl", path=str(path), test_fraction=0.0), "train")
    assert len(back) == 4 and torch.equal(back[2]["image"], ds[2]["image"])
    with pytest.raises(ValueError, match="n must be in 1..6"):
        export_split(cfg, "test", tmp_path, n=7)
    with pytest.raises(ValueError, match="must be 'shapes'"):
        export_split(DataConfig(name="digits"), "test", tmp_path)


def test_export_cli(tmp_path, capsys):
    assert main(["export", "--split", "train", "--n", "3", "--out", str(tmp_path)]) == 0
    assert "wrote 3 train items" in capsys.readouterr().out
    assert len(list((tmp_path / "images").glob("train_*.png"))) == 3
    assert main(["export", "--n", "3", "--max-objects", "7", "--out", str(tmp_path)]) == 2
    assert "max_objects" in capsys.readouterr().err
    img = np.asarray(Image.open(tmp_path / "images" / "train_000000.png"))
    assert img.shape == (32, 32, 3) and set(np.unique(img)) <= {0, 255}
