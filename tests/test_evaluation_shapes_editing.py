"""The editing measure of the shapes benchmark (mmar.evaluation.shapes_editing): valid cases,
scores against exact controls, and the whole path through a real (tiny, untrained) model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers_model import one_thread, tiny_model  # noqa: F401
from mmar.data.scene import heldout_violations, render_scene
from mmar.evaluation.check_scene import caption_matches
from mmar.evaluation.shapes_editing import MARGIN, editing_cases, evaluate_editing, score_edits
from mmar.tokenizers.config import ImageTokenizerConfig


def test_cases_change_one_attribute_of_one_object_and_are_seeded():
    cases = editing_cases(40, seed=3)
    assert cases == editing_cases(40, seed=3) and cases != editing_cases(40, seed=4)
    assert [c.change for c in cases[:4]] == ["colour", "shape", "colour", "shape"]
    for c in cases:
        src, tgt = c.source.objects, c.target.objects
        assert len(src) >= 2 and not heldout_violations(c.target)
        assert [i for i in range(len(src)) if src[i] != tgt[i]] == [c.index]
        diff = {f.name for f in dataclasses.fields(src[c.index])} - {
            f.name
            for f in dataclasses.fields(src[c.index])
            if getattr(src[c.index], f.name) == getattr(tgt[c.index], f.name)
        }
        assert diff == ({"color"} if c.change == "colour" else {"shape"})
        x0, y0, x1, y1 = src[c.index].box(32)
        assert c.box[0] == max(0, x0 - MARGIN) and c.box[3] == min(32, y1 + MARGIN)
        assert caption_matches(c.prompt, c.target)  # the prompt states the whole target
        keep = c.keep_mask()
        assert not keep[y0:y1, x0:x1].any() and keep.sum() < 32 * 32


def test_scores_against_exact_controls():
    cases = editing_cases(30, seed=0)
    targets = [render_scene(c.target) for c in cases]
    sources = [render_scene(c.source) for c in cases]
    perfect = score_edits(cases, targets)
    assert perfect["success"] == perfect["requested"] == perfect["others_untouched"] == 1.0
    unchanged = score_edits(cases, sources)
    assert unchanged["success"] == unchanged["requested"] == 0.0
    assert unchanged["others_untouched"] == 1.0
    blank = score_edits(cases, [np.zeros((32, 32, 3), np.uint8)] * 30)
    assert blank["success"] == blank["others_untouched"] == 0.0
    with pytest.raises(ValueError):
        score_edits(cases, targets[:-1])


@pytest.fixture(scope="module")
def rgb_model():
    tok = ImageTokenizerConfig(kind="pixels", image_size=32, image_channels=3, patch_size=4)
    return tiny_model(image_tokenizer=tok)


@pytest.mark.filterwarnings("ignore:.*lose words")  # the tiny model's vocabulary is 5 captions
def test_evaluate_editing_runs_the_inpainting_path(rgb_model):
    res = evaluate_editing(rgb_model, n=4, seed=0, sampling=rgb_model.sampling.replace(num_iter=4))
    assert res["n"] == 4 and 0.0 <= res["success"] <= res["requested"] <= 1.0
    assert res["control_rendered_targets"] == 1.0 and res["control_unedited_requested"] == 0.0


def test_evaluate_editing_scores_what_inpaint_returns(rgb_model, monkeypatch):
    cases = editing_cases(6, seed=1)
    by_prompt = {c.prompt: render_scene(c.target) for c in cases}

    def oracle(images, keep, prompts, sampling, seed):
        return [by_prompt[p] for p in prompts]

    monkeypatch.setattr(rgb_model, "inpaint", oracle)
    res = evaluate_editing(rgb_model, n=6, seed=1)
    assert res["success"] == 1.0
