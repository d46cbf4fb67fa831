"""A run directory's file names, the same for every command that makes or reads runs (`bench run`, `bench score`,
`bench compact`, `bench report`, ablations):

    run.json                        configuration, provenance, status and kind (bench.rundir.record); absolute
                                    paths inside the checkout are stored relative to it (bench.rundir.checkout)
    predictions.jsonl               one line per sample (bench.rundir.predictions); .jsonl.gz once compacted
    metrics.json                    per-split metrics
    predictions.<suite>.jsonl       the same per suite, when one run covers several suites
    predictions[.<suite>].rank<k>.jsonl   a rank's own file under a launcher, merged and removed at the end
    .lock                           locked by the command writing the directory (bench.rundir.lock)
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from bench.io import read_json_object, write_json
from bench.rundir.record import RunRecord

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUNS_ENV = "BENCH_RUNS"


class RunDir:
    """One run directory: where its files are, and reading and writing them safely."""

    def __init__(self, path: str | Path, suites: list[str] | None = None):
        self.path = Path(path)
        self._suites = suites

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    def exists(self) -> bool:
        return self.run_file.is_file()

    @property
    def suites(self) -> list[str]:
        """The run's suites: as given, else from run.json."""
        if self._suites is None:
            self._suites = self.read().suites
        return self._suites

    def _name(self, kind: str, suite: str, rank: int | None = None) -> Path:
        several = len(self.suites) > 1
        parts = [kind] + ([suite] if several else []) + ([f"rank{rank}"] if rank is not None else [])
        return self.path / (".".join(parts) + (".jsonl" if kind == "predictions" else ".json"))

    def predictions(self, suite: str, rank: int | None = None) -> Path:
        """`predictions[.<suite>][.rank<k>].jsonl`, or the merged file's gzipped form `.jsonl.gz` when only that
        is there (`bench compact`; bench.rundir.predictions reads it transparently)."""
        path = self._name("predictions", suite, rank)
        gzipped = path.with_name(path.name + ".gz")
        return gzipped if rank is None and not path.exists() and gzipped.exists() else path

    def metrics(self, suite: str) -> Path:
        """`metrics[.<suite>].json`."""
        return self._name("metrics", suite)

    def prediction_files(self, suite: str) -> list[Path]:
        """The suite's merged predictions file (if written) followed by any rank files."""
        main = self.predictions(suite)
        stem = main.name[: -len(".gz")] if main.name.endswith(".gz") else main.name
        stem = stem[: -len(".jsonl")]
        ranks = sorted(self.path.glob(f"{stem}.rank*.jsonl"))
        return ([main] if main.exists() else []) + ranks

    def prediction_files_anywhere(self) -> list[Path]:
        """Every predictions file in the directory, of any suite or rank, plain or gzipped."""
        return sorted(self.path.glob("predictions*.jsonl")) + sorted(self.path.glob("predictions*.jsonl.gz"))

    def read(self) -> RunRecord:
        return RunRecord.from_dict(read_json_object(self.run_file), source=str(self.run_file))

    def write(self, record: RunRecord) -> None:
        write_json(self.run_file, record.to_stored(), sort_keys=True)

    def read_metrics(self, suite: str) -> dict[str, Any] | None:
        path = self.metrics(suite)
        return read_json_object(path) if path.is_file() else None

    def write_metrics(self, suite: str, metrics: dict[str, Any]) -> None:
        write_json(self.metrics(suite), metrics, sort_keys=True)


def runs_root() -> Path:
    """Where runs go without --out: $BENCH_RUNS, else `runs/` in the working directory (git-ignored, so
    ad-hoc runs never enter the committed results/)."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def default_run_path(*name_parts: str, root: Path | None = None) -> Path:
    """`<root or runs_root()>/<UTC time>_<parts joined by _>`, with unsafe characters replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return (root or runs_root()) / re.sub(r"[^A-Za-z0-9_.+-]", "_", "_".join([stamp, *name_parts]))
