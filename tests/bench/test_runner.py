"""End-to-end: run, score, resume, failures and sharding on a tiny refer-format dataset the test writes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.masks import decode_rle, encode_rle
from bench.metrics import Protocol
from bench.models import ModelInput, SegModel
from bench.run_command import Runner, RunSpec
from bench.suites.writers import coco_image_name

REPO = Path(__file__).resolve().parents[2]


def _square(x: int, y: int, size: int) -> list[float]:
    return [x, y, x + size, y, x + size, y + size, x, y + size]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, refer_dataset) -> Path:
    """A RefCOCO-layout dataset: 6 images of random pixels, one or two refs each, splits val/testA/testB."""
    rng = np.random.default_rng(0)
    objects, sent_id = [], 100
    for image_id in range(1, 7):
        for k in range(1 + image_id % 2):
            sentences = [(sent_id, f"thing {image_id} {k}"), (sent_id + 1, f"object {image_id} {k}")]
            sent_id += 2
            objects.append((image_id * 10 + k, image_id, ["val", "testA", "testB"][image_id % 3],
                            [_square(4 + 16 * k, 6, 10 + image_id)], sentences))
    return refer_dataset(tmp_path_factory.mktemp("data"), {i: (40 + 4 * i, 48) for i in range(1, 7)}, objects,
                         pixels=lambda image: rng.integers(0, 255, (image["height"], image["width"], 3), dtype=np.uint8))


def _run(tmp_path: Path, data_root: Path, *extra: str, name: str = "run") -> tuple[int, Path]:
    out = tmp_path / name
    code = main(["run", "--suite", "refcoco", "--data-root", str(data_root), "--out", str(out), "--no-progress",
                 "--bootstrap", "50", *extra])
    return code, out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_oracle_scores_one_and_empty_zero(tmp_path, data_root, capsys):
    code, out = _run(tmp_path, data_root, "--model", "oracle", name="oracle")
    assert code == 0
    assert re.search(r"\nval +\d+ +0 +100\.0 +\[100\.0, 100\.0\] +100\.0 ", "\n" + capsys.readouterr().out)
    splits = _metrics(out)["splits"]
    assert set(splits) == {"val", "testA", "testB"}
    for m in splits.values():
        assert m["ciou"] == 1.0 and m["giou"] == 1.0 and m["n_failed"] == 0
    code, out = _run(tmp_path, data_root, "--model", "empty", name="empty")
    assert code == 0
    for m in _metrics(out)["splits"].values():
        assert m["ciou"] == 0.0 and m["giou"] == 0.0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["kind"] == "leaderboard" and run["model"] == "empty" and run["protocol"]["empty_union_iou"] == 1.0
    assert run["timings"]["samples"] == sum(m["n"] for m in _metrics(out)["splits"].values())


def test_predictions_file_holds_every_sample_at_original_size(tmp_path, data_root):
    code, out = _run(tmp_path, data_root, "--model", "center", "--split", "val", "testA")
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    from bench.suites import SUITES

    suite = SUITES.get("refcoco")(data_root=data_root)
    expected = [s for split in ("val", "testA") for s in suite.samples(split)]
    assert [r["sample_id"] for r in lines] == [s.sample_id for s in expected]
    for record, sample in zip(lines, expected):
        assert decode_rle(record["segmentation"]).shape == (sample.height, sample.width)
        assert record["status"] == "ok" and record["error"] is None


def test_score_reproduces_run_metrics(tmp_path, data_root):
    _, out = _run(tmp_path, data_root, "--model", "center", "--split", "val")
    code = main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(out / "predictions.jsonl"),
                 "--data-root", str(data_root), "--out", str(tmp_path / "scored"), "--bootstrap", "50"])
    assert code == 0
    assert _metrics(tmp_path / "scored") == {**_metrics(out), "model": "predictions"}
    scored, ran = (json.loads((d / "run.json").read_text()) for d in (tmp_path / "scored", out))
    assert set(scored) == set(ran)  # one run.json schema for bench run and bench score
    assert scored["status"] == "complete" and scored["spec"]["predictions"].endswith("predictions.jsonl")


def test_score_counts_missing_as_failed_and_ignores_other_ids(tmp_path, data_root, capsys):
    _, out = _run(tmp_path, data_root, "--model", "oracle", "--split", "val", "testA")
    lines = (out / "predictions.jsonl").read_text().splitlines()
    val = [line for line in lines if json.loads(line)["split"] == "val"]
    others = [json.loads(line) for line in lines if json.loads(line)["split"] != "val"]
    subset = tmp_path / "subset.jsonl"  # drop one val line; keep testA lines without their split field
    subset.write_text("\n".join(val[1:] + [json.dumps({"sample_id": r["sample_id"], "segmentation": r["segmentation"]})
                                           for r in others]) + "\n")
    main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(subset),
          "--data-root", str(data_root), "--out", str(tmp_path / "s"), "--bootstrap", "0"])
    # an expected condition: a plain note on stderr and a warning in run.json, not a Python warning
    assert re.search(f"note: {len(others)} predictions .* not in refcoco/val", capsys.readouterr().err)
    assert any("not in refcoco/val" in w for w in json.loads((tmp_path / "s" / "run.json").read_text())["warnings"])
    m = _metrics(tmp_path / "s")["splits"]["val"]
    assert m["n"] == len(val) and m["n_failed"] == 1
    assert m["giou"] == pytest.approx((len(val) - 1) / len(val))
    assert m["ciou"] < 1.0  # the missing sample's ground truth stays in the union


def test_score_rejects_malformed_and_duplicated_lines(tmp_path, data_root, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "100", "segmentation": null}\n{not json\n')
    code = main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(bad), "--data-root", str(data_root)])
    assert code == 2 and f"{bad}:2" in capsys.readouterr().err
    bad.write_text('{"sample_id": "100", "segmentation": null}\n{"sample_id": "100", "segmentation": null}\n')
    code = main(["score", "--suite", "refcoco", "--split", "val", "--predictions", str(bad), "--data-root", str(data_root)])
    assert code == 2 and "duplicated sample_id '100'" in capsys.readouterr().err


def test_missing_data_exits_2_naming_the_path(tmp_path, capsys):
    code = main(["run", "--suite", "refcoco", "--model", "oracle", "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "nowhere") in err and "refs(unc).p" in err


def test_unknown_model_suggests_a_name(tmp_path, data_root, capsys):
    code = main(["run", "--suite", "refcoco", "--model", "oracel", "--data-root", str(data_root), "--out", str(tmp_path / "o")])
    assert code == 2 and "did you mean 'oracle'" in capsys.readouterr().err.lower()


def test_corrupt_image_fails_that_sample_only_and_strict_stops(tmp_path, data_root, capsys):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(data_root), str(broken)], check=True)
    image_dir = broken / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
    (image_dir / coco_image_name(3)).write_bytes(b"not an image")  # image 3 is in val
    code, out = _run(tmp_path, broken, "--model", "oracle", "--split", "val")
    assert code == 0
    # the summary names the reason and how many samples it failed, not only predictions.jsonl
    assert re.search(r"warning: refcoco/val: 4 of 6 samples failed \(4 x image: cannot read image .*first: ",
                     capsys.readouterr().err)
    m = _metrics(out)["splits"]["val"]
    failed = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines() if '"failed"' in x]
    assert m["n_failed"] == len(failed) == 4  # image 3 has two refs of two sentences each
    assert all("cannot read image" in r["error"] for r in failed)
    assert m["ciou"] < 1.0
    assert any("failed" in w for w in json.loads((out / "run.json").read_text())["warnings"])
    code, _ = _run(tmp_path, broken, "--model", "oracle", "--split", "val", "--strict", name="strict")
    assert code == 3


def test_bad_model_outputs_fail_their_samples(tmp_path, data_root, monkeypatch):
    from bench.models import trivial

    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        outputs = []
        for x in batch:
            h, w = x.image.shape[:2]
            sid = int(x.sample.sample_id)
            if sid % 3 == 0:
                outputs.append(np.zeros((h + 1, w), dtype=bool))  # wrong shape
            elif sid % 3 == 1:
                outputs.append(np.full((h, w), np.nan))  # NaN
            else:
                outputs.append(np.full((h, w), 0.9))  # probabilities: thresholded at 0.5
        return outputs

    monkeypatch.setattr(trivial.FullModel, "predict", flaky)
    _, out = _run(tmp_path, data_root, "--model", "full", "--split", "val")
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    for r in records:
        sid = int(r["sample_id"])
        if sid % 3 == 0:
            assert r["status"] == "failed" and "shape" in r["error"]
        elif sid % 3 == 1:
            assert r["status"] == "failed" and "NaN" in r["error"]
        else:
            assert r["status"] == "ok" and r["area"] > 0


def test_existing_run_needs_resume_and_same_config(tmp_path, data_root, capsys):
    _, out = _run(tmp_path, data_root, "--model", "empty", "--split", "val")
    code, _ = _run(tmp_path, data_root, "--model", "empty", "--split", "val")
    assert code == 2 and "--resume" in capsys.readouterr().err
    code, _ = _run(tmp_path, data_root, "--model", "empty", "--split", "val", "--seed", "3", "--resume")
    assert code == 2 and "seed" in capsys.readouterr().err
    code, _ = _run(tmp_path, data_root, "--model", "empty", "--split", "val", "--resume")
    assert code == 0  # a finished run resumes as a no-op with the same metrics


def test_resume_refuses_another_data_root_or_changed_data(tmp_path, data_root, capsys):
    _, out = _run(tmp_path, data_root, "--model", "empty", "--split", "val")
    copy = tmp_path / "copy"
    shutil.copytree(data_root, copy)
    code, _ = _run(tmp_path, copy, "--model", "empty", "--split", "val", "--resume")
    assert code == 2 and "data_root" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())  # same root recorded, data changed underneath
    run["spec"]["data_root"] = str(copy)
    (out / "run.json").write_text(json.dumps(run))
    instances = copy / "refer_seg" / "refcoco" / "instances.json"
    instances.write_text(instances.read_text().replace('"height": 44', '"height": 45', 1))
    code, _ = _run(tmp_path, copy, "--model", "empty", "--split", "val", "--resume")
    assert code == 2 and "dataset fingerprints" in capsys.readouterr().err


SLOW_MODEL_SCRIPT = """
import sys, time
from bench.models import MODELS
from bench.models.trivial import CenterModel

@MODELS.register("slow-center")
class SlowCenter(CenterModel):
    name = "slow-center"
    def predict(self, batch):
        time.sleep(0.15)
        return super().predict(batch)

from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _bench_subprocess(script: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, data_root):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_MODEL_SCRIPT)
    common = ["run", "--suite", "refcoco", "--model", "slow-center", "--data-root", str(data_root), "--batch-size", "1",
              "--no-progress", "--bootstrap", "50"]
    full = _bench_subprocess(script, *common, "--out", str(tmp_path / "full"))
    assert full.wait(timeout=120) == 0, full.stderr.read().decode()

    killed = _bench_subprocess(script, *common, "--out", str(tmp_path / "killed"))
    predictions = tmp_path / "killed" / "predictions.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not predictions.exists() or len(predictions.read_text().splitlines()) < 4):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    n_before = len(predictions.read_text().splitlines())
    total = len((tmp_path / "full" / "predictions.jsonl").read_text().splitlines())
    assert 4 <= n_before < total

    assert (tmp_path / "killed" / ".lock").exists()  # the killed run's lock file stays, its lock does not
    resumed = _bench_subprocess(script, *common, "--out", str(tmp_path / "killed"), "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    assert "took over the lock of a run that is gone" in resumed.stderr.read().decode()
    assert not (tmp_path / "killed" / ".lock").exists()
    assert predictions.read_text() == (tmp_path / "full" / "predictions.jsonl").read_text()
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "full")
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["resumed"] == 1


@pytest.mark.slow
def test_two_process_torchrun_equals_single_process(tmp_path, data_root):
    common = ["-m", "bench", "run", "--suite", "refcoco", "--model", "center", "--data-root", str(data_root),
              "--batch-size", "2", "--no-progress", "--bootstrap", "50"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True)
    assert single.returncode == 0, single.stderr.decode()
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, timeout=300)
    assert multi.returncode == 0, multi.stderr.decode()[-3000:]
    assert (tmp_path / "two" / "predictions.jsonl").read_text() == (tmp_path / "one" / "predictions.jsonl").read_text()
    assert _metrics(tmp_path / "two") == _metrics(tmp_path / "one")
    assert not list((tmp_path / "two").glob("*.rank*.jsonl"))
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2


def test_replay_model_reproduces_a_runs_predictions(tmp_path, data_root):
    _, source = _run(tmp_path, data_root, "--model", "center", "--split", "val", name="source")
    _, replayed = _run(tmp_path, data_root, "--model", "replay", "--split", "val",
                       "--model-arg", f"predictions={source / 'predictions.jsonl'}", name="replayed")
    assert _metrics(replayed)["splits"] == _metrics(source)["splits"]
    first = (source / "predictions.jsonl").read_text().splitlines()
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(first[1:]) + "\n")  # the first sample has no prediction: it fails alone
    _, out = _run(tmp_path, data_root, "--model", "replay", "--split", "val", "--model-arg", f"predictions={partial}",
                  name="partial")
    assert _metrics(out)["splits"]["val"]["n_failed"] == 1
    huge = json.loads(first[0]) | {"segmentation": {"size": [40000, 40000], "counts": [1_600_000_000]}}
    partial.write_text("\n".join([json.dumps(huge), *first[1:]]) + "\n")  # a valid RLE: 1.6 GB if decoded
    tracemalloc.start()
    _, out = _run(tmp_path, data_root, "--model", "replay", "--split", "val", "--model-arg", f"predictions={partial}",
                  name="huge")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20  # refused from the declared size, never decoded
    failed = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "failed" for r in failed) == 1 and "mask size (40000, 40000)" in str(failed)


def test_missing_checkpoint_is_a_clear_error(tmp_path, data_root, capsys):
    code, _ = _run(tmp_path, data_root, "--model", "genmask", "--checkpoint", str(tmp_path / "no-such-checkpoint"))
    err = capsys.readouterr().err
    assert code == 2 and "cannot build model 'genmask'" in err and "no-such-checkpoint" in err


class RightHalfModel(SegModel):
    """An unregistered model object: the right half of every image."""

    name = "right-half"

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        masks = []
        for x in batch:
            mask = np.zeros(x.image.shape[:2], dtype=bool)
            mask[:, x.image.shape[1] // 2 :] = True
            masks.append(mask)
        return masks


@pytest.mark.parametrize("workers", [0, 2])
def test_runner_takes_a_model_object(tmp_path, data_root, workers):
    spec = RunSpec(suites=["refcoco"], splits=["val"], data_root=str(data_root), out=str(tmp_path / "obj"),
                   progress=False, workers=workers, protocol=Protocol(bootstrap=0))
    results = Runner(spec, model=RightHalfModel()).run()
    run = json.loads((tmp_path / "obj" / "run.json").read_text())
    assert run["model"] == "right-half" and run["status"] == "complete"
    records = [json.loads(x) for x in (tmp_path / "obj" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" and r["area"] > 0 for r in records)
    assert results["refcoco"]["splits"]["val"]["n"] == len(records)
    reference = tmp_path / "reference"  # the same run read in this process: the same bytes
    Runner(dataclasses.replace(spec, out=str(reference), workers=0), model=RightHalfModel()).run()
    assert (reference / "predictions.jsonl").read_bytes() == (tmp_path / "obj" / "predictions.jsonl").read_bytes()


def test_a_target_that_cannot_be_rasterised_fails_only_its_sample(tmp_path, refer_dataset):
    root = refer_dataset(tmp_path / "data", {1: (64, 64), 2: (64, 64)},
                         [(1, 1, "val", [_square(4, 4, 20)], [(1, "thing 1")]),
                          (2, 2, "val", encode_rle(np.ones((10, 10), bool)), [(2, "thing 2")])])  # 10x10 on 64x64
    code, out = _run(tmp_path, root, "--model", "oracle", "--split", "val")
    assert code == 0
    records = {r["sample_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert records["1"]["status"] == "ok" and records["1"]["iou"] == 1.0
    assert records["2"]["status"] == "failed" and records["2"]["error"].startswith("target:")
    assert "(10, 10)" in records["2"]["error"]
    assert _metrics(out)["splits"]["val"]["n_failed"] == 1


def test_unknown_split_suggests_a_name_and_exits_2(tmp_path, data_root, capsys):
    code, out = _run(tmp_path, data_root, "--model", "empty", "--split", "tset")
    assert code == 2 and "Did you mean 'test" in capsys.readouterr().err
    assert not out.exists()  # refused input leaves no empty run directory behind
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("")
    code = main(["score", "--suite", "refcoco", "--split", "tset", "--predictions", str(predictions),
                 "--data-root", str(data_root), "--out", str(tmp_path / "s")])
    assert code == 2 and "Did you mean 'test" in capsys.readouterr().err


def test_resume_needs_a_run_to_finish(tmp_path, data_root, capsys):
    code, out = _run(tmp_path, data_root, "--model", "empty", "--split", "val", "--resume")
    assert code == 2 and "does not exist, so there is no run to finish" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    code, _ = _run(tmp_path, data_root, "--model", "empty", "--split", "val", "--resume")
    assert code == 2 and "holds no run" in capsys.readouterr().err
    assert out.is_dir() and not any(out.iterdir())  # the user's own directory stays, untouched


def test_score_never_overwrites_a_run_without_overwrite(tmp_path, data_root, capsys):
    _, out = _run(tmp_path, data_root, "--model", "oracle", "--split", "val")
    before = (out / "predictions.jsonl").read_bytes()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = ["score", "--suite", "refcoco", "--split", "val", "--predictions", str(empty), "--data-root",
            str(data_root), "--out", str(out), "--bootstrap", "0"]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "predictions.jsonl").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert _metrics(out)["splits"]["val"]["n_failed"] == _metrics(out)["splits"]["val"]["n"]
