"""Samples in, decoded images and rasterised targets out, ahead of the model and failure by failure.

`iter_loaded` reads each sample's image and target; anything that goes wrong with one sample (a missing or
corrupt image, a target that cannot be rasterised or does not match its image) becomes that sample's
`error` instead of stopping the run. With `workers > 0` the reading runs in torch DataLoader worker
processes, so it overlaps the model's forward passes; `workers=0` reads in the calling process (tiny runs,
debugging) and imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from bench.errors import SampleError
from bench.masks import RleTarget
from bench.suites.base import Sample

T = TypeVar("T")


@dataclass
class LoadedSample:
    """A sample with its image and target read, or the reason they could not be."""

    sample: Sample
    image: np.ndarray | None  # uint8 HxWx3
    target: np.ndarray | None  # uint8 HxW: 0, 1, or the ignore value
    error: str | None = None


def _read(part: str, read: Callable[[], T]) -> tuple[T | None, str | None]:
    try:
        return read(), None
    except Exception as exc:  # noqa: BLE001 - one unreadable sample must not end the run
        return None, (f"{part}: {exc}" if isinstance(exc, SampleError) else f"{part}: {type(exc).__name__}: {exc}")


def read_target(sample: Sample) -> tuple[np.ndarray | None, str | None]:
    """(target, None), or (None, why it cannot be rasterised or does not fit the image)."""
    return _read("target", sample.target)


def read_target_rle(sample: Sample, ignore_value: int) -> tuple[RleTarget | None, str | None]:
    """`read_target` in RLE space: the suite's own RLE where it has one (refer suites), never decoded; else the
    dense target (ReasonSeg, with its ignored pixels) encoded."""
    if sample.load_target_rle is None:
        target, error = read_target(sample)
        return (None, error) if target is None else (RleTarget.from_dense(target, ignore_value), None)
    return _read("target", lambda: _sized_rle_target(sample))


def _sized_rle_target(sample: Sample) -> RleTarget:
    """The sample's RLE target, checked against its image size (as Sample.target checks the dense one)."""
    target = RleTarget.from_rle(sample.load_target_rle())
    if target.size != (sample.height, sample.width):
        raise SampleError(f"{sample.sample_id}: target shape {target.size} != image size {(sample.height, sample.width)}")
    return target


def read_sample(sample: Sample) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(image, target, error) of one sample; both parts are read, and every failure is named in the error."""
    image, image_error = _read("image", sample.load_image)
    target, target_error = read_target(sample)
    return image, target, "; ".join(e for e in (image_error, target_error) if e) or None


class _SampleReader:
    """Map-style dataset for DataLoader workers; returns plain arrays (samples hold closures, arrays pickle)."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
        return (index, *read_sample(self.samples[index]))


def _unbatched(item: tuple) -> tuple:
    return item


def iter_loaded(samples: list[Sample], workers: int = 0, prefetch: int = 8) -> Iterator[LoadedSample]:
    """Every sample, in order, read in `workers` background processes (0: in this process)."""
    if workers <= 0 or len(samples) <= 1:
        for sample in samples:
            yield LoadedSample(sample, *read_sample(sample))
        return
    import functools
    import multiprocessing
    import os

    from torch.utils.data import DataLoader

    from bench.distributed import die_with_parent

    # fork shares the samples (and their loader closures) with the workers without pickling them
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    loader = DataLoader(_SampleReader(samples), batch_size=None, num_workers=min(workers, len(samples)),
                        collate_fn=_unbatched, prefetch_factor=prefetch, multiprocessing_context=context,
                        worker_init_fn=functools.partial(die_with_parent, os.getpid()))  # none outlives the run
    for index, image, target, error in loader:
        yield LoadedSample(samples[index], image, target, error)
