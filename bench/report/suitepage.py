"""A measured suite's own page, suites/NAME.md: the learned models at equal training samples first, then other
budgets, the context baselines, paired differences, parameters and latency, per-split details, plots and gallery."""

from __future__ import annotations

from bench.report.baselines import context_notes
from bench.report.budget import budget_sections
from bench.report.compare import KIND_ORDER, ReportContext, costs_section, differences_section
from bench.report.gallery import gallery_section
from bench.report.groups import newest_per_model, row_kind
from bench.report.marks import MARKS_LEGEND, marked_name
from bench.report.plots import plot_png
from bench.report.read_runs import Run
from bench.report.runs_page import RUNS_PAGE
from bench.report.text import (
    REPORT,
    csv_file,
    csv_number,
    link,
    link_text,
    markdown_table,
    md,
    ordered_splits,
    percent,
    slug,
)

Files = dict[str, bytes]
SUITES_DIR = "suites"


def suite_page_path(suite: str) -> str:
    return f"{SUITES_DIR}/{slug(suite)}.md"


def suite_page(suite: str, runs: list[Run], context: ReportContext, generated: str) -> tuple[Files, list[str]]:
    """The page and its files (CSVs, plots, gallery), and the lines REPORT.md shows under the suite's context
    baselines; `runs` are leaderboard runs."""
    shown, _ = newest_per_model([run for run in runs if suite in run.results])
    shown.sort(key=lambda run: KIND_ORDER.index(row_kind(run)))  # models, context, trivial; by name within each
    page = suite_page_path(suite)
    files: Files = {}
    index_notes, context_lines = context_notes(suite, shown, context)
    lines = [f"# {suite}", "", generated, "",
             f"Back to [{REPORT}]({link(page, REPORT)}), which ranks every row; where each run came from: "
             f"[{RUNS_PAGE}]({link(page, RUNS_PAGE)}). {md(MARKS_LEGEND)}", ""]
    lines += budget_sections(suite, shown, page, files, context)
    lines += context_lines
    lines += differences_section(suite, shown, context, files, page)
    lines += costs_section(suite, shown, files, page)
    lines += details_section(suite, shown, files, page)
    lines += plots_section(suite, shown, files, page)
    lines += gallery_section(suite, shown, context, files, context.requests.get(suite), page)
    files[page] = ("\n".join(lines).rstrip("\n") + "\n").encode("utf-8")
    return files, index_notes


def details_section(suite: str, runs: list[Run], files: Files, page: str) -> list[str]:
    """Per split: n, failures, cIoU, gIoU and Prec@X of every shown run."""
    thresholds = sorted({key for run in runs for metrics in run.results[suite].metrics.values() for key in metrics
                         if key.startswith("prec@")}, key=lambda key: float(key.removeprefix("prec@")))
    headers = ["model", "split", "n", "failed", "cIoU", "gIoU", *[key.replace("prec@", "Prec@") for key in thresholds]]
    labels, percents = [], []
    for run in runs:
        metrics_by_split = run.results[suite].metrics
        for split in ordered_splits(metrics_by_split):
            metrics = metrics_by_split[split]
            labels.append([marked_name(run, suite), split, str(metrics.get("n", "")), str(metrics.get("n_failed", ""))])
            fractions = [metrics.get(key) for key in ("ciou", "giou", *thresholds)]
            percents.append([None if value is None else 100 * value for value in fractions])
    pairs = list(zip(labels, percents, strict=True))
    csv_line = csv_file(files, page, f"tables/{slug(suite)}_details.csv", headers,
                        [label + [csv_number(v) for v in values] for label, values in pairs])
    table = [[md(cell) for cell in label] + [percent(v) for v in values] for label, values in pairs]
    return ["## Details per split (%)", "", markdown_table(table, headers), "", csv_line, ""]


def plots_section(suite: str, runs: list[Run], files: Files, page: str) -> list[str]:
    """One PNG per shown run: its per-sample IoU histogram and Prec@X curve on every split of the suite."""
    lines = ["## IoU histograms and Prec@X curves", ""]
    for run in runs:
        ious = run.results[suite].ious
        if not ious:
            lines += [f"{md(marked_name(run, suite))}: no predictions file, no plot.", ""]
            continue
        splits = "+".join(ordered_splits(ious))
        title = f"{suite} {splits}: per-sample IoU and Prec@X of {marked_name(run, suite)}"
        path = f"plots/{slug(suite)}__{slug(run.name)}.png"
        files[path] = plot_png(title, ious)
        lines += [f"![{link_text(title)}]({link(page, path)})", ""]
    return lines
