"""The jobs of `bench ablate --executor slurm|local`: which cells to submit, the submission (one SLURM job array, or
at most --max-parallel local processes at a time), OUT/jobs/cells.json (which job makes which cell), following
them with a progress bar, and a failed cell's report: its log's last lines and the command that reruns it.

A SLURM job counts as over when squeue no longer lists it as queued or running in two polls in a row (requeued
jobs stay queued; sacct is not needed, so clusters without accounting work too); it succeeded when its cell is
complete on disk."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ablate.cells import Cell
from bench.ablate.executors import JOBS, CellJob, Cluster, job_argv, make_executor
from bench.errors import BenchError

RECORD = "cells.json"  # in OUT/jobs: cell directory name -> {"cell", "executor", "job"}
POLL_S = {"local": 1.0, "slurm": 5.0}
LOG_LINES = 15
SQUEUE_TIMEOUT_S = 60
SQUEUE_FAILURES = 12  # consecutive failed squeue calls before --wait gives up (the jobs keep running)
OVER = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
        "TIMEOUT"}  # squeue states of a job that will not run again unless requeued


@dataclass
class Submitted:
    """A cell, the command its job runs, and the job (None until a local slot starts it)."""

    cell: Cell
    directory: Path
    argv: list[str]
    job: Any = None
    slot: int | None = None

    @property
    def rerun(self) -> str:
        """The exact command that makes (or finishes) this cell in-process."""
        return shlex.join(["python", *self.argv])


def read_record(out: Path) -> dict[str, dict[str, str]]:
    """OUT/jobs/cells.json ({} before any submission)."""
    from bench.io import SMALL_JSON_LIMIT, read_json

    path = Path(out) / JOBS / RECORD
    record = read_json(path, SMALL_JSON_LIMIT) if path.is_file() else {}
    entries = record.items() if isinstance(record, dict) else []
    return {name: entry for name, entry in entries  # an entry edited out of shape is ignored, not a crash
            if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("cell", "executor", "job"))}


def write_record(out: Path, submitted: list[Submitted], executor: str) -> None:
    from bench.io import write_atomic

    record = read_record(out)
    record.update({entry.directory.name: {"cell": entry.cell.name, "executor": executor, "job": entry.job.job_id}
                   for entry in submitted if entry.job is not None})
    write_atomic(Path(out) / JOBS / RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


def still_queued(out: Path, cells: list[Cell]) -> dict[str, str]:
    """Cell name -> SLURM job id, for the cells whose recorded job is still queued or running."""
    record = read_record(out)
    jobs = {cell.name: record[cell.directory(out).name]["job"] for cell in cells
            if record.get(cell.directory(out).name, {}).get("executor") == "slurm"}
    states = slurm_states(list(jobs.values())) if jobs else {}
    if states is None:
        print(f"squeue failed: cannot tell whether SLURM jobs {', '.join(jobs.values())} still run", file=sys.stderr)
    return {name: job for name, job in jobs.items() if states is not None and ended(states.get(job)) is None}


def to_submit(cells: list[Cell], out: Path, is_complete: Callable[[Path], bool], is_started: Callable[[Path], bool],
              resume: bool) -> list[Cell]:
    """The cells to submit: not complete and not still queued; an interrupted or failed one only with --resume."""
    queued = still_queued(out, [cell for cell in cells if not is_complete(cell.directory(out))])
    chosen, refused = [], []
    for cell in cells:
        directory = cell.directory(out)
        if is_complete(directory):
            print(f"reused {cell.name}: {directory}", file=sys.stderr)
        elif cell.name in queued:
            print(f"{cell.name} is still queued or running in SLURM job {queued[cell.name]}; not resubmitted",
                  file=sys.stderr)
        elif is_started(directory) and not resume:
            refused.append(cell.name)
        else:
            chosen.append(cell)
    if refused:
        raise BenchError(f"cells {', '.join(refused)} in {out} were interrupted or failed; pass --resume to "
                         "resubmit them (each resumes from its last checkpoint)")
    return chosen


class Jobs:
    """The submitted cells of one `bench ablate` call: submitted, then followed until every job is over."""

    def __init__(self, name: str, cells: list[Cell], out: Path, cluster: Cluster, flags: list[str],
                 data_root: str | None):
        self.name, self.out, self.cluster = name, Path(out), cluster
        self.entries = [Submitted(cell, cell.directory(out), job_argv(cell, out, flags, data_root)) for cell in cells]
        self.executor = make_executor(cluster, out, name)
        self.free_slots = list(range(cluster.max_parallel))

    def cell_job(self, entry: Submitted) -> CellJob:
        env = {}
        if self.cluster.executor == "local" and not self.cluster.gpus_per_cell:  # the GPUs bench ablate itself sees
            env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        return CellJob(entry.argv, str(entry.directory.absolute()), os.getcwd(), max(1, self.cluster.gpus_per_cell),
                       env)

    def submit(self) -> None:
        """SLURM: every cell as one job array. Local: the first --max-parallel cells (the rest as slots free)."""
        if self.cluster.executor == "slurm":
            try:
                with self.executor.batch():
                    jobs = [self.executor.submit(self.cell_job(entry)) for entry in self.entries]
            except Exception as exc:  # sbatch's refusal (a partition, an option), as submitit words it
                raise BenchError(f"SLURM refused the job array of {self.name}: {exc}") from None
            for entry, job in zip(self.entries, jobs):
                entry.job = job
            write_record(self.out, self.entries, "slurm")
        else:
            self.start_local()

    def start_local(self) -> None:
        for entry in self.entries:
            if entry.job is None and self.free_slots:
                entry.slot = self.free_slots.pop(0)
                gpus = self.cluster.gpus_per_cell
                if gpus:
                    self.executor.update_parameters(visible_gpus=list(range(entry.slot * gpus, (entry.slot + 1) * gpus)))
                entry.job = self.executor.submit(self.cell_job(entry))
                write_record(self.out, [entry], "local")

    def job_id(self) -> str:
        """The SLURM array's id (or the first local job's)."""
        return str(self.entries[0].job.job_id).split("_")[0] if self.entries and self.entries[0].job else "-"

    def follow(self, is_complete: Callable[[Path], bool]) -> list[str]:
        """Wait for every job with a progress bar; the failed cells' reports."""
        from tqdm import tqdm

        over: dict[int, str] = {}
        seen_over: set[int] = set()
        failures: list[str] = []
        squeue_failures, shown = 0, None
        with tqdm(total=len(self.entries), desc=f"{self.name} cells", unit="cell", file=sys.stderr,
                  mininterval=0.1 if sys.stderr.isatty() else 30) as bar:
            while len(over) < len(self.entries):
                states = self.states()
                squeue_failures = 0 if states is not None else squeue_failures + 1
                if squeue_failures >= SQUEUE_FAILURES:
                    raise BenchError(f"squeue failed {SQUEUE_FAILURES} times in a row; the jobs of array "
                                     f"{self.job_id()} keep running: assemble them later with --collect")
                ended_now = {i for i, state in (states or {}).items() if state is not None and i not in over}
                if self.cluster.executor == "slurm":  # over in two polls in a row: not a requeue in passing
                    ended_now, seen_over = ended_now & seen_over, ended_now
                for index in sorted(ended_now):
                    over[index] = states[index]
                    entry = self.entries[index]
                    if entry.slot is not None:
                        self.free_slots.append(entry.slot)
                    if not is_complete(entry.directory):
                        failures.append(failure_report(entry, self.cluster.executor, states[index]))
                        tqdm.write(failures[-1], file=sys.stderr)
                    bar.update(1)
                counts = {"failed": len(failures), "running": sum(e.job is not None for e in self.entries) - len(over)}
                if counts != shown:  # redrawn when it changes, so a log stays short
                    bar.set_postfix(counts)
                    shown = counts
                if self.cluster.executor == "local":
                    self.start_local()
                if len(over) < len(self.entries):
                    time.sleep(POLL_S[self.cluster.executor])
        return failures

    def states(self) -> dict[int, str | None] | None:
        """Entry index -> how its job ended, or None while it is queued or running (None: squeue failed)."""
        if self.cluster.executor == "local":
            return {i: (entry.job.state if entry.job.done() else None) for i, entry in enumerate(self.entries)
                    if entry.job is not None}
        queued = slurm_states([entry.job.job_id for entry in self.entries])
        if queued is None:
            return None
        return {i: ended(queued.get(entry.job.job_id)) for i, entry in enumerate(self.entries)}


def failure_report(entry: Submitted, executor: str, state: str) -> str:
    """A failed cell: its job and how it ended, its log's last lines, the command that reruns it here."""
    link = entry.directory / "job.err"
    log = link if link.exists() else Path(entry.job.paths.stderr)
    return "\n".join([f"failed: {entry.cell.name} ({executor} job {entry.job.job_id}, {state}); last lines of {log}:",
                      *(f"    {line}" for line in log_tail(log)),
                      f"  rerun it here: {entry.rerun}"])


def ended(state: str | None) -> str | None:
    """How a SLURM job ended, from its squeue state (None: not listed), or None while it is queued or running."""
    if state is None:
        return "no longer queued"
    return state if state in OVER else None


def log_tail(path: Path, count: int = LOG_LINES) -> list[str]:
    """The last `count` lines of a log, a progress bar's redrawn line (carriage returns) as its last state."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - (1 << 16)))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ["(no log)"]
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.splitlines()]
    return [line for line in lines if line.strip()][-count:] or ["(empty log)"]


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """Job id (array elements one by one) -> squeue's state for the jobs squeue still lists; None when it fails."""
    arrays = sorted({job.split("_")[0] for job in job_ids})
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T"], capture_output=True,
                                text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode and "Invalid job id" not in result.stderr:  # every job of the list purged: none queued
        return None
    return dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) >= 2)


def failure_notes(out: Path, cells: list[Cell], is_complete: Callable[[Path], bool]) -> list[str]:
    """For `--collect`: each missing cell that a job was making, still queued or with its log's last lines."""
    record = read_record(out)
    missing = [cell for cell in cells if cell.directory(out).name in record and not is_complete(cell.directory(out))]
    queued = still_queued(out, missing) if missing else {}
    notes = []
    for cell in missing:
        entry, log = record[cell.directory(out).name], cell.directory(out) / "job.err"
        if cell.name in queued:
            notes.append(f"{cell.name}: still queued or running in SLURM job {queued[cell.name]}")
        else:
            notes.append("\n".join([f"{cell.name}: {entry['executor']} job {entry['job']} ended; last lines of {log}:",
                                    *(f"    {line}" for line in log_tail(log))]))
    return notes
