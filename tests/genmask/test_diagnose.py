"""genmask.diagnose: per-rule scores against a plain reference, the instruction-use probe, the CLI's files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.training.heldout import SegData
from bench.training.validation import validation_metrics
from genmask.diagnose import instruction_use, learning_curve, main, mean_iou


def reference_ciou(predicted: np.ndarray, target: np.ndarray, chosen: list[bool]) -> float:
    inter = union = 0
    for p, t, keep in zip(predicted, target, chosen):
        if keep:
            inter += sum(bool(a) and bool(b) for a, b in zip(p.ravel(), t.ravel()))
            union += sum(bool(a) or bool(b) for a, b in zip(p.ravel(), t.ravel()))
    return inter / max(union, 1)


def test_validation_metrics_match_a_plain_reference_per_kind_and_rule() -> None:
    rng = np.random.default_rng(3)
    predicted, target = rng.random((30, 6, 6)) > 0.5, rng.random((30, 6, 6)) > 0.6
    kinds = [["referring", "reasoning"][i % 2] for i in range(30)]
    rules = [["spatial", "ordinal", "largest"][i % 3] for i in range(30)]
    result = validation_metrics(predicted, target, kinds, rules)
    assert result["ciou_all"] == pytest.approx(reference_ciou(predicted, target, [True] * 30))
    assert result["ciou_reasoning"] == pytest.approx(reference_ciou(predicted, target, [k == "reasoning" for k in kinds]))
    for rule in ("spatial", "ordinal", "largest"):
        assert result["ciou_by_rule"][rule] == pytest.approx(reference_ciou(predicted, target, [r == rule for r in rules]))


def test_mean_iou_counts_two_empty_masks_as_agreement() -> None:
    empty, full = np.zeros((1, 4, 4), bool), np.ones((1, 4, 4), bool)
    assert mean_iou(np.concatenate([empty, full]), np.concatenate([empty, empty])) == pytest.approx(0.5)


class FakeModel:
    """Predicts the left half for instructions containing "left", else the right half (or always left)."""

    training = False

    def __init__(self, reads_text: bool):
        self.reads_text = reads_text

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def predict(self, images, texts, steps=1, seed=0):
        masks = []
        for text in texts:
            mask = np.zeros((4, 4), bool)
            if "left" in text or not self.reads_text:
                mask[:, :2] = True
            else:
                mask[:, 2:] = True
            masks.append(mask)
        return masks


def test_instruction_use_separates_a_reading_model_from_one_that_ignores_the_text() -> None:
    texts = ["the left one", "the right one"] * 3
    targets = np.zeros((6, 4, 4), bool)
    targets[0::2, :, :2] = targets[1::2, :, 2:] = True
    data = SegData(images=np.zeros((6, 4, 4, 3), np.uint8), masks=targets, texts=texts, kinds=["referring"] * 6)
    for reads, agreement, other_ciou in ((True, 0.0, 0.0), (False, 1.0, 1 / 3)):
        model = FakeModel(reads)
        own = np.stack(model.predict(None, texts))
        use = instruction_use(model, data, own)
        assert use["agreement_iou_own_vs_other_instruction"] == pytest.approx(agreement)
        assert use["ciou_with_other_instruction"] == pytest.approx(other_ciou)


def test_cli_writes_json_markdown_and_curve(tmp_path) -> None:
    from bench.synth import vocabulary
    from genmask.model import GenMask

    checkpoint = tmp_path / "ckpt"
    GenMask.from_preset("micro", vocabulary=list(vocabulary())).save_pretrained(checkpoint)
    log = tmp_path / "log.jsonl"
    records = [{"stage": "dit", "step": 0, "loss": 1.0},
               {"stage": "dit", "step": 10, "val_1step": {"ciou_all": 0.2, "ciou_referring": 0.1,
                                                           "ciou_reasoning": 0.3, "ciou_by_rule": {"x": 0.5}},
                "wall": 60.0}]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps({"stage": "dit", "step": step, "val_1step": {"ciou_all": 0.4 + step / 100,
                                                                                    "ciou_referring": 0.35}})
                               for step in (5, 10)) + "\n")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--samples", "6", "--steps", "1,2", "--log", str(log), "--out", str(out),
            "--compare-log", f"old recipe={other}"]
    assert main(argv) == 0
    result = json.loads((out / "diagnostics.json").read_text())
    assert result["samples"] == 6 and set(result["steps_2"]["ciou_by_rule"]) == set(result["steps_1"]["ciou_by_rule"])
    assert 0 <= result["instruction_use"]["agreement_iou_own_vs_other_instruction"] <= 1
    assert learning_curve(log) == result["learning_curve"] == [
        {"step": 10, "wall": 60.0, "ciou_all": 0.2, "ciou_referring": 0.1, "ciou_reasoning": 0.3,
         "ciou_by_rule": {"x": 0.5}}]
    markdown = (out / "DIAGNOSTICS.md").read_text()
    assert "python -m genmask.diagnose --checkpoint" in markdown and "| 10 | 1 | 0.200 |" in markdown
    assert "| x | 0.50 |" in markdown  # per-rule learning curve
    assert "| step | this run | old recipe |" in markdown and "| 10 | 0.200 / 0.100 | 0.500 / 0.350 |" in markdown
    assert "| 5 |" not in markdown  # only the steps both logs have
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_names_a_missing_checkpoint_and_a_bad_compared_log(tmp_path, capsys) -> None:
    assert main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().err
    from bench.synth import vocabulary
    from genmask.model import GenMask

    GenMask.from_preset("micro", vocabulary=list(vocabulary())).save_pretrained(tmp_path / "ckpt")
    assert main(["--checkpoint", str(tmp_path / "ckpt"), "--compare-log", str(tmp_path / "missing.jsonl")]) == 2
    assert "LABEL=LOG" in capsys.readouterr().err


def test_extrapolation_fits_the_last_half_of_the_curve_and_says_never_when_it_is_not_rising():
    from genmask.diagnose import extrapolate

    rising = [{"step": i, "wall": 3600.0 * i, "ciou_referring": 0.1 * i if i >= 3 else 0.5} for i in range(6)]
    fit = extrapolate(rising, "ciou_referring", target=0.8)  # the last three points lie on 0.1 per hour
    assert fit["points"] == 3 and abs(fit["slope_per_hour"] - 0.1) < 1e-9
    assert abs(fit["fitted_now"] - 0.5) < 1e-9 and abs(fit["more_hours_to_target"] - 3.0) < 1e-9
    flat = [{"step": i, "wall": 60.0 * i, "ciou_referring": 0.3} for i in range(6)]
    assert extrapolate(flat, "ciou_referring", target=0.8)["more_hours_to_target"] == float("inf")
    assert extrapolate(flat[:2], "ciou_referring", target=0.8) is None  # too few points to fit
