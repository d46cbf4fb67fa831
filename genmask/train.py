"""GenMask training: `vae` stage (the tiny VAE on images + masks), `t2i` stage (the text-to-image foundation)
and `dit` stage (segmentation, optionally joint with text-to-image), all flow matching on cached latents.

    python -m bench train --model genmask --preset tiny --stage vae --out DIR/vae-run
    python -m bench train --model genmask-vlm --preset tiny --out DIR/vlm-run        (genmask.vlm)
    python -m bench train --model genmask --preset tiny --stage t2i --out DIR/t2i-run \
        train.vae_dir=DIR/vae-run/vae train.init=foundation train.vlm_dir=DIR/vlm-run/final
    python -m bench train --model genmask --preset tiny --stage dit --out DIR/dit-run train.vae_dir=DIR/vae-run/vae \
        train.init=foundation train.vlm_dir=DIR/vlm-run/final train.dit_dir=DIR/t2i-run/final

The t2i stage is the dit stage with `T2I_STAGE` settings first (captions only, no shortcut, the encoder frozen
so that it stays the VLM foundation); `train.init=scratch` trains every part from random weights instead.

What is generic comes from the harness's toolkit (`bench.training`): seeded (seed, step, rank) batches, the
warm-up + cosine schedule (kept by a resumed run; `--new-schedule` to change it), optional EMA weights
(`train.ema_decay`), safetensors checkpoints with exact resume, the array cache, cIoU/gIoU validation through
`bench.metrics`, the JSONL log. What stays here is GenMask's: the VAE stage, the flow-matching loss, the
batches that mix segmentation with text-to-image samples, and the synthetic data with its latents.
Data: `bench.synth` scenes; the dit stage encodes them once with the frozen VAE and caches the latents
(`bench.training.cache`: $BENCH_CACHE or $GENMASK_CACHE, default ~/.cache/genmask-bench), keyed by the VAE
weights and data settings. Text-to-image samples (`bench.synth.iter_captions`) have no input image: the
encoder reads the caption alone and the shortcut frame is a zero latent (the mean latent) at timestep 0, so
mixed batches keep one shape.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from torch import nn

from bench.training.cache import cached_arrays
from bench.training.checkpoint import begin_training
from bench.training.ema import averaged
from bench.training.heldout import VAL_SEED_OFFSET, SegData, synth_segmentation, validation_data
from bench.training.log import JsonlLog
from bench.training.loop import StepLoop
from bench.training.process import make_accelerator
from bench.training.seeding import step_generator
from bench.training.stream import GroupedSegData, draw_items
from bench.training.validation import ciou, sample_scores, validation_metrics
from genmask.config import GenMaskConfig, TrainConfig
from genmask.data import coco_captions, encode_batched, load_grouped_data
from genmask.model import GenMask, check_inputs, images_to_tensor, masks_to_tensor, widen_patch_embedding
from genmask.timesteps import density, sample_timesteps


# ------------------------------------------------------------------------------------------ data
def synth_captions(seed: int, count: int, image_size: int) -> tuple[np.ndarray, list[str]]:
    from bench.synth import iter_captions

    pairs = list(itertools.islice(iter_captions(seed, image_size=image_size), count))
    return np.stack([image for image, _ in pairs]), [text for _, text in pairs]


def load_caption_data(model: GenMask) -> tuple[list[str], np.ndarray]:
    """Captions (`train.captions`: "synth" or a COCO captions file) and the cached latents of their images."""
    train, size = model.config.train, model.config.image_size
    if train.captions == "synth":
        images, texts = synth_captions(train.seed, train.caption_samples, size)
    else:
        images, texts = coco_captions(train.captions, size, train.caption_samples)
    arrays = cached_arrays(
        ["latents"], {"kind": "captions", "source": train.captions, "seed": train.seed,
                      "count": train.caption_samples, "size": size},
        lambda: {"latents": encode_batched(model, images_to_tensor(list(images)), label="caption latents")},
        modules=[model.vae],
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


def evaluate(model: GenMask, data: SegData | None, steps: int, seed: int = 0, batch: int = 64) -> dict:
    """Validation cIoU/gIoU of `steps`-step predictions, overall, per kind and per rule (`validation_metrics`)."""
    if data is None:
        return {}
    predicted = predict_masks(model, data.images, data.texts, steps, seed, batch)
    return validation_metrics(predicted, data.masks, data.kinds, data.rules)


# ------------------------------------------------------------------------------------ VAE stage
def build_vae(config: GenMaskConfig) -> AutoencoderKLWan:
    kwargs = {k: v for k, v in vars(config.vae).items() if v is not None}
    return AutoencoderKLWan(**kwargs, scale_factor_spatial=2 ** (len(config.vae.dim_mult) - 1))


def mask_reconstruction_iou(vae: AutoencoderKLWan, masks: np.ndarray) -> float:
    """cIoU of masks after a VAE round trip, thresholded at 0 like predictions."""
    with torch.no_grad():
        pixels = masks_to_tensor(list(masks))
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample[:, :, 0].mean(1) > 0
    return ciou(sample_scores(decoded.cpu().numpy(), masks))


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


def vae_recipe(train: TrainConfig) -> TrainConfig:
    """The vae stage's recipe: its own lr and steps, AdamW's default weight decay (0.01, which the shipped VAE was
    trained with), and no stop rules (the stage always runs to its end and then writes OUT/vae)."""
    return dataclasses.replace(train, lr=train.vae_lr, steps=train.vae_steps, weight_decay=0.01, max_minutes=0.0,
                               stop_at_step=0)


def train_vae(config: GenMaskConfig, out: Path, resume: bool = False, new_schedule: bool = False) -> dict:
    """Train the VAE on an even mix of images and masks; measure latent statistics and mask IoU at the end."""
    train = config.train
    accelerator = make_accelerator()
    torch.manual_seed(train.seed)
    vae = build_vae(config)
    data = synth_segmentation(train.seed, train.train_samples, config.image_size)
    val = synth_segmentation(train.seed + VAL_SEED_OFFSET, train.val_samples, config.image_size)
    recipe = vae_recipe(train)
    run = begin_training(out, vae, vae.parameters(), recipe, resume=resume, new_schedule=new_schedule)
    loss_module, optimizer = accelerator.prepare(VAELoss(vae, train.vae_kl_weight), run.optimizer)
    main = accelerator.is_main_process
    loop = StepLoop(accelerator=accelerator, model=vae, parameters=vae.parameters(), optimizer=optimizer,
                    schedule=run.schedule, ema=run.ema, checkpoint=run.checkpoint,
                    log=JsonlLog(out / "log.jsonl", main), stage="vae", train=recipe, start=run.start,
                    wall_before=run.wall_before)
    half = train.vae_batch_size // 2
    for step in loop.steps():
        generator = step_generator(train.seed, step, accelerator.process_index, accelerator.num_processes)
        index = torch.randint(len(data.texts), (train.vae_batch_size,), generator=generator).numpy()
        pixels = torch.cat([images_to_tensor(list(data.images[index[:half]])),
                            masks_to_tensor(list(data.masks[index[half:]]))]).to(accelerator.device)
        loop.learning_rate(step)
        loop.step(step, loss_module(pixels))
    loop.finish()
    vae.eval()
    if not main:
        return {}
    with averaged(run.ema), torch.no_grad():
        sample = torch.cat([images_to_tensor(list(data.images[:256])), masks_to_tensor(list(data.masks[:256]))])
        latents = torch.cat([vae.encode(sample[i : i + 64]).latent_dist.mode() for i in range(0, len(sample), 64)])
        vae.register_to_config(latents_mean=latents.mean(dim=(0, 2, 3, 4)).tolist(),
                               latents_std=latents.std(dim=(0, 2, 3, 4)).tolist())
        vae.save_pretrained(out / "vae", safe_serialization=True)
        metrics = {"mask_iou_val": mask_reconstruction_iou(vae, val.masks), "steps": train.vae_steps,
                   "wall_seconds_this_run": time.time() - loop.begin}
    (out / "vae" / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    loop.log.write({"stage": "vae", "final": metrics})
    return metrics


# ------------------------------------------------------------------------------------ DiT stage
READOUT_LOGIT_SCALE = 3.0  # the linear readout fits +-1 targets; x3 makes them confident logits (p ~ 0.95)


class FlowMatchingLoss(nn.Module):
    """Wraps GenMask so accelerate can prepare one module whose forward returns the training loss: the latent MSE
    of the velocity, plus, with a `readout` and `mask_weight` > 0, BCE + Dice of the segmentation samples' one-step
    x0 = x_t - t v read to pixels (the first `len(masks)` samples of the batch are the segmentation ones)."""

    def __init__(self, model: GenMask, readout: nn.Module | None = None, mask_weight: float = 0.0):
        super().__init__()
        self.model, self.readout, self.mask_weight = model, readout, mask_weight

    def forward(self, images: list[np.ndarray | None], texts: list[str], x0: torch.Tensor, shortcut: torch.Tensor | None,
                t: torch.Tensor, noise: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        context = self.model.encode_instructions(images, texts)
        shape = (-1, 1, 1, 1, 1)
        noisy = (1 - t.view(shape)) * x0 + t.view(shape) * noise
        velocity = self.model.velocity(noisy, t, context, shortcut)
        loss = F.mse_loss(velocity, noise - x0)
        if masks is None or self.readout is None or not self.mask_weight:
            return loss
        n = len(masks)
        predicted_x0 = noisy[:n] - t[:n].view(shape) * velocity[:n]
        return loss + self.mask_weight * mask_loss(READOUT_LOGIT_SCALE * self.readout(predicted_x0)[:, 0], masks)


def mask_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice (1 - 2|p y| / (|p| + |y|), smoothed by 1) of (B, H, W) logits against boolean masks: Dice
    weighs a small target as much as a large one."""
    target = masks.float()
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum((1, 2))
    dice = 1 - (2 * overlap + 1) / (probability.sum((1, 2)) + target.sum((1, 2)) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def make_batch(model: GenMask, seg: GroupedSegData | None, captions: tuple[list[str], np.ndarray] | None,
               step: int, rank: int = 0, world_size: int = 1) -> dict:
    """One process's training batch, all randomness from (seed, step, rank): segmentation samples first (in
    groups of instructions on the same image, `bench.training.stream.draw_items`), then text-to-image (whose shortcut is
    the zero latent). `train.batch_size` is per process; `train.seg_fraction=0` pretrains text-to-image alone."""
    train = model.config.train
    generator = step_generator(train.seed, step, rank, world_size)
    n_seg = train.batch_size if captions is None else round(train.batch_size * train.seg_fraction)
    n_gen = train.batch_size - n_seg
    images: list[np.ndarray | None] = []
    texts: list[str] = []
    x0, shortcut, t = [], [], []
    extra: dict[str, torch.Tensor] = {}
    if n_seg:
        items = [seg.items[i] for i in draw_items(seg, n_seg, train, generator)]
        image_index = np.array([item.image for item in items], dtype=np.int64)
        images += list(seg.images[image_index])
        texts += [item.text for item in items]
        x0.append(torch.from_numpy(seg.mask_latents[[item.mask for item in items]]).float())
        shortcut.append(torch.from_numpy(seg.image_latents[image_index]).float())
        t.append(sample_timesteps(train.seg_sampler, n_seg, generator, **train.seg_sampler_params))
        if train.mask_loss_weight:
            extra["masks"] = torch.from_numpy(np.asarray(seg.masks[[item.mask for item in items]], dtype=bool))
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
            "shortcut": torch.cat(shortcut) if model.config.shortcut != "none" else None,
            "noise": torch.randn(x0_all.shape, generator=generator), **extra}


def build_model(config: GenMaskConfig) -> GenMask:
    """The model to train: random weights (`train.init=scratch`), adapted foundations (`foundation`) or a trained
    GenMask fine-tuned (`checkpoint`)."""
    from bench.synth import vocabulary

    if config.train.init == "scratch":
        return GenMask.from_config(config, vocabulary=list(vocabulary()))  # the processor ships in the checkpoint
    if config.train.init == "checkpoint":
        return from_checkpoint(config)
    if config.train.init != "foundation":
        raise ValueError(f"train.init must be 'scratch', 'foundation' or 'checkpoint', not {config.train.init!r}")
    if not config.train.vlm_dir:
        raise ValueError("train.init=foundation needs train.vlm_dir (a `bench train --model genmask-vlm` OUT/final)")
    return GenMask.from_foundations(config, config.train.vlm_dir, config.train.dit_dir or None)


def from_checkpoint(config: GenMaskConfig) -> GenMask:
    """A trained GenMask (`train.init_dir`) to fine-tune: its architecture, weights and VAE; this command's train
    section and shortcut mode (a wider one widens the patch embedding with zero weights, see
    `widen_patch_embedding`). Other architecture keys of this command are not used: the checkpoint's are."""
    if not config.train.init_dir:
        raise ValueError("train.init=checkpoint needs train.init_dir (a GenMask save_pretrained directory)")
    model = GenMask.from_pretrained(config.train.init_dir)
    model.config.train = config.train
    if config.shortcut != model.config.shortcut:
        print(f"init from {config.train.init_dir}: shortcut {model.config.shortcut} -> {config.shortcut}")
        model.config.shortcut = config.shortcut
        check_inputs(model.config)
        model.transformer = widen_patch_embedding(model.transformer, model.config.transformer.in_channels)
    return model


def train_dit(config: GenMaskConfig, out: Path, resume: bool = False, new_schedule: bool = False) -> dict:
    """Flow-matching training of the DiT, the instruction encoder (unless frozen) and the projection."""
    train = config.train
    if not train.vae_dir and train.init != "checkpoint":
        raise ValueError("the dit stage needs a trained VAE: set train.vae_dir=DIR (the vae stage's OUT/vae)")
    torch.manual_seed(train.seed)
    model = build_model(config)
    config = model.config  # init=checkpoint: the checkpoint's architecture
    if train.vae_dir:  # else the checkpoint's own VAE
        model.vae = AutoencoderKLWan.from_pretrained(train.vae_dir, use_safetensors=True)
    model.vae.eval().requires_grad_(False)
    model.sync_vae_statistics()
    if config.encoder.freeze:
        model.instruction_encoder.requires_grad_(False)
    accelerator = make_accelerator()
    main = accelerator.is_main_process
    untrained = train.steps == 0  # a no-training control: the starting weights evaluated and saved, no data encoded
    with accelerator.main_process_first():  # the main process fills the latent cache, the others read it
        seg = load_grouped_data(model) if train.seg_fraction > 0 and not untrained else None
        captions = load_caption_data(model) if train.seg_fraction < 1 and not untrained else None
    # held-out segmentation samples (t2i alone has none: see genmask.generate)
    val = validation_data(train, config.image_size) if main and train.seg_fraction > 0 else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    run = begin_training(out, model, trainable, train, resume=resume, new_schedule=new_schedule)
    start = run.start
    readout = None
    if train.mask_loss_weight and seg is not None:
        from genmask.readout import fit_readout

        readout = fit_readout(model, "linear")  # fixed: fitted on the frozen VAE's mask latents, never trained
    loss_module, optimizer = accelerator.prepare(FlowMatchingLoss(model, readout, train.mask_loss_weight),
                                                 run.optimizer)
    loop = StepLoop(accelerator=accelerator, model=model, parameters=trainable, optimizer=optimizer,
                    schedule=run.schedule, ema=run.ema, checkpoint=run.checkpoint,
                    log=JsonlLog(out / "log.jsonl", main), stage="dit", train=train, start=start,
                    wall_before=run.wall_before)
    flops_per_step = 0 if untrained else step_flops(
        loss_module, make_batch(model, seg, captions, start, accelerator.process_index, accelerator.num_processes),
        accelerator.device)
    for step in loop.steps():
        batch = make_batch(model, seg, captions, step, accelerator.process_index, accelerator.num_processes)
        loop.learning_rate(step)
        loss = loss_module(**{k: (v.to(accelerator.device) if torch.is_tensor(v) else v) for k, v in batch.items()})
        if loop.step(step, loss, validate=lambda: {"val_1step": evaluate(model, val, 1)}):
            break
    if not loop.finish():
        return {}
    model.eval()
    with averaged(run.ema):
        metrics = {"step": loop.done, "wall_seconds": loop.wall(),
                   "train_flops": flops_per_step * accelerator.num_processes * loop.done,
                   "val_1step": evaluate(model, val, 1), "val_4step": evaluate(model, val, 4),
                   **training_records(model)}
        model.save_pretrained(out / "final")
    (out / "final" / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    loop.log.write({"stage": "dit", "final": metrics})
    return metrics


def step_flops(loss_module: nn.Module, batch: dict, device: torch.device) -> int:
    """FLOPs of one training step's forward and backward on one process (`torch.utils.flop_counter`), the
    estimate the rivals record too; the gradients it leaves are cleared by the first step's zero_grad."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_module(**{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}).backward()
    return int(counter.get_total_flops())


def training_records(model: GenMask, points: int = 99) -> dict:
    """What a comparison of runs needs beyond validation: the segmentation timestep density trained with (on a
    grid of t), and with `train.generation_eval` the text-to-image quality on held-out captions."""
    from genmask.generate import generation_quality, held_out_captions
    from genmask.model import generate_images

    train = model.config.train
    records = {}
    if train.seg_fraction > 0:
        t = torch.linspace(0.01, 0.99, points, dtype=torch.float64)
        records["seg_timestep_density"] = {
            "sampler": train.seg_sampler, "params": dict(train.seg_sampler_params), "t": t.tolist(),
            "density": density(train.seg_sampler, t, **train.seg_sampler_params).tolist()}
    if train.generation_eval:
        captions, _ = held_out_captions(train.generation_eval, model.config.image_size)
        with torch.inference_mode():
            records["generation"] = generation_quality(generate_images(model, captions, seed=train.seed), captions)
    return records


if __name__ == "__main__":  # `python -m genmask.train ...` (torchrun, accelerate launch): the registered trainer
    import sys

    from bench.training import TRAINERS

    raise SystemExit(TRAINERS.get("genmask").main(sys.argv[1:]))
