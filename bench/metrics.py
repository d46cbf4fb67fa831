"""Referring-segmentation metrics under an explicit, recorded protocol, below every loop that uses them.

Per sample: `intersection_union` and `score_sample` on dense masks (`bench run`), and the same in RLE space,
`rle_intersection_union` and `score_rle_sample`, without decoding (`bench score`); both give identical
numbers. Per split:
`SegmentationEvaluator` / `score_records` (cIoU, gIoU, Prec@X, bootstrap CIs). Between two runs on the same
samples: `paired_bootstrap` (the difference in cIoU and gIoU with its 95% interval).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.masks import RleTarget, encode_rle, json_rle, rle_area, rle_intersection_area, rle_size

_BOOTSTRAP_CHUNK_ELEMENTS = 1_000_000  # bounds the resampling index matrix and its gathers (8 MB each) for any n


@dataclass(frozen=True)
class Protocol:
    """The metric choices that differ between public scorers; recorded with every result."""

    # IoU of a sample whose gt and prediction are both empty: LISA 1.0, mmdetection 0.0
    empty_union_iou: float = 1.0
    ignore_value: int = 255  # target pixels with this value leave both intersection and union
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)  # Prec@X counts samples with IoU > X
    bootstrap: int = 1000  # bootstrap resamples for the 95% CIs (0 disables them)
    ci_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy for run.json."""
        record = asdict(self)
        record["thresholds"] = list(self.thresholds)
        return record


def intersection_union(pred: np.ndarray | None, target: np.ndarray, protocol: Protocol) -> tuple[int, int]:
    """Pixel counts |pred AND gt| and |pred OR gt| over non-ignored pixels; a missing pred is an empty mask."""
    if pred is None:
        pred = np.zeros(target.shape, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    if pred.dtype != np.bool_:
        raise ValueError(f"prediction must be a boolean mask, got {pred.dtype}; binarise it first")
    valid = target != protocol.ignore_value
    gt = (target != 0) & valid
    pred = pred & valid
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def rle_intersection_union(pred: dict[str, Any] | None, target: RleTarget) -> tuple[int, int]:
    """`intersection_union` from RLE operations: `pred` is a validated pycocotools RLE (None: an empty mask).

    Ignored pixels are disjoint from the target's foreground, so U = |pred| + |gt| - I - |pred AND ignored|."""
    inter, union, _ = _rle_counts_of(pred, target)
    return inter, union


def _rle_counts_of(pred: dict[str, Any] | None, target: RleTarget) -> tuple[int, int, int]:
    """(I, U, |pred|) of `rle_intersection_union` (the prediction's area is needed by both)."""
    if pred is None:
        return 0, target.area, 0
    if rle_size(pred) != target.size:
        raise ValueError(f"prediction size {rle_size(pred)} != target size {target.size}")
    area = rle_area(pred)
    inter = rle_intersection_area(pred, target.foreground) if area and target.area else 0
    ignored = rle_intersection_area(pred, target.ignore) if area and target.ignore is not None else 0
    return inter, area + target.area - inter - ignored, area


def sample_iou(inter: int, union: int, protocol: Protocol) -> float:
    """I / U of one sample; an empty union scores protocol.empty_union_iou."""
    if union == 0:
        return float(protocol.empty_union_iou)
    return inter / union


def _ratio_of_sums(inter_sums: np.ndarray, union_sums: np.ndarray, empty_union_iou: float) -> np.ndarray:
    """Elementwise sum(I) / sum(U), with empty_union_iou where the union total is 0."""
    safe_union = np.where(union_sums == 0, 1, union_sums)
    return np.where(union_sums == 0, empty_union_iou, inter_sums / safe_union)


class SegmentationEvaluator:
    """Accumulates per-sample (I, U) and reduces them to split-level metrics (detectron2 style)."""

    def __init__(self, protocol: Protocol | None = None):
        self.protocol = protocol if protocol is not None else Protocol()
        self.reset()

    def reset(self) -> None:
        self._ids: set[str] = set()
        self._inters: list[int] = []
        self._unions: list[int] = []
        self._failed: list[bool] = []

    def process(self, sample_id: str, inter: int, union: int, failed: bool = False) -> None:
        """Adds one sample; a failed sample scores IoU 0 while its (gt-only) union still counts in cIoU."""
        if sample_id in self._ids:
            raise ValueError(f"sample {sample_id!r} was processed twice (duplicated by a padded sampler?)")
        if not 0 <= inter <= union:
            raise ValueError(f"sample {sample_id!r}: need 0 <= intersection <= union, got {inter}, {union}")
        if failed and inter != 0:
            raise ValueError(
                f"sample {sample_id!r}: failed but intersection is {inter}; score it as an empty mask"
            )
        self._ids.add(sample_id)
        self._inters.append(int(inter))
        self._unions.append(int(union))
        self._failed.append(bool(failed))

    def scores(self) -> SampleScores:
        """The accumulated samples as arrays, in processing order."""
        return SampleScores(np.asarray(self._inters, dtype=np.float64), np.asarray(self._unions, dtype=np.float64),
                            np.asarray(self._failed, dtype=bool))

    def evaluate(self) -> dict[str, Any]:
        """n, n_failed, cIoU, gIoU, Prec@X and 95% bootstrap CIs as plain Python values (None when n == 0)."""
        n = len(self._inters)
        result: dict[str, Any] = {"n": n, "n_failed": int(sum(self._failed))}
        prec_keys = [f"prec@{threshold}" for threshold in self.protocol.thresholds]
        if n == 0:
            result.update(
                {"ciou": None, "giou": None, **dict.fromkeys(prec_keys), "ciou_ci95": None, "giou_ci95": None}
            )
            return result
        scores = self.scores()
        ious = scores.ious(self.protocol.empty_union_iou)
        result["ciou"] = scores.ciou(self.protocol.empty_union_iou)
        result["giou"] = scores.giou(self.protocol.empty_union_iou)
        for key, threshold in zip(prec_keys, self.protocol.thresholds, strict=True):
            result[key] = float(np.mean(ious > threshold))
        result["ciou_ci95"], result["giou_ci95"] = bootstrap_cis(scores, self.protocol)
        return result


class SampleScores:
    """Per-sample intersection, union and failure flags of one split, as float arrays in a fixed order."""

    def __init__(self, inters: np.ndarray, unions: np.ndarray, failed: np.ndarray):
        self.inters, self.unions, self.failed = inters, unions, failed

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> SampleScores:
        """From predictions-file records (intersection, union, status)."""
        records = list(records)
        return cls(np.array([r["intersection"] for r in records], dtype=np.float64),
                   np.array([r["union"] for r in records], dtype=np.float64),
                   np.array([r["status"] != "ok" for r in records], dtype=bool))

    def __len__(self) -> int:
        return len(self.inters)

    def ious(self, empty_union_iou: float) -> np.ndarray:
        """Per-sample IoU (failed samples 0)."""
        return np.where(self.failed, 0.0, _ratio_of_sums(self.inters, self.unions, empty_union_iou))

    def ciou(self, empty_union_iou: float) -> float:
        """Summed intersections over summed unions."""
        return float(_ratio_of_sums(self.inters.sum(), self.unions.sum(), empty_union_iou))

    def giou(self, empty_union_iou: float) -> float:
        """Mean per-sample IoU (NaN without samples)."""
        return float(self.ious(empty_union_iou).mean()) if len(self) else float("nan")


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap index matrices (rows x n), drawn with replacement from one seeded stream, in bounded chunks.

    The chunks concatenate to the single matrix `default_rng(seed).integers(0, n, (resamples, n))`."""
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, resamples, rows_per_chunk):
        yield rng.integers(0, n, size=(min(rows_per_chunk, resamples - start), n))


def bootstrap_statistics(scores: SampleScores, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """cIoU and gIoU of every bootstrap resample of `scores` (the same resamples for any scores of equal length)."""
    ious = scores.ious(protocol.empty_union_iou)
    ciou_stats, giou_stats = [], []
    for index in resample_indices(len(scores), protocol.bootstrap, protocol.ci_seed):
        ciou_stats.append(_ratio_of_sums(scores.inters[index].sum(1), scores.unions[index].sum(1),
                                         protocol.empty_union_iou))
        giou_stats.append(ious[index].mean(1))
    return np.concatenate(ciou_stats), np.concatenate(giou_stats)


def bootstrap_cis(scores: SampleScores, protocol: Protocol) -> tuple[list[float] | None, list[float] | None]:
    """Percentile 95% CIs of cIoU and gIoU, resampling samples with replacement (None without resamples)."""
    if protocol.bootstrap <= 0 or len(scores) == 0:
        return None, None
    ciou_stats, giou_stats = bootstrap_statistics(scores, protocol)
    return _percentile_interval(ciou_stats), _percentile_interval(giou_stats)


def paired_bootstrap(a: SampleScores, b: SampleScores, protocol: Protocol) -> dict[str, Any]:
    """cIoU and gIoU of run `a` minus run `b` on the same samples (same order), with paired 95% intervals.

    Each resample draws the same samples for both runs, so what the two have in common (hard samples)
    cancels out. `significant` is true when the interval excludes zero."""
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs the same samples: {len(a)} against {len(b)}")
    result: dict[str, Any] = {"n": len(a)}
    empty = protocol.empty_union_iou
    point = {"ciou": a.ciou(empty) - b.ciou(empty),
             "giou": a.giou(empty) - b.giou(empty) if len(a) else 0.0}
    intervals: dict[str, list[float] | None] = {"ciou": None, "giou": None}
    if protocol.bootstrap > 0 and len(a):
        a_ciou, a_giou = bootstrap_statistics(a, protocol)
        b_ciou, b_giou = bootstrap_statistics(b, protocol)  # the same seed: the same resampled indices
        intervals = {"ciou": _percentile_interval(a_ciou - b_ciou), "giou": _percentile_interval(a_giou - b_giou)}
    for metric in ("ciou", "giou"):
        interval = intervals[metric]
        result[metric] = {"difference": float(point[metric]), "ci95": interval,
                          "significant": None if interval is None else bool(interval[0] > 0 or interval[1] < 0)}
    return result


def paired_scores(a: Iterable[dict[str, Any]], b: Iterable[dict[str, Any]]) -> tuple[SampleScores, SampleScores]:
    """Align two runs' records of one split by sample id; the two must cover exactly the same samples."""
    by_id_a = {r["sample_id"]: r for r in a}
    by_id_b = {r["sample_id"]: r for r in b}
    if by_id_a.keys() != by_id_b.keys():
        only_a, only_b = sorted(by_id_a.keys() - by_id_b.keys()), sorted(by_id_b.keys() - by_id_a.keys())
        raise ValueError(f"the runs cover different samples ({len(only_a)} only in the first, e.g. "
                         f"{only_a[:1]}; {len(only_b)} only in the second, e.g. {only_b[:1]})")
    order = sorted(by_id_a)
    return (SampleScores.from_records(by_id_a[i] for i in order),
            SampleScores.from_records(by_id_b[i] for i in order))


def _percentile_interval(stats: np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles as plain floats."""
    low, high = np.percentile(stats, [2.5, 97.5])
    return [float(low), float(high)]


def score_sample(sample_id: str, split: str, mask: np.ndarray | None, error: str | None,
                 target: np.ndarray | None, protocol: Protocol) -> dict[str, Any]:
    """One predictions-file record. No mask means failed: IoU 0, and the gt area still enters the cIoU union;
    no target (it could not be read) fails the sample with intersection and union 0."""
    failed = mask is None or target is None
    inter, union = (0, 0) if target is None else intersection_union(mask, target, protocol)
    if failed:
        return _record(sample_id, split, None, error, inter, union, 0, protocol)
    return _record(sample_id, split, encode_rle(mask), None, inter, union, int(np.count_nonzero(mask)), protocol)


def score_rle_sample(sample_id: str, split: str, pred: dict[str, Any] | None, error: str | None,
                     target: RleTarget | None, protocol: Protocol) -> dict[str, Any]:
    """`score_sample` in RLE space: `pred` (a validated pycocotools RLE) is passed through, not re-encoded."""
    failed = pred is None or target is None
    inter, union, area = (0, 0, 0) if target is None else _rle_counts_of(pred, target)
    if failed:
        return _record(sample_id, split, None, error, inter, union, 0, protocol)
    return _record(sample_id, split, json_rle(pred), None, inter, union, area, protocol)


def _record(sample_id: str, split: str, segmentation: dict[str, Any] | None, error: str | None, inter: int,
            union: int, area: int, protocol: Protocol) -> dict[str, Any]:
    """A predictions-file record; no segmentation means a failed sample (IoU 0)."""
    failed = segmentation is None
    return {
        "sample_id": sample_id,
        "split": split,
        "segmentation": segmentation,
        "iou": 0.0 if failed else sample_iou(inter, union, protocol),
        "status": "failed" if failed else "ok",
        "error": (error or "no prediction") if failed else None,
        "intersection": int(inter),
        "union": int(union),
        "area": area,
    }


def score_records(records: list[dict[str, Any]], protocol: Protocol) -> dict[str, Any]:
    """Split metrics from records carrying intersection/union/status (the evaluator does the maths)."""
    evaluator = SegmentationEvaluator(protocol)
    for r in records:
        evaluator.process(r["sample_id"], r["intersection"], r["union"], failed=r["status"] != "ok")
    return evaluator.evaluate()
