"""The leak probe: how much of the mask a checkpoint recovers from the noisy mask latent alone, per noise level.

Noise the true mask latent to level t, predict x0 in one step (x0 = x_t - t v) and score the decoded mask twice:
with the sample's own instruction and with another sample's. Where both score high, the noisy latent gives the
answer away and training there teaches denoising, not grounding; the trained sampler's mass below each t says
how much of the training went to such levels (`python -m genmask.diagnose --leak`).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.training.validation import ciou, sample_scores
from genmask.model import GenMask, images_to_tensor, masks_to_tensor
from genmask.timesteps import sample_timesteps

DEFAULT_GRID = (0.5, 0.7, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0)
MASS_DRAWS = 1_000_000  # draws that estimate the sampler's mass below each t (standard error < 0.0005)


def sampler_mass_below(name: str, params: dict[str, float], grid: tuple[float, ...], seed: int = 0) -> list[float]:
    """Share of the named training sampler's draws strictly below each t (Monte Carlo, seeded)."""
    draws = sample_timesteps(name, MASS_DRAWS, torch.Generator().manual_seed(seed), **params).double()
    return [float((draws < t).double().mean()) for t in grid]


@torch.no_grad()
def recovered_masks(model: GenMask, images: np.ndarray, mask_latents: torch.Tensor, texts: list[str], t: float,
                    seed: int = 0, batch: int = 64) -> np.ndarray:
    """One-step x0 masks (N, H, W) from the true mask latents noised to level t, given `texts`."""
    out = []
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(mask_latents.shape, generator=generator)  # the same noise for every t and instruction
    for start in range(0, len(texts), batch):
        part = slice(start, start + batch)
        x0, eps = mask_latents[part].to(model.device), noise[part].to(model.device)
        level = torch.full((len(x0),), t, device=model.device)
        noisy = (1 - t) * x0 + t * eps
        context = model.encode_instructions(list(images[part]), texts[part])
        shortcut = None if model.config.shortcut == "none" else model.encode_pixels(images_to_tensor(list(images[part])))
        predicted = noisy - t * model.velocity(noisy, level, context, shortcut)
        decoded = model.decode_latents(predicted)[:, :, 0].float().mean(1)
        out.append((decoded > model.config.mask_threshold).cpu().numpy())
    return np.concatenate(out)


def leak_table(model: GenMask, images: np.ndarray, masks: np.ndarray, texts: list[str],
               grid: tuple[float, ...] = DEFAULT_GRID, seed: int = 0) -> dict:
    """Per t: cIoU with the own and with the next sample's instruction, and the trained sampler's mass below t."""
    model.eval()
    with torch.no_grad():
        latents = torch.cat([model.encode_pixels(masks_to_tensor(list(masks[i : i + 64])))
                             for i in range(0, len(masks), 64)]).float()
    other = texts[1:] + texts[:1]
    train = model.config.train
    mass = sampler_mass_below(train.seg_sampler, dict(train.seg_sampler_params), grid, seed)
    rows = []
    for t, below in zip(grid, mass):
        own = ciou(sample_scores(recovered_masks(model, images, latents, texts, t, seed), masks))
        wrong = ciou(sample_scores(recovered_masks(model, images, latents, other, t, seed), masks))
        rows.append({"t": t, "sampler_mass_below": below, "ciou_own": own, "ciou_other": wrong, "gap": own - wrong})
    return {"samples": len(texts), "seed": seed, "sampler": train.seg_sampler,
            "sampler_params": dict(train.seg_sampler_params), "rows": rows}


def leak_markdown(result: dict) -> list[str]:
    """The table as markdown lines (a section of DIAGNOSTICS.md or LEAK.md)."""
    params = ", ".join(f"{k}={v:g}" for k, v in result["sampler_params"].items())
    lines = ["## Leak probe: what the noisy mask latent gives away", "",
             f"The true mask latent noised to level t, x0 predicted in one step, decoded and scored ({result['samples']} "
             f"validation scenes, noise seed {result['seed']}) with the scene's own instruction and with the next "
             "scene's. Where both are high the answer is in the noisy latent, not in the instruction: training at "
             f"such t teaches denoising. Trained sampler: {result['sampler']}({params}).", "",
             "| t | trained sampler's mass below t | cIoU, own instruction | cIoU, other instruction | gap |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['t']:g} | {row['sampler_mass_below']:.2f} | {row['ciou_own']:.3f} | "
                     f"{row['ciou_other']:.3f} | {row['gap']:+.3f} |")
    return lines
