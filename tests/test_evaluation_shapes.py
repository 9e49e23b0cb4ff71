"""Shapes metrics: perfect on rendered ground truth, below 1 on wrong images / captions."""

import pytest

from mmar.data import DataConfig, ShapeSpec, render_shapes
from mmar.data.images import tensor_to_pil
from mmar.evaluation import metrics
from mmar.evaluation.evaluate import load_split


@pytest.fixture(scope="module", params=[False, True], ids=["one", "two_objects"])
def shapes(request):
    return load_split(
        DataConfig(name="shapes", image_size=32, test_length=60, two_objects=request.param), "test"
    )


def test_shapes_t2i_perfect_on_ground_truth(shapes):
    pil = tensor_to_pil(shapes["images"])
    res = metrics.shapes_t2i_accuracy(pil, shapes["texts"])
    assert res == {"color": 1.0, "shape": 1.0, "position": 1.0, "all": 1.0}


def test_shapes_t2i_below_one_on_wrong_images(shapes):
    pil = tensor_to_pil(shapes["images"])
    res = metrics.shapes_t2i_accuracy(
        pil[1:] + pil[:1], shapes["texts"]
    )  # each image for the next prompt
    assert all(v < 1.0 for v in res.values())
    assert res["all"] <= min(res["color"], res["shape"], res["position"])


def test_shapes_t2i_scores_each_attribute():
    target = ["a red circle in the top left"]
    assert metrics.shapes_t2i_accuracy(
        [render_shapes([ShapeSpec("blue", "circle", "top left")])], target
    ) == {"color": 0.0, "shape": 1.0, "position": 1.0, "all": 0.0}
    assert metrics.shapes_t2i_accuracy(
        [render_shapes([ShapeSpec("red", "square", "bottom right")])], target
    ) == {"color": 1.0, "shape": 0.0, "position": 0.0, "all": 0.0}
    blank = render_shapes([])
    assert metrics.shapes_t2i_accuracy([blank], target)["all"] == 0.0


def test_shapes_caption_accuracy(shapes):
    texts = shapes["texts"]
    perfect = metrics.shapes_caption_accuracy([t.upper() + "." for t in texts], texts)
    assert perfect == {"exact": 1.0, "color": 1.0, "shape": 1.0, "position": 1.0, "all": 1.0}
    wrong = metrics.shapes_caption_accuracy(texts[1:] + texts[:1], texts)
    assert all(v < 1.0 for v in wrong.values())
    garbage = metrics.shapes_caption_accuracy(["a dog"] * len(texts), texts)
    assert set(garbage.values()) == {0.0}


def test_shapes_metrics_raise_on_non_shapes_prompt():
    with pytest.raises(ValueError, match="not a shapes caption"):
        metrics.shapes_t2i_accuracy([render_shapes([])], ["a handwritten digit seven"])


class FakeShapesModel:
    """MMAR's evaluation interface with perfect shapes: renders each prompt exactly, captions by
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
        from mmar.data import parse_shapes_caption

        return [render_shapes(parse_shapes_caption(p), 32) for p in prompts]

    def caption(self, images, sampling):
        from mmar.data import caption_for, check_shapes

        return [caption_for(check_shapes(im)) for im in images]

    def text_nll(self, images, texts):
        return float(len(texts)), len(texts)


def test_evaluate_shapes_with_a_perfect_fake_model():
    from mmar.evaluation import evaluate, format_results

    res = evaluate(
        FakeShapesModel(),
        DataConfig(name="shapes", test_length=50, two_objects=True),
        n_per_class=3,
        log=None,
    )
    assert res["dataset"] == "shapes" and res["n_generated"] == 30 and res["n_captioned"] == 30
    for k in ("color", "shape", "position", "all"):
        assert res[f"t2i_{k}_accuracy"] == 1.0 and res[f"caption_{k}_accuracy"] == 1.0
    assert res["caption_exact"] == 1.0 and res["text_nll_nats_per_token"] == 1.0
    assert "judge_heldout_accuracy" not in res and "caption exact match" in format_results(res)


def test_evaluate_raises_on_dataset_without_metrics():
    from mmar.evaluation import evaluate

    with pytest.raises(ValueError, match="no built-in metrics for dataset 'folder'"):
        evaluate(FakeShapesModel(), DataConfig(name="folder", path="x"), log=None)
