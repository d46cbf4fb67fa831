"""Training seeds in the report (bench.report.seed_rows, bench.ablate.seeds.seed_levels): the runs of one model
trained with several seeds are one row, the mean over seeds with an interval that counts their spread; a newer run
of the same seed supersedes the older one; runs without a recorded seed behave as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.ablate.seeds import seed_levels
from bench.metrics import Protocol, SampleScores
from bench.report import build_report
from tests.bench.report.test_compare import COST, PAGE, data, write_run  # noqa: F401 (data: a fixture)


def _scores(inters: list[int], unions: list[int]) -> SampleScores:
    records = [{"intersection": i, "union": u, "status": "ok"} for i, u in zip(inters, unions)]
    return SampleScores.from_records(records)


def test_a_seed_level_is_the_mean_of_the_seeds_and_its_interval_widens_with_their_spread():
    protocol = Protocol(bootstrap=300)
    unions = [10, 20, 30, 40, 50, 60]
    alike = [_scores([5, 10, 15, 20, 25, 30], unions)] * 3
    apart = [_scores([1, 2, 3, 4, 5, 6], unions), _scores([5, 10, 15, 20, 25, 30], unions),
             _scores([9, 18, 27, 36, 45, 54], unions)]
    same, spread = seed_levels(alike, protocol)["ciou"], seed_levels(apart, protocol)["ciou"]
    assert same.difference == pytest.approx(0.5) and spread.difference == pytest.approx(0.5)
    assert spread.per_seed == pytest.approx([0.1, 0.5, 0.9])
    assert spread.ci95[0] < 0.1 and spread.ci95[1] > 0.9  # t(2) x se of three seeds 0.4 apart: wider than the seeds
    assert same.ci95[1] - same.ci95[0] < 0.2  # identical seeds: only the samples' variance
    with pytest.raises(ValueError, match="same samples"):
        seed_levels([_scores([1], [2]), _scores([1, 1], [2, 2])], protocol)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, data):  # noqa: F811 (the fixture of test_compare)
    """Three seeds of `rival` (seed 1 made twice: the older run is superseded), a rival without a recorded seed
    and the reference GenMask, all at 5,000 training samples."""
    root = tmp_path_factory.mktemp("seeds") / "results"
    write_run(root, "ref", "genmask", "half", data, label="genmask (tiny, 1 step)", cost=COST | {"training_seed": 0})
    for name, kind, seed in (("r0", "good", 0), ("r1-old", "blob", 1), ("r2", "half", 2)):
        write_run(root, name, "rival", kind, data, cost=COST | {"training_seed": seed})
    write_run(root, "r1", "rival", "good", data, cost=COST | {"training_seed": 1})
    info = json.loads((root / "runs" / "r1" / "run.json").read_text())
    info["created"] = "2025-04-01T00:00:00+00:00"  # newer than r1-old
    (root / "runs" / "r1" / "run.json").write_text(json.dumps(info))
    write_run(root, "unseeded", "other-rival", "good", data, cost=COST)
    build_report(root)
    return root


def _row(text: str, name: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.startswith(f"| [{name}]")]
    assert len(lines) == 1, f"{name}: {lines}"
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def test_seeds_of_one_model_are_one_row_with_their_mean_and_spread(pooled):
    page = (pooled / PAGE).read_text()
    metrics = {name: json.loads((pooled / "runs" / name / "metrics.json").read_text())["splits"]["val"]["ciou"]
               for name in ("r0", "r1", "r2", "r1-old")}
    row = _row(page, "rival")
    mean = np.mean([metrics["r0"], metrics["r1"], metrics["r2"]])  # r1-old is superseded by r1
    assert row[1].startswith(f"{100 * mean:.1f} ")
    assert row[2] == "3" and row[3] == " / ".join(f"s{k} {100 * metrics[n]:.1f}" for k, n in enumerate(["r0", "r1", "r2"]))
    low, high = (float(x) for x in row[1].split("[")[1].split("]")[0].split(","))
    assert low < 100 * min(metrics["r0"], metrics["r2"]) < 100 * max(metrics["r0"], metrics["r2"]) < high
    assert "per seed: mean cIoU %" in page and "counts the seed-to-seed spread" in page
    assert _row(page, "other-rival")[2] == "1" and _row(page, "other-rival")[3] == ""  # no seed recorded: one run
    report = (pooled / "REPORT.md").read_text()
    assert _row(report, "rival")[-1] == "3" and "A model trained with several seeds is one row" in report
    assert "r1-old" in report.split("Superseded by a newer run")[1]  # the same seed made again: the newer counts


def test_per_run_tables_name_each_seed_and_the_gallery_shows_one_run_per_model(pooled):
    page = (pooled / PAGE).read_text()
    differences = page.split("minus the reference's")[1].split("\n\n## ")[0]
    for seed in (0, 1, 2):
        assert f"| rival · seed {seed} " in differences  # the seeds' rows tell themselves apart
    assert "| other-rival " in differences and "other-rival · seed" not in page  # no seed recorded: the plain name
    gallery = page.split("## Gallery")[1]
    header = next(line for line in gallery.splitlines() if line.startswith("| sample"))
    assert header.count("rival · seed") == 1 and "rival · seed 0 IoU %" in header  # the first seed stands for them
