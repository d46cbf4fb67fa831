"""Metrics against a deliberately naive pixel-loop reference and hand-computed examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bench.masks import RleTarget, coco_rle, encode_rle
from bench.metrics import (
    Protocol,
    SegmentationEvaluator,
    intersection_union,
    rle_intersection_union,
    sample_iou,
    score_rle_sample,
    score_sample,
)

IGNORE = 255
EXPECTED_KEYS = {"n", "n_failed", "ciou", "giou", "ciou_ci95", "giou_ci95"} | {
    f"prec@{x}" for x in (0.5, 0.6, 0.7, 0.8, 0.9)
}


def reference_scores(pairs, empty_union_iou=1.0):
    """Naive reference: pixel loops; pairs are (pred as nested lists or None, target as nested lists)."""
    inter_total = union_total = 0
    ious = []
    for pred, target in pairs:
        inter = union = 0
        for r, row in enumerate(target):
            for c, value in enumerate(row):
                if value == IGNORE:
                    continue
                p = pred is not None and bool(pred[r][c])
                g = value != 0
                inter += p and g
                union += p or g
        inter_total += inter
        union_total += union
        if pred is None:
            ious.append(0.0)
        elif union == 0:
            ious.append(empty_union_iou)
        else:
            ious.append(inter / union)
    ciou = inter_total / union_total if union_total else empty_union_iou
    giou = sum(ious) / len(ious)
    precs = {f"prec@{x}": sum(1 for iou in ious if iou > x) / len(ious) for x in (0.5, 0.6, 0.7, 0.8, 0.9)}
    return {"ciou": ciou, "giou": giou, **precs}


def random_pairs(rng, count):
    """Random masks with ignore regions, plus empty, fully ignored and missing-prediction cases."""
    pairs = []
    for index in range(count):
        h, w = rng.integers(3, 9, size=2)
        target = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if index % 3 == 0:
            top, left = rng.integers(0, h), rng.integers(0, w)
            target[top : top + 3, left : left + 3] = IGNORE
        pred = rng.random((h, w)) < rng.random()
        kind = index % 7
        if kind == 1:
            target[:] = 0
            pred[:] = False  # empty union
        elif kind == 2:
            target[:] = IGNORE  # fully ignored: empty union whatever the prediction
        elif kind == 3:
            pred = None  # missing prediction: its gt area stays in the cIoU union
        elif kind == 4:
            pred = target == 1  # perfect
        pairs.append((pred, target))
    return pairs


def evaluate_pairs(pairs, protocol):
    evaluator = SegmentationEvaluator(protocol)
    for index, (pred, target) in enumerate(pairs):
        inter, union = intersection_union(pred, target, protocol)
        evaluator.process(f"s{index}", inter, union, failed=pred is None)
    return evaluator.evaluate()


@pytest.mark.parametrize("empty_union_iou", [1.0, 0.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_reference(seed, empty_union_iou):
    rng = np.random.default_rng(seed)
    pairs = random_pairs(rng, 40)
    protocol = Protocol(empty_union_iou=empty_union_iou, bootstrap=50)
    result = evaluate_pairs(pairs, protocol)
    reference = reference_scores(
        [(None if p is None else p.tolist(), t.tolist()) for p, t in pairs], empty_union_iou
    )
    assert set(result) == EXPECTED_KEYS
    assert result["n"] == 40 and result["n_failed"] == sum(p is None for p, _ in pairs)
    for key, value in reference.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_space_scoring_equals_the_dense_path_record_by_record(seed):
    """bench score (RLE operations, nothing decoded) and bench run (dense masks) write identical records."""
    protocol = Protocol()
    for index, (pred, target) in enumerate(random_pairs(np.random.default_rng(seed), 60)):
        error = "no prediction" if pred is None else None
        dense = score_sample(f"s{index}", "val", pred, error, target, protocol)
        rle_pred = None if pred is None else coco_rle(encode_rle(pred))
        in_rle_space = score_rle_sample(f"s{index}", "val", rle_pred, error, RleTarget.from_dense(target, IGNORE),
                                        protocol)
        assert in_rle_space == dense
        if not (target == IGNORE).any():  # a refer-style target: the suite's own RLE, nothing ignored
            refer_target = RleTarget.from_rle(mask_utils.encode(np.asfortranarray(target)))
            assert rle_intersection_union(rle_pred, refer_target) == (dense["intersection"], dense["union"])


def test_rle_space_refuses_a_prediction_of_another_size():
    target = RleTarget.from_dense(np.ones((3, 4), np.uint8), IGNORE)
    with pytest.raises(ValueError, match="prediction size"):
        rle_intersection_union(coco_rle(encode_rle(np.ones((4, 3), bool))), target)


def test_empty_union_convention_changes_giou_only():
    target = np.zeros((2, 2), np.uint8)
    empty = np.zeros((2, 2), bool)
    hit = np.array([[1, 0], [0, 0]], np.uint8)
    pairs = [(empty, target), (hit.astype(bool), hit)]
    lisa = evaluate_pairs(pairs, Protocol(empty_union_iou=1.0, bootstrap=0))
    mmdet = evaluate_pairs(pairs, Protocol(empty_union_iou=0.0, bootstrap=0))
    assert lisa["giou"] == 1.0 and mmdet["giou"] == 0.5
    assert lisa["ciou"] == mmdet["ciou"] == 1.0
    assert lisa["ciou_ci95"] is None and lisa["giou_ci95"] is None


def test_hand_computed_example():
    protocol = Protocol(bootstrap=0)
    # sample a: gt 4 px (one more ignored), pred 3 px of which 2 on gt and 1 on the ignored pixel
    target_a = np.array([[1, 1, 0], [1, 1, IGNORE]], np.uint8)
    pred_a = np.array([[1, 1, 0], [0, 0, 1]], bool)
    assert intersection_union(pred_a, target_a, protocol) == (2, 4)
    # sample b: gt 2 px, pred 4 px covering both -> I 2, U 4
    target_b = np.array([[0, 1], [1, 0]], np.uint8)
    pred_b = np.ones((2, 2), bool)
    assert intersection_union(pred_b, target_b, protocol) == (2, 4)
    # sample c: missing prediction, gt 3 px -> I 0, U 3
    target_c = np.array([[1, 1, 1]], np.uint8)
    assert intersection_union(None, target_c, protocol) == (0, 3)
    evaluator = SegmentationEvaluator(protocol)
    evaluator.process("a", 2, 4, failed=False)
    evaluator.process("b", 2, 4, failed=False)
    evaluator.process("c", 0, 3, failed=True)
    result = evaluator.evaluate()
    assert result["ciou"] == pytest.approx(4 / 11)
    assert result["giou"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert result["prec@0.5"] == 0.0  # strict: IoU 0.5 is not > 0.5
    assert result["n_failed"] == 1


def test_sample_iou_empty_union():
    assert sample_iou(0, 0, Protocol()) == 1.0
    assert sample_iou(0, 0, Protocol(empty_union_iou=0.0)) == 0.0
    assert sample_iou(1, 4, Protocol()) == 0.25


def test_failed_sample_scores_zero_even_with_empty_gt():
    evaluator = SegmentationEvaluator(Protocol(bootstrap=0))
    evaluator.process("x", 0, 0, failed=True)
    assert evaluator.evaluate()["giou"] == 0.0


def test_bootstrap_ci_is_deterministic_and_contains_estimate():
    rng = np.random.default_rng(5)
    pairs = random_pairs(rng, 60)
    protocol = Protocol(bootstrap=300, ci_seed=3)
    first, second = evaluate_pairs(pairs, protocol), evaluate_pairs(pairs, protocol)
    assert first == second
    for metric in ("ciou", "giou"):
        low, high = first[f"{metric}_ci95"]
        assert low <= first[metric] <= high and low < high
    other_seed = evaluate_pairs(pairs, Protocol(bootstrap=300, ci_seed=4))
    assert other_seed["giou_ci95"] != first["giou_ci95"]


def test_bootstrap_matches_loop_reference():
    rng = np.random.default_rng(11)
    pairs = random_pairs(rng, 25)
    protocol = Protocol(bootstrap=40, ci_seed=7)
    result = evaluate_pairs(pairs, protocol)
    ious, inters, unions = [], [], []
    for pred, target in pairs:
        inter, union = intersection_union(pred, target, protocol)
        inters.append(inter)
        unions.append(union)
        ious.append(0.0 if pred is None else sample_iou(inter, union, protocol))
    index = np.random.default_rng(7).integers(0, 25, size=(40, 25))
    gious = [sum(ious[i] for i in row) / 25 for row in index]
    cious = [sum(inters[i] for i in row) / sum(unions[i] for i in row) for row in index]
    assert result["giou_ci95"] == pytest.approx(list(np.percentile(gious, [2.5, 97.5])))
    assert result["ciou_ci95"] == pytest.approx(list(np.percentile(cious, [2.5, 97.5])))


def test_output_is_plain_json_and_bounded():
    result = evaluate_pairs(random_pairs(np.random.default_rng(0), 20), Protocol(bootstrap=20))
    assert json.loads(json.dumps(result)) == result
    for key, value in result.items():
        if key.endswith("ci95"):
            assert all(type(v) is float and 0 <= v <= 1 for v in value)
        elif key not in ("n", "n_failed"):
            assert type(value) is float and 0 <= value <= 1


def test_empty_evaluator_has_no_nan():
    result = SegmentationEvaluator().evaluate()
    assert set(result) == EXPECTED_KEYS
    assert result["n"] == 0 and result["n_failed"] == 0
    assert all(value is None for key, value in result.items() if key not in ("n", "n_failed"))


def test_duplicate_sample_rejected():
    evaluator = SegmentationEvaluator()
    evaluator.process("a", 1, 2, failed=False)
    with pytest.raises(ValueError, match="'a'"):
        evaluator.process("a", 1, 2, failed=False)
    evaluator.reset()
    evaluator.process("a", 1, 2, failed=False)
    assert evaluator.evaluate()["n"] == 1


def test_invalid_inputs_rejected():
    protocol = Protocol()
    with pytest.raises(ValueError, match="shape"):
        intersection_union(np.zeros((2, 3), bool), np.zeros((3, 2), np.uint8), protocol)
    with pytest.raises(ValueError, match="boolean"):
        intersection_union(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), protocol)
    evaluator = SegmentationEvaluator(protocol)
    with pytest.raises(ValueError):
        evaluator.process("a", 3, 2, failed=False)


def test_protocol_to_dict_round_trips():
    protocol = Protocol(empty_union_iou=0.0, thresholds=(0.5, 0.75))
    record = json.loads(json.dumps(protocol.to_dict()))
    assert record["thresholds"] == [0.5, 0.75]
    assert Protocol(**{**record, "thresholds": tuple(record["thresholds"])}) == protocol


# ---------------------------------------------------------------- bootstrap, single and paired


def _percentile(values, q):
    """Linear-interpolation percentile (numpy's default), by hand."""
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _reference_stats(inters, unions, failed, rows, empty_union_iou):
    """cIoU and gIoU of each resample, with Python loops over the index rows."""
    cious, gious = [], []
    for row in rows:
        i_sum = sum(inters[k] for k in row)
        u_sum = sum(unions[k] for k in row)
        cious.append(i_sum / u_sum if u_sum else empty_union_iou)
        ious = [0.0 if failed[k] else (inters[k] / unions[k] if unions[k] else empty_union_iou) for k in row]
        gious.append(sum(ious) / len(ious))
    return cious, gious


def _random_scores(rng, n):
    unions = rng.integers(0, 50, n)
    inters = (unions * rng.random(n)).astype(int)
    failed = rng.random(n) < 0.1
    inters[failed] = 0
    return [int(v) for v in inters], [int(v) for v in unions], [bool(v) for v in failed]


@pytest.mark.parametrize("seed", [0, 1])
def test_bootstrap_cis_match_reference(seed):
    from bench.metrics import SampleScores, bootstrap_cis

    rng = np.random.default_rng(seed)
    inters, unions, failed = _random_scores(rng, 37)
    protocol = Protocol(bootstrap=200, ci_seed=seed)
    scores = SampleScores(np.array(inters, float), np.array(unions, float), np.array(failed))
    rows = np.random.default_rng(seed).integers(0, 37, size=(200, 37)).tolist()
    cious, gious = _reference_stats(inters, unions, failed, rows, 1.0)
    ciou_ci, giou_ci = bootstrap_cis(scores, protocol)
    assert ciou_ci == pytest.approx([_percentile(cious, 2.5), _percentile(cious, 97.5)])
    assert giou_ci == pytest.approx([_percentile(gious, 2.5), _percentile(gious, 97.5)])


@pytest.mark.parametrize("seed", [0, 3])
def test_paired_bootstrap_matches_reference(seed):
    from bench.metrics import paired_bootstrap, paired_scores

    rng = np.random.default_rng(seed)
    n = 29
    a_i, a_u, a_f = _random_scores(rng, n)
    b_i, b_u, b_f = _random_scores(rng, n)

    def records(inters, unions, failed, order):
        return [{"sample_id": f"s{k}", "intersection": inters[k], "union": unions[k],
                 "status": "failed" if failed[k] else "ok"} for k in order]

    # the second run lists its samples in another order: pairing is by sample id
    a, b = paired_scores(records(a_i, a_u, a_f, range(n)), records(b_i, b_u, b_f, reversed(range(n))))
    protocol = Protocol(bootstrap=300, ci_seed=seed, empty_union_iou=0.0)
    result = paired_bootstrap(a, b, protocol)
    order = sorted(range(n), key=lambda k: f"s{k}")  # paired_scores sorts by id
    a_i, a_u, a_f, b_i, b_u, b_f = ([v[k] for k in order] for v in (a_i, a_u, a_f, b_i, b_u, b_f))
    rows = np.random.default_rng(seed).integers(0, n, size=(300, n)).tolist()
    a_c, a_g = _reference_stats(a_i, a_u, a_f, rows, 0.0)
    b_c, b_g = _reference_stats(b_i, b_u, b_f, rows, 0.0)
    d_c = [x - y for x, y in zip(a_c, b_c)]
    d_g = [x - y for x, y in zip(a_g, b_g)]
    full = [list(range(n))]
    (a_c0,), (a_g0,) = _reference_stats(a_i, a_u, a_f, full, 0.0)
    (b_c0,), (b_g0,) = _reference_stats(b_i, b_u, b_f, full, 0.0)
    assert result["n"] == n
    assert result["ciou"]["difference"] == pytest.approx(a_c0 - b_c0)
    assert result["giou"]["difference"] == pytest.approx(a_g0 - b_g0)
    assert result["ciou"]["ci95"] == pytest.approx([_percentile(d_c, 2.5), _percentile(d_c, 97.5)])
    assert result["giou"]["ci95"] == pytest.approx([_percentile(d_g, 2.5), _percentile(d_g, 97.5)])
    low, high = result["ciou"]["ci95"]
    assert result["ciou"]["significant"] == (low > 0 or high < 0)


def test_paired_bootstrap_of_a_run_with_itself_is_zero_and_different_samples_are_refused():
    from bench.metrics import paired_bootstrap, paired_scores

    records = [{"sample_id": str(k), "intersection": k, "union": 10, "status": "ok"} for k in range(10)]
    result = paired_bootstrap(*paired_scores(records, records), Protocol(bootstrap=100))
    assert result["ciou"] == {"difference": 0.0, "ci95": [0.0, 0.0], "significant": False}
    with pytest.raises(ValueError, match="different samples"):
        paired_scores(records, records[:-1])
