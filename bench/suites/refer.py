"""RefCOCO, RefCOCO+ and RefCOCOg read from the refer API's files (refs(*.p) + COCO instances.json).

Every sentence of every ref of a split is one sample (LISA's protocol); its sample_id is the
refer sentence id `str(sent_id)`, which is unique within a dataset and stable across copies.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from pycocotools import mask as mask_utils

from bench.errors import BenchError, DataFormatError, DataNotFoundError, SampleError
from bench.io import JSON_LIMIT, open_binary, read_text
from bench.masks import counts_valid, segmentation_to_rle
from bench.safe_pickle import is_id, load_refs_pickle
from bench.suites.base import SUITES, Sample, Suite
from bench.suites.writers import instances_path, refs_path

DATA_ROOT_ENV = "BENCH_DATA_ROOT"
FINGERPRINT_CHARS = 16
_VALIDATE_BATCH = 512  # ground-truth RLEs whose counts are checked together

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
            f"no data root (pass --data-root DIR or set {DATA_ROOT_ENV})", expected_layout(None, layout)
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
            with open_binary(path) as f:
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


# A ref as the samples need it, in a tuple: the refs pickle's dicts (tokens, raw sentences, file names...) are
# dropped as soon as the file is read, so memory holds a few hundred bytes a ref, not kilobytes.
_SPLIT, _REF_ID, _ANN_ID, _IMAGE_ID, _CATEGORY_ID, _SENTENCES = range(6)  # _SENTENCES: ((sent_id, sent), ...)


@dataclass(frozen=True)
class _ReferFiles:
    """The refs pickle and instances.json of one (dataset, split_by), kept compact: refs as tuples, images as
    their id, size and file name, annotations as their category, crowd flag and segmentation (polygons as
    arrays of doubles, exact)."""

    refs: list[tuple[Any, ...]]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, dict[str, Any]]
    refs_file: Path
    instances_file: Path


def _compact_ref(ref: dict[str, Any]) -> tuple[Any, ...]:
    sentences = tuple((sentence["sent_id"], sentence["sent"]) for sentence in ref["sentences"])
    return ref["split"], ref["ref_id"], ref["ann_id"], ref["image_id"], ref.get("category_id"), sentences


_IMAGE_KEYS = ("id", "height", "width", "file_name")
_ANNOTATION_KEYS = ("category_id", "iscrowd", "image_id")


def _compact_image(image: dict[str, Any]) -> dict[str, Any]:
    return {key: image[key] for key in _IMAGE_KEYS if key in image}


def _compact_annotation(annotation: dict[str, Any]) -> dict[str, Any]:
    compact = {key: annotation[key] for key in _ANNOTATION_KEYS if key in annotation}
    if "segmentation" in annotation:
        compact["segmentation"] = _packed_segmentation(annotation["segmentation"])
    return compact


def _packed_segmentation(segmentation: Any) -> Any:
    """Polygons [[x, y, ...], ...] as a tuple of array('d') (a third of the memory of lists of floats; the
    same doubles pycocotools converts them to); anything else as it is."""
    if isinstance(segmentation, list) and segmentation and all(
        isinstance(part, list) and all(type(v) is float for v in part) for part in segmentation
    ):
        return tuple(array("d", part) for part in segmentation)
    return segmentation


def _unpacked_segmentation(segmentation: Any) -> Any:
    if isinstance(segmentation, tuple):
        return [part.tolist() for part in segmentation]
    return segmentation


class ReferSuite(Suite):
    """One refer dataset; subclasses set dataset, split_by, splits, valid_split_by and expected_counts.

    Options: split_by (one of valid_split_by; default the class's split_by). Expected counts apply to
    the default split_by only; a mismatch (or an empty split) is recorded with self.warn.
    """

    dataset: ClassVar[str]
    split_by: str  # class default; an instance may override it with the split_by option
    valid_split_by: ClassVar[tuple[str, ...]]
    expected_counts: ClassVar[dict[str, dict[str, int]]] = {}  # split -> {"refs": n, "images": n}
    objects_rule = "every annotation of the image in instances.json, the referred object's and all others'"

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
        self._split_refs: dict[str, list[tuple[Any, ...]]] = {}
        self._fingerprint: str | None = None
        self._last_target: tuple[int, Any] | None = None  # (ann_id, RLE or the error): sentences of a ref share it
        self._image_places: dict[Any, tuple[Path, str | None]] = {}  # image id -> (path, refusal)
        self._valid_rles: set[Any] = set()  # ids of RLE annotations whose counts passed counts_valid
        self._image_annotations: dict[Any, list[Any]] | None = None  # image id -> its annotation ids

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
        return list(self.iter_samples(split))

    def iter_samples(self, split: str) -> Iterator[Sample]:
        """The split's samples, built one at a time from the compact refs (the whole split is checked first,
        so a malformed file is refused before the first sample)."""
        if split not in self.splits + self.train_splits:
            self.samples(split)  # raises the unknown-split error
        refs = self._checked_split(split)
        files = self._parsed_files()
        image_dir = self.image_dir()
        for ref in refs:
            image, annotation = files.images[ref[_IMAGE_ID]], files.annotations[ref[_ANN_ID]]
            for sent_id, text in ref[_SENTENCES]:
                yield self._make_sample(str(sent_id), split, image_dir, image, annotation, ref, text)

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
            refs = [_compact_ref(ref) for ref in load_refs_pickle(refs_file)]
            instances = _read_instances(instances_file)
            images = {image["id"]: _compact_image(image) for image in instances["images"]}
            annotations = {ann["id"]: _compact_annotation(ann) for ann in instances.pop("annotations")}
            del instances
            self._files = _ReferFiles(refs=refs, images=images, annotations=annotations, refs_file=refs_file,
                                      instances_file=instances_file)
        return self._files

    def _checked_split(self, split: str) -> list[tuple[Any, ...]]:
        """The split's refs, each checked against instances.json, sentence ids checked unique (once a split)."""
        if split not in self._split_refs:
            files = self._parsed_files()
            image_dir = self.image_dir()
            if not image_dir.is_dir():
                raise DataNotFoundError(image_dir, expected_layout(self.data_root, REFER_LAYOUT))
            refs = [ref for ref in files.refs if split_matches(split, ref[_SPLIT])]
            seen_ids: set[str] = set()
            for ref in refs:
                _lookup(files, ref)
                for sent_id, _ in ref[_SENTENCES]:
                    sample_id = str(sent_id)
                    if sample_id in seen_ids:
                        raise DataFormatError(f"{files.refs_file}: sent_id {sample_id} occurs twice in split {split}")
                    seen_ids.add(sample_id)
            del seen_ids
            self._check_counts(split, refs)
            self._validate_rles(files, refs)
            self._split_refs[split] = refs
        return self._split_refs[split]

    def _validate_rles(self, files: _ReferFiles, refs: list[tuple[Any, ...]]) -> None:
        """Check the counts of the refs' RLE annotations together (`counts_valid`, in batches); those it is
        certain of are not checked again one by one when their target is made, the others are (and fail
        their samples with the reason)."""
        ids = list(dict.fromkeys(ref[_ANN_ID] for ref in refs
                                 if isinstance(files.annotations[ref[_ANN_ID]]["segmentation"], dict)))
        for start in range(0, len(ids), _VALIDATE_BATCH):
            chunk = ids[start:start + _VALIDATE_BATCH]
            certain = counts_valid([files.annotations[ann_id]["segmentation"] for ann_id in chunk])
            self._valid_rles.update(ann_id for ann_id, ok in zip(chunk, certain, strict=True) if ok)

    def _target_rle(self, ann_id: int, segmentation: Any, height: int, width: int) -> dict[str, Any]:
        """The annotation's RLE; the last one is kept, since the sentences of one ref follow each other."""
        if self._last_target is None or self._last_target[0] != ann_id:
            try:
                made: Any = segmentation_rle(_unpacked_segmentation(segmentation), height, width,
                                             ann_id in self._valid_rles)  # validated
            except Exception as exc:  # noqa: BLE001 - raised again for every sample of this annotation
                made = exc
            self._last_target = (ann_id, made)
        made = self._last_target[1]
        if isinstance(made, Exception):
            raise made
        return made

    def _image_place(self, image_dir: Path, image: dict[str, Any]) -> tuple[Path, str | None]:
        """The image's path and why it is refused (None: it is not), once per image: the sentences of its refs
        share them."""
        place = self._image_places.get(image["id"])
        if place is None:
            file_name = image["file_name"]
            error = None if _stays_inside(file_name) else \
                f"file_name {file_name!r} of image {image['id']} leaves the image directory: refused"
            place = self._image_places[image["id"]] = (image_dir / file_name, error)
        return place

    def _make_sample(self, sample_id: str, split: str, image_dir: Path, image: dict[str, Any],
                     annotation: dict[str, Any], ref: tuple[Any, ...], text: str) -> Sample:
        """One sentence of one ref; the target is made only when asked for (after Sample checks the size)."""
        height, width = image["height"], image["width"]
        segmentation, ann_id = annotation["segmentation"], ref[_ANN_ID]

        def load_target_rle() -> dict[str, Any]:
            return self._target_rle(ann_id, segmentation, height, width)

        def load_target() -> np.ndarray:
            return mask_utils.decode(load_target_rle()).astype(np.uint8)

        def load_objects() -> list[np.ndarray]:
            return self._object_masks(ref[_IMAGE_ID], height, width)

        image_path, image_error = self._image_place(image_dir, image)
        return Sample(
            sample_id=sample_id,
            split=split,
            image_path=image_path,
            text=text,
            height=height,
            width=width,
            load_target=load_target,
            load_target_rle=load_target_rle,
            image_error=image_error,
            load_objects=load_objects,
            meta={
                "ref_id": ref[_REF_ID],
                "ann_id": ann_id,
                "image_id": ref[_IMAGE_ID],
                "category_id": annotation.get("category_id", ref[_CATEGORY_ID]),
                "iscrowd": int(annotation.get("iscrowd", 0)),
            },
        )

    def _object_masks(self, image_id: Any, height: int, width: int) -> list[np.ndarray]:
        """Every annotation of the image in instances.json as a bool mask, in the file's order."""
        files = self._parsed_files()
        if self._image_annotations is None:
            self._image_annotations = {}
            for ann_id, annotation in files.annotations.items():
                self._image_annotations.setdefault(annotation.get("image_id"), []).append(ann_id)
        masks = []
        for ann_id in self._image_annotations.get(image_id, []):
            segmentation = files.annotations[ann_id].get("segmentation")
            if segmentation is None:
                raise SampleError(f"{files.instances_file}: annotation {ann_id} of image {image_id} has no "
                                  "'segmentation'")
            rle = segmentation_rle(_unpacked_segmentation(segmentation), height, width, ann_id in self._valid_rles)
            masks.append(mask_utils.decode(rle).astype(bool))
        return masks

    def _check_counts(self, split: str, refs: list[tuple[Any, ...]]) -> None:
        """Warn when a split is empty or, under the default split_by, differs from the published size."""
        found = {"refs": len(refs), "images": len({ref[_IMAGE_ID] for ref in refs})}
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
        instances = json.loads(read_text(path, JSON_LIMIT), object_hook=_packing_segmentations)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # an integer of too many digits, nesting too deep
        raise DataFormatError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(instances, dict) or any(
        not isinstance(instances.get(k), list) or not all(isinstance(x, dict) and is_id(x.get("id"))
                                                          for x in instances[k])
        for k in ("images", "annotations")
    ):
        raise DataFormatError(f"{path}: expected a COCO object with lists 'images' and 'annotations' of "
                              "objects with an integer or string 'id'")
    return instances


def _packing_segmentations(obj: dict[str, Any]) -> dict[str, Any]:
    """json object_hook: an object's polygon `segmentation` packed (`_packed_segmentation`) as soon as the
    object is parsed, so the lists of floats of all annotations are never held at once (they are most of
    instances.json's parsed size)."""
    if "segmentation" in obj:
        obj["segmentation"] = _packed_segmentation(obj["segmentation"])
    return obj


def _lookup(files: _ReferFiles, ref: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The COCO image and annotation a ref points at; DataFormatError if instances.json lacks them."""
    image = files.images.get(ref[_IMAGE_ID])
    annotation = files.annotations.get(ref[_ANN_ID])
    if image is None or annotation is None:
        missing = f"image {ref[_IMAGE_ID]}" if image is None else f"annotation {ref[_ANN_ID]}"
        raise DataFormatError(f"{files.instances_file}: has no {missing} (needed by ref {ref[_REF_ID]})")
    if not all(isinstance(image.get(key), int) for key in ("height", "width")) or not isinstance(
        image.get("file_name"), str
    ):
        raise DataFormatError(f"{files.instances_file}: image {ref[_IMAGE_ID]} needs integer 'height' and "
                              "'width' and a string 'file_name'")
    if "segmentation" not in annotation:
        raise DataFormatError(f"{files.instances_file}: annotation {ref[_ANN_ID]} has no 'segmentation'")
    return image, annotation


def _stays_inside(file_name: str) -> bool:
    """True for a relative path without '..' (a file_name must name a file below the image directory)."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    return bool(file_name) and not path.is_absolute() and ".." not in path.parts


def segmentation_rle(segmentation: Any, height: int, width: int, validated: bool = False) -> dict[str, Any]:
    """A COCO segmentation as one pycocotools RLE: polygons, an RLE (compressed or not), or a list of RLEs (as
    LISA's refer code accepts), parts merged with OR; an RLE of another size fails before it is decoded.
    `validated`: a single RLE whose counts already passed `counts_valid`."""
    if isinstance(segmentation, list) and segmentation and all(isinstance(part, dict) for part in segmentation):
        return mask_utils.merge([segmentation_to_rle(part, height, width) for part in segmentation])
    return segmentation_to_rle(segmentation, height, width, validated=validated)


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
