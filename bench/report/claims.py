"""Every ablation's claims and verdicts for REPORT.md's index: read from `ablations/NAME/claims.csv` when the
ablation wrote one (the adjusted verdict preferred when it has one), else from its report.md's "## Claims" table."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from bench.io import read_text

CLAIMS_CSV = "claims.csv"
CLAIMS_HEADING = "## Claims"


@dataclass(frozen=True)
class Claim:
    """One claim of an ablation as the index shows it."""

    claim: str
    estimate: str  # "quantity = +6.2 [+3.8, +8.6]" in points, as the ablation states it
    verdict: str


def read_claims(folder: Path, summary: str) -> list[Claim] | None:
    """The ablation's claims from claims.csv, else from its summary page (`summary`, e.g. report.md); None when
    neither holds any."""
    if (folder / CLAIMS_CSV).is_file():
        return csv_claims(folder / CLAIMS_CSV)
    if (folder / summary).is_file():
        return summary_claims(read_text(folder / summary)) or None
    return None


def csv_claims(path: Path) -> list[Claim]:
    """claims.csv rows: claim, verdict, estimate, ci_low, ci_high (fractions), optional quantity and
    adjusted_verdict."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    claims = []
    for row in rows:
        estimate = _points(row.get("estimate"))
        low, high = _points(row.get("ci_low")), _points(row.get("ci_high"))
        if low != "–" and high != "–":
            estimate += f" [{low}, {high}]"
        if row.get("quantity"):
            estimate = f"{row['quantity']} = {estimate}"
        verdict = (row.get("adjusted_verdict") or "").strip() or (row.get("verdict") or "").strip() or "–"
        claims.append(Claim((row.get("claim") or "").strip(), estimate, verdict))
    return claims


def _points(value: str | None) -> str:
    """A fraction as signed points ('+6.2'), '–' when empty or not a number."""
    try:
        number = float(value or "nan")
    except ValueError:
        return "–"
    return "–" if math.isnan(number) else f"{100 * number:+.1f}"


def summary_claims(text: str) -> list[Claim]:
    """The rows of the first table under '## Claims': its 'claim', 'ours ...' and 'verdict' columns."""
    lines = text.partition(f"\n{CLAIMS_HEADING}\n")[2].splitlines()
    rows = []
    for line in lines:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([_plain(cell) for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif rows and not line.startswith("|"):
            break
    if len(rows) < 2:
        return []
    header = rows[0]
    ours = next((i for i, name in enumerate(header) if name.startswith("ours")), None)
    if "claim" not in header or "verdict" not in header:
        return []
    return [Claim(row[header.index("claim")], row[ours] if ours is not None else "–", row[header.index("verdict")])
            for row in rows[1:] if len(row) == len(header)]


def _plain(cell: str) -> str:
    return cell.strip().replace("\\|", "|").strip("*").strip()
