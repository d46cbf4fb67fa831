"""Mask readouts that skip the VAE decoder: the sampled mask latent read by a per-position linear layer (fitted
by least squares on mask latents) or by its first principal component (PCA of mask latents, unsupervised).

One-step inference spends about half of its time in the VAE decoder; if mask latents are as linearly separable
as the paper argues, a linear map of each latent position to its patch of pixels should read the mask almost as
well at a fraction of the cost (`bench ablate readout`). A readout returns scores whose sign is the mask.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

READOUTS = ("vae", "linear", "pc1")
FIT_SEED = 5_000_011  # the scenes a readout is fitted on: a stream no training or evaluation split draws from


class LatentReadout(nn.Module):
    """Per-position affine map of a (B, C, 1, h, w) latent to mask scores (B, 1, h*f, w*f): `f*f` outputs per
    position arranged by pixel shuffle, or one output upsampled bilinearly (`bilinear`)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, factor: int, bilinear: bool = False):
        super().__init__()
        self.register_buffer("weight", weight)  # (C, K), K = f*f, or 1 when bilinear
        self.register_buffer("bias", bias)  # (K,)
        self.factor, self.bilinear = factor, bilinear

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents[:, :, 0].float()  # (B, C, h, w)
        scores = torch.einsum("bchw,ck->bkhw", x, self.weight) + self.bias[None, :, None, None]
        if self.bilinear:
            size = (x.shape[2] * self.factor, x.shape[3] * self.factor)
            return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        return F.pixel_shuffle(scores, self.factor)


def _positions(latents: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N*h*w, C) per-position channel vectors."""
    return latents.transpose(0, 2, 3, 1).reshape(-1, latents.shape[1])


def fit_linear(latents: np.ndarray, masks: np.ndarray, factor: int, ridge: float = 1e-3) -> LatentReadout:
    """Least squares from each position's channels (plus a bias) to its f x f patch of the mask in {-1, +1}."""
    n, c, h, w = latents.shape
    x = np.concatenate([_positions(latents), np.ones((n * h * w, 1))], axis=1).astype(np.float64)
    patches = masks.reshape(n, h, factor, w, factor).transpose(0, 1, 3, 2, 4).reshape(n * h * w, factor * factor)
    y = np.where(patches, 1.0, -1.0)
    solution = np.linalg.solve(x.T @ x + ridge * np.eye(c + 1), x.T @ y)  # (C + 1, f*f)
    tensor = torch.from_numpy(solution).float()
    return LatentReadout(tensor[:c].contiguous(), tensor[c].contiguous(), factor)


def fit_pc1(latents: np.ndarray, black: np.ndarray, white: np.ndarray, factor: int) -> LatentReadout:
    """PC1 of mask latents' position vectors, oriented so that a white (foreground) mask scores higher, cut
    halfway between the mean scores of an all-black and an all-white mask's latent; bilinear upsampling."""
    x = _positions(latents).astype(np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    direction = vt[0]
    low, high = (float((_positions(m).mean(0) - mean) @ direction) for m in (black, white))
    if high < low:
        direction, low, high = -direction, -low, -high
    cut = (low + high) / 2
    weight = torch.from_numpy(direction[:, None]).float()
    bias = torch.tensor([-(float(mean @ direction) + cut)], dtype=torch.float32)
    return LatentReadout(weight, bias, factor, bilinear=True)


@torch.no_grad()
def fit_readout(model, kind: str, count: int = 512) -> LatentReadout | None:
    """The `kind` readout of `model`'s VAE latents, fitted on the target masks of `count` synthetic scenes; None
    for "vae" (the decoder itself)."""
    from bench.synth import iter_training_scenes
    from genmask.model import masks_to_tensor

    if kind not in READOUTS:
        raise ValueError(f"unknown readout {kind!r}; known: {', '.join(READOUTS)}")
    if kind == "vae":
        return None
    size = model.config.image_size
    masks = []
    for scene in itertools.islice(iter_training_scenes(FIT_SEED, size), count):
        masks += scene.masks
    masks = np.stack(masks[:count]).astype(bool)

    def encode(batch: np.ndarray) -> np.ndarray:
        parts = [model.encode_pixels(masks_to_tensor(list(batch[i:i + 64]))).float().cpu()
                 for i in range(0, len(batch), 64)]
        return torch.cat(parts)[:, :, 0].numpy()

    latents = encode(masks)
    factor = size // latents.shape[-1]
    if kind == "linear":
        return fit_linear(latents, masks, factor).to(model.device)
    black, white = (encode(np.full((1, size, size), value)) for value in (False, True))
    return fit_pc1(latents, black, white, factor).to(model.device)
