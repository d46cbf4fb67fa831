"""Resumable training state: weights as safetensors, optimizer via torch.save (read back weights-only), state.json."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from bench.io import atomic_path, read_json_object
from bench.training.ema import EMA
from bench.training.recipe import Recipe, ema_decay
from bench.training.schedule import LRSchedule

MODEL, EMA_FILE, OPTIMIZER, STATE = "model.safetensors", "ema.safetensors", "optimizer.pt", "state.json"


class Checkpoint:
    """OUT/checkpoint: model.safetensors, ema.safetensors (when averaging), optimizer.pt and state.json (step,
    wall seconds, learning-rate schedule and whatever the trainer adds). Every file is written under a unique
    temporary name (`bench.io.atomic_path`) and renamed only once all are written, so an interrupted save leaves the previous checkpoint whole."""

    def __init__(self, out: str | Path):
        self.directory = Path(out) / "checkpoint"

    def exists(self) -> bool:
        return (self.directory / STATE).exists()

    def save(self, module: nn.Module, optimizer: torch.optim.Optimizer, *, step: int, wall_seconds: float,
             schedule: LRSchedule, ema: EMA | None = None, **extra: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "wall_seconds": wall_seconds, "schedule": schedule.to_dict(), **extra}
        with contextlib.ExitStack() as files:  # renamed in reverse order on leaving: state.json last
            state_file, optimizer_file = (files.enter_context(atomic_path(self.directory / name))
                                          for name in (STATE, OPTIMIZER))
            ema_file = files.enter_context(atomic_path(self.directory / EMA_FILE)) if ema is not None else None
            model_file = files.enter_context(atomic_path(self.directory / MODEL))
            save_model(module, str(model_file))
            if ema_file is not None:
                save_file(ema.state_dict(), ema_file)
            torch.save(optimizer.state_dict(), optimizer_file)
            state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
        if ema is None:
            (self.directory / EMA_FILE).unlink(missing_ok=True)  # a stale average must not be resumed later

    def start(self, module: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule, *,
              ema: EMA | None, resume: bool, new_schedule: bool) -> tuple[LRSchedule, int, float]:
        """(schedule, first step, wall seconds so far) of a fresh run, or of a resumed one (`resume`)."""
        if not resume:
            return schedule, 0, 0.0
        state, schedule = self.resume(module, optimizer, schedule, ema=ema, new_schedule=new_schedule)
        return schedule, state["step"], state.get("wall_seconds", 0.0)

    def resume(self, module: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule, *,
               ema: EMA | None = None, new_schedule: bool = False) -> tuple[dict[str, Any], LRSchedule]:
        """Load the saved weights (and EMA) and optimizer state into the given objects; returns state.json and
        the schedule to follow (the saved one; see `LRSchedule.resume` for a different `schedule`)."""
        state_file = self.directory / STATE
        if not state_file.exists():
            raise FileNotFoundError(f"{state_file}: nothing to resume (no checkpoint in this --out directory)")
        state = read_json_object(state_file)
        schedule = schedule.resume(state.get("schedule"), new_schedule)  # refuse before changing anything
        if ema is not None and not (self.directory / EMA_FILE).exists():
            raise FileNotFoundError(f"{self.directory / EMA_FILE}: the checkpoint has no EMA weights to resume "
                                    "(it was trained without weight averaging)")
        load_model(module, self.directory / MODEL)
        if ema is not None:
            ema.load_state_dict(load_file(self.directory / EMA_FILE))
        optimizer.load_state_dict(torch.load(self.directory / OPTIMIZER, weights_only=True))
        return state, schedule


@dataclass
class Started:
    """What a training loop starts from: its optimizer, schedule, EMA, checkpoint, first step and wall so far."""

    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: EMA | None
    checkpoint: Checkpoint
    start: int
    wall_before: float


def begin_training(out: str | Path, module: nn.Module, parameters: Iterable[Any], recipe: Recipe, *, resume: bool,
                   new_schedule: bool) -> Started:
    """AdamW over `parameters` (tensors or param groups) with the recipe's lr and weight decay, its warm-up + cosine
    schedule, an EMA of `module` when it has an `ema_decay`, and OUT/checkpoint: fresh, or with the saved state
    loaded into them (`resume`)."""
    optimizer = torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    decay = ema_decay(recipe)
    ema = EMA(module, decay) if decay else None
    checkpoint = Checkpoint(out)
    schedule = LRSchedule(recipe.lr, recipe.warmup_steps, recipe.steps, recipe.min_lr_ratio)
    schedule, start, wall_before = checkpoint.start(module, optimizer, schedule, ema=ema, resume=resume,
                                                    new_schedule=new_schedule)
    return Started(optimizer, schedule, ema, checkpoint, start, wall_before)
