"""Timestep samplers against their analytic forms, and the inference schedule's endpoints."""

from __future__ import annotations

import math

import pytest
import torch

from genmask.timesteps import SAMPLERS, density, inference_timesteps, sample_timesteps

N = 100_000


def draw(name: str, **params: float) -> torch.Tensor:
    return sample_timesteps(name, N, torch.Generator().manual_seed(0), **params)


@pytest.mark.parametrize(("a", "above_085", "above_095"), [(0.05, 0.90, 0.50), (0.1, 0.692, 0.200)])
def test_genmask_tail_matches_the_paper_table(a: float, above_085: float, above_095: float) -> None:
    t = draw("genmask_tail", a=a)
    assert float((t > 0.85).float().mean()) == pytest.approx(above_085, abs=0.01)
    assert float((t > 0.95).float().mean()) == pytest.approx(above_095, abs=0.01)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_genmask_tail_density_mode_and_normalisation() -> None:
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    pdf = density("genmask_tail", grid, a=0.05)
    assert float(torch.trapezoid(pdf, grid)) == pytest.approx(1.0, abs=1e-3)
    # mode of s at a / sqrt(3), so t = 1 - 0.05 / sqrt(3) = 0.971
    assert float(grid[pdf.argmax()]) == pytest.approx(1 - 0.05 / math.sqrt(3), abs=1e-3)


def test_sd3_shift_matches_its_closed_form_cdf() -> None:
    shift = 3.0
    t = draw("sd3_shift", shift=shift)
    for x in (0.2, 0.5, 0.8, 0.95):
        cdf = x / (shift - (shift - 1) * x)  # u = t' / (shift - (shift - 1) t')
        assert float((t <= x).float().mean()) == pytest.approx(cdf, abs=0.006)


def test_logit_normal_share_above_085() -> None:
    t = draw("logit_normal", mean=0.0, std=1.0)
    expected = 0.5 * math.erfc(math.log(0.85 / 0.15) / math.sqrt(2))  # P(n > logit(0.85))
    assert float((t > 0.85).float().mean()) == pytest.approx(expected, abs=0.003)
    assert expected == pytest.approx(0.04, abs=0.005)  # the method notes' "about 4%"


@pytest.mark.parametrize(
    ("name", "params"),
    [("uniform", {}), ("logit_normal", {"mean": 0.0, "std": 1.0}), ("logit_normal", {"mean": 0.5, "std": 0.7}),
     ("mode", {"scale": 1.29}), ("mode", {"scale": -0.5}), ("sd3_shift", {"shift": 3.0}),
     ("genmask_tail", {"a": 0.5})],
)
def test_histogram_matches_density(name: str, params: dict) -> None:
    t = draw(name, **params)
    edges = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    counts = torch.histc(t.double(), bins=20, min=0.0, max=1.0) / N
    for low, high, share in zip(edges[:-1], edges[1:], counts):
        fine = torch.linspace(float(low), float(high), 401, dtype=torch.float64)
        expected = float(torch.trapezoid(density(name, fine, **params), fine))
        assert float(share) == pytest.approx(expected, abs=0.006), (name, float(low))


def test_every_registered_sampler_stays_in_unit_interval() -> None:
    for name in SAMPLERS.names():
        t = sample_timesteps(name, 1000, torch.Generator().manual_seed(1))
        assert t.dtype == torch.float32 and t.shape == (1000,)
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_unknown_sampler_names_the_close_match() -> None:
    with pytest.raises(KeyError, match="genmask_tail"):
        sample_timesteps("genmask_tale", 3)


def test_inference_timesteps_endpoints_and_length() -> None:
    for steps in (1, 4):
        schedule = inference_timesteps(steps)
        assert schedule.shape == (steps + 1,)
        assert float(schedule[0]) == 1.0 and float(schedule[-1]) == 0.0
        assert bool((schedule[1:] < schedule[:-1]).all())
    shifted = inference_timesteps(4, shift=3.0)
    assert float(shifted[0]) == 1.0 and float(shifted[-1]) == 0.0
    assert float(shifted[2]) == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    with pytest.raises(ValueError):
        inference_timesteps(0)
