"""Scenes and their grammar: rendering rules, relations, the sampler, texts and questions."""

import itertools
import re

import numpy as np
import pytest

from mmar.data.scene import (
    COLORS,
    HELDOUT_PAIRS,
    HELDOUT_TRIPLES,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    heldout_violations,
    is_heldout_triple,
    object_side,
    relation_holds,
    relations_between,
    render_scene,
    sample_scene,
    shape_mask,
)
from mmar.data.scene_text import (
    PLACES,
    QUESTION_KINDS,
    REL_ANSWERS,
    TEMPLATES,
    Group,
    SceneQuery,
    canonical_text,
    describe_scene,
    normalize_answer,
    parse_scene_text,
    question_kind,
    render_query,
    scene_caption,
    scene_prompt,
    scene_questions,
    word_list,
)


def obj(color, shape, size, cx, cy):
    return SceneObject(color, shape, size, cx, cy)


def test_vocabulary_and_sides():
    assert len(COLORS) == 6 and len(SHAPES) == 4 and SIZES == ("small", "large")
    assert [object_side(s, 32) for s in SIZES] == [7, 11]
    assert all(object_side(s, n) % 2 == 1 for s in SIZES for n in (16, 32, 64, 100, 256))
    assert len(HELDOUT_PAIRS) == 4 and len(HELDOUT_TRIPLES) == 2


@pytest.mark.parametrize("side", [7, 11, 15])
def test_masks_distinct_fill_their_box_and_triangle_points_up(side):
    masks = {s: shape_mask(s, side, side) for s in SHAPES}
    for a, b in itertools.combinations(SHAPES, 2):
        assert not np.array_equal(masks[a], masks[b]), (a, b)
    for m in masks.values():  # every row and column used: the bounding box is the box
        assert m.any(axis=0).all() and m.any(axis=1).all()
    tri = masks["triangle"]
    assert tri[0].sum() == 1 and tri[-1].all()
    assert np.array_equal(masks["diamond"], masks["diamond"][::-1])


def test_render_exact_colours_and_black_background():
    scene = Scene((obj("red", "circle", "large", 8, 8), obj("cyan", "diamond", "small", 24, 24)))
    rgb = np.asarray(render_scene(scene))
    assert rgb.shape == (32, 32, 3)
    colours = {tuple(int(v) for v in p) for p in rgb.reshape(-1, 3)}
    assert colours == {(0, 0, 0), COLORS["red"], COLORS["cyan"]}
    n_red = (rgb == COLORS["red"]).all(axis=2).sum()
    assert n_red == shape_mask("circle", 11, 11).sum()
    assert (rgb[8, 8] == COLORS["red"]).all()


def test_relation_rule_margin_and_both_axes():
    a, b = obj("red", "circle", "small", 5, 5), obj("blue", "square", "small", 8, 20)
    assert relation_holds(a, "left of", b, 32) and relation_holds(b, "right of", a, 32)
    assert relation_holds(a, "above", b, 32) and relation_holds(b, "below", a, 32)
    assert relations_between(a, b, 32) == ["left of", "above"]
    c = obj("blue", "square", "small", 7, 20)  # 2 px right of a: inside the 3 px margin
    assert relations_between(a, c, 32) == ["above"]
    with pytest.raises(ValueError, match="relation"):
        relation_holds(a, "near", b, 32)


def test_heldout_triple_and_its_mirror():
    assert is_heldout_triple("circle", "left of", "square")
    assert is_heldout_triple("square", "right of", "circle")
    assert is_heldout_triple("diamond", "below", "triangle")
    assert not is_heldout_triple("circle", "right of", "square")
    scene = Scene((obj("red", "circle", "small", 5, 5), obj("cyan", "square", "small", 20, 5)))
    assert heldout_violations(scene) == ["circle left of square"]
    scene = Scene((obj("red", "triangle", "small", 5, 5),))
    assert heldout_violations(scene) == ["(red, triangle)"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("mauve", "circle", "small", 5, 5), "SceneObject.color"),
        (("red", "hexagon", "small", 5, 5), "SceneObject.shape"),
        (("red", "circle", "huge", 5, 5), "SceneObject.size"),
    ],
)
def test_scene_object_bad_name_raises(args, match):
    with pytest.raises(ValueError, match=match):
        SceneObject(*args)


def test_scene_overlap_outside_and_count_raise():
    with pytest.raises(ValueError, match="closer than 2 px"):
        Scene((obj("red", "circle", "small", 5, 5), obj("red", "circle", "small", 13, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        Scene((obj("red", "circle", "large", 4, 16),))
    with pytest.raises(ValueError, match="1..4 objects"):
        Scene(())
    Scene((obj("red", "circle", "small", 5, 5), obj("red", "circle", "small", 14, 5)))  # 2 px gap


def test_sample_scene_raises_on_bad_max_objects():
    with pytest.raises(ValueError, match="max_objects"):
        sample_scene(np.random.default_rng(0), max_objects=5)


def test_sampler_deterministic_counts_and_no_heldout():
    scenes = [sample_scene(np.random.default_rng((9, i))) for i in range(1000)]
    assert scenes[3] == sample_scene(np.random.default_rng((9, 3)))
    counts = np.bincount([len(s.objects) for s in scenes], minlength=5)[1:]
    assert (counts > 200).all()  # uniform over 1..4
    assert not any(heldout_violations(s) for s in scenes)
    repeats = sum(len({(o.color, o.shape) for o in s.objects}) < len(s.objects) for s in scenes)
    assert repeats > 150  # groups of the same kind, for counting
    free = [sample_scene(np.random.default_rng((9, i)), allow_heldout=True) for i in range(400)]
    assert any(heldout_violations(s) for s in free)
    assert all(len(sample_scene(np.random.default_rng(i), 64, 2).objects) <= 2 for i in range(50))


def random_queries(n, seed=0):
    """n random SceneQuery, a third of them in the relation form, attributes sometimes unstated."""
    rng = np.random.default_rng(seed)

    def group(count):
        size = [None, *SIZES][rng.integers(3)]
        color = [None, *COLORS][rng.integers(7)]
        return Group(count, size, color, SHAPES[rng.integers(4)])

    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(SceneQuery((group(1), group(1)), RELATIONS[rng.integers(4)]))
        else:
            out.append(
                SceneQuery(tuple(group(int(rng.integers(1, 5))) for _ in range(rng.integers(1, 4))))
            )
    return out


def test_grammar_round_trip_every_template():
    for q in random_queries(300):
        for template, one, rel in itertools.product(range(len(TEMPLATES)), (False, True), (0, 1)):
            text = render_query(q, template, one, rel)
            assert parse_scene_text(text) == q, text
            assert parse_scene_text(text.upper() + ".") == q
        canon = canonical_text(q)
        assert canonical_text(parse_scene_text(canon)) == canon
        assert parse_scene_text(canon).key() == q.key()


def test_rendered_texts():
    red = Group(1, "small", "red", "circle")
    blue = Group(2, "large", "blue", "square")
    assert render_query(SceneQuery((red, blue))) == "a small red circle and two large blue squares"
    three = SceneQuery((red, blue, Group(1, None, None, "diamond")))
    assert render_query(three, 0, one=True) == (
        "one small red circle, two large blue squares and one diamond"
    )
    assert render_query(three, 1).startswith("there is a small")
    assert render_query(SceneQuery((blue,)), 1) == "there are two large blue squares"
    assert render_query(three, 3).count(" and ") == 2
    rel = SceneQuery((red, Group(1, None, "green", "triangle")), "left of")
    assert (
        render_query(rel, 2, rel=1)
        == "an image of a small red circle to the left of a green triangle"
    )


def test_caption_to_query_to_caption_for_dataset_texts():
    for i in range(300):
        rng = np.random.default_rng((5, i))
        scene = sample_scene(rng)
        for text in (scene_caption(scene, rng), scene_prompt(scene, rng)):
            q = parse_scene_text(text)
            assert q is not None, text
            for t in range(len(TEMPLATES)):
                assert parse_scene_text(render_query(q, t)) == q
        cap = parse_scene_text(scene_caption(scene, rng))
        assert all(g.size and g.color for g in cap.groups)
        if cap.relation is None:
            assert cap.key() == describe_scene(scene).key()


def test_query_key_ignores_order_grouping_and_mirror():
    a, b = Group(1, None, "red", "circle"), Group(1, "small", None, "square")
    assert SceneQuery((a, b)).key() == SceneQuery((b, a)).key()
    two = Group(2, None, "red", "circle")
    assert SceneQuery((two,)).key() == SceneQuery((a, a)).key()
    assert SceneQuery((a, b), "left of").key() == SceneQuery((b, a), "right of").key()
    assert SceneQuery((a, b), "left of").key() != SceneQuery((a, b), "right of").key()
    assert SceneQuery((a, b)).key() != SceneQuery((a, b), "above").key()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a dog",
        "red circle",
        "a red circle and",
        "and a red circle",
        "a red circle and and a blue square",
        "a circles",
        "two circle",
        "five circles",
        "a red red circle",
        "a large small circle",
        "a red circle in the top left",
        "a circle left of two squares",
        "two circles above a square",
        "a circle left of a square and a diamond",
        "a circle left of",
    ],
)
def test_parse_out_of_grammar_is_none(text):
    assert parse_scene_text(text) is None


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Group(5, None, None, "circle"), "Group.count"),
        (lambda: Group(1, None, "mauve", "circle"), "Group.color"),
        (lambda: Group(1, "tiny", None, "circle"), "Group.size"),
        (lambda: Group(1, None, None, None), "Group.shape"),
        (lambda: SceneQuery(()), "SceneQuery.groups"),
        (lambda: SceneQuery((Group(2, None, None, "circle"),), "above"), "two groups of one"),
        (lambda: SceneQuery((Group(1, None, None, "circle"),) * 2, "near"), "relation"),
        (lambda: render_query(SceneQuery((Group(1, None, None, "circle"),)), 9), "template"),
        (lambda: question_kind("why is the sky blue?"), "not a scene question"),
    ],
)
def test_text_objects_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def resolve(phrase, scene):
    """The objects "the [size] [colour] shape" names."""
    words = phrase.split()[1:]
    return [
        o
        for o in scene.objects
        if o.shape == words[-1] and all(w in (o.size, o.color) for w in words[:-1])
    ]


def expected_answer(question, scene):
    """The answer, computed here independently of scene_text's code."""
    q = question.rstrip("?")
    if m := re.fullmatch(r"what colour is (the .+)", q):
        (o,) = resolve(m[1], scene)
        return o.color
    if m := re.fullmatch(r"what shape is the (\w+) object", q):
        axis, sign = PLACES[m[1]]
        pos = sorted(((sign * (o.cx, o.cy)[axis]), o.shape) for o in scene.objects)
        assert len(pos) == 1 or pos[-1][0] - pos[-2][0] >= 3
        return pos[-1][1]
    if m := re.fullmatch(r"how many (\w+) objects are there", q):
        return ["zero", "one", "two", "three", "four"][sum(o.color == m[1] for o in scene.objects)]
    if m := re.fullmatch(r"how many (\w+)s are there", q):
        return ["zero", "one", "two", "three", "four"][sum(o.shape == m[1] for o in scene.objects)]
    if m := re.fullmatch(r"is there a (\w+) (\w+)", q):
        return "yes" if any((o.color, o.shape) == (m[1], m[2]) for o in scene.objects) else "no"
    m = re.fullmatch(r"where is (the .+) relative to (the .+)", q)
    (a,), (b,) = resolve(m[1], scene), resolve(m[2], scene)
    (rel,) = relations_between(a, b, scene.image_size)
    return REL_ANSWERS[rel]


def test_questions_answers_correct_by_construction_on_random_scenes():
    kinds = set()
    for i in range(400):
        rng = np.random.default_rng((6, i))
        scene = sample_scene(rng, allow_heldout=True)
        qa = scene_questions(scene, rng)
        assert sum(x.answer == "yes" for x in qa) == sum(x.answer == "no" for x in qa) == 1
        for x in qa:
            assert question_kind(x.question) == x.kind
            assert x.answer == expected_answer(x.question, scene), (x, scene)
            assert normalize_answer(x.answer.upper() + "!") == x.answer
            kinds.add(x.kind)
    assert kinds == set(QUESTION_KINDS)


def test_questions_on_a_constructed_scene():
    scene = Scene(
        (
            obj("red", "circle", "small", 5, 5),
            obj("blue", "square", "large", 20, 6),  # right of the red circle, 1 px lower
            obj("green", "circle", "large", 6, 24),  # below the red circle, 1 px right
        )
    )
    rngs = [np.random.default_rng(i) for i in range(200)]
    qas = {(x.question, x.answer) for rng in rngs for x in scene_questions(scene, rng)}
    assert ("what colour is the small circle?", "red") in qas
    assert ("what colour is the large circle?", "green") in qas
    assert ("what colour is the square?", "blue") in qas
    assert not any(q == "what colour is the circle?" for q, _ in qas)  # two circles
    assert ("what shape is the rightmost object?", "square") in qas
    assert ("what shape is the bottommost object?", "circle") in qas
    assert not any(q.endswith(("topmost object?", "leftmost object?")) for q, _ in qas)  # < M
    assert ("is there a blue square?", "yes") in qas and (
        "is there a blue square?",
        "no",
    ) not in qas
    relation = {(q, a) for q, a in qas if q.startswith("where")}
    small, large = "the (small |red |small red )circle", "the (large |green |large green )circle"
    assert any(re.fullmatch(f"where is {small} relative to {large}[?]", q) for q, _ in relation)
    for q, a in relation:
        if re.fullmatch(f"where is {small} relative to {large}[?]", q):
            assert a == "above"
        if re.fullmatch(
            f"where is the (blue |large |large blue )?square relative to {small}[?]", q
        ):
            assert a == "right"
    assert not any("square" in q and "green" in q for q, _ in relation)  # two relations hold


def test_word_list_is_every_word_of_many_texts():
    words = set(word_list())
    for i in range(500):
        rng = np.random.default_rng((7, i))
        scene = sample_scene(rng)
        texts = [scene_caption(scene, rng), scene_prompt(scene, rng)]
        texts += [t for x in scene_questions(scene, rng) for t in (x.question, x.answer)]
        for t in texts:
            assert set(re.findall(r"[a-z]+|[,?]", t)) <= words, t
