"""Marks on a run's row wherever a table shows it: a run limited by --limit, one with failed or missing samples,
one that did not complete. Its name carries them, so no table shows a partial run unmarked."""

from __future__ import annotations

from bench.report.groups import training_seed
from bench.report.read_runs import Run

MARK = "⚠"


def run_marks(run: Run, suite: str) -> list[str]:
    """Short reasons why the run's numbers on `suite` are partial (empty when they are not)."""
    marks = []
    limit = run.record.spec.get("limit") if isinstance(run.record.spec, dict) else None
    if isinstance(limit, int):
        marks.append(f"partial: --limit {limit}")
    if run.record.status != "complete":
        marks.append(f"status {run.record.status}")
    result = run.results.get(suite)
    metrics = result.metrics if result else {}
    failed = sum(int(split.get("n_failed") or 0) for split in metrics.values())
    if failed:
        total = sum(int(split.get("n") or 0) for split in metrics.values())
        marks.append(f"{failed} of {total} samples failed")
    declared = run.record.splits.get(suite, []) if isinstance(run.record.splits, dict) else []
    missing = [split for split in declared if split not in metrics]
    if result:
        missing += [split for split in metrics
                    if split in result.ious and len(result.ious[split]) < int(metrics[split].get("n") or 0)]
    if missing:
        marks.append(f"missing samples: {', '.join(missing)}")
    return marks


def mark_suffix(run: Run, suite: str) -> str:
    """' ⚠ partial: --limit 40; 3 of 826 samples failed' or ''."""
    marks = run_marks(run, suite)
    return f" {MARK} {'; '.join(marks)}" if marks else ""


def marked_name(run: Run, suite: str) -> str:
    """The run's display name with its training seed, where the run records one (a model's seeds are separate rows
    of the per-run tables), and its marks."""
    seed = training_seed(run)
    return run.display_name + ("" if seed is None else f" · seed {seed}") + mark_suffix(run, suite)


MARKS_LEGEND = (f"{MARK} marks a row whose numbers are partial: a run limited by `--limit`, one with failed or missing "
                "samples (failed ones count as empty masks), or one that did not complete.")
