"""One suite's part of REPORT.md: leaderboard (measured, then reported rows), details, CSVs and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.report.compare import ReportContext, costs_section, differences_section
from bench.report.gallery import gallery_section
from bench.report.groups import newest_per_model
from bench.report.plots import plot_png
from bench.report.reported import ReportedValue
from bench.report.runs import Run
from bench.report.text import (
    CI_METRICS,
    REPORT,
    cell_text,
    csv_keys,
    csv_number,
    csv_text,
    link,
    link_text,
    markdown_table,
    md,
    metric_settings,
    ordered_splits,
    percent,
    slug,
)

Files = dict[str, bytes]  # path relative to the results directory -> contents


@dataclass
class LeaderboardRow:
    """One table row: a measured run or a reported method; numbers in percent."""

    kind: str  # measured | reported
    model: str
    link: str | None  # relative link to the run directory (measured rows)
    origin: str  # run name or paper
    notes: list[str]  # reported-value notes, shown as numbered footnotes
    values: dict[str, dict[str, float | None]]  # split -> ciou, ciou_lo, ciou_hi, giou, giou_lo, giou_hi


def suite_section(suite: str, runs: list[Run], reported: list[ReportedValue],
                  context: ReportContext | None = None) -> tuple[list[str], Files]:
    """Markdown lines and files (CSVs, plots) for one suite; `runs` are leaderboard runs only. With a
    `context` (where the runs are, the reference model, the user's gallery), the measured rows' paired
    differences to the reference, their costs and a gallery too."""
    shown, superseded = newest_per_model([run for run in runs if suite in run.results])
    rows = [measured_row(run, suite, REPORT) for run in shown] + _reported_rows(suite, reported)
    if not rows:
        return [], {}
    splits = ordered_splits(split for row in rows for split in row.values)
    title = f"## {suite}" + ("" if shown else " (reported numbers only, no measured runs yet)")
    lines, files = [title, ""], {}
    lines += _leaderboard(suite, rows, splits, files)
    if superseded:
        links = ", ".join(
            f"[{link_text(run.name)}]({link(REPORT, run.name, directory=True)}) ({md(run.display_name)})"
            for run in superseded
        )
        lines += [f"Superseded by a newer run of the same model: {links}.", ""]
    lines += consistency_warnings(suite, shown)
    if shown and context is not None:
        lines += differences_section(suite, shown, context, files)
        lines += costs_section(suite, shown, files)
    if shown:
        lines += _details(suite, shown, files)
        lines += _plots(suite, shown, files)
    if shown and context is not None:
        lines += gallery_section(suite, shown, context, files, context.requests.get(suite))
    return lines, files


def percent_values(run: Run, suite: str) -> dict[str, dict[str, float | None]]:
    """split -> cIoU/gIoU and their 95% interval ends, in percent."""
    values = {}
    for split, metrics in run.results[suite].metrics.items():
        cell: dict[str, float | None] = {}
        for metric in CI_METRICS:
            interval = metrics.get(f"{metric}_ci95") or (None, None)
            for key, fraction in (
                (metric, metrics.get(metric)),
                (f"{metric}_lo", interval[0]),
                (f"{metric}_hi", interval[1]),
            ):
                cell[key] = None if fraction is None else 100 * fraction
        values[split] = cell
    return values


def measured_row(run: Run, suite: str, page: str) -> LeaderboardRow:
    """The run's row, linking to its directory from `page`."""
    target = link(page, run.name, directory=True)
    return LeaderboardRow("measured", run.display_name, target, run.name, [], percent_values(run, suite))


def _reported_rows(suite: str, reported: list[ReportedValue]) -> list[LeaderboardRow]:
    rows: dict[str, LeaderboardRow] = {}
    for item in reported:
        if item.suite != suite:
            continue
        row = rows.setdefault(
            item.method, LeaderboardRow("reported", f"{item.method} (reported)", None, "", [], {})
        )
        if item.source not in row.origin.split("; "):
            row.origin = "; ".join(filter(None, [row.origin, item.source]))
        if item.note and item.note not in row.notes:
            row.notes.append(item.note)
        row.values.setdefault(item.split, {})[item.metric] = item.value
    return list(rows.values())


def _leaderboard(suite: str, rows: list[LeaderboardRow], splits: list[str], files: Files) -> list[str]:
    notes = list(dict.fromkeys(note for row in rows for note in row.notes))
    table = []
    for row in rows:
        model = f"[{link_text(row.model)}]({row.link})" if row.link else md(row.model)
        markers = "".join(f" [{notes.index(note) + 1}]" for note in row.notes)
        cells = [md(cell_text(row.values.get(split))) for split in splits]
        table.append([row.kind, model, *cells, md(row.origin) + markers])
    headers = ["kind", "model", *[f"{split} cIoU / gIoU" for split in splits], "run / source"]
    csv_rows = [
        [row.kind, row.model, row.origin, " | ".join(row.notes)]
        + [csv_number(row.values.get(split, {}).get(key)) for split in splits for key in csv_keys()]
        for row in rows
    ]
    csv_headers = ["kind", "model", "run_or_source", "note"] + [
        f"{split}_{key}" for split in splits for key in csv_keys()
    ]
    csv_path = f"tables/{slug(suite)}.csv"
    files[csv_path] = csv_text(csv_headers, csv_rows).encode("utf-8")
    lines = [markdown_table(table, headers), ""]
    lines += [f"[{index}] {md(note)}  " for index, note in enumerate(notes, start=1)]
    return lines + [f"CSV: [{csv_path}]({link(REPORT, csv_path)})", ""]


def consistency_warnings(suite: str, runs: list[Run]) -> list[str]:
    """Flags rows that are not comparable: different metric settings, or different data on disk."""
    lines = []
    protocols = {json.dumps(metric_settings(run.record.protocol, suite), sort_keys=True) for run in runs}
    if len(protocols) > 1:
        lines.append(
            f"**Warning:** the {suite} rows used different metric settings (see Runs); compare with care."
        )
    fingerprints = {str(run.record.dataset_fingerprints.get(suite)) for run in runs}
    if len(fingerprints) > 1:
        lines.append(
            f"**Warning:** the {suite} rows were measured on different data (dataset fingerprints differ)."
        )
    return lines + [""] if lines else []


def _details(suite: str, runs: list[Run], files: Files) -> list[str]:
    """Per split: n, failures, cIoU, gIoU and Prec@X of every shown measured row."""
    thresholds = sorted(
        {
            key
            for run in runs
            for metrics in run.results[suite].metrics.values()
            for key in metrics
            if key.startswith("prec@")
        },
        key=lambda key: float(key.removeprefix("prec@")),
    )
    precisions = [key.replace("prec@", "Prec@") for key in thresholds]
    headers = ["model", "split", "n", "failed", "cIoU", "gIoU", *precisions]
    labels, percents = [], []
    for run in runs:
        metrics_by_split = run.results[suite].metrics
        for split in ordered_splits(metrics_by_split):
            metrics = metrics_by_split[split]
            labels.append(
                [run.display_name, split, str(metrics.get("n", "")), str(metrics.get("n_failed", ""))]
            )
            fractions = [metrics.get(key) for key in ("ciou", "giou", *thresholds)]
            percents.append([None if value is None else 100 * value for value in fractions])
    pairs = list(zip(labels, percents, strict=True))
    csv_path = f"tables/{slug(suite)}_details.csv"
    csv_rows = [label + [csv_number(v) for v in values] for label, values in pairs]
    files[csv_path] = csv_text(headers, csv_rows).encode("utf-8")
    table = [[md(cell) for cell in label] + [percent(v) for v in values] for label, values in pairs]
    return [
        f"### {suite}: details (%)",
        "",
        markdown_table(table, headers),
        "",
        f"CSV: [{csv_path}]({link(REPORT, csv_path)})",
        "",
    ]


def _plots(suite: str, runs: list[Run], files: Files) -> list[str]:
    lines = [f"### {suite}: IoU histograms and Prec@X curves", ""]
    for run in runs:
        ious = run.results[suite].ious
        if not ious:
            lines += [f"{md(run.display_name)}: no predictions file, no plot.", ""]
            continue
        path = f"plots/{slug(suite)}__{slug(run.name)}.png"
        files[path] = plot_png(f"{run.display_name} on {suite} ({run.name})", ious)
        lines += [f"![{link_text(run.display_name)} on {suite}]({link(REPORT, path)})", ""]
    return lines
