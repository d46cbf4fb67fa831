"""Endless seeded training streams over fresh synthetic scenes, apart from the suites' scenes.

Every item is a pure function of (seed, stream, index), drawn from its own `numpy` generator, so a stream
can be restarted anywhere and never repeats a suite scene (the suites use streams below 100).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bench.synth.dialogues import Dialogue, pick_dialogue, scene_dialogues
from bench.synth.language import _pick, caption, pick_balanced, reasoning_queries, referring_expressions
from bench.synth.scenes import generate_scene

TRAIN_STREAM = 1_000  # the suites use streams < 100 (see bench.synth.build)
CAPTION_STREAM = 1_001
DIALOGUE_STREAM = 1_002


def _stream_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Independent generator of item `index` in one stream; streams never collide with the suites' ones."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


@dataclass
class TrainSample:
    """One training pair for segmentation: image, instruction, target mask."""

    image: np.ndarray  # uint8 HxWx3
    text: str
    mask: np.ndarray  # bool HxW
    kind: str  # "referring" or "reasoning"
    rule: str = ""  # the expression kind or reasoning rule that picks the target, e.g. "spatial", "most_corners"


def iter_training_samples(seed: int, task: str = "both", image_size: int = 64) -> Iterator[TrainSample]:
    """Infinite deterministic stream, one sample per fresh scene; task: "referring", "reasoning" or "both"."""
    if task not in ("referring", "reasoning", "both"):
        raise ValueError(f"task must be 'referring', 'reasoning' or 'both', not {task!r}")
    for index in itertools.count():
        rng = _stream_rng(seed, TRAIN_STREAM, index)
        scene = generate_scene(rng, image_size)
        kind = task if task != "both" else _pick(rng, ("referring", "reasoning"))
        if kind == "referring":
            options = [(e.kind, e.text, e.target) for e in referring_expressions(scene, rng)]
        else:
            options = [
                (q.kind, q.long if rng.random() < 0.5 else q.short, q.target)
                for q in reasoning_queries(scene, rng)
            ]
        if options:
            rule, text, target = pick_balanced(rng, options)
            yield TrainSample(scene.image, text, scene.objects[target].mask, kind, rule)


@dataclass
class TrainScene:
    """A fresh scene with every instruction that picks one of its objects: (kind, rule, text, target index)."""

    image: np.ndarray  # uint8 HxWx3
    masks: list[np.ndarray]  # bool HxW per object
    options: list[tuple[str, str, str, int]]


def iter_training_scenes(seed: int, image_size: int = 64) -> Iterator[TrainScene]:
    """Infinite deterministic stream of scenes with all their verified referring expressions ("referring") and
    reasoning queries, short and long ("reasoning"): the scenes of `iter_training_samples`, every text kept."""
    for index in itertools.count():
        rng = _stream_rng(seed, TRAIN_STREAM, index)
        scene = generate_scene(rng, image_size)
        options = [("referring", e.kind, e.text, e.target) for e in referring_expressions(scene, rng)]
        for query in reasoning_queries(scene, rng):
            options += [("reasoning", query.kind, text, query.target) for text in (query.short, query.long)]
        if options:
            yield TrainScene(scene.image, [obj.mask for obj in scene.objects], options)


def iter_captions(seed: int, image_size: int = 64) -> Iterator[tuple[np.ndarray, str]]:
    """Infinite deterministic stream of (image, caption) pairs for joint text-to-image training."""
    for index in itertools.count():
        rng = _stream_rng(seed, CAPTION_STREAM, index)
        scene = generate_scene(rng, image_size)
        yield scene.image, caption(scene, rng)


def dialogue_sample(seed: int, index: int, weights: dict[str, float],
                    image_size: int = 64) -> tuple[np.ndarray, Dialogue]:
    """Item `index` of the dialogue stream: a fresh scene and one question about it, its kind drawn by `weights`;
    a scene with no question of the weighted kinds is replaced by the next draw of the same item."""
    attempt = 0
    while True:
        key = (DIALOGUE_STREAM, index) if attempt == 0 else (DIALOGUE_STREAM, index, attempt)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
        scene = generate_scene(rng, image_size)
        dialogues = [d for d in scene_dialogues(scene, rng) if weights.get(d.kind, 0) > 0]
        if dialogues:
            return scene.image, pick_dialogue(dialogues, rng, weights)
        attempt += 1
