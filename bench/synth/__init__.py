"""Embedded synthetic data: shape scenes with verified referring expressions and reasoning queries, the
suites built from them, and endless seeded training streams (`iter_training_samples`, `iter_captions`,
`dialogue_sample`)."""

from bench.synth.build import GENERATOR_VERSION, SynthConfig, build_synth, ensure_synth, fingerprint
from bench.synth.dialogues import Dialogue, dialogue_words
from bench.synth.language import (
    Expression,
    Query,
    caption,
    reasoning_queries,
    referring_expressions,
    vocabulary,
)
from bench.synth.scenes import COLOURS, SHAPES, SIZES, Scene, SceneObject, generate_scene
from bench.synth.streams import (
    TrainSample,
    TrainScene,
    dialogue_sample,
    iter_captions,
    iter_training_samples,
    iter_training_scenes,
)

__all__ = [
    "COLOURS",
    "GENERATOR_VERSION",
    "SHAPES",
    "SIZES",
    "Dialogue",
    "Expression",
    "Query",
    "Scene",
    "SceneObject",
    "SynthConfig",
    "TrainSample",
    "TrainScene",
    "build_synth",
    "caption",
    "dialogue_sample",
    "dialogue_words",
    "ensure_synth",
    "fingerprint",
    "generate_scene",
    "iter_captions",
    "iter_training_samples",
    "iter_training_scenes",
    "reasoning_queries",
    "referring_expressions",
    "vocabulary",
]
