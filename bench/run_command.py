"""`bench run`: a model on suites, each sample predicted and scored as it finishes, sharded across ranks.

The run directory is claimed, checked on resume, recorded and merged by `bench.rundir.session`; per-sample
scoring and aggregation come from `bench.metrics`; images and targets are read ahead of the model by
`bench.loading`. Under a launcher each rank appends to its own predictions file; rank 0 merges them in sample
order at the end.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.distributed import ProcessInfo, check_device, gather, init_processes, local_device
from bench.errors import BenchError, SampleError, UnknownSplitError, check_run_sizes
from bench.loading import LoadedSample, iter_loaded
from bench.metrics import Protocol, score_records, score_sample
from bench.models import MODELS, ModelInput, SegModel
from bench.models.base import quiet_model_loading
from bench.rundir.layout import RunDir, default_run_path
from bench.rundir.outcome import OutcomeTally
from bench.rundir.predictions import PredictionWriter
from bench.rundir.session import RunSession
from bench.suites import SUITES, Sample, Suite

RESUME_KEYS = ("suites", "splits", "model", "model_args", "suite_args", "checkpoint", "data_root", "limit", "seed",
               "protocol")


class StrictFailure(BenchError):
    """`--strict` and a sample failed."""

    exit_code = 3


@dataclass
class RunSpec:
    """Everything that defines a run; stored in run.json and compared on --resume."""

    suites: list[str]
    model: str | None = None  # a registered name; None when the Runner is given a model object
    splits: list[str] | None = None
    model_args: dict[str, str] = field(default_factory=dict)
    suite_args: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    data_root: str | None = None
    limit: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    seed: int = 0
    out: str | None = None
    resume: bool = False
    strict: bool = False
    protocol: Protocol = field(default_factory=Protocol)
    progress: bool = True
    label: str | None = None  # display name in reports (default: the model name)
    kind: str = "leaderboard"  # leaderboard entry, ablation variant or diagnostic (see bench.rundir.record)
    group: str | None = None  # e.g. the ablation a variant belongs to
    workers: int = 1  # processes reading images and targets ahead of the model (0: read in this process)

    def __post_init__(self) -> None:
        check_run_sizes(self.limit, self.batch_size, self.workers)

    def record(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["protocol"] = self.protocol.to_dict()
        return data


def to_binary_mask(mask: Any, height: int, width: int) -> np.ndarray:
    """Validate a model output: boolean, or float probabilities thresholded at 0.5, of the image's size."""
    mask = np.asarray(mask)
    if mask.shape != (height, width):
        raise SampleError(f"model output has shape {mask.shape}, expected {(height, width)}")
    if mask.dtype == bool:
        return mask
    if not np.issubdtype(mask.dtype, np.number):
        raise SampleError(f"model output has dtype {mask.dtype}, expected bool or float")
    if np.isnan(mask).any():
        raise SampleError("model output contains NaN")
    return mask > 0.5


class Runner:
    """Evaluates one model on the spec's suites and splits, writing the run directory.

    The model is the spec's registered name, built here, or a `SegModel` object passed as `model`."""

    def __init__(self, spec: RunSpec, command: str | None = None, model: SegModel | None = None):
        if model is not None:
            spec = dataclasses.replace(spec, model=spec.model or model.name)
        elif spec.model is None:
            raise BenchError("a run needs a model: a registered name in the spec or a SegModel object")
        self.spec = spec
        self.command = command  # the command line that made this run, recorded in run.json
        self._model = model
        check_device(spec.device)
        if not spec.progress:
            quiet_model_loading()
        self.proc: ProcessInfo = init_processes(spec.device)
        self.timings = {"data_s": 0.0, "model_s": 0.0, "metric_s": 0.0, "samples": 0}
        self.run_warnings: list[str] = []
        self.rundir: RunDir | None = None

    # ---- setup -------------------------------------------------------------------------------
    def _load_suites(self) -> list[tuple[Suite, dict[str, list[Sample]]]]:
        loaded = []
        for name in self.spec.suites:
            suite_cls = SUITES.get(name)
            generated = {"progress": self.spec.progress} if suite_cls.synthetic else {}  # data made on first use
            suite = suite_cls(data_root=self.spec.data_root, **self.spec.suite_args, **generated)
            splits = self.spec.splits or [s for s in suite.splits if s != "train"]
            unknown = [s for s in splits if s not in suite.splits]
            if unknown:
                raise UnknownSplitError(name, unknown, suite.splits)
            samples = {split: suite.samples(split)[: self.spec.limit] for split in splits}
            loaded.append((suite, samples))
        return loaded

    def _build_model(self) -> SegModel:
        if self._model is not None:
            return self._model
        model_cls = MODELS.get(self.spec.model)
        kwargs = dict(self.spec.model_args)
        if self.spec.checkpoint is not None:
            kwargs["checkpoint"] = self.spec.checkpoint
        try:
            return model_cls(device=local_device(self.spec.device), seed=self.spec.seed, **kwargs)
        except (TypeError, ValueError, OSError) as exc:  # bad options, missing or unreadable checkpoint
            raise BenchError(f"cannot build model {self.spec.model!r}: {exc}") from exc

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, dict[str, Any]]:
        """Predict every pending sample, merge, score; returns metrics per suite (on rank 0)."""
        out = self.spec.out or default_run_path(self.spec.model, "-".join(self.spec.suites))
        with RunSession(out, self.spec.suites, self.spec.record(), resume=self.spec.resume, compared=RESUME_KEYS,
                        proc=self.proc) as session:
            self.rundir = session.rundir
            return self._run(session)

    def _run(self, session: RunSession) -> dict[str, dict[str, Any]]:
        suites = self._load_suites()
        session.check_same_data([suite for suite, _ in suites])
        model = self._build_model()
        # read before run.json is written, so that unreadable predictions change nothing
        finished = {suite.name: session.finished(suite.name) for suite, _ in suites}
        self._write_record(session, model, suites, "running")
        try:
            for suite, splits in suites:
                self.run_warnings += [f"{suite.name}: {w}" for w in suite.warnings]
                self.run_warnings += model.check_suite(suite.name, suite.synthetic)
                ordered = [s for split in splits.values() for s in split]
                done = finished[suite.name]
                pending = self.proc.shard([s for s in ordered if (s.split, s.sample_id) not in done])
                rank_file = session.rundir.predictions(suite.name, self.proc.rank if self.proc.world_size > 1 else None)
                with PredictionWriter(rank_file) as writer:
                    self._predict(model, pending, writer, desc=f"{self.spec.model} on {suite.name}")
        except BaseException:
            self._write_record(session, model, suites, "failed")  # says so; a resume finishes it
            raise
        self.proc.barrier()
        timings = gather(self.proc, self.timings)
        model_timings = gather(self.proc, model.timings())
        results: dict[str, dict[str, Any]] = {}
        if self.proc.is_main:
            for suite, splits in suites:
                records = session.merge(suite.name, [(s.split, s.sample_id) for split in splits.values() for s in split])
                results[suite.name] = self._write_metrics(session.rundir, suite, splits, records)
            self._write_record(session, model, suites, "complete", timings=_sum_timings(timings),
                               model_timings=_sum_timings(model_timings))
        self.proc.barrier()
        return results

    def _predict(self, model: SegModel, samples: list[Sample], writer: PredictionWriter, desc: str) -> None:
        bar = tqdm(total=len(samples), desc=desc, unit="sample", disable=not self.spec.progress or not self.proc.is_main)
        for batch in self._batches(iter_loaded(samples, self.spec.workers)):
            for record in self._predict_batch(model, batch):
                writer.write(record)
                if record["status"] != "ok" and self.spec.strict:
                    raise StrictFailure(f"sample {record['sample_id']} ({record['split']}) failed: {record['error']}")
            bar.update(len(batch))
        bar.close()

    def _batches(self, loaded: Iterator[LoadedSample]) -> Iterator[list[LoadedSample]]:
        """Batches of read samples; the time spent waiting for them is the run's data time."""
        batch: list[LoadedSample] = []
        while True:
            start = time.perf_counter()
            item = next(loaded, None)
            self.timings["data_s"] += time.perf_counter() - start
            if item is not None:
                batch.append(item)
            if batch and (item is None or len(batch) == self.spec.batch_size):
                yield batch
                batch = []
            if item is None:
                return

    def _predict_batch(self, model: SegModel, batch: list[LoadedSample]) -> list[dict[str, Any]]:
        errors = {x.sample.sample_id: x.error for x in batch if x.error}
        inputs = [ModelInput(sample=x.sample, image=x.image, text=x.sample.text) for x in batch if not x.error]
        t0 = time.perf_counter()
        masks = self._call_model(model, inputs, errors)
        t1 = time.perf_counter()
        records = [score_sample(x.sample.sample_id, x.sample.split, masks.get(x.sample.sample_id),
                                errors.get(x.sample.sample_id), x.target, self.spec.protocol) for x in batch]
        self.timings["model_s"] += t1 - t0
        self.timings["metric_s"] += time.perf_counter() - t1
        self.timings["samples"] += len(batch)
        return records

    def _call_model(self, model: SegModel, inputs: list[ModelInput], errors: dict[str, str]) -> dict[str, np.ndarray]:
        """Masks by sample id; a failing batch is retried sample by sample so one bad input fails alone."""
        if not inputs:
            return {}
        try:
            outputs = model.predict(inputs)
            if len(outputs) != len(inputs):
                raise SampleError(f"model returned {len(outputs)} masks for {len(inputs)} inputs")
        except Exception as exc:  # noqa: BLE001 - a model failure must fail samples, not the run
            if len(inputs) > 1:
                masks: dict[str, np.ndarray] = {}
                for one in inputs:
                    masks.update(self._call_model(model, [one], errors))
                return masks
            errors[inputs[0].sample.sample_id] = f"{type(exc).__name__}: {exc}"
            return {}
        masks = {}
        for x, mask in zip(inputs, outputs):
            try:
                masks[x.sample.sample_id] = to_binary_mask(mask, x.sample.height, x.sample.width)
            except SampleError as exc:
                errors[x.sample.sample_id] = str(exc)
        return masks

    # ---- writing -----------------------------------------------------------------------------
    def _write_metrics(self, rundir: RunDir, suite: Suite, splits: dict[str, list[Sample]],
                       records: list[dict[str, Any]]) -> dict[str, Any]:
        by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
        for record in records:
            by_split[record["split"]].append(record)
        metrics = {"suite": suite.name, "model": self.spec.model,
                   "splits": {split: score_records(recs, self.spec.protocol) for split, recs in by_split.items()}}
        self.run_warnings += [warning for split, recs in by_split.items()
                              for warning in OutcomeTally.of(suite.name, split, recs).warnings()]
        rundir.write_metrics(suite.name, metrics)
        return metrics

    def _write_record(self, session: RunSession, model: SegModel, suites, status: str, timings: dict | None = None,
                      model_timings: dict | None = None) -> None:
        """run.json as this run stands (rank 0 writes it; the session adds the spec, provenance and times)."""
        if not self.proc.is_main:
            return
        samples = (timings or {}).get("samples", 0)
        seconds = sum((timings or {}).get(k, 0.0) for k in ("data_s", "model_s", "metric_s"))
        session.write_record(
            status,
            command=self.command,
            model=self.spec.model,
            suites=self.spec.suites,
            splits={suite.name: list(splits) for suite, splits in suites},
            kind=self.spec.kind,
            label=self.spec.label,
            group=self.spec.group,
            model_config=model.config(),
            protocol={**self.spec.protocol.to_dict(), **{s.name: s.protocol() for s, _ in suites}},
            seed=self.spec.seed,
            device=self.spec.device,
            world_size=self.proc.world_size,
            dataset_fingerprints={suite.name: suite.fingerprint() for suite, _ in suites},
            warnings=sorted(set(self.run_warnings)),
            timings={**(timings or {}), "model_breakdown_s": model_timings or {}},
            throughput_samples_per_s=(samples / seconds) if seconds else None,
        )


def _sum_timings(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
