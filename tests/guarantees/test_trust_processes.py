"""Issue 21: no child process outlives a killed `bench run` (its data-loading workers die with it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench.test_runner import REPO, SLOW_MODEL_SCRIPT, data_root  # noqa: F401 - data_root is a fixture


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signals are Linux's")
def test_a_killed_run_leaves_no_data_loading_worker(tmp_path: Path, data_root: Path):  # noqa: F811
    script = tmp_path / "slow.py"
    script.write_text(SLOW_MODEL_SCRIPT)
    predictions = tmp_path / "out" / "predictions.jsonl"
    run = subprocess.Popen([sys.executable, str(script), "run", "--suite", "refcoco", "--model", "slow-center",
                            "--data-root", str(data_root), "--batch-size", "1", "--no-progress", "--bootstrap", "0",
                            "--workers", "2", "--out", str(tmp_path / "out")],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and (not predictions.exists() or len(predictions.read_text().splitlines()) < 2):
            time.sleep(0.05)
        workers = _children(run.pid)
        assert workers, "the run started no data-loading worker"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(map(_alive, workers)):
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # clean up what the old code leaves, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed run"
