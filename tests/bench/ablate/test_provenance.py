"""bench ablate's safe default output (never the committed results/) and each cell's record of the code that made it."""

from __future__ import annotations

import json

import pytest

from bench.ablate import cells, driver
from bench.ablate.page import provenance_lines
from bench.cli import main


@pytest.mark.slow
def test_a_smoke_run_from_a_checkout_root_leaves_results_untouched(tmp_path, monkeypatch) -> None:
    results = tmp_path / "results"
    (results / "ablations" / "steps").mkdir(parents=True)
    (results / "runs.toml").write_text("# committed runs\n")
    (results / "ablations" / "steps" / "report.md").write_text("the committed report\n")
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_RUNS", raising=False)
    assert main(["ablate", "steps", "--budget", "smoke", "--only", "1-step:0"]) == 0
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    made = list((tmp_path / "runs" / "ablations" / "steps" / "runs").iterdir())
    assert len(made) == 1 and (made[0] / "run.json").is_file()
    record = json.loads((made[0] / cells.PROVENANCE).read_text())
    assert set(record) == {"commit", "dirty", "source_hash"} and len(record["source_hash"]) == 16


def test_bench_runs_moves_the_default_output(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path))
    assert driver.default_out("steps") == tmp_path / "ablations" / "steps"


def identity(commit: str, dirty: bool, source: str) -> dict:
    return {"commit": commit, "dirty": dirty, "source_hash": source}


def test_a_resume_by_other_code_is_recorded_and_the_report_warns(tmp_path, monkeypatch) -> None:
    clean, other = tmp_path / "clean", tmp_path / "other"
    clean.mkdir(), other.mkdir()
    monkeypatch.setattr("bench.code_version.code_identity", lambda: identity("a" * 40, False, "1" * 16))
    cells.record_provenance(clean)
    cells.record_provenance(other)
    cells.record_provenance(clean)  # resumed by the same code: nothing added
    assert "resumed_by" not in json.loads((clean / cells.PROVENANCE).read_text())
    (line,) = provenance_lines([clean])
    assert "dirty tree: 0" in line and "**" not in line
    monkeypatch.setattr("bench.code_version.code_identity", lambda: identity("b" * 40, True, "2" * 16))
    cells.record_provenance(other)
    assert json.loads((other / cells.PROVENANCE).read_text())["resumed_by"] == [identity("b" * 40, True, "2" * 16)]
    old = tmp_path / "old"  # made before provenance.json: its run.json's commit, no source hash
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"git_commit": "c" * 40 + "-dirty"}))
    (line,) = provenance_lines([clean, other, old, tmp_path / "unknown"])
    assert "dirty tree: 2" in line and "the cells ran different code" in line
    assert "made before cells recorded a source hash: 1" in line and "with no record of their code: 1" in line


def test_the_source_hash_changes_with_a_source_file(tmp_path, monkeypatch) -> None:
    from bench import code_version

    for package in code_version.SOURCE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    fake = tmp_path / "bench" / "code_version.py"
    monkeypatch.setattr(code_version, "__file__", str(fake))
    code_version.source_hash.cache_clear()
    first = code_version.source_hash()
    (tmp_path / "genmask" / "a.py").write_text("x = 2\n")
    code_version.source_hash.cache_clear()
    assert code_version.source_hash() != first
    code_version.source_hash.cache_clear()


def test_a_rewritten_result_does_not_make_the_code_dirty_but_a_changed_module_does(tmp_path, monkeypatch) -> None:
    import shutil
    import subprocess

    from bench import code_version

    root = tmp_path / "checkout"
    (root / "bench").mkdir(parents=True)
    shutil.copy(code_version.__file__, root / "bench" / "code_version.py")
    (root / "results").mkdir()
    (root / "results" / "r.txt").write_text("one\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=root, check=True)
    monkeypatch.setattr(code_version, "__file__", str(root / "bench" / "code_version.py"))
    (root / "results" / "r.txt").unlink()
    assert not code_version.git_commit().endswith("-dirty")
    (root / "bench" / "code_version.py").write_text("# changed\n")
    assert code_version.git_commit().endswith("-dirty")
