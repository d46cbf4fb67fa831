"""Euler sampling of the flow-matching ODE, from pure noise (t = 1) to a clean latent (t = 0).

With x_t = (1 - t) x0 + t eps and v = eps - x0, dx/dt = v: one Euler step from t to t' is x + (t' - t) v, and
the single step from t = 1 is x0 = eps - v(eps, 1), GenMask's one-step inference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from genmask.timesteps import inference_timesteps

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t of shape (B,)) -> v


def shared_noise(shape: tuple[int, ...], batch: int, seed: int, device: torch.device | str) -> torch.Tensor:
    """The noise of `seed`, the same for every sample of the batch: a prediction never depends on its batch."""
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return noise.unsqueeze(0).repeat(batch, *([1] * len(shape))).to(device)


def euler_sample(velocity: Velocity, noise: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Integrate from `noise` at t = 1 to t = 0 in `steps` Euler steps over `inference_timesteps(steps, shift)`."""
    schedule = inference_timesteps(steps, shift).tolist()
    x = noise
    for t, t_next in zip(schedule[:-1], schedule[1:]):
        x = x + (t_next - t) * velocity(x, torch.full((x.shape[0],), t))
    return x
