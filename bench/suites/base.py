"""Samples and suites: what every loader produces and the runner consumes."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.errors import SampleError
from bench.io import SpecialFileError, open_binary
from bench.registry import Registry

IGNORE = 255  # target value of pixels that leave the metric (ReasonSeg "ignore" shapes)
MAX_IMAGE_PIXELS = 8192 * 8192  # larger than any RefCOCO or ReasonSeg image; a bigger declared size fails its sample
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


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
    image_error: str | None = None  # why the annotation's image reference is refused (e.g. a path leaving the root)
    # every annotated object of the sample's image, each a bool HxW mask (only context baselines read them)
    load_objects: Callable[[], list[np.ndarray]] | None = field(default=None, repr=False, compare=False)

    def check_size(self) -> None:
        """Refuse a size that is not positive or exceeds MAX_IMAGE_PIXELS, before anything is allocated for it."""
        if self.height <= 0 or self.width <= 0 or self.height * self.width > MAX_IMAGE_PIXELS:
            raise SampleError(f"image size {self.width}x{self.height} is not positive or exceeds the limit of "
                              f"{MAX_IMAGE_PIXELS} pixels")

    def target(self) -> np.ndarray:
        """Ground truth as uint8 HxW: 0 background, 1 foreground, IGNORE (255) ignored."""
        self.check_size()
        target = self.load_target()
        if target.shape != (self.height, self.width):
            raise SampleError(f"{self.sample_id}: target shape {target.shape} != image size {(self.height, self.width)}")
        return target

    def load_image(self) -> np.ndarray:
        """The RGB image as uint8 HxWx3; raises SampleError if it is refused, missing, corrupt, or if its header
        gives another size than the annotation's or one over MAX_IMAGE_PIXELS (checked before decoding)."""
        from PIL import Image, ImageOps

        if self.image_error:
            raise SampleError(self.image_error)
        try:
            with warnings.catch_warnings():  # PIL's bomb warning: the size is checked here, against a lower limit
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with open_binary(self.image_path) as handle, Image.open(handle) as img:
                    height, width = oriented_size(img)
                    if (height, width) != (self.height, self.width):
                        raise SampleError(f"image {self.image_path} is {width}x{height}, annotation says "
                                          f"{self.width}x{self.height}")
                    self.check_size()
                    # EXIF orientation applied, as cv2.imread (LISA) and LabelMe (the annotations) do
                    return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError, SpecialFileError) as exc:
            raise SampleError(f"cannot read image {self.image_path}: {exc}") from exc


def oriented_size(image: Any) -> tuple[int, int]:
    """(height, width) of an opened PIL image once its EXIF orientation is applied. An image over
    MAX_IMAGE_PIXELS (refused anyway) is not oriented: finding a PNG's EXIF can mean decoding it."""
    if image.width * image.height <= MAX_IMAGE_PIXELS and (
        image.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSING_ORIENTATIONS
    ):
        return image.width, image.height
    return image.height, image.width


class Suite:
    """A benchmark: named splits of samples read from disk. Subclasses implement `_load_split`."""

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]  # the evaluation splits (what `bench run` scores by default)
    train_splits: ClassVar[tuple[str, ...]] = ()  # splits that only training reads (`train.data=NAME`)
    synthetic: ClassVar[bool] = False
    objects_rule: ClassVar[str] = ""  # what Sample.load_objects returns for this suite's format (empty: nothing)
    objects_are_target: ClassVar[bool] = False  # True where the format annotates the target alone (ReasonSeg)

    def __init__(self, data_root: Path | None = None, **options: Any):
        self.data_root = Path(data_root) if data_root is not None else None
        self.options = options
        self.warnings: list[str] = []  # e.g. split-count mismatches; printed and recorded in run.json

    def samples(self, split: str) -> list[Sample]:
        known = self.splits + self.train_splits
        if split not in known:
            raise ValueError(f"suite {self.name!r} has no split {split!r}; splits: {', '.join(known)}")
        return self._load_split(split)

    def iter_samples(self, split: str) -> Iterator[Sample]:
        """The split's samples one at a time (what `bench score` streams); suites that can build them lazily
        (refer) override it so memory does not grow with the split."""
        yield from self.samples(split)

    def _load_split(self, split: str) -> list[Sample]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash identifying the data on disk (recorded in run.json)."""
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        """Suite-level protocol options (e.g. which texts are scored); recorded with every result."""
        return {}

    def warn(self, message: str) -> None:
        """Record an expected condition (e.g. a split-count mismatch): commands print it as a plain line and
        keep it in run.json, never as a Python warning with a source line."""
        self.warnings.append(message)


SUITES: Registry[type[Suite]] = Registry("suite")
