"""What the rivals' tests check the same way: the loss falls when a model overfits one batch, and a run split by
stop_at_step + --resume ends on the same weights as one straight run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file


def overfit_losses(model: torch.nn.Module, loss: Callable[[], torch.Tensor], steps: int = 30) -> list[float]:
    """The loss at every step of AdamW (lr 1e-2) on the model's trainable parameters."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses


def assert_same_checkpoint(first: Path, second: Path) -> None:
    """The two runs' checkpoint/model.safetensors hold the same tensors."""
    straight = load_file(first / "checkpoint" / "model.safetensors")
    split = load_file(second / "checkpoint" / "model.safetensors")
    for name in straight:
        torch.testing.assert_close(straight[name], split[name], msg=name)
