"""Builds the whole report in memory as {relative path: bytes}, then writes it in one go (see output.py)."""

from __future__ import annotations

from pathlib import Path

from bench.report.compare import CompareOptions, ReportContext, check_reference
from bench.report.gallery import check_requested_suites, parse_requests
from bench.report.group_pages import ablations_section, diagnostics_section
from bench.report.groups import CONTEXT, group_runs
from bench.report.leaderboard import Files, headline
from bench.report.marks import MARKS_LEGEND
from bench.report.output import read_manifest, write_outputs
from bench.report.read_runs import Run, load_runs
from bench.report.reported import REAL_SUITES, ReportedValue, load_reported
from bench.report.runs_page import RUNS_PAGE, other_documents, problems_line, runs_page
from bench.report.suitepage import suite_page, suite_page_path
from bench.report.text import REPORT, generated_line
from bench.rundir.declared import DECLARED_RUNS


def build_report(results_dir: Path = Path("results"), options: CompareOptions | None = None) -> Path:
    """Writes results_dir/REPORT.md, its pages, tables/ and plots/ from every run below results_dir; returns
    the path of REPORT.md. `options`: the reference model of the paired differences and the user's gallery
    samples (a BenchError, before anything is written, when they name no run or sample)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    outputs = render_report(results_dir, load_runs(results_dir), load_reported(), options)
    write_outputs(results_dir, outputs)
    return results_dir / REPORT


def render_report(results_dir: Path, runs: list[Run], reported: list[ReportedValue],
                  options: CompareOptions | None = None) -> Files:
    """Every file of the report, REPORT.md included; reads results_dir for documents to link and for the
    measured runs' predictions (paired differences, gallery) and data (random-object's expectation)."""
    groups = group_runs(runs)
    options = options or CompareOptions()
    check_reference(groups.leaderboard, options.reference)
    requests = parse_requests(options.gallery)
    check_requested_suites(requests, groups.leaderboard)
    context = ReportContext(results_dir, options, requests)
    generated = generated_line(results_dir.as_posix())
    lines = ["# Benchmark report", "", generated, "", *INTRO, ""]
    if (results_dir / DECLARED_RUNS).is_file():
        lines += [f"The measured rows come from the runs declared in [{DECLARED_RUNS}]({DECLARED_RUNS}), each with the "
                  f"command that makes it; no other run directory is read. Where each came from: [{RUNS_PAGE}]"
                  f"({RUNS_PAGE}).", ""]
    if not runs:
        lines += [f"No runs yet: no directory below `{results_dir.as_posix()}` contains a run.json.", ""]
    lines += problems_line(runs)
    files: Files = {RUNS_PAGE: runs_page(groups.leaderboard, generated)}
    measured = sorted({suite for run in groups.leaderboard for suite in run.results})
    for suite in measured + [suite for suite in REAL_SUITES if suite not in measured]:
        page, notes = None, {}
        if suite in measured:
            page_files, notes[CONTEXT] = suite_page(suite, groups.leaderboard, context, generated)
            files.update(page_files)
            page = suite_page_path(suite)
        section, section_files = headline(suite, groups.leaderboard, reported, notes, page, context)
        lines += section
        files.update(section_files)
    for section, section_files in (
        ablations_section(results_dir, groups.ablations, generated),
        diagnostics_section(groups.diagnostics, generated),
    ):
        lines += section
        files.update(section_files)
    lines += other_documents(results_dir, set(files) | read_manifest(results_dir))
    files[REPORT] = ("\n".join(lines).rstrip("\n") + "\n").encode("utf-8")
    return files


INTRO = [
    "Cells are cIoU / gIoU in %, with the 95% bootstrap confidence interval over samples in brackets for measured "
    "rows. Per suite the rows come in blocks, each sorted by its mean cIoU over the splits: models; context baselines "
    "(dataset-bias diagnostics: they read the annotations of the image's objects, which no model sees); trivial "
    "baselines (fixed rules); numbers reported by papers (`bench/data/reported.csv`, not measured here). One measured "
    'row per model (run.json "label", else "model"): when a model has several runs of a suite, the newest by '
    'run.json "created" is shown and the others are listed as superseded. Each measured suite has its own page: '
    "the models compared at equal training samples, paired differences, costs, details, plots and a gallery.",
    "",
    MARKS_LEGEND,
]
