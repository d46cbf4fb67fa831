"""An "eval" ablation's table: per variant, mean ± std over seeds, 95% intervals, latency, and the paired
bootstrap difference to the reference variant, every number read back from the cells' run directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.metrics import Protocol, SampleScores, bootstrap_cis, paired_bootstrap, paired_scores
from bench.predictions import iter_records
from bench.report.text import csv_text, link, markdown_table
from bench.rundir import RunDir

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


@dataclass
class Row:
    """One variant: its seeds' numbers and its difference to the reference (fractions; latency in ms)."""

    variant: str
    x: str | None
    cells: list[CellResult]
    values: dict[str, Any] = field(default_factory=dict)


def pooled(cells: list[CellResult]) -> list[dict[str, Any]]:
    """The records of every seed, ids prefixed by the seed: seed k of two variants pairs with seed k."""
    return [{**r, "sample_id": f"s{c.seed}/{r['sample_id']}"} for c in cells for r in c.records]


def build_rows(cells: dict[str, list[CellResult]], reference: str, x: dict[str, str | None],
               protocol: Protocol) -> list[Row]:
    """Rows in variant order; variants without a complete cell are left out (listed as missing elsewhere)."""
    empty = protocol.empty_union_iou
    reference_records = pooled(cells.get(reference, []))
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
        if reference_records and variant != reference and _same_seeds(cells[reference], done):
            row.values["vs_reference"] = paired_bootstrap(*paired_scores(records, reference_records), protocol)
        rows.append(row)
    return rows


def _same_seeds(a: list[CellResult], b: list[CellResult]) -> bool:
    return sorted(c.seed for c in a) == sorted(c.seed for c in b)


def difference(row: Row, other: list[CellResult], protocol: Protocol) -> dict[str, Any]:
    """Paired bootstrap of `row` minus the cells `other` (same seeds, same samples)."""
    return paired_bootstrap(*paired_scores(pooled(row.cells), pooled(other)), protocol)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _interval(values: list[float] | None) -> str:
    return "" if values is None else f"[{_pct(values[0])}, {_pct(values[1])}]"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


HEADERS = ["variant", "x", "seeds", "n", "ciou", "ciou_std", "ciou_lo", "ciou_hi", "giou", "giou_std", "giou_lo",
           "giou_hi", "latency_ms", "d_ciou", "d_ciou_lo", "d_ciou_hi", "d_giou", "d_giou_lo", "d_giou_hi", "runs"]


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
            cells += [_pct(diff and diff["difference"]), _pct(interval[0]), _pct(interval[1])]
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
                         "" if diff is None else f"{_signed(diff['difference'])} {_interval(diff['ci95'])}")
        table.append(cells + [links])
    headers = (["variant"] + ([x_name] if x_name else []) +
               ["seeds", "n", "cIoU %", "gIoU %", "latency ms/sample", f"Δ cIoU vs {reference}",
                f"Δ gIoU vs {reference}", "runs"])
    return markdown_table(table, headers)
