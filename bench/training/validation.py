"""Validation scores of predicted masks with the harness's own metrics (`bench.metrics`), overall and per group."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.metrics import Protocol, SampleScores, SegmentationEvaluator, intersection_union

# the harness's default protocol without bootstrap intervals: validation wants point estimates, often
VALIDATION_PROTOCOL = Protocol(bootstrap=0)


def sample_scores(predicted: np.ndarray, target: np.ndarray, protocol: Protocol = VALIDATION_PROTOCOL) -> SampleScores:
    """Per-sample intersection and union of a boolean (N, H, W) prediction stack against its targets."""
    if len(predicted) != len(target):
        raise ValueError(f"{len(predicted)} predicted masks for {len(target)} targets")
    evaluator = SegmentationEvaluator(protocol)
    for index, (pred, gt) in enumerate(zip(predicted, target)):
        evaluator.process(str(index), *intersection_union(pred, gt, protocol))
    return evaluator.scores()


def ciou(scores: SampleScores, protocol: Protocol = VALIDATION_PROTOCOL) -> float:
    """Cumulative IoU: summed intersections over summed unions."""
    return scores.ciou(protocol.empty_union_iou)


def giou(scores: SampleScores, protocol: Protocol = VALIDATION_PROTOCOL) -> float:
    """Mean per-sample IoU (an empty union scores the protocol's `empty_union_iou`)."""
    return scores.giou(protocol.empty_union_iou)


def _subset(scores: SampleScores, chosen: np.ndarray) -> SampleScores:
    return SampleScores(scores.inters[chosen], scores.unions[chosen], scores.failed[chosen])


def validation_metrics(predicted: np.ndarray, target: np.ndarray, kinds: Sequence[str] | None = None,
                       rules: Sequence[str] | None = None, protocol: Protocol = VALIDATION_PROTOCOL) -> dict:
    """`ciou_all`, `giou_all`, then `ciou_<kind>` and `giou_<kind>` per kind, and `ciou_by_rule` ({rule: cIoU})
    when rules (finer groups, e.g. the reasoning rule that picks each target) are given."""
    scores = sample_scores(predicted, target, protocol)
    result = {"ciou_all": ciou(scores, protocol), "giou_all": giou(scores, protocol)}
    for name, labels in (("kinds", kinds), ("rules", rules)):
        if labels and len(labels) != len(scores):
            raise ValueError(f"{len(labels)} {name} for {len(scores)} samples")
    kind_array = np.asarray(kinds or [])
    for kind in sorted(set(kinds or [])):
        group = _subset(scores, kind_array == kind)
        result[f"ciou_{kind}"], result[f"giou_{kind}"] = ciou(group, protocol), giou(group, protocol)
    if rules:
        rule_array = np.asarray(rules)
        result["ciou_by_rule"] = {rule: ciou(_subset(scores, rule_array == rule), protocol) for rule in sorted(set(rules))}
    return result
