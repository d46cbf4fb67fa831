"""Shared benchmark helpers: the data sets (built once per session) and a subprocess timer that also reads the
child's peak resident memory (ru_maxrss from wait4), so start-up, imports and memory are all measured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from perfdata import write_coco_sized_set

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    """One child process: wall seconds, peak resident memory in MiB, and its output."""

    seconds: float
    peak_mib: float
    stdout: str


def run_measured(args: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `python args...` in the repository root, reaped with wait4 for its own rusage; raise with its
    stderr if it fails."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, *args], cwd=REPO, env=environment, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({child.returncode}):\n{err.read()[-3000:]}")
        return Measured(seconds, usage.ru_maxrss / 1024, out.read())  # Linux: KiB


@pytest.fixture(scope="session")
def coco_sets(tmp_path_factory):
    """COCO-sized (480x640) refer-format sets with predictions, by number of samples, built on first use."""
    built: dict[int, tuple[Path, Path]] = {}

    def get(samples: int) -> tuple[Path, Path]:
        if samples not in built:
            built[samples] = write_coco_sized_set(tmp_path_factory.mktemp(f"coco{samples}"), samples, images=50)
        return built[samples]

    return get
