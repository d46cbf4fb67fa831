"""GenMask: a Wan DiT that generates the black-and-white mask latent, conditioned on a Qwen2.5-VL reading.

Components (public attributes): `transformer` (diffusers WanTransformer3DModel), `vae` (diffusers
AutoencoderKLWan), `instruction_encoder` (transformers Qwen2_5_VLModel), `text_projection` (nn.Linear from
the encoder's hidden size to the DiT's text dim) and `processor` (tokenizer + image processor).

Conventions: flow matching x_t = (1 - t) x0 + t eps, the DiT predicts v = eps - x0, t = 1 is pure noise and
reaches the DiT as t * timestep_scale. The VAE shortcut (`config.shortcut`): "frame" makes the clean image
latent frame 0 of a 2-frame latent video whose tokens get timestep 0 (per-token timesteps, as Wan 2.2 TI2V;
the installed diffusers accepts timestep of shape (batch, seq_len)), the mask latent being frame 1;
"channel" concatenates it with the noisy mask latent along channels (the patch embedding takes twice the
latent channels, as Wan's image-to-video model does); "none" leaves it out. With `coordinate_channels` every
frame also gets x and y ramps as two more input channels (the last ones). Latents are normalised
with the VAE's `latents_mean` / `latents_std`. A mask is rendered as a 3-channel image in [-1, 1]
(white = foreground); a prediction is the decoded channel mean > `mask_threshold` (0: the midpoint).

Reading real weights: `GenMask.from_components(wan_dir, qwen_dir)` loads a diffusers Wan 2.1 layout
(`wan_dir/transformer`, `wan_dir/vae`) and a transformers Qwen2.5-VL directory (weights, tokenizer and
processor); the projection starts untrained. Only safetensors files are read.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

from bench.images import as_rgb_array, resize_image
from bench.io import read_json_object
from bench.weights_check import check_checkpoint
from genmask.config import GenMaskConfig, preset
from genmask.processor import ChatProcessor, WordLevelProcessor, load_processor, special_token_ids
from genmask.sampling import euler_sample, shared_noise
from genmask.shared_vae import vae_directory

CONFIG_FILE = "config.json"
SHORTCUT_MODES = ("frame", "channel", "none")
PROJECTION_FILE = "text_projection/model.safetensors"


def check_components(directory: Path) -> None:
    """Each component's config.json checked against its weights (`bench.weights_check`): no layer count or size
    that the weights do not hold reaches an allocation."""
    check_checkpoint(directory / "transformer", WanTransformer3DModel.from_config)
    check_checkpoint(vae_directory(directory), AutoencoderKLWan.from_config)
    check_checkpoint(directory / "instruction_encoder",
                     lambda config: Qwen2_5_VLModel(Qwen2_5_VLConfig.from_dict(config)))


def build_encoder(config: GenMaskConfig, vocab_size: int | None) -> Qwen2_5_VLModel:
    """A randomly initialised Qwen2.5-VL (text + vision) from the config's sizes."""
    text, vision = dict(config.encoder.text), dict(config.encoder.vision)
    specials: dict[str, int] = {}
    if config.encoder.processor == "word_level":
        text.update(vocab_size=vocab_size or text["vocab_size"], bos_token_id=None, eos_token_id=None, pad_token_id=0)
        specials = special_token_ids()
    if config.encoder.coordinate_channels:
        vision["in_channels"] = 5
    return Qwen2_5_VLModel(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **specials))


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 images -> float (B, 3, 1, H, W) in [-1, 1], the VAE's single-frame video input."""
    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).unsqueeze(2)


def masks_to_tensor(masks: list[np.ndarray]) -> torch.Tensor:
    """Boolean HxW masks -> 3-channel black/white (B, 3, 1, H, W) in [-1, 1], white = foreground."""
    array = np.stack(masks).astype(np.float32) * 2.0 - 1.0
    return torch.from_numpy(array)[:, None, None].expand(-1, 3, 1, -1, -1).contiguous()


class GenMask(nn.Module):
    """The whole model; see the module docstring for conventions."""

    def __init__(self, config: GenMaskConfig, transformer: WanTransformer3DModel, vae: AutoencoderKLWan,
                 instruction_encoder: Qwen2_5_VLModel, text_projection: nn.Linear,
                 processor: WordLevelProcessor | ChatProcessor | None):
        super().__init__()
        self.config = config
        self.transformer = transformer
        self.vae = vae
        self.instruction_encoder = instruction_encoder
        self.text_projection = text_projection
        self.processor = processor
        self.timings: dict[str, float] = defaultdict(float)
        self.profile = False  # on CUDA, time each part by synchronising the device (slower); see `timed`
        self.readout: nn.Module | None = None  # reads masks from latents instead of the VAE decoder (genmask.readout)

    # ----------------------------------------------------------------- construction and persistence
    @classmethod
    def from_config(cls, config: GenMaskConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    vocabulary: list[str] | None = None) -> GenMask:
        """Randomly initialised model; device="meta" allocates nothing (for sizes and parameter counts).

        The word-level processor (tiny presets) is built over `vocabulary`, the words of the training data,
        and saved inside the checkpoint by `save_pretrained`."""
        processor = None
        if config.encoder.processor == "word_level":
            if vocabulary is None:
                raise ValueError("the word-level processor needs the training data's vocabulary (vocabulary=[...])")
            vision = config.encoder.vision
            processor = WordLevelProcessor.build(
                vocabulary, vision["patch_size"],
                vision["spatial_merge_size"], vision["temporal_patch_size"],
                config.encoder.image_min_pixels, config.encoder.image_max_pixels, config.encoder.coordinate_channels,
            )
        check_inputs(config)
        with torch.device(device):
            transformer = WanTransformer3DModel(**vars(config.transformer) | {"patch_size": tuple(config.transformer.patch_size)})
            vae_kwargs = {k: v for k, v in vars(config.vae).items() if v is not None}
            vae = AutoencoderKLWan(**vae_kwargs, scale_factor_spatial=2 ** (len(config.vae.dim_mult) - 1))
            encoder = build_encoder(config, processor.vocab_size if processor else None)
            projection = nn.Linear(encoder.config.text_config.hidden_size, config.transformer.text_dim)
        model = cls(config, transformer, vae, encoder, projection, processor)
        return model.to(dtype) if device != "meta" else model

    @classmethod
    def from_preset(cls, name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    overrides: list[str] | None = None, vocabulary: list[str] | None = None) -> GenMask:
        """Randomly initialised model from a named preset (`paper`, `tiny`, `micro`) plus `key=value` overrides."""
        from bench.training.overrides import apply_overrides

        return cls.from_config(apply_overrides(preset(name), overrides or []), device, dtype, vocabulary)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> GenMask:
        """Load a directory written by `save_pretrained` (safetensors only; its VAE may be a `vae.json` reference,
        see `genmask.shared_vae`). `dtype` (bf16 on a GPU) is that of the DiT, the instruction encoder and the
        projection; the small VAE stays float32, as in `from_components`."""
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"{config_path}: no GenMask config here (expected a save_pretrained directory)")
        config = GenMaskConfig.from_dict(read_json_object(config_path), source=str(config_path))
        check_components(directory)  # before anything is allocated
        # torch_dtype (not .to) keeps the modules diffusers wants in float32 (norms, time embedding, rope) there
        transformer = WanTransformer3DModel.from_pretrained(directory / "transformer", use_safetensors=True,
                                                            torch_dtype=dtype)
        vae = AutoencoderKLWan.from_pretrained(vae_directory(directory), use_safetensors=True, torch_dtype=torch.float32)
        encoder = Qwen2_5_VLModel.from_pretrained(directory / "instruction_encoder", use_safetensors=True,
                                                  torch_dtype=dtype)
        weights = load_file(directory / PROJECTION_FILE)
        projection = nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
        projection.load_state_dict(weights)
        processor = load_processor(directory / "instruction_encoder")
        return cls(config, transformer, vae, encoder, projection.to(dtype), processor).to(device)

    @classmethod
    def from_components(cls, wan_dir: str | Path, qwen_dir: str | Path, name: str = "paper",
                        overrides: list[str] | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> GenMask:
        """Real weights: Wan (diffusers layout: wan_dir/transformer, wan_dir/vae) + Qwen2.5-VL (transformers
        layout, with its processor files); the text projection is new. The config's component sections are
        rewritten from the loaded components so the saved config tells the truth."""
        from bench.training.overrides import apply_overrides

        config = apply_overrides(preset(name), overrides or [])
        wan_dir, qwen_dir = Path(wan_dir), Path(qwen_dir)
        transformer = WanTransformer3DModel.from_pretrained(wan_dir / "transformer", use_safetensors=True, torch_dtype=dtype)
        vae = AutoencoderKLWan.from_pretrained(wan_dir / "vae", use_safetensors=True, torch_dtype=torch.float32)
        encoder = Qwen2_5_VLModel.from_pretrained(qwen_dir, use_safetensors=True, torch_dtype=dtype)
        for section, loaded in ((config.transformer, transformer.config), (config.vae, vae.config)):
            for key in vars(section):
                if key in loaded:
                    value = loaded[key]
                    setattr(section, key, list(value) if isinstance(value, tuple) else value)
        config.encoder.text = {k: v for k, v in encoder.config.text_config.to_dict().items() if k in config.encoder.text}
        config.encoder.vision = {k: v for k, v in encoder.config.vision_config.to_dict().items() if k in config.encoder.vision}
        config.encoder.processor = "qwen"
        projection = nn.Linear(encoder.config.text_config.hidden_size, transformer.config.text_dim, dtype=dtype)
        return cls(config, transformer, vae, encoder, projection, load_processor(qwen_dir)).to(device)

    @classmethod
    def from_foundations(cls, config: GenMaskConfig, vlm_dir: str | Path, dit_dir: str | Path | None = None) -> GenMask:
        """GenMask adapting pretrained parts, as the paper does: the instruction encoder and its processor from a
        VLM foundation (`genmask.vlm`); the DiT from a text-to-image foundation if `dit_dir` (a diffusers Wan
        transformer directory, or a GenMask text-to-image run, whose projection is then kept too), else random;
        in "channel" shortcut mode its patch embedding is widened with zero weights for the image channels. The
        config's encoder and transformer sections are rewritten from the loaded parts."""
        from genmask.vlm import load_foundation_encoder

        encoder, processor, suffix = load_foundation_encoder(vlm_dir)
        config.encoder.text = {k: v for k, v in encoder.config.text_config.to_dict().items() if k in config.encoder.text}
        config.encoder.vision = {k: v for k, v in encoder.config.vision_config.to_dict().items()
                                 if k in config.encoder.vision}
        config.encoder.processor, config.encoder.prompt_suffix = "word_level", suffix
        config.encoder.coordinate_channels = processor.coordinate_channels
        if config.train.vision_pixels:
            processor.image_processor.size = {"shortest_edge": config.train.vision_pixels,
                                              "longest_edge": config.train.vision_pixels}
        pixels = processor.image_processor.size
        config.encoder.image_min_pixels, config.encoder.image_max_pixels = pixels["shortest_edge"], pixels["longest_edge"]
        model = cls.from_config(config, vocabulary=[])  # placeholder processor and encoder, replaced below
        model.instruction_encoder, model.processor = encoder, processor
        model.text_projection = nn.Linear(encoder.config.text_config.hidden_size, config.transformer.text_dim)
        if dit_dir:
            dit_dir = Path(dit_dir)
            if (dit_dir / CONFIG_FILE).exists():  # a GenMask text-to-image run: its projection comes along
                model.text_projection.load_state_dict(load_file(dit_dir / PROJECTION_FILE))
                dit_dir = dit_dir / "transformer"
            transformer = WanTransformer3DModel.from_pretrained(dit_dir, use_safetensors=True)
            model.transformer = widen_patch_embedding(transformer, config.transformer.in_channels)
            for key in vars(config.transformer):
                if key in transformer.config:
                    value = transformer.config[key]
                    setattr(config.transformer, key, list(value) if isinstance(value, tuple) else value)
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and one safetensors subfolder per component (processor beside the encoder)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.sync_vae_statistics()
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        self.transformer.save_pretrained(directory / "transformer", safe_serialization=True)
        self.vae.save_pretrained(directory / "vae", safe_serialization=True)
        self.instruction_encoder.save_pretrained(directory / "instruction_encoder", safe_serialization=True)
        if self.processor is not None:
            self.processor.save(directory / "instruction_encoder")
        (directory / PROJECTION_FILE).parent.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.text_projection.state_dict().items()}, directory / PROJECTION_FILE)

    def sync_vae_statistics(self) -> None:
        """Copy the VAE's latent statistics into the config (the VAE's own config is the source of truth)."""
        self.config.vae.latents_mean = [float(x) for x in self.vae.config.latents_mean]
        self.config.vae.latents_std = [float(x) for x in self.vae.config.latents_std]

    # ----------------------------------------------------------------------------- building blocks
    @property
    def device(self) -> torch.device:
        return self.text_projection.weight.device

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Accumulate wall seconds of one pipeline part into `self.timings`.

        CPU work is synchronous, so it is always timed. CUDA kernels run asynchronously: a part is timed only
        with `profile = True`, which synchronises the device around it (and so slows the pipeline down)."""
        synchronise = self.device.type == "cuda"
        if synchronise and not self.profile:
            yield
            return
        if synchronise:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if synchronise:
            torch.cuda.synchronize(self.device)
        self.timings[part] += time.perf_counter() - start

    def encode_instructions(self, images: list[np.ndarray | None], texts: list[str]) -> torch.Tensor:
        """Encoder hidden states projected to the DiT's text dim, padding rows zeroed: (B, max_tokens, text_dim)."""
        if self.processor is None:
            raise RuntimeError("this GenMask has no processor: load the encoder with its processor files")
        suffix = self.config.encoder.prompt_suffix
        inputs = self.processor(images, [text + suffix for text in texts], self.config.encoder.max_tokens)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.text_projection.weight.dtype)
        layer = self.config.encoder.hidden_layer
        output = self.instruction_encoder(**inputs, output_hidden_states=layer != -1, use_cache=False)
        hidden = output.last_hidden_state if layer == -1 else output.hidden_states[layer]
        return self.text_projection(hidden) * inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(self.vae.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1, H, W) in [-1, 1] -> normalised latent (mode of the posterior), (B, C, 1, h, w)."""
        latent = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        mean, std = self._latent_stats(latent)
        return (latent - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, 1, h, w) -> images (B, 3, 1, H, W) in [-1, 1]."""
        mean, std = self._latent_stats(latents)
        return self.vae.decode((latents * std + mean).to(self.vae.dtype)).sample

    def velocity(self, noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 shortcut: torch.Tensor | None) -> torch.Tensor:
        """DiT velocity for the mask latent. noisy, shortcut: (B, C, 1, h, w); t: (B,) noise levels in [0, 1]."""
        dtype = self.transformer.dtype
        scaled = (t * self.config.timestep_scale).to(self.device, torch.float32)
        if shortcut is None:
            hidden, timestep = noisy, scaled
        elif self.config.shortcut == "channel":
            hidden, timestep = torch.cat([shortcut, noisy], dim=1), scaled
        else:
            hidden = torch.cat([shortcut, noisy], dim=2)
            p_t, p_h, p_w = self.transformer.config.patch_size
            per_frame = (noisy.shape[3] // p_h) * (noisy.shape[4] // p_w) // p_t
            timestep = torch.cat([torch.zeros(len(t), per_frame, device=self.device), scaled[:, None].expand(-1, per_frame)], 1)
        if self.config.coordinate_channels:
            hidden = torch.cat([hidden, coordinate_ramps(hidden)], dim=1)
        output = self.transformer(hidden.to(dtype), timestep, encoder_hidden_states=context.to(dtype), return_dict=False)[0]
        return output[:, :, -noisy.shape[2]:].float()

    def latent_shape(self) -> tuple[int, int, int, int]:
        factor = 2 ** (len(self.vae.config.dim_mult) - 1)
        side = self.config.image_size // factor
        return (self.vae.config.z_dim, 1, side, side)

    def sample(self, context: torch.Tensor, shortcut: torch.Tensor | None, steps: int = 1, seed: int = 0) -> torch.Tensor:
        """`steps` Euler steps from pure noise (genmask.sampling); every sample gets the noise of `seed`."""
        noise = shared_noise(self.latent_shape(), context.shape[0], seed, self.device)
        return euler_sample(lambda x, t: self.velocity(x, t, context, shortcut), noise, steps,
                            self.config.inference_shift)

    @torch.no_grad()
    def predict_scores(self, images: list[np.ndarray | Image.Image], texts: list[str], steps: int = 1,
                       seed: int = 0) -> tuple[list[np.ndarray], float]:
        """Per image, the decoded mask score map at the image's own size, and the threshold that binarises it."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return [], self.config.mask_threshold
        images = [as_rgb_array(image) for image in images]
        size = self.config.image_size
        resized = [resize_image(image, size) for image in images]
        with self.timed("instruction_encoding"):
            context = self.encode_instructions(resized, texts)
        shortcut = None
        if self.config.shortcut != "none":
            with self.timed("vae_encoding"):
                shortcut = self.encode_pixels(images_to_tensor(resized))
        with self.timed("dit"):
            latents = self.sample(context, shortcut, steps, seed)
        if self.readout is None:
            with self.timed("vae_decoding"):
                decoded = self.decode_latents(latents)[:, :, 0].float().mean(1, keepdim=True)
            threshold = self.config.mask_threshold
        else:
            with self.timed("readout"):
                decoded, threshold = self.readout(latents), 0.0
        scores = []
        for score, image in zip(decoded, images):
            height, width = image.shape[:2]
            score = F.interpolate(score[None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            scores.append(score.float().cpu().numpy())
        return scores, threshold

    @torch.no_grad()
    def predict(self, images: list[np.ndarray | Image.Image], texts: list[str], steps: int = 1,
                seed: int = 0) -> list[np.ndarray]:
        """Boolean masks at each image's own size for PIL images or uint8 HxWx3 arrays and their instructions."""
        scores, threshold = self.predict_scores(images, texts, steps, seed)
        return [score > threshold for score in scores]


@torch.no_grad()
def generate_images(model: GenMask, captions: list[str], steps: int = 25, seed: int = 0) -> list[np.ndarray]:
    """Text-to-image with the DiT: uint8 HxWx3 images at the model's size. The encoder reads the caption alone
    and the shortcut input is the zero latent, as in joint training's text-to-image samples."""
    context = model.encode_instructions([None] * len(captions), captions)
    shortcut = None
    if model.config.shortcut != "none":
        shortcut = torch.zeros((len(captions), *model.latent_shape()), device=model.device)
    pixels = model.decode_latents(model.sample(context, shortcut, steps, seed))[:, :, 0]
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    return list(array.cpu().numpy())


def coordinate_ramps(like: torch.Tensor) -> torch.Tensor:
    """x and y in [-1, 1] over the latent grid, as (B, 2, F, h, w) channels shaped like `like` (B, C, F, h, w)."""
    batch, _, frames, height, width = like.shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, height, device=like.device),
                          torch.linspace(-1, 1, width, device=like.device), indexing="ij")
    return torch.stack([x, y])[None, :, None].expand(batch, 2, frames, height, width).to(like.dtype)


def check_inputs(config: GenMaskConfig) -> None:
    """A known shortcut mode, and the DiT's input channels set to fit it: the latent's, twice that for "channel",
    plus two for coordinate channels."""
    if config.shortcut not in SHORTCUT_MODES:
        raise ValueError(f"unknown shortcut mode {config.shortcut!r}; known: {', '.join(SHORTCUT_MODES)}")
    config.transformer.in_channels = (config.vae.z_dim * (2 if config.shortcut == "channel" else 1)
                                      + (2 if config.coordinate_channels else 0))


def widen_patch_embedding(transformer: WanTransformer3DModel, in_channels: int) -> WanTransformer3DModel:
    """Let a DiT trained on `C` input channels take `in_channels` >= C: the extra channels come first (the
    shortcut image latent) with zero weights, so at the start the DiT computes exactly what it was trained to."""
    old = transformer.patch_embedding
    if old.in_channels == in_channels:
        return transformer
    if in_channels < old.in_channels:
        raise ValueError(f"cannot narrow the patch embedding from {old.in_channels} to {in_channels} channels")
    new = nn.Conv3d(in_channels, old.out_channels, old.kernel_size, old.stride, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, in_channels - old.in_channels:] = old.weight
        new.bias.copy_(old.bias)
    transformer.patch_embedding = new.to(old.weight.device)
    transformer.register_to_config(in_channels=in_channels)
    return transformer


def parameter_counts(model: GenMask) -> dict[str, int]:
    """Parameters per component (works on the meta device)."""
    parts: dict[str, Any] = {"transformer": model.transformer, "vae": model.vae,
                             "instruction_encoder": model.instruction_encoder, "text_projection": model.text_projection}
    return {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
