"""Shapes metrics: perfect on rendered ground truth, below 1 on wrong images / captions, and
``evaluate`` end to end with a perfect fake model."""

import re

import pytest
from PIL import Image

from mmar.data import DataConfig, Scene, SceneObject, parse_scene_text, render_scene
from mmar.data.shapes import CATEGORIES, ShapesDataset, benchmark_prompts
from mmar.evaluation import metrics

TEST = DataConfig(name="shapes", image_size=32, test_length=60)


@pytest.fixture(scope="module")
def test_split():
    ds = ShapesDataset(TEST, "test")
    items = [ds[i] for i in range(len(ds))]
    return {
        "texts": [it["text"] for it in items],
        "qa": [it["qa"] for it in items],
        "scenes": [ds.scene(i) for i in range(len(ds))],
    }


def draw(query, seed=0):
    """An image that shows exactly ``query``: its objects in the corners (unstated attributes filled
    in), placed for the relation when there is one."""
    slots = query.slots()
    spots = [(5, 5), (26, 26)] if query.relation in ("left of", "above") else [(26, 26), (5, 5)]
    if query.relation is None:
        spots = [(6, 6), (25, 6), (6, 25), (25, 25)]
    objects = [
        SceneObject(s.color or "cyan", s.shape, s.size or "small", x, y)
        for s, (x, y) in zip(slots, spots)
    ]
    return render_scene(Scene(tuple(objects)))


def test_t2i_perfect_on_exact_images_and_zero_on_shifted_ones():
    prompts = benchmark_prompts(3)
    images = [draw(p.query) for p in prompts]
    res = metrics.shapes_t2i_scores(prompts, images)
    assert res["overall"] == {"seen": 1.0, "heldout": 1.0}
    assert all(v["seen"] == 1.0 for v in res["categories"].values())
    wrong = metrics.shapes_t2i_scores(prompts, images[1:] + images[:1])
    assert wrong["overall"]["seen"] < 0.5


def test_caption_accuracy(test_split):
    texts, scenes = test_split["texts"], test_split["scenes"]
    perfect = metrics.shapes_caption_accuracy([t.upper() + "." for t in texts], scenes)
    assert perfect["exact"] == 1.0 and perfect["parsed"] == 1.0
    wrong = metrics.shapes_caption_accuracy(texts[1:] + texts[:1], scenes)
    assert wrong["exact"] < 0.2 and wrong["parsed"] == 1.0
    garbage = metrics.shapes_caption_accuracy(["a dog"] * len(texts), scenes)
    assert garbage["exact"] == garbage["parsed"] == 0.0
    with pytest.raises(ValueError, match="2 captions for 60 scenes"):
        metrics.shapes_caption_accuracy(texts[:2], scenes)


def test_vqa_accuracy_per_kind(test_split):
    qa = [pair for item in test_split["qa"] for pair in item]
    questions, truths = [q for q, _ in qa], [a for _, a in qa]
    res = metrics.shapes_vqa_accuracy([a.upper() + "." for a in truths], questions, truths)
    assert res["accuracy"] == 1.0 and set(res["per_kind"]) <= {
        "color",
        "shape",
        "count",
        "exists",
        "relation",
    }
    res = metrics.shapes_vqa_accuracy(["yes"] * len(qa), questions, truths)
    assert res["per_kind"]["exists"] == 0.5 and res["per_kind"]["color"] == 0.0
    with pytest.raises(ValueError, match="shapes_vqa_accuracy"):
        metrics.shapes_vqa_accuracy([], [], [])


class FakeShapesModel:
    """MMAR's evaluation interface with perfect shapes: draws each prompt exactly, captions by
    reading the pixels back, answers from the test split's own answers (looked up by image and
    question); NLL 1 nat per token."""

    def __init__(self):
        from types import SimpleNamespace

        import torch

        from mmar.model.config import SamplingConfig
        from mmar.tokenizers.config import ImageTokenizerConfig

        self.config = SimpleNamespace(
            image_tokenizer=ImageTokenizerConfig(image_size=32, image_channels=3)
        )
        self.sampling, self.model, self.device = SamplingConfig(), torch.nn.Module(), "cpu"

    def generate_images(self, prompts, sampling, seed):
        return [draw(parse_scene_text(p)) for p in prompts]

    def caption(self, images, sampling):
        from collections import Counter

        from mmar.evaluation.check_scene import check_scene

        out = []
        for im in images:
            kinds = Counter((o.size, o.color, o.shape) for o in check_scene(im))
            out.append(
                " and ".join(
                    f"{['', 'a', 'two', 'three', 'four'][n]} {s} {c} {sh}{'s' * (n > 1)}"
                    for (s, c, sh), n in kinds.items()
                )
            )
        return out

    def answer(self, images, questions, sampling):
        ds = ShapesDataset(DataConfig(name="shapes", test_length=50), "test")
        truth = {}
        for i in range(len(ds)):
            it = ds[i]
            for q, a in it["qa"]:
                truth[(it["image"].numpy().tobytes(), q)] = a
        from mmar.data.images import pil_to_tensor

        return [
            truth[(pil_to_tensor([im], 3)[0].numpy().tobytes(), q)]
            for im, q in zip(images, questions)
        ]

    def text_nll(self, images, texts):
        return float(len(texts)), len(texts)

    def inpaint(self, images, keep_mask, prompts, sampling, seed):
        return list(images)  # no edit at all: the editing measure must score 0


def test_evaluate_shapes_with_a_perfect_fake_model(tmp_path, monkeypatch):
    from PIL import Image

    from mmar.evaluation import evaluate, format_results, shapes_bench

    monkeypatch.setattr(shapes_bench, "JUDGE_TRAIN_ITEMS", 400)  # a quick judge: seconds
    res = evaluate(
        FakeShapesModel(),
        DataConfig(name="shapes", test_length=50),
        n_per_class=2,
        log=None,
        judge_cache_dir=str(tmp_path / "judges"),
        samples_dir=str(tmp_path),
    )
    # 20 benchmark prompts; 20 test images captioned and asked, 20 more as the FID floor's half
    assert res["dataset"] == "shapes" and res["n_generated"] == 20 and res["n_captioned"] == 20
    assert res["t2i_accuracy_seen"] == res["t2i_accuracy_heldout"] == 1.0
    assert list(res["t2i_categories"]) == list(CATEGORIES)
    assert res["t2i_categories"]["two_objects"]["heldout"] is None
    assert res["caption_exact"] == 1.0 and res["text_nll_nats_per_token"] == 1.0
    assert res["vqa_accuracy"] == 1.0 and sum(res["vqa_n_per_kind"].values()) >= 20 * 4
    assert res["classifier_fid"] > 0 and res["classifier_fid_real_floor"] > 0
    grid = Image.open(tmp_path / "samples.png")
    assert grid.size[0] == 8 * 104 and grid.size[1] % 148 == 0  # 8 cells of 96 + frame per row
    table = format_results(res)
    assert "caption exact match" in table and "T2I color_attr" in table
    assert "T2I single_object" in table and "held-out n/a" in table
    assert "VQA accuracy" in table and "classifier-FID" in table
    edits = res["editing"]  # 5 x n_per_class cases, the unedited images returned
    assert edits["n"] == 10 and edits["success"] == edits["requested"] == 0.0
    assert edits["others_untouched"] == 1.0 and re.search(r"editing success +0\.0000", table)


def test_samples_grid_marks_wrong_images_red(tmp_path):
    from mmar.evaluation.shapes_bench import write_samples_grid

    bench = benchmark_prompts(1)
    images = [draw(b.query) for b in bench]
    correct = [i % 2 == 0 for i in range(len(bench))]
    png = write_samples_grid(bench, images, correct, tmp_path / "g.png", per_row=2)
    grid = Image.open(png).convert("RGB")
    # rows: single_object [0], two_objects [1], counting [2 (seen), 3 (held-out)], ...
    assert [(b.category, b.heldout) for b in bench[2:4]] == [
        ("counting", False),
        ("counting", True),
    ]
    assert grid.getpixel((2, 2 * 148 + 2)) == (0, 160, 0)  # bench[2]: right -> green frame
    assert grid.getpixel((104 + 2, 2 * 148 + 2)) == (200, 0, 0)  # bench[3]: wrong -> red


def test_evaluate_raises_on_dataset_without_metrics():
    from mmar.evaluation import evaluate

    with pytest.raises(ValueError, match="no built-in metrics for dataset 'folder'"):
        evaluate(FakeShapesModel(), DataConfig(name="folder", path="x"), log=None)
