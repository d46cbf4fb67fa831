"""A suite's headline in REPORT.md: blocks of rows (models, context baselines, trivial baselines, numbers reported
by papers), each sorted by score (mean cIoU over the splits), partial runs marked; and the suite's CSV."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.report.compare import ReportContext
from bench.report.groups import CONTEXT, MODEL, TRIVIAL, newest_per_model, row_kind
from bench.report.marks import mark_suffix
from bench.report.read_runs import Run
from bench.report.reported import ReportedValue
from bench.report.seed_rows import by_model, pooled_values, training_cells
from bench.report.text import (
    CI_METRICS,
    MISSING,
    REPORT,
    cell_text,
    csv_file,
    csv_keys,
    csv_number,
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
REPORTED = "reported"
POOLED_NOTE = ("A model trained with several seeds is one row: the mean over its seeds, with a 95% interval that "
               "counts the seed-to-seed spread as well as the test samples (mean ± t(seeds - 1) x standard error).")
BLOCKS = (MODEL, CONTEXT, TRIVIAL, REPORTED)
BLOCK_TITLES = {
    MODEL: "Models",
    CONTEXT: "Context baselines: dataset-bias diagnostics, not models",
    TRIVIAL: "Trivial baselines: fixed rules",
    REPORTED: "Reported by papers (copied from `bench/data/reported.csv`, not measured here)",
}


@dataclass
class LeaderboardRow:
    """One table row: a measured run or a reported method; numbers in percent."""

    kind: str  # measured | reported
    model: str
    link: str | None  # relative link to the run directory (measured rows)
    origin: str  # run name or paper
    notes: list[str]  # reported-value notes, shown as numbered footnotes
    values: dict[str, dict[str, float | None]]  # split -> ciou, ciou_lo, ciou_hi, giou, giou_lo, giou_hi
    block: str = REPORTED  # MODEL, CONTEXT, TRIVIAL or REPORTED
    marks: str = ""  # the run's marks (partial runs), shown after its name
    training: list[str] = field(default_factory=list)  # models: training samples, seeds

    def name_cell(self) -> str:
        """The row's name as a table cell: linked to its run (measured rows), with its marks."""
        name = f"[{link_text(self.model)}]({self.link})" if self.link else md(self.model)
        return name + md(self.marks)


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


def score(values: dict[str, dict[str, float | None]]) -> float | None:
    """A row's score: its mean cIoU (%) over the splits it has one for; None without any."""
    cious = [cell["ciou"] for cell in values.values() if cell.get("ciou") is not None]
    return sum(cious) / len(cious) if cious else None


def by_score(rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """Rows best score first (rows without one last), then by name."""
    return sorted(rows, key=lambda row: (score(row.values) is None, -(score(row.values) or 0.0), row.model.lower()))


def measured_row(run: Run, suite: str, page: str) -> LeaderboardRow:
    """The run's row, linking to its directory from `page`."""
    target = link(page, run.name, directory=True)
    return LeaderboardRow("measured", run.display_name, target, run.name, [], percent_values(run, suite),
                          row_kind(run), mark_suffix(run, suite))


def pooled_row(group: list[Run], suite: str, page: str, context: ReportContext,
               mark: Callable[[str], str]) -> LeaderboardRow:
    """One model's row: its run's, or with several training seeds the seeds' mean and seed-aware interval (`mark`
    footnotes why a split has no interval)."""
    row = measured_row(group[0], suite, page)
    if len(group) > 1:
        row.values, why = pooled_values(group, suite, context)
        row.marks += f" {mark(why)}" if why else ""
    return row


def reported_rows(suite: str, reported: list[ReportedValue]) -> list[LeaderboardRow]:
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


def headline(suite: str, runs: list[Run], reported: list[ReportedValue], notes: dict[str, list[str]],
             page: str | None, context: ReportContext) -> tuple[list[str], Files]:
    """REPORT.md's section of `suite`: a table per block of rows (one per model, its training seeds pooled), each
    sorted by score, and the suite's CSV. `notes`: block -> lines under its table; `page`: the suite's own page
    (None: it has none)."""
    shown, superseded = newest_per_model([run for run in runs if suite in run.results])
    groups = by_model(shown)
    rows = [pooled_row(group, suite, REPORT, context, lambda why: "(mean of seeds, no interval)") for group in groups]
    rows += reported_rows(suite, reported)
    if not rows:
        return [], {}
    training = {group[0].name: training_cells(group) for group in groups if row_kind(group[0]) == MODEL}
    for row in rows:
        row.training = training.get(row.origin, []) if row.block == MODEL else []
    if any(len(group) > 1 for group in groups):
        notes = notes | {MODEL: [*notes.get(MODEL, []), POOLED_NOTE, ""]}
    splits = ordered_splits(split for row in rows for split in row.values)
    title = f"## {suite}" + ("" if shown else " (reported numbers only, no measured runs yet)")
    lines = [title, ""]
    if page:
        lines += [f"Paired differences, training budgets and costs, details, plots and gallery: "
                  f"[{page}]({link(REPORT, page)}).", ""]
    footnotes = list(dict.fromkeys(note for row in rows for note in row.notes))
    ordered = []
    for block in BLOCKS:
        members = by_score([row for row in rows if row.block == block])
        if members:
            lines += [f"**{BLOCK_TITLES[block]}**", "", _table(block, members, splits, footnotes), "",
                      *notes.get(block, [])]
            ordered += members
    lines += [f"[{index}] {md(note)}  " for index, note in enumerate(footnotes, start=1)]
    if superseded:
        links = ", ".join(f"[{link_text(run.name)}]({link(REPORT, run.name, directory=True)}) ({md(run.display_name)})"
                          for run in superseded)
        lines += [f"Superseded by a newer run of the same model: {links}.", ""]
    lines += consistency_warnings(suite, shown)
    files: Files = {}
    lines += [_csv(files, suite, ordered, splits), ""]
    return lines, files


def _table(block: str, rows: list[LeaderboardRow], splits: list[str], footnotes: list[str]) -> str:
    """One block's table: the row, its cells per split, its score and the block's own columns."""
    table = []
    for row in rows:
        extra = {MODEL: [md(text) for text in row.training] or [MISSING, MISSING],
                 REPORTED: [md(row.origin) + "".join(f" [{footnotes.index(note) + 1}]" for note in row.notes)]}
        table.append([row.name_cell(), *[md(cell_text(row.values.get(split))) for split in splits],
                      percent(score(row.values)), *extra.get(block, [])])
    headers = ["model", *[f"{split} cIoU / gIoU" for split in splits], "mean cIoU"]
    headers += {MODEL: ["training samples", "training seeds"], REPORTED: ["source"]}.get(block, [])
    return markdown_table(table, headers)


def _csv(files: Files, suite: str, rows: list[LeaderboardRow], splits: list[str]) -> str:
    headers = ["block", "model", "run_or_source", "note", "marks", "mean_ciou"]
    headers += [f"{split}_{key}" for split in splits for key in csv_keys()]
    body = [[row.block, row.model, row.origin, " | ".join(row.notes), row.marks.strip(), csv_number(score(row.values))]
            + [csv_number(row.values.get(split, {}).get(key)) for split in splits for key in csv_keys()]
            for row in rows]
    return csv_file(files, REPORT, f"tables/{slug(suite)}.csv", headers, body)


def consistency_warnings(suite: str, runs: list[Run]) -> list[str]:
    """Flags rows that are not comparable: different metric settings, or different data on disk."""
    lines = []
    protocols = {json.dumps(metric_settings(run.record.protocol, suite), sort_keys=True) for run in runs}
    if len(protocols) > 1:
        lines.append(
            f"**Warning:** the {suite} rows used different metric settings (see the runs pages); compare with care."
        )
    fingerprints = {str(run.record.dataset_fingerprints.get(suite)) for run in runs}
    if len(fingerprints) > 1:
        lines.append(
            f"**Warning:** the {suite} rows were measured on different data (dataset fingerprints differ)."
        )
    return lines + [""] if lines else []
