"""check_scene: objects read back from rendered pixels, query matching, per-category scores."""

import json

import numpy as np
import pytest
import torch

from mmar.data import DataConfig, Group, Scene, SceneObject, SceneQuery, render_scene
from mmar.data.images import pil_to_tensor
from mmar.data.scene import COLORS, SHAPES, SIZES, sample_scene
from mmar.data.shapes import CATEGORIES, ShapesDataset, benchmark_prompts
from mmar.evaluation.check_scene import (
    DetectedObject,
    agrees,
    caption_matches,
    check_scene,
    main,
    matches,
    t2i_scores,
    validate_checker,
)


def one(color, shape, size, cx=16, cy=16, image_size=32):
    return Scene((SceneObject(color, shape, size, cx, cy),), image_size)


@pytest.mark.parametrize("image_size", [32, 64])
def test_every_single_object_read_back_exactly(image_size):
    c = image_size // 2
    for color in COLORS:
        for shape in SHAPES:
            for size in SIZES:
                scene = one(color, shape, size, c, c, image_size)
                (found,) = check_scene(render_scene(scene))
                assert (found.color, found.shape, found.size) == (color, shape, size)
                assert (found.cx, found.cy) == (c, c)


def test_checker_agrees_on_hundreds_of_test_renders_with_noise():
    ds = ShapesDataset(DataConfig(name="shapes", test_length=300), "test")
    g = torch.Generator().manual_seed(0)
    for i in range(300):
        scene = ds.scene(i)
        x = ds[i]["image"]
        assert agrees(scene, check_scene(x)), (i, scene)
        noisy = x + 0.2 * torch.randn(x.shape, generator=g)
        assert agrees(scene, check_scene(noisy)), (i, scene)


def test_checker_on_every_composition_including_heldout():
    for i in range(200):
        scene = sample_scene(np.random.default_rng((8, i)), allow_heldout=True)
        assert agrees(scene, check_scene(np.asarray(render_scene(scene)))), scene


def test_specks_ignored_and_inputs_accepted():
    scene = one("yellow", "triangle", "small", 20, 20)
    arr = np.asarray(render_scene(scene)).copy()
    arr[1, 1] = arr[3, 30] = 255  # isolated bright pixels are noise, not objects
    assert agrees(scene, check_scene(arr))
    assert agrees(scene, check_scene(pil_to_tensor([render_scene(scene)], 3)[0]))
    assert check_scene(np.zeros((32, 32, 3))) == []


def test_detected_fields():
    (d,) = check_scene(render_scene(one("blue", "diamond", "large", 10, 12)))
    assert d == DetectedObject("blue", "diamond", "large", 10.0, 12.0, (5, 7, 16, 18), 61)


@pytest.mark.parametrize(
    "bad", [torch.zeros(1, 32, 32), torch.zeros(3, 32), np.zeros((32, 32)), np.zeros((32, 32, 4))]
)
def test_check_scene_bad_input_raises(bad):
    with pytest.raises(ValueError, match="check_scene: expected"):
        check_scene(bad)


def objs(*specs):
    return [SceneObject(*s) for s in specs]


def test_matches_counts_attributes_and_relations():
    two_red = objs(("red", "circle", "small", 5, 5), ("red", "circle", "large", 20, 20))
    circles = SceneQuery((Group(2, None, "red", "circle"),))
    assert matches(circles, two_red)
    assert not matches(SceneQuery((Group(3, None, "red", "circle"),)), two_red)  # exact count
    assert not matches(SceneQuery((Group(1, None, "red", "circle"),)), two_red)
    sized = SceneQuery((Group(1, "large", None, "circle"), Group(1, "small", "red", "circle")))
    assert matches(sized, two_red)
    assert not matches(SceneQuery((Group(2, "small", None, "circle"),)), two_red)
    a, b = Group(1, None, None, "circle"), Group(1, "large", None, "circle")
    assert matches(SceneQuery((a, b), "above"), two_red)  # a = the small one, b = the large one
    assert matches(SceneQuery((b, a), "below"), two_red)
    assert not matches(SceneQuery((b, a), "left of"), two_red)
    near = objs(("red", "circle", "small", 5, 5), ("red", "square", "small", 7, 20))
    assert not matches(SceneQuery((a, Group(1, None, None, "square")), "left of"), near)  # < M


def test_bipartite_assignment_not_greedy():
    found = objs(("red", "circle", "small", 5, 5), ("red", "circle", "large", 20, 20))
    # a greedy pass would give the small circle to the first slot and leave the second unmatched
    q = SceneQuery((Group(1, None, "red", "circle"), Group(1, "small", None, "circle")))
    assert matches(q, found)


def test_caption_matches_needs_every_attribute_and_a_true_relation():
    scene = Scene(
        (
            SceneObject("red", "circle", "small", 5, 5),
            SceneObject("blue", "square", "large", 20, 20),
        )
    )
    assert caption_matches("a small red circle and a large blue square", scene)
    assert caption_matches("There is a large blue square, a small red circle.", scene)
    assert caption_matches("a small red circle above a large blue square", scene)
    assert caption_matches("a large blue square to the right of a small red circle", scene)
    assert not caption_matches("a small red circle below a large blue square", scene)
    assert not caption_matches("a red circle and a large blue square", scene)  # size unstated
    assert not caption_matches("a small red circle", scene)
    assert not caption_matches("a cat", scene)


def test_t2i_scores_per_category_seen_and_heldout():
    prompts = benchmark_prompts(2, seed=0)
    blank = np.zeros((32, 32, 3), dtype=np.uint8)
    res = t2i_scores(prompts, [blank] * len(prompts))
    assert set(res["categories"]) == set(CATEGORIES)
    assert res["overall"] == {"seen": 0.0, "heldout": 0.0}
    assert res["categories"]["single_object"]["heldout"] is None
    assert res["categories"]["colors"]["n_heldout"] == 2
    with pytest.raises(ValueError, match="1 images for 20 prompts"):
        t2i_scores(prompts, [blank])


def test_validate_checker_and_cli(tmp_path, capsys):
    res = validate_checker(50, noise=0.1, allow_heldout=True)
    assert res["agreement"] == 1.0 and res["failures"] == []
    out = tmp_path / "v.json"
    assert main(["--n", "40", "--json", str(out)]) == 0
    assert "check_scene agreement: 40/40 = 100.00%" in capsys.readouterr().out
    assert json.loads(out.read_text())["agree"] == 40
