"""Shapes metrics: perfect on rendered ground truth, below 1 on wrong images / captions, and
``evaluate`` end to end with a perfect fake model."""

import pytest

from mmar.data import DataConfig, Scene, SceneObject, parse_scene_text, render_scene
from mmar.data.shapes import CATEGORIES, benchmark_prompts
from mmar.evaluation import metrics
from mmar.evaluation.evaluate import load_split


@pytest.fixture(scope="module")
def test_split():
    return load_split(DataConfig(name="shapes", image_size=32, test_length=60), "test")


def draw(query, seed=0):
    """An image that shows exactly ``query``: its objects in a row (unstated attributes filled
    in), placed for the relation when there is one."""
    slots = query.slots()
    spots = [(5, 5), (26, 26)] if query.relation in ("left of", "above") else [(26, 26), (5, 5)]
    if query.relation is None:
        spots = [(5, 5), (15, 5), (26, 5), (5, 20)]
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
    reading the pixels back; NLL 1 nat per token."""

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

    def text_nll(self, images, texts):
        return float(len(texts)), len(texts)


def test_evaluate_shapes_with_a_perfect_fake_model():
    from mmar.evaluation import evaluate, format_results

    res = evaluate(
        FakeShapesModel(), DataConfig(name="shapes", test_length=50), n_per_class=3, log=None
    )
    assert res["dataset"] == "shapes" and res["n_generated"] == 30 and res["n_captioned"] == 30
    assert res["t2i_accuracy_seen"] == res["t2i_accuracy_heldout"] == 1.0
    assert list(res["t2i_categories"]) == list(CATEGORIES)
    assert res["t2i_categories"]["two_objects"]["heldout"] is None
    assert res["caption_exact"] == 1.0 and res["text_nll_nats_per_token"] == 1.0
    table = format_results(res)
    assert "caption exact match" in table and "T2I color_attr" in table
    assert "T2I single_object" in table and "held-out n/a" in table
    assert "judge_heldout_accuracy" not in res


def test_evaluate_raises_on_dataset_without_metrics():
    from mmar.evaluation import evaluate

    with pytest.raises(ValueError, match="no built-in metrics for dataset 'folder'"):
        evaluate(FakeShapesModel(), DataConfig(name="folder", path="x"), log=None)
