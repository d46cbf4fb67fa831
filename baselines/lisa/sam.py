"""A tiny SAM from transformers' `SamModel`, SAM's pre- and post-processing, and its pretraining here.

The stand-in for SAM ViT-H in the tiny LISA: the same three parts (ViT image encoder with windowed and global
attention and a conv neck, prompt encoder, two-way-transformer mask decoder), scaled down to 64 px scenes, and
pretrained as SAM is, on class-agnostic masks prompted by points (1 to `max_points` clicks: the first inside the
object, the others inside or outside), never on text:

    python -m bench train --model sam-tiny --out DIR        (DIR/final: SamModel safetensors + metrics.json)

Every step draws fresh `bench.synth` scenes from its own stream (a pure function of seed, step and rank, so a
resumed run is exact); the held-out measure is the one-click mask IoU on scenes of another stream.
Preprocessing is SAM's (and LISA's): resize the longest side to the encoder's size, normalise with SAM's pixel
mean/std (0-255 scale), pad bottom-right with zeros; masks are upsampled to the padded size, cropped and resized
to the original image.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from bench.training import Trainer
from bench.training.heldout import VAL_SEED_OFFSET
from bench.training.overrides import apply_overrides
from bench.training.recipe import Recipe

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
SAM_STREAM = 2_000  # bench.synth's streams: suites < 100, training 1_000-1_002
CONFIG_FILE = "sam_tiny.json"
METRICS_FILE = "metrics.json"


# ------------------------------------------------------------------------------------------ model
@dataclass
class SamSizes:
    """The tiny SAM: 64 px input, 4 px patches -> a 16 x 16 embedding; the mask decoder upsamples 4x to 64 px."""

    image_size: int = 64
    patch_size: int = 4
    vision_hidden: int = 64
    vision_layers: int = 3
    vision_heads: int = 2
    window_size: int = 8
    global_attn_indexes: list[int] = field(default_factory=lambda: [2])
    prompt_dim: int = 64  # SAM's 256: the neck's output, the prompt and the mask decoder width
    decoder_layers: int = 2
    decoder_heads: int = 2
    decoder_mlp: int = 256
    mask_input_channels: int = 4


def sam_config(sizes: SamSizes) -> SamConfig:
    vision = SamVisionConfig(
        hidden_size=sizes.vision_hidden, output_channels=sizes.prompt_dim, num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.vision_heads, image_size=sizes.image_size, patch_size=sizes.patch_size,
        window_size=sizes.window_size, global_attn_indexes=list(sizes.global_attn_indexes),
        mlp_dim=4 * sizes.vision_hidden, num_pos_feats=sizes.prompt_dim // 2)
    prompt = SamPromptEncoderConfig(hidden_size=sizes.prompt_dim, image_size=sizes.image_size,
                                    patch_size=sizes.patch_size, mask_input_channels=sizes.mask_input_channels)
    decoder = SamMaskDecoderConfig(hidden_size=sizes.prompt_dim, mlp_dim=sizes.decoder_mlp,
                                   num_hidden_layers=sizes.decoder_layers, num_attention_heads=sizes.decoder_heads,
                                   iou_head_hidden_dim=sizes.prompt_dim)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_sam(sizes: SamSizes, seed: int = 0) -> SamModel:
    torch.manual_seed(seed)
    return SamModel(sam_config(sizes))


def encoder_size(sam: SamModel) -> int:
    size = sam.config.vision_config.image_size
    return int(size[0] if isinstance(size, list | tuple) else size)


# -------------------------------------------------------------------------------- pre/post-processing
def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """SAM's ResizeLongestSide: the longest side becomes `size`, the other is scaled and rounded (bilinear)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new = (int(width * scale + 0.5), int(height * scale + 0.5))
    if new == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize(new, Image.BILINEAR))


def sam_pixels(images: list[np.ndarray], size: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(B, 3, size, size) normalised, bottom-right zero-padded pixels and each image's resized (h, w)."""
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    batch = torch.zeros(len(images), 3, size, size)
    sizes = []
    for i, image in enumerate(images):
        resized = resize_longest(np.asarray(image)[..., :3], size)
        h, w = resized.shape[:2]
        batch[i, :, :h, :w] = (torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() - mean) / std
        sizes.append((h, w))
    return batch, sizes


def postprocess_masks(low_res: torch.Tensor, input_sizes: list[tuple[int, int]],
                      original_sizes: list[tuple[int, int]], size: int) -> list[torch.Tensor]:
    """Mask logits (B, 1, h, w) -> one (H, W) logit map per image: upsample to the padded input, crop the
    padding, resize to the original size (bilinear, as SAM's `postprocess_masks`)."""
    padded = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
    out = []
    for i, ((h, w), original) in enumerate(zip(input_sizes, original_sizes, strict=True)):
        crop = padded[i : i + 1, :, :h, :w]
        out.append(F.interpolate(crop, tuple(original), mode="bilinear", align_corners=False)[0, 0])
    return out


# ------------------------------------------------------------------------------------ losses
def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over masks of 1 - soft Dice, LISA's form (its scale 1000 cancels out of the ratio)."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    numerator = 2 * (prob * target).sum(-1)
    denominator = prob.sum(-1) + target.sum(-1)
    return (1 - (numerator + eps) / (denominator + eps)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy, averaged per mask and over masks (LISA's `sigmoid_ce_loss`)."""
    return F.binary_cross_entropy_with_logits(logits.flatten(1), target.flatten(1))


# ------------------------------------------------------------------------------------ data
def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SAM_STREAM, index)))


def sample_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` clicks (x, y) with labels: the first inside the mask, the others inside (1) or outside (0)."""
    inside = np.argwhere(mask)
    outside = np.argwhere(~mask)
    points, labels = [], []
    for k in range(count):
        positive = k == 0 or rng.random() < 0.5 or not len(outside)
        pool = inside if positive else outside
        y, x = pool[int(rng.integers(len(pool)))]
        points.append((float(x), float(y)))
        labels.append(int(positive))
    return np.array(points, dtype=np.float32), np.array(labels, dtype=np.int64)


@dataclass
class PointBatch:
    images: list[np.ndarray]
    points: torch.Tensor  # (B, P, N, 2) in input pixels
    labels: torch.Tensor  # (B, P, N)
    masks: torch.Tensor  # (B, P, H, W) float


def point_batch(seed: int, first_index: int, images: int, prompts: int, clicks: int, image_size: int,
                rng: np.random.Generator) -> PointBatch:
    """Scenes `first_index ...` of the SAM stream, `prompts` objects of each (distinct where it has enough),
    each prompted by `clicks` points."""
    from bench.synth import generate_scene

    batch_images, points, labels, masks = [], [], [], []
    for index in range(first_index, first_index + images):
        scene = generate_scene(scene_rng(seed, index), image_size)
        order = rng.permutation(len(scene.objects))
        chosen = [int(order[k % len(order)]) for k in range(prompts)]
        batch_images.append(scene.image)
        row_points, row_labels, row_masks = [], [], []
        for target in chosen:
            mask = scene.objects[target].mask
            p, lab = sample_points(mask, clicks, rng)
            row_points.append(p)
            row_labels.append(lab)
            row_masks.append(mask)
        points.append(np.stack(row_points))
        labels.append(np.stack(row_labels))
        masks.append(np.stack(row_masks))
    return PointBatch(batch_images, torch.from_numpy(np.stack(points)), torch.from_numpy(np.stack(labels)),
                      torch.from_numpy(np.stack(masks)).float())


def point_logits(sam: SamModel, pixels: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                 image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Single-mask (multimask_output=False) logits (B, P, h, w) for point prompts."""
    kwargs = {"image_embeddings": image_embeddings} if image_embeddings is not None else {"pixel_values": pixels}
    out = sam(input_points=points, input_labels=labels, multimask_output=False, **kwargs)
    return out.pred_masks[:, :, 0]


@torch.no_grad()
def one_click_iou(sam: SamModel, seed: int, scenes: int, image_size: int, batch: int = 32) -> dict[str, float]:
    """Held-out one-click IoU: every object of `scenes` fresh scenes, prompted by one seeded point inside it.
    `miou` averages over objects, `ciou` sums intersections over unions."""
    from bench.synth import generate_scene

    was_training = sam.training
    sam.eval()
    rng = np.random.default_rng(seed)
    inters, unions = [], []
    size = encoder_size(sam)
    for start in range(0, scenes, batch):
        for index in range(start, min(scenes, start + batch)):
            scene = generate_scene(scene_rng(seed, index), image_size)
            pixels, input_sizes = sam_pixels([scene.image], size)
            embeddings = sam.get_image_embeddings(pixels)
            masks = [obj.mask for obj in scene.objects]
            clicks = [sample_points(mask, 1, rng) for mask in masks]
            points = torch.from_numpy(np.stack([p for p, _ in clicks]))[None]
            labels = torch.from_numpy(np.stack([lab for _, lab in clicks]))[None]
            logits = point_logits(sam, pixels, points, labels, embeddings)[0]  # (P, h, w)
            for k, mask in enumerate(masks):
                predicted = postprocess_masks(logits[k : k + 1, None], input_sizes, [mask.shape], size)[0] > 0
                target = torch.from_numpy(mask)
                inters.append(int((predicted & target).sum()))
                unions.append(int((predicted | target).sum()))
    sam.train(was_training)
    inters_a, unions_a = np.array(inters), np.array(unions)
    return {"miou": float(np.mean(inters_a / np.maximum(unions_a, 1))), "ciou": float(inters_a.sum() / unions_a.sum()),
            "objects": len(inters), "scenes": scenes}


# ------------------------------------------------------------------------------------ training
@dataclass
class SamTrainConfig(Recipe):
    """Pretraining recipe: the shared one (`bench.training.recipe`, without EMA) and SAM's prompts and loss."""

    steps: int = 3000
    weight_decay: float = 0.01
    images_per_step: int = 16
    prompts_per_image: int = 2
    max_points: int = 3
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    val_scenes: int = 200


@dataclass
class SamTinyConfig:
    preset: str = "tiny"
    sizes: SamSizes = field(default_factory=SamSizes)
    train: SamTrainConfig = field(default_factory=SamTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _micro() -> SamTinyConfig:
    """Smallest working SAM, for unit tests."""
    sizes = SamSizes(vision_hidden=16, vision_layers=1, vision_heads=1, global_attn_indexes=[0], prompt_dim=16,
                     decoder_layers=1, decoder_heads=1, decoder_mlp=32)
    return SamTinyConfig("micro", sizes, SamTrainConfig(steps=4, images_per_step=2, warmup_steps=1, val_scenes=4,
                                                         eval_every=0))


SAM_PRESETS = {"tiny": SamTinyConfig, "micro": _micro}


class SamLoss(torch.nn.Module):
    def __init__(self, sam: SamModel, config: SamTrainConfig):
        super().__init__()
        self.sam, self.config = sam, config

    def forward(self, pixels: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor):
        logits = point_logits(self.sam, pixels, points, labels)
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, masks.shape[-2:], mode="bilinear", align_corners=False)
        return (self.config.bce_weight * bce_loss(logits.flatten(0, 1), masks.flatten(0, 1))
                + self.config.dice_weight * dice_loss(logits.flatten(0, 1), masks.flatten(0, 1)))


def train_sam(config: SamTinyConfig, out: Path, resume: bool = False, new_schedule: bool = False) -> dict[str, Any]:
    from bench.training.checkpoint import begin_training
    from bench.training.log import JsonlLog
    from bench.training.loop import StepLoop
    from bench.training.process import make_accelerator
    from bench.training.seeding import step_generator

    train, sizes = config.train, config.sizes
    sam = build_sam(sizes, train.seed)
    accelerator = make_accelerator()
    main = accelerator.is_main_process
    run = begin_training(out, sam, sam.parameters(), train, resume=resume, new_schedule=new_schedule)
    loss_module, optimizer = accelerator.prepare(SamLoss(sam, train), run.optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    loop = StepLoop(accelerator=accelerator, model=sam, parameters=sam.parameters(), optimizer=optimizer,
                    schedule=run.schedule, ema=None, checkpoint=run.checkpoint,
                    log=JsonlLog(out / "log.jsonl", main), stage="sam", train=train, start=run.start,
                    wall_before=run.wall_before)
    val_seed = train.seed + VAL_SEED_OFFSET
    for step in loop.steps():
        generator = step_generator(train.seed, step, rank, world)
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        clicks = int(rng.integers(1, train.max_points + 1))
        first = (step * world + rank) * train.images_per_step
        batch = point_batch(train.seed, first, train.images_per_step, train.prompts_per_image, clicks,
                            sizes.image_size, rng)
        pixels, _ = sam_pixels(batch.images, sizes.image_size)
        loop.learning_rate(step)
        device = accelerator.device
        loss = loss_module(pixels.to(device), batch.points.to(device), batch.labels.to(device), batch.masks.to(device))
        if loop.step(step, loss, validate=lambda: {"val": one_click_iou(sam, val_seed, train.val_scenes,
                                                                       sizes.image_size)}):
            break
    if not loop.finish():
        return {}
    metrics = {"step": loop.done, "wall_seconds": loop.wall(),
               "val_one_click": one_click_iou(sam, val_seed, train.val_scenes, sizes.image_size),
               "parameters": sum(p.numel() for p in sam.parameters())}
    save_sam(sam, config, out / "final", metrics)
    loop.log.write({"stage": "sam", "final": metrics})
    return metrics


def save_sam(sam: SamModel, config: SamTinyConfig, directory: Path, metrics: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    sam.save_pretrained(directory, safe_serialization=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    if metrics is not None:
        (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def load_sam(directory: str | Path) -> SamModel:
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"{directory}: no SAM checkpoint (config.json + model.safetensors expected)")
    check_sam(directory)
    return SamModel.from_pretrained(directory, use_safetensors=True)


def check_sam(directory: Path) -> None:
    """A SAM checkpoint's config.json checked against its weights before anything is allocated."""
    from bench.weights_check import check_checkpoint

    check_checkpoint(directory, lambda values: SamModel(SamConfig.from_dict(values)))


class SamTinyTrainer(Trainer):
    """`bench train --model sam-tiny`: pretrain the tiny SAM on point-prompted masks of synthetic scenes."""

    name = "sam-tiny"
    description = "Pretrain the tiny SAM (point-prompted, class-agnostic masks of synthetic scenes) that LISA uses."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--preset", default="tiny", help=f"named preset: {', '.join(SAM_PRESETS)} (default tiny)")
        parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=2000")

    @classmethod
    def run(cls, args: argparse.Namespace) -> int:
        from bench.training.process import launched_as_main

        if args.preset not in SAM_PRESETS:
            raise SystemExit(f"unknown sam-tiny preset {args.preset!r}; known: {', '.join(SAM_PRESETS)}")
        config = apply_overrides(SAM_PRESETS[args.preset](), args.overrides)  # type: ignore[arg-type]
        torch.set_num_threads(config.train.threads)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if launched_as_main():
            (out / "config-sam.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
        metrics = train_sam(config, out, args.resume, args.new_schedule)
        if launched_as_main():
            print(json.dumps(metrics, indent=2))
        return 0
