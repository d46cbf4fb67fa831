"""`unet`: the cheap discriminative rival, CRIS-style: a text-conditioned ResNet U-Net with a dynamic-kernel head.

    python -m bench train --model unet --out DIR [train.steps=... model.width=...]
    python -m bench run --suite synthref --model unet [--checkpoint DIR/final]

- Sentence embedding: the tiny VLM foundation (`genmask/checkpoints/foundations/vlm-tiny`, the encoder GenMask
  adapts) reads the instruction **alone** (no image: CLIP's text encoder in CRIS sees no image either) followed
  by the foundation's answer word; it is **frozen**. Its last hidden states are pooled (`model.pool`: the mean
  over the instruction's tokens and the state at the answer word, concatenated, by default) and a trained MLP
  maps them to the sentence embedding. The foundation is not copied into the checkpoint: it is referenced by
  path and pinned by the SHA-256 of its weights.
- Image path: RGB plus x/y coordinate channels (CRIS's CoordConv) into a U-Net of residual blocks (one per
  level, `model.channels` per level, stride-2 convolutions down, bilinear upsampling and skip connections up);
  the bottleneck, and with `model.film_decoder` every decoder stage, is FiLM-modulated by the sentence
  embedding (x * (1 + gamma) + beta).
- Head: the sentence embedding is projected to a 1x1 convolution kernel and bias (CRIS's projector) applied to
  the final `model.kernel_dim`-channel feature map at full resolution: one logit per pixel.
- Loss: per-pixel BCE + Dice (`baselines.common.bce_dice_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import RivalModule, RivalSegModel, RivalTrainer, images_to_float, pin_foundation
from bench.models.base import MODELS
from genmask.processor import special_token_ids

SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "unet"
VLM_FOUNDATION = "genmask/checkpoints/foundations/vlm-tiny"
POOLS = ("mean+answer", "mean", "answer")


@dataclass
class UNetConfig:
    """The network; the foundation fields are filled and checked by `build` (see `pin_foundation`)."""

    foundation: str = VLM_FOUNDATION
    foundation_sha256: str = ""
    frozen_foundation: bool = True  # recorded; the foundation is always frozen here
    text_input: str = "text"  # what the VLM reads: the instruction alone ("text") or "image+text"
    pool: str = "mean+answer"  # how its last hidden states become one vector (POOLS)
    max_tokens: int = 128
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # per level, full resolution first
    sentence_dim: int = 256
    kernel_dim: int = 16  # channels of the final feature map that the dynamic kernel reads
    film_decoder: bool = True  # FiLM on every decoder stage too, not only the bottleneck
    coordinates: bool = True  # x/y channels with the image (CoordConv)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a residual connection (1x1 projection when channels change)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm1, self.norm2 = nn.GroupNorm(min(8, c_out), c_out), nn.GroupNorm(min(8, c_out), c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + self.skip(x))


class FiLM(nn.Module):
    """x * (1 + gamma(s)) + beta(s); starts as the identity (zero-initialised projection)."""

    def __init__(self, sentence_dim: int, channels: int):
        super().__init__()
        self.project = nn.Linear(sentence_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.project(sentence)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


def coordinate_grid(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """x and y ramps in [-1, 1] as (B, 2, S, S)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size, device=device), torch.linspace(-1, 1, size, device=device),
                          indexing="ij")
    return torch.stack([x, y])[None].expand(batch, 2, size, size)


class SentenceEncoder(nn.Module):
    """The frozen VLM foundation reading the instruction, pooled (`UNetConfig.pool`)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        from genmask.vlm import load_foundation_encoder

        if config.text_input not in ("text", "image+text"):
            raise ValueError(f"unet: model.text_input must be 'text' or 'image+text', not {config.text_input!r}")
        if config.pool not in POOLS:
            raise ValueError(f"unet: model.pool must be one of {', '.join(POOLS)}, not {config.pool!r}")
        self.vlm, self.processor, self.suffix = load_foundation_encoder(pin_foundation(config))
        self.vlm.requires_grad_(False).eval()
        self.config = config
        self.width = self.vlm.config.text_config.hidden_size * (2 if config.pool == "mean+answer" else 1)

    @torch.no_grad()
    def forward(self, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        device = next(self.vlm.parameters()).device
        shown = list(images) if self.config.text_input == "image+text" else [None] * len(texts)
        inputs = self.processor(shown, [text + self.suffix for text in texts], self.config.max_tokens)
        # right padding under causal attention: cutting the padding after the longest row changes nothing
        length = int(inputs["attention_mask"].sum(1).max())
        inputs["input_ids"], inputs["attention_mask"] = inputs["input_ids"][:, :length], inputs["attention_mask"][:, :length]
        inputs = {k: v.to(device) for k, v in inputs.items()}
        hidden = self.vlm(**inputs, use_cache=False).last_hidden_state
        words = inputs["attention_mask"].bool()
        if self.config.text_input == "image+text":  # pool over the instruction's words, not the vision tokens
            words &= inputs["input_ids"] > max(special_token_ids().values())
        mask = words.unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        last = inputs["attention_mask"].sum(1) - 1
        answer = hidden[torch.arange(len(texts), device=device), last]
        return {"mean": mean, "answer": answer, "mean+answer": torch.cat([mean, answer], -1)}[self.config.pool]


class TextUNet(RivalModule):
    """See the module docstring. forward(images uint8 (B, S, S, 3), texts) -> logits (B, S, S)."""

    external_prefixes = ("sentence_encoder.vlm.",)

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        channels = config.channels
        self.sentence_encoder = SentenceEncoder(config)
        self.sentence = nn.Sequential(nn.Linear(self.sentence_encoder.width, config.sentence_dim), nn.SiLU(),
                                      nn.Linear(config.sentence_dim, config.sentence_dim))
        self.stem = nn.Conv2d(3 + (2 if config.coordinates else 0), channels[0], 3, padding=1)
        self.encoder = nn.ModuleList([ResBlock(channels[0], channels[0])])
        self.down = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            self.down.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1))
            self.encoder.append(ResBlock(c_out, c_out))
        self.bottleneck_film = FiLM(config.sentence_dim, channels[-1])
        self.bottleneck = ResBlock(channels[-1], channels[-1])
        self.decoder = nn.ModuleList()
        self.decoder_film = nn.ModuleList()
        for c_deep, c_skip in zip(channels[::-1][:-1], channels[::-1][1:]):
            self.decoder.append(ResBlock(c_deep + c_skip, c_skip))
            self.decoder_film.append(FiLM(config.sentence_dim, c_skip) if config.film_decoder else nn.Identity())
        self.features = nn.Conv2d(channels[0], config.kernel_dim, 1)
        self.kernel = nn.Linear(config.sentence_dim, config.kernel_dim + 1)  # dynamic 1x1 kernel and its bias

    def sentence_embedding(self, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        return self.sentence(self.sentence_encoder(images, texts))

    def forward(self, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        sentence = self.sentence_embedding(images, texts)
        x = images_to_float(images, self.device)
        if self.config.coordinates:
            x = torch.cat([x, coordinate_grid(len(x), x.shape[-1], x.device)], 1)
        h = self.encoder[0](self.stem(x))
        skips = [h]
        for down, block in zip(self.down, self.encoder[1:]):
            h = block(down(h))
            skips.append(h)
        h = self.bottleneck(self.bottleneck_film(skips.pop(), sentence))
        for block, film in zip(self.decoder, self.decoder_film):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
            h = film(h, sentence) if isinstance(film, FiLM) else h
        features = self.features(h)
        kernel = self.kernel(sentence)
        return torch.einsum("bchw,bc->bhw", features, kernel[:, :-1]) + kernel[:, -1, None, None]


class UNetTrainer(RivalTrainer):
    """`bench train --model unet`: the CRIS-style U-Net on GenMask's sample stream (`baselines.common`)."""

    name = "unet"
    description = "Train the text-conditioned U-Net rival (FiLM bottleneck, dynamic-kernel head, BCE + Dice)."
    model_config = UNetConfig
    recipe = {"lr": 2e-3, "weight_decay": 1e-4}

    @classmethod
    def build(cls, config) -> TextUNet:
        return TextUNet(config.model)


@MODELS.register("unet")
class UNetSegModel(RivalSegModel):
    """The trained U-Net rival (`--checkpoint DIR`, default the shipped one: baselines/checkpoints/unet)."""

    name = "unet"
    trainer = UNetTrainer
    shipped = SHIPPED_CHECKPOINT
