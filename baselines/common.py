"""What every trained rival shares, so that the comparison with GenMask is fair.

- `RivalTrainConfig`: the data stream GenMask trains on (`bench.training.recipe.SampleStream`: data,
  train_samples, group_size, task_weights, val_samples) at the tiny image size, and the shared recipe
  (`bench.training.recipe.EMARecipe`: seed, optimiser, schedule, EMA, stop rules). A rival's whole config is a
  `RivalConfig` (`model`: its own dataclass, `train`: this one), changed by `key=value` overrides
  (`bench.training.overrides`) with dotted keys (`train.steps=500`, `model.width=32`); an unknown key is an error.
- The sample stream (`bench.training.stream`): `training_data(train)` builds the grouped data GenMask trains on
  (no latents: the rivals read pixels) and `batch_items(data, train, step, rank, world)` draws, for a seed and
  step, exactly the items GenMask's `make_batch` draws when its segmentation count equals the rival's batch size.
- `RivalTrainer`: `bench train --model NAME` for a rival. A subclass gives `build(config) -> RivalModule`
  (foundations loaded, frozen parts marked), and may change `loss` (default BCE + Dice on the module's
  logits) and `predict` (default the module's logits). The loop is the harness's `StepLoop` (exact resume
  through `Checkpoint.start`, warm-up + cosine schedule, EMA, timed checkpoints, stop rules), validation is
  cIoU/gIoU on GenMask's held-out scenes, and OUT/final holds config.json, model.safetensors (the trained
  weights only: frozen foundations are referenced by path and SHA-256, never copied) and metrics.json with
  the cost (parameters, training wall seconds, estimated training FLOPs, samples seen) and the data
  stream's fingerprint.
- `RivalSegModel`: the harness adapter base (`bench run --model NAME`): loads a final directory (default:
  the shipped checkpoint), resizes to the model's square input and back, and records the cost in run.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bench.images import as_rgb_array, resize_image
from bench.io import read_json_object
from bench.models.base import ModelInput, SegModel
from bench.training import Trainer
from bench.training.heldout import validation_data
from bench.training.overrides import apply_nested, apply_overrides, load_override_file
from bench.training.recipe import EMARecipe, SampleStream
from bench.training.seeding import step_generator
from bench.training.stream import GroupedSegData, draw_items, training_groups
from bench.training.trainers import print_summary

CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE = "config.json", "model.safetensors", "metrics.json"
REPO_ROOT = Path(__file__).resolve().parents[1]  # where `genmask/checkpoints/...` and `baselines/...` live
TINY_IMAGE_SIZE = 64  # genmask/checkpoints/tiny/config.json


# ------------------------------------------------------------------------------------------- config
@dataclass
class RivalTrainConfig(EMARecipe, SampleStream):
    """GenMask's data stream (the same samples for the same values) at the rival's square input size, and the
    shared recipe."""

    image_size: int = TINY_IMAGE_SIZE
    steps: int = 2000
    batch_size: int = 32


@dataclass
class RivalConfig:
    """A rival's whole configuration: its name, its model section (a dataclass of its own) and the training."""

    name: str
    model: Any
    train: RivalTrainConfig = field(default_factory=RivalTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_fingerprint(train: RivalTrainConfig) -> dict[str, Any]:
    """What fixes the training samples (count and order): equal fingerprints, equal streams."""
    fields = {key: getattr(train, key) for key in ("seed", "data", "data_root", "train_samples", "group_size",
                                                   "task_weights", "image_size", "batch_size", "steps")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {**fields, "sha256_16": digest}


# -------------------------------------------------------------------------------------- data stream
def training_data(train: RivalTrainConfig) -> GroupedSegData:
    """The grouped training data GenMask trains on for these settings (images, masks, instructions)."""
    return training_groups(train, train.image_size)


def batch_items(data: GroupedSegData, train: RivalTrainConfig, step: int, rank: int = 0, world: int = 1) -> list[int]:
    """The item indices of one process's batch: GenMask's `draw_items` on the (seed, step, rank) stream."""
    return draw_items(data, train.batch_size, train, step_generator(train.seed, step, rank, world))


def make_rival_batch(data: GroupedSegData, train: RivalTrainConfig, step: int, rank: int = 0,
                     world: int = 1) -> dict[str, Any]:
    """images uint8 (B, S, S, 3), masks bool (B, S, S), texts, kinds and rules of one process's step."""
    items = [data.items[i] for i in batch_items(data, train, step, rank, world)]
    return {"images": data.images[[item.image for item in items]], "masks": data.masks[[item.mask for item in items]],
            "texts": [item.text for item in items], "kinds": [item.kind for item in items],
            "rules": [item.rule for item in items]}


def validation_set(train: RivalTrainConfig):
    """GenMask's held-out samples for these settings (`bench.training.heldout`), or None."""
    return validation_data(train, train.image_size)


# -------------------------------------------------------------------------------------- foundations
def resolve_path(path: str | Path) -> Path:
    """A foundation or checkpoint path: absolute, relative to the working directory, or to the repository (the
    shipped foundations are named relative to it, e.g. genmask/checkpoints/foundations/vlm-tiny)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def directory_digest(directory: str | Path) -> str:
    """SHA-256 over a directory's safetensors files (names and bytes), to pin a frozen foundation."""
    directory = resolve_path(directory)
    files = sorted(directory.rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no safetensors weights here")
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(directory)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def pin_foundation(section: Any, path_field: str = "foundation", digest_field: str = "foundation_sha256") -> Path:
    """The foundation directory named in a model config section; records its digest there on first use (training)
    and checks it afterwards (loading a checkpoint), so a changed foundation fails loudly."""
    directory = resolve_path(getattr(section, path_field))
    if not directory.exists():
        raise FileNotFoundError(f"foundation {getattr(section, path_field)!r} not found (looked at {directory})")
    digest = directory_digest(directory)
    expected = getattr(section, digest_field)
    if not expected:
        setattr(section, digest_field, digest)
    elif expected != digest:
        raise ValueError(f"foundation {directory}: its weights changed since this model was trained "
                         f"(sha256 {digest[:12]}, the checkpoint expects {expected[:12]})")
    return directory


# ----------------------------------------------------------------------------------------- modules
class RivalModule(nn.Module):
    """A rival network. `forward(images uint8 (B, S, S, 3) array, texts) -> mask logits (B, S, S)`.

    `external_prefixes`: state-dict prefixes of frozen foundations that `build` loads from their own directory;
    they are neither trained nor saved in the final model.safetensors (a fine-tuned foundation is saved)."""

    external_prefixes: tuple[str, ...] = ()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> RivalModule:
        super().train(mode)
        for prefix in self.external_prefixes:  # frozen foundations always run as at inference
            self.get_submodule(prefix.rstrip(".")).eval()
        return self

    def is_external(self, key: str) -> bool:
        return any(key.startswith(prefix) for prefix in self.external_prefixes)


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Total, trainable and saved (not an external frozen foundation) parameter counts."""
    external = module.is_external if isinstance(module, RivalModule) else (lambda key: False)
    params = list(module.named_parameters())
    return {"total": sum(p.numel() for _, p in params),
            "trainable": sum(p.numel() for _, p in params if p.requires_grad),
            "saved": sum(p.numel() for name, p in params if not external(name))}


def images_to_float(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def bce_dice_loss(logits: torch.Tensor, masks: torch.Tensor, bce_weight: float = 1.0,
                  dice_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel BCE plus soft Dice (per sample, averaged), as CRIS/LISA-style decoders are trained."""
    target = masks.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probability = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    dice = 1 - (2 * (probability * target).sum(1) + 1) / (probability.sum(1) + target.sum(1) + 1)
    return bce_weight * bce + dice_weight * dice.mean()


# ------------------------------------------------------------------------------------ save / load
def save_final(module: RivalModule, config: RivalConfig, directory: str | Path, metrics: dict[str, Any]) -> None:
    """config.json, model.safetensors (every weight but the external frozen foundations) and metrics.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous().clone() for key, value in module.state_dict().items()
             if not module.is_external(key)}
    save_file(state, directory / WEIGHTS_FILE)
    record = config.to_dict() | {"external_prefixes": list(module.external_prefixes)}
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def load_weights(module: RivalModule, path: str | Path) -> None:
    """Load a final model.safetensors: every key not under an external prefix must be there, nothing else."""
    weights = load_file(str(path))
    expected = {key for key in module.state_dict() if not module.is_external(key)}
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model (missing {missing[:4]}, unexpected {unexpected[:4]})")
    module.load_state_dict(weights, strict=False)


# ------------------------------------------------------------------------------------------ trainer
class RivalTrainer(Trainer):
    """`bench train --model NAME` for a rival; see the module docstring for what a subclass provides."""

    name = "rival"
    model_config: ClassVar[type] = object  # the rival's model dataclass
    recipe: ClassVar[dict[str, Any]] = {}  # the rival's defaults for RivalTrainConfig fields (e.g. lr)

    # ------------------------------------------------------------------ what a rival provides
    @classmethod
    def build(cls, config: RivalConfig) -> RivalModule:
        """The network with its foundations loaded and frozen parts marked (`requires_grad_(False)`)."""
        raise NotImplementedError

    @classmethod
    def loss(cls, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Default: BCE + Dice of the module's logits (the module may be wrapped by accelerate)."""
        logits = model(batch["images"], batch["texts"])
        return bce_dice_loss(logits, torch.from_numpy(batch["masks"]).to(logits.device))

    @classmethod
    def predict(cls, model: RivalModule, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        """Mask logits (B, S, S) for square uint8 images at the model's size; > 0 is foreground."""
        return model(images, texts)

    @classmethod
    def param_groups(cls, model: RivalModule, train: RivalTrainConfig) -> list[dict[str, Any]]:
        """Optimizer groups of the trainable parameters; a group's `lr_scale` multiplies the scheduled rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]

    # ------------------------------------------------------------------------------- config
    @classmethod
    def default_config(cls) -> RivalConfig:
        config = RivalConfig(name=cls.name, model=cls.model_config(), train=RivalTrainConfig())
        for key, value in cls.recipe.items():
            setattr(config.train, key, value)
        return config

    @classmethod
    def config_from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RivalConfig:
        data = {k: v for k, v in data.items() if k not in ("name", "external_prefixes")}
        config = cls.default_config()
        apply_nested(config, data, source)
        return config

    @classmethod
    def resolve_config(cls, args: argparse.Namespace) -> RivalConfig:
        config = cls.default_config()
        if args.config:
            load_override_file(config, args.config)  # type: ignore[arg-type]
        return apply_overrides(config, args.overrides)  # type: ignore[arg-type]

    # ---------------------------------------------------------------------------------- CLI
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="JSON or TOML file of (nested) config overrides")
        parser.add_argument("overrides", nargs="*",
                            help="key=value overrides with dotted keys, e.g. train.steps=500 train.lr=0.001")

    @classmethod
    def run(cls, args: argparse.Namespace) -> int:
        from bench.training.process import launched_as_main

        config = cls.resolve_config(args)
        torch.set_num_threads(config.train.threads)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if launched_as_main():
            (out / f"config-{cls.name}.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
        metrics = cls.train_model(config, out, args.resume, args.new_schedule)
        if launched_as_main():
            print_summary(metrics, out)
        return 0

    # --------------------------------------------------------------------------------- loop
    @classmethod
    def evaluate(cls, model: RivalModule, val, batch: int = 64) -> dict[str, Any]:
        """Validation cIoU/gIoU overall, per kind and per rule (`bench.training.validation`)."""
        from bench.training.validation import validation_metrics

        if val is None:
            return {}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            predicted = np.concatenate([
                (cls.predict(model, val.images[i : i + batch], val.texts[i : i + batch]) > 0).cpu().numpy()
                for i in range(0, len(val.texts), batch)])
        model.train(was_training)
        return validation_metrics(predicted, val.masks, val.kinds, val.rules)

    @classmethod
    def step_flops(cls, model: nn.Module, batch: dict[str, Any]) -> int:
        """FLOPs of one training step's forward and backward (`torch.utils.flop_counter`); frozen foundation
        forwards included. The gradients it leaves are cleared by the next optimizer step's zero_grad."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            cls.loss(model, batch).backward()
        model.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())

    @classmethod
    def train_model(cls, config: RivalConfig, out: Path, resume: bool = False, new_schedule: bool = False) -> dict:
        from bench.training.checkpoint import begin_training
        from bench.training.ema import averaged
        from bench.training.log import JsonlLog
        from bench.training.loop import StepLoop
        from bench.training.process import make_accelerator

        train = config.train
        torch.manual_seed(train.seed)
        model = cls.build(config)
        accelerator = make_accelerator()
        main = accelerator.is_main_process
        rank, world = accelerator.process_index, accelerator.num_processes
        data = training_data(train)
        val = validation_set(train) if main else None
        groups = cls.param_groups(model, train)
        trainable = [p for group in groups for p in group["params"]]
        run = begin_training(out, model, groups, train, resume=resume, new_schedule=new_schedule)
        schedule, ema, checkpoint, start, wall_before = run.schedule, run.ema, run.checkpoint, run.start, run.wall_before
        prepared, optimizer = accelerator.prepare(model, run.optimizer)
        model.train()
        # every process measures (under DDP a backward on one process alone would wait for the others)
        flops_per_step = cls.step_flops(prepared, make_rival_batch(data, train, start, rank, world))
        loop = StepLoop(accelerator=accelerator, model=model, parameters=trainable, optimizer=optimizer,
                        schedule=schedule, ema=ema, checkpoint=checkpoint, log=JsonlLog(out / "log.jsonl", main),
                        stage=cls.name, train=train, start=start, wall_before=wall_before)
        for step in loop.steps():
            batch = make_rival_batch(data, train, step, rank, world)
            lr = loop.learning_rate(step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss = cls.loss(prepared, batch)
            if loop.step(step, loss, validate=lambda: {"val": cls.evaluate(model, val)}):
                break
        if not loop.finish():
            return {}
        model.eval()
        with averaged(ema):
            counts = parameter_counts(model)
            metrics = {
                "step": loop.done, "val": cls.evaluate(model, val),
                "cost": {"parameters_total": counts["total"], "parameters_trainable": counts["trainable"],
                         "parameters_saved": counts["saved"], "train_wall_seconds": loop.wall(),
                         "train_flops_per_step": flops_per_step * world,
                         "train_flops": flops_per_step * world * loop.done,
                         "train_samples_seen": loop.done * train.batch_size * world,
                         "flops_note": "torch.utils.flop_counter on one step (forward + backward, frozen "
                                       "foundations' forward included) x steps"},
                "data_stream": stream_fingerprint(train) | {"world_size": world},
            }
            save_final(model, config, out / "final", metrics)
        loop.log.write({"stage": cls.name, "final": metrics})
        return metrics


def load_rival(trainer: type[RivalTrainer], directory: str | Path, device: str = "cpu"
               ) -> tuple[RivalModule, RivalConfig, dict[str, Any]]:
    """(module in eval mode, config, metrics) of a final directory written by `RivalTrainer`."""
    directory = resolve_path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{trainer.name}: no checkpoint at {directory} (expected {CONFIG_FILE} and "
                                f"{WEIGHTS_FILE})")
    data = read_json_object(config_path)
    if data.get("name") != trainer.name:
        raise ValueError(f"{config_path}: a {data.get('name')!r} checkpoint, not {trainer.name!r}")
    config = trainer.config_from_dict(data, source=str(config_path))
    module = trainer.build(config)
    load_weights(module, directory / WEIGHTS_FILE)
    metrics_path = directory / METRICS_FILE
    metrics = read_json_object(metrics_path) if metrics_path.exists() else {}
    return module.to(device).eval(), config, metrics


# ------------------------------------------------------------------------------------------ adapter
class RivalSegModel(SegModel):
    """Harness adapter of a trained rival: `--checkpoint DIR` (default the shipped one), a square resize to the
    model's input and bilinear resize of the logits back to each image's size, thresholded at 0."""

    name: ClassVar[str] = "rival"
    trainer: ClassVar[type[RivalTrainer]] = RivalTrainer
    shipped: ClassVar[Path] = Path()

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, **options: Any):
        super().__init__(checkpoint=checkpoint or str(self.shipped), device=device, seed=seed, **options)
        self.model, self.rival_config, self.metrics = load_rival(self.trainer, self.checkpoint, device)
        self._timings = {"preprocess": 0.0, "forward": 0.0, "postprocess": 0.0}

    @property
    def image_size(self) -> int:
        return self.rival_config.train.image_size

    def predict(self, batch: list[ModelInput]) -> list[np.ndarray]:
        if not batch:
            return []
        begin = time.perf_counter()
        images = [as_rgb_array(x.image) for x in batch]
        square = np.stack([resize_image(image, self.image_size) for image in images])
        middle = time.perf_counter()
        with torch.inference_mode():
            logits = self.trainer.predict(self.model, square, [x.text for x in batch]).float()
        end = time.perf_counter()
        masks = []
        for score, image in zip(logits, images):
            height, width = image.shape[:2]
            score = F.interpolate(score[None, None], size=(height, width), mode="bilinear", align_corners=False)
            masks.append((score[0, 0] > 0).cpu().numpy())
        self._timings["preprocess"] += middle - begin
        self._timings["forward"] += end - middle
        self._timings["postprocess"] += time.perf_counter() - end
        return masks

    def cost(self) -> dict[str, Any]:
        """The recorded training cost of the checkpoint (and the model's parameters, counted here)."""
        recorded = self.metrics.get("cost", {})
        counts = parameter_counts(self.model)
        return {"parameters_total": counts["total"], "parameters_trainable": recorded.get("parameters_trainable"),
                "train_wall_seconds": recorded.get("train_wall_seconds"), "train_flops": recorded.get("train_flops"),
                "train_samples_seen": recorded.get("train_samples_seen"), "training_seed": self.rival_config.train.seed,
                "note": "training FLOPs: " + recorded.get("flops_note", "not recorded") + "; trainable parameters "
                        "exclude the frozen foundation"}

    def config(self) -> dict[str, Any]:
        model_section = self.rival_config.model
        return super().config() | {
            "image_size": self.image_size,
            "model": asdict(model_section) if dataclasses.is_dataclass(model_section) else model_section,
            "cost": self.cost(), "data_stream": self.metrics.get("data_stream"),
            "trained_steps": self.metrics.get("step"),
        }

    def timings(self) -> dict[str, float]:
        return dict(self._timings)

    def check_suite(self, suite_name: str, synthetic: bool) -> list[str]:
        if not synthetic and self.rival_config.train.data == "synth":
            return [f"{self.name} checkpoint {self.checkpoint} was trained on synthetic shape scenes only; its "
                    f"numbers on the real suite {suite_name!r} are not meaningful"]
        return []
