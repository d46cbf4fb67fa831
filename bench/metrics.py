"""Referring-segmentation metrics (cIoU, gIoU, Prec@X, bootstrap CIs) under an explicit, recorded protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000  # bounds the memory of the resampling index matrix (about 32 MB)


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

    def sample_ious(self) -> np.ndarray:
        """Per-sample IoU in processing order (failed samples 0)."""
        inters = np.asarray(self._inters, dtype=np.float64)
        unions = np.asarray(self._unions, dtype=np.float64)
        ious = _ratio_of_sums(inters, unions, self.protocol.empty_union_iou)
        return np.where(np.asarray(self._failed, dtype=bool), 0.0, ious)

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
        inters = np.asarray(self._inters, dtype=np.float64)
        unions = np.asarray(self._unions, dtype=np.float64)
        ious = self.sample_ious()
        result["ciou"] = float(_ratio_of_sums(inters.sum(), unions.sum(), self.protocol.empty_union_iou))
        result["giou"] = float(ious.mean())
        for key, threshold in zip(prec_keys, self.protocol.thresholds, strict=True):
            result[key] = float(np.mean(ious > threshold))
        result["ciou_ci95"], result["giou_ci95"] = self._bootstrap_cis(inters, unions, ious)
        return result

    def _bootstrap_cis(
        self, inters: np.ndarray, unions: np.ndarray, ious: np.ndarray
    ) -> tuple[list[float] | None, list[float] | None]:
        """Percentile 95% CIs of cIoU and gIoU, resampling samples with replacement (seeded, chunked)."""
        resamples = self.protocol.bootstrap
        if resamples <= 0:
            return None, None
        n = len(ious)
        rng = np.random.default_rng(self.protocol.ci_seed)
        rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
        ciou_stats, giou_stats = [], []
        for start in range(0, resamples, rows_per_chunk):
            rows = min(rows_per_chunk, resamples - start)
            index = rng.integers(0, n, size=(rows, n))
            ciou_stats.append(
                _ratio_of_sums(inters[index].sum(1), unions[index].sum(1), self.protocol.empty_union_iou)
            )
            giou_stats.append(ious[index].mean(1))
        return _percentile_interval(np.concatenate(ciou_stats)), _percentile_interval(
            np.concatenate(giou_stats)
        )


def _percentile_interval(stats: np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles as plain floats."""
    low, high = np.percentile(stats, [2.5, 97.5])
    return [float(low), float(high)]
