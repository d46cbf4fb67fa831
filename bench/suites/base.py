"""Samples and suites: what every loader produces and the runner consumes."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.errors import SampleError
from bench.registry import Registry

IGNORE = 255  # target value of pixels that leave the metric (ReasonSeg "ignore" shapes)


@dataclass(frozen=True)
class Sample:
    """One referring sentence on one image; the unit of evaluation."""

    sample_id: str  # stable id users write predictions against (refer: sent_id; ReasonSeg: JSON stem)
    split: str
    image_path: Path
    text: str  # the instruction that is scored
    height: int  # original image size: metrics are computed at this resolution
    width: int
    load_target: Callable[[], np.ndarray] = field(repr=False, compare=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    # the foreground as a pycocotools RLE, for suites whose ground truth is RLE or polygons (bench score)
    load_target_rle: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def target(self) -> np.ndarray:
        """Ground truth as uint8 HxW: 0 background, 1 foreground, IGNORE (255) ignored."""
        target = self.load_target()
        if target.shape != (self.height, self.width):
            raise SampleError(f"{self.sample_id}: target shape {target.shape} != image size {(self.height, self.width)}")
        return target

    def load_image(self) -> np.ndarray:
        """The RGB image as uint8 HxWx3; raises SampleError if it is missing or corrupt."""
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(self.image_path) as img:
                # EXIF orientation applied, as cv2.imread (LISA) and LabelMe (the annotations) do
                array = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise SampleError(f"cannot read image {self.image_path}: {exc}") from exc
        if array.shape[:2] != (self.height, self.width):
            raise SampleError(
                f"image {self.image_path} is {array.shape[1]}x{array.shape[0]}, annotation says {self.width}x{self.height}"
            )
        return array


class Suite:
    """A benchmark: named splits of samples read from disk. Subclasses implement `_load_split`."""

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    synthetic: ClassVar[bool] = False

    def __init__(self, data_root: Path | None = None, **options: Any):
        self.data_root = Path(data_root) if data_root is not None else None
        self.options = options
        self.warnings: list[str] = []  # e.g. split-count mismatches; recorded in run.json

    def samples(self, split: str) -> list[Sample]:
        if split not in self.splits:
            raise ValueError(f"suite {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self._load_split(split)

    def _load_split(self, split: str) -> list[Sample]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash identifying the data on disk (recorded in run.json)."""
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        """Suite-level protocol options (e.g. which texts are scored); recorded with every result."""
        return {}

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, stacklevel=2)


SUITES: Registry[type[Suite]] = Registry("suite")
