"""Verdicts on claims from 95% intervals: agrees / disagrees / inconclusive, by one stated rule.

A claim says a measured quantity lies above (or below) a margin. Its verdict: *agrees* when the whole
95% interval of the quantity lies on the claimed side of the margin, *disagrees* when the whole interval
lies on the other side, *inconclusive* when the interval spans the margin (with margin 0: spans zero).

The claims of one ablation are one family: `holm` adjusts their p-values (Holm-Bonferroni step-down) so that the
chance of any false verdict in the family stays under 5%, and gives each claim an adjusted verdict beside its raw one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
NO_VERDICT = "no verdict"  # the ablation's regime check failed: the question cannot be asked of these models


@dataclass(frozen=True)
class Verdict:
    """A claim judged: the quantity measured, its point value and interval (fractions), and the verdict."""

    claim: str
    quantity: str
    value: float
    interval: list[float] | None
    margin: float
    side: str  # "above" or "below": where the claim puts the quantity relative to the margin
    verdict: str
    paper: str = ""
    per_seed: list[float] = field(default_factory=list)  # the quantity per training seed, where it has seeds
    p_value: float | None = None  # two-sided, of the quantity equalling the margin
    method: str = ""  # how the interval was made (bench.ablate.seeds)
    adjusted_p: float | None = None  # Holm-adjusted within the ablation's family of claims
    adjusted_verdict: str = INCONCLUSIVE


def p_from_interval(value: float, interval: list[float] | None, margin: float) -> float | None:
    """Two-sided p of `value` equalling `margin`, reading a symmetric normal 95% interval's half-width as 1.96 se."""
    if interval is None or math.isnan(value):
        return None
    se = (interval[1] - interval[0]) / (2 * 1.959963984540054)
    if se <= 0:
        return 1.0 if value == margin else 0.0
    return math.erfc(abs(value - margin) / se / math.sqrt(2))


def holm(verdicts: list[Verdict], alpha: float = 0.05) -> list[Verdict]:
    """Holm-Bonferroni over the family: the k-th smallest of m p-values is compared with alpha / (m - k), stopping
    at the first that fails; adjusted p = running max of (m - k) p. A rejected claim agrees or disagrees by the
    side its value lies on; the rest are inconclusive. Claims without a p-value stay inconclusive and out of m."""
    tested = sorted((v.p_value, i) for i, v in enumerate(verdicts) if v.p_value is not None)
    adjusted: dict[int, float] = {}
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    result = []
    for i, v in enumerate(verdicts):
        p = adjusted.get(i)
        verdict = INCONCLUSIVE
        if p is not None and p < alpha:
            verdict = AGREES if (v.value > v.margin) == (v.side == "above") else DISAGREES
        result.append(dataclasses.replace(v, adjusted_p=p, adjusted_verdict=verdict))
    return result


def judge(value: float, interval: list[float] | None, margin: float, side: str) -> str:
    """The rule above; no interval (no bootstrap) is inconclusive."""
    if side not in ("above", "below"):
        raise ValueError(f"side must be 'above' or 'below', got {side!r}")
    if interval is None:
        return INCONCLUSIVE
    low, high = interval
    above = AGREES if side == "above" else DISAGREES
    below = DISAGREES if side == "above" else AGREES
    if low > margin:
        return above
    if high < margin:
        return below
    return INCONCLUSIVE


def rule_text(side: str, margin: float) -> str:
    """The rule in words for a report."""
    where = "below" if side == "below" else "above"
    other = "above" if side == "below" else "below"
    return (f"agrees if the whole 95% interval lies {where} {100 * margin:+.1f} points, disagrees if it lies "
            f"wholly {other}, inconclusive if it spans {100 * margin:+.1f}")


def withheld(verdicts: list[Verdict]) -> list[Verdict]:
    """The same claims with no adjusted verdict (a failed control or regime check): raw numbers stay shown."""
    return [dataclasses.replace(v, adjusted_verdict=NO_VERDICT) for v in verdicts]
