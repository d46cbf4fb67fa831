"""Metrics against a deliberately naive pixel-loop reference and hand-computed examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.metrics import Protocol, SegmentationEvaluator, intersection_union, sample_iou

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
