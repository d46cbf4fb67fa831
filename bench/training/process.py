"""Process setup: one accelerate `Accelerator` per process, and decisions all processes take together."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator


def make_accelerator(**kwargs) -> Accelerator:
    """This process's Accelerator (on CPU when there is no CUDA device); `kwargs` go to accelerate."""
    return Accelerator(cpu=not torch.cuda.is_available(), **kwargs)


def launched_as_main() -> bool:
    """Whether this is rank 0 of a torchrun / accelerate launch (or a single process), before any Accelerator."""
    return os.environ.get("RANK", "0") == "0"


def agree(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process if it is true on any: time-based stops must be taken by all processes together."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).max() > 0)
