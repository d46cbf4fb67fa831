"""The one summary of how a split's samples went (failures by most frequent reason, all-empty masks), counted as
records stream past, so that `bench run` and `bench score` warn in the same words."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

FAILURE_REASONS = 3  # the most frequent reasons a warning names


class OutcomeTally:
    """Counts of one split's records: failed ones by reason (ties in order of first failure), ok and empty ones,
    and how many were predicted at all (`bench score`: the others were missing from its file)."""

    def __init__(self, suite: str, split: str):
        self.suite, self.split = suite, split
        self.n = self.n_predicted = self.n_failed = 0
        self.reasons: Counter[str] = Counter()  # insertion order: ties go to the first failure
        self.first_failed: str | None = None
        self.n_ok = self.n_ok_empty = 0

    @classmethod
    def of(cls, suite: str, split: str, records: Iterable[dict[str, Any]]) -> OutcomeTally:
        """The tally of records already in hand."""
        tally = cls(suite, split)
        for record in records:
            tally.add(record)
        return tally

    def add(self, record: dict[str, Any], predicted: bool = True) -> None:
        self.n += 1
        self.n_predicted += predicted
        if record["status"] != "ok":
            self.n_failed += 1
            self.reasons[str(record["error"])] += 1
            if self.first_failed is None:
                self.first_failed = record["sample_id"]
        else:
            self.n_ok += 1
            self.n_ok_empty += record.get("area") == 0

    def warnings(self) -> list[str]:
        """E.g. `refcoco/val: 4 of 6 samples failed (3 x image: ...; 1 x ...); first: 12`, and
        `refcoco/val: every predicted mask is empty`."""
        warnings = []
        where = f"{self.suite}/{self.split}"
        if self.n_failed:
            shown = "; ".join(f"{count} x {reason}" for reason, count in self.reasons.most_common(FAILURE_REASONS))
            more = len(self.reasons) - FAILURE_REASONS
            warnings.append(f"{where}: {self.n_failed} of {self.n} samples failed ({shown}"
                            + (f"; and {more} other reasons)" if more > 0 else ")")
                            + f"; first: {self.first_failed}")
        if self.n_ok and self.n_ok_empty == self.n_ok:
            warnings.append(f"{where}: every predicted mask is empty")
        return warnings
