"""The embedded default end to end: synthetic suites through the real loaders, run, score, report, list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main

SPLITS = {"synthref": ["val", "testA", "testB"], "synthreason": ["val", "test"]}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """oracle and empty on both synthetic suites (first 40 samples of each split), plus the report."""
    root = tmp_path_factory.mktemp("results")
    for model in ("oracle", "empty"):
        code = main(["run", "--suite", "synthref", "synthreason", "--model", model, "--limit", "40", "--no-progress",
                     "--bootstrap", "100", "--out", str(root / "runs" / model)])
        assert code == 0
    assert main(["report", "--results", str(root)]) == 0
    return root


def _metrics(run: Path, suite: str) -> dict:
    return json.loads((run / f"metrics.{suite}.json").read_text())


@pytest.mark.parametrize("suite", sorted(SPLITS))
def test_oracle_is_perfect_and_empty_scores_zero_on_every_split(results, suite):
    oracle = _metrics(results / "runs" / "oracle", suite)["splits"]
    empty = _metrics(results / "runs" / "empty", suite)["splits"]
    assert sorted(oracle) == sorted(SPLITS[suite])
    for split in SPLITS[suite]:
        assert oracle[split]["n"] == 40 and oracle[split]["n_failed"] == 0
        assert oracle[split]["ciou"] == 1.0 and oracle[split]["giou"] == 1.0
        assert empty[split]["ciou"] == 0.0 and empty[split]["giou"] == 0.0


def test_run_json_records_protocol_and_provenance(results):
    run = json.loads((results / "runs" / "oracle" / "run.json").read_text())
    assert run["protocol"]["empty_union_iou"] == 1.0 and run["label"] is None
    assert run["protocol"]["synthreason"]["texts"] == "first"
    assert set(run["dataset_fingerprints"]) == {"synthref", "synthreason"}
    assert run["versions"]["numpy"] and run["git_commit"]
    assert run["command"].startswith("python -m bench run --suite synthref synthreason --model oracle")
    assert run["timings"]["samples"] == 40 * 5


@pytest.mark.filterwarnings("ignore:.* predictions in .* were ignored")  # the run covers other splits too
def test_score_reproduces_the_runs_metrics(results, tmp_path):
    run = results / "runs" / "oracle"
    for suite, splits in SPLITS.items():
        for split in splits:
            out = tmp_path / f"{suite}-{split}"
            assert main(["score", "--suite", suite, "--split", split, "--predictions",
                         str(run / f"predictions.{suite}.jsonl"), "--out", str(out), "--bootstrap", "100"]) == 0
            scored = json.loads((out / "metrics.json").read_text())["splits"][split]
            n = scored["n"]  # score covers the whole split; the run only its first 40 samples
            assert n >= 40 and scored["n_failed"] == n - 40


def test_report_links_runs_and_is_byte_identical_when_rebuilt(results):
    report = (results / "REPORT.md").read_text()
    assert "runs/oracle" in report and "synthref" in report and "(reported)" in report
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert main(["report", "--results", str(results)]) == 0
    after = {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert before == after


def test_list_shows_suites_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("refcoco", "refcoco+", "refcocog", "reasonseg", "synthref", "synthreason", "oracle", "genmask"):
        assert name in out
