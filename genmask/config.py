"""GenMask configuration: nested dataclasses and named presets; `key=value` / file overrides apply to it through
`bench.training.overrides` (no exec)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.training.overrides import ConfigError, apply_nested
from bench.training.recipe import EMARecipe, SampleStream


@dataclass
class TransformerConfig:
    """Keyword arguments of diffusers' `WanTransformer3DModel` (defaults: Wan 2.1 T2V 1.3B)."""

    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_attention_heads: int = 12
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 8960
    num_layers: int = 30
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024


@dataclass
class VAEConfig:
    """Keyword arguments of diffusers' `AutoencoderKLWan` (defaults: the Wan 2.1 VAE, 8x spatial down)."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attn_scales: list[float] = field(default_factory=list)
    temperal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])
    dropout: float = 0.0
    latents_mean: list[float] | None = None  # per-channel latent statistics; None = diffusers' Wan 2.1 values
    latents_std: list[float] | None = None


def _qwen7b_text() -> dict[str, Any]:
    """Qwen2.5-VL-7B language model sizes (written here so nothing is downloaded)."""
    return dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    )


def _qwen7b_vision() -> dict[str, Any]:
    """Qwen2.5-VL-7B vision tower sizes."""
    return dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, window_size=112, out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31],
    )


@dataclass
class EncoderConfig:
    """The Qwen2.5-VL instruction encoder that reads the image and the instruction."""

    text: dict[str, Any] = field(default_factory=_qwen7b_text)  # Qwen2_5_VLTextConfig kwargs
    vision: dict[str, Any] = field(default_factory=_qwen7b_vision)  # Qwen2_5_VLVisionConfig kwargs
    processor: str = "qwen"  # "qwen": Qwen's own processor from the checkpoint; "word_level": built from a vocabulary
    hidden_layer: int = -1  # which hidden state feeds the projection (-1 = last)
    max_tokens: int = 512  # fixed padded length, so a sample's prediction does not depend on its batch
    image_min_pixels: int = 256 * 28 * 28  # image processor's resize bounds
    image_max_pixels: int = 1280 * 28 * 28
    freeze: bool = False  # keep the encoder's weights fixed while training (projection still trains)
    prompt_suffix: str = ""  # appended to every instruction (a VLM foundation's answer word: " ans")
    coordinate_channels: bool = False  # word-level processor: x and y as two more pixel channels (vision in_channels 5)


@dataclass
class TrainConfig(EMARecipe, SampleStream):
    """Training recipe for every stage (`vae`, `t2i`, `dit`): the shared recipe (`bench.training.recipe`: seed,
    optimiser, schedule, clipping, EMA, stop and save rules), the shared sample stream (`SampleStream`),
    and GenMask's own settings below."""

    threads: int = 2
    steps: int = 8000  # dit stage
    warmup_steps: int = 200
    # where the weights start: "scratch" (random), "foundation" (encoder from vlm_dir, DiT from dit_dir if set) or
    # "checkpoint" (a trained GenMask in init_dir: its architecture and weights; only `shortcut` may change)
    init: str = "scratch"
    init_dir: str = ""
    vlm_dir: str = ""  # a VLM foundation (`bench train --model genmask-vlm`, its OUT/final)
    # init=foundation: the image size in pixels the foundation's processor resizes to (0 = its own): more pixels give
    # the vision tower more tokens (encoder.max_tokens must hold them and the instruction)
    vision_pixels: int = 0
    dit_dir: str = ""  # a text-to-image DiT foundation (a diffusers WanTransformer3DModel directory); "" = random
    caption_samples: int = 10000
    captions: str = "synth"  # text-to-image data: "synth" or a COCO captions file (captions_*.json)
    # dit stage
    batch_size: int = 32
    seg_fraction: float = 0.5  # share of segmentation samples per batch; 1 = segmentation only, 0 = t2i only
    # auxiliary BCE + Dice on segmentation samples' one-step x0, read to pixels by a fixed least-squares linear
    # readout (genmask.readout): an area-normalised mask loss beside the latent MSE; 0 = latent MSE alone
    mask_loss_weight: float = 0.0
    seg_sampler: str = "genmask_tail"
    seg_sampler_params: dict[str, float] = field(default_factory=lambda: {"a": 0.05})
    gen_sampler: str = "logit_normal"
    gen_sampler_params: dict[str, float] = field(default_factory=lambda: {"mean": 0.0, "std": 1.0})
    generation_eval: int = 0  # after training, score text-to-image samples of this many held-out captions
    vae_dir: str = ""  # trained VAE (output of the vae stage) for the dit stage
    # vae stage
    vae_steps: int = 1500
    vae_batch_size: int = 16
    vae_lr: float = 5e-4  # 2e-3 diverged on the tiny VAE
    vae_kl_weight: float = 1e-6


@dataclass
class GenMaskConfig:
    """Whole model: components, geometry and inference settings, plus the training recipe."""

    preset: str = "paper"
    image_size: int = 512  # square resolution the image and mask are resized to
    # VAE shortcut: "frame" (the clean image latent as an extra frame at per-token timestep 0), "channel"
    # (concatenated with the noise along channels: transformer.in_channels = 2 x latent channels) or "none"
    shortcut: str = "frame"
    # x and y ramps as two more DiT input channels in every frame: the DiT's positions are only rotary (relative),
    # so without them a tiny DiT cannot place an answer given as a location (transformer.in_channels + 2)
    coordinate_channels: bool = False
    timestep_scale: float = 1000.0  # the DiT sees t * scale (Wan was trained on 0..1000)
    inference_shift: float = 1.0  # shift of the Euler schedule (1 = none)
    mask_threshold: float = 0.0  # decoded channel mean in [-1, 1] above this is foreground
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> GenMaskConfig:
        """Rebuild from `to_dict` output; unknown keys are errors naming `source` and the key."""
        if isinstance(data.get("shortcut"), bool):  # configs written before the shortcut had modes
            data = {**data, "shortcut": "frame" if data["shortcut"] else "none"}
        config = cls()
        apply_nested(config, data, source)
        return config


def _tiny() -> GenMaskConfig:
    """Tiny preset trained on CPU on 64 px synthetic scenes: 4x VAE, 16x16 latents, 64 tokens a frame."""
    return GenMaskConfig(
        preset="tiny",
        image_size=64,
        coordinate_channels=True,
        transformer=TransformerConfig(
            num_attention_heads=4, attention_head_dim=32, text_dim=128, freq_dim=64, ffn_dim=512, num_layers=6,
            rope_max_seq_len=64,
        ),
        vae=VAEConfig(base_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, False],
                      latents_mean=[0.0] * 16, latents_std=[1.0] * 16),  # measured by the vae stage
        encoder=EncoderConfig(
            text=dict(
                vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256,
                rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0},
            ),
            vision=dict(
                depth=1, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=8, spatial_merge_size=2,
                temporal_patch_size=2, window_size=64, out_hidden_size=128, fullatt_block_indexes=[0],
            ),
            processor="word_level", max_tokens=40, image_min_pixels=64 * 64, image_max_pixels=64 * 64,
        ),
    )


def _micro() -> GenMaskConfig:
    """Smallest working model, for unit tests only (32 px, one layer everywhere)."""
    config = _tiny()
    config.preset = "micro"
    config.image_size = 32
    config.transformer = TransformerConfig(
        num_attention_heads=2, attention_head_dim=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1,
        rope_max_seq_len=32,
    )
    config.vae = VAEConfig(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, False],
                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    config.transformer.in_channels = config.transformer.out_channels = 4
    config.encoder.text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1, rope_parameters={"rope_type": "default",
                                                                       "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    config.encoder.vision.update(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32)
    config.encoder.image_min_pixels = config.encoder.image_max_pixels = 32 * 32
    config.encoder.max_tokens = 32
    config.train = TrainConfig(train_samples=64, val_samples=8, caption_samples=32, steps=20, batch_size=8,
                               warmup_steps=2, eval_every=0, vae_steps=5, vae_batch_size=4)
    return config


PRESETS = {"paper": GenMaskConfig, "tiny": _tiny, "micro": _micro}


def preset(name: str) -> GenMaskConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()
