"""Referring expressions, reasoning queries and captions for synthetic scenes, each verified on the scene.

Every expression or query carries a meaning (a filter, relation, ordinal or reasoning rule) that is
evaluated on the scene; it is emitted only if that meaning selects its target *decisively*: the target
satisfies it by a margin and every other object fails it (positions and sizes compared with a gap of
`MARGIN` of the image size), so a reader never has to judge a near tie. Referring targets must have a
distractor sharing their shape or colour (otherwise "the circle" or "the red one" is trivial);
objects without one get no expressions.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bench.synth.scenes import (
    COLOUR_MIXES,
    COLOURS,
    CURVED_SHAPES,
    PRIMARY_COLOURS,
    SHAPES,
    Scene,
    SceneObject,
)

MARGIN = 0.06  # decisive gap for positions and distances, as a fraction of the image size
AREA_RATIO = 1.35  # "largest" / "smallest" need this ratio to the runner-up
SIZE_WORDS = {"large": ("big", "large"), "small": ("small", "little")}
NUMBER_WORDS = {3: "three", 4: "four", 5: "five", 6: "six"}
ORDINALS = {2: "second", 3: "third", 4: "fourth", 5: "fifth"}
# direction -> (axis, sign): sign +1 counts from small coordinates (left/top)
DIRECTIONS = {"left": ("cx", 1), "right": ("cx", -1), "top": ("cy", 1), "bottom": ("cy", -1)}
SUPERLATIVES = {
    "left": ("leftmost",),
    "right": ("rightmost",),
    "top": ("topmost", "highest"),
    "bottom": ("bottommost", "lowest"),
}
PAIR_POSITIONS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# relation -> (phrases, score of a candidate o against anchor a; positive = relation holds)
RELATIONS: dict[str, tuple[tuple[str, ...], Callable[[SceneObject, SceneObject], float]]] = {
    "left": (("left of", "to the left of"), lambda o, a: a.cx - o.cx),
    "right": (("right of", "to the right of"), lambda o, a: o.cx - a.cx),
    "above": (("above",), lambda o, a: a.cy - o.cy),
    "below": (("below", "under"), lambda o, a: o.cy - a.cy),
}
NEAR_PHRASES = ("closest to", "next to", "nearest to")
COLOUR_OF = {
    "red": ("a ripe tomato", "a fire truck"),
    "yellow": ("a banana", "a lemon"),
    "blue": ("the clear sky", "the sea"),
    "orange": ("a carrot", "a pumpkin"),
    "purple": ("an eggplant", "a plum"),
    "green": ("fresh grass", "a leaf"),
}
LOOKS_LIKE = {
    "circle": ("a coin", "a wheel"),
    "ellipse": ("an egg", "an olive"),
    "triangle": ("a slice of pizza", "a warning sign"),
    "hexagon": ("a honeycomb cell", "a nut on a bolt"),
    "star": ("a starfish", "a sheriff badge"),
}
LONG_WRAPPERS = (
    "Please segment {}.",
    "Can you find {} in this image?",
    "Highlight {} in the picture.",
    "Where is {}? Show it with a mask.",
)
CAPTION_PREFIXES = ("", "a picture of ", "an image with ")
SHAPE_NOUNS = ("shape", "one")


@dataclass
class Expression:
    """A referring expression that names exactly one object (index `target` into scene.objects)."""

    text: str
    target: int
    kind: str  # "attribute", "spatial" or "ordinal"


@dataclass
class Query:
    """A reasoning query as a phrase (`short`) and as a sentence (`long`), each with a paraphrase."""

    short: str
    long: str
    target: int
    kind: str = ""  # the reasoning rule, e.g. "most_corners"
    short_paraphrase: str = ""
    long_paraphrase: str = ""


@dataclass(frozen=True)
class Filter:
    """An attribute filter: size class (only "large"/"small" are ever named), colour, shape."""

    size: str | None = None
    colour: str | None = None
    shape: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.size is None or obj.size == self.size)
            and (self.colour is None or obj.colour == self.colour)
            and (self.shape is None or obj.shape == self.shape)
        )

    def phrase(self, rng: np.random.Generator) -> str:
        """Noun phrase without article: "big red circle", "red shape", "star"."""
        words = []
        if self.size is not None:
            words.append(_pick(rng, SIZE_WORDS[self.size]))
        if self.colour is not None:
            words.append(self.colour)
        words.append(self.shape if self.shape is not None else _pick(rng, SHAPE_NOUNS))
        return " ".join(words)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _margin(scene: Scene) -> float:
    return MARGIN * scene.size


def has_distractor(scene: Scene, index: int) -> bool:
    """Whether another object shares the shape or the colour of object `index`."""
    target = scene.objects[index]
    return any(
        i != index and (o.shape == target.shape or o.colour == target.colour)
        for i, o in enumerate(scene.objects)
    )


def _matching(scene: Scene, flt: Filter, exclude: int | None = None) -> list[int]:
    return [i for i, o in enumerate(scene.objects) if i != exclude and flt.matches(o)]


def _size_is_decisive(scene: Scene, flt: Filter) -> bool:
    """A size word only when the named class is not shared with any other object of the filter without size,
    so "big" and "small" read the same as relative ("the bigger") and absolute ("a large") sizes."""
    if flt.size is None:
        return True
    others = _matching(scene, Filter(None, flt.colour, flt.shape))
    return sum(scene.objects[i].size == flt.size for i in others) == 1


def _filters_for(obj: SceneObject) -> list[Filter]:
    """Every attribute filter matching obj. A size ("large"/"small" only) comes with a shape: across shapes
    the bounding radius is no fair size (a large ellipse covers less than a medium hexagon)."""
    sizes = [None, obj.size] if obj.size in SIZE_WORDS else [None]
    return [
        Filter(size, colour, shape)
        for size, colour, shape in itertools.product(sizes, [None, obj.colour], [None, obj.shape])
        if shape is not None or (size is None and colour is not None)
    ]


def unique_filters(scene: Scene, index: int) -> list[Filter]:
    """Attribute filters that select object `index` and nothing else."""
    return [
        flt
        for flt in _filters_for(scene.objects[index])
        if _matching(scene, flt) == [index] and _size_is_decisive(scene, flt)
    ]


def _decisive_max(scores: dict[int, float], margin: float) -> int | None:
    """The key with the largest score if it beats every other by `margin`."""
    if not scores:
        return None
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    if len(ranked) == 1 or scores[ranked[0]] - scores[ranked[1]] >= margin:
        return ranked[0]
    return None


def _attribute_expressions(scene: Scene, index: int, rng: np.random.Generator) -> list[Expression]:
    return [Expression(f"the {flt.phrase(rng)}", index, "attribute") for flt in unique_filters(scene, index)]


def _group_filters(scene: Scene, index: int) -> list[Filter]:
    """Filters without size that match the target and at least one other object (so more is needed)."""
    obj = scene.objects[index]
    candidates = [
        Filter(shape=obj.shape),
        Filter(colour=obj.colour),
        Filter(colour=obj.colour, shape=obj.shape),
    ]
    return [flt for flt in candidates if len(_matching(scene, flt)) >= 2]


def _spatial_expressions(scene: Scene, index: int, rng: np.random.Generator) -> list[Expression]:
    """Relations such as "the square left of the green triangle": the anchor is named uniquely; among the
    other objects of the target's group only the target satisfies the relation (by the margin)."""
    margin = _margin(scene)
    expressions = []
    for flt in _group_filters(scene, index):
        for anchor, anchor_obj in enumerate(scene.objects):
            anchor_filters = unique_filters(scene, anchor)
            if anchor == index or not anchor_filters:
                continue
            anchor_phrase = _pick(rng, anchor_filters).phrase(rng)
            candidates = _matching(scene, flt, exclude=anchor)
            if len(candidates) < 2:
                continue
            for phrases, score in RELATIONS.values():
                scores = {i: score(scene.objects[i], anchor_obj) for i in candidates}
                others_fail = all(s <= 0 for i, s in scores.items() if i != index)
                if scores[index] >= margin and others_fail:
                    text = f"the {flt.phrase(rng)} {_pick(rng, phrases)} the {anchor_phrase}"
                    expressions.append(Expression(text, index, "spatial"))
            distances = {i: -_distance(scene.objects[i], anchor_obj) for i in candidates}
            if _decisive_max(distances, margin) == index:
                text = f"the {flt.phrase(rng)} {_pick(rng, NEAR_PHRASES)} the {anchor_phrase}"
                expressions.append(Expression(text, index, "spatial"))
    return expressions


def _distance(a: SceneObject, b: SceneObject) -> float:
    return math.hypot(a.cx - b.cx, a.cy - b.cy)


def _ordinal_expressions(scene: Scene, index: int, rng: np.random.Generator) -> list[Expression]:
    """Orders such as "the leftmost triangle", "the second circle from the left", "the red one at the top";
    the target's neighbours along the axis are at least the margin away."""
    margin = _margin(scene)
    expressions = []
    for flt in _group_filters(scene, index):
        members = _matching(scene, flt)
        for direction, (axis, sign) in DIRECTIONS.items():
            order = sorted(members, key=lambda i: sign * getattr(scene.objects[i], axis))
            coords = [getattr(scene.objects[i], axis) for i in order]
            rank = order.index(index)
            gaps_ok = all(
                abs(coords[j] - coords[j + 1]) >= margin for j in (rank - 1, rank) if 0 <= j < len(order) - 1
            )
            if not gaps_ok:
                continue
            noun = flt.phrase(rng)
            if rank == 0 and len(order) == 2:
                expressions.append(Expression(f"the {noun} {PAIR_POSITIONS[direction]}", index, "ordinal"))
            elif rank == 0:
                expressions.append(
                    Expression(f"the {_pick(rng, SUPERLATIVES[direction])} {noun}", index, "ordinal")
                )
            elif len(order) >= 3 and rank + 1 in ORDINALS:
                text = f"the {ORDINALS[rank + 1]} {noun} from the {direction}"
                expressions.append(Expression(text, index, "ordinal"))
    return expressions


def referring_expressions(scene: Scene, rng: np.random.Generator) -> list[Expression]:
    """All verified expressions of every object with a shape-or-colour distractor (texts deduplicated)."""
    expressions: list[Expression] = []
    seen: set[str] = set()
    for index in range(len(scene.objects)):
        if not has_distractor(scene, index):
            continue
        for builder in (_attribute_expressions, _spatial_expressions, _ordinal_expressions):
            for expression in builder(scene, index, rng):
                if expression.text not in seen:
                    seen.add(expression.text)
                    expressions.append(expression)
    return expressions


# ---------------------------------------------------------------- reasoning queries


@dataclass(frozen=True)
class _Rule:
    """A reasoning rule instantiated on a scene: its target and the ways to say it."""

    kind: str
    target: int
    shorts: tuple[str, ...]  # noun phrases
    questions: tuple[str, ...]  # full sentences specific to the rule


def _only(scene: Scene, predicate: Callable[[SceneObject], bool]) -> int | None:
    hits = [i for i, o in enumerate(scene.objects) if predicate(o)]
    return hits[0] if len(hits) == 1 else None


def _corner_rules(scene: Scene) -> Iterator[_Rule]:
    """Rules that count corners; skipped when a star is present, since people count its corners as 5 or 10."""
    if any(o.shape == "star" for o in scene.objects):
        return
    corners = {i: float(o.corners) for i, o in enumerate(scene.objects)}
    most = _decisive_max(corners, 1)
    if most is not None:
        yield _Rule(
            "most_corners",
            most,
            ("the shape with the most corners", "the shape that has the most corners"),
            (
                "Which shape in this picture has the most corners? Highlight it.",
                "Find the shape that has more corners than any other shape in the image.",
            ),
        )
    fewest = _decisive_max({i: -c for i, c in corners.items()}, 1)
    if fewest is not None:
        yield _Rule(
            "fewest_corners",
            fewest,
            ("the shape with the fewest corners", "the shape that has the fewest corners"),
            ("Which shape in this picture has the fewest corners? Highlight it.",),
        )
    for count, word in NUMBER_WORDS.items():
        exact = _only(scene, lambda o, count=count: o.corners == count)
        if exact is not None:
            yield _Rule(
                "corner_count",
                exact,
                (f"the shape with {word} corners", f"the shape that has exactly {word} corners"),
                (f"Which shape here has exactly {word} corners? Highlight it.",),
            )


def _curvature_rules(scene: Scene) -> Iterator[_Rule]:
    round_one = _only(scene, lambda o: o.shape in CURVED_SHAPES)
    if round_one is not None:
        yield _Rule(
            "no_corners",
            round_one,
            ("the only shape without corners", "the only round shape"),
            (
                "Which shape in this picture has no corners at all? Highlight it.",
                "One shape here has no straight edges. Which one is it?",
            ),
        )
    cornered_one = _only(scene, lambda o: o.shape not in CURVED_SHAPES)
    if cornered_one is not None:
        yield _Rule(
            "only_corners",
            cornered_one,
            ("the only shape with corners", "the only shape with straight edges"),
            ("Which shape in this picture is the only one with corners? Highlight it.",),
        )


def _colour_rules(scene: Scene) -> Iterator[_Rule]:
    for colour, (first, second) in COLOUR_MIXES.items():
        mixed = _only(scene, lambda o, colour=colour: o.colour == colour)
        if mixed is not None:
            yield _Rule(
                "colour_mix",
                mixed,
                (
                    f"the shape whose colour is a mix of {first} and {second}",
                    f"the shape coloured like {second} and {first} paint mixed together",
                ),
                (
                    f"If you mixed {first} and {second} paint, which shape would have the resulting colour? "
                    "Highlight it.",
                ),
            )
    primary = _only(scene, lambda o: o.colour in PRIMARY_COLOURS)
    if primary is not None:
        yield _Rule(
            "primary",
            primary,
            ("the only shape in a primary colour", "the only shape painted in a primary colour"),
            ("Which shape is the only one painted in a primary colour? Highlight it.",),
        )
    secondary = _only(scene, lambda o: o.colour not in PRIMARY_COLOURS)
    if secondary is not None:
        yield _Rule(
            "not_primary",
            secondary,
            ("the only shape that is not in a primary colour", "the only shape whose colour is not primary"),
            ("Which shape is the only one whose colour is not a primary colour? Highlight it.",),
        )
    for colour, things in COLOUR_OF.items():
        target = _only(scene, lambda o, colour=colour: o.colour == colour)
        if target is not None:
            yield _Rule(
                "colour_of",
                target,
                tuple(f"the shape with the colour of {t}" for t in things),
                tuple(f"Which shape has the same colour as {t}? Highlight it." for t in things),
            )


def _shape_rules(scene: Scene) -> Iterator[_Rule]:
    for shape, things in LOOKS_LIKE.items():
        target = _only(scene, lambda o, shape=shape: o.shape == shape)
        if target is not None:
            yield _Rule(
                "looks_like",
                target,
                tuple(f"the shape that looks like {t}" for t in things),
                tuple(f"Which shape has the outline of {t}? Highlight it." for t in things),
            )
    if len(scene.objects) >= 3:
        for attribute, word in (("shape", "form"), ("colour", "colour")):
            values = [getattr(o, attribute) for o in scene.objects]
            for i, value in enumerate(values):
                rest = values[:i] + values[i + 1 :]
                if len(set(rest)) == 1 and rest[0] != value:
                    yield _Rule(
                        f"odd_{attribute}",
                        i,
                        (
                            f"the shape whose {word} differs from all the others",
                            f"the only shape with a different {word}",
                        ),
                        (f"All shapes but one share the same {word}. Which one is different? Highlight it.",),
                    )


def _same_attribute_rules(scene: Scene) -> Iterator[_Rule]:
    """Pairs such as "the shape with the same colour as the star": the anchor is named by its unique shape
    (or colour) and exactly one other object shares its colour (or shape)."""
    for anchor, anchor_obj in enumerate(scene.objects):
        if _only(scene, lambda o, shape=anchor_obj.shape: o.shape == shape) == anchor:
            partner = [
                i for i, o in enumerate(scene.objects) if i != anchor and o.colour == anchor_obj.colour
            ]
            if len(partner) == 1:
                yield _Rule(
                    "same_colour",
                    partner[0],
                    (
                        f"the shape with the same colour as the {anchor_obj.shape}",
                        f"the other shape coloured like the {anchor_obj.shape}",
                    ),
                    (f"Which other shape shares its colour with the {anchor_obj.shape}? Highlight it.",),
                )
        if _only(scene, lambda o, colour=anchor_obj.colour: o.colour == colour) == anchor:
            partner = [i for i, o in enumerate(scene.objects) if i != anchor and o.shape == anchor_obj.shape]
            if len(partner) == 1:
                yield _Rule(
                    "same_shape",
                    partner[0],
                    (
                        f"the shape with the same form as the {anchor_obj.colour} one",
                        f"the other shape with the form of the {anchor_obj.colour} one",
                    ),
                    (f"Which other shape has the same form as the {anchor_obj.colour} one? Highlight it.",),
                )


def _geometry_rules(scene: Scene) -> Iterator[_Rule]:
    margin = _margin(scene)
    areas = {i: float(o.area) for i, o in enumerate(scene.objects)}
    ranked = sorted(areas.values(), reverse=True)
    if ranked[0] >= AREA_RATIO * ranked[1]:
        yield _Rule(
            "largest",
            max(areas, key=areas.__getitem__),
            ("the largest shape", "the biggest shape"),
            ("Which shape takes up the most space in this picture? Highlight it.",),
        )
    if ranked[-2] >= AREA_RATIO * ranked[-1]:
        yield _Rule(
            "smallest",
            min(areas, key=areas.__getitem__),
            ("the smallest shape", "the tiniest shape"),
            ("Which shape takes up the least space in this picture? Highlight it.",),
        )
    if len(scene.objects) >= 3:
        nearest = {
            i: min(_distance(o, p) for j, p in enumerate(scene.objects) if j != i)
            for i, o in enumerate(scene.objects)
        }
        isolated = _decisive_max(nearest, margin)
        if isolated is not None:
            yield _Rule(
                "isolated",
                isolated,
                ("the shape furthest from the others", "the most isolated shape"),
                ("Which shape stands farthest away from all the other shapes? Highlight it.",),
            )
    centre = scene.size / 2
    to_centre = {i: -math.hypot(o.cx - centre, o.cy - centre) for i, o in enumerate(scene.objects)}
    central = _decisive_max(to_centre, margin)
    if central is not None:
        yield _Rule(
            "central",
            central,
            ("the shape closest to the centre of the picture", "the most central shape"),
            ("Which shape is nearest to the middle of the image? Highlight it.",),
        )


RULE_FAMILIES = (
    _corner_rules,
    _curvature_rules,
    _colour_rules,
    _shape_rules,
    _same_attribute_rules,
    _geometry_rules,
)


def _two_different(rng: np.random.Generator, options: list[str]) -> tuple[str, str]:
    """Two options, different when there are at least two."""
    if len(options) == 1:
        return options[0], options[0]
    first, second = rng.choice(len(options), size=2, replace=False)
    return options[int(first)], options[int(second)]


def reasoning_queries(scene: Scene, rng: np.random.Generator) -> list[Query]:
    """Every reasoning rule that picks exactly one object of the scene, as a Query with paraphrases."""
    queries = []
    for family in RULE_FAMILIES:
        for rule in family(scene):
            short, short_paraphrase = _two_different(rng, list(rule.shorts))
            longs = list(rule.questions) + [wrapper.format(short) for wrapper in LONG_WRAPPERS]
            long, long_paraphrase = _two_different(rng, longs)
            queries.append(Query(short, long, rule.target, rule.kind, short_paraphrase, long_paraphrase))
    return queries


# ---------------------------------------------------------------- captions, vocabulary


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """Text-to-image caption listing every object: "a red circle, a big blue square and a green star"."""
    parts = []
    for index in rng.permutation(len(scene.objects)):
        obj = scene.objects[int(index)]
        size = obj.size if obj.size in SIZE_WORDS and rng.random() < 0.5 else None
        parts.append(_with_article(Filter(size, obj.colour, obj.shape).phrase(rng)))
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return _pick(rng, CAPTION_PREFIXES) + listed


WORD_SPLIT = re.compile(r"[\s,.?!']+")


def words(text: str) -> list[str]:
    """Lowercase words of a text, split on spaces and the punctuation , . ? ! '"""
    return [w for w in WORD_SPLIT.split(text.lower()) if w]


def vocabulary() -> list[str]:
    """Every word any generated text can contain, sorted."""
    fixed_texts = [
        "the a an and from of one shape",
        *SHAPES,
        *COLOURS,
        *NUMBER_WORDS.values(),
        *ORDINALS.values(),
        *DIRECTIONS,
        *itertools.chain(
            *SIZE_WORDS.values(), *SUPERLATIVES.values(), *COLOUR_OF.values(), *LOOKS_LIKE.values()
        ),
        *PAIR_POSITIONS.values(),
        *NEAR_PHRASES,
        *CAPTION_PREFIXES,
        *LONG_WRAPPERS,
        *itertools.chain(*(phrases for phrases, _ in RELATIONS.values())),
    ]
    # the rule texts: instantiate every rule family on scenes that trigger each of them
    rule_texts = []
    for scene in _vocabulary_scenes():
        for family in RULE_FAMILIES:
            for rule in family(scene):
                rule_texts += [*rule.shorts, *rule.questions]
    return sorted({w for text in fixed_texts + rule_texts for w in words(text.replace("{}", " "))})


def _vocabulary_scenes() -> Iterator[Scene]:
    """Hand-made scenes on which every rule of every family fires with every shape and colour word."""

    def scene(*specs: tuple[str, str, str, float]) -> Scene:
        objects = [
            SceneObject(shape, colour, size, x, 10.0, 1.0, [], np.zeros((1, 1), bool))
            for shape, colour, size, x in specs
        ]
        return Scene(np.zeros((64, 64, 3), np.uint8), objects)

    for shape, colour in itertools.product(SHAPES, COLOURS):
        other_shape = "star" if shape != "star" else "circle"
        other_colour = "red" if colour != "red" else "blue"
        yield scene((shape, colour, "large", 5.0), (other_shape, other_colour, "small", 60.0))
        yield scene(
            (shape, colour, "large", 5.0),
            (other_shape, other_colour, "small", 60.0),
            (other_shape, other_colour, "small", 30.0),
        )
        yield scene((shape, colour, "large", 5.0), (other_shape, colour, "small", 60.0))
        yield scene((shape, colour, "large", 5.0), (shape, other_colour, "small", 60.0))
    for count in NUMBER_WORDS:
        shape = next(name for name, corners in SHAPES.items() if corners == count)
        yield scene((shape, "red", "large", 5.0), ("circle", "red", "small", 60.0))


def pick_balanced(rng: np.random.Generator, options: list[tuple]) -> tuple:
    """One option, its kind (first field) drawn uniformly first, so that frequent kinds do not dominate."""
    kinds = sorted({option[0] for option in options})
    kind = _pick(rng, kinds)
    return _pick(rng, [option for option in options if option[0] == kind])
