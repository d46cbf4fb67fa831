"""An "eval" ablation's table: per variant, mean ± std over seeds, 95% intervals, latency, and the difference to
the reference variant with the training seed as the unit (`bench.ablate.seeds`: per-seed paired differences, an
interval that accounts for seed variance), every number read back from the cells' run directories.

Cells that score `val` beside other splits report the other splits; `val` is kept for choices (a best variant)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.ablate.seeds import SeedDifference, seed_differences
from bench.metrics import Protocol, SampleScores, bootstrap_cis, paired_scores
from bench.report.text import csv_text, link, markdown_table
from bench.rundir.layout import RunDir
from bench.rundir.predictions import iter_records

METRICS = ("ciou", "giou")


@dataclass
class CellResult:
    """One complete cell read back: its records (ids made unique across suites and splits) and latency."""

    variant: str
    seed: int
    directory: Path
    records: list[dict[str, Any]]
    latency_ms: float | None  # model seconds per sample, as the run timed them (at the run's batch size)

    @classmethod
    def read(cls, variant: str, seed: int, directory: Path) -> CellResult:
        rundir = RunDir(directory)
        record = rundir.read()
        records = []
        for suite in record.suites:
            for _, line in iter_records(rundir.predictions(suite)):
                records.append({**line, "sample_id": f"{suite}/{line['split']}/{line['sample_id']}"})
        samples = record.timings.get("samples") or 0
        latency = 1000 * record.timings["model_s"] / samples if samples else None
        return cls(variant, seed, Path(directory), records, latency)

    def only(self, chosen: set[str]) -> CellResult:
        """The same cell restricted to the splits in `chosen`."""
        return CellResult(self.variant, self.seed, self.directory, [r for r in self.records if r["split"] in chosen],
                          self.latency_ms)


SELECTION_SPLIT = "val"


def split_roles(cells: dict[str, list[CellResult]]) -> tuple[set[str], set[str]]:
    """(reported splits, selection splits): with `val` beside other splits, `val` only chooses and the rest report;
    otherwise every split reports and nothing is left to choose on."""
    splits = {r["split"] for done in cells.values() for c in done for r in c.records}
    if SELECTION_SPLIT in splits and len(splits) > 1:
        return splits - {SELECTION_SPLIT}, {SELECTION_SPLIT}
    return splits, set()


def restricted(cells: dict[str, list[CellResult]], chosen: set[str]) -> dict[str, list[CellResult]]:
    return {variant: [c.only(chosen) for c in done] for variant, done in cells.items()}


@dataclass
class Row:
    """One variant: its seeds' numbers and its difference to the reference (fractions; latency in ms)."""

    variant: str
    x: str | None
    cells: list[CellResult]
    values: dict[str, Any] = field(default_factory=dict)


def pooled(cells: list[CellResult]) -> list[dict[str, Any]]:
    """The records of every seed, ids prefixed by the seed (for the level intervals of one variant)."""
    return [{**r, "sample_id": f"s{c.seed}/{r['sample_id']}"} for c in cells for r in c.records]


def by_seed(first: list[CellResult], second: list[CellResult]) -> list[tuple[SampleScores, SampleScores]]:
    """Score pairs of the seeds both have, each aligned by sample id (the runs must cover the same samples)."""
    others = {c.seed: c for c in second}
    return [paired_scores(c.records, others[c.seed].records) for c in sorted(first, key=lambda c: c.seed)
            if c.seed in others]


def build_rows(cells: dict[str, list[CellResult]], reference: str, x: dict[str, str | None],
               protocol: Protocol) -> list[Row]:
    """Rows in variant order; variants without a complete cell are left out (listed as missing elsewhere)."""
    empty = protocol.empty_union_iou
    rows = []
    for variant, done in cells.items():
        if not done:
            continue
        row = Row(variant, x.get(variant), done)
        scores = [SampleScores.from_records(c.records) for c in done]
        per_seed = {"ciou": [s.ciou(empty) for s in scores], "giou": [s.giou(empty) for s in scores]}
        records = pooled(done)
        intervals = dict(zip(METRICS, bootstrap_cis(SampleScores.from_records(records), protocol)))
        for metric in METRICS:
            row.values[metric] = float(np.mean(per_seed[metric]))
            row.values[f"{metric}_std"] = float(np.std(per_seed[metric], ddof=1)) if len(done) > 1 else None
            row.values[f"{metric}_ci95"] = intervals[metric]
        latencies = [c.latency_ms for c in done if c.latency_ms is not None]
        row.values["latency_ms"] = float(np.mean(latencies)) if latencies else None
        row.values["n"] = len(done[0].records)
        if cells.get(reference) and variant != reference and by_seed(done, cells[reference]):
            row.values["vs_reference"] = {m: d.to_dict() for m, d in difference(done, cells[reference], protocol).items()}
        rows.append(row)
    return rows


def difference(cells: list[CellResult], other: list[CellResult], protocol: Protocol) -> dict[str, SeedDifference]:
    """`cells` minus `other`, paired by seed and sample id, seeds as the unit (`bench.ablate.seeds`)."""
    pairs = by_seed(cells, other)
    if not pairs:
        raise ValueError("the two variants share no seed")
    return seed_differences(pairs, protocol)


def _per_seed(values: list[float]) -> str:
    return " / ".join(f"{100 * v:+.1f}" for v in values)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _interval(values: list[float] | None) -> str:
    return "" if values is None else f"[{_pct(values[0])}, {_pct(values[1])}]"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


HEADERS = ["variant", "x", "seeds", "n", "ciou", "ciou_std", "ciou_lo", "ciou_hi", "giou", "giou_std", "giou_lo",
           "giou_hi", "latency_ms", "d_ciou", "d_ciou_lo", "d_ciou_hi", "d_ciou_per_seed", "d_giou", "d_giou_lo",
           "d_giou_hi", "d_giou_per_seed", "runs"]


def table_csv(rows: list[Row], out: Path) -> str:
    """table.csv: percentages with one decimal, latency in ms, differences to the reference."""
    lines = []
    for row in rows:
        v = row.values
        cells = [row.variant, row.x or "", str(len(row.cells)), str(v["n"])]
        for metric in METRICS:
            interval = v[f"{metric}_ci95"] or [None, None]
            cells += [_pct(v[metric]), _pct(v[f"{metric}_std"]), _pct(interval[0]), _pct(interval[1])]
        cells.append("" if v["latency_ms"] is None else f"{v['latency_ms']:.2f}")
        for metric in METRICS:
            diff = v.get("vs_reference", {}).get(metric)
            interval = (diff or {}).get("ci95") or [None, None]
            cells += [_pct(diff and diff["difference"]), _pct(interval[0]), _pct(interval[1]),
                      _per_seed(diff["per_seed"]) if diff else ""]
        cells.append(" ".join(c.directory.relative_to(out).as_posix() for c in row.cells))
        lines.append(cells)
    return csv_text(HEADERS, lines)


def table_markdown(rows: list[Row], reference: str, page: str, out: Path, x_name: str | None) -> str:
    """The table as markdown, each variant linked to its run directories (relative to `page` in `out`)."""
    table = []
    for row in rows:
        v = row.values
        links = ", ".join(f"[s{c.seed}]({link(page, c.directory.relative_to(out).as_posix(), directory=True)})"
                          for c in row.cells)
        cells = [row.variant] + ([row.x or ""] if x_name else []) + [str(len(row.cells)), str(v["n"])]
        for metric in METRICS:
            std = f" ± {_pct(v[f'{metric}_std'])}" if v[f"{metric}_std"] is not None else ""
            cells.append(f"{_pct(v[metric])}{std} {_interval(v[f'{metric}_ci95'])}")
        cells.append("" if v["latency_ms"] is None else f"{v['latency_ms']:.2f}")
        for metric in METRICS:
            diff = v.get("vs_reference", {}).get(metric)
            cells.append("reference" if row.variant == reference else
                         "" if diff is None else f"{_signed(diff['difference'])} {_interval(diff['ci95'])}"
                         + (f" (seeds {_per_seed(diff['per_seed'])})" if len(diff["per_seed"]) > 1 else ""))
        table.append(cells + [links])
    headers = (["variant"] + ([x_name] if x_name else []) +
               ["seeds", "n", "cIoU %", "gIoU %", "latency ms/sample", f"Δ cIoU vs {reference}",
                f"Δ gIoU vs {reference}", "runs"])
    return markdown_table(table, headers)
