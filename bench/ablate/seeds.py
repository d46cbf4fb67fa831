"""Differences between two variants with the training seed as the unit of replication.

Each seed k gives a paired difference d_k (variant minus other, same samples and noise). The estimate is the mean
of the d_k; its standard error adds the seed-to-seed variance s^2 / K and the variance that comes from the test
samples (all seeds share one test set, so a joint bootstrap of samples, the same resample for every seed and both
variants, measures it). The interval is mean ± t(K - 1) se: with K seeds the Student t accounts for how little
K seeds say about their spread. A pure two-stage bootstrap (seeds, then samples) cannot: with 3 seeds its
interval never leaves [min d_k, max d_k], which covers the mean of three normal draws 75% of the time. One seed
leaves only the sample variance (df = infinity), stated as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.metrics import Protocol, SampleScores, bootstrap_statistics

METHOD_SEEDS = "seeds: mean of per-seed paired differences ± t(K-1) x (seed and joint-sample bootstrap variance)"
METHOD_ONE_SEED = "one seed: paired sample bootstrap only (no seed variance can be measured)"


@dataclass(frozen=True)
class SeedDifference:
    """One metric's difference: per-seed values, their mean, standard error, degrees of freedom and 95% interval."""

    per_seed: list[float]
    difference: float
    se: float | None
    df: float
    ci95: list[float] | None
    method: str

    def p_value(self, margin: float = 0.0) -> float | None:
        """Two-sided p of the difference equalling `margin` (None without a standard error)."""
        if self.se is None:
            return None
        if self.se == 0:
            return 1.0 if self.difference == margin else 0.0
        return float(2 * stats.t.sf(abs(self.difference - margin) / self.se, self.df))

    def to_dict(self) -> dict:
        return {"difference": self.difference, "per_seed": self.per_seed, "se": self.se, "df": self.df,
                "ci95": self.ci95, "method": self.method,
                "significant": None if self.ci95 is None else bool(self.ci95[0] > 0 or self.ci95[1] < 0)}


def seed_differences(pairs: list[tuple[SampleScores, SampleScores]], protocol: Protocol) -> dict[str, SeedDifference]:
    """cIoU and gIoU differences of (variant, other) score pairs, one pair per seed, samples in one common order."""
    if not pairs:
        raise ValueError("no seeds to compare")
    lengths = {len(a) for pair in pairs for a in pair}
    if len(lengths) != 1:
        raise ValueError(f"every seed must score the same samples, got sample counts {sorted(lengths)}")
    empty = protocol.empty_union_iou
    per_seed = {"ciou": [a.ciou(empty) - b.ciou(empty) for a, b in pairs],
                "giou": [a.giou(empty) - b.giou(empty) for a, b in pairs]}
    return _estimates(per_seed, _joint_sample_variance(pairs, protocol))


def seed_levels(runs: list[SampleScores], protocol: Protocol) -> dict[str, SeedDifference]:
    """cIoU and gIoU of one model trained with several seeds (one SampleScores per seed, samples in one common
    order): the mean over seeds with the same interval as `seed_differences`, for a level instead of a difference."""
    if not runs:
        raise ValueError("no seeds to pool")
    if len({len(scores) for scores in runs}) != 1:
        raise ValueError(f"every seed must score the same samples, got sample counts {sorted({len(s) for s in runs})}")
    empty = protocol.empty_union_iou
    per_seed = {"ciou": [scores.ciou(empty) for scores in runs], "giou": [scores.giou(empty) for scores in runs]}
    variance = None
    if protocol.bootstrap > 0 and len(runs[0]):
        statistics = [bootstrap_statistics(scores, protocol) for scores in runs]
        variance = {metric: float(np.var(sum(stat[index] for stat in statistics) / len(runs), ddof=1))
                    for index, metric in enumerate(("ciou", "giou"))}
    return _estimates(per_seed, variance)


def _estimates(per_seed: dict[str, list[float]], sample_variance: dict[str, float] | None) -> dict[str, SeedDifference]:
    """Mean ± t(K-1) x sqrt(seed variance / K + sample variance) of each metric's per-seed values."""
    seeds = len(next(iter(per_seed.values())))
    df = seeds - 1 if seeds > 1 else math.inf
    result = {}
    for metric, values in per_seed.items():
        mean = float(np.mean(values))
        seed_variance = float(np.var(values, ddof=1)) / seeds if seeds > 1 else 0.0
        variance = None if sample_variance is None and seeds == 1 else seed_variance + (sample_variance or {}).get(metric, 0.0)
        se = None if variance is None else math.sqrt(variance)
        interval = None if se is None else [mean - stats.t.ppf(0.975, df) * se, mean + stats.t.ppf(0.975, df) * se]
        result[metric] = SeedDifference([float(v) for v in values], mean, se, df,
                                        None if interval is None else [float(x) for x in interval],
                                        METHOD_SEEDS if seeds > 1 else METHOD_ONE_SEED)
    return result


def _joint_sample_variance(pairs: list[tuple[SampleScores, SampleScores]], protocol: Protocol) -> dict | None:
    """Bootstrap variance of the mean-over-seeds difference when the test samples are resampled (the same
    resample for every seed and both variants); None without resamples."""
    if protocol.bootstrap <= 0 or not len(pairs[0][0]):
        return None
    ciou_sum = giou_sum = 0.0
    for a, b in pairs:
        a_ciou, a_giou = bootstrap_statistics(a, protocol)
        b_ciou, b_giou = bootstrap_statistics(b, protocol)
        ciou_sum, giou_sum = ciou_sum + (a_ciou - b_ciou), giou_sum + (a_giou - b_giou)
    return {"ciou": float(np.var(ciou_sum / len(pairs), ddof=1)), "giou": float(np.var(giou_sum / len(pairs), ddof=1))}


def detectable_effect(standard_errors: list[float], df: float, power_z: float = 0.84) -> float | None:
    """The smallest true difference detected with 80% power at 5% (two-sided): (t(0.975, df) + z(0.8)) x the median
    standard error of the comparisons (None without one)."""
    if not standard_errors:
        return None
    return float((stats.t.ppf(0.975, df) + power_z) * float(np.median(standard_errors)))
