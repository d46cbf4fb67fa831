"""Binary-mask helpers: COCO RLE encode/decode (pycocotools) and polygons to masks."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

# pycocotools' decode trips numpy 2's copy-keyword deprecation; harmless and noisy
warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Boolean HxW mask -> JSON-ready COCO RLE {"size": [h, w], "counts": str}."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> boolean HxW mask."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygon list [[x1, y1, x2, y2, ...], ...] -> boolean mask; parts are merged with OR."""
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO annotation's `segmentation` (polygon list, RLE, or uncompressed RLE) -> boolean mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        return decode_rle(segmentation)
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")

