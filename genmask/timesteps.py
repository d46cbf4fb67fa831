"""Training timestep samplers (noise levels in [0, 1], t = 1 is pure noise) and the inference schedule.

Each sampler is registered by name with its draw function and analytic density, so training, tests and
plots share one definition. The project's own Euler schedule lives here too: diffusers'
FlowMatchEulerDiscreteScheduler is not used because it applies its shift on top of ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.registry import Registry


@dataclass(frozen=True)
class Sampler:
    """A named noise-level distribution: `draw(u, **params)` maps uniforms to t, `pdf(t, **params)` its density."""

    draw: Callable[..., torch.Tensor]
    pdf: Callable[..., torch.Tensor]
    needs_normal: bool = False  # draw takes standard normals instead of uniforms


SAMPLERS: Registry[Sampler] = Registry("timestep sampler")


def _shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 / Wan time shift t' = shift t / (1 + (shift - 1) t); keeps 0 and 1 fixed."""
    return shift * t / (1 + (shift - 1) * t)


def _logit_normal_pdf(t: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    t = t.double().clamp(1e-12, 1 - 1e-12)
    logit = torch.log(t / (1 - t))
    return torch.exp(-((logit - mean) ** 2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi) * t * (1 - t))


SAMPLERS.register("logit_normal")(
    Sampler(draw=lambda n, mean=0.0, std=1.0: torch.sigmoid(mean + std * n), pdf=_logit_normal_pdf, needs_normal=True)
)
SAMPLERS.register("uniform")(Sampler(draw=lambda u: u, pdf=lambda t: torch.ones_like(t, dtype=torch.float64)))


def _mode_map(u: torch.Tensor, scale: float) -> torch.Tensor:
    """SD3's mode sampling f(u) = 1 - u - scale (cos^2(pi u / 2) - 1 + u); monotone for -1 <= scale <= 2/(pi-2)."""
    return 1 - u - scale * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)


def _mode_pdf(t: torch.Tensor, scale: float = 1.29) -> torch.Tensor:
    """Density of mode sampling: 1 / |f'(u)| at u = f^-1(t), the inverse found by bisection (f decreases)."""
    t = t.double()
    low, high = torch.zeros_like(t), torch.ones_like(t)
    for _ in range(60):
        middle = (low + high) / 2
        above = _mode_map(middle, scale) > t
        low, high = torch.where(above, middle, low), torch.where(above, high, middle)
    u = (low + high) / 2
    slope = 1 + scale * (1 - math.pi / 2 * torch.sin(math.pi * u))
    return 1 / slope.abs()


SAMPLERS.register("mode")(Sampler(draw=lambda u, scale=1.29: _mode_map(u, scale), pdf=_mode_pdf))
SAMPLERS.register("sd3_shift")(
    Sampler(
        draw=lambda u, shift=3.0: _shift(u, shift),
        pdf=lambda t, shift=3.0: shift / (shift - (shift - 1) * t.double()) ** 2,
    )
)


def _tail_draw(u: torch.Tensor, a: float = 0.05) -> torch.Tensor:
    """GenMask's tail: s = a sqrt(v / (1 - v)) with v uniform on [0, F(1)), t = 1 - s.

    F(s) = s^2 / (s^2 + a^2) is the CDF of p(s) = 2 a^2 s / (s^2 + a^2)^2; drawing v below F(1) is exactly
    the paper's "resample s > 1" (the same truncated distribution) without a loop.
    """
    v = u * (1 / (1 + a**2))
    return 1 - a * torch.sqrt(v / (1 - v))


def _tail_pdf(t: torch.Tensor, a: float = 0.05) -> torch.Tensor:
    """p(s) renormalised to s in [0, 1] (times 1 / F(1) = 1 + a^2), at s = 1 - t."""
    s = 1 - t.double()
    return 2 * a**2 * s / (s**2 + a**2) ** 2 * (1 + a**2)


SAMPLERS.register("genmask_tail")(Sampler(draw=_tail_draw, pdf=_tail_pdf))


def sample_timesteps(name: str, n: int, generator: torch.Generator | None = None, **params: float) -> torch.Tensor:
    """Draw `n` noise levels in [0, 1] (float32) from the named sampler."""
    sampler = SAMPLERS.get(name)
    if sampler.needs_normal:
        base = torch.randn(n, generator=generator, dtype=torch.float64)
    else:
        base = torch.rand(n, generator=generator, dtype=torch.float64)
    return sampler.draw(base, **params).clamp(0.0, 1.0).float()


def density(name: str, t: torch.Tensor, **params: float) -> torch.Tensor:
    """Analytic probability density of the named sampler at noise levels `t` (float64)."""
    return SAMPLERS.get(name).pdf(torch.as_tensor(t), **params)


def inference_timesteps(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Euler schedule from 1.0 (pure noise) down to 0.0: `steps + 1` points, optionally time-shifted."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return _shift(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()
