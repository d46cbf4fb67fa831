"""bench ablate: ablation files with strict keys, cells keyed and reused, --only/--collect/--resume, the steps and
pca ablations at the smoke budget, verdicts, and the report's links to ablation summaries."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.ablate.cells import Cell
from bench.ablate.load import ablation_names, load_ablation
from bench.ablate.spec import EvalConfig
from bench.ablate.verdicts import judge
from bench.cli import main
from bench.errors import BenchError
from bench.report import build_report

REPO = Path(__file__).resolve().parents[3]

BASIC = """
question = "q"
reference = "a"
[base]
model = "center"
[variants.a]
model_args = { area = 0.25 }
[variants.b]
model_args = { area = 0.5 }
[budgets.smoke]
limit = 3
"""


def _write(tmp_path: Path, text: str, name: str = "toy") -> Path:
    (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path


def test_a_variant_is_the_base_with_its_overrides_merged(tmp_path):
    ablation = load_ablation("toy", _write(tmp_path, BASIC))
    config = ablation.resolve("b", "smoke", {"batch_size": 2})
    assert config == EvalConfig(model="center", model_args={"area": "0.5"}, limit=3, batch_size=2)
    assert ablation.variant_names("smoke") == ["a", "b"]


@pytest.mark.parametrize("change, message", [
    ("[variants.c]\nmodel_argz = { area = 1 }", "variant c: unknown key 'model_argz'. Did you mean 'model_args'"),
    ('[budgets.smal]\nlimit = 3', "unknown budget 'smal'. Did you mean 'small'"),
    ('[budgets.small]\nvariants = ["z"]', "unknown variant 'z'"),
    ('[[claims]]\ntext = "t"\nrule = "r"\nmargn = 1', "unknown key 'margn'. Did you mean 'margin'"),
])
def test_an_unknown_key_is_an_error_with_a_suggestion(tmp_path, change, message):
    with pytest.raises(BenchError, match=message):
        load_ablation("toy", _write(tmp_path, BASIC + change))


def test_unknown_ablation_and_unknown_set_key_exit_2_with_suggestions(capsys):
    assert main(["ablate", "stepz"]) == 2
    assert "Did you mean 'steps'?" in capsys.readouterr().err
    assert main(["ablate", "steps", "--set", "limt=2", "--list-cells"]) == 2
    assert "the command line: unknown key 'limt'. Did you mean 'limit'" in capsys.readouterr().err


def test_the_shipped_ablations_load_and_bench_list_names_them(capsys):
    assert {"steps", "pca"} <= set(ablation_names())
    for name in ablation_names():
        load_ablation(name)
    assert main(["list"]) == 0
    assert {"steps", "pca"} <= set(capsys.readouterr().out.split())


def test_a_cell_key_changes_with_what_decides_its_numbers_and_nothing_else():
    base = Cell("steps", "1-step", 0, "small", EvalConfig(model_args={"steps": "1"}), {"synthref": "f"})
    same = Cell("steps", "1-step", 0, "small", EvalConfig(model_args={"steps": "1"}), {"synthref": "f"})
    assert base.key() == same.key()
    others = [Cell("steps", "1-step", 1, "small", base.config, base.data),
              Cell("steps", "1-step", 0, "smoke", base.config, base.data),
              Cell("steps", "1-step", 0, "small", EvalConfig(model_args={"steps": "2"}), base.data),
              Cell("steps", "1-step", 0, "small", base.config, {"synthref": "g"})]
    assert len({base.key(), *(cell.key() for cell in others)}) == 5
    assert base.directory(Path("out")) == Path("out/runs") / f"1-step-s0-{base.key()}"


@pytest.mark.parametrize("interval, side, verdict", [
    ([0.02, 0.05], "above", "agrees"), ([-0.05, -0.01], "above", "disagrees"), ([-0.01, 0.02], "above", "inconclusive"),
    ([-0.03, 0.005], "below", "agrees"), ([0.02, 0.04], "below", "disagrees"), (None, "below", "inconclusive"),
])
def test_verdicts_follow_the_interval_against_the_margin(interval, side, verdict):
    assert judge(0.0, interval, 0.01 if side == "below" else 0.0, side) == verdict


def _table(path: Path, drop: tuple[str, ...] = ("latency_ms",)) -> list[dict[str, str]]:
    """table.csv rows without the columns that time the machine (latency differs from run to run)."""
    with open(path / "table.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_steps_smoke_writes_table_report_and_run_directories_and_reuses_them(tmp_path, capsys):
    out = tmp_path / "steps"
    assert main(["ablate", "steps", "--budget", "smoke", "--out", str(out)]) == 0
    rows = _table(out)
    assert [row["variant"] for row in rows] == ["1-step", "2-steps", "4-steps"]
    assert [row["x"] for row in rows] == ["1", "2", "4"] and all(row["n"] == "6" for row in rows)
    assert rows[0]["d_ciou"] == "" and rows[1]["d_ciou"] != ""
    for row in rows:
        run = json.loads((out / row["runs"] / "run.json").read_text())
        assert (run["kind"], run["group"], run["label"], run["status"]) == ("ablation", "steps", row["variant"], "complete")
        assert run["spec"]["model_args"] == {"steps": row["x"]}
        assert run["command"] == (f"python -m bench ablate steps --budget smoke --only {row['variant']}:0 "
                                  f"--out {out.as_posix()}")
    report = (out / "report.md").read_text()
    assert "One step suffices" in report and any(f"**{v}**" in report for v in ("agrees", "disagrees", "inconclusive",
                                                                              "no verdict"))
    assert "Regime check: the reference `1-step` minus the context baseline `every-object`" in report
    assert (out / "plots" / "quality.png").read_bytes()[:4] == b"\x89PNG"
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    capsys.readouterr()

    assert main(["ablate", "steps", "--budget", "smoke", "--out", str(out)]) == 0  # everything reused
    assert capsys.readouterr().err.count("reused") == 3
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_only_makes_one_cell_and_collect_names_the_missing_ones(tmp_path, capsys):
    out = tmp_path / "steps"
    assert main(["ablate", "steps", "--budget", "smoke", "--list-cells"]) == 0
    assert capsys.readouterr().out.split() == ["1-step:0", "2-steps:0", "4-steps:0"]
    assert main(["ablate", "steps", "--budget", "smoke", "--out", str(out), "--only", "2-steps:0"]) == 0
    assert [p.name.split("-s0-")[0] for p in (out / "runs").iterdir()] == ["2-steps"]
    assert not (out / "table.csv").exists()
    capsys.readouterr()
    assert main(["ablate", "steps", "--budget", "smoke", "--out", str(out), "--collect"]) == 1
    err = capsys.readouterr().err
    assert "missing: 1-step:0" in err and "missing: 4-steps:0" in err and "missing: 2-steps" not in err
    assert [row["variant"] for row in _table(out)] == ["2-steps"]
    assert "## Missing cells" in (out / "report.md").read_text()
    assert main(["ablate", "steps", "--budget", "smoke", "--out", str(out), "--only", "8-steps"]) == 2


@pytest.mark.slow
def test_a_killed_ablation_is_finished_by_resume_with_the_same_table(tmp_path):
    common = ["ablate", "steps", "--budget", "smoke", "--set", "batch_size=1"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "bench", *common, "--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    partial = []
    while time.time() < deadline and not partial:
        partial = [p for p in killed.glob("runs/2-steps-*/predictions.jsonl") if len(p.read_text().splitlines()) >= 2]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial and not (killed / "table.csv").exists()

    assert main([*common, "--out", str(killed)]) == 2  # a half-done cell is not silently redone
    assert main([*common, "--out", str(killed), "--resume"]) == 0
    assert _table(killed) == _table(tmp_path / "whole")
    for cell in (tmp_path / "whole" / "runs").iterdir():  # complete cells keep their predictions gzipped
        assert not (killed / "runs" / cell.name / "predictions.jsonl").exists()
        resumed = gzip.decompress((killed / "runs" / cell.name / "predictions.jsonl.gz").read_bytes())
        assert resumed == gzip.decompress((cell / "predictions.jsonl.gz").read_bytes())


@pytest.mark.slow
def test_pca_smoke_measures_probes_and_pc1_and_reuses_the_measurement(tmp_path, capsys):
    out = tmp_path / "pca"
    assert main(["ablate", "pca", "--budget", "smoke", "--out", str(out)]) == 0
    [cell] = list((out / "runs").iterdir())
    result = json.loads((cell / "measurements.json").read_text())
    assert [entry["t"] for entry in result["probes"]["mask"]] == [0.0, 0.9, 1.0]
    assert 0 < result["explained_variance"]["mask"][0] <= 1
    clean, noise = result["probes"]["mask"][0], result["probes"]["mask"][-1]
    assert clean["giou"] > 0.5 > noise["giou"]  # at t = 0 the mask is readable, from pure noise it is not
    report = (out / "report.md").read_text()
    assert report.count("**agrees**") + report.count("**disagrees**") + report.count("**inconclusive**") == 3
    pngs = {path.name: path.read_bytes() for path in (out / "plots").glob("*.png")}
    assert set(pngs) == {f"{cell.name.rsplit('-', 1)[0]}-probes.png", f"{cell.name.rsplit('-', 1)[0]}-pc1.png"}
    capsys.readouterr()
    assert main(["ablate", "pca", "--budget", "smoke", "--out", str(out)]) == 0
    assert "reused vae:0" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in (out / "plots").glob("*.png")} == pngs  # same bytes


def test_the_report_links_an_ablation_summary_that_has_no_runs(tmp_path):
    (tmp_path / "ablations" / "pca").mkdir(parents=True)
    (tmp_path / "ablations" / "pca" / "report.md").write_text("# Ablation: pca\n")
    text = build_report(tmp_path).read_text()
    assert "## Ablations" in text and "[pca](ablations/pca/report.md): a measurement, no runs" in text


def test_a_claim_comparing_an_unknown_variant_is_an_error(tmp_path):
    text = BASIC + """[[claims]]
text = "a beats b"
rule = "first-above-second"
compare = ["a", "c"]
"""
    (tmp_path / "toy.toml").write_text(text)
    with pytest.raises(BenchError, match="unknown variant 'c'"):
        load_ablation("toy", tmp_path)


def test_all_runs_the_method_ablations_and_leaves_the_recipe_searches_out(tmp_path, capsys):
    searches, method = ablation_names(tuning=True), ablation_names(tuning=False)
    assert {"grounding", "lr-unet", "lr-genmask-shared-stream"} <= set(searches)
    assert {"steps", "pca", "timeshift"} <= set(method) and not set(searches) & set(method)
    assert sorted(searches + method) == ablation_names()
    assert main(["ablate", "all", "--budget", "small", "--list-cells"]) == 0
    listed = capsys.readouterr().out
    assert "1-step:0" in listed and "near-1:0" not in listed and "lr-2e-3:0" not in listed
    assert main(["ablate", "lr-unet", "--budget", "small", "--list-cells"]) == 0  # by name it runs
    assert capsys.readouterr().out.split() == ["lr-6.7e-4:0", "lr-2e-3:0", "lr-6e-3:0"]
    with pytest.raises(BenchError, match=r"toy.toml: tuning must be true or false, got 'yes'"):
        load_ablation("toy", _write(tmp_path, 'tuning = "yes"\n' + BASIC))
