"""bench ablate --executor: SLURM time limits and the sbatch script's resources, the cell job's command line
(--resume, torchrun), failure reports, which cells are (re)submitted, and the local executor end to end: two cells in
parallel give the in-process table, a preempted cell is requeued and resumes, a killed cell is reported and resumed
by --resume, each equal to an uninterrupted cell."""

from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.ablate.cells import Cell
from bench.ablate.executors import CellJob, Cluster, job_argv, minutes, slurm_parameters
from bench.ablate.jobs import Submitted, failure_notes, failure_report, log_tail, to_submit
from bench.ablate.load import load_ablation
from bench.cli import main
from bench.errors import BenchError

REPO = Path(__file__).resolve().parents[3]
LONGER_TRAINING = 'train_args={"train.steps"=40,"train.checkpoint_minutes"=0}'  # a checkpoint every step


@pytest.mark.parametrize("text, expected", [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440),
                                            ("1-2:30", 1590), ("1-00:00:01", 1441)])
def test_slurm_time_formats_become_whole_minutes(text, expected):
    assert minutes(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "0", "-5"])
def test_a_malformed_time_limit_is_refused(text):
    with pytest.raises(BenchError, match="--time"):
        minutes(text)


def test_the_sbatch_script_asks_for_each_cells_resources(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    cluster = Cluster(executor="slurm", partition="gpu", gpus_per_cell=4, cpus_per_cell=16, mem="64G",
                      time="2:00:00", array_parallelism=3, slurm_args={"account": "proj", "exclusive": ""})
    script = _make_sbatch_string(command="run", folder=tmp_path, map_count=5, **slurm_parameters(cluster, "steps"))
    for line in ["--partition=gpu", "--gpus-per-node=4", "--cpus-per-task=16", "--mem=64G", "--time=120",
                 "--array=0-4%3", "--account=proj", "--job-name=ablate-steps", "--ntasks-per-node=1",
                 "--signal=USR2@90"]:
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --exclusive\n" in script and "srun" in script


def test_a_cell_without_time_asks_for_its_partitions_limit(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sinfo").write_text('#!/bin/sh\ncase "$*" in *"-p gpu"*) echo "gpu 2-00:00:00";; *"-p none"*) ;; '
                                '*) echo "debug* infinite"; echo "gpu 2-00:00:00";; esac\n')
    (fake / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert slurm_parameters(Cluster(executor="slurm", partition="gpu"), "steps")["time"] == 2 * 24 * 60
    assert slurm_parameters(Cluster(executor="slurm"), "steps")["time"] == 30 * 24 * 60  # unlimited default partition
    with pytest.raises(BenchError, match="sinfo names no partition none"):
        slurm_parameters(Cluster(executor="slurm", partition="none"), "steps")


def _cell(variant: str = "frame", seed: int = 0) -> Cell:
    return Cell("shortcut", variant, seed, "smoke", load_ablation("shortcut").resolve(variant, "smoke"), {})


def test_a_cell_job_runs_the_cells_own_command_with_resume_and_several_gpus_under_torchrun(tmp_path):
    argv = job_argv(_cell(), tmp_path / "out", ["--seeds", "1"], "/data")
    assert argv == ["-m", "bench", "ablate", "shortcut", "--budget", "smoke", "--only", "frame:0", "--out",
                    (tmp_path / "out").as_posix(), "--seeds", "1", "--resume", "--data-root", "/data"]
    job = CellJob(argv, str(tmp_path), str(tmp_path), processes=4, env={"CUDA_VISIBLE_DEVICES": None})
    assert job.command()[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert job.command()[5:] == argv and CellJob(argv, "d", "c").command() == [sys.executable, *argv]
    job.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    again = pickle.loads(pickle.dumps(job))  # what submitit stores on a requeue: never the running child
    assert again.child is None and again.__getstate__() == job.__getstate__()
    requeued = job.checkpoint()  # preemption: the cell is stopped and the same command requeued
    assert job.child is None and requeued.function.__getstate__() == job.__getstate__()
    assert "CUDA_VISIBLE_DEVICES" not in job.environment()


def test_a_failed_cell_is_reported_with_its_logs_last_lines_and_the_command_that_reruns_it(tmp_path):
    log = tmp_path / "12_3_0_log.err"
    log.write_text("".join(f"line {i}\n" for i in range(30)) + "dit:  10%|#  | 4/40\rdit:  20%|## | 8/40\n"
                   "RuntimeError: out of memory\n")
    entry = Submitted(_cell(), tmp_path / "cell", ["-m", "bench", "ablate", "shortcut", "--resume"],
                      job=SimpleNamespace(job_id="12_3", paths=SimpleNamespace(stderr=log)))
    report = failure_report(entry, "slurm", "FAILED")
    assert report.startswith(f"failed: frame:0 (slurm job 12_3, FAILED); last lines of {log}:")
    assert "    dit:  20%|## | 8/40\n    RuntimeError: out of memory\n" in report and "line 15\n" not in report
    assert report.endswith("  rerun it here: python -m bench ablate shortcut --resume")
    assert log_tail(tmp_path / "absent") == ["(no log)"]


def test_interrupted_cells_are_resubmitted_only_with_resume_and_never_while_their_job_is_queued(tmp_path, monkeypatch):
    out = tmp_path / "out"
    cells = [_cell("channel"), _cell("frame"), _cell("none")]
    complete, started = cells[0].directory(out), cells[1].directory(out)
    started.mkdir(parents=True)
    (started / "training.json").write_text("{}")
    is_complete, is_started = (lambda d: d == complete), (lambda d: d.is_dir() and any(d.iterdir()))
    with pytest.raises(BenchError, match="frame:0 .* pass --resume"):
        to_submit(cells, out, is_complete, is_started, resume=False)
    assert to_submit(cells, out, is_complete, is_started, resume=True) == cells[1:]
    (out / "jobs").mkdir()
    (out / "jobs" / "cells.json").write_text(json.dumps({started.name: {"cell": "frame:0", "executor": "slurm",
                                                                          "job": "41_1"}}))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/sh\necho '41_1 RUNNING'\necho '41_2 PENDING'\n")
    (fake / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert to_submit(cells, out, is_complete, is_started, resume=True) == cells[2:]  # frame's job still runs


def test_collect_names_the_job_of_each_missing_cell_with_its_logs_last_lines(tmp_path):
    out, cell = tmp_path / "out", _cell("frame")
    cell.directory(out).mkdir(parents=True)
    (cell.directory(out) / "job.err").write_text("training frame:0\nMemoryError\n")
    (out / "jobs").mkdir()
    (out / "jobs" / "cells.json").write_text(json.dumps({cell.directory(out).name: {
        "cell": "frame:0", "executor": "local", "job": "77"}, "broken": "not an entry"}))
    notes = failure_notes(out, [cell, _cell("none")], lambda directory: False)
    assert notes == [f"frame:0: local job 77 ended; last lines of {cell.directory(out) / 'job.err'}:\n"
                     "    training frame:0\n    MemoryError"]


def test_slurm_only_flags_need_the_slurm_executor(capsys):
    assert main(["ablate", "steps", "--executor", "local", "--mem", "4G"]) == 2
    assert "--mem only apply with --executor slurm" in capsys.readouterr().err
    assert main(["ablate", "steps", "--executor", "local", "--max-parallel", "0"]) == 2
    assert main(["ablate", "steps", "--executor", "slurm", "--time", "tomorrow"]) == 2


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "table.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.startswith("latency")} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_two_cells_in_parallel_through_the_local_executor_give_the_in_process_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache-inline"))
    assert main(["ablate", "shortcut", "--budget", "smoke", "--out", str(tmp_path / "inline")]) == 0
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache-local"))  # the jobs train again, in their processes
    capsys.readouterr()
    out = tmp_path / "local"
    assert main(["ablate", "shortcut", "--budget", "smoke", "--out", str(out), "--executor", "local",
                 "--max-parallel", "2"]) == 0
    assert "shortcut cells: 100%" in capsys.readouterr().err
    assert _table(out) == _table(tmp_path / "inline")
    record = json.loads((out / "jobs" / "cells.json").read_text())
    assert sorted(entry["cell"] for entry in record.values()) == ["frame:0", "none:0"]
    for name, entry in record.items():  # each cell links its job's logs, which hold the cell's own output
        assert (out / "runs" / name / "job.err").resolve() == (out / "jobs" / f"{entry['job']}_0_log.err").resolve()
        assert f"--only {entry['cell']}" in (out / "runs" / name / "job.err").read_text()


@pytest.mark.slow
def test_a_cell_with_several_gpus_runs_under_torchrun_and_gives_the_in_process_result(tmp_path, capsys):
    common = ["ablate", "steps", "--budget", "smoke", "--only", "1-step:0"]
    assert main([*common, "--out", str(tmp_path / "inline")]) == 0
    out = tmp_path / "torchrun"  # --gpus-per-cell 2: two ranks (gloo on a CPU machine), as `bench run` under torchrun
    assert main([*common, "--out", str(out), "--executor", "local", "--gpus-per-cell", "2"]) == 0
    log = next(out.glob("runs/1-step-*")).joinpath("job.err").read_text()
    assert "-m torch.distributed.run --standalone --nproc-per-node=2 -m bench ablate steps" in log
    assert "making 1-step:0" in log  # a new cell: its job's logs alone are no start
    inline, ranked = (gzip.decompress(next(d.glob("runs/1-step-*/predictions.jsonl.gz")).read_bytes())
                      for d in (tmp_path / "inline", out))
    assert ranked == inline


def _pids(*needles: str) -> list[int]:
    """Processes whose command line holds every needle (this test's own, found by its temporary paths)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and all(needle in command for needle in needles):
            found.append(int(proc.name))
    return found


def _checkpoint_step(cache: Path) -> int:
    states = list(cache.glob("ablate/shortcut/*/checkpoint/state.json"))
    try:
        return json.loads(states[0].read_text())["step"] if states else 0
    except (OSError, ValueError):
        return 0


def _interrupt_mid_training(tmp_path: Path, name: str, signum: int, *needles: str) -> subprocess.CompletedProcess:
    """frame:0 through the local executor; `signum` to the process holding `needles` once step 3 is checkpointed."""
    cache, out = tmp_path / f"cache-{name}", tmp_path / name
    command = [sys.executable, "-m", "bench", "ablate", "shortcut", "--budget", "smoke", "--only", "frame:0",
               "--set", LONGER_TRAINING, "--out", str(out), "--executor", "local"]
    env = {**os.environ, "BENCH_CACHE": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and _checkpoint_step(cache) < 3:
            time.sleep(0.2)
        targets = _pids(str(out), *needles)
        assert _checkpoint_step(cache) >= 3 and len(targets) == 1, (targets, _checkpoint_step(cache))
        os.kill(targets[0], signum)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _trainings(cell: Path) -> list[str]:
    return [line for line in (cell / "job.err").read_text().splitlines() if line.startswith("training frame:0")]


def _predictions(out: Path) -> bytes:
    return gzip.decompress(next(out.glob("runs/frame-*/predictions.jsonl.gz")).read_bytes())


@pytest.mark.slow
def test_a_preempted_cell_is_requeued_and_a_killed_one_resumed_by_resume_both_equal_to_an_uninterrupted_cell(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache-whole"))
    common = ["ablate", "shortcut", "--budget", "smoke", "--only", "frame:0", "--set", LONGER_TRAINING]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0

    # preemption: submitit's signal to the job; the cell checkpoints (its training is on disk) and is requeued
    preempted = _interrupt_mid_training(tmp_path, "preempted", signal.SIGUSR2, "submitit.core._submit")
    assert preempted.returncode == 0, preempted.stderr[-3000:]
    cell = next((tmp_path / "preempted").glob("runs/frame-*"))
    first, second = _trainings(cell)
    assert "--resume" not in first and second.endswith("--resume")  # resumed from the checkpoint, not restarted
    assert _predictions(tmp_path / "preempted") == _predictions(tmp_path / "whole")

    # a killed cell: reported with its log and the command that reruns it, refused without --resume
    killed = _interrupt_mid_training(tmp_path, "killed", signal.SIGKILL, "--only frame:0", "--resume")
    assert killed.returncode == 1
    assert "failed: frame:0 (local job" in killed.stderr and "rerun it here: python -m bench ablate shortcut" in killed.stderr
    assert "resubmit what is missing or failed with:" in killed.stderr
    out = tmp_path / "killed"
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache-killed"))
    assert main([*common, "--out", str(out), "--executor", "local"]) == 2
    assert "pass --resume to resubmit them" in capsys.readouterr().err
    assert main([*common, "--out", str(out), "--executor", "local", "--resume"]) == 0
    assert _trainings(next(out.glob("runs/frame-*")))[-1].endswith("--resume")
    assert _predictions(out) == _predictions(tmp_path / "whole")
