"""The auxiliary mask loss: BCE + Dice against a plain reference, off by default, on the segmentation samples only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genmask.train import FlowMatchingLoss, mask_loss


def reference_mask_loss(logits: np.ndarray, masks: np.ndarray) -> float:
    total_bce, dices = 0.0, []
    for z, y in zip(logits, masks.astype(float)):
        p = 1 / (1 + np.exp(-z))
        total_bce += float(np.sum(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
        dices.append(1 - (2 * float(np.sum(p * y)) + 1) / (float(np.sum(p)) + float(np.sum(y)) + 1))
    return total_bce / logits.size + sum(dices) / len(dices)


def test_mask_loss_matches_a_plain_reference_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    logits, masks = rng.normal(0, 2, (3, 5, 5)), rng.random((3, 5, 5)) > 0.8
    assert float(mask_loss(torch.from_numpy(logits), torch.from_numpy(masks))) == pytest.approx(
        reference_mask_loss(logits, masks), rel=1e-6)


def test_dice_weighs_a_small_target_as_much_as_a_large_one() -> None:
    import torch.nn.functional as F

    def half_found(side: int) -> tuple[float, float]:
        """Dice and BCE when exactly half of a side x side target is predicted and nothing else."""
        target = torch.zeros(1, 16, 16, dtype=torch.bool)
        target[0, :side, :side] = True
        logits = torch.full((1, 16, 16), -30.0)
        logits[0, : side // 2, :side] = 30.0
        bce = float(F.binary_cross_entropy_with_logits(logits, target.float()))
        return float(mask_loss(logits, target)) - bce, bce

    (dice_small, bce_small), (dice_large, bce_large) = half_found(4), half_found(8)
    assert dice_small == pytest.approx(dice_large, abs=0.02) and dice_small > 0.3
    assert bce_large > 3 * bce_small  # the pixel-mean BCE alone counts the small miss as a quarter of the large


def micro_batch(masks: bool):
    from genmask.model import GenMask

    torch.manual_seed(0)
    model = GenMask.from_preset("micro", vocabulary=["red", "circle"])
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 1, 8, 8, generator=generator)
    batch = dict(images=[np.zeros((32, 32, 3), np.uint8)] * 3, texts=["red circle"] * 3, x0=x0,
                 shortcut=torch.randn(3, 4, 1, 8, 8, generator=generator), t=torch.tensor([0.99, 0.9, 0.5]),
                 noise=torch.randn(3, 4, 1, 8, 8, generator=generator))
    if masks:
        batch["masks"] = torch.zeros(2, 32, 32, dtype=torch.bool)  # two segmentation samples, then one t2i
        batch["masks"][:, 8:16, 8:16] = True
    return model, batch


def test_without_weight_the_loss_is_the_latent_mse_and_with_it_gradients_reach_the_dit() -> None:
    from genmask.readout import LatentReadout

    model, batch = micro_batch(masks=True)
    readout = LatentReadout(torch.randn(4, 16), torch.zeros(16), factor=4)
    plain = FlowMatchingLoss(model)(**{k: v for k, v in batch.items() if k != "masks"}).item()
    assert FlowMatchingLoss(model, readout, 0.0)(**batch).item() == pytest.approx(plain)
    combined = FlowMatchingLoss(model, readout, 0.5)(**batch)
    assert combined.item() > plain and math.isfinite(combined.item())
    combined.backward()
    assert model.transformer.proj_out.weight.grad is not None and model.transformer.proj_out.weight.grad.abs().sum() > 0
