"""`bench score` against the naive reference (decode every RLE to a dense array, numpy AND/OR), both measured
in the same run on the same COCO-sized (480x640) refer-format set: per sample in process, and end to end as
processes (start-up, suite loading, bootstrap CIs and writing included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_measured
from pycocotools import mask as mask_utils

from bench.loading import read_target_rle
from bench.masks import coco_rle, counts_valid, rle_size
from bench.metrics import Protocol, rle_intersection_union
from bench.suites import SUITES

END_TO_END_SAMPLES = 6000
PER_SAMPLE = 500
ROUNDS = 3


@pytest.fixture(scope="module")
def scored_inputs(coco_sets):
    """(samples, their prediction RLEs as read from the file) of the first PER_SAMPLE samples."""
    data_root, predictions = coco_sets(END_TO_END_SAMPLES)
    samples = SUITES.get("refcoco")(data_root=data_root).samples("val")[:PER_SAMPLE]
    by_id = {r["sample_id"]: r["segmentation"] for r in map(json.loads, predictions.open())}
    return samples, [by_id[s.sample_id] for s in samples]


def _naive_dense(segmentation, height, width) -> np.ndarray:
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))).astype(bool)
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


@pytest.mark.benchmark(group="score one sample (480x640)")
def test_harness_scores_in_rle_space(benchmark, scored_inputs):
    samples, rles = scored_inputs
    protocol = Protocol()

    def score():  # as bench score: the RLEs validated together (bench.rundir.predictions.read_lines), then scored
        out = []
        assert counts_valid(rles).all()
        for sample, rle in zip(samples, rles):
            assert rle_size(rle) == (sample.height, sample.width)
            target, _ = read_target_rle(sample, protocol.ignore_value)
            out.append(rle_intersection_union(coco_rle(rle, validated=True), target))
        return out

    benchmark.extra_info.update(samples=len(samples), role="measured", reference="naive per sample")
    benchmark.pedantic(score, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="score one sample (480x640)")
def test_naive_reference_decodes_everything(benchmark, scored_inputs):
    samples, rles = scored_inputs

    def score():
        out = []
        for sample, rle in zip(samples, rles):
            gt = sample.target() != 0
            pred = _naive_dense(rle, sample.height, sample.width)
            out.append((int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))))
        return out

    benchmark.extra_info.update(samples=len(samples), role="reference", name="naive per sample")
    benchmark.pedantic(score, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="bench score end to end (6,000 samples, 480x640)")
def test_bench_score_end_to_end(benchmark, coco_sets, tmp_path):
    data_root, predictions = coco_sets(END_TO_END_SAMPLES)
    args = ["-m", "bench", "score", "--suite", "refcoco", "--split", "val", "--predictions", str(predictions),
            "--data-root", str(data_root), "--out", str(tmp_path / "run"), "--overwrite"]
    measured = benchmark.pedantic(lambda: run_measured(args), rounds=ROUNDS, iterations=1)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["splits"]["val"]
    naive = json.loads(run_measured(["benchmarks/naive_score.py", str(data_root), str(predictions)]).stdout)
    assert metrics["ciou"] == pytest.approx(naive["ciou"], abs=1e-12)  # the same numbers as the reference
    assert metrics["giou"] == pytest.approx(naive["giou"], abs=1e-12)
    benchmark.extra_info.update(samples=END_TO_END_SAMPLES, role="measured", reference="naive end to end",
                                peak_mib=measured.peak_mib)


@pytest.mark.benchmark(group="bench score end to end (6,000 samples, 480x640)")
def test_naive_reference_end_to_end(benchmark, coco_sets):
    data_root, predictions = coco_sets(END_TO_END_SAMPLES)
    measured = benchmark.pedantic(
        lambda: run_measured(["benchmarks/naive_score.py", str(data_root), str(predictions)]), rounds=ROUNDS,
        iterations=1)
    benchmark.extra_info.update(samples=END_TO_END_SAMPLES, role="reference", name="naive end to end",
                                peak_mib=measured.peak_mib)
