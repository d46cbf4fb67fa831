"""What `bench run` and `bench score` share of a run directory's life: claim it (create, lock, check that it may
be written), check a resume against the run there, write run.json with its provenance, merge the ranks'
predictions and release it; each command keeps only its own loop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.distributed import ProcessInfo
from bench.errors import BenchError
from bench.rundir.layout import RunDir
from bench.rundir.lock import RunLock
from bench.rundir.predictions import iter_records, merge_rank_files
from bench.rundir.record import RunRecord, now_iso, provenance

if TYPE_CHECKING:
    from bench.suites import Suite


class RunSession:
    """One command's hold on a run directory, from claim to release (a context manager); under a launcher rank 0
    claims, writes and merges, and every rank stops when the directory is refused.

    `spec` is the resolved configuration stored in run.json. A run already there is finished with `resume`
    (`bench run --resume`: the same `compared` keys and data), or replaced with `overwrite` (`bench score
    --overwrite`; None for a command that has no such option)."""

    def __init__(self, path: str | Path, suites: list[str], spec: dict[str, Any], *, resume: bool = False,
                 overwrite: bool | None = None, compared: tuple[str, ...] = (), proc: ProcessInfo | None = None):
        self.proc = proc or ProcessInfo()
        self.rundir = RunDir(self.proc.broadcast(str(path)), suites=suites)
        self.spec, self.resume, self.overwrite, self.compared = spec, resume, overwrite, compared
        self._lock: RunLock | None = None
        self._created = False
        self._written: RunRecord | None = None  # the last run.json this session wrote

    def __enter__(self) -> RunSession:
        problem = None
        if self.proc.is_main:
            try:
                self._claim()
            except BenchError as exc:
                problem = str(exc)
        problem = self.proc.broadcast(problem)  # every rank stops, not only rank 0
        if problem:
            raise BenchError(problem)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.is_main:
            self.release()

    def _claim(self) -> None:
        """Create and lock the directory, then check that it may be written; released again when it may not."""
        path = self.rundir.path
        if self.resume and not path.is_dir():
            raise BenchError(f"--resume: {path} does not exist, so there is no run to finish "
                             "(leave out --resume to start one)")
        self._created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(path).acquire()
        if self._lock.stale:
            print(f"note: {path}: took over the lock of a run that is gone ({self._lock.stale})", file=sys.stderr)
        try:
            self._check()
        except BenchError:
            self.release()
            raise

    def _check(self) -> None:
        """A new run needs a directory without another's run or predictions; a resume needs its own run there."""
        rundir = self.rundir
        if self.overwrite:
            return
        if rundir.exists() and not self.resume:
            admits = "--resume to finish it" if self.overwrite is None else "--overwrite to replace it"
            raise BenchError(f"{rundir.path} already holds a run; pass {admits} or choose another --out")
        if not self.resume and rundir.prediction_files_anywhere():
            raise BenchError(f"{rundir.path} holds predictions but no {rundir.run_file.name}: they are not this run's; "
                             "choose another --out or remove them")
        if self.resume and rundir.exists():
            self._check_resumable()
        elif self.resume and rundir.prediction_files_anywhere():
            raise BenchError(f"{rundir.path} has predictions but no run.json: cannot tell what it was run with")
        elif self.resume:
            raise BenchError(f"--resume: {rundir.path} holds no run (no {rundir.run_file.name}); "
                             "leave out --resume to start one")

    def _check_resumable(self) -> None:
        previous = self.rundir.read().spec
        changed = [k for k in self.compared if previous.get(k) != self.spec.get(k)]
        if changed:
            details = "; ".join(f"{k}: {previous.get(k)!r} -> {self.spec.get(k)!r}" for k in changed)
            raise BenchError(f"cannot resume {self.rundir.path}: the configuration differs ({details})")

    def check_same_data(self, suites: list[Suite]) -> None:
        """A resume must read the data the run started on: the same dataset fingerprints (checked on every rank)."""
        if not (self.resume and self.rundir.exists()):
            return
        previous = self.rundir.read().dataset_fingerprints
        changed = [f"{suite.name}: {previous.get(suite.name)} -> {suite.fingerprint()}" for suite in suites
                   if previous.get(suite.name) != suite.fingerprint()]
        if changed:
            raise BenchError(f"cannot resume {self.rundir.path}: the data differ from the run's "
                             f"(dataset fingerprints {'; '.join(changed)})")

    def finished(self, suite: str) -> set[tuple[str, str]]:
        """(split, sample_id) of every record already written by this or an earlier (killed) run.

        Only rank 0 reads (cutting off a torn last line left by a kill) and sends the keys to the others, so
        no rank ever reads a line that is being repaired."""
        keys = None
        if self.proc.is_main:
            keys = {(record.get("split"), record["sample_id"]) for path in self.rundir.prediction_files(suite)
                    for _, record in iter_records(path, repair_tail=True)}
        return self.proc.broadcast(keys)

    def merge(self, suite: str, order: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The suite's records of every rank in `order`, merged into its predictions file (rank 0 only)."""
        return merge_rank_files(self.rundir, suite, order)

    def write_record(self, status: str, command: str | None = None, **fields: Any) -> None:
        """Write run.json (rank 0): `fields` with the spec, status, provenance and times; a resumed run keeps its
        creation time and command and counts the resume."""
        if not self.proc.is_main:
            return
        previous = self._written or (self.rundir.read() if self.resume and self.rundir.exists() else None)
        now = now_iso()
        resumed = (previous.resumed if previous else 0) + (1 if self.resume and previous and not self._written else 0)
        self._written = RunRecord(
            status=status,
            spec=self.spec,
            command=command or (previous.command if previous else None),
            created=(previous.created if previous else None) or now,
            updated=now,
            resumed=resumed,
            **provenance(),
            **fields,
        )
        self.rundir.write(self._written)

    def release(self) -> None:
        """Unlock; a directory this session created and left empty (its input was refused) is removed."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._created and self.rundir.path.is_dir() and not any(self.rundir.path.iterdir()):
            self.rundir.path.rmdir()
