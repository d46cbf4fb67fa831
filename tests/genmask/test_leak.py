"""genmask.leak: the sampler's mass against its analytic CDF, the t = 0 identity, the CLI's leak section."""

from __future__ import annotations

import json

import pytest
import torch

from genmask.leak import leak_table, sampler_mass_below


@pytest.mark.parametrize("a", [0.05, 0.01])
def test_mass_below_t_matches_the_tail_cdf(a: float) -> None:
    grid = (0.5, 0.9, 0.95, 0.99)
    # s = 1 - t has CDF F(s) = s^2 / (s^2 + a^2), truncated to s <= 1: P(t < x) = P(s > 1 - x) = 1 - F(1 - x) / F(1)
    cdf = lambda s: s**2 / (s**2 + a**2)  # noqa: E731
    expected = [1 - cdf(1 - t) / cdf(1.0) for t in grid]
    assert sampler_mass_below("genmask_tail", {"a": a}, grid) == pytest.approx(expected, abs=3e-3)


def micro_model():
    from bench.synth import vocabulary
    from genmask.model import GenMask

    return GenMask.from_preset("micro", vocabulary=list(vocabulary())).eval()


def test_at_t_zero_the_probe_returns_the_vae_round_trip_whatever_the_instruction() -> None:
    from bench.training.heldout import synth_segmentation
    from bench.training.validation import ciou, sample_scores
    from genmask.model import masks_to_tensor

    model = micro_model()
    data = synth_segmentation(5, 6, model.config.image_size)
    result = leak_table(model, data.images, data.masks, data.texts, grid=(0.0, 1.0))
    with torch.no_grad():
        latents = model.encode_pixels(masks_to_tensor(list(data.masks)))
        round_trip = (model.decode_latents(latents)[:, :, 0].float().mean(1) > model.config.mask_threshold).numpy()
    at_zero = result["rows"][0]
    assert at_zero["ciou_own"] == at_zero["ciou_other"] == pytest.approx(ciou(sample_scores(round_trip, data.masks)))
    assert at_zero["sampler_mass_below"] == 0.0 and result["rows"][1]["sampler_mass_below"] == 1.0


def test_cli_leak_adds_the_table_and_refuses_a_bad_grid(tmp_path, capsys) -> None:
    from genmask.diagnose import main

    checkpoint = tmp_path / "ckpt"
    micro_model().save_pretrained(checkpoint)
    out = tmp_path / "out"
    base = ["--checkpoint", str(checkpoint), "--samples", "4", "--steps", "1", "--out", str(out)]
    assert main([*base, "--leak", "--leak-grid", "0.9,1"]) == 0
    rows = json.loads((out / "diagnostics.json").read_text())["leak"]["rows"]
    assert [row["t"] for row in rows] == [0.9, 1.0]
    assert "## Leak probe" in (out / "DIAGNOSTICS.md").read_text()
    assert main([*base, "--leak", "--leak-grid", "0.9,x"]) == 2
    assert "--leak-grid" in capsys.readouterr().err
    assert main([*base, "--leak", "--leak-grid", "1.5"]) == 2


def test_calibration_scores_every_threshold_as_predict_would_and_the_adapter_applies_the_choice(tmp_path) -> None:
    from bench.training.heldout import synth_segmentation
    from bench.training.validation import ciou, sample_scores
    from genmask.adapter import GenMaskSegModel
    from genmask.diagnose import calibrate_threshold
    from genmask.train import predict_masks

    model = micro_model()
    data = synth_segmentation(7, 5, model.config.image_size)
    result = calibrate_threshold(model, data, grid=(-0.5, 0.0, 0.3))
    for row in result["rows"]:
        model.config.mask_threshold = row["threshold"]
        assert row["ciou"] == pytest.approx(ciou(sample_scores(predict_masks(model, data.images, data.texts, 1), data.masks)))
    assert result["best"]["ciou"] == max(row["ciou"] for row in result["rows"])
    model.config.mask_threshold = 0.0
    model.save_pretrained(tmp_path / "ckpt")
    adapter = GenMaskSegModel(checkpoint=str(tmp_path / "ckpt"), threshold="-0.3")
    assert adapter.model.config.mask_threshold == -0.3 and adapter.config()["mask_threshold"] == -0.3
