"""REPORT.md as an index: every ablation claim with its verdict (claims.csv, adjusted verdict first, else the
ablation's report.md), partial runs marked in every table that shows them, portable provenance (run.json stores
paths inside the checkout relative to it; a copy of the repository regenerates the committed report byte for
byte), and the committed report's size and tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import build_report
from bench.report.claims import read_claims
from bench.rundir.checkout import CHECKOUT
from bench.rundir.layout import RunDir
from bench.rundir.record import RunRecord
from tests.bench.report.test_report import split_metrics, write_run

REPO = Path(__file__).resolve().parents[3]
OLD_SUMMARY = """# Ablation: steps

## Claims

| claim | paper | ours (points, 95% interval) | rule | verdict |
|---|---|---|---|---|
| One step suffices \\| mostly. | one step | ciou(2-steps) - ciou(1-step) = +6.2 [+3.8, +8.6] | below +1 | **disagrees** |

![plots/quality.png](plots/quality.png)
"""
NEW_SUMMARY = """# Ablation: recipe

## Claims

| claim | paper | ours (points, 95% interval) | rule | raw verdict | p | Holm p | verdict |
|---|---|---|---|---|---|---|---|
| EMA does not hurt. | – | ciou(ema) - ciou(default) = -3.1 [-3.6, -2.7] | above -1 | disagrees | 0.001 | 0.002 | **inconclusive** |
"""
CLAIMS_CSV = """ablation,claim,quantity,estimate,ci_low,ci_high,per_seed,margin,side,p_value,verdict,adjusted_p,adjusted_verdict
joint,Joint is at least as good.,ciou(joint) - ciou(seg),0.02,0.01,0.031,,0,above,0.001,agrees,0.2,inconclusive
joint,Joint 2:1 helps.,,-0.005,,,,0,above,,disagrees,,
"""


def ablation_folder(results: Path, name: str, summary: str | None = None, claims: str | None = None) -> Path:
    folder = results / "ablations" / name
    folder.mkdir(parents=True)
    if summary is not None:
        (folder / "report.md").write_text(summary, encoding="utf-8")
    if claims is not None:
        (folder / "claims.csv").write_text(claims, encoding="utf-8")
    return folder


def test_claims_come_from_claims_csv_first_then_the_summary(tmp_path: Path):
    joint = ablation_folder(tmp_path, "joint", OLD_SUMMARY, CLAIMS_CSV)  # both: claims.csv wins
    first, second = read_claims(joint, "report.md")
    assert first.claim == "Joint is at least as good." and first.verdict == "inconclusive"  # adjusted, not raw
    assert first.estimate == "ciou(joint) - ciou(seg) = +2.0 [+1.0, +3.1]"  # fractions as points
    assert (second.estimate, second.verdict) == ("-0.5", "disagrees")  # no interval, no adjusted verdict
    (steps,) = read_claims(ablation_folder(tmp_path, "steps", OLD_SUMMARY), "report.md")
    assert (steps.claim, steps.verdict) == ("One step suffices | mostly.", "disagrees")
    assert steps.estimate == "ciou(2-steps) - ciou(1-step) = +6.2 [+3.8, +8.6]"
    (recipe,) = read_claims(ablation_folder(tmp_path, "recipe", NEW_SUMMARY), "report.md")
    assert recipe.verdict == "inconclusive"  # the adjusted "verdict" column, not "raw verdict"
    assert read_claims(ablation_folder(tmp_path, "pca", "# Ablation: pca\n\nNo claims.\n"), "report.md") is None
    report = build_report(tmp_path).read_text(encoding="utf-8")
    claims = report[report.index("## Ablations"):].splitlines()
    rows = [line for line in claims if line.startswith("| [")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "[joint](ablations/joint/report.md)", "[joint](ablations/joint/report.md)",
        "[recipe](ablations/recipe/report.md)", "[steps](ablations/steps/report.md)"]
    assert "| One step suffices \\| mostly." in rows[3] and rows[0].rstrip("| ").endswith("inconclusive")
    assert "- [pca](ablations/pca/report.md): a measurement, no runs" in report  # linked though it states no claim


def test_a_partial_run_is_marked_in_every_table_that_shows_it(tmp_path: Path):
    metrics = {"synthref": {"val": split_metrics(0.5, 0.4, n=4), "testA": split_metrics(0.6, 0.5, n=4, failed=1)}}
    cost = {"train_samples_seen": 100, "parameters_total": 10, "parameters_trainable": 5}
    write_run(tmp_path / "runs" / "full", "genmask", metrics, "2025-01-01T00:00:00", status="complete",
              model_config={"cost": cost})
    write_run(tmp_path / "runs" / "part", "rival", {"synthref": {"val": split_metrics(0.7, 0.6, n=2)}},
              "2025-01-01T00:00:00", status="complete", spec={"limit": 2}, splits={"synthref": ["val", "testA"]},
              model_config={"cost": cost})
    report = build_report(tmp_path).read_text(encoding="utf-8")
    page = (tmp_path / "suites" / "synthref.md").read_text(encoding="utf-8")
    partial, failed = "⚠ partial: --limit 2; missing samples: testA", "⚠ 1 of 8 samples failed"
    for text, tables in ((report, 1), (page, 4)):  # headline; budget, differences, costs and details tables
        rows = [line for line in text.splitlines() if line.startswith("| ") and ("rival" in line or "genmask" in line)]
        named = [row for row in rows if "rival" in row]
        assert len(named) >= tables and all(partial in row.replace("\\", "") for row in named), named
        assert all(failed in row.replace("\\", "") for row in rows if "genmask" in row and "rival" not in row)
    assert "⚠ marks a row whose numbers are partial" in report and "⚠ marks a row" in page


def test_run_json_stores_paths_inside_the_checkout_relative_to_it(tmp_path: Path):
    inside, outside = f"{CHECKOUT}/genmask/checkpoints/tiny", str(tmp_path / "elsewhere")
    record = RunRecord(model="m", suites=["s"], splits={}, spec={"checkpoint": inside, "data_root": outside},
                       model_config={"a/b": [inside, "x"], "checkpoint": inside}, command=f"bench run {inside}")
    RunDir(tmp_path).write(record)
    stored = json.loads((tmp_path / "run.json").read_text())
    assert stored["spec"] == {"checkpoint": "genmask/checkpoints/tiny", "data_root": outside}
    assert stored["model_config"] == {"a/b": ["genmask/checkpoints/tiny", "x"], "checkpoint": "genmask/checkpoints/tiny"}
    assert stored["checkout_paths"] == ["model_config/a~1b/0", "model_config/checkpoint", "spec/checkpoint"]
    assert stored["command"] == record.command  # what the user typed stays as typed
    back = RunDir(tmp_path).read()  # absolute again below the reader's checkout, so --resume compares alike
    assert back.spec == record.spec and back.model_config == record.model_config
    assert str(CHECKOUT) not in json.dumps({key: value for key, value in stored.items() if key != "command"})


def test_the_committed_index_is_short_and_prints_no_table_twice():
    report = (REPO / "results" / "REPORT.md").read_text(encoding="utf-8")
    assert len(report.splitlines()) <= 300 and "### [runs/" not in report  # provenance lives on the runs pages
    pages = [REPO / "results" / name for name in json.loads((REPO / "results" / ".report-manifest.json")
                                                             .read_text())["files"] if name.endswith(".md")]
    assert REPO / "results" / "suites" / "synthref.md" in pages
    for page in pages:
        tables = re.findall(r"(?:^\|.*\n)+", page.read_text(encoding="utf-8"), flags=re.M)
        assert len(tables) == len(set(tables)), page


def _tracked_copy(target: Path) -> None:
    """The repository's files as a clone of the working tree holds them (tracked ones and those not yet added that git
    does not ignore) copied below `target`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.slow
def test_a_copy_of_the_repository_regenerates_the_committed_report_byte_for_byte(tmp_path: Path):
    from bench.synth.build import default_cache_dir

    clone = tmp_path / "some" / "other" / "clone"
    _tracked_copy(clone)
    manifest = json.loads((REPO / "results" / ".report-manifest.json").read_text())["files"]
    for name in manifest:  # regenerated, not copied
        (clone / "results" / name).unlink(missing_ok=True)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "BENCH_SYNTH_CACHE": str(default_cache_dir()),
           "PYTHONPATH": str(clone)}
    made = subprocess.run([sys.executable, "-m", "bench", "report", "--results", "results"], cwd=clone, env=env,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    differing = [name for name in [*manifest, ".report-manifest.json"]
                 if (clone / "results" / name).read_bytes() != (REPO / "results" / name).read_bytes()]
    assert not differing
