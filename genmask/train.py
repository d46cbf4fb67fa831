"""Training: `vae` stage (the tiny VAE on images + masks) and `dit` stage (flow matching on cached latents).

    python -m bench train --model genmask --preset tiny --stage vae --out DIR/vae-run
    python -m bench train --model genmask --preset tiny --stage dit --out DIR/dit-run train.vae_dir=DIR/vae-run/vae

Both stages are seeded and resumable (`--resume`): weights are saved as safetensors, the optimizer with
torch.save and read back with `weights_only=True`, the step in state.json; every batch and every noise draw
is a function of (seed, step), so a resumed run continues exactly as an uninterrupted one would.
Data: `bench.synth` scenes; the dit stage encodes them once with the frozen VAE and caches the latents under
~/.cache/genmask-bench/latents/<key> (override with GENMASK_CACHE), keyed by VAE weights and data settings.
Text-to-image samples (`bench.synth.iter_captions`) have no input image: the encoder reads the caption
alone and the shortcut frame is a zero latent (the mean latent) at timestep 0, so mixed batches keep one shape.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from genmask.config import GenMaskConfig, apply_overrides, load_override_file, preset
from genmask.model import GenMask, images_to_tensor, masks_to_tensor
from genmask.timesteps import sample_timesteps

VAL_SEED_OFFSET = 1_000_003  # validation scenes come from a different synth stream than training scenes


def cache_root() -> Path:
    return Path(os.environ.get("GENMASK_CACHE", Path.home() / ".cache" / "genmask-bench")) / "latents"


# ------------------------------------------------------------------------------------------ data
@dataclass
class SegData:
    """Segmentation samples: images, masks, instructions, kinds and (after encoding) latents."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # bool (N, H, W)
    texts: list[str]
    kinds: list[str]
    rules: list[str] = field(default_factory=list)  # finer than kinds: expression kind or reasoning rule
    image_latents: np.ndarray | None = None  # float16 (N, C, 1, h, w), normalised
    mask_latents: np.ndarray | None = None


def synth_segmentation(seed: int, count: int, image_size: int) -> SegData:
    from bench.synth import iter_training_samples

    samples = list(itertools.islice(iter_training_samples(seed, task="both", image_size=image_size), count))
    return SegData(np.stack([s.image for s in samples]), np.stack([s.mask for s in samples]).astype(bool),
                   [s.text for s in samples], [s.kind for s in samples], [s.rule for s in samples])


def synth_captions(seed: int, count: int, image_size: int) -> tuple[np.ndarray, list[str]]:
    from bench.synth import iter_captions

    pairs = list(itertools.islice(iter_captions(seed, image_size=image_size), count))
    return np.stack([image for image, _ in pairs]), [text for _, text in pairs]


@torch.no_grad()
def encode_batched(model: GenMask, pixels: torch.Tensor, batch: int = 64, label: str = "encoding") -> np.ndarray:
    """Normalised VAE latents of (N, 3, 1, H, W) pixels, as float16."""
    parts = [model.encode_pixels(pixels[i : i + batch]).half().cpu() for i in tqdm(range(0, len(pixels), batch), desc=label)]
    return torch.cat(parts).numpy()


def cached_latents(model: GenMask, key_parts: dict, build: callable) -> dict[str, np.ndarray]:
    """Arrays from the on-disk cache for this key, or built by `build()` and stored (npy files, no pickle)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(json.dumps(key_parts, sort_keys=True).encode())
    directory = cache_root() / digest.hexdigest()[:20]
    names = key_parts["arrays"]
    if all((directory / f"{name}.npy").exists() for name in names):
        return {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in names}
    arrays = build()
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        np.save(directory / f"{name}.npy", arrays[name], allow_pickle=False)
    (directory / "key.json").write_text(json.dumps(key_parts, indent=2), encoding="utf-8")
    return arrays


def load_seg_data(model: GenMask, seed: int, count: int) -> SegData:
    """Synthetic segmentation samples with their cached image and mask latents."""
    data = synth_segmentation(seed, count, model.config.image_size)

    def build() -> dict[str, np.ndarray]:
        return {"image_latents": encode_batched(model, images_to_tensor(list(data.images)), label="image latents"),
                "mask_latents": encode_batched(model, masks_to_tensor(list(data.masks)), label="mask latents")}

    arrays = cached_latents(model, {"kind": "seg", "seed": seed, "count": count, "size": model.config.image_size,
                                    "arrays": ["image_latents", "mask_latents"]}, build)
    data.image_latents, data.mask_latents = arrays["image_latents"], arrays["mask_latents"]
    return data


def load_caption_data(model: GenMask, seed: int, count: int) -> tuple[list[str], np.ndarray]:
    """Captions and the cached latents of their images (text-to-image samples)."""
    images, texts = synth_captions(seed, count, model.config.image_size)
    arrays = cached_latents(
        model, {"kind": "captions", "seed": seed, "count": count, "size": model.config.image_size, "arrays": ["latents"]},
        lambda: {"latents": encode_batched(model, images_to_tensor(list(images)), label="caption latents")},
    )
    return texts, arrays["latents"]


# ------------------------------------------------------------------------------------ evaluation
def predict_masks(model: GenMask, images: np.ndarray, texts: list[str], steps: int, seed: int = 0,
                  batch: int = 64) -> np.ndarray:
    """Boolean masks (N, H, W) for images and instructions, in batches, in eval mode."""
    was_training = model.training
    model.eval()
    masks = [mask for start in range(0, len(texts), batch)
             for mask in model.predict(list(images[start : start + batch]), texts[start : start + batch], steps=steps,
                                       seed=seed)]
    model.train(was_training)
    return np.stack(masks)


def overlaps(predicted: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample intersection and union pixel counts of two (N, H, W) boolean stacks."""
    return (predicted & target).sum(axis=(1, 2)).astype(float), (predicted | target).sum(axis=(1, 2)).astype(float)


def ciou(inter: np.ndarray, union: np.ndarray) -> float:
    """Cumulative IoU: sum I / sum U."""
    return float(inter.sum() / max(union.sum(), 1))


def giou(inter: np.ndarray, union: np.ndarray) -> float:
    """Mean per-sample IoU; an empty union counts as 1."""
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def summarise(inter: np.ndarray, union: np.ndarray, kinds: list[str], rules: list[str]) -> dict:
    """cIoU and gIoU overall and per kind; cIoU per rule."""
    kind_array, result = np.array(kinds), {}
    for kind in ["all", *sorted(set(kinds))]:
        chosen = np.ones(len(kinds), bool) if kind == "all" else kind_array == kind
        result[f"ciou_{kind}"] = ciou(inter[chosen], union[chosen])
        result[f"giou_{kind}"] = giou(inter[chosen], union[chosen])
    rule_array = np.array(rules)
    if len(rules) == len(kinds):
        result["ciou_by_rule"] = {rule: ciou(inter[rule_array == rule], union[rule_array == rule])
                                  for rule in sorted(set(rules))}
    return result


def evaluate(model: GenMask, data: SegData, steps: int, seed: int = 0, batch: int = 64) -> dict:
    """Validation metrics of `steps`-step predictions (see `summarise`)."""
    predicted = predict_masks(model, data.images, data.texts, steps, seed, batch)
    return summarise(*overlaps(predicted, data.masks), data.kinds, data.rules)


# ---------------------------------------------------------------------------- checkpoint helpers
class Checkpoint:
    """Resumable training state in a directory: model.safetensors, optimizer.pt, state.json."""

    def __init__(self, directory: Path):
        self.directory = directory / "checkpoint"

    def save(self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(tensors, self.directory / "model.safetensors.tmp")
        torch.save(optimizer.state_dict(), self.directory / "optimizer.pt.tmp")
        (self.directory / "state.json.tmp").write_text(json.dumps(state, indent=2), encoding="utf-8")
        for name in ("model.safetensors", "optimizer.pt", "state.json"):  # replace all three only when written
            os.replace(self.directory / f"{name}.tmp", self.directory / name)

    def load(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        state_file = self.directory / "state.json"
        if not state_file.exists():
            raise FileNotFoundError(f"{state_file}: nothing to resume (no checkpoint in this --out directory)")
        module.load_state_dict(load_file(self.directory / "model.safetensors"))
        optimizer.load_state_dict(torch.load(self.directory / "optimizer.pt", weights_only=True))
        return json.loads(state_file.read_text(encoding="utf-8"))


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int, rank: int = 0, world_size: int = 1) -> torch.Generator:
    """The random stream of one process's training step: a pure function of (seed, step, rank, world size), so
    resuming is exact and every process of a multi-process run draws its own samples."""
    return torch.Generator().manual_seed((seed * 1_000_033 + step) * world_size + rank)


def agree(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process if it is true on any: time-based stops must be taken by all processes together."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).max() > 0)


def log_line(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------------ VAE stage
def build_vae(config: GenMaskConfig) -> AutoencoderKLWan:
    kwargs = {k: v for k, v in vars(config.vae).items() if v is not None}
    return AutoencoderKLWan(**kwargs, scale_factor_spatial=2 ** (len(config.vae.dim_mult) - 1))


def mask_reconstruction_iou(vae: AutoencoderKLWan, masks: np.ndarray) -> float:
    """IoU (sum I / sum U) of masks after a VAE round trip, thresholded at 0 like predictions."""
    with torch.no_grad():
        pixels = masks_to_tensor(list(masks))
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample[:, :, 0].mean(1) > 0
    target = torch.from_numpy(masks)
    return float((decoded & target).sum() / (decoded | target).sum())


class VAELoss(nn.Module):
    """Wraps the VAE so accelerate can prepare one module whose forward returns the autoencoding loss."""

    def __init__(self, vae: AutoencoderKLWan, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(pixels).latent_dist
        # deterministic autoencoding (the posterior mode), as latents are always taken at the mode; the small KL
        # term only keeps the latent scale bounded
        reconstruction = self.vae.decode(posterior.mode()).sample
        return F.mse_loss(reconstruction, pixels) + self.kl_weight * posterior.kl().mean()


def train_vae(config: GenMaskConfig, out: Path, resume: bool) -> dict:
    """Train the VAE on an even mix of images and masks; measure latent statistics and mask IoU at the end."""
    train = config.train
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(train.seed)
    vae = build_vae(config)
    data = synth_segmentation(train.seed, train.train_samples, config.image_size)
    val = synth_segmentation(train.seed + VAL_SEED_OFFSET, train.val_samples, config.image_size)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=train.vae_lr)
    checkpoint, start = Checkpoint(out), 0
    if resume:
        start = checkpoint.load(vae, optimizer)["step"]
    loss_module, optimizer = accelerator.prepare(VAELoss(vae, train.vae_kl_weight), optimizer)
    main = accelerator.is_main_process
    log, last_save, begin = out / "log.jsonl", time.time(), time.time()
    progress = tqdm(range(start, train.vae_steps), initial=start, total=train.vae_steps, desc="vae", disable=not main)
    for step in progress:
        generator = step_generator(train.seed, step, accelerator.process_index, accelerator.num_processes)
        index = torch.randint(len(data.texts), (train.vae_batch_size,), generator=generator).numpy()
        half = train.vae_batch_size // 2
        pixels = torch.cat([images_to_tensor(list(data.images[index[:half]])),
                            masks_to_tensor(list(data.masks[index[half:]]))]).to(accelerator.device)
        for group in optimizer.param_groups:
            group["lr"] = train.vae_lr * lr_factor(step, train.warmup_steps, train.vae_steps, train.min_lr_ratio)
        loss = loss_module(pixels)
        optimizer.zero_grad()
        accelerator.backward(loss)
        if train.grad_clip:
            accelerator.clip_grad_norm_(vae.parameters(), train.grad_clip)
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if step % 50 == 0 and main:
            log_line(log, {"stage": "vae", "step": step, "loss": loss.item(), "elapsed": time.time() - begin})
        if main and time.time() - last_save > train.checkpoint_minutes * 60:
            checkpoint.save(vae, optimizer, {"step": step + 1})
            last_save = time.time()
    accelerator.wait_for_everyone()
    vae.eval()
    if not main:
        return {}
    checkpoint.save(vae, optimizer, {"step": train.vae_steps})
    with torch.no_grad():
        sample = torch.cat([images_to_tensor(list(data.images[:256])), masks_to_tensor(list(data.masks[:256]))])
        latents = torch.cat([vae.encode(sample[i : i + 64]).latent_dist.mode() for i in range(0, len(sample), 64)])
    mean = latents.mean(dim=(0, 2, 3, 4)).tolist()
    std = latents.std(dim=(0, 2, 3, 4)).tolist()
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    metrics = {"mask_iou_val": mask_reconstruction_iou(vae, val.masks), "steps": train.vae_steps,
               "wall_seconds_this_run": time.time() - begin}
    (out / "vae" / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    log_line(log, {"stage": "vae", "final": metrics})
    return metrics


# ------------------------------------------------------------------------------------ DiT stage
class FlowMatchingLoss(nn.Module):
    """Wraps GenMask so accelerate can prepare one module whose forward returns the training loss."""

    def __init__(self, model: GenMask):
        super().__init__()
        self.model = model

    def forward(self, images: list[np.ndarray | None], texts: list[str], x0: torch.Tensor, shortcut: torch.Tensor | None,
                t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        context = self.model.encode_instructions(images, texts)
        shape = (-1, 1, 1, 1, 1)
        noisy = (1 - t.view(shape)) * x0 + t.view(shape) * noise
        velocity = self.model.velocity(noisy, t, context, shortcut)
        return F.mse_loss(velocity, noise - x0)


def make_batch(model: GenMask, seg: SegData, captions: tuple[list[str], np.ndarray] | None, step: int,
               rank: int = 0, world_size: int = 1) -> dict:
    """One process's training batch, all randomness from (seed, step, rank): segmentation samples first, then
    text-to-image. `train.batch_size` is per process."""
    train = model.config.train
    generator = step_generator(train.seed, step, rank, world_size)
    n_seg = train.batch_size if captions is None else round(train.batch_size * train.seg_fraction)
    n_gen = train.batch_size - n_seg
    seg_index = torch.randint(len(seg.texts), (n_seg,), generator=generator).numpy()
    images: list[np.ndarray | None] = list(seg.images[seg_index])
    texts = [seg.texts[i] for i in seg_index]
    x0 = [torch.from_numpy(seg.mask_latents[seg_index]).float()]
    shortcut = [torch.from_numpy(seg.image_latents[seg_index]).float()]
    t = [sample_timesteps(train.seg_sampler, n_seg, generator, **train.seg_sampler_params)]
    if n_gen:
        gen_texts, gen_latents = captions
        gen_index = torch.randint(len(gen_texts), (n_gen,), generator=generator).numpy()
        images += [None] * n_gen
        texts += [gen_texts[i] for i in gen_index]
        x0.append(torch.from_numpy(gen_latents[gen_index]).float())
        shortcut.append(torch.zeros_like(x0[-1]))
        t.append(sample_timesteps(train.gen_sampler, n_gen, generator, **train.gen_sampler_params))
    x0_all = torch.cat(x0)
    return {"images": images, "texts": texts, "x0": x0_all, "t": torch.cat(t),
            "shortcut": torch.cat(shortcut) if model.config.shortcut else None,
            "noise": torch.randn(x0_all.shape, generator=generator)}


def train_dit(config: GenMaskConfig, out: Path, resume: bool) -> dict:
    """Flow-matching training of the DiT, the instruction encoder (unless frozen) and the projection."""
    train = config.train
    if not train.vae_dir:
        raise ValueError("the dit stage needs a trained VAE: set train.vae_dir=DIR (the vae stage's OUT/vae)")
    torch.manual_seed(train.seed)
    model = GenMask.from_config(config)
    model.vae = AutoencoderKLWan.from_pretrained(train.vae_dir, use_safetensors=True).eval().requires_grad_(False)
    model.sync_vae_statistics()
    if config.encoder.freeze:
        model.instruction_encoder.requires_grad_(False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    with accelerator.main_process_first():  # the main process fills the latent cache, the others read it
        seg = load_seg_data(model, train.seed, train.train_samples)
        captions = load_caption_data(model, train.seed, train.caption_samples) if train.seg_fraction < 1 else None
    val = synth_segmentation(train.seed + VAL_SEED_OFFSET, train.val_samples, config.image_size) if main else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
    checkpoint, state = Checkpoint(out), {"step": 0, "wall_seconds": 0.0}
    if resume:
        state = checkpoint.load(model, optimizer)
    loss_module, optimizer = accelerator.prepare(FlowMatchingLoss(model), optimizer)
    log, begin, last_save = out / "log.jsonl", time.time(), time.time()
    wall_before = state["wall_seconds"]
    smoothed, done = None, state["step"]
    progress = tqdm(range(state["step"], train.steps), initial=state["step"], total=train.steps, desc="dit",
                    disable=not main)

    def save(step: int) -> None:
        checkpoint.save(model, optimizer, {"step": step, "wall_seconds": wall_before + time.time() - begin})

    for step in progress:
        batch = make_batch(model, seg, captions, step, accelerator.process_index, accelerator.num_processes)
        for group in optimizer.param_groups:
            group["lr"] = train.lr * lr_factor(step, train.warmup_steps, train.steps, train.min_lr_ratio)
        loss = loss_module(**{k: (v.to(accelerator.device) if torch.is_tensor(v) else v) for k, v in batch.items()})
        optimizer.zero_grad()
        accelerator.backward(loss)
        if train.grad_clip:
            accelerator.clip_grad_norm_(trainable, train.grad_clip)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        progress.set_postfix(loss=f"{smoothed:.4f}")
        done = step + 1
        if step % 50 == 0 and main:
            log_line(log, {"stage": "dit", "step": step, "loss": loss.item(), "smoothed": smoothed,
                           "lr": optimizer.param_groups[0]["lr"], "wall": wall_before + time.time() - begin})
        if train.eval_every and done % train.eval_every == 0 and main:
            log_line(log, {"stage": "dit", "step": done, "val_1step": evaluate(model, val, 1),
                           "wall": wall_before + time.time() - begin})
        if main and time.time() - last_save > train.checkpoint_minutes * 60:
            save(done)
            last_save = time.time()
        # the same config on every process, so only a time limit costs a collective per step
        out_of_time = bool(train.max_minutes) and agree(accelerator, time.time() - begin > train.max_minutes * 60)
        if out_of_time or done == train.stop_at_step:
            progress.close()
            break
    accelerator.wait_for_everyone()
    if not main:
        return {}
    save(done)
    model.eval()
    metrics = {"step": done,
               "wall_seconds": wall_before + time.time() - begin,
               "val_1step": evaluate(model, val, 1), "val_4step": evaluate(model, val, 4)}
    model.save_pretrained(out / "final")
    (out / "final" / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    log_line(log, {"stage": "dit", "final": metrics})
    return metrics


# -------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench train --model genmask", description="Train GenMask (vae or dit stage).")
    parser.add_argument("--preset", default="tiny", help="named preset: tiny, paper, micro (default tiny)")
    parser.add_argument("--config", help="JSON or TOML file of (nested) config overrides")
    parser.add_argument("--stage", choices=["vae", "dit"], default="dit")
    parser.add_argument("--out", default=".cache/train/genmask", help="output directory (checkpoints, log, final model)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, dotted for nested keys")
    return parser


def resolve_config(args: argparse.Namespace) -> GenMaskConfig:
    config = preset(args.preset)
    if args.config:
        load_override_file(config, args.config)
    return apply_overrides(config, args.overrides)


def cli_main(argv: list[str]) -> int:
    """Entry point for `python -m bench train --model genmask ...` (argv without those first words)."""
    args = build_parser().parse_intermixed_args(argv)  # key=value overrides may come before or after options
    config = resolve_config(args)
    torch.set_num_threads(config.train.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    main = os.environ.get("RANK", "0") == "0"  # under torchrun / accelerate launch only rank 0 writes
    if main:
        (out / f"config-{args.stage}.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    metrics = train_vae(config, out, args.resume) if args.stage == "vae" else train_dit(config, out, args.resume)
    if main:
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(cli_main(sys.argv[1:]))
