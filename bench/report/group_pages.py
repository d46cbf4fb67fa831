"""Ablation and diagnostic runs: their REPORT.md sections (every ablation's claims with their verdicts, then links)
and one generated page per ablation group and for the diagnostics: the runs' table and provenance."""

from __future__ import annotations

from pathlib import Path

from bench.report.claims import read_claims
from bench.report.leaderboard import Files, consistency_warnings, measured_row
from bench.report.read_runs import Run
from bench.report.runs_page import provenance
from bench.report.text import REPORT, cell_text, link, link_text, markdown_table, md, ordered_splits, slug

ABLATIONS_DIR = "ablations"
DIAGNOSTICS_PAGE = "diagnostics/runs.md"
PAGE_NAME = "runs.md"  # a group's generated page, in its own folder
SUMMARY_NAME = "report.md"  # an ablation's summary, written by another command into the group's folder


def ablations_section(
    results_dir: Path, groups: dict[str, list[Run]], generated: str
) -> tuple[list[str], Files]:
    """One line per group in REPORT.md and one page per group tabling its variants, then a line for every other
    ablation summary (`ablations/<name>/report.md` of an ablation that makes no runs, e.g. a measurement);
    nothing without either."""
    folders = group_folders(list(groups))
    summaries_only = sorted(path.parent.name for path in (results_dir / ABLATIONS_DIR).glob(f"*/{SUMMARY_NAME}")
                            if f"{ABLATIONS_DIR}/{path.parent.name}" not in folders.values())
    if not groups and not summaries_only:
        return [], {}
    lines = ["## Ablations", "", *claims_table(results_dir, [*folders.values(),
                                                          *[f"{ABLATIONS_DIR}/{name}" for name in summaries_only]]),
             'Runs of kind "ablation", grouped by run.json "group": variants compared on their own pages (with where '
             "each run came from), never leaderboard rows.", ""]
    files: Files = {}
    for group, folder in folders.items():
        page, summary = f"{folder}/{PAGE_NAME}", f"{folder}/{SUMMARY_NAME}"
        summary = summary if (results_dir / summary).is_file() else None
        variants = groups[group]
        description = f'Variants of the ablation "{md(group)}" (run.json kind "ablation").'
        if summary:
            description += f" Summary: [{summary}]({link(page, summary)})."
        files[page] = group_page(page, f"Ablation: {group}", description, variants, generated)
        line = f"- [{link_text(group)}]({link(REPORT, page)}): {_count(len(variants), 'variant')}"
        if summary:
            line += f"; summary: [{summary}]({link(REPORT, summary)})"
        lines.append(line)
    for name in summaries_only:
        summary = f"{ABLATIONS_DIR}/{name}/{SUMMARY_NAME}"
        lines.append(f"- [{link_text(name)}]({link(REPORT, summary)}): a measurement, no runs")
    return lines + [""], files


def diagnostics_section(runs: list[Run], generated: str) -> tuple[list[str], Files]:
    """A line in REPORT.md and one page tabling every diagnostic run; nothing without such runs."""
    if not runs:
        return [], {}
    description = 'Runs of kind "diagnostic": measurements that explain a model, not leaderboard entries.'
    page = group_page(DIAGNOSTICS_PAGE, "Diagnostic runs", description, runs, generated)
    lines = [
        "## Diagnostics",
        "",
        f"- [Diagnostic runs]({link(REPORT, DIAGNOSTICS_PAGE)}): {_count(len(runs), 'run')}",
        "",
    ]
    return lines, {DIAGNOSTICS_PAGE: page}


def group_folders(groups: list[str]) -> dict[str, str]:
    """group -> `ablations/<slug>`, distinct even when two names slug alike (later ones get -2, -3, ...)."""
    folders: dict[str, str] = {}
    for group in groups:
        base = candidate = slug(group)
        number = 1
        while f"{ABLATIONS_DIR}/{candidate}" in folders.values():
            number += 1
            candidate = f"{base}-{number}"
        folders[group] = f"{ABLATIONS_DIR}/{candidate}"
    return folders


def group_page(page: str, title: str, description: str, runs: list[Run], generated: str) -> bytes:
    """Per suite, one row per run (none replaces another): cIoU / gIoU per split, linked to the run."""
    lines = [
        f"# {title}",
        "",
        generated,
        "",
        f"{description} Cells are cIoU / gIoU in % with the 95% bootstrap confidence interval in brackets; "
        f"every run is its own row. Back to [{REPORT}]({link(page, REPORT)}).",
        "",
    ]
    for suite in sorted({suite for run in runs for suite in run.results}):
        measured = [run for run in runs if suite in run.results]
        rows = [measured_row(run, suite, page) for run in measured]
        splits = ordered_splits(split for row in rows for split in row.values)
        table = [
            [row.name_cell(), *[md(cell_text(row.values.get(split))) for split in splits]]
            + [md(row.origin)]
            for row in rows
        ]
        headers = ["run", *[f"{split} cIoU / gIoU" for split in splits], "directory"]
        lines += [f"## {suite}", "", markdown_table(table, headers), ""]
        lines += consistency_warnings(suite, measured)
    empty = [run for run in runs if not run.results]
    if empty:
        links = ", ".join(f"[{link_text(run.name)}]({link(page, run.name, directory=True)})" for run in empty)
        lines += [f"No metrics yet (see Runs below): {links}.", ""]
    lines += ["## Runs", "", *provenance(runs, page)]
    return ("\n".join(lines).rstrip("\n") + "\n").encode("utf-8")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def claims_table(results_dir: Path, folders: list[str]) -> list[str]:
    """Every claim of the ablations in `folders` with its estimate and verdict (see bench.report.claims); nothing
    when none states one."""
    rows = []
    for folder in sorted(folders, key=lambda folder: folder.rsplit("/", 1)[-1].lower()):
        name, summary = folder.rsplit("/", 1)[-1], f"{folder}/{SUMMARY_NAME}"
        target = summary if (results_dir / summary).is_file() else f"{folder}/{PAGE_NAME}"
        for claim in read_claims(results_dir / folder, SUMMARY_NAME) or []:
            rows.append([f"[{link_text(name)}]({link(REPORT, target)})", md(claim.claim), md(claim.estimate),
                         md(claim.verdict)])
    if not rows:
        return []
    return ["Every claim an ablation judges, with our estimate in points and its 95% interval and the verdict it "
            "quotes (Holm-adjusted for the ablation's family of claims where its `claims.csv` gives one): agrees when "
            "the interval lies on the claimed side of the margin, disagrees when wholly on the other, inconclusive "
            "when it spans it.", "",
            markdown_table(rows, ["ablation", "claim", "ours (points, 95% interval)", "verdict"]), ""]
