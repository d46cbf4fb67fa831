"""Binary masks: COCO RLE validated before pycocotools sees it, RLE-space ground truth, and polygons to masks.

pycocotools trusts an RLE blindly: counts that cover fewer pixels than h x w are filled from uninitialised
memory, and garbage strings raise whatever the C code trips over. So every RLE passes `rle_counts` first,
which decodes the counts in numpy and checks that they are non-negative and sum exactly to h x w.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
POLYGON_REACH = 4  # polygon coordinates lie within this many image sizes of the image
POLYGON_OUTLINE = 256  # a polygon outline is at most this many times the image's height + width


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


def counts_valid(rles: Sequence[Any]) -> np.ndarray:
    """For each RLE, True where `rle_counts` is certain to accept it; vectorised over all of them at once.

    The compressed strings are concatenated into one array and decoded together: counts end at the characters
    without the continuation bit, most counts are one character (the rest are assembled on their own), and
    the delta chain (from the fourth count of a string on, counts[i] = value[i] + counts[i-2]) is two
    cumulative sums, over the values at even and at odd positions, less their sum where each string began.
    That is a few passes over the characters instead of a dozen numpy calls per mask.

    False means "not certain": every shape other than {"size": [int, int], "counts": str}, sizes of 2**32
    pixels or more, and every string `rle_counts` refuses. A caller runs `rle_counts` on those, which
    accepts or raises with the reason, so the decisions are rle_counts' own (tests/bench/metrics/test_masks.py
    checks that the two agree on valid and fuzzed RLEs)."""
    ok = np.zeros(len(rles), dtype=bool)
    strings, which, pixels = [], [], []
    for i, rle in enumerate(rles):
        if type(rle) is not dict or len(rle) != 2:
            continue
        counts, size = rle.get("counts"), rle.get("size")
        if (type(counts) is str and type(size) is list and len(size) == 2 and type(size[0]) is int
                and type(size[1]) is int and size[0] >= 0 and size[1] >= 0 and size[0] * size[1] <= _MAX_RUN):
            strings.append(counts)
            which.append(i)
            pixels.append(size[0] * size[1])
    if strings:
        ok[np.asarray(which, dtype=np.int64)] = _strings_valid(strings, np.asarray(pixels, dtype=np.int64))
    return ok


def _strings_valid(strings: list[str], pixels: np.ndarray) -> np.ndarray:
    """`_string_counts` + `rle_counts`' checks for many counts strings at once (each of at most _MAX_RUN
    pixels, so that non-negative runs summing to the pixels cannot overflow): True where they accept."""
    n = len(strings)
    try:
        buffer = "".join(strings).encode("ascii")
    except UnicodeEncodeError:  # refused; find which strings, then check the others
        return _strings_valid_subset(strings, pixels, np.array([s.isascii() for s in strings], dtype=bool))
    chars = np.frombuffer(buffer, dtype=np.uint8) - np.uint8(48)  # below '0' wraps above 63
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # refused outright: a character outside '0'..'o', a string ending inside a count, a count over 6 characters
    bad = np.zeros(n, dtype=bool)
    if chars.size and chars.max() > 63:
        bad[np.searchsorted(ends, np.flatnonzero(chars > 63), side="right")] = True
        return _strings_valid_subset(strings, pixels, ~bad)
    nonempty = lengths > 0
    bad[nonempty] = chars[ends[nonempty] - 1] >= 32
    if bad.any():
        return _strings_valid_subset(strings, pixels, ~bad)
    value_ends = np.flatnonzero(chars < 32)  # the last character of every count
    value_lengths = np.diff(value_ends, prepend=-1)
    if value_lengths.size and value_lengths.max() > _MAX_CHARS_PER_COUNT:
        too_long = value_ends[value_lengths > _MAX_CHARS_PER_COUNT]
        bad[np.searchsorted(ends, too_long, side="right")] = True
        return _strings_valid_subset(strings, pixels, ~bad)
    # values: a one-character count is its 5 bits sign-extended; longer ones are assembled apart
    values = chars[value_ends].astype(np.int64)
    values ^= 0x10
    values -= 0x10
    long_values = np.flatnonzero(value_lengths > 1)
    if long_values.size:
        last, count = value_ends[long_values], value_lengths[long_values]
        first = last - count + 1
        assembled = np.zeros(long_values.size, dtype=np.int64)
        for k in range(int(count.max())):
            has = count > k
            assembled[has] += (chars[first[has] + k] & 0x1F).astype(np.int64) << (5 * k)
        negative = (chars[last] & 0x10) != 0
        assembled[negative] -= np.left_shift(1, 5 * count[negative])
        values[long_values] = assembled
    # the delta chain per parity: run k (k > f, the string's first count) is the sum of the values of k's
    # parity from f + 1 on; P[p][t] sums the first t values at positions of parity p
    f = np.searchsorted(value_ends, starts)  # each string's first count
    n_values = np.searchsorted(value_ends, ends) - f
    prefix = [np.concatenate(([0], np.cumsum(values[p::2]))) for p in (0, 1)]
    runs_ok = np.ones(n, dtype=bool)
    totals = np.zeros(n, dtype=np.int64)
    has = n_values > 0
    totals[has] = values[f[has]]
    runs_ok[has] = values[f[has]] >= 0
    for p in (0, 1):
        first_t = (f + 1) // 2 if p == 0 else f // 2  # stream indices of the string's positions of parity p
        stop_t = (f + n_values + 1) // 2 if p == 0 else (f + n_values) // 2
        chain_start = np.minimum((f + 2) // 2 if p == 0 else (f + 1) // 2, prefix[p].size - 1)
        base = prefix[p][chain_start]  # the sum before the chain of parity p began (unused if it is empty)
        counts = stop_t - first_t
        # the string's first count itself falls in its own parity's stream, where it reads 0 (checked above)
        runs = prefix[p][1:] - np.repeat(base, counts)
        if runs.size and runs.min() < 0:
            runs_ok[np.searchsorted(stop_t, np.flatnonzero(runs < 0), side="right")] = False
        some = counts > 0
        if some.any():
            totals[some] += np.add.reduceat(runs, first_t[some])
    return runs_ok & (totals == pixels)


def _strings_valid_subset(strings: list[str], pixels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """False where not `keep`; the others checked afresh (without the strings known to be refused)."""
    ok = np.zeros(len(strings), dtype=bool)
    kept = np.flatnonzero(keep)
    if kept.size:
        ok[kept] = _strings_valid([strings[i] for i in kept], pixels[kept])
    return ok


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
    check_polygons(polygons, height, width)
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def check_polygons(polygons: list[Any], height: int, width: int) -> None:
    """RLEError unless every polygon is a flat list of an even number of finite numbers within POLYGON_REACH
    image sizes of the image, and their outline (which pycocotools rasterises point by point, and on which it
    crashes for NaN or huge values) is at most POLYGON_OUTLINE times the image's height + width."""
    reach = POLYGON_REACH * max(height, width, 1)
    outline = 0.0
    for number, polygon in enumerate(polygons, start=1):
        try:
            points = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError):
            raise RLEError(f"polygon {number} holds something other than numbers") from None
        if points.ndim != 1 or points.size % 2:
            raise RLEError(f"polygon {number} is not a flat list of x, y pairs")
        if not np.isfinite(points).all() or np.abs(points).max() > reach:
            raise RLEError(f"polygon {number} has a coordinate that is not finite or lies over {reach} pixels "
                           "from the image")
        xy = points.reshape(-1, 2)
        outline += float(np.abs(np.diff(xy, axis=0, append=xy[:1])).sum())
    if outline > POLYGON_OUTLINE * (height + width):
        raise RLEError(f"polygon outline of {outline:.0f} pixels, over {POLYGON_OUTLINE} x (height + width)")


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygon list -> boolean mask; parts are merged with OR."""
    return mask_utils.decode(polygons_to_rle(polygons, height, width)).astype(bool)


def segmentation_to_rle(segmentation: Any, height: int, width: int, validated: bool = False) -> dict[str, Any]:
    """A COCO annotation's `segmentation` (polygon list, RLE, or uncompressed RLE) of an image of height x
    width -> one pycocotools RLE; an RLE of another size is an RLEError, raised before anything is allocated.
    `validated`: an RLE `segmentation` already passed `rle_counts` or `counts_valid` (as in `coco_rle`)."""
    if isinstance(segmentation, list):
        return polygons_to_rle(segmentation, height, width)
    if isinstance(segmentation, dict):
        if rle_size(segmentation) != (height, width):
            raise RLEError(f"RLE size {rle_size(segmentation)} != image size {(height, width)}")
        return coco_rle(segmentation, validated=validated)
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
