"""Real processes against one run directory: the lock, kills at the merge, a killed launcher, stale locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys, time
from pathlib import Path
from bench.models import MODELS
from bench.models.trivial import CenterModel

@MODELS.register("slow-center")
class SlowCenter(CenterModel):
    name = "slow-center"
    def predict(self, batch):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0.2")))
        return super().predict(batch)

if os.environ.get("PID_DIR"):  # where each rank says who it is
    Path(os.environ["PID_DIR"], os.environ.get("RANK", "0")).write_text(str(os.getpid()))
if os.environ.get("KILL_AT_RANK_FILE_REMOVAL"):  # SIGKILL between writing the merged file and removing rank files
    original = Path.unlink
    def unlink(self, *args, **kwargs):
        if ".rank" in self.name:
            os.kill(os.getpid(), 9)
        return original(self, *args, **kwargs)
    Path.unlink = unlink

from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, refer_dataset) -> Path:
    """A RefCOCO-layout dataset of 12 val sentences on 6 images."""
    objects = [(i, i, "val", [[2, 2, 20, 2, 20, 20, 2, 20]], [(2 * i, f"thing {i}"), (2 * i + 1, f"object {i}")])
               for i in range(1, 7)]
    return refer_dataset(tmp_path_factory.mktemp("data"), dict.fromkeys(range(1, 7), (32, 40)), objects)


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "bench_slow.py"
    path.write_text(SCRIPT)
    return path


def _args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--suite", "refcoco", "--model", "slow-center", "--split", "val", "--data-root", str(data_root),
            "--batch-size", "1", "--no-progress", "--bootstrap", "20", "--out", str(out), *extra]


def _start(script: Path, args: list[str], torchrun: bool = False, **env: str) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun \
        else [sys.executable]
    return subprocess.Popen([*launcher, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env},
                            start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err.decode()


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_second_run_into_a_busy_directory_is_refused_at_once(tmp_path, data_root, script):
    out = tmp_path / "run"
    first = _start(script, _args(data_root, out))
    _wait_for(lambda: _lines(out / "predictions.jsonl") >= 2)
    for extra in (["--resume"], []):
        started = time.time()
        code, err = _finish(_start(script, _args(data_root, out, *extra)))
        assert code == 2 and "being written by another run" in err and f"pid {first.pid}" in err
        assert time.time() - started < 30 and first.poll() is None  # refused while the first still runs
    assert _finish(first)[0] == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len({r["sample_id"] for r in records}) == 12  # every sample once
    assert not (out / ".lock").exists()
    assert _finish(_start(script, _args(data_root, out, "--resume")))[0] == 0  # finished: resumes as a no-op


def test_two_runs_started_together_leave_one_complete_run(tmp_path, data_root, script):
    out = tmp_path / "run"
    runs = [_start(script, _args(data_root, out), SLOW_SECONDS="0.05") for _ in range(2)]
    results = sorted(_finish(run) for run in runs)
    assert [code for code, _ in results] == [0, 2], results
    assert "another run" in results[1][1] or "already holds a run" in results[1][1]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len({r["sample_id"] for r in records}) == 12
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_a_kill_between_merging_and_removing_rank_files_resumes_to_the_same_files(tmp_path, data_root, script):
    reference, out = tmp_path / "reference", tmp_path / "run"
    assert _finish(_start(script, _args(data_root, reference), SLOW_SECONDS="0"))[0] == 0
    killed = _start(script, _args(data_root, out), torchrun=True, SLOW_SECONDS="0", KILL_AT_RANK_FILE_REMOVAL="1")
    assert _finish(killed)[0] != 0
    rank_files = sorted(out.glob("predictions.rank*.jsonl"))
    assert rank_files and _lines(out / "predictions.jsonl") == 12  # merged, rank files still there
    with open(rank_files[-1], "a") as handle:  # and a torn line, which rank 0 repairs before anyone reads
        handle.write('{"sample_id": "3", "segm')
    code, err = _finish(_start(script, _args(data_root, out, "--resume"), torchrun=True, SLOW_SECONDS="0"))
    assert code == 0, err[-3000:]
    assert (out / "predictions.jsonl").read_bytes() == (reference / "predictions.jsonl").read_bytes()
    assert (out / "metrics.json").read_bytes() == (reference / "metrics.json").read_bytes()
    assert not list(out.glob("*.rank*.jsonl"))


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux's")
def test_ranks_die_with_their_launcher(tmp_path, data_root, script):
    pids = tmp_path / "pids"
    pids.mkdir()
    launcher = _start(script, _args(data_root, tmp_path / "run"), torchrun=True, SLOW_SECONDS="2", PID_DIR=str(pids))
    _wait_for(lambda: len(list(pids.iterdir())) == 2, timeout=120)
    ranks = [int(path.read_text()) for path in pids.iterdir()]
    launcher.kill()
    launcher.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in ranks), timeout=15)
