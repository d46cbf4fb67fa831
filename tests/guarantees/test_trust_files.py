"""Issue 21, data lost or overwritten: links, inputs that are outputs, file names from files (all built here)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.cli import main
from bench.errors import BenchError, DataFormatError
from bench.io import write_atomic, write_json
from bench.report import build_report
from bench.rundir.layout import RunDir
from bench.rundir.lock import RunLock
from bench.rundir.predictions import compact_run, write_records
from tests.bench.report.test_report import split_metrics, write_run
from tests.guarantees.test_hostile import SQUARE

VICTIM = b"precious user data\n" * 300


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    return victim


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path: Path):
    victim, run = _victim(tmp_path), tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(BenchError, match="symbolic link") as error:
        RunLock(run).acquire()
    assert "precious" not in str(error.value) and victim.read_bytes() == VICTIM
    (run / ".lock").unlink()
    os.link(victim, run / ".lock")  # a hard link would be truncated just the same
    with pytest.raises(BenchError, match="hard link"):
        RunLock(run).acquire()
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("name", ["run.json", "predictions.jsonl.gz", "REPORT.md"])
def test_a_temporary_file_that_is_a_link_is_never_followed(tmp_path: Path, monkeypatch, name: str):
    import bench.io

    victim, run = _victim(tmp_path), tmp_path / "run"
    run.mkdir()
    (run / f"{name}.tmp").symlink_to(victim)  # the fixed temporary name the writers used to take
    write = {"run.json": lambda path: write_json(path, {"a": 1}),
             "predictions.jsonl.gz": lambda path: write_records(path, [{"sample_id": "1", "segmentation": None}]),
             "REPORT.md": lambda path: write_atomic(path, "# report\n")}[name]
    write(run / name)
    assert victim.read_bytes() == VICTIM and (run / name).is_file() and not (run / name).is_symlink()
    monkeypatch.setattr(bench.io, "temporary_name", lambda path: run / f"{name}.tmp")  # even one it guessed
    with pytest.raises(BenchError, match=name):
        write(run / name)
    assert victim.read_bytes() == VICTIM


def test_concurrent_writers_of_one_file_never_share_a_temporary_name(tmp_path: Path, monkeypatch):
    used = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (used.append(str(source)), replace(source, target)))
    for _ in range(4):  # four `bench report`s writing one REPORT.md
        write_atomic(tmp_path / "REPORT.md", "# report\n")
    assert len(set(used)) == 4 and [path.name for path in tmp_path.iterdir()] == ["REPORT.md"]


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BenchError, match="run.json.*No space left"):
        write_json(tmp_path / "run.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory, write_refer) -> Path:
    return write_refer(tmp_path_factory.mktemp("data"), [{"id": 1, "height": 64, "width": 64}], [SQUARE])


@pytest.mark.parametrize("gzipped", [False, True])
def test_bench_score_never_overwrites_its_own_input(tmp_path: Path, refer_root: Path, capsys, gzipped: bool):
    out = tmp_path / "out"
    assert main(["run", "--suite", "refcoco", "--split", "val", "--model", "oracle", "--data-root", str(refer_root),
                 "--out", str(out), "--no-progress", "--bootstrap", "0", "--workers", "0"]) == 0
    if gzipped:
        compact_run(out)
    source = out / ("predictions.jsonl.gz" if gzipped else "predictions.jsonl")
    before = source.read_bytes()
    code = main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(source), "--out", str(out),
                 "--data-root", str(refer_root), "--overwrite", "--bootstrap", "0"])
    assert code == 2 and "is an input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_shared_vae_refuses_to_reference_the_folder_it_deletes(tmp_path: Path):
    from genmask.shared_vae import WEIGHTS_FILE
    from genmask.shared_vae import main as shared_vae

    checkpoint = tmp_path / "ck"
    (checkpoint / "vae").mkdir(parents=True)
    (checkpoint / "vae" / WEIGHTS_FILE).write_bytes(b"weights")
    with pytest.raises(SystemExit) as exit_:
        shared_vae([str(checkpoint), "--vae", str(checkpoint / "vae")])
    assert exit_.value.code == 2
    assert (checkpoint / "vae" / WEIGHTS_FILE).read_bytes() == b"weights" and not (checkpoint / "vae.json").exists()


def test_shared_vae_reference_without_sha256_is_a_message(tmp_path: Path):
    from genmask.shared_vae import vae_directory

    (tmp_path / "vae.json").write_text(json.dumps({"directory": "../x"}))
    with pytest.raises(DataFormatError, match="vae.json"):
        vae_directory(tmp_path)


def test_compact_never_takes_suite_names_as_paths(tmp_path: Path, capsys):
    run, victims = tmp_path / "results" / "run", tmp_path / "victims"
    victims.mkdir()
    (victims / "v.jsonl").write_bytes(VICTIM)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": "m", "suites": ["a", "x/../../../victims/v"],
                                              "status": "complete", "splits": {}}))
    assert main(["compact", str(run)]) == 2
    assert "suite names" in capsys.readouterr().err
    assert (victims / "v.jsonl").read_bytes() == VICTIM and not (victims / "v.jsonl.gz").exists()
    with pytest.raises(DataFormatError):
        RunDir(run).read()


def test_a_manifest_naming_a_users_file_deletes_nothing(tmp_path: Path):
    write_run(tmp_path / "a", "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00")
    build_report(tmp_path)
    mine = tmp_path / "plots" / "synthref__mine.png"
    mine.write_bytes(b"my own figure")
    manifest = json.loads((tmp_path / ".report-manifest.json").read_text())
    manifest["files"].append("plots/synthref__mine.png")
    manifest["sha256"]["plots/synthref__mine.png"] = "0" * 64
    (tmp_path / ".report-manifest.json").write_text(json.dumps(manifest))
    build_report(tmp_path)
    assert mine.read_bytes() == b"my own figure"
    manifest.pop("sha256")  # an old manifest without digests deletes nothing either
    (tmp_path / ".report-manifest.json").write_text(json.dumps(manifest))
    build_report(tmp_path)
    assert mine.read_bytes() == b"my own figure"


@pytest.mark.parametrize("value", ["runs/\U0001F600/cell", 'a"b\\c\td\x7f', "plain", "é ü"])
def test_toml_strings_round_trip_every_character(value: str):
    from bench.tomlfiles import toml_string
    assert tomllib.loads(f"k = {toml_string(value)}")["k"] == value
    assert toml_string(value).isascii()


def test_a_lone_surrogate_is_refused_not_written_into_runs_toml():
    from bench.tomlfiles import toml_string
    with pytest.raises(BenchError, match="surrogate"):
        toml_string("runs/\udcff/cell")


def test_declared_cells_with_non_bmp_names_keep_runs_toml_readable(tmp_path: Path):
    from bench.ablate.declare import declare_cells
    from bench.rundir.declared import read_declared

    results = tmp_path / "results"
    results.mkdir()
    (results / "runs.toml").write_text("")
    out = results / "abl\U0001F600"
    directory = out / "runs" / "v\U0001F600-s0"
    cell = SimpleNamespace(variant="v\U0001F600", directory=lambda out: directory)
    write_run(directory, "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00")
    record = RunDir(directory).read()
    record.command = "python -m bench run --out 'abl\U0001F600'"
    RunDir(directory).write(record)
    assert declare_cells(out, [cell], lambda _: True)
    (entry,) = read_declared(results)
    assert entry.command == record.command and entry.label == "v\U0001F600"


def test_runs_toml_not_utf8_or_too_deep_is_a_message(tmp_path: Path):
    from bench.rundir.declared import read_declared
    from bench.tomlfiles import parse_toml

    (tmp_path / "runs.toml").write_bytes(b'[[run]]\ndirectory = "\xff"\n')
    with pytest.raises(DataFormatError, match="runs.toml"):
        read_declared(tmp_path)
    with pytest.raises(DataFormatError, match="deep"):
        parse_toml("k = " + "[" * 100000 + "]" * 100000, "deep.toml")
