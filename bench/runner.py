"""Run a model on suites: predict, score each sample as it finishes, resume, shard, and write the run directory.

A run directory holds `run.json` (configuration and provenance), `predictions.jsonl` (one line per
sample, appended and flushed as it is produced) and `metrics.json`. With several suites in one call the
per-suite files are `predictions.<suite>.jsonl` and `metrics.<suite>.json`. Under a launcher each rank
appends to `predictions[.<suite>].rank<k>.jsonl`; rank 0 merges them in sample order at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.distributed import ProcessInfo, gather, init_processes, local_device
from bench.errors import BenchError, SampleError
from bench.masks import encode_rle
from bench.metrics import Protocol, SegmentationEvaluator, intersection_union, sample_iou
from bench.models import MODELS, ModelInput, SegModel
from bench.predictions import PredictionWriter, iter_records, write_records
from bench.provenance import git_commit, now_iso, package_versions
from bench.suites import SUITES, Sample, Suite

RESUME_KEYS = ("suites", "splits", "model", "model_args", "suite_args", "checkpoint", "limit", "seed", "protocol")


class StrictFailure(BenchError):
    """`--strict` and a sample failed."""

    exit_code = 3


@dataclass
class RunSpec:
    """Everything that defines a run; stored in run.json and compared on --resume."""

    suites: list[str]
    model: str
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

    def record(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["protocol"] = self.protocol.to_dict()
        return data


def artifact(kind: str, suite: str, several: bool, rank: int | None = None) -> str:
    """File name of a run artefact: `predictions.jsonl`, `metrics.synthref.json`, `predictions.rank1.jsonl`..."""
    ext = "jsonl" if kind == "predictions" else "json"
    parts = [kind] + ([suite] if several else []) + ([f"rank{rank}"] if rank is not None else [])
    return ".".join(parts) + "." + ext


def default_out_dir(spec: RunSpec) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{stamp}_{spec.model}_{'-'.join(spec.suites)}")
    return Path("results") / "runs" / name


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
    """Evaluates one model on the spec's suites and splits, writing the run directory."""

    def __init__(self, spec: RunSpec, command: str | None = None):
        self.spec = spec
        self.command = command  # the command line that made this run, recorded in run.json
        self.proc: ProcessInfo = init_processes(spec.device)
        self.timings = {"data_s": 0.0, "model_s": 0.0, "metric_s": 0.0, "samples": 0}
        self.run_warnings: list[str] = []

    # ---- setup -------------------------------------------------------------------------------
    def _prepare_out_dir(self) -> Path:
        out = Path(self.spec.out) if self.spec.out else default_out_dir(self.spec)
        out = Path(self.proc.broadcast(str(out)))
        problem = None
        if self.proc.is_main:
            try:
                self._check_out_dir(out)
                out.mkdir(parents=True, exist_ok=True)
            except BenchError as exc:
                problem = str(exc)
        problem = self.proc.broadcast(problem)  # every rank stops, not only rank 0
        if problem:
            raise BenchError(problem)
        return out

    def _check_out_dir(self, out: Path) -> None:
        run_json = out / "run.json"
        if run_json.exists() and not self.spec.resume:
            raise BenchError(f"{out} already holds a run; pass --resume to finish it or choose another --out")
        if self.spec.resume and run_json.exists():
            self._check_resumable(run_json)
        elif self.spec.resume and any(out.glob("predictions*.jsonl")):
            raise BenchError(f"{out} has predictions but no run.json: cannot tell what it was run with")

    def _check_resumable(self, run_json: Path) -> None:
        try:
            previous = json.loads(run_json.read_text())["spec"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise BenchError(f"{run_json}: cannot read the earlier run's configuration ({exc})") from None
        current = self.spec.record()
        changed = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
        if changed:
            details = "; ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise BenchError(f"cannot resume {run_json.parent}: the configuration differs ({details})")

    def _load_suites(self) -> list[tuple[Suite, dict[str, list[Sample]]]]:
        loaded = []
        for name in self.spec.suites:
            suite = SUITES.get(name)(data_root=self.spec.data_root, **self.spec.suite_args)
            splits = self.spec.splits or [s for s in suite.splits if s != "train"]
            unknown = [s for s in splits if s not in suite.splits]
            if unknown:
                raise BenchError(f"suite {name!r} has no split {', '.join(unknown)}; splits: {', '.join(suite.splits)}")
            samples = {split: suite.samples(split)[: self.spec.limit] for split in splits}
            loaded.append((suite, samples))
        return loaded

    def _build_model(self) -> SegModel:
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
        out = self._prepare_out_dir()
        suites = self._load_suites()
        model = self._build_model()
        several = len(suites) > 1
        created = self._write_run_json(out, model, suites, status="running")
        for suite, splits in suites:
            self.run_warnings += [f"{suite.name}: {w}" for w in suite.warnings]
            self.run_warnings += model.check_suite(suite.name, suite.synthetic)
            ordered = [s for split in splits.values() for s in split]
            done = self._finished_keys(out, suite.name, several)
            pending = self.proc.shard([s for s in ordered if (s.split, s.sample_id) not in done])
            rank_file = out / artifact("predictions", suite.name, several, self.proc.rank if self.proc.world_size > 1 else None)
            with PredictionWriter(rank_file) as writer:
                self._predict(model, pending, writer, desc=f"{self.spec.model} on {suite.name}")
        self.proc.barrier()
        timings = gather(self.proc, self.timings)
        model_timings = gather(self.proc, model.timings())
        results: dict[str, dict[str, Any]] = {}
        if self.proc.is_main:
            for suite, splits in suites:
                records = self._merge(out, suite.name, several, splits)
                results[suite.name] = self._write_metrics(out, suite, splits, records, several)
            self._write_run_json(out, model, suites, status="finished", created=created,
                                 timings=_sum_timings(timings), model_timings=_sum_timings(model_timings))
        self.proc.barrier()
        return results

    def _predict(self, model: SegModel, samples: list[Sample], writer: PredictionWriter, desc: str) -> None:
        bar = tqdm(total=len(samples), desc=desc, unit="sample", disable=not self.spec.progress or not self.proc.is_main)
        for start in range(0, len(samples), self.spec.batch_size):
            batch = samples[start : start + self.spec.batch_size]
            for record in self._predict_batch(model, batch):
                writer.write(record)
                if record["status"] != "ok" and self.spec.strict:
                    raise StrictFailure(f"sample {record['sample_id']} ({record['split']}) failed: {record['error']}")
            bar.update(len(batch))
        bar.close()

    def _predict_batch(self, model: SegModel, batch: list[Sample]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        inputs, errors = [], {}
        for sample in batch:
            try:
                inputs.append(ModelInput(sample=sample, image=sample.load_image(), text=sample.text))
            except SampleError as exc:
                errors[sample.sample_id] = str(exc)
        targets = {s.sample_id: s.target() for s in batch}
        t1 = time.perf_counter()
        masks = self._call_model(model, inputs, errors)
        t2 = time.perf_counter()
        records = [score_sample(s, masks.get(s.sample_id), errors.get(s.sample_id), targets[s.sample_id], self.spec.protocol)
                   for s in batch]
        t3 = time.perf_counter()
        self.timings["data_s"] += t1 - t0
        self.timings["model_s"] += t2 - t1
        self.timings["metric_s"] += t3 - t2
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

    # ---- merging and writing -----------------------------------------------------------------
    def _finished_keys(self, out: Path, suite: str, several: bool) -> set[tuple[str, str]]:
        """(split, sample_id) of every record already written by this or an earlier (killed) run."""
        self.proc.barrier()  # rank 0 may repair a torn last line first
        keys = set()
        for path in _prediction_files(out, suite, several):
            for _, record in iter_records(path, repair_tail=self.proc.is_main):
                keys.add((record.get("split"), record["sample_id"]))
        self.proc.barrier()
        return keys

    def _merge(self, out: Path, suite: str, several: bool, splits: dict[str, list[Sample]]) -> list[dict[str, Any]]:
        """All ranks' records in sample order, written to the suite's predictions file; rank files removed."""
        files = _prediction_files(out, suite, several)
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for path in files:
            for number, record in iter_records(path):
                key = (record.get("split"), record["sample_id"])
                if key in by_key:
                    raise BenchError(f"{path}:{number}: sample {key[1]!r} ({key[0]}) predicted twice")
                by_key[key] = record
        order = [(s.split, s.sample_id) for split in splits.values() for s in split]
        missing = [k for k in order if k not in by_key]
        if missing:
            raise BenchError(f"{len(missing)} samples of {suite} have no prediction after the run (first: {missing[0]})")
        records = [by_key[k] for k in order]
        main = out / artifact("predictions", suite, several)
        write_records(main, records)
        for path in files:
            if path != main:
                path.unlink()
        return records

    def _write_metrics(self, out: Path, suite: Suite, splits: dict[str, list[Sample]],
                       records: list[dict[str, Any]], several: bool) -> dict[str, Any]:
        by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
        for record in records:
            by_split[record["split"]].append(record)
        metrics = {"suite": suite.name, "model": self.spec.model,
                   "splits": {split: score_records(recs, self.spec.protocol) for split, recs in by_split.items()}}
        for split, recs in by_split.items():
            failed = [r for r in recs if r["status"] != "ok"]
            if failed:
                self.run_warnings.append(f"{suite.name}/{split}: {len(failed)} of {len(recs)} samples failed "
                                         f"(first: {failed[0]['sample_id']}: {failed[0]['error']})")
            ok = [r for r in recs if r["status"] == "ok"]
            if ok and all(r.get("area") == 0 for r in ok):
                self.run_warnings.append(f"{suite.name}/{split}: every predicted mask is empty")
        write_json(out / artifact("metrics", suite.name, several), metrics)
        return metrics

    def _write_run_json(self, out: Path, model: SegModel, suites, status: str, created: str | None = None,
                        timings: dict | None = None, model_timings: dict | None = None) -> str:
        path = out / "run.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        created = created or previous.get("created") or now_iso()
        if self.proc.is_main:
            samples = (timings or {}).get("samples", 0)
            seconds = sum((timings or {}).get(k, 0.0) for k in ("data_s", "model_s", "metric_s"))
            record = {
                "spec": self.spec.record(),
                "command": self.command or previous.get("command"),
                "suites": self.spec.suites,
                "splits": {suite.name: list(splits) for suite, splits in suites},
                "model": self.spec.model,
                "label": self.spec.label,
                "model_config": model.config(),
                "protocol": {**self.spec.protocol.to_dict(), **{s.name: s.protocol() for s, _ in suites}},
                "seed": self.spec.seed,
                "device": self.spec.device,
                "world_size": self.proc.world_size,
                "git_commit": git_commit(),
                "versions": package_versions(),
                "dataset_fingerprints": {suite.name: suite.fingerprint() for suite, _ in suites},
                "warnings": sorted(set(self.run_warnings)),
                "created": created,
                "updated": now_iso(),
                "status": status,
                "resumed": previous.get("resumed", 0) + (1 if self.spec.resume and previous and status == "running" else 0),
                "timings": {**(timings or {}), "model_breakdown_s": model_timings or {}},
                "throughput_samples_per_s": (samples / seconds) if seconds else None,
            }
            write_json(path, record)
        return created


def score_sample(sample: Sample, mask: np.ndarray | None, error: str | None, target: np.ndarray,
                 protocol: Protocol) -> dict[str, Any]:
    """One predictions-file record; no mask means failed: IoU 0, and the gt area still enters the cIoU union."""
    failed = mask is None
    inter, union = intersection_union(mask, target, protocol)
    return {
        "sample_id": sample.sample_id,
        "split": sample.split,
        "segmentation": None if failed else encode_rle(mask),
        "iou": 0.0 if failed else sample_iou(inter, union, protocol),
        "status": "failed" if failed else "ok",
        "error": (error or "no prediction") if failed else None,
        "intersection": int(inter),
        "union": int(union),
        "area": 0 if failed else int(mask.sum()),
    }


def score_records(records: list[dict[str, Any]], protocol: Protocol) -> dict[str, Any]:
    """Split metrics from records carrying intersection/union/status (the evaluator does the maths)."""
    evaluator = SegmentationEvaluator(protocol)
    for r in records:
        evaluator.process(r["sample_id"], r["intersection"], r["union"], failed=r["status"] != "ok")
    return evaluator.evaluate()


def _prediction_files(out: Path, suite: str, several: bool) -> list[Path]:
    main = out / artifact("predictions", suite, several)
    stem = main.name[: -len(".jsonl")]
    ranks = sorted(out.glob(f"{stem}.rank*.jsonl"))
    return ([main] if main.exists() else []) + ranks


def _sum_timings(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename): a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
