"""The naive reference `bench score` is measured against: decode every RLE (ground truth and prediction) to a
dense array and count with numpy AND/OR. Usage: python naive_score.py DATA_ROOT PREDICTIONS

It is what a user would write with the refer API and pycocotools alone, and uses none of the harness's code:
the refs file is read with `pickle.load` as refer.py does (the harness's restricted loader is slower, and
would handicap the reference), and nothing is validated (its inputs are the benchmark's own)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils


def dense(segmentation, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> a dense boolean mask."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def main(data_root: Path, predictions: Path) -> None:
    refer = data_root / "refer_seg" / "refcoco"
    instances = json.loads((refer / "instances.json").read_text())
    images = {image["id"]: image for image in instances["images"]}
    annotations = {a["id"]: a for a in instances["annotations"]}
    gt_of = {}
    with open(refer / "refs(unc).p", "rb") as handle:
        refs = pickle.load(handle)
    for ref in refs:
        for sentence in ref["sentences"]:
            gt_of[str(sentence["sent_id"])] = annotations[ref["ann_id"]]
    inters = unions = 0
    ious = []
    for line in predictions.open():
        record = json.loads(line)
        annotation = gt_of[record["sample_id"]]
        image = images[annotation["image_id"]]
        gt = dense(annotation["segmentation"], image["height"], image["width"])
        pred = dense(record["segmentation"], image["height"], image["width"])
        inter, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
        inters, unions = inters + inter, unions + union
        ious.append(inter / union if union else 1.0)
    print(json.dumps({"ciou": inters / unions, "giou": float(np.mean(ious)), "n": len(ious)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
