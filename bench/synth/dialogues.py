"""Question-answer pairs about synthetic scenes, for pretraining a tiny vision-language model on them.

A stand-in for the image-text pretraining a real Qwen2.5-VL has: captions, questions about colours,
shapes and counts, and grounding (Qwen2.5-VL answers "where is ..." with coordinates). Here a grounding
answer starts with the target's cell on a `GRID` x `GRID` grid (one word, e.g. "r3c5": row 3, column 5),
then names its colour and shape. Every answer is computed from the scene, so it is right by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.synth.language import (
    NUMBER_WORDS,
    _pick,
    caption,
    reasoning_queries,
    referring_expressions,
    unique_filters,
)
from bench.synth.scenes import COLOURS, SHAPES, Scene, SceneObject

GRID = 8  # grounding answers name one of GRID x GRID cells
COUNT_WORDS = {0: "zero", 1: "one", 2: "two", **NUMBER_WORDS}
PLURALS = {shape: shape + ("es" if shape.endswith("x") else "s") for shape in SHAPES}
KINDS = ("caption", "count", "colour", "shape", "where", "refer")


@dataclass(frozen=True)
class Dialogue:
    """One question about a scene and its answer; `target` is the object the answer is about, or -1."""

    kind: str
    prompt: str
    answer: str
    target: int = -1
    rule: str = ""  # for "refer": the expression kind or reasoning rule that picks the target


def cell_word(obj: SceneObject, image_size: int) -> str:
    """The grid cell of the object's centre as one word: "r{row}c{column}"."""
    row = min(GRID - 1, int(obj.cy / image_size * GRID))
    column = min(GRID - 1, int(obj.cx / image_size * GRID))
    return f"r{row}c{column}"


def _caption(scene: Scene, rng: np.random.Generator) -> list[Dialogue]:
    return [Dialogue("caption", _pick(rng, ("describe the image", "what is in the picture")), caption(scene, rng))]


def _count(scene: Scene, rng: np.random.Generator) -> list[Dialogue]:
    colour = _pick(rng, tuple(COLOURS))
    shape = _pick(rng, tuple(SHAPES))
    return [
        Dialogue("count", f"how many {colour} shapes are there",
                 COUNT_WORDS[sum(o.colour == colour for o in scene.objects)]),
        Dialogue("count", f"how many {PLURALS[shape]} are there",
                 COUNT_WORDS[sum(o.shape == shape for o in scene.objects)]),
    ]


def _about_objects(scene: Scene, rng: np.random.Generator) -> list[Dialogue]:
    """Colour, shape and position questions about objects that a filter names uniquely."""
    dialogues = []
    for index, obj in enumerate(scene.objects):
        for flt in unique_filters(scene, index):
            phrase = flt.phrase(rng)
            if flt.colour is None:  # a question never contains its answer
                dialogues.append(Dialogue("colour", f"what colour is the {phrase}", obj.colour, index))
            if flt.shape is None:
                dialogues.append(Dialogue("shape", f"what shape is the {phrase}", obj.shape, index))
            dialogues.append(Dialogue("where", f"where is the {phrase}", cell_word(obj, scene.size), index))
    return dialogues


def grounding_answer(scene: Scene, target: int) -> str:
    """The answer to a referring expression: the target's cell, colour and shape."""
    obj = scene.objects[target]
    return f"{cell_word(obj, scene.size)} {obj.colour} {obj.shape}"


def _refer(scene: Scene, rng: np.random.Generator) -> list[Dialogue]:
    """Every referring expression and reasoning query of the scene, answered by grounding its target."""
    texts = [(e.text, e.target, e.kind) for e in referring_expressions(scene, rng)]
    for query in reasoning_queries(scene, rng):
        texts += [(query.short, query.target, query.kind), (query.long, query.target, query.kind)]
    return [Dialogue("refer", text, grounding_answer(scene, target), target, rule) for text, target, rule in texts]


BUILDERS: dict[str, Callable[[Scene, np.random.Generator], list[Dialogue]]] = {
    "caption": _caption, "count": _count, "about": _about_objects, "refer": _refer,
}


def scene_dialogues(scene: Scene, rng: np.random.Generator) -> list[Dialogue]:
    """Every dialogue of every kind that the scene supports."""
    return [dialogue for build in BUILDERS.values() for dialogue in build(scene, rng)]


def pick_dialogue(dialogues: list[Dialogue], rng: np.random.Generator, weights: dict[str, float]) -> Dialogue:
    """One dialogue: its kind drawn by `weights` (kinds the scene lacks drop out), then its rule uniformly (so
    frequent expression kinds do not dominate), then uniformly within the rule."""
    present = sorted({d.kind for d in dialogues if weights.get(d.kind, 0) > 0})
    if not present:
        raise ValueError(f"no dialogue of the kinds {sorted(weights)} in this scene")
    p = np.array([weights[k] for k in present], dtype=float)
    kind = present[int(rng.choice(len(present), p=p / p.sum()))]
    rules = sorted({d.rule for d in dialogues if d.kind == kind})
    rule = rules[int(rng.integers(len(rules)))]
    options = [d for d in dialogues if d.kind == kind and d.rule == rule]
    return options[int(rng.integers(len(options)))]


def dialogue_words() -> list[str]:
    """Words the dialogues add to the scene vocabulary (questions, counts, plurals, cells)."""
    fixed = "describe the image what is in picture how many shapes are there colour shape where".split()
    cells = [f"r{row}c{column}" for row in range(GRID) for column in range(GRID)]
    return sorted(set(fixed) | set(COUNT_WORDS.values()) | set(PLURALS.values()) | set(cells))


__all__ = ["Dialogue", "GRID", "KINDS", "cell_word", "dialogue_words", "grounding_answer",
           "pick_dialogue", "scene_dialogues"]
