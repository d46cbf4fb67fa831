"""`diffusion-features`: the "feature mining" rival GenMask argues against, VPD-style.

    python -m bench train --model diffusion-features --out DIR [train.steps=... model.blocks=[1,3,5]]
    python -m bench run --suite synthref --model diffusion-features [--checkpoint DIR/final]

- Foundation: the tiny text-to-image Wan foundation (`genmask/checkpoints/foundations/t2i-tiny`, a GenMask
  directory: its VAE, DiT, instruction encoder and text projection), loaded whole, referenced by path and pinned
  by the SHA-256 of its weights; only what the rival trains is saved in its checkpoint.
- Reading: the VAE encodes the clean image; the DiT reads that clean latent (no noise added) at a small fixed
  timestep (`model.timestep`, in [0, 1]; the DiT sees it times the foundation's timestep_scale), with the
  instruction's embedding from GenMask's instruction encoder + projection reading **image and instruction**
  (`model.encoder_image=true`, as GenMask's segmentation samples do; false: the instruction alone, as the
  foundation's text-to-image training did).
- Features: forward hooks on `transformer.blocks[i]` for i in `model.blocks` collect the token states (one per
  2x2 latent patch: 8x8 tokens at 64 px); cross-attention maps are not collected.
- Decoder (trained): the blocks' states concatenated, a 1x1 convolution, residual 3x3 stages with bilinear
  upsampling to the latent grid (where the clean VAE latent joins as a skip, `model.latent_skip`) and on to the
  full resolution, then one logit per pixel; BCE + Dice.
- The foundation is frozen (`model.finetune_dit=false`, recorded); `model.finetune_dit=true` also trains the
  DiT at `model.dit_lr_scale` (default 0.01) times the decoder's learning rate and saves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import RivalModule, RivalSegModel, RivalTrainer, pin_foundation
from baselines.unet import ResBlock
from bench.models.base import MODELS

SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "diffusion-features"
T2I_FOUNDATION = "genmask/checkpoints/foundations/t2i-tiny"


@dataclass
class DiffusionFeaturesConfig:
    """The reading of the foundation and the decoder; the foundation fields are filled and checked by `build`."""

    foundation: str = T2I_FOUNDATION
    foundation_sha256: str = ""
    blocks: list[int] = field(default_factory=lambda: [1, 3, 5])  # DiT blocks whose outputs are read
    timestep: float = 0.05  # noise level the DiT is told (t in [0, 1]); the latent itself is clean
    encoder_image: bool = True  # the instruction encoder reads image + instruction (false: instruction alone)
    finetune_dit: bool = False  # false: the whole foundation frozen
    dit_lr_scale: float = 0.01  # with finetune_dit: the DiT's learning rate relative to the decoder's
    width: int = 64  # decoder channels at the token grid
    latent_skip: bool = True  # the clean VAE latent joins the decoder at the latent grid


class DiffusionFeatureSegmenter(RivalModule):
    """See the module docstring. forward(images uint8 (B, S, S, 3), texts) -> logits (B, S, S)."""

    def __init__(self, config: DiffusionFeaturesConfig):
        super().__init__()
        from genmask.model import GenMask

        self.config = config
        foundation = GenMask.from_pretrained(pin_foundation(config))
        del foundation.vae.decoder  # never used here: neither run nor counted
        foundation.requires_grad_(False).eval()
        if foundation.config.shortcut != "none":
            raise ValueError(f"{config.foundation}: expected a text-to-image foundation (shortcut 'none'), "
                             f"found shortcut {foundation.config.shortcut!r}")
        layers = len(foundation.transformer.blocks)
        if not config.blocks or any(not 0 <= i < layers for i in config.blocks):
            raise ValueError(f"diffusion-features: model.blocks must name blocks in 0..{layers - 1}, got {config.blocks}")
        if config.finetune_dit:
            foundation.transformer.requires_grad_(True)
            self.external_prefixes = ("foundation.vae.", "foundation.instruction_encoder.",
                                      "foundation.text_projection.")
        else:
            self.external_prefixes = ("foundation.",)
        self.foundation = foundation
        self._features: dict[int, torch.Tensor] = {}
        for index in sorted(set(config.blocks)):
            foundation.transformer.blocks[index].register_forward_hook(self._hook(index))
        hidden = foundation.transformer.config.num_attention_heads * foundation.transformer.config.attention_head_dim
        latent_channels = foundation.vae.config.z_dim
        width = config.width
        self.reduce = nn.Conv2d(hidden * len(config.blocks), width, 1)
        self.token_stage = ResBlock(width, width)
        self.latent_stage = ResBlock(width + (latent_channels if config.latent_skip else 0), width // 2)
        self.up_stages = nn.ModuleList()
        channels = width // 2
        for _ in range(self._upsamplings(foundation)):
            self.up_stages.append(ResBlock(channels, max(channels // 2, 8)))
            channels = max(channels // 2, 8)
        self.head = nn.Conv2d(channels, 1, 1)

    def _upsamplings(self, foundation) -> int:
        """Doublings from the latent grid to the image: the VAE's spatial factor (4 for the tiny VAE)."""
        factor = 2 ** (len(foundation.vae.config.dim_mult) - 1)
        return int(np.log2(factor))

    def _hook(self, index: int):
        def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self._features[index] = output
        return keep

    def train(self, mode: bool = True) -> DiffusionFeatureSegmenter:
        super().train(mode)
        self.foundation.eval()  # no dropout in the tiny foundation; a fine-tuned DiT runs as at inference too
        return self

    def read(self, images: np.ndarray, texts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The chosen blocks' token states as (B, D, h/2, w/2) maps, and the clean latent (B, C, h, w)."""
        from genmask.model import images_to_tensor

        foundation = self.foundation
        config = self.config
        with torch.no_grad():
            latent = foundation.encode_pixels(images_to_tensor(list(images)))
            shown = list(images) if config.encoder_image else [None] * len(texts)
            context = foundation.encode_instructions(shown, texts)
        t = torch.full((len(texts),), config.timestep, device=latent.device)
        self._features.clear()
        with torch.set_grad_enabled(config.finetune_dit and torch.is_grad_enabled()):
            foundation.velocity(latent, t, context, None)
        p_t, p_h, p_w = foundation.transformer.config.patch_size
        grid = (latent.shape[3] // p_h, latent.shape[4] // p_w)
        maps = [self._features[i].float().transpose(1, 2).reshape(len(texts), -1, *grid) for i in config.blocks]
        self._features.clear()
        return maps, latent[:, :, 0].float()

    def forward(self, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        maps, latent = self.read(images, texts)
        h = self.token_stage(self.reduce(torch.cat(maps, 1)))
        h = F.interpolate(h, size=latent.shape[-2:], mode="bilinear", align_corners=False)
        h = self.latent_stage(torch.cat([h, latent], 1) if self.config.latent_skip else h)
        for stage in self.up_stages:
            h = stage(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))
        return self.head(h)[:, 0]


class DiffusionFeaturesTrainer(RivalTrainer):
    """`bench train --model diffusion-features`: a decoder on frozen DiT features, GenMask's sample stream."""

    name = "diffusion-features"
    description = "Train the diffusion-feature rival (VPD-style decoder on the frozen text-to-image DiT's features)."
    model_config = DiffusionFeaturesConfig
    recipe = {"lr": 6e-3, "weight_decay": 1e-4}  # lr: chosen on val by `bench ablate lr-diffusion-features` (2e-3 before)

    @classmethod
    def build(cls, config) -> DiffusionFeatureSegmenter:
        return DiffusionFeatureSegmenter(config.model)

    @classmethod
    def param_groups(cls, model: DiffusionFeatureSegmenter, train) -> list[dict[str, Any]]:
        dit = {id(p) for p in model.foundation.transformer.parameters()}
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for _, p in trainable if id(p) not in dit], "lr_scale": 1.0}]
        if model.config.finetune_dit:
            groups.append({"params": [p for _, p in trainable if id(p) in dit], "lr_scale": model.config.dit_lr_scale})
        return groups


@MODELS.register("diffusion-features")
class DiffusionFeaturesSegModel(RivalSegModel):
    """The trained diffusion-feature rival (`--checkpoint DIR`, default baselines/checkpoints/diffusion-features)."""

    name = "diffusion-features"
    trainer = DiffusionFeaturesTrainer
    shipped = SHIPPED_CHECKPOINT
