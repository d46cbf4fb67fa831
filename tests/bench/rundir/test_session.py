"""The run directory's shared pieces: the one failure summary (bench.rundir.outcome) and the session that
`bench run` and `bench score` both hold (bench.rundir.session)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.run_command import Runner, RunSpec
from bench.rundir.layout import RunDir
from bench.rundir.outcome import OutcomeTally
from bench.rundir.record import RunRecord
from bench.rundir.session import RunSession
from bench.score_command import score_file

REPO = Path(__file__).resolve().parents[3]


def _failed(sample_id: str, error: str) -> dict:
    return {"sample_id": sample_id, "status": "failed", "error": error}


def test_failure_summary_counts_the_most_frequent_reasons():
    errors = ["a"] * 3 + ["b"] * 5 + ["c", "d", "e"]
    records = [_failed(str(i), e) for i, e in enumerate(errors)]
    records.append({"sample_id": "ok", "status": "ok", "error": None, "area": 3})
    (warning,) = OutcomeTally.of("s", "val", records).warnings()
    assert warning == "s/val: 11 of 12 samples failed (5 x b; 3 x a; 1 x c; and 2 other reasons); first: 0"


def test_failure_summary_breaks_ties_by_first_failure_and_says_when_every_mask_is_empty():
    records = [_failed("7", "late"), {"sample_id": "1", "status": "ok", "error": None, "area": 0}, _failed("3", "early")]
    assert OutcomeTally.of("s", "test", records).warnings() == [
        "s/test: 2 of 3 samples failed (1 x late; 1 x early); first: 7", "s/test: every predicted mask is empty"]
    assert OutcomeTally.of("s", "test", []).warnings() == []  # nothing scored: nothing to say


def test_the_tally_streams_and_counts_what_was_predicted():
    tally = OutcomeTally("s", "val")
    tally.add({"sample_id": "1", "status": "ok", "error": None, "area": 4}, predicted=True)
    tally.add(_failed("2", "missing from the predictions file"), predicted=False)
    assert (tally.n, tally.n_predicted, tally.n_failed) == (2, 1, 1)
    assert tally.warnings() == ["s/val: 1 of 2 samples failed (1 x missing from the predictions file); first: 2"]


# ---- the session both commands hold (bench.rundir.session) -------------------------------------------------


def _run(out: Path, data_root: Path) -> None:
    Runner(RunSpec(suites=["refcoco"], model="empty", out=str(out), data_root=str(data_root), progress=False)).run()


def _score(out: Path, data_root: Path) -> None:
    predictions = out.parent / "elsewhere.jsonl"
    predictions.write_text("", encoding="utf-8")
    score_file("refcoco", "val", predictions, out=out, data_root=str(data_root))


COMMANDS = {"run": _run, "score": _score}


def _refusal(command: str, out: Path, data_root: Path) -> str:
    with pytest.raises(BenchError) as caught:
        COMMANDS[command](out, data_root)
    return str(caught.value)


@pytest.fixture
def locked(tmp_path: Path):
    """A run directory whose lock another process holds, as a run in progress does."""
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from bench.rundir.lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('ready', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield out
    finally:
        holder.kill()
        holder.wait()


def test_run_and_score_refuse_a_locked_directory_with_the_same_message(locked: Path, tmp_path: Path):
    messages = {command: _refusal(command, locked, tmp_path / "no-data") for command in COMMANDS}
    assert messages["run"] == messages["score"]
    assert messages["run"].startswith(f"{locked} is being written by another run (pid ")
    assert sorted(path.name for path in locked.iterdir()) == [".lock"]  # the holder's, left alone


def test_run_and_score_refuse_a_directory_holding_a_run_each_naming_its_own_way_in(tmp_path: Path):
    out = tmp_path / "taken"
    out.mkdir()
    RunDir(out).write(RunRecord(model="m", suites=["refcoco"], splits={}))
    before = (out / "run.json").read_bytes()
    messages = {command: _refusal(command, out, tmp_path / "no-data") for command in COMMANDS}
    assert messages == {"run": f"{out} already holds a run; pass --resume to finish it or choose another --out",
                        "score": f"{out} already holds a run; pass --overwrite to replace it or choose another --out"}
    assert (out / "run.json").read_bytes() == before and not (out / ".lock").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_input_leaves_no_directory_behind(tmp_path: Path, command: str):
    out = tmp_path / "new"
    with pytest.raises(BenchError, match="no-data"):
        COMMANDS[command](out, tmp_path / "no-data")  # the data are missing: found out once the directory is held
    assert not out.exists()


def test_the_session_writes_the_spec_provenance_and_keeps_a_resumed_runs_creation(tmp_path: Path):
    spec = {"suites": ["s"], "limit": 1}
    with RunSession(tmp_path / "run", ["s"], spec) as session:
        session.write_record("running", command="first", model="m", suites=["s"], splits={"s": ["val"]})
        session.write_record("complete", model="m", suites=["s"], splits={"s": ["val"]})
    first = RunDir(tmp_path / "run").read()
    assert (first.status, first.spec, first.command, first.resumed) == ("complete", spec, "first", 0)
    assert first.git_commit and first.versions["python"] and first.created
    with pytest.raises(BenchError, match="the configuration differs"):
        with RunSession(tmp_path / "run", ["s"], {**spec, "limit": 2}, resume=True, compared=("limit",)):
            pass
    with RunSession(tmp_path / "run", ["s"], spec, resume=True, compared=("limit",)) as session:
        session.write_record("running", model="m", suites=["s"], splits={"s": ["val"]})
    resumed = RunDir(tmp_path / "run").read()
    assert (resumed.created, resumed.command, resumed.resumed) == (first.created, "first", 1)
    assert not (tmp_path / "run" / ".lock").exists()
