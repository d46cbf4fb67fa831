"""Process-group helpers: the same code runs alone, under torchrun, or under `accelerate launch`."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError


@dataclass
class ProcessInfo:
    """This process's place among the launched ones; rank 0 merges and writes the final files."""

    rank: int = 0
    world_size: int = 1
    _state: Any = None  # accelerate.PartialState when world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        if self._state is None:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def close(self) -> None:
        """Leave the process group, so that no collective thread of gloo/nccl outlives the interpreter (at
        exit such a thread aborts the process: "terminate called without an active exception")."""
        if self._state is not None:
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def shard(self, items: list) -> list:
        """Round-robin share of `items` for this rank: every item exactly once, no padding."""
        return items[self.rank :: self.world_size]


def init_processes(device: str) -> ProcessInfo:
    """Join the process group set up by torchrun/accelerate (gloo on CPU, nccl on CUDA); no-op alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessInfo()
    _die_with_launcher()
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return ProcessInfo(rank=state.process_index, world_size=state.num_processes, _state=state)


def _die_with_launcher() -> None:
    """Have Linux kill this rank when its launcher dies, so no rank waits alone in a collective for minutes."""
    die_with_parent(None)


def die_with_parent(parent: int | None, *_: object) -> None:
    """Have Linux kill this process (SIGKILL) when its parent dies; if the parent (pid `parent`, when given) is
    gone already, die now. Used by launcher ranks and by data-loading workers (as their worker_init_fn)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1 or (parent is not None and os.getppid() != parent):  # orphaned before the request
        os.kill(os.getpid(), signal.SIGKILL)


def check_device(device: str) -> None:
    """BenchError unless `device` is cpu, or cuda / cuda:N with such a CUDA device present."""
    if device == "cpu":
        return
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index == "" or index.isdecimal()):
        raise BenchError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0 or (index and int(index) >= count):
        raise BenchError(f"--device {device}: this machine has {count} CUDA devices visible to torch "
                         f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'}); use --device cpu")


def local_device(device: str) -> str:
    """`cuda` becomes this process's own GPU (LOCAL_RANK) under a launcher."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def gather(info: ProcessInfo, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a one-element list when alone)."""
    if info._state is None:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])
