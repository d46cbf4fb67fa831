"""Issue 21, wrong numbers and crashes from hostile input: foreign predictions, bad sizes, colliding ids, polygons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError, DataFormatError
from tests.guarantees.test_hostile import SQUARE

REPO = Path(__file__).resolve().parents[2]


def _run(root: Path, out: Path, *extra: str) -> int:
    return main(["run", "--suite", "refcoco", "--split", "val", "--model", "oracle", "--data-root", str(root), "--out",
                 str(out), "--no-progress", "--bootstrap", "0", "--workers", "0", *extra])


@pytest.mark.parametrize("name", ["predictions.jsonl", "predictions.jsonl.gz"])
def test_bench_run_refuses_foreign_predictions_in_its_out_dir(tmp_path: Path, capsys, name: str, write_refer):
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}], [SQUARE])
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"")  # predictions someone left, with no run.json saying what made them
    assert _run(root, out) == 2
    assert "no run.json" in capsys.readouterr().err and not (out / "run.json").exists()


@pytest.mark.parametrize("value", ["limit=-1", "limit=0", "batch_size=0", 'limit="abc"', "batch_size=1.5"])
def test_ablate_refuses_the_sizes_bench_run_refuses(capsys, value: str):
    assert main(["ablate", "steps", "--set", value, "--list-cells"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_the_recorded_set_flags_make_the_same_cell(monkeypatch):
    import shlex

    from bench.ablate import driver

    overrides = {"model_args": {"profile": "false", "steps": 4}, "checkpoint": "007", "limit": 3,
                 "splits": ["val", "test A"], "device": "cpu"}
    seen = []
    monkeypatch.setattr(driver, "run", lambda options: seen.append(options) or 0)
    flags = driver.Options(name="steps", budget="smoke", overrides=overrides).cell_flags()
    printed = shlex.split(shlex.join(flags))  # as the recorded command is pasted into a shell
    assert main(["ablate", "steps", *printed]) == 0
    assert seen[0].overrides == overrides


def test_reasonseg_ids_that_collide_are_refused_before_anything_runs(tmp_path: Path, reasonseg_sample):
    from bench.suites import SUITES

    for stem, texts in (("image_1000", ["first", "second"]), ("image_1000:1", ["other"])):
        reasonseg_sample(tmp_path, stem, texts=texts, size=(32, 32))
    suite = SUITES.get("reasonseg")(data_root=tmp_path, texts="all")
    with pytest.raises(DataFormatError, match="image_1000:1"):
        list(suite.iter_samples("val"))


@pytest.mark.parametrize("coordinate", ["NaN", "1e300", "1e8", "-1e8"])
def test_a_polygon_with_absurd_coordinates_fails_its_sample(tmp_path: Path, coordinate: str, write_refer):
    hostile = [[4.0, 4.0, 20.0, 4.0, 20.0, 20.0, 4.0, 20.0]]
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64},
                                           {"id": 2, "height": 64, "width": 64}], [SQUARE, hostile])
    instances = next(root.rglob("instances.json"))
    instances.write_text(instances.read_text().replace("20.0, 4.0, 20.0, 20.0, 4.0, 20.0",
                                                       f"{coordinate}, 4.0, 20.0, 20.0, 4.0, 20.0"))
    code = ("import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "out"
    made = subprocess.run([sys.executable, "-c", code, "run", "--suite", "refcoco", "--split", "val", "--model",
                           "oracle", "--data-root", str(root), "--out", str(out), "--no-progress", "--bootstrap", "0",
                           "--workers", "1"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    records = {r["sample_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert [r["status"] for r in records.values()].count("failed") == 1
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_a_polygon_of_huge_outline_is_refused_under_a_small_memory_limit():
    script = textwrap.dedent("""
        import resource
        from bench.masks import RLEError, polygons_to_rle
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (300 << 20), hard))
        try:
            polygons_to_rle([[0.0, 0.0, 1e7, 0.0, 1e7, 1e7, 0.0, 1e7]], 64, 64)
        except RLEError as exc:
            print("refused:", exc)
    """)
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert made.returncode == 0 and "refused" in made.stdout, (made.returncode, made.stderr[-1000:])


def test_bench_errors_check_run_sizes():
    from bench.errors import check_run_sizes

    check_run_sizes(None, 1, 0)
    for limit, batch, workers in ((True, 1, 0), (1, 0, 0), (1, 1, -1), ("3", 1, 0)):
        with pytest.raises(BenchError):
            check_run_sizes(limit, batch, workers)


def _gzip_of_one_long_line(path: Path, megabytes: int) -> None:
    import zlib

    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    with open(path, "wb") as handle:
        handle.write(squeeze.compress(b'{"sample_id": "1", "segmentation": "'))
        block = b"a" * (1 << 20)
        for _ in range(megabytes):
            handle.write(squeeze.compress(block))
        handle.write(squeeze.compress(b'"}\n') + squeeze.flush())


def test_a_gzip_of_one_huge_line_is_refused_within_bounded_memory(tmp_path: Path, write_refer):
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}], [SQUARE])
    bomb = tmp_path / "bomb.jsonl.gz"
    _gzip_of_one_long_line(bomb, 384)
    assert bomb.stat().st_size < 2 << 20
    script = textwrap.dedent(f"""
        import resource, sys
        import bench.cli, bench.score_command, bench.suites.refer, pycocotools.mask
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (400 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
        sys.exit(bench.cli.main(["score", "--suite", "refcoco", "--split", "val", "--predictions", {str(bomb)!r},
                                 "--data-root", {str(root)!r}, "--out", {str(tmp_path / "out")!r}, "--bootstrap", "0"]))
    """)
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert made.returncode == 2, made.stderr[-2000:]
    assert f"{bomb}:1:" in made.stderr and "Traceback" not in made.stderr


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_a_damaged_gzip_is_a_message_naming_the_file(tmp_path: Path, capsys, damage: str, write_refer):
    import gzip

    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}], [SQUARE])
    source = tmp_path / "p.jsonl.gz"
    lines = b"".join(b'{"sample_id": "%d", "segmentation": null}\n' % k for k in range(20000))
    data = gzip.compress(lines)
    source.write_bytes(data[: len(data) // 2] if damage == "truncated" else lines)
    code = main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(source), "--data-root",
                 str(root), "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    assert code == 2 and str(source) in capsys.readouterr().err


def test_the_gallery_never_decodes_a_prediction_of_another_size():
    from bench.report import gallery

    huge = {"segmentation": {"size": [60000, 60000], "counts": [3600000000]}}
    assert gallery._mask(huge, (64, 64)) is None


def test_a_refs_pickle_linked_to_dev_zero_is_refused(tmp_path: Path):
    (tmp_path / "refs.p").symlink_to("/dev/zero")
    script = textwrap.dedent(f"""
        import resource
        from bench.errors import DataFormatError
        from bench.safe_pickle import load_refs_pickle
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (200 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            load_refs_pickle({str(tmp_path / "refs.p")!r})
        except DataFormatError as exc:
            print("refused:", exc)
    """)
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert made.returncode == 0 and "regular file" in made.stdout, made.stderr[-1000:]


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`bench ARGS` in a child process; one that blocks past `timeout` fails the test (and is killed)."""
    code = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    try:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bench {' '.join(args)} blocked for {timeout} s")


def test_fifos_never_block_a_run(tmp_path: Path, write_refer):
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64},
                                           {"id": 2, "height": 64, "width": 64}], [SQUARE, SQUARE])
    image = next(root.rglob("COCO_train2014_000000000002.jpg"))
    image.unlink()
    os.mkfifo(image)
    made = _bench("run", "--suite", "refcoco", "--split", "val", "--model", "oracle", "--data-root", str(root),
                  "--out", str(tmp_path / "out"), "--no-progress", "--bootstrap", "0", "--workers", "0")
    assert made.returncode == 0, made.stderr[-2000:]
    statuses = [json.loads(line)["status"] for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(statuses) == ["failed", "ok"]


def test_a_fifo_annotation_is_refused_not_waited_on(tmp_path: Path, reasonseg_sample):
    split_dir = reasonseg_sample(tmp_path, "a", size=(32, 32))
    os.mkfifo(split_dir / "b.json")
    made = _bench("run", "--suite", "reasonseg", "--split", "val", "--model", "oracle", "--data-root", str(tmp_path),
                  "--out", str(tmp_path / "out"), "--no-progress", "--bootstrap", "0", timeout=60)
    assert made.returncode == 2 and "b.json" in made.stderr and "regular file" in made.stderr, made.stderr[-2000:]


def test_a_gzip_bomb_is_refused_before_anything_is_copied(tmp_path: Path, capsys, monkeypatch, write_refer):
    import gzip

    import bench.io

    monkeypatch.setattr(bench.io, "GZIP_FLOOR", 1 << 20)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}], [SQUARE])
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress((b" " * 60000 + b"\n") * 200))  # 12 MB of blank lines in a few kB
    code = main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(bomb), "--data-root",
                 str(root), "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    assert code == 2 and "gzip bomb" in capsys.readouterr().err
    assert list((tmp_path / "tmp").iterdir()) == []
