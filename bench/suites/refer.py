"""RefCOCO, RefCOCO+ and RefCOCOg read from the refer API's files (refs(*.p) + COCO instances.json).

Every sentence of every ref of a split is one sample (LISA's protocol); its sample_id is the
refer sentence id `str(sent_id)`, which is unique within a dataset and stable across copies.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from pycocotools import mask as mask_utils

from bench.errors import BenchError, DataFormatError, DataNotFoundError
from bench.masks import segmentation_to_rle
from bench.safe_pickle import load_refs_pickle
from bench.suites.base import SUITES, Sample, Suite
from bench.suites.writers import instances_path, refs_path

DATA_ROOT_ENV = "BENCH_DATA_ROOT"
FINGERPRINT_CHARS = 16

REFER_LAYOUT = """\
{root}/refer_seg/images/mscoco/images/train2014/COCO_train2014_000000xxxxxx.jpg
{root}/refer_seg/refcoco/{{refs(unc).p, instances.json}}
{root}/refer_seg/refcoco+/{{refs(unc).p, instances.json}}
{root}/refer_seg/refcocog/{{refs(umd).p, instances.json}}   # also refs(google).p"""


def resolve_data_root(data_root: Path | None, layout: str) -> Path:
    """The data root given to the suite, else $BENCH_DATA_ROOT; DataNotFoundError (with `layout`) if neither."""
    if data_root is None and os.environ.get(DATA_ROOT_ENV):
        data_root = Path(os.environ[DATA_ROOT_ENV])
    if data_root is None:
        raise DataNotFoundError(
            f"no data root (pass a data root or set {DATA_ROOT_ENV})", expected_layout(None, layout)
        )
    return Path(data_root)


def expected_layout(data_root: Path | None, layout: str) -> str:
    """`layout` with its {root} filled in by the data root in use (or DATA when there is none)."""
    return layout.format(root=data_root or os.environ.get(DATA_ROOT_ENV) or "DATA")


def hash_files(paths: list[Path]) -> str:
    """Short sha256 over the names (with their folder) and contents of `paths`, read in chunks."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:  # e.g. a symbolic link loop
            raise DataFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def split_matches(requested: str, ref_split: str) -> bool:
    """refer's getRefIds semantics: testA/B/C match any split containing that letter, test any split
    containing "test", everything else (train, val, testAB, ...) matches exactly."""
    if requested in ("testA", "testB", "testC"):
        return requested[-1] in ref_split
    if requested == "test":
        return "test" in ref_split
    return ref_split == requested


@dataclass(frozen=True)
class _ReferFiles:
    """The parsed refs pickle and instances.json of one (dataset, split_by)."""

    refs: list[dict[str, Any]]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, dict[str, Any]]
    refs_file: Path
    instances_file: Path


class ReferSuite(Suite):
    """One refer dataset; subclasses set dataset, split_by, splits, valid_split_by and expected_counts.

    Options: split_by (one of valid_split_by; default the class's split_by). Expected counts apply to
    the default split_by only; a mismatch (or an empty split) is recorded with self.warn.
    """

    dataset: ClassVar[str]
    split_by: str  # class default; an instance may override it with the split_by option
    valid_split_by: ClassVar[tuple[str, ...]]
    expected_counts: ClassVar[dict[str, dict[str, int]]] = {}  # split -> {"refs": n, "images": n}

    def __init__(self, data_root: Path | None = None, **options: Any):
        super().__init__(data_root, **options)
        unknown = sorted(set(options) - {"split_by"})
        if unknown:
            raise BenchError(f"suite {self.name!r} has no option {', '.join(unknown)}; options: split_by")
        split_by = options.get("split_by", type(self).split_by)
        if split_by not in self.valid_split_by:
            raise BenchError(
                f"suite {self.name!r}: split_by {split_by!r} is not valid for {self.dataset}; "
                f"choose one of {', '.join(self.valid_split_by)}"
            )
        self.split_by = split_by
        self._files: _ReferFiles | None = None
        self._samples: dict[str, list[Sample]] = {}
        self._fingerprint: str | None = None

    def refer_root(self) -> Path:
        """Directory holding <dataset>/refs(<split_by>).p and <dataset>/instances.json."""
        return resolve_data_root(self.data_root, REFER_LAYOUT) / "refer_seg"

    def image_dir(self) -> Path:
        """Directory holding the COCO train2014 images the refs point at."""
        refer_seg = resolve_data_root(self.data_root, REFER_LAYOUT) / "refer_seg"
        return refer_seg / "images" / "mscoco" / "images" / "train2014"

    def protocol(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split_by": self.split_by, "texts": "all sentences of every ref"}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hash_files(self._data_files())
        return self._fingerprint

    def _load_split(self, split: str) -> list[Sample]:
        if split not in self._samples:
            self._samples[split] = self._build_samples(split)
        return list(self._samples[split])

    def _data_files(self) -> list[Path]:
        """The refs pickle and instances.json, checked to exist."""
        root = self.refer_root()
        files = [refs_path(root, self.dataset, self.split_by), instances_path(root, self.dataset)]
        for path in files:
            if not path.is_file():
                raise DataNotFoundError(path, expected_layout(self.data_root, REFER_LAYOUT))
        return files

    def _parsed_files(self) -> _ReferFiles:
        """Parse the refs pickle and instances.json once per suite object (several splits share them)."""
        if self._files is None:
            refs_file, instances_file = self._data_files()
            refs = load_refs_pickle(refs_file)
            instances = _read_instances(instances_file)
            self._files = _ReferFiles(
                refs=refs,
                images={image["id"]: image for image in instances["images"]},
                annotations={ann["id"]: ann for ann in instances["annotations"]},
                refs_file=refs_file,
                instances_file=instances_file,
            )
        return self._files

    def _build_samples(self, split: str) -> list[Sample]:
        files = self._parsed_files()
        image_dir = self.image_dir()
        if not image_dir.is_dir():
            raise DataNotFoundError(image_dir, expected_layout(self.data_root, REFER_LAYOUT))
        refs = [ref for ref in files.refs if split_matches(split, ref["split"])]
        samples: list[Sample] = []
        seen_ids: set[str] = set()
        for ref in refs:
            image, annotation = _lookup(files, ref)
            for sentence in ref["sentences"]:
                sample_id = str(sentence["sent_id"])
                if sample_id in seen_ids:
                    raise DataFormatError(
                        f"{files.refs_file}: sent_id {sample_id} occurs twice in split {split}"
                    )
                seen_ids.add(sample_id)
                samples.append(
                    _make_sample(sample_id, split, image_dir, image, annotation, ref, sentence["sent"])
                )
        self._check_counts(split, refs)
        return samples

    def _check_counts(self, split: str, refs: list[dict[str, Any]]) -> None:
        """Warn when a split is empty or, under the default split_by, differs from the published size."""
        found = {"refs": len(refs), "images": len({ref["image_id"] for ref in refs})}
        if not refs:
            self.warn(
                f"suite {self.name} ({self.dataset}, {self.split_by}) split {split}: no refs match this split"
            )
            return
        if self.split_by != type(self).split_by:
            return
        for kind, expected in self.expected_counts.get(split, {}).items():
            if found[kind] != expected:
                self.warn(
                    f"suite {self.name} split {split}: expected {expected} {kind}, found {found[kind]} "
                    f"(dataset-hub copies have been seen with other counts)"
                )


def _read_instances(path: Path) -> dict[str, Any]:
    """Read a COCO instances.json; DataFormatError naming the file (and line/column) if malformed."""
    try:
        instances = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 ({exc})") from exc
    if not isinstance(instances, dict) or any(
        not isinstance(instances.get(k), list) or not all(isinstance(x, dict) and "id" in x for x in instances[k])
        for k in ("images", "annotations")
    ):
        raise DataFormatError(f"{path}: expected a COCO object with lists 'images' and 'annotations' of "
                              "objects with an 'id'")
    return instances


def _lookup(files: _ReferFiles, ref: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The COCO image and annotation a ref points at; DataFormatError if instances.json lacks them."""
    image = files.images.get(ref["image_id"])
    annotation = files.annotations.get(ref["ann_id"])
    if image is None or annotation is None:
        missing = f"image {ref['image_id']}" if image is None else f"annotation {ref['ann_id']}"
        raise DataFormatError(f"{files.instances_file}: has no {missing} (needed by ref {ref['ref_id']})")
    if not all(isinstance(image.get(key), int) for key in ("height", "width")) or not isinstance(
        image.get("file_name"), str
    ):
        raise DataFormatError(f"{files.instances_file}: image {ref['image_id']} needs integer 'height' and "
                              "'width' and a string 'file_name'")
    if "segmentation" not in annotation:
        raise DataFormatError(f"{files.instances_file}: annotation {ref['ann_id']} has no 'segmentation'")
    return image, annotation


def _make_sample(
    sample_id: str,
    split: str,
    image_dir: Path,
    image: dict[str, Any],
    annotation: dict[str, Any],
    ref: dict[str, Any],
    text: str,
) -> Sample:
    """One sentence of one ref; the target is decoded only when asked for (after Sample checks the size)."""
    height, width = image["height"], image["width"]
    segmentation = annotation["segmentation"]

    def load_target() -> np.ndarray:
        return mask_utils.decode(segmentation_rle(segmentation, height, width)).astype(np.uint8)

    def load_target_rle() -> dict[str, Any]:
        return segmentation_rle(segmentation, height, width)

    file_name = image["file_name"]
    return Sample(
        sample_id=sample_id,
        split=split,
        image_path=image_dir / file_name,
        text=text,
        height=height,
        width=width,
        load_target=load_target,
        load_target_rle=load_target_rle,
        image_error=None if _stays_inside(file_name) else
        f"file_name {file_name!r} of image {image['id']} leaves the image directory: refused",
        meta={
            "ref_id": ref["ref_id"],
            "ann_id": ref["ann_id"],
            "image_id": ref["image_id"],
            "category_id": annotation.get("category_id", ref.get("category_id")),
            "iscrowd": int(annotation.get("iscrowd", 0)),
        },
    )


def _stays_inside(file_name: str) -> bool:
    """True for a relative path without '..' (a file_name must name a file below the image directory)."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    return bool(file_name) and not path.is_absolute() and ".." not in path.parts


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO segmentation as one pycocotools RLE: polygons, an RLE (compressed or not), or a list of RLEs (as
    LISA's refer code accepts), parts merged with OR; an RLE of another size fails before it is decoded."""
    if isinstance(segmentation, list) and segmentation and all(isinstance(part, dict) for part in segmentation):
        return mask_utils.merge([segmentation_to_rle(part, height, width) for part in segmentation])
    return segmentation_to_rle(segmentation, height, width)


@SUITES.register("refcoco")
class RefCOCO(ReferSuite):
    """RefCOCO (UNC splits by default)."""

    name = "refcoco"
    dataset = "refcoco"
    split_by = "unc"
    valid_split_by = ("unc", "google")
    splits = ("val", "testA", "testB")
    train_splits = ("train",)
    expected_counts = {
        "val": {"refs": 3811, "images": 1500},
        "testA": {"refs": 1975, "images": 750},
        "testB": {"refs": 1810, "images": 750},
    }


@SUITES.register("refcoco+")
class RefCOCOPlus(ReferSuite):
    """RefCOCO+ (UNC splits)."""

    name = "refcoco+"
    dataset = "refcoco+"
    split_by = "unc"
    valid_split_by = ("unc",)
    splits = ("val", "testA", "testB")
    train_splits = ("train",)
    expected_counts = {"val": {"images": 1500}, "testA": {"images": 750}, "testB": {"images": 750}}


@SUITES.register("refcocog")
class RefCOCOg(ReferSuite):
    """RefCOCOg (UMD splits by default)."""

    name = "refcocog"
    dataset = "refcocog"
    split_by = "umd"
    valid_split_by = ("umd", "google")
    splits = ("val", "test")
    train_splits = ("train",)
    expected_counts = {"val": {"images": 1300}, "test": {"images": 2600}}
