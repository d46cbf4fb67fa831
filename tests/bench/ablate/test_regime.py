"""The regime check: verdicts only where the reference is clearly above the context baseline (every-object)."""

from __future__ import annotations

import csv
import functools

from bench.ablate import driver
from bench.ablate.load import load_ablation
from bench.cli import main

TOY = """
question = "q"
reference = "a"
[base]
model = "{reference}"
suites = ["synthref"]
splits = ["val"]
limit = 4
bootstrap = 100
[variants.a]
[variants.b]
model = "center"
[budgets.smoke]
[[claims]]
text = "a beats b"
rule = "first-above-second"
compare = ["a", "b"]
"""


def run_toy(tmp_path, monkeypatch, reference: str) -> tuple[str, list[dict]]:
    defs = tmp_path / f"defs-{reference}"
    defs.mkdir()
    (defs / "toy.toml").write_text(TOY.format(reference=reference))
    monkeypatch.setattr(driver, "load_ablation", functools.partial(load_ablation, directory=defs))
    out = tmp_path / f"out-{reference}"
    assert main(["ablate", "toy", "--budget", "smoke", "--out", str(out)]) == 0
    with open(out / "claims.csv", newline="") as handle:
        return (out / "report.md").read_text(), list(csv.DictReader(handle))


def test_a_reference_above_every_object_gets_verdicts_one_at_its_level_does_not(tmp_path, monkeypatch) -> None:
    report, claims = run_toy(tmp_path, monkeypatch, "oracle")
    assert "Regime check: the reference `a` minus the context baseline `every-object`" in report
    assert "the question can be asked" in report and claims[0]["adjusted_verdict"] == "agrees"
    report, claims = run_toy(tmp_path, monkeypatch, "empty")
    assert "has not learned enough for this question" in report
    assert claims[0]["adjusted_verdict"] == "no verdict" and claims[0]["verdict"] in ("agrees", "disagrees", "inconclusive")
    assert list((tmp_path / "out-empty" / "runs").glob("context-every-object-s0-*/run.json"))
