"""ReasonSeg (LISA) read from its LabelMe-style JSON files: image_N.jpg + image_N.json per sample.

Options: texts="first" (default, LISA's protocol: one sample per file, sample_id = JSON stem, scored
text = text[0]) or texts="all" (one sample per instruction; sample_id = stem for text[0] and
f"{stem}:{k}" for text[k], k >= 1). test-short / test-long are the test files whose is_sentence is
false / true.

Targets follow LISA's get_mask_from_json: shapes labelled "flag" (any case) are skipped, labels
containing "ignore" are painted IGNORE (255), all others 1; larger polygons (shoelace area) are
painted first so smaller ones stay on top. Polygons are rasterised with PIL ImageDraw.polygon
(interior and outline, vertices truncated to int as LISA's cv2 path does).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw

from bench.errors import BenchError, DataFormatError, DataNotFoundError
from bench.io import JSON_LIMIT, SpecialFileError, open_binary, read_limited
from bench.suites.base import IGNORE, SUITES, Sample, Suite, oriented_size
from bench.suites.refer import expected_layout, hash_files, resolve_data_root

REASONSEG_LAYOUT = """\
{root}/reason_seg/ReasonSeg/val/image_N.jpg + image_N.json
{root}/reason_seg/ReasonSeg/test/image_N.jpg + image_N.json"""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
TEXT_MODES = ("first", "all")
SPLIT_DIRECTORIES = {"train": "train", "val": "val", "test": "test", "test-short": "test", "test-long": "test"}
LONG_SENTENCE_FILTER = {"test-short": False, "test-long": True}  # split -> required is_sentence


@dataclass(frozen=True)
class _Annotation:
    """One parsed ReasonSeg JSON file."""

    stem: str
    texts: list[str]
    is_sentence: bool
    shapes: list[dict[str, Any]]
    size: tuple[int, int] | None  # (imageHeight, imageWidth) when the file records it


def natural_key(stem: str) -> list[Any]:
    """Sort key ordering image_2 before image_10."""
    return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", stem)]


def polygon_area(points: np.ndarray) -> float:
    """Area of a simple polygon given as an (N, 2) array (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def object_masks(shapes: list[dict[str, Any]], height: int, width: int) -> list[np.ndarray]:
    """Each shape that is neither "flag" nor ignored as its own bool mask, painted as paint_target paints it."""
    return [paint_target([shape], height, width) == 1 for shape in shapes
            if shape["label"].lower() != "flag" and "ignore" not in shape["label"].lower()]


def paint_target(shapes: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """Rasterise ReasonSeg shapes to a uint8 target: 0 background, 1 target, IGNORE ignored; "flag" skipped."""
    polygons = []
    for shape in shapes:
        label = shape["label"].lower()
        if label == "flag":  # LISA: `if "flag" == label_id.lower()`; a label "flagpole" is a target
            continue
        points = np.asarray(shape["points"], dtype=np.float64).astype(np.int32)  # truncation, as LISA
        polygons.append((points, IGNORE if "ignore" in label else 1))
    polygons.sort(key=lambda item: polygon_area(item[0]), reverse=True)  # larger first, smaller on top
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for points, value in polygons:
        vertices = [(int(x), int(y)) for x, y in points]
        if len(vertices) >= 3:
            draw.polygon(vertices, fill=value, outline=value)
        else:  # a degenerate shape is its closed outline, a line or a dot, as cv2.polylines draws it
            draw.line(vertices + vertices[:1], fill=value)
    return np.asarray(canvas, dtype=np.uint8)


@SUITES.register("reasonseg")
class ReasonSegSuite(Suite):
    """ReasonSeg val / test, and test split by instruction kind into test-short and test-long."""

    name = "reasonseg"
    splits = ("val", "test", "test-short", "test-long")
    train_splits = ("train",)
    expected_counts: ClassVar[dict[str, int]] = {"val": 200, "test": 779}  # JSON files per directory
    objects_rule = "every labelled shape of the image's JSON except ignore and flag shapes"
    objects_are_target = True

    def __init__(self, data_root: Path | None = None, **options: Any):
        super().__init__(data_root, **options)
        unknown = sorted(set(options) - {"texts"})
        if unknown:
            raise BenchError(f"suite {self.name!r} has no option {', '.join(unknown)}; options: texts")
        self.texts = options.get("texts", "first")
        if self.texts not in TEXT_MODES:
            raise BenchError(
                f"suite {self.name!r}: texts must be one of {', '.join(TEXT_MODES)}, not {self.texts!r}"
            )
        self._annotations: dict[Path, list[_Annotation]] = {}  # per directory; test-short/long share test
        self._fingerprint: str | None = None

    def split_dir(self, split: str) -> Path:
        """Directory holding the split's image/JSON pairs (test-short and test-long read test)."""
        reason_seg = resolve_data_root(self.data_root, REASONSEG_LAYOUT) / "reason_seg"
        return reason_seg / "ReasonSeg" / SPLIT_DIRECTORIES[split]

    def protocol(self) -> dict[str, Any]:
        return {"texts": self.texts, "ignore_label": "contains 'ignore' -> 255", "flag": "skipped"}

    def fingerprint(self) -> str:
        """Hash of the JSON files of every split directory present on disk (images are not hashed)."""
        if self._fingerprint is None:
            directories = sorted({self.split_dir(split) for split in self.splits})
            files = [
                path for directory in directories if directory.is_dir() for path in _json_files(directory)
            ]
            self._fingerprint = hash_files(files)
        return self._fingerprint

    def _load_split(self, split: str) -> list[Sample]:
        directory = self.split_dir(split)
        wanted = LONG_SENTENCE_FILTER.get(split)
        samples, files = [], {}
        for annotation in self._read_directory(directory, SPLIT_DIRECTORIES[split]):
            if wanted is None or annotation.is_sentence == wanted:
                for sample in self._samples_of(annotation, directory, split):
                    if sample.sample_id in files:  # e.g. a file "a:1.json" beside a's second text (texts=all)
                        raise DataFormatError(f"{directory}: sample id {sample.sample_id!r} of {annotation.stem}.json "
                                              f"is also one of {files[sample.sample_id]}.json; rename one of them")
                    files[sample.sample_id] = annotation.stem
                    samples.append(sample)
        return samples

    def _read_directory(self, directory: Path, count_key: str) -> list[_Annotation]:
        """Parse every JSON file of a directory once, in natural order, and check the file count."""
        if directory not in self._annotations:
            if not directory.is_dir():
                raise DataNotFoundError(directory, expected_layout(self.data_root, REASONSEG_LAYOUT))
            annotations = [_read_annotation(path) for path in _json_files(directory)]
            expected = self.expected_counts.get(count_key)
            if expected is not None and len(annotations) != expected:
                self.warn(
                    f"suite {self.name} split {count_key}: expected {expected} images (JSON files), "
                    f"found {len(annotations)} in {directory}"
                )
            self._annotations[directory] = annotations
        return self._annotations[directory]

    def _samples_of(self, annotation: _Annotation, directory: Path, split: str) -> list[Sample]:
        """The samples of one JSON file: its first text, or all of them with texts="all"."""
        image_path = _find_image(directory, annotation.stem)
        height, width = annotation.size or _image_size(image_path)
        shapes = annotation.shapes

        def load_target() -> np.ndarray:
            return paint_target(shapes, height, width)

        def load_objects() -> list[np.ndarray]:
            return object_masks(shapes, height, width)

        texts = annotation.texts if self.texts == "all" else annotation.texts[:1]
        meta = {
            "is_sentence": annotation.is_sentence,
            "annotation_file": str(directory / f"{annotation.stem}.json"),
        }
        return [
            Sample(
                sample_id=annotation.stem if k == 0 else f"{annotation.stem}:{k}",
                split=split,
                image_path=image_path,
                text=text,
                height=height,
                width=width,
                load_target=load_target,
                meta={**meta, "text_index": k},
                load_objects=load_objects,
            )
            for k, text in enumerate(texts)
        ]


def _json_files(directory: Path) -> list[Path]:
    """The JSON files of a directory in natural order of their stems."""
    return sorted(directory.glob("*.json"), key=lambda path: natural_key(path.stem))


def _find_image(directory: Path, stem: str) -> Path:
    """The image next to a JSON file; a missing one is left for Sample.load_image to report."""
    for extension in IMAGE_EXTENSIONS:
        candidate = directory / f"{stem}{extension}"
        if candidate.is_file():
            return candidate
    return directory / f"{stem}{IMAGE_EXTENSIONS[0]}"


def _image_size(image_path: Path) -> tuple[int, int]:
    """(height, width) from the image header; (0, 0) when the image is missing, unreadable or a decompression
    bomb (the sample then fails, and load_image says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_binary(image_path) as handle, Image.open(handle) as image:
                return oriented_size(image)
    except (OSError, ValueError, Image.DecompressionBombError, SpecialFileError):
        return 0, 0


def _read_annotation(path: Path) -> _Annotation:
    """Parse one ReasonSeg JSON file (UTF-8, else cp1252); DataFormatError naming the file and line."""
    try:
        raw = read_limited(path, JSON_LIMIT)
    except OSError as exc:  # e.g. a symbolic link loop
        raise DataFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{path}: neither UTF-8 nor cp1252 ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # an integer of too many digits, nesting too deep
        raise DataFormatError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    return _validate_annotation(data, path)


def _validate_annotation(data: Any, path: Path) -> _Annotation:
    """Check the fields the loader uses and wrap them; DataFormatError naming the file otherwise."""
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object, found {type(data).__name__}")
    texts = data.get("text")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise DataFormatError(f"{path}: 'text' must be a non-empty list of strings")
    if not isinstance(data.get("is_sentence"), bool):
        raise DataFormatError(f"{path}: 'is_sentence' must be true or false")
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise DataFormatError(f"{path}: 'shapes' must be a list")
    for index, shape in enumerate(shapes):
        if (
            not isinstance(shape, dict)
            or not isinstance(shape.get("label"), str)
            or not _is_point_list(shape.get("points"))
        ):
            raise DataFormatError(f"{path}: shape {index} needs a string 'label' and 'points' [[x, y], ...]")
    size = None
    if isinstance(data.get("imageHeight"), int) and isinstance(data.get("imageWidth"), int):
        size = (data["imageHeight"], data["imageWidth"])
    return _Annotation(stem=path.stem, texts=texts, is_sentence=data["is_sentence"], shapes=shapes, size=size)


def _is_point_list(points: Any) -> bool:
    """True for a non-empty list of [x, y] number pairs."""
    return (
        isinstance(points, list)
        and len(points) > 0
        and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
            for p in points
        )
    )
