"""Trivial models: sanity checks and lower bounds every leaderboard should show."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import SampleError
from bench.masks import decode_rle
from bench.models.base import MODELS, ModelInput, SegModel
from bench.rundir.predictions import read_predictions


@MODELS.register("oracle")
class OracleModel(SegModel):
    """Returns the ground truth (ignored pixels as background): cIoU must be 1.0."""

    name = "oracle"

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        return [x.sample.target() == 1 for x in batch]


@MODELS.register("empty")
class EmptyModel(SegModel):
    """Predicts nothing: cIoU 0.0 wherever the ground truth is non-empty."""

    name = "empty"

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        return [np.zeros(x.image.shape[:2], dtype=bool) for x in batch]


@MODELS.register("full")
class FullModel(SegModel):
    """Predicts the whole image: cIoU equals the foreground's share of the pixels."""

    name = "full"

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        return [np.ones(x.image.shape[:2], dtype=bool) for x in batch]


@MODELS.register("center")
class CenterModel(SegModel):
    """A centred prior: the ellipse covering `area` of the image, centred (a dataset-bias baseline)."""

    name = "center"

    def __init__(self, area: float | str = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.area = float(area)
        if not 0.0 < self.area <= 1.0:
            raise ValueError(f"center: area must be in (0, 1], got {self.area}")

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        return [self._ellipse(*x.image.shape[:2]) for x in batch]

    def _ellipse(self, height: int, width: int) -> np.ndarray:
        # an ellipse with semi-axes proportional to the image: area = pi * ry * rx = area * h * w
        scale = np.sqrt(self.area / np.pi)
        ry, rx = scale * height, scale * width
        y, x = np.mgrid[0:height, 0:width]
        return ((y + 0.5 - height / 2) / ry) ** 2 + ((x + 0.5 - width / 2) / rx) ** 2 <= 1.0

    def config(self) -> dict:
        return {**super().config(), "area": self.area}


@MODELS.register("replay")
class ReplayModel(SegModel):
    """Replays a predictions file (`--model-arg predictions=FILE`); a sample missing from it fails."""

    name = "replay"

    def __init__(self, predictions: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if predictions is None:
            raise ValueError("replay needs --model-arg predictions=FILE")
        self.predictions_path = Path(predictions)
        self._records, _ = read_predictions(self.predictions_path)

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        masks = []
        for x in batch:
            record = self._records.get(x.sample.sample_id)
            if record is None or record["segmentation"] is None:
                raise SampleError(f"no prediction for sample {x.sample.sample_id!r} in {self.predictions_path}")
            size = tuple(record["segmentation"]["size"])
            if size != (x.sample.height, x.sample.width):  # checked before decoding allocates h x w
                raise SampleError(f"{self.predictions_path}: mask size {size} differs from the image size "
                                  f"{(x.sample.height, x.sample.width)}")
            masks.append(decode_rle(record["segmentation"]))
        return masks

    def config(self) -> dict:
        return {**super().config(), "predictions": str(self.predictions_path)}
