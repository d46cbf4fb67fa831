"""Fixtures every area's tests share: factories of tiny datasets in the real on-disk formats, written with
bench.suites.writers so that the real loaders read them. Area-specific fixtures live in that area's conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.suites.writers import coco_image_name, make_ref, write_reasonseg_sample, write_refer_dataset

# (ann_id, image_id, split, segmentation, sentences as (sent_id, text))
ReferObject = tuple[int, int, str, Any, Sequence[tuple[int, str]]]
TRIANGLE = [{"label": "target", "points": [[4, 4], [20, 4], [20, 20]]}]


def grey_image(image: dict[str, Any]) -> np.ndarray:
    """The default image file of a refer dataset: mid-grey at the size instances.json declares."""
    return np.full((image["height"], image["width"], 3), 128, np.uint8)


def write_refer(
    root: Path,
    images: Mapping[int, tuple[int, int]] | Iterable[dict[str, Any]],
    objects: Iterable[ReferObject],
    *,
    pixels: Callable[[dict[str, Any]], np.ndarray | None] | None = grey_image,
    category: str = "thing",
    dataset: str = "refcoco",
    split_by: str = "unc",
) -> Path:
    """A refer-format dataset in LISA's layout under `root/refer_seg`: `dataset/refs(split_by).p`,
    `dataset/instances.json` and the images in `images/mscoco/images/train2014`; returns `root`.

    `images`: {image_id: (height, width)}, or COCO image dicts written as given (a missing file_name becomes
    COCO's name for the id). `objects`: one annotation (category 1, not crowd) and one ref (ref ids count from
    1) each; an ann_id given again adds a ref to the same annotation. `pixels(image)` is the image file's
    uint8 HxWx3 content, None to write no file; `pixels=None` writes no image files at all."""
    if isinstance(images, Mapping):
        images = [{"id": image_id, "height": h, "width": w} for image_id, (h, w) in images.items()]
    images = [{**image, "file_name": image.get("file_name", coco_image_name(image["id"]))} for image in images]
    refer = root / "refer_seg"
    image_dir = refer / "images" / "mscoco" / "images" / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        content = pixels(image) if pixels is not None else None
        if content is not None:
            Image.fromarray(content).save(image_dir / image["file_name"])
    annotations: dict[int, dict[str, Any]] = {}
    refs = []
    for ref_id, (ann_id, image_id, split, segmentation, sentences) in enumerate(objects, start=1):
        annotations.setdefault(ann_id, {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                        "segmentation": segmentation, "bbox": [0, 0, 1, 1], "area": 1})
        refs.append(make_ref(ref_id, ann_id, image_id, 1, split, list(sentences)))
    write_refer_dataset(refer, dataset, split_by, images, list(annotations.values()), refs,
                        [{"id": 1, "name": category}])
    return root


def write_reasonseg(
    root: Path,
    stem: str,
    *,
    split: str = "val",
    texts: Sequence[str] = ("the thing",),
    shapes: Sequence[dict[str, Any]] = TRIANGLE,
    size: tuple[int, int] = (64, 64),
    fill: int = 0,
    is_sentence: bool = False,
    image_ext: str = ".png",
) -> Path:
    """One ReasonSeg (LabelMe) pair `stem` + `stem.json` under `root/reason_seg/ReasonSeg/split`: a uniform
    image of `size` (height, width), `texts`, the polygons `shapes`; returns the split's folder."""
    split_dir = root / "reason_seg" / "ReasonSeg" / split
    write_reasonseg_sample(split_dir, stem, np.full((*size, 3), fill, np.uint8), list(texts), is_sentence,
                           list(shapes), image_ext=image_ext)
    return split_dir


@pytest.fixture(scope="session")
def refer_dataset() -> Callable[..., Path]:
    """Factory: `refer_dataset(root, images, objects, ...)` writes a refer-format dataset (see `write_refer`)."""
    return write_refer


@pytest.fixture(scope="session")
def reasonseg_sample() -> Callable[..., Path]:
    """Factory: `reasonseg_sample(root, stem, ...)` writes one ReasonSeg pair (see `write_reasonseg`)."""
    return write_reasonseg
