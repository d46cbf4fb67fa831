"""The report's input: the run directories of a results directory (those its runs.toml declares, if it has
one) read into `Run`s through bench.rundir, with their files' problems noted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.errors import DataFormatError
from bench.rundir.declared import DECLARED_RUNS, read_declared, run_directories
from bench.rundir.layout import RunDir
from bench.rundir.predictions import iter_records
from bench.rundir.record import RunRecord


@dataclass(frozen=True)
class SuiteResult:
    """One suite of one run: split metrics from the metrics file and per-sample IoUs from the predictions."""

    metrics: dict[str, dict[str, Any]]  # split -> {"n", "ciou", "ciou_ci95", ...}
    ious: dict[str, list[float]]  # split -> per-sample IoU (failed or missing = 0); empty without predictions


@dataclass
class Run:
    """A run directory as the report sees it."""

    name: str  # path relative to the results directory, posix ("." for the results directory itself)
    record: RunRecord  # run.json
    created: datetime
    results: dict[str, SuiteResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # missing or inconsistent files, shown in the report

    @property
    def display_name(self) -> str:
        return self.record.display_name


def load_runs(results_dir: Path) -> list[Run]:
    """The runs declared in results_dir/runs.toml when it exists, else every directory below results_dir
    holding a run.json; sorted by relative path."""
    declared = read_declared(results_dir)
    if declared is None:
        return [load_run(results_dir, run_file.parent) for run_file in run_directories(results_dir)]
    runs = []
    for entry in declared:
        run = load_run(results_dir, results_dir / entry.directory)
        entry.check(run.record, results_dir / DECLARED_RUNS)
        runs.append(run)
    return sorted(runs, key=lambda run: run.name)


def load_run(results_dir: Path, path: Path) -> Run:
    """One run; a malformed run.json or metrics file raises DataFormatError, a missing file is a problem."""
    record = RunDir(path).read()
    run_dir = RunDir(path, suites=record.suites)
    run = Run(
        name=path.relative_to(results_dir).as_posix(),
        record=record,
        created=_parse_created(run_dir.run_file, record.created),
    )
    if record.status != "complete":
        run.problems.append(f'run.json status is "{record.status}", not "complete"')
    for suite in record.suites:
        metrics_file = run_dir.metrics(suite)
        data = run_dir.read_metrics(suite)
        if data is None:
            run.problems.append(f"no metrics file for suite {suite} (run incomplete?)")
            continue
        metrics = _check_metrics(metrics_file, data, suite)
        predictions_file = run_dir.predictions(suite)
        ious = _read_ious(predictions_file) if predictions_file.is_file() else {}
        if not predictions_file.is_file():
            run.problems.append(f"no predictions file for suite {suite}: no plots")
        for split, split_metrics in metrics.items():
            if ious and len(ious.get(split, [])) != split_metrics.get("n"):
                run.problems.append(
                    f"{predictions_file.name} has {len(ious.get(split, []))} {split} samples, "
                    f"{metrics_file.name} says n={split_metrics.get('n')}"
                )
        run.results[suite] = SuiteResult(metrics=metrics, ious=ious)
    return run


def _parse_created(path: Path, created: Any) -> datetime:
    """run.json "created" as an aware datetime (naive times are taken as UTC); orders runs of one model."""
    try:
        moment = datetime.fromisoformat(str(created))
    except ValueError:
        raise DataFormatError(f"{path}: 'created' must be an ISO time, got {created!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_metrics(path: Path, data: dict[str, Any], suite: str) -> dict[str, dict[str, Any]]:
    """The metrics file's splits, checked: the right suite, and cIoU/gIoU fractions in [0, 1] or null."""
    if data.get("suite", suite) != suite:
        raise DataFormatError(f"{path}: holds suite {data.get('suite')!r}, run.json expects {suite!r}")
    splits = data.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(value, dict) for value in splits.values()):
        raise DataFormatError(f"{path}: 'splits' must map split names to metric objects")
    for split, metrics in splits.items():
        for key in ("ciou", "giou"):
            value = metrics.get(key)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise DataFormatError(
                    f"{path}: splits.{split}.{key} must be a fraction in [0, 1] or null, got {value!r}"
                )
    return splits


def _read_ious(path: Path) -> dict[str, list[float]]:
    """Per-split sample IoUs; a null IoU (failed sample) counts as 0."""
    ious: dict[str, list[float]] = {}
    for number, record in iter_records(path):
        iou = record.get("iou")
        if iou is not None and not (isinstance(iou, (int, float)) and 0 <= iou <= 1):
            raise DataFormatError(f"{path}:{number}: 'iou' must be in [0, 1] or null, got {iou!r}")
        ious.setdefault(str(record.get("split")), []).append(float(iou or 0.0))
    return ious
