"""Shared benchmark helpers: the data sets (built once per session) and a subprocess timer that also reads the
child's peak resident memory (benchmarks/hwm.py), so start-up, imports and memory are all measured."""

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
    """Run `python args...` in the repository root through benchmarks/hwm.py (its peak memory); raise with
    its stderr if it fails."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    with tempfile.TemporaryDirectory() as scratch:
        peak = Path(scratch) / "peak"
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "hwm.py"), str(peak), *args], cwd=REPO,
                                env=environment, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return Measured(seconds, float(peak.read_text()), result.stdout)


@pytest.fixture(scope="session")
def coco_sets(tmp_path_factory):
    """COCO-sized (480x640) refer-format sets with predictions, by number of samples, built on first use."""
    built: dict[int, tuple[Path, Path]] = {}

    def get(samples: int) -> tuple[Path, Path]:
        if samples not in built:
            built[samples] = write_coco_sized_set(tmp_path_factory.mktemp(f"coco{samples}"), samples, images=50)
        return built[samples]

    return get
