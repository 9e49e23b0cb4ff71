"""The text grammar of the scenes: descriptions, prompts, parsing, questions and answers.

An object phrase is count + [size] + [colour] + shape, plural from two on: "a small red circle",
"three large green triangles", "two squares" (count words a / one, two, three, four). A
description is its groups joined by one of ``TEMPLATES`` ("{}" with commas and a final "and",
"there is/are {}", "an image of {}", "{}" with "and" only), or, for two single objects, the
relation form "A REL B" with REL one of ``REL_PHRASES`` ("left of" / "to the left of",
"right of" / "to the right of", "above" / "over", "below" / "under") under the same prefixes.

``SceneQuery(groups=(Group(count, size|None, colour|None, shape), ...), relation)`` is what a
text means; ``parse_scene_text`` reads it back (case and punctuation ignored; None outside the
grammar) and ``render_query`` writes it with any template: parse(render_query(q, t)) == q.
Two queries mean the same when their ``key()`` agree (the multiset of objects, the relation
read in its "left of" / "above" direction).

Per image (all choices from the item's ``rng``):
- ``scene_caption``: every group states size and colour; a two-object scene with a relation
  uses the relation form half of the time. Groups in random order.
- ``scene_prompt``: the same, but size dropped w.p. 0.5 and colour w.p. 0.3 (for the whole text),
  equal groups merged ("two red circles"): the underspecified prompts of the benchmark.
- ``scene_questions``: ``QA(question, answer, kind)`` with one exact answer each, kinds
  ``QUESTION_KINDS``; answers come from the scene only, never name a held-out pair.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any

import numpy as np

from mmar.data.scene import (
    COLORS,
    HELDOUT_PAIRS,
    INVERSE,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    relation_margin,
    relations_between,
)

COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")  # count answers
TEMPLATES = ("{}", "there {be} {}", "an image of {}", "{}")  # 3: joined by "and" only
REL_PHRASES = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
REL_ANSWERS = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
QUESTION_KINDS = ("color", "shape", "count", "exists", "relation")
PLACES = {"leftmost": (0, -1), "rightmost": (0, 1), "topmost": (1, -1), "bottommost": (1, 1)}
_QUESTION_STARTS = {
    "what colour": "color",
    "what shape": "shape",
    "how many": "count",
    "is there": "exists",
    "where is": "relation",
}


@dataclasses.dataclass(frozen=True)
class Group:
    """``count`` objects of one kind; size / colour None when the text does not state them."""

    count: int
    size: str | None
    color: str | None
    shape: str

    def __post_init__(self) -> None:
        if self.count not in COUNT_WORDS:
            raise ValueError(f"Group.count: expected 1..4, got {self.count!r}")
        for field, allowed in (("size", SIZES), ("color", COLORS), ("shape", SHAPES)):
            value = getattr(self, field)
            if not (value is None and field != "shape") and value not in allowed:
                raise ValueError(f"Group.{field}: expected one of {list(allowed)}, got {value!r}")

    def phrase(self, one: bool = False) -> str:
        """ "a small red circle", "two squares"; ``one``: "one" instead of "a"."""
        count = "one" if one and self.count == 1 else COUNT_WORDS[self.count]
        shape = self.shape + ("s" if self.count > 1 else "")
        return " ".join(w for w in (count, self.size, self.color, shape) if w)

    def sort_key(self) -> tuple[int, int, int]:
        """(shape, colour, size) indices, -1 for an unstated attribute."""

        def index(value: str | None, allowed: Any) -> int:
            return -1 if value is None else list(allowed).index(value)

        return (SHAPES.index(self.shape), index(self.color, COLORS), index(self.size, SIZES))


@dataclasses.dataclass(frozen=True)
class SceneQuery:
    """What a text states: its groups and, for two single objects, "groups[0] REL groups[1]"."""

    groups: tuple[Group, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("SceneQuery.groups: expected at least one group")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(
                    f"SceneQuery.relation: expected one of {list(RELATIONS)}, got {self.relation!r}"
                )
            if len(self.groups) != 2 or any(g.count != 1 for g in self.groups):
                raise ValueError("SceneQuery.relation: needs exactly two groups of one object")

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def slots(self) -> list[Group]:
        """One Group of count 1 per object, in group order."""
        return [dataclasses.replace(g, count=1) for g in self.groups for _ in range(g.count)]

    def key(self) -> tuple[Any, ...]:
        """Equal for queries of the same meaning (group order, "right of" vs "left of" ...)."""
        if self.relation is None:
            return (tuple(sorted(g.sort_key() for g in self.slots())), None)
        a, b, rel = self.groups[0], self.groups[1], self.relation
        if rel in ("right of", "below"):
            a, b, rel = b, a, INVERSE[rel]
        return ((a.sort_key(), b.sort_key()), rel)


def describe_scene(scene: Scene, size: bool = True, color: bool = True) -> SceneQuery:
    """The scene's groups (equal attributes merged), sorted by shape, colour and size; without
    ``size`` / ``color`` that attribute is not stated (so more objects share a group)."""
    counts = Counter(
        (o.size if size else None, o.color if color else None, o.shape) for o in scene.objects
    )
    groups = [Group(n, s, c, sh) for (s, c, sh), n in counts.items()]
    return SceneQuery(tuple(sorted(groups, key=Group.sort_key)))


def _join(parts: list[str], and_only: bool) -> str:
    if len(parts) == 1 or and_only:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def render_query(query: SceneQuery, template: int = 0, one: bool = False, rel: int = 0) -> str:
    """The text of ``query`` in ``TEMPLATES[template]``; ``one``: singletons say "one";
    ``rel``: which of the two ``REL_PHRASES`` of the relation."""
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(
            f"render_query: template must be in 0..{len(TEMPLATES) - 1}, got {template}"
        )
    phrases = [g.phrase(one) for g in query.groups]
    if query.relation is not None:
        body = f"{phrases[0]} {REL_PHRASES[query.relation][rel]} {phrases[1]}"
    else:
        body = _join(phrases, and_only=template == 3)
    be = "is" if query.groups[0].count == 1 else "are"
    return TEMPLATES[template].replace("{be}", be).format(body)


def canonical_text(query: SceneQuery) -> str:
    """One text per meaning: groups sorted, relation as "left of" / "above", template 0."""
    if query.relation is None:
        return render_query(SceneQuery(tuple(sorted(query.groups, key=Group.sort_key))))
    (a, b), rel = query.groups, query.relation
    if rel in ("right of", "below"):
        a, b, rel = b, a, INVERSE[rel]
    return render_query(SceneQuery((a, b), rel))


_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_PREFIXES = (("there", "is"), ("there", "are"), ("an", "image", "of"))
_REL_TOKENS = sorted(
    ((tuple(p.split()), r) for r, ps in REL_PHRASES.items() for p in ps), key=lambda t: -len(t[0])
)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z]+", " ", text.lower()).split()


def _group(words: list[str], i: int) -> tuple[Group, int] | None:
    """count [size] [colour] shape(s) starting at words[i], and the index after it."""
    if i >= len(words) or words[i] not in _COUNTS:
        return None
    count, i = _COUNTS[words[i]], i + 1
    size = color = None
    if i < len(words) and words[i] in SIZES:
        size, i = words[i], i + 1
    if i < len(words) and words[i] in COLORS:
        color, i = words[i], i + 1
    if i >= len(words):
        return None
    shape = words[i] if count == 1 else words[i][:-1] if words[i].endswith("s") else ""
    if shape not in SHAPES:
        return None
    return Group(count, size, color, shape), i + 1


def parse_scene_text(text: str) -> SceneQuery | None:
    """The SceneQuery a description or prompt states, or None outside the grammar."""
    words = _words(text)
    for prefix in _PREFIXES:
        if tuple(words[: len(prefix)]) == prefix:
            words = words[len(prefix) :]
            break
    first = _group(words, 0)
    if first is None:
        return None
    groups, i = [first[0]], first[1]
    for tokens, rel in _REL_TOKENS:
        if tuple(words[i : i + len(tokens)]) == tokens:
            second = _group(words, i + len(tokens))
            if second is None or second[1] != len(words) or groups[0].count != 1:
                return None
            if second[0].count != 1:
                return None
            return SceneQuery((groups[0], second[0]), rel)
    while i < len(words):
        i += words[i] == "and"
        nxt = _group(words, i)
        if nxt is None:
            return None
        groups.append(nxt[0])
        i = nxt[1]
    return SceneQuery(tuple(groups))


def _relation_query(
    rng: np.random.Generator, scene: Scene, size: bool, color: bool
) -> SceneQuery | None:
    """The relation form of a two-object scene (one holding relation drawn at random), or None
    when the scene has another count or its objects hold no relation."""
    if len(scene.objects) != 2:
        return None
    a, b = scene.objects if rng.random() < 0.5 else scene.objects[::-1]
    rels = relations_between(a, b, scene.image_size)
    if not rels:
        return None
    groups = tuple(
        Group(1, o.size if size else None, o.color if color else None, o.shape) for o in (a, b)
    )
    return SceneQuery(groups, rels[int(rng.integers(len(rels)))])


def _text(rng: np.random.Generator, scene: Scene, size: bool, color: bool) -> str:
    query = _relation_query(rng, scene, size, color) if rng.random() < 0.5 else None
    if query is None:
        groups = describe_scene(scene, size, color).groups
        query = SceneQuery(tuple(groups[k] for k in rng.permutation(len(groups))))
    template = int(rng.integers(len(TEMPLATES)))
    return render_query(query, template, one=rng.random() < 0.25, rel=int(rng.integers(2)))


def scene_caption(scene: Scene, rng: np.random.Generator) -> str:
    """The full description (size and colour of every group), a template drawn from ``rng``."""
    return _text(rng, scene, True, True)


def scene_prompt(scene: Scene, rng: np.random.Generator) -> str:
    """A T2I prompt: the description with size dropped w.p. 0.5 and colour w.p. 0.3."""
    size, color = rng.random() >= 0.5, rng.random() >= 0.3
    return _text(rng, scene, size, color)


@dataclasses.dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str  # one of QUESTION_KINDS


def question_kind(question: str) -> str:
    """The QUESTION_KINDS entry of a question, from its first two words."""
    kind = _QUESTION_STARTS.get(" ".join(_words(question)[:2]))
    if kind is None:
        raise ValueError(f"question_kind: not a scene question: {question!r}")
    return kind


def normalize_answer(text: str) -> str:
    """Lower case, letters and single spaces only: the form answers are compared in."""
    return " ".join(_words(text))


def _naming(obj: SceneObject, scene: Scene, with_color: bool) -> list[str]:
    """The phrases "the [size] [colour] shape" that name ``obj`` and no other object."""
    out = []
    for use_size in (False, True):
        for use_color in (False, True) if with_color else (False,):
            same = [
                o
                for o in scene.objects
                if o.shape == obj.shape
                and (not use_size or o.size == obj.size)
                and (not use_color or o.color == obj.color)
            ]
            if len(same) == 1:
                words = (obj.size if use_size else None, obj.color if use_color else None)
                out.append(" ".join(w for w in ("the", *words, obj.shape) if w))
    return out


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Questions with exact answers: colour, shape at a place, count, existence (one "yes", one
    "no"), relation; a kind is left out when no object makes its answer unique."""
    objs, qa = scene.objects, []
    named = [(o, _naming(o, scene, with_color=False)) for o in objs]
    named = [(o, ps) for o, ps in named if ps]
    if named:
        o, ps = _pick(rng, named)
        qa.append(QA(f"what colour is {_pick(rng, ps)}?", o.color, "color"))
    m = relation_margin(scene.image_size)
    for place in rng.permutation(list(PLACES)):
        axis, sign = PLACES[str(place)]
        pos = [sign * (o.cx, o.cy)[axis] for o in objs]
        best = int(np.argmax(pos))
        if all(pos[best] - p >= m for k, p in enumerate(pos) if k != best):
            qa.append(QA(f"what shape is the {place} object?", objs[best].shape, "shape"))
            break
    if rng.random() < 0.5:
        shape = _pick(rng, list(SHAPES) if rng.random() < 0.5 else [o.shape for o in objs])
        n = sum(o.shape == shape for o in objs)
        qa.append(QA(f"how many {shape}s are there?", NUMBER_WORDS[n], "count"))
    else:
        color = _pick(rng, list(COLORS) if rng.random() < 0.5 else [o.color for o in objs])
        n = sum(o.color == color for o in objs)
        qa.append(QA(f"how many {color} objects are there?", NUMBER_WORDS[n], "count"))
    o = _pick(rng, list(objs))
    qa.append(QA(f"is there a {o.color} {o.shape}?", "yes", "exists"))
    present = {(o.color, o.shape) for o in objs}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present | HELDOUT_PAIRS]
    c, s = _pick(rng, absent)
    qa.append(QA(f"is there a {c} {s}?", "no", "exists"))
    pairs = []
    for a in objs:
        for b in objs:
            rels = relations_between(a, b, scene.image_size) if a is not b else []
            na, nb = _naming(a, scene, True), _naming(b, scene, True)
            if len(rels) == 1 and na and nb:
                pairs.append((na, rels[0], nb))
    if pairs:
        na, rel, nb = _pick(rng, pairs)
        q = f"where is {_pick(rng, na)} relative to {_pick(rng, nb)}?"
        qa.append(QA(q, REL_ANSWERS[rel], "relation"))
    return qa


def word_list() -> list[str]:
    """Every word and punctuation mark a caption, prompt, question or answer can use, sorted."""
    texts = [*COUNT_WORDS.values(), *NUMBER_WORDS, *SIZES, *COLORS, "and", "yes", "no"]
    texts += [s + p for s in SHAPES for p in ("", "s")]
    texts += [t.replace("{be}", "is are") for t in TEMPLATES] + ["one"]
    texts += [p for ps in REL_PHRASES.values() for p in ps] + list(REL_ANSWERS.values())
    texts += [*_QUESTION_STARTS, "the object objects relative to are", *PLACES]
    words = {w for t in texts for w in re.sub(r"[{}]", " ", t).split()}
    return [*sorted(words), ",", "?"]


def corpus_texts() -> list[str]:
    """Strings a word-level tokenizer is built from: each word of ``word_list`` once, then a
    line that puts "," and "?" where texts have them (attached to the word before)."""
    words = [w for w in word_list() if w.isalpha()]
    return [*words, "circle, square?"]
