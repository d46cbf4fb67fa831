"""`bench report`: regenerates <results>/REPORT.md, its pages, tables/ and plots/ from the run directories.

Reproducible byte for byte. Modules, in the order a build uses them: `read_runs` reads the run directories
(through bench.rundir), `reported` the paper numbers, `groups` sorts runs by kind, `leaderboard`,
`group_pages` (ablations and diagnostics) and `runs_page` (where each run came from) render markdown, CSV and
PNG bytes without writing, `build` assembles them and `output` writes them all at once, deleting only stale
files that an earlier build wrote (its manifest).

Leaderboard rows: one per model per suite, for runs of kind "leaderboard" only; a model is named by run.json
"label" (else "model"); when several runs share that name, the newest by run.json "created" is shown and the
others are listed as superseded (give runs distinct labels to show them side by side). Ablation variants are
tabled per group on their own pages, diagnostic runs on one page. Numbers copied from papers come from
bench/data/reported.csv and are always marked "reported", below the measured rows.
"""

from bench.report.build import build_report
from bench.report.reported import ReportedValue, load_reported

__all__ = ["ReportedValue", "build_report", "load_reported"]
