"""Numbers copied from papers (bench/data/reported.csv), shown as rows of kind "reported", never measured."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bench.errors import DataFormatError
from bench.report.text import CI_METRICS

REPORTED_CSV = Path(__file__).parent.parent / "data" / "reported.csv"
REPORTED_COLUMNS = ("suite", "split", "method", "metric", "value", "source", "note")
REAL_SUITES = ("refcoco", "refcoco+", "refcocog", "reasonseg")  # shown even before anything is measured


@dataclass(frozen=True)
class ReportedValue:
    """One number from a paper (percent), a row of bench/data/reported.csv."""

    suite: str
    split: str
    method: str
    metric: str  # ciou | giou
    value: float
    source: str
    note: str


def load_reported(path: Path = REPORTED_CSV) -> list[ReportedValue]:
    """Paper numbers in file order; a malformed row raises DataFormatError naming the line."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != REPORTED_COLUMNS:
            raise DataFormatError(f"{path}:1: columns must be {','.join(REPORTED_COLUMNS)}")
        values = []
        for row in reader:
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                value = float("nan")
            if row["metric"] not in CI_METRICS or not 0 <= value <= 100:
                raise DataFormatError(
                    f"{path}:{reader.line_num}: need metric ciou|giou and a value in 0..100 (%)"
                )
            values.append(ReportedValue(**{**row, "value": value}))
    return values
