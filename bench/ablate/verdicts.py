"""Verdicts on claims from 95% intervals: agrees / disagrees / inconclusive, by one stated rule.

A claim says a measured quantity lies above (or below) a margin. Its verdict: *agrees* when the whole
95% interval of the quantity lies on the claimed side of the margin, *disagrees* when the whole interval
lies on the other side, *inconclusive* when the interval spans the margin (with margin 0: spans zero).
"""

from __future__ import annotations

from dataclasses import dataclass

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"


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
