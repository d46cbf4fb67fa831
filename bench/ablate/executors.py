"""`bench ablate --executor slurm|local`: the cells still to make as submitit jobs, each running the cell's own
command line (`bench ablate NAME --only VARIANT:SEED ... --resume`) in its allocation.

SLURM gets one job array (`--array-parallelism` at once); `local` runs `--max-parallel` cells as local processes
through submitit's local executor. submitit's files (pickles, the sbatch script, stdout and stderr) live in
OUT/jobs; each cell directory links its job's `job.out` and `job.err`, and OUT/jobs/cells.json records which job
makes which cell. A job stopped by preemption or its time limit is checkpointed and requeued by submitit, and a
requeued job (scontrol requeue, a dead node) runs the same command again: `--resume` continues the training from
its last checkpoint and the evaluation from its last prediction, so nothing finished is redone. `--wait`
(always, for `local`) follows the jobs with a progress bar (`bench.ablate.jobs`)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ablate.cells import Cell, cell_command
from bench.errors import BenchError

EXECUTORS = ("inline", "local", "slurm")
JOBS = "jobs"  # OUT/jobs: submitit's folder
LINKS = {"job.out": "stdout", "job.err": "stderr"}  # in each cell directory, to the files of the job making it
LOCAL_TIME = "7-00:00:00"  # a local job's limit when --time is not given (submitit's default is 2 minutes)
UNLIMITED_TIME = "30-00:00:00"  # what a cell without --time asks of a partition without a time limit
STOPPED_WAIT_S = 600  # how long a job whose cell the scheduler stopped waits to be killed or requeued


@dataclass
class Cluster:
    """How `bench ablate` makes cells: in-process (`inline`), or as submitit jobs with these resources."""

    executor: str = "inline"
    max_parallel: int = 2  # local: cells at once
    partition: str | None = None
    gpus_per_cell: int = 0  # more than one: the cell runs under torchrun, one process per GPU
    cpus_per_cell: int | None = None
    mem: str | None = None  # SLURM's --mem, e.g. 64G
    time: str | None = None  # SLURM's --time: minutes, HH:MM:SS or D-HH:MM:SS
    array_parallelism: int | None = None
    slurm_args: dict[str, str] = field(default_factory=dict)  # any other sbatch option, KEY=VALUE
    wait: bool = False

    @property
    def submits(self) -> bool:
        return self.executor != "inline"


def minutes(text: str) -> int:
    """SLURM's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as whole minutes, rounded up."""
    days, dash, rest = text.strip().partition("-")
    if not dash:
        days, rest = "0", days
    try:
        parts = [int(part) for part in rest.split(":")]
        day_count = int(days)
    except ValueError:
        raise BenchError(f"--time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS") from None
    if len(parts) > 3 or min(parts + [day_count]) < 0:
        raise BenchError(f"--time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    if dash:  # D-H, D-H:M, D-H:M:S
        hours, mins, secs = (parts + [0, 0])[:3]
    else:  # M, M:S, H:M:S
        hours, mins, secs = parts if len(parts) == 3 else [0, *(parts + [0])[:2]]
    total = ((day_count * 24 + hours) * 60 + mins) * 60 + secs
    if total <= 0:
        raise BenchError(f"--time {text!r}: expected a positive duration")
    return -(-total // 60)


def slurm_parameters(cluster: Cluster, name: str) -> dict[str, Any]:
    """The SlurmExecutor's parameters: one task per cell, the resources asked, the rest as sbatch options."""
    extra: dict[str, Any] = {key.removeprefix("--"): value or True for key, value in cluster.slurm_args.items()}
    if cluster.mem:
        extra["mem"] = cluster.mem
    parameters: dict[str, Any] = {"job_name": f"ablate-{name}", "ntasks_per_node": 1, "nodes": 1,
                                  "stderr_to_stdout": False, "additional_parameters": extra}
    parameters["time"] = minutes(cluster.time or partition_time_limit(cluster.partition))
    for key, value in {"partition": cluster.partition, "cpus_per_task": cluster.cpus_per_cell,
                       "gpus_per_node": cluster.gpus_per_cell or None,
                       "array_parallelism": cluster.array_parallelism}.items():
        if value is not None:
            parameters[key] = value
    return parameters


def partition_time_limit(partition: str | None) -> str:
    """The time limit sinfo gives `partition` (or the default one), for cells without --time; UNLIMITED_TIME if none."""
    try:
        lines = subprocess.run(["sinfo", "-h", "-o", "%P %l", *(["-p", partition] if partition else [])],
                               capture_output=True, text=True, timeout=60).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"sinfo could not give the partition's time limit ({exc}); pass --time") from None
    rows = [line.split() for line in lines if len(line.split()) == 2]
    limits = [limit for name, limit in rows if partition or name.endswith("*")]  # sinfo stars the default
    if not limits:
        raise BenchError(f"sinfo names no {'partition ' + partition if partition else 'default partition'}; "
                         "pass --slurm-partition or --time")
    return UNLIMITED_TIME if limits[0] in ("infinite", "UNLIMITED") else limits[0]


def make_executor(cluster: Cluster, out: Path, name: str) -> Any:
    """submitit's executor for `cluster`, its files in OUT/jobs."""
    import submitit

    folder = Path(out) / JOBS
    if cluster.executor == "slurm":
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**slurm_parameters(cluster, name))
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=minutes(cluster.time or LOCAL_TIME),
                                   gpus_per_node=cluster.gpus_per_cell)
    return executor


def job_argv(cell: Cell, out: Path, flags: list[str], data_root: str | None) -> list[str]:
    """The cell's command line after `python`: its recorded command, `--resume`, and the data root."""
    command = shlex.split(cell_command(cell.ablation, cell.budget, cell.name, out, flags))[1:]
    return [*command, "--resume", *(["--data-root", data_root] if data_root else [])]


class CellJob:
    """What a job runs: the cell's command in a child process, requeued by submitit's `checkpoint` hook to resume."""

    def __init__(self, argv: list[str], directory: str, cwd: str, processes: int = 1,
                 env: dict[str, str | None] | None = None):
        self.argv, self.directory, self.cwd, self.processes = argv, directory, cwd, processes
        self.env = dict(env or {})  # variables the cell's process gets (None: unset), e.g. the GPUs it sees
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def __getstate__(self) -> dict[str, Any]:
        return {"argv": self.argv, "directory": self.directory, "cwd": self.cwd, "processes": self.processes,
                "env": self.env}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def command(self) -> list[str]:
        launcher = [sys.executable]
        if self.processes > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.processes}"]
        return [*launcher, *self.argv]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for key, value in self.env.items():
            env.pop(key, None) if value is None else env.update({key: value})
        return env

    def __call__(self) -> str:
        link_logs(Path(self.cwd) / self.directory)
        signal.signal(signal.SIGTERM, self._stopped)  # the scheduler ends this run (requeue, cancel, preemption)
        print(f"running {shlex.join(self.command())}", file=sys.stderr, flush=True)
        try:
            self.child = subprocess.Popen(self.command(), cwd=self.cwd, env=self.environment(),
                                          preexec_fn=_die_with_parent)
            while (code := self.child.poll()) is None:  # not wait(): a signal handler may have to wait for it
                time.sleep(0.5)
        finally:
            self.stop_child()
        if code and self.stopping:  # not a failure of the cell: wait to be killed or requeued
            print(f"the cell stopped (exit {code}) because the scheduler ended this job", file=sys.stderr, flush=True)
            time.sleep(STOPPED_WAIT_S)
        if code:
            raise RuntimeError(f"the cell's command exited with {code}: {shlex.join(self.command())}")
        return self.directory

    def checkpoint(self) -> Any:
        """submitit's hook on preemption or time limit: stop the cell (its checkpoints are on disk), requeue it."""
        from submitit.helpers import DelayedSubmission

        self.stop_child()
        return DelayedSubmission(CellJob(**self.__getstate__()))

    def stop_child(self, grace_s: float = 10.0) -> None:
        """End the cell's process (SIGTERM, then SIGKILL after `grace_s`), if it still runs."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _stopped(self, signum: int, frame: Any) -> None:
        self.stopping = True
        print(f"received {signal.Signals(signum).name}: the scheduler is ending this job", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """In the cell's process: receive SIGTERM when the job's process dies (Linux), so no cell outlives its job."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def link_logs(directory: Path) -> None:
    """Link the running job's stdout and stderr from the cell directory (relative links, replaced on a resubmit)."""
    import submitit

    paths = submitit.JobEnvironment().paths
    directory.mkdir(parents=True, exist_ok=True)
    for name, attribute in LINKS.items():
        link = directory / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(getattr(paths, attribute), directory))
