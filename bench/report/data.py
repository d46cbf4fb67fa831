"""A suite's data as a run read them: the report's gallery and expectations read samples through the suite's loader."""

from __future__ import annotations

from typing import Any

from bench.report.read_runs import Run


def open_suite(suite: str, run: Run) -> Any:
    """The suite object built as `run`'s spec built it (data root and suite options; no progress bar)."""
    from bench.suites import SUITES

    spec = run.record.spec if isinstance(run.record.spec, dict) else {}
    suite_cls = SUITES.get(suite)
    extra = {"progress": False} if suite_cls.synthetic else {}
    return suite_cls(data_root=spec.get("data_root"), **(spec.get("suite_args") or {}), **extra)
