"""RLE validation: counts decoded without pycocotools, checked to tile h x w exactly, bad ones refused."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bench.masks import (
    RLEError,
    RleTarget,
    coco_rle,
    counts_valid,
    decode_rle,
    encode_rle,
    rle_area,
    rle_counts,
    segmentation_to_mask,
    segmentation_to_rle,
)


def naive_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask in column-major order, starting with a (possibly empty) run of zeros."""
    runs, current, length = [], 0, 0
    for value in mask.flatten(order="F").astype(int):
        if value != current:
            runs.append(length)
            current, length = value, 0
        length += 1
    return [*runs, length]


def coco_string(counts: list[int]) -> str:
    """COCO's compressed counts, written as maskApi.c rleToString does (any integers, valid or not)."""
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(chars)


def random_masks(rng, count):
    masks = [np.zeros((1, 1), bool), np.ones((3, 5), bool), np.zeros((4, 2), bool)]
    for _ in range(count):
        h, w = rng.integers(1, 60, size=2)
        masks.append(rng.random((h, w)) < rng.random())
        yy, xx = np.mgrid[0:h, 0:w]
        masks.append((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h * rng.random()) ** 2)  # long runs, large deltas
    return masks


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_match_a_naive_run_length_encoding(seed):
    for mask in random_masks(np.random.default_rng(seed), 60):
        expected = naive_runs(mask)
        compressed = encode_rle(mask)
        assert coco_string(expected) == compressed["counts"]  # the helper writes what pycocotools writes
        assert rle_counts(compressed).tolist() == expected
        assert rle_counts({"size": list(mask.shape), "counts": expected}).tolist() == expected
        assert (decode_rle(compressed) == mask).all()
        assert (decode_rle({"size": list(mask.shape), "counts": expected}) == mask).all()


BAD_RLES = {
    "short": ({"size": [4, 4], "counts": coco_string([3, 5])}, "cover 8 pixels"),
    "short uncompressed": ({"size": [4, 4], "counts": [3, 5]}, "cover 8 pixels"),
    "long": ({"size": [2, 2], "counts": coco_string([3, 5])}, "cover 8 pixels"),
    "negative": ({"size": [4, 4], "counts": coco_string([10, 4, -2, 2, 2])}, "negative"),
    "negative uncompressed": ({"size": [2, 2], "counts": [5, -1]}, "[0,"),
    "overflowing": ({"size": [4, 4], "counts": coco_string([2**40, 16 - 2**40])}, "overflows"),
    "overflowing uncompressed": ({"size": [4, 4], "counts": [2**70, 2]}, "[0,"),
    "non-ASCII": ({"size": [4, 4], "counts": "0é"}, "not ASCII"),
    "garbage char": ({"size": [4, 4], "counts": "0 P"}, "' ' at position 1"),
    "garbage char above 'o'": ({"size": [4, 4], "counts": "~"}, "'~' at position 0"),
    "unterminated": ({"size": [4, 4], "counts": "P"}, "ends inside a run"),
    "empty counts": ({"size": [4, 4], "counts": ""}, "cover 0 pixels"),
    "size of strings": ({"size": ["4", "4"], "counts": "P0"}, "size must be"),
    "negative size": ({"size": [-4, 4], "counts": "P0"}, "size must be"),
    "size of three": ({"size": [4, 4, 1], "counts": "P0"}, "size must be"),
    "float counts": ({"size": [2, 2], "counts": [1.5, 2.5]}, "list of integers"),
    "no counts": ({"size": [2, 2]}, "expected an RLE"),
}


@pytest.mark.parametrize("name", sorted(BAD_RLES))
def test_bad_rles_are_refused_with_the_reason(name):
    rle, reason = BAD_RLES[name]
    with pytest.raises(RLEError) as info:
        rle_counts(rle)
    assert reason in str(info.value)
    with pytest.raises(RLEError):
        decode_rle(rle)  # never handed to pycocotools, which would read past the counts or raise raw errors


def test_a_short_rle_never_reaches_pycocotools(monkeypatch):
    calls = []
    monkeypatch.setattr(mask_utils, "decode", lambda *a: calls.append(a))
    with pytest.raises(RLEError):
        segmentation_to_mask({"size": [300, 300], "counts": coco_string([10, 20])}, 300, 300)
    assert calls == []


def test_a_ground_truth_rle_of_another_size_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(mask_utils, "decode", lambda *a: pytest.fail("decoded an RLE of the wrong size"))
    huge = {"size": [100_000, 100_000], "counts": [0, 2**32 - 1, 2**32 - 1, 10**10 - 2 * (2**32 - 1)]}
    with pytest.raises(RLEError, match=r"RLE size \(100000, 100000\) != image size \(4, 4\)"):
        segmentation_to_rle(huge, 4, 4)


def test_zero_runs_and_a_leading_foreground_are_valid():
    rle = {"size": [2, 3], "counts": [0, 2, 0, 1, 3]}  # zero-length runs in the middle are legal in COCO RLE
    assert rle_area(coco_rle(rle)) == 3
    assert decode_rle(rle).flatten(order="F").tolist() == [True, True, True, False, False, False]


def test_dense_target_in_rle_space_keeps_foreground_and_ignore_apart():
    target = np.array([[0, 1, 1], [255, 1, 0], [255, 0, 0]], np.uint8)
    rle_target = RleTarget.from_dense(target, 255)
    assert rle_target.size == (3, 3) and rle_target.area == 3
    assert (mask_utils.decode(rle_target.foreground) == (target == 1)).all()
    assert (mask_utils.decode(rle_target.ignore) == (target == 255)).all()
    assert RleTarget.from_dense(np.ones((2, 2), np.uint8), 255).ignore is None


def _accepted(rle) -> bool:
    try:
        rle_counts(rle)
    except RLEError:
        return False
    return True


def _fuzzed(rng, rle):
    """`rle` broken (or not) in one of the ways a hostile or buggy file could: a character changed, dropped,
    added or cut off, the size changed, or counts of any sign and size written out (summing to the size or not)."""
    counts, (h, w) = list(rle["counts"]), rle["size"]
    kind = rng.integers(0, 7)
    if kind == 0 and counts:
        counts[rng.integers(len(counts))] = chr(rng.integers(32, 127))
    elif kind == 1 and counts:
        del counts[rng.integers(len(counts))]
    elif kind == 2:
        counts.insert(rng.integers(len(counts) + 1), chr(rng.integers(48, 112)))
    elif kind == 3 and counts:
        counts = counts[: rng.integers(len(counts))]
    elif kind == 4:
        return {"size": [int(h), int(w) + int(rng.integers(-1, 2))], "counts": "".join(counts)}
    elif kind == 5:
        runs = [int(v) for v in rng.integers(-3, 2**34 if rng.random() < 0.3 else 40, size=rng.integers(0, 9))]
        total = sum(runs)
        size = [1, total] if total >= 0 and rng.random() < 0.8 else [2, 3]
        return {"size": size, "counts": coco_string(runs)}
    elif kind == 6:  # a foreign shape: counts as a list, bytes, a tuple size, an extra key
        shape = rng.integers(0, 4)
        if shape == 0:
            return {"size": list(rle["size"]), "counts": rle_counts(rle).tolist() if _accepted(rle) else [1, 2]}
        if shape == 1:
            return {"size": list(rle["size"]), "counts": rle["counts"].encode()}
        if shape == 2:
            return {"size": tuple(rle["size"]), "counts": rle["counts"]}
        return {**rle, "extra": 1}
    return {"size": [int(h), int(w)], "counts": "".join(counts)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_validation_agrees_with_rle_counts(seed):
    """counts_valid is only ever trusted where it says True, and it must say True exactly where rle_counts
    accepts: on valid masks, fuzzed ones and foreign shapes, in chunks of any size."""
    rng = np.random.default_rng(seed)
    valid = [encode_rle(mask) for mask in random_masks(rng, 80)]
    rles = valid + [_fuzzed(rng, rle) for rle in valid for _ in range(4)] + list(BAD_RLES[k][0] for k in BAD_RLES)
    rles += [{"size": [0, 5], "counts": ""}, {"size": [0, 0], "counts": "0"}, {"size": [1, 1], "counts": "10"},
             {"size": [2**20, 2**13], "counts": coco_string([2**33 - 1, 1])}]  # 2**33 pixels: rle_counts' job
    order = rng.permutation(len(rles))
    rles = [rles[i] for i in order]
    expected = np.array([_accepted(rle) for rle in rles])
    assert 0.2 < expected.mean() < 0.8  # both outcomes are well represented
    for chunk in (1, 7, 64, len(rles)):
        got = np.concatenate([counts_valid(rles[i:i + chunk]) for i in range(0, len(rles), chunk)])
        certain = {i for i in np.flatnonzero(got)}
        assert certain <= set(np.flatnonzero(expected))  # never trusted where rle_counts refuses
        plain = [i for i, rle in enumerate(rles) if type(rle) is dict and set(rle) == {"size", "counts"}
                 and isinstance(rle["counts"], str) and isinstance(rle["size"], list) and len(rle["size"]) == 2
                 and all(type(v) is int and v >= 0 for v in rle["size"]) and rle["size"][0] * rle["size"][1] < 2**32]
        assert (got[plain] == expected[plain]).all()  # and certain of every plain one it accepts
    assert counts_valid([]).tolist() == []
