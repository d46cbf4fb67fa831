"""Binary masks: COCO RLE validated before pycocotools sees it, RLE-space ground truth, and polygons to masks.

pycocotools trusts an RLE blindly: counts that cover fewer pixels than h x w are filled from uninitialised
memory, and garbage strings raise whatever the C code trips over. So every RLE passes `rle_counts` first,
which decodes the counts in numpy and checks that they are non-negative and sum exactly to h x w.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

# pycocotools' decode trips numpy 2's copy-keyword deprecation; harmless and noisy
warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)

# pycocotools shifts each 5-bit group as a C int: 6 groups (30 bits, one a sign bit) are all it decodes
# reliably; its runs are 32-bit unsigned
_MAX_CHARS_PER_COUNT = 6
_MAX_RUN = (1 << 32) - 1


class RLEError(ValueError):
    """An RLE that must not be decoded: malformed, or its counts do not cover exactly h x w pixels."""


def rle_size(rle: Any) -> tuple[int, int]:
    """(h, w) of an RLE dict; RLEError if it is not {"size": [h, w], "counts": str | list}."""
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), (str, bytes, list)):
        raise RLEError("expected an RLE {'size': [h, w], 'counts': str}")
    size = rle.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise RLEError(f"size must be [h, w] with non-negative integers, got {size!r}")
    return int(size[0]), int(size[1])


def rle_counts(rle: Any) -> np.ndarray:
    """The run lengths of an RLE (compressed string or uncompressed list), checked to tile h x w exactly."""
    h, w = rle_size(rle)
    counts = rle["counts"]
    runs = _list_counts(counts) if isinstance(counts, list) else _string_counts(counts)
    if runs.size and runs.min() < 0:
        raise RLEError(f"run {int(np.argmax(runs < 0))} is negative ({int(runs.min())})")
    if runs.size and runs.max() > _MAX_RUN:
        raise RLEError(f"run {int(np.argmax(runs > _MAX_RUN))} overflows ({int(runs.max())} pixels)")
    total = int(runs.sum())
    if total != h * w:
        raise RLEError(f"counts cover {total} pixels, size {h}x{w} needs {h * w}")
    return runs


def _list_counts(counts: list) -> np.ndarray:
    """Uncompressed counts: a list of integers."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        raise RLEError("uncompressed counts must be a list of integers")
    if any(not 0 <= v <= _MAX_RUN for v in counts):
        raise RLEError(f"uncompressed counts must lie in [0, {_MAX_RUN}]")
    return np.asarray(counts, dtype=np.int64)


def _string_counts(counts: str | bytes) -> np.ndarray:
    """COCO's compressed counts (maskApi.c rleFrString), decoded in numpy without trusting the string.

    Each char minus 48 carries 5 bits, least significant first; bit 0x20 continues the number, bit 0x10 of
    its last char is the sign; from the fourth count on, a count is stored as the difference to counts[i-2].
    """
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise RLEError("counts string is not ASCII") from None
    chars = np.frombuffer(counts, dtype=np.uint8) - np.uint8(48)  # below '0' wraps above 63
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if chars.max() > 63:
        position = int(np.argmax(chars > 63))
        raise RLEError(f"counts string has {chr(counts[position])!r} at position {position}, outside '0'..'o'")
    last = (chars & 0x20) == 0
    if not last[-1]:
        raise RLEError("counts string ends inside a run")
    ends = np.flatnonzero(last)
    if ends.size == chars.size:  # every count fits one character
        values = (chars & 0x1F).astype(np.int64)
        values[(chars & 0x10) != 0] -= 32
    else:
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        if lengths.max() > _MAX_CHARS_PER_COUNT:
            raise RLEError(f"run {int(np.argmax(lengths > _MAX_CHARS_PER_COUNT))} overflows (too many characters)")
        shift = 5 * (np.arange(chars.size) - np.repeat(starts, lengths))
        values = np.add.reduceat((chars & 0x1F).astype(np.int64) << shift, starts)
        negative = (chars[ends] & 0x10) != 0
        values[negative] -= np.left_shift(1, 5 * lengths[negative])
    if values.size > 3:
        values[3::2] = values[1] + np.cumsum(values[3::2])
    if values.size > 4:
        values[4::2] = values[2] + np.cumsum(values[4::2])
    return values


def coco_rle(rle: Any, validated: bool = False) -> dict[str, Any]:
    """A validated RLE in pycocotools' form {"size": [h, w], "counts": bytes}; RLEError if it is bad.

    `validated`: `rle_counts` already passed on this very object (e.g. when its line was read)."""
    if not validated:
        rle_counts(rle)
    h, w = rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def json_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """A pycocotools RLE -> JSON-ready {"size": [h, w], "counts": str}."""
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Boolean HxW mask -> JSON-ready COCO RLE {"size": [h, w], "counts": str}."""
    return json_rle(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> boolean HxW mask; validated first."""
    return mask_utils.decode(coco_rle(rle)).astype(bool)


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict[str, Any]:
    """COCO polygon list [[x1, y1, x2, y2, ...], ...] -> one pycocotools RLE; parts are merged with OR."""
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygon list -> boolean mask; parts are merged with OR."""
    return mask_utils.decode(polygons_to_rle(polygons, height, width)).astype(bool)


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO annotation's `segmentation` (polygon list, RLE, or uncompressed RLE) of an image of height x
    width -> one pycocotools RLE; an RLE of another size is an RLEError, raised before anything is allocated."""
    if isinstance(segmentation, list):
        return polygons_to_rle(segmentation, height, width)
    if isinstance(segmentation, dict):
        if rle_size(segmentation) != (height, width):
            raise RLEError(f"RLE size {rle_size(segmentation)} != image size {(height, width)}")
        return coco_rle(segmentation)
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO annotation's `segmentation` -> boolean height x width mask."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


def rle_area(rle: dict[str, Any]) -> int:
    """Foreground pixels of a pycocotools RLE."""
    return int(mask_utils.area(rle))


def rle_intersection_area(a: dict[str, Any], b: dict[str, Any]) -> int:
    """|a AND b| of two pycocotools RLEs of one size, without decoding either."""
    return int(mask_utils.area(mask_utils.merge([a, b], intersect=True)))


@dataclass(frozen=True)
class RleTarget:
    """Ground truth in RLE space: the scored foreground (ignored pixels left out) and the ignored region."""

    size: tuple[int, int]
    foreground: dict[str, Any]  # pycocotools RLE
    area: int
    ignore: dict[str, Any] | None = None  # pycocotools RLE, None when nothing is ignored

    @classmethod
    def from_rle(cls, rle: dict[str, Any]) -> RleTarget:
        """A foreground-only target (refer suites: polygons or RLE, nothing ignored)."""
        return cls((int(rle["size"][0]), int(rle["size"][1])), rle, rle_area(rle))

    @classmethod
    def from_dense(cls, target: np.ndarray, ignore_value: int) -> RleTarget:
        """From a uint8 target (0, 1, ignore_value): foreground is non-zero and not ignored."""
        ignored = target == ignore_value
        foreground = mask_utils.encode(np.asfortranarray(((target != 0) & ~ignored).astype(np.uint8)))
        ignore = mask_utils.encode(np.asfortranarray(ignored.astype(np.uint8))) if ignored.any() else None
        return cls(target.shape, foreground, rle_area(foreground), ignore)
