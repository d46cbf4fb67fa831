"""Benchmark data written in the real on-disk formats: a COCO-sized refer set with predictions, and a
synthref-sized refer set with images for `bench run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from bench.suites.writers import coco_image_name, make_ref, write_refer_dataset

SENTENCES_PER_REF = 2


def _polygon(rng: np.random.Generator, cy: float, cx: float, ry: float, rx: float, points: int = 24) -> list[float]:
    """A wobbly ellipse as a COCO polygon [x1, y1, x2, y2, ...]."""
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    wobble = 1 + 0.1 * rng.standard_normal(points)
    xs, ys = cx + rx * wobble * np.cos(angles), cy + ry * wobble * np.sin(angles)
    return np.stack([xs, ys], 1).ravel().round(2).tolist()


def write_coco_sized_set(root: Path, samples: int, height: int = 480, width: int = 640, seed: int = 0,
                         images: int | None = None) -> tuple[Path, Path]:
    """(data root, predictions file): `samples` sentences (two per ref) on height x width images, ground truth
    half polygons and half compressed RLE (as COCO mixes them), predictions the ground truth moved a little.
    `images` bounds the number of distinct images (default one per ref); their files are grey squares."""
    rng = np.random.default_rng(seed)
    refer = Path(root) / "refer_seg"
    image_dir = refer / "images" / "mscoco" / "images" / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    n_refs = -(-samples // SENTENCES_PER_REF)
    n_images = images or n_refs
    image_records = [{"id": i, "file_name": coco_image_name(i), "height": height, "width": width}
                     for i in range(1, n_images + 1)]
    annotations, refs, lines = [], [], []
    for ref_id in range(1, n_refs + 1):
        cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
        ry, rx = rng.uniform(0.05, 0.25) * height, rng.uniform(0.05, 0.25) * width
        polygon = _polygon(rng, cy, cx, ry, rx)
        gt = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
        segmentation = [polygon] if ref_id % 2 else {"size": [height, width], "counts": gt["counts"].decode()}
        image_id = (ref_id - 1) % n_images + 1
        annotations.append({"id": ref_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                            "segmentation": segmentation, "area": float(mask_utils.area(gt)), "bbox": [0, 0, 1, 1]})
        sentences = [(ref_id * 10 + k, f"object {ref_id} phrasing {k}") for k in range(SENTENCES_PER_REF)]
        refs.append(make_ref(ref_id, ref_id, image_id, 1, "val", sentences))
        for sent_id, _ in sentences:
            moved = _polygon(rng, cy + rng.normal(0, 0.02 * height), cx + rng.normal(0, 0.02 * width), ry, rx)
            pred = mask_utils.merge(mask_utils.frPyObjects([moved], height, width))
            lines.append(json.dumps({"sample_id": str(sent_id),
                                     "segmentation": {"size": [height, width], "counts": pred["counts"].decode()}}))
    write_refer_dataset(refer, "refcoco", "unc", image_records, annotations, refs, [{"id": 1, "name": "object"}])
    for record in image_records:
        path = image_dir / record["file_name"]
        if not path.exists():
            _write_grey_jpeg(path, height, width)
    predictions = Path(root) / "predictions.jsonl"
    predictions.write_text("\n".join(lines[:samples]) + "\n")
    return Path(root), predictions


def _write_grey_jpeg(path: Path, height: int, width: int) -> None:
    from PIL import Image

    Image.new("RGB", (width, height), (128, 128, 128)).save(path, format="JPEG")
