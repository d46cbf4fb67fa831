"""A suite page's fair comparison (bench.report.budget, bench.report.compare, bench.report.gallery): the models at
equal training samples first, other budgets after, costs with "–" and a reason for what is missing, paired
differences to the reference that equal a by-hand computation, and a gallery whose selection is seeded and
deterministic, honours the user's ids and refuses unknown ones."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchError
from bench.loading import read_sample
from bench.metrics import Protocol, score_sample
from bench.report import build_report
from bench.report.compare import CompareOptions
from bench.report.gallery import AGREE_SPREAD, select_samples
from bench.suites import SUITES

PROTOCOL = {"empty_union_iou": 1.0, "ignore_value": 255, "thresholds": [0.5, 0.9], "bootstrap": 200, "ci_seed": 0}
SUITE, SPLIT, N = "synthref", "val", 10
PAGE = f"suites/{SUITE}.md"


@pytest.fixture(scope="module")
def data() -> list[tuple[str, np.ndarray]]:
    """(sample id, ground truth) of the first N synthref val samples, read through the suite's loader."""
    suite = SUITES.get(SUITE)(progress=False)
    loaded = []
    for sample in suite.samples(SPLIT)[:N]:
        _, target, error = read_sample(sample)
        assert error is None
        loaded.append((sample.sample_id, target))
    return loaded


def prediction(kind: str, index: int, target: np.ndarray) -> np.ndarray:
    """Masks of three made-up models: 'good' is right on most samples, 'half' on every other, 'blob' never."""
    truth = target == 1
    if kind == "good":
        return truth if index % 5 else np.zeros_like(truth)
    if kind == "half":
        return truth if index % 2 == 0 else np.roll(truth, 9, axis=1)
    blob = np.zeros_like(truth)
    blob[:16, :16] = True
    return blob


def write_run(root: Path, name: str, model: str, kind: str | None, data, label: str | None = None,
              cost: dict | None = None, timings: dict | None = None, reverse: bool = False) -> list[dict]:
    """A run directory of one suite as the runner writes it; returns its records (in sample order)."""
    run = root / "runs" / name
    run.mkdir(parents=True)
    protocol = Protocol(bootstrap=PROTOCOL["bootstrap"], thresholds=(0.5, 0.9))
    records = [score_sample(sid, SPLIT, None if kind is None else prediction(kind, i, target), None, target,
                            protocol) for i, (sid, target) in enumerate(data)]
    config = {"name": model} | ({"cost": cost} if cost is not None else {})
    info = {"suites": [SUITE], "model": model, "model_config": config, "protocol": PROTOCOL, "seed": 0,
            "created": "2025-03-01T00:00:00+00:00", "device": "cpu", "status": "complete", "schema": 2,
            "kind": "leaderboard", "spec": {"batch_size": 4, "suite_args": {}, "data_root": None},
            "timings": timings or {}, "dataset_fingerprints": {SUITE: "fp"}}
    if label:
        info["label"] = label
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    from bench.metrics import score_records

    metrics = score_records(records, protocol)
    (run / "metrics.json").write_text(json.dumps({"suite": SUITE, "model": model, "splits": {SPLIT: metrics}}))
    lines = reversed(records) if reverse else records  # pairing goes by sample id, not by line order
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return records


COST = {"parameters_total": 1_234_567, "parameters_trainable": 1000, "train_samples_seen": 5000,
        "train_wall_seconds": 7200.0, "train_flops": 3.2e15}


@pytest.fixture(scope="module")
def results(tmp_path_factory, data) -> tuple[Path, dict[str, list[dict]]]:
    root = tmp_path_factory.mktemp("compare") / "results"
    records = {
        "ref": write_run(root, "ref", "genmask", "half", data, label="genmask (tiny, 1 step)",
                         cost=COST | {"note": "DiT stage only"}, timings={"model_s": 2.0, "samples": N}),
        "good": write_run(root, "good", "rival", "good", data, cost=COST | {"train_flops": None,
                                                                             "parameters_trainable": None},
                          timings={"model_s": 0.5, "samples": N}, reverse=True),
        "blob": write_run(root, "blob", "old-rival", "blob", data),  # no cost record, no timings
        "center": write_run(root, "center", "center", None, data, timings={"model_s": 0.0, "samples": N}),
    }
    return root, records


@pytest.fixture(scope="module")
def report(results) -> str:
    """The suite's page."""
    build_report(results[0])
    return (results[0] / PAGE).read_text(encoding="utf-8")


def table_after(report: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first table after `heading`, by their first cell (header row under 'header')."""
    lines = report[report.index(heading + "\n"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for index, line in enumerate(lines[start:]):
        if not line.startswith("|"):
            break
        if not set(line) <= set("|-: "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows["header" if index == 0 else cells[0]] = cells
    return rows


def footnote(report: str, heading: str, mark: str) -> str:
    section = report[report.index(heading + "\n"):]
    return next(line for line in section.splitlines() if line.startswith(mark + " ")).removeprefix(mark + " ").strip()


def test_costs_show_recorded_values_and_say_why_others_are_missing(report: str):
    heading = "## Parameters and latency"
    rows = table_after(report, heading)
    assert rows["header"] == ["model", "parameters (total / trainable)", "latency ms/sample", "latency measured at"]
    assert rows["genmask (tiny, 1 step)"][1:] == ["1.23 M / 1.0 k", "200.00", "batch 4, cpu"]
    rival = rows["rival"]
    assert rival[1].startswith("1.23 M / – [") and rival[2] == "50.00"
    assert footnote(report, heading, rival[1].split()[-1]) == "not recorded by its training run"
    blob = rows["old-rival"]
    assert blob[2].startswith("– [") and blob[3] == ""  # no latency, no setting
    assert 'has no "cost"' in footnote(report, heading, blob[1].split()[-1])
    assert "no model time" in footnote(report, heading, blob[2].split()[-1])
    center = rows[f"center ⚠ {N} of {N} samples failed"]  # its run predicted nothing: marked in every table
    assert footnote(report, heading, center[1].split()[-1]) == "nothing trained: a fixed rule (trivial baseline)"
    assert center[2] == "< 0.01"
    assert report.count("indicative only") == 1  # the shared machine's caveat once, not per row


def test_equal_budget_leads_and_other_budgets_follow_labelled(report: str):
    assert report.index("## At equal training samples: 5,000") < report.index("## Other training budgets") \
        < report.index("## Paired differences to the reference")
    equal = table_after(report, "## At equal training samples: 5,000")
    assert equal["header"][-4:] == ["training seeds", "training FLOPs (est.)", "training wall time", "sample stream"]
    names = [key for key in equal if key != "header"]
    assert [name.split("](")[0].lstrip("[") for name in names] == ["rival", "genmask (tiny, 1 step)"]  # by score
    reference = equal[names[1]]
    assert footnote(report, "## Other training budgets", reference[0].split()[-1]) == "DiT stage only"  # its note
    assert reference[-4:-1] == ["1", "3.20e15", "2.00 h"] and reference[-1].startswith("– [")
    assert equal[names[0]][-3].startswith("– [")  # the rival recorded no FLOPs
    other = table_after(report, "## Other training budgets")
    assert other["header"][1] == "training samples"
    blob = other["[old-rival](../runs/blob/)"]
    assert blob[1].startswith("– [") and blob[-4] == "1"  # no budget recorded; one training seed
    assert "center" not in report.partition("## Paired differences")[0]  # baselines are not trained models


def _by_hand(records: list[dict], reference: list[dict]) -> tuple[float, float]:
    """cIoU and gIoU differences in points, computed directly from the records."""
    ref = {r["sample_id"]: r for r in reference}
    own = {r["sample_id"]: r for r in records}
    assert own.keys() == ref.keys()

    def ciou(rs):
        return sum(r["intersection"] for r in rs) / sum(r["union"] for r in rs)

    def giou(rs):
        return float(np.mean([r["iou"] for r in rs]))

    return (100 * (ciou(own.values()) - ciou(ref.values())), 100 * (giou(own.values()) - giou(ref.values())))


def test_paired_differences_equal_a_direct_computation(results, report: str):
    root, records = results
    table = list(csv.DictReader(io.StringIO((root / "tables" / f"{SUITE}_vs_reference.csv").read_text())))
    assert {row["model"] for row in table} == {"rival", "old-rival", "center"}  # trivial baselines included
    for row in table:
        name = {"rival": "good", "old-rival": "blob", "center": "center"}[row["model"]]
        d_ciou, d_giou = _by_hand(records[name], records["ref"])
        assert row["reference"] == "genmask (tiny, 1 step)" and row["split"] == SPLIT and row["n"] == str(N)
        assert float(row["d_ciou"]) == pytest.approx(d_ciou, abs=0.006)
        assert float(row["d_giou"]) == pytest.approx(d_giou, abs=0.006)
        for metric in ("ciou", "giou"):
            low, high = float(row[f"d_{metric}_lo"]), float(row[f"d_{metric}_hi"])
            assert low <= float(row[f"d_{metric}"]) <= high
            assert row[f"d_{metric}_significant"] == str(low > 0 or high < 0).lower()
    rows = table_after(report, "## Paired differences to the reference")
    d_ciou, d_giou = _by_hand(records["good"], records["ref"])
    assert rows["rival"][1].replace("**", "").startswith(f"{d_ciou:+.1f} [")
    assert f"/ {d_giou:+.1f}".replace("+", "") in rows["rival"][1].replace("**", "").replace("+", "")
    assert list(rows)[-1] == f"center ⚠ {N} of {N} samples failed (trivial baseline)"  # baselines after models


def test_reference_option(results, tmp_path: Path):
    root = results[0]
    copy = tmp_path / "results"
    import shutil

    shutil.copytree(root, copy)
    build_report(copy, CompareOptions(reference="rival"))
    text = (copy / PAGE).read_text(encoding="utf-8")
    rows = table_after(text, "## Paired differences to the reference")
    assert "genmask (tiny, 1 step)" in rows and "rival" not in rows
    assert "[rival](../runs/good/)" in text
    with pytest.raises(BenchError, match="--reference 'nobody' names no measured leaderboard run"):
        build_report(copy, CompareOptions(reference="nobody"))


def test_selection_is_seeded_and_picks_disagreement_then_agreement():
    rng = np.random.default_rng(5)
    keys = [("val", str(i)) for i in range(40)]
    ious = [{key: float(v) for key, v in zip(keys, rng.random(40), strict=True)} for _ in range(3)]
    for key in keys[:10]:  # ten samples where the models agree exactly
        for model in ious:
            model[key] = 0.5
    first = select_samples("synthref", ious)
    assert first == select_samples("synthref", [dict(reversed(m.items())) for m in ious])  # order-free
    assert select_samples("synthreason", ious) != first  # seeded per suite
    spreads = {key: max(m[key] for m in ious) - min(m[key] for m in ious) for key in keys}
    disagree = [pick for pick in first if pick.reason == "disagree"]
    agree = [pick for pick in first if pick.reason == "agree"]
    assert len(disagree) == 3 and len(agree) == 3
    assert sorted(pick.spread for pick in disagree) == sorted(spreads.values())[-3:]
    assert all(pick.spread <= AGREE_SPREAD for pick in agree)
    only_common = select_samples("synthref", [ious[0], {keys[0]: 1.0, keys[1]: 0.0}])
    assert {(p.split, p.sample_id) for p in only_common} <= {keys[0], keys[1]}


def test_gallery_is_deterministic_and_embedded(results, report: str):
    root = results[0]
    path = root / "plots" / "gallery" / f"{SUITE}.png"
    assert f"![{SUITE} gallery](../plots/gallery/{SUITE}.png)" in report
    first = path.read_bytes()
    assert first.startswith(b"\x89PNG") and len(first) < 150_000
    rows = table_after(report, "## Gallery")
    assert rows["header"][3:] == ["genmask (tiny, 1 step) IoU %", "old-rival IoU %", "rival IoU %"]  # no trivial
    assert len(rows) == 1 + 6
    build_report(root)
    assert path.read_bytes() == first


def test_gallery_honours_user_ids_and_refuses_unknown_ones(results, data, tmp_path: Path):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(results[0], copy)
    wanted = [data[7][0], data[2][0]]
    build_report(copy, CompareOptions(gallery=tuple(f"{SUITE}/{SPLIT}/{sid}" for sid in wanted)))
    rows = table_after((copy / PAGE).read_text(encoding="utf-8"), "## Gallery")
    assert [key for key in rows if key != "header"] == [f"{SPLIT}/{sid}" for sid in wanted]
    assert all(row[2].startswith("requested") for key, row in rows.items() if key != "header")
    for bad, message in ((f"{SUITE}/{SPLIT}/no-such-id", "no model shown predicted a sample 'no-such-id'"),
                         (f"{SUITE}/testZ/1", "no predictions of split 'testZ'"),
                         ("refcoco/val/1", "no measured leaderboard run of suite 'refcoco'"),
                         (f"{SUITE}-{SPLIT}", "expected SUITE/SPLIT/SAMPLE_ID")):
        with pytest.raises(BenchError, match=message):
            build_report(copy, CompareOptions(gallery=(bad,)))


def test_cli_report_options_exit_2_on_unknown_gallery_id(results, tmp_path: Path, capsys):
    import shutil

    from bench.cli import main

    copy = tmp_path / "results"
    shutil.copytree(results[0], copy)
    assert main(["report", "--results", str(copy), "--gallery", f"{SUITE}/{SPLIT}/nope"]) == 2
    assert "no model shown predicted a sample 'nope'" in capsys.readouterr().err


def test_genmask_adapter_records_its_cost():
    from genmask.adapter import SHIPPED_CHECKPOINT, GenMaskSegModel

    model = GenMaskSegModel()
    cost = model.config()["cost"]
    metrics = json.loads((SHIPPED_CHECKPOINT / "metrics.json").read_text())
    assert cost["parameters_total"] == sum(p.numel() for p in model.model.parameters())
    assert cost["parameters_trainable"] == cost["parameters_total"] - sum(p.numel() for p in model.model.vae.parameters())
    assert cost["train_wall_seconds"] == metrics["wall_seconds"] and cost["train_flops"] is None
    assert "VAE stage" in cost["note"] and "not included" in cost["note"]
