"""Seeded training randomness: each step's draws are a pure function of (seed, step, rank), so resuming is exact."""

from __future__ import annotations

import torch


def step_generator(seed: int, step: int, rank: int = 0, world_size: int = 1) -> torch.Generator:
    """The random stream of one process's training step: a pure function of (seed, step, rank, world size), so
    resuming is exact, every process of a multi-process run draws its own samples, and one process draws what a
    single-process run draws."""
    return torch.Generator().manual_seed((seed * 1_000_033 + step) * world_size + rank)
