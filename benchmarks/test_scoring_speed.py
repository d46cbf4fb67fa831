"""Scoring throughput: decoding RLE predictions and counting I/U, against a bare-numpy reference in the
same run (pytest-benchmark groups them; read the ratio, not the absolute times). Baseline for the
planned RLE-space scoring."""

from __future__ import annotations

import numpy as np
import pytest

from bench.masks import decode_rle, encode_rle
from bench.metrics import Protocol, intersection_union

N, H, W = 64, 480, 640


@pytest.fixture(scope="module")
def masks():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    preds, targets = [], []
    for _ in range(N):
        cy, cx, r = rng.integers(100, 380), rng.integers(100, 540), rng.integers(30, 90)
        preds.append((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
        targets.append(((yy - cy - 5) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8))
    return [encode_rle(p) for p in preds], preds, targets


@pytest.mark.benchmark(group="score a split")
def test_harness_rle_to_iou(benchmark, masks):
    rles, _, targets = masks
    protocol = Protocol()
    benchmark(lambda: [intersection_union(decode_rle(r), t, protocol) for r, t in zip(rles, targets)])


@pytest.mark.benchmark(group="score a split")
def test_reference_numpy_iou_on_decoded_masks(benchmark, masks):
    _, preds, targets = masks
    benchmark(lambda: [(np.count_nonzero(p & (t > 0)), np.count_nonzero(p | (t > 0))) for p, t in zip(preds, targets)])
