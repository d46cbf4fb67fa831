"""Start-up: `bench list`, `bench score` and `bench report` as fresh processes against a bare interpreter
(`python -c pass`) and one that imports numpy, measured in the same run; none may import a deep-learning
library (tests/guarantees/test_architecture.py and tests/bench/metrics/test_scoring.py assert that; here it is
timed)."""

from __future__ import annotations

import json

import pytest
from conftest import run_measured

ROUNDS = 5
HEAVY = ("torch", "diffusers", "transformers")
PROBE = "import sys, runpy; sys.argv = ['bench', *{argv!r}]; " \
        "exec('try:\\n runpy.run_module(\"bench\", run_name=\"__main__\")\\nexcept SystemExit: pass'); " \
        "print('\\n' + str(sorted(m for m in {heavy!r} if m in sys.modules)))"


@pytest.fixture(scope="module")
def score_inputs(coco_sets):
    return coco_sets(1000)


def _commands(score_inputs, tmp_path) -> dict[str, list[str]]:
    data_root, predictions = score_inputs
    return {
        "bench list": ["list"],
        "bench score (1,000 samples)": ["score", "--suite", "refcoco", "--split", "val", "--predictions",
                                        str(predictions), "--data-root", str(data_root), "--out",
                                        str(tmp_path / "run"), "--overwrite", "--bootstrap", "0"],
        "bench report (empty results)": ["report", "--results", str(tmp_path / "results")],
    }


@pytest.mark.benchmark(group="start-up")
@pytest.mark.parametrize("name", ["python -c pass", "python -c 'import numpy'"])
def test_reference_interpreter(benchmark, name):
    code = "pass" if name.endswith("pass") else "import numpy"
    benchmark.pedantic(lambda: run_measured(["-c", code]), rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(role="reference", name=name)


@pytest.mark.benchmark(group="start-up")
@pytest.mark.parametrize("name", ["bench list", "bench score (1,000 samples)", "bench report (empty results)"])
def test_command_start_up(benchmark, name, score_inputs, tmp_path):
    argv = _commands(score_inputs, tmp_path)[name]
    measured = benchmark.pedantic(lambda: run_measured(["-c", PROBE.format(argv=argv, heavy=HEAVY)]),
                                  rounds=ROUNDS, iterations=1)
    assert json.loads(measured.stdout.strip().splitlines()[-1].replace("'", '"')) == []
    benchmark.extra_info.update(role="measured", reference="python -c pass", peak_mib=measured.peak_mib)
