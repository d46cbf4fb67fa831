"""Writers of tiny datasets in the real on-disk formats (refer pickles + COCO json, ReasonSeg LabelMe json).

Used by the synthetic data generator and by tests, so that the real loaders read exactly what the
real datasets look like.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

REFS_PICKLE_PROTOCOL = 2  # the real refs(*.p) files were written by Python 2


def refs_path(refer_root: Path, dataset: str, split_by: str) -> Path:
    """Where the refer API keeps the refs pickle of (dataset, split_by)."""
    return Path(refer_root) / dataset / f"refs({split_by}).p"


def instances_path(refer_root: Path, dataset: str) -> Path:
    """Where the refer API keeps the COCO-style instances file of a dataset."""
    return Path(refer_root) / dataset / "instances.json"


def write_refer_dataset(
    refer_root: Path,
    dataset: str,
    split_by: str,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    refs: list[dict[str, Any]],
    categories: list[dict[str, Any]],
) -> None:
    """Write `refer_root/dataset/refs(split_by).p` (pickle protocol 2) and `instances.json` (COCO style).

    `images` are COCO image dicts (id, file_name, height, width); the image files themselves are
    written by the caller. `refs` entries follow the refer format (ref_id, ann_id, image_id,
    category_id, split, sent_ids, sentences=[{tokens, raw, sent_id, sent}]).
    """
    refs_file = refs_path(refer_root, dataset, split_by)
    refs_file.parent.mkdir(parents=True, exist_ok=True)
    with open(refs_file, "wb") as f:
        pickle.dump(refs, f, protocol=REFS_PICKLE_PROTOCOL)
    instances = {"images": images, "annotations": annotations, "categories": categories}
    instances_path(refer_root, dataset).write_text(json.dumps(instances), encoding="utf-8")


def make_ref(
    ref_id: int, ann_id: int, image_id: int, category_id: int, split: str, sentences: list[tuple[int, str]]
) -> dict[str, Any]:
    """One refer-format ref dict with every field the real pickles carry; sentences are (sent_id, text)."""
    return {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "split": split,
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",  # the refer API's own name; ignored
        "sent_ids": [sent_id for sent_id, _ in sentences],
        "sentences": [
            {"tokens": text.split(), "raw": text, "sent_id": sent_id, "sent": text}
            for sent_id, text in sentences
        ],
    }


def coco_image_name(image_id: int) -> str:
    """The file name COCO train2014 gives image `image_id`."""
    return f"COCO_train2014_{image_id:012d}.jpg"


def write_reasonseg_sample(
    split_dir: Path,
    stem: str,
    image: np.ndarray,
    texts: list[str],
    is_sentence: bool,
    shapes: list[dict[str, Any]],
    image_ext: str = ".jpg",
    encoding: str = "utf-8",
) -> None:
    """Write `split_dir/stem+image_ext` and `split_dir/stem.json` in the ReasonSeg (LabelMe) format.

    `image` is uint8 HxWx3; `shapes` need "label" and "points" ([[x, y], ...]); the remaining
    LabelMe fields are filled in. `encoding` lets tests write the cp1252 files found in the real set.
    """
    from PIL import Image

    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    image_name = stem + image_ext
    pil_format = "PNG" if image_ext.lower() == ".png" else "JPEG"
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(split_dir / image_name, format=pil_format)
    height, width = image.shape[:2]
    annotation = {
        "version": "4.5.6",
        "flags": {},
        "text": list(texts),
        "is_sentence": bool(is_sentence),
        "shapes": [_labelme_shape(shape, image_name) for shape in shapes],
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }
    # ensure_ascii=False so that a non-UTF-8 `encoding` really changes the bytes on disk
    (split_dir / f"{stem}.json").write_text(json.dumps(annotation, ensure_ascii=False), encoding=encoding)


def _labelme_shape(shape: dict[str, Any], image_name: str) -> dict[str, Any]:
    """A LabelMe polygon shape with the fields a real ReasonSeg file has; caller fields win."""
    label = shape["label"]
    return {
        "label": label,
        "labels": [label],
        "points": [[float(x), float(y)] for x, y in shape["points"]],
        "group_id": None,
        "group_ids": [None],
        "shape_type": "polygon",
        "flags": {},
        "image_name": image_name,
        **{k: v for k, v in shape.items() if k not in ("label", "points")},
    }
