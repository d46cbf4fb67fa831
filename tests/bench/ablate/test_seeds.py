"""Seed-level differences: coverage when seed variance dominates (against the pooled sample bootstrap), the
one-seed fallback, p-values consistent with the interval, and Holm's step-down."""

from __future__ import annotations

import numpy as np
import pytest

from bench.ablate.seeds import METHOD_ONE_SEED, seed_differences
from bench.metrics import Protocol, SampleScores, paired_bootstrap

SEEDS, SAMPLES, TRUE_DIFFERENCE = 3, 120, 0.02


def simulated_seed(rng: np.random.Generator, base: np.ndarray, unions: np.ndarray, shift: float) -> SampleScores:
    """One trained model: every sample's IoU is the shared base plus this training seed's shift plus noise."""
    iou = np.clip(base + shift + rng.normal(0, 0.02, len(base)), 0, 1)
    return SampleScores(np.round(iou * unions), unions, np.zeros(len(base), bool))


def experiment(rng: np.random.Generator) -> list[tuple[SampleScores, SampleScores]]:
    """3 seeds of two variants on one test set; the seed effect (sd 0.03) dwarfs the sample noise."""
    unions = rng.integers(200, 400, SAMPLES).astype(float)
    base = rng.uniform(0.3, 0.6, SAMPLES)
    return [(simulated_seed(rng, base, unions, TRUE_DIFFERENCE + rng.normal(0, 0.03)),
             simulated_seed(rng, base, unions, rng.normal(0, 0.03))) for _ in range(SEEDS)]


def pooled(pairs: list[tuple[SampleScores, SampleScores]]) -> tuple[SampleScores, SampleScores]:
    """What the old tables did: every seed's samples in one list, as if independent draws."""
    def join(parts):
        return SampleScores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("inters", "unions", "failed")))
    return join([a for a, _ in pairs]), join([b for _, b in pairs])


def test_the_seed_interval_covers_the_true_difference_where_the_pooled_bootstrap_does_not() -> None:
    rng = np.random.default_rng(0)
    protocol = Protocol(bootstrap=200)
    covered = covered_pooled = 0
    trials = 200
    for _ in range(trials):
        pairs = experiment(rng)
        low, high = seed_differences(pairs, protocol)["ciou"].ci95
        covered += low <= TRUE_DIFFERENCE <= high
        low, high = paired_bootstrap(*pooled(pairs), protocol)["ciou"]["ci95"]
        covered_pooled += low <= TRUE_DIFFERENCE <= high
    assert covered / trials >= 0.90
    assert covered_pooled / trials < 0.6


def test_per_seed_differences_and_their_mean_are_reported() -> None:
    pairs = experiment(np.random.default_rng(1))
    result = seed_differences(pairs, Protocol(bootstrap=100))["ciou"]
    empty = Protocol().empty_union_iou
    expected = [a.ciou(empty) - b.ciou(empty) for a, b in pairs]
    assert result.per_seed == pytest.approx(expected)
    assert result.difference == pytest.approx(np.mean(expected)) and result.df == SEEDS - 1


def test_one_seed_falls_back_to_the_sample_bootstrap_and_says_so() -> None:
    pairs = experiment(np.random.default_rng(2))[:1]
    result = seed_differences(pairs, Protocol(bootstrap=300))["giou"]
    assert result.method == METHOD_ONE_SEED and result.df == float("inf")
    plain = paired_bootstrap(*pairs[0], Protocol(bootstrap=300))["giou"]["ci95"]
    assert result.ci95 == pytest.approx(plain, abs=0.01)  # normal interval vs percentile: close, not equal
    assert seed_differences(pairs, Protocol(bootstrap=0))["giou"].ci95 is None


def test_the_p_value_crosses_five_percent_where_the_interval_crosses_the_margin() -> None:
    result = seed_differences(experiment(np.random.default_rng(3)), Protocol(bootstrap=100))["ciou"]
    low, high = result.ci95
    assert result.p_value(low) == pytest.approx(0.05, abs=1e-9) and result.p_value(high) == pytest.approx(0.05, abs=1e-9)
    assert result.p_value(result.difference) == pytest.approx(1.0)


def test_different_sample_counts_are_refused() -> None:
    a, b = experiment(np.random.default_rng(4))[0]
    short = SampleScores(a.inters[:10], a.unions[:10], a.failed[:10])
    with pytest.raises(ValueError, match="same samples"):
        seed_differences([(a, b), (short, short)], Protocol(bootstrap=10))


def test_holm_steps_down_and_adjusts_as_by_hand() -> None:
    from bench.ablate.verdicts import AGREES, DISAGREES, INCONCLUSIVE, Verdict, holm

    def claim(p: float | None, value: float) -> Verdict:
        return Verdict("c", "q", value, None, 0.0, "above", INCONCLUSIVE, p_value=p)

    # m = 4 tested: sorted p 0.01, 0.02, 0.03, 0.2 -> 4 x 0.01 = 0.04, 3 x 0.02 = 0.06, max(0.06, 2 x 0.03) = 0.06, 0.2
    judged = holm([claim(0.03, 0.1), claim(0.01, -0.1), claim(0.2, 0.1), claim(0.02, 0.1), claim(None, 0.1)])
    assert [v.adjusted_p for v in judged][:4] == pytest.approx([0.06, 0.04, 0.2, 0.06])
    assert judged[4].adjusted_p is None
    assert [v.adjusted_verdict for v in judged] == [INCONCLUSIVE, DISAGREES, INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE]
    alone = holm([claim(0.03, 0.1)])  # a family of one is not adjusted
    assert alone[0].adjusted_p == pytest.approx(0.03) and alone[0].adjusted_verdict == AGREES


def test_claims_csv_has_the_columns_the_report_index_reads() -> None:
    import csv
    import io

    from bench.ablate.page import claims_csv
    from bench.ablate.verdicts import AGREES, Verdict, holm

    verdicts = holm([Verdict("A beats B.", "ciou(A) - ciou(B)", 0.05, [0.01, 0.09], 0.0, "above", AGREES,
                             per_seed=[0.04, 0.06], p_value=0.01)])
    rows = list(csv.DictReader(io.StringIO(claims_csv("x", verdicts).decode())))
    assert rows[0]["claim"] == "A beats B." and rows[0]["verdict"] == AGREES
    assert rows[0]["adjusted_verdict"] == AGREES and float(rows[0]["ci_low"]) == pytest.approx(0.01)
    assert rows[0]["per_seed"] == "0.04 0.06"


def test_a_small_effect_on_fewer_than_five_seeds_is_flagged_with_the_commands_that_add_them() -> None:
    import dataclasses

    from bench.ablate.load import load_ablation
    from bench.ablate.page import render
    from bench.ablate.verdicts import INCONCLUSIVE, Verdict

    ablation = load_ablation("grounding")
    compare = {claim.compare: claim.text for claim in ablation.claims}
    small = Verdict(compare[("near-1", "tail-0.05")], "q", -0.01, [-0.09, 0.07], 0.0, "above", INCONCLUSIVE,
                    per_seed=[-0.05, 0.0, 0.02])
    large = Verdict(compare[("mask-loss", "tail-0.05")], "q", 0.056, [0.004, 0.108], 0.0, "above", INCONCLUSIVE,
                    per_seed=[0.07, 0.05, 0.04])
    five = Verdict(compare[("near-1", "tail-0.05")], "q", -0.01, [-0.05, 0.03], 0.0, "above", INCONCLUSIVE,
                   per_seed=[-0.05, 0.0, 0.02, 0.01, -0.03])

    def note(verdicts):
        claims = [c for c in ablation.claims if c.text in {v.claim for v in verdicts}]
        page = render(dataclasses.replace(ablation, claims=claims), "small", "cmd", [], [], verdicts, [], []).decode()
        return next((line for line in page.splitlines() if line.startswith("**Too few seeds")), "")

    flagged = note([small, large])
    assert "(-1.0 points, 3 seeds)" in flagged and "mask loss" not in flagged.split("The missing seeds")[0]
    assert "--seeds 5 --only near-1`" in flagged and "--seeds 5 --only tail-0.05`" in flagged
    assert "`variant_seeds = { near-1 = 5, \"tail-0.05\" = 5 }`" in flagged  # a valid TOML table
    assert note([large]) == "" and note([five]) == ""


def test_the_cost_line_counts_a_shared_training_once_and_sums_the_evaluations(tmp_path) -> None:
    import json
    import math

    from bench.ablate.page import cost_lines

    cells = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"timings": {"data_s": 600, "model_s": 1200, "metric_s": 0}}))
        cells.append(tmp_path / name)
    (line,) = cost_lines(cells, {"cache/x": 5400.0, "cache/y": math.nan})
    assert line.startswith("- cost: training 1.50 h (1 training; 1 without a recorded time), evaluation 1.00 h (2 cells)")
    (line,) = cost_lines(cells[:1], {})
    assert line.startswith("- cost: evaluation 0.50 h (1 cell)")


def test_a_fine_tune_pages_small_effect_note_adds_its_control_and_reference_for_the_control_check() -> None:
    import dataclasses

    from bench.ablate.load import load_ablation
    from bench.ablate.page import render
    from bench.ablate.verdicts import INCONCLUSIVE, Verdict

    joint = load_ablation("joint")
    claim = next(c for c in joint.claims if c.compare == ("joint-1:1", "segmentation-only-lr-matched"))
    small = Verdict(claim.text, "q", 0.01, [-0.02, 0.04], -0.01, "above", INCONCLUSIVE, per_seed=[0.0, 0.02, 0.01])
    page = render(dataclasses.replace(joint, claims=[claim]), "small", "cmd", [], [], [small], [], []).decode()
    note = next(line for line in page.splitlines() if line.startswith("**Too few seeds"))
    assert ('`variant_seeds = { "joint-1:1" = 5, segmentation-only-lr-matched = 5, segmentation-only = 5, '
            "untrained = 5 }`") in note
