"""Context baselines: masks built from the annotations of the image's objects, not from the instruction.

They read what no model sees (every annotated object of the image, `Sample.load_objects`), so reports show them
apart from models, as dataset-bias diagnostics: what "segment everything", "segment some object" or "segment the
biggest object" scores without understanding the text.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np

from bench.errors import SampleError
from bench.models.base import MODELS, ModelInput, SegModel


class ContextModel(SegModel):
    """Base: one mask per input chosen from the input image's object masks (`choose`)."""

    rule: ClassVar[str]  # what the mask is, recorded in run.json

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.objects: dict[str, str] = {}  # suite -> what its objects are (its `objects_rule`)
        self.answer_suites: set[str] = set()  # suites whose objects are the target's own shapes

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        return [self.choose(x.sample.sample_id, image_objects(x), x.image.shape[:2]) for x in batch]

    def choose(self, sample_id: str, objects: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def check_suite(self, suite_name: str, synthetic: bool) -> list[str]:
        """Records what the suite's objects are; warns where they are the target's own shapes."""
        from bench.suites import SUITES

        suite = SUITES.get(suite_name) if suite_name in SUITES else None
        rule = suite.objects_rule if suite is not None else ""
        self.objects[suite_name] = rule or "none: the suite exposes no objects (every sample fails)"
        if suite is not None and suite.objects_are_target:
            self.answer_suites.add(suite_name)
            return [f"{self.name} on {suite_name}: its objects are the target's own shapes, so this row reads the "
                    "answer and measures no dataset bias"]
        return []

    def config(self) -> dict:
        return {**super().config(), "baseline": "context", "rule": self.rule, "objects": dict(sorted(self.objects.items())),
                "objects_are_target": sorted(self.answer_suites)}


def image_objects(x: ModelInput) -> list[np.ndarray]:
    """The input image's object masks; SampleError when its suite exposes none."""
    if x.sample.load_objects is None:
        raise SampleError(f"sample {x.sample.sample_id}: its suite exposes no objects of the image")
    return x.sample.load_objects()


def empty(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


@MODELS.register("every-object")
class EveryObjectModel(ContextModel):
    """The union of every annotated object of the image: "segment everything, refer to nothing"."""

    name = "every-object"
    rule = "the union of every annotated object of the image"

    def choose(self, sample_id: str, objects: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        return np.logical_or.reduce(objects) if objects else empty(shape)


@MODELS.register("random-object")
class RandomObjectModel(ContextModel):
    """One annotated object of the image drawn uniformly, seeded by the run's seed and the sample id."""

    name = "random-object"
    rule = ("one annotated object of the image drawn uniformly at random: index "
            "numpy.random.default_rng([seed, crc32(sample_id)]).integers(number of objects); scored on that draw. "
            "The report adds the exact expectation of gIoU over the draw (mean IoU over the image's objects)")

    def choose(self, sample_id: str, objects: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        if not objects:
            return empty(shape)
        return objects[draw(self.seed, sample_id, len(objects))]


def draw(seed: int, sample_id: str, count: int) -> int:
    """The object index random-object picks for a sample: the same for the same seed and sample id."""
    return int(np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))]).integers(count))


@MODELS.register("largest-object")
class LargestObjectModel(ContextModel):
    """The annotated object of the image with the most pixels (the first of equal ones)."""

    name = "largest-object"
    rule = "the annotated object of the image with the most pixels (the first in the annotations' order on ties)"

    def choose(self, sample_id: str, objects: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        if not objects:
            return empty(shape)
        return objects[int(np.argmax([np.count_nonzero(mask) for mask in objects]))]
