"""bench ablate --executor slurm on a real SLURM: one node on localhost (munged, slurmctld and slurmd started here
from a slurm.conf written here, Debian's slurm-wlm and munge installed with apt when absent). steps and a training
ablation at smoke through job arrays give the in-process tables, and a training cell requeued mid-training by
`scontrol requeue` resumes from its checkpoint instead of restarting. Every daemon started is stopped; every wait is
bounded. Where a step cannot work here (no root, no apt, a slurmd that cannot start in a container), the tests
skip and say which step and why."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from tests.bench.ablate.test_executors import LONGER_TRAINING, _checkpoint_step, _table

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")
PACKAGES = ["slurm-wlm", "munge"]
CALL_TIMEOUT_S = 900  # one `bench ablate --wait` at smoke; a hang fails the test instead of CI

CONF = """ClusterName=bench
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=600
{hardware} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _run(command: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def _tail(path: Path, lines: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _install() -> None:
    """Debian's slurm-wlm and munge, when a program is missing (skips, saying why, when they cannot be)."""
    missing = [program for program in PROGRAMS if not shutil.which(program)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"step 'install': {', '.join(missing)} missing, and apt-get needs root on a Debian-like system "
                    f"(euid {os.geteuid()}, apt-get {'found' if shutil.which('apt-get') else 'absent'})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        try:
            result = _run(command, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"step 'install': {' '.join(command)} took over 900 s")
        if result.returncode:
            pytest.skip(f"step 'install': {' '.join(command)} failed: {(result.stdout + result.stderr)[-800:]}")


class OneNodeSlurm:
    """munged, slurmctld and slurmd for one node on localhost, all files under `root`, stopped by `stop`."""

    def __init__(self, root: Path):
        self.root = root
        self.daemons: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}

    def start(self) -> None:
        if os.geteuid() != 0:
            pytest.skip(f"step 'start': slurmd and munged run as root here, the tests run as uid {os.geteuid()}")
        (self.root / "state").mkdir(parents=True)
        (self.root / "spool").mkdir()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.daemon("munged", ["munged", "--foreground", "--force", f"--socket={self.root}/munge.socket",
                               f"--key-file={key}", f"--pid-file={self.root}/munged.pid",
                               f"--log-file={self.root}/munged.log", f"--seed-file={self.root}/munge.seed"])
        self.wait_for("munged", lambda: (self.root / "munge.socket").exists(), self.root / "munged.log")
        hardware = _run(["slurmd", "-C"]).stdout.splitlines()
        hardware = next((line for line in hardware if line.startswith("NodeName=")), "")
        if not hardware:
            pytest.skip("step 'slurmd -C': slurmd could not describe this machine's hardware")
        node = hardware.split()[0].removeprefix("NodeName=")
        (self.root / "slurm.conf").write_text(CONF.format(node=node, root=self.root, hardware=hardware,
                                                          ctld_port=_free_port(), slurmd_port=_free_port()))
        self.daemon("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.root / "slurm.conf")])
        self.daemon("slurmd", ["slurmd", "-D", "-f", str(self.root / "slurm.conf")])
        self.wait_for("slurmd", lambda: "idle" in self.sinfo(), self.root / "slurmd.log", self.root / "slurmctld.log")

    def daemon(self, name: str, command: list[str]) -> None:
        log = open(self.root / f"{name}.stderr", "w")
        self.daemons.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def sinfo(self) -> str:
        try:
            return _run(["sinfo", "-h", "-o", "%T"], timeout=20, env=self.env).stdout
        except subprocess.TimeoutExpired:
            return ""

    def wait_for(self, step: str, ready, *logs: Path, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            if any(daemon.poll() is not None for daemon in self.daemons):
                break
            time.sleep(0.5)
        died = [d.args[0] for d in self.daemons if d.poll() is not None]
        details = "\n".join(f"{log.name}: {_tail(log)}" for log in [*logs, *self.root.glob("*.stderr")])
        pytest.skip(f"step '{step}': {'exited: ' + ', '.join(died) if died else 'not ready in ' + str(timeout) + ' s'}"
                    f" (a container without the privileges slurmd needs?)\n{details}")

    def stop(self) -> None:
        """Cancel every job of this cluster, then stop slurmd, slurmctld and munged (SIGTERM, then SIGKILL)."""
        if any(daemon.args[0] == "slurmctld" and daemon.poll() is None for daemon in self.daemons):
            _run(["scancel", "--full", "--user", "root"], timeout=30, env=self.env)
            deadline = time.time() + 30
            while time.time() < deadline and _run(["squeue", "-h"], timeout=20, env=self.env).stdout.strip():
                time.sleep(1)
        for daemon in reversed(self.daemons):
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        self.daemons = []


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM for this module's tests: the environment its commands need (SLURM_CONF)."""
    _install()
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster.env
    finally:
        cluster.stop()


def _bench(env: dict[str, str], *args: str, cache: Path) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` with this cluster's environment, bounded by CALL_TIMEOUT_S."""
    env = {**env, "BENCH_CACHE": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return _run([sys.executable, "-m", "bench", *args], timeout=CALL_TIMEOUT_S, env=env)


@pytest.mark.parametrize("name, resources, sbatch, cells", [
    ("steps", [], ["--time=43200"], 3),  # no request: this partition has no time limit, so 30 days
    ("shortcut", ["--cpus-per-cell", "1", "--time", "30", "--slurm-arg", "comment=bench"],
     ["--cpus-per-task=1", "--time=30", "--comment=bench"], 2)])
def test_an_ablation_through_a_slurm_job_array_gives_the_in_process_table(slurm, tmp_path, monkeypatch, name,
                                                                           resources, sbatch, cells):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache-inline"))
    assert main(["ablate", name, "--budget", "smoke", "--out", str(tmp_path / "inline")]) == 0
    out = tmp_path / "slurm"
    result = _bench(slurm, "ablate", name, "--budget", "smoke", "--out", str(out), "--executor", "slurm", "--wait",
                    *resources, cache=tmp_path / "cache-slurm")
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{name} cells: 100%" in result.stderr
    assert _table(out) == _table(tmp_path / "inline")
    record = json.loads((out / "jobs" / "cells.json").read_text())
    arrays = {entry["job"].split("_")[0] for entry in record.values()}
    assert len(record) == cells and len(arrays) == 1 and {entry["executor"] for entry in record.values()} == {"slurm"}
    script = (out / "jobs" / f"{arrays.pop()}_submission.sh").read_text()
    assert all(f"#SBATCH {line}\n" in script for line in [*sbatch, f"--array=0-{cells - 1}%{cells}"]), script
    for directory, entry in record.items():  # each cell links its array element's log
        log = out / "runs" / directory / "job.err"
        assert log.resolve() == (out / "jobs" / f"{entry['job']}_0_log.err").resolve()
        assert f"--only {entry['cell']}" in log.read_text()


def _requeue(env: dict[str, str], job: str) -> None:
    """`scontrol requeue JOB`, then StartTime=now while it is pending (SLURM holds a requeued job two minutes)."""
    requeued = _run(["scontrol", "requeue", job], env=env)
    if requeued.returncode:
        pytest.skip(f"step 'scontrol requeue': {requeued.stderr.strip()}")
    deadline, pending = time.time() + 150, False
    while time.time() < deadline:
        state = _run(["squeue", "-h", "-j", job, "-o", "%T"], env=env).stdout.strip()
        if state == "PENDING":
            pending = True
            _run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env)
        elif pending:
            return
        time.sleep(1)


def test_a_training_cell_requeued_mid_training_resumes_rather_than_restarts(slurm, tmp_path, monkeypatch):
    common = ["ablate", "shortcut", "--budget", "smoke", "--only", "frame:0", "--set", LONGER_TRAINING]
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache-whole"))
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0

    out, cache = tmp_path / "requeued", tmp_path / "cache-requeued"
    env = {**slurm, "BENCH_CACHE": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "bench", *common, "--out", str(out), "--executor", "slurm",
                                "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and _checkpoint_step(cache) < 3 and process.poll() is None:
            time.sleep(0.2)
        step = _checkpoint_step(cache)
        assert 3 <= step < 40, f"the training never checkpointed mid-way (step {step})"
        job = next(iter(json.loads((out / "jobs" / "cells.json").read_text()).values()))["job"]
        _requeue(slurm, job)
        _, stderr = process.communicate(timeout=CALL_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-4000:]
    log = next(out.glob("runs/frame-*")).joinpath("job.err").read_text()
    assert "DUE TO JOB REQUEUE" in log  # SLURM stopped it ...
    trainings = [line for line in log.splitlines() if line.startswith("training frame:0")]
    assert len(trainings) == 2 and "--resume" not in trainings[0] and trainings[1].endswith("--resume")  # ... resumed
    resumed = gzip.decompress(next(out.glob("runs/frame-*/predictions.jsonl.gz")).read_bytes())
    assert resumed == gzip.decompress(next((tmp_path / "whole").glob("runs/frame-*/predictions.jsonl.gz")).read_bytes())
