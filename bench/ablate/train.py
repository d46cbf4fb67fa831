"""Cells of kind "train" (`TrainKind`): `bench train --model TRAINER` with the variant's overrides and the cell's seed,
then one `bench run` of what it made, exactly as an "eval" cell (`EvalKind`, which it extends) runs a shipped
checkpoint.

The evaluated run directory is the durable result. The trained weights are a cache on top, in
CACHE/ablate/<ablation>/<training key> (`bench.training.cache.cache_root`), keyed by the trainer, its options
and overrides and the seed only, so variants that differ in evaluation alone (steps) share one training. A cell
first writes `training.json` (which training it waits for), so a crash at any point leaves it "started": --resume
resumes the training from its last checkpoint (exactly: batches and noise come from (seed, step)) and then the
evaluation. What the trainer records beside its validation (GenMask: the timestep density it trained with,
text-to-image quality with `train.generation_eval=N`) is copied into `training.json` and shown in the report.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from bench.ablate.cells import Cell
from bench.ablate.evaluate import EvalKind
from bench.ablate.kinds import ABLATION_KINDS
from bench.ablate.spec import Ablation, TrainedEvalConfig
from bench.errors import BenchError
from bench.io import SMALL_JSON_LIMIT, read_json, write_json

TRAINING_FILE = "training.json"
TRAINING_LOG = "training_log.jsonl"  # the trainer's log, copied into the cell: its learning curve outlives the cache
VALIDATION_FIELDS = ("val_1step", "val")  # where a trainer logs its validation: GenMask (one step), the rivals


def training_directory(cell: Cell) -> Path:
    """Where the cell's training runs: shared by every cell with the same trainer, command line and seed."""
    from bench.training.cache import cache_root

    config: TrainedEvalConfig = cell.config
    identity = json.dumps({"trainer": config.trainer, "argv": config.training_argv(cell.seed)})
    return cache_root() / "ablate" / cell.ablation / hashlib.sha256(identity.encode()).hexdigest()[:12]


def train(cell: Cell) -> Path:
    """Train (or resume, or reuse) the cell's model; the directory its evaluation loads."""
    from bench.training import TRAINERS

    config: TrainedEvalConfig = cell.config
    out = training_directory(cell)
    trained = out / config.output
    if (trained / "config.json").exists():
        print(f"reused training {out}", file=sys.stderr)
        return trained
    argv = [*map(_project_relative, config.training_argv(cell.seed)), f"--out={out}"]
    if (out / "checkpoint" / "state.json").exists():
        argv.append("--resume")
    print(f"training {cell.name}: bench train --model {config.trainer} {' '.join(argv)}", file=sys.stderr)
    code = TRAINERS.get(config.trainer).main(argv)
    if code or not (trained / "config.json").exists():
        raise BenchError(f"cell {cell.name}: training failed (exit {code}); nothing in {trained}")
    return trained


@ABLATION_KINDS.register("train")
class TrainKind(EvalKind):
    """Cells that train, then are evaluated as "eval" cells are; the page adds what each training recorded."""

    config: ClassVar[type] = TrainedEvalConfig

    def make(self, cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
        """Train, then evaluate the trained model as an "eval" cell; record the training beside the run."""
        config: TrainedEvalConfig = cell.config
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = {"trainer": config.trainer, "command": config.training_argv(cell.seed),
                  "directory": str(training_directory(cell))}
        write_json(directory / TRAINING_FILE, record)  # from here on the cell counts as started
        trained = train(cell)
        keep_log(directory, training_directory(cell))
        metrics_file = trained / "metrics.json"
        metrics = read_json(metrics_file, SMALL_JSON_LIMIT) if metrics_file.exists() else {}
        write_json(directory / TRAINING_FILE, {**record, "metrics": metrics})
        evaluated = Cell(cell.ablation, cell.variant, cell.seed, cell.budget,
                         _with_checkpoint(config, str(trained)), cell.data)
        super().make(evaluated, directory, command, data_root, resume and (directory / "run.json").exists())

    def assemble(self, ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
                 missing: list[tuple[str, str]]) -> list[Path]:
        """The eval kind's page, once the complete cells keep their training logs."""
        for cell in cells:  # cells made before logs were kept: backfill from the training cache while it exists
            if self.is_complete(cell.directory(out)):
                keep_log(cell.directory(out), training_directory(cell))
        return super().assemble(ablation, budget, cells, out, command, missing)

    def training_seconds(self, directories: list[Path]) -> dict[str, float]:
        """Each training's wall seconds by its cache directory (variants that differ in evaluation share one)."""
        result = {}
        for directory in directories:
            record = read_json(Path(directory) / TRAINING_FILE, SMALL_JSON_LIMIT)
            result[record.get("directory", str(directory))] = recorded_seconds(record.get("metrics", {}))
        return result

    def sections(self, cells: list[Cell], out: Path) -> list[str]:
        """A table of what each complete cell's training recorded: steps, minutes, in-training validation,
        text-to-image quality."""
        rows = []
        for cell in cells:
            metrics = self._metrics(cell.directory(out))
            if not metrics:
                continue
            gen, val = metrics.get("generation", {}), metrics.get(validation_field([metrics]), {})
            rows.append([cell.variant, str(cell.seed), str(metrics.get("step", "?")),
                         f"{recorded_seconds(metrics) / 60:.1f}",
                         f"{100 * val['ciou_all']:.1f}" if "ciou_all" in val else "",
                         f"{100 * gen['colour_match']:.1f} / {100 * gen['count_match']:.1f} / "
                         f"{100 * gen['colour_recall']:.1f}" if gen else ""])
        if not rows:
            return []
        from bench.report.text import markdown_table

        header = ["variant", "seed", "steps", "train minutes", "in-training val cIoU % (GenMask: 1 step)",
                  "text-to-image colour match / count match / colour recall %"]
        return ["", "### Training", "",
                "What each cell's training recorded (`training.json` in its run directory). The in-training "
                "validation uses held-out synthetic scenes of the training stream, not the table's samples.",
                "", markdown_table(rows, header)]

    def plots(self, rows: list, cells: list[Cell], out: Path) -> dict[str, bytes]:
        """The timestep densities beside the quality when the trainings recorded them; the learning curves."""
        records = {cell.variant: self._metrics(cell.directory(out)) for cell in cells}
        densities = {variant: m["seg_timestep_density"] for variant, m in records.items()
                     if "seg_timestep_density" in m and "train.seg_sampler" in _cell_args(cells, variant)}
        files = {"plots/timesteps.png": timestep_plot(rows, densities)} if densities else {}
        curves = self.learning_curves(cells, out)
        if curves:
            files["plots/learning_curves.png"] = learning_curve_plot(curves)
        return files

    def learning_curves(self, cells: list[Cell], out: Path) -> dict[str, dict[int, list[float]]]:
        """Per training (the variant's name before any `@STEPS`), per logged step, the in-training one-step validation
        cIoU of each seed, from the cells' kept logs (their final record too: a no-training control's only point,
        at step 0)."""
        from bench.training.log import read_log, validation_curve

        curves: dict[str, dict[int, dict[int, float]]] = {}
        for cell in cells:
            path = cell.directory(out) / TRAINING_LOG
            if not (self.is_complete(cell.directory(out)) and path.is_file()):
                continue
            by_step = curves.setdefault(cell.variant.split("@")[0], {})
            records = read_log(path)
            records += [record["final"] for record in records if isinstance(record.get("final"), dict)]
            for row in validation_curve(records, validation_field(records)):
                if "ciou_all" in row:
                    by_step.setdefault(row["step"], {})[cell.seed] = row["ciou_all"]
        return {label: {step: [seeds[s] for s in sorted(seeds)] for step, seeds in sorted(steps.items())}
                for label, steps in curves.items() if steps}

    def _metrics(self, directory: Path) -> dict[str, Any]:
        """The trainer's final metrics a complete cell recorded ({} otherwise)."""
        path = Path(directory) / TRAINING_FILE
        if not (self.is_complete(directory) and path.exists()):
            return {}
        return read_json(path, SMALL_JSON_LIMIT).get("metrics", {})


def validation_field(records: list[dict[str, Any]]) -> str:
    """The field the trainer put its validation in (`VALIDATION_FIELDS`), as the first record having one shows."""
    return next((f for f in VALIDATION_FIELDS if any(f in record for record in records)), VALIDATION_FIELDS[0])


def recorded_seconds(metrics: dict[str, Any]) -> float:
    """The training loop's wall seconds a trainer's metrics.json records (GenMask's field, the rivals' cost record)."""
    return float(metrics.get("wall_seconds", metrics.get("cost", {}).get("train_wall_seconds", float("nan"))))


def keep_log(cell_directory: Path, training: Path) -> None:
    """Copy the training's log.jsonl into the cell (once; nothing to do when the cache is gone)."""
    source, target = Path(training) / "log.jsonl", Path(cell_directory) / TRAINING_LOG
    if source.is_file() and not target.exists():
        from bench.io import write_atomic

        write_atomic(target, source.read_bytes())


def learning_curve_plot(curves: dict[str, dict[int, list[float]]]) -> bytes:
    """Each training's in-training validation cIoU against the step: mean over seeds, band from min to max."""
    import matplotlib.style
    from matplotlib.figure import Figure

    from bench.ablate import page

    with matplotlib.style.context("default"):
        figure = Figure(figsize=(7, 4))
        axes = figure.subplots()
        last = max(step for by_step in curves.values() for step in by_step)
        for label, by_step in curves.items():
            steps = list(by_step)
            values = [[100 * v for v in by_step[step]] for step in steps]
            seeds = max(len(v) for v in values)
            start = steps == [0]  # a no-training control: where every arm starts, drawn across the whole run
            if start:
                steps, values = [0, last], values * 2
            axes.plot(steps, [sum(v) / len(v) for v in values], marker="o", markersize=3, linestyle="--" if start else "-",
                      label=f"{label}{': the start' * start} ({seeds} seed{'s' * (seeds > 1)})")
            axes.fill_between(steps, [min(v) for v in values], [max(v) for v in values], alpha=0.15)
        axes.set(xlabel="training step", ylabel="validation cIoU %, one step")
        axes.set_title("in-training validation, held-out scenes (mean; band: seeds' range)", fontsize="medium")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        return page.png(figure)


def _cell_args(cells: list[Cell], variant: str) -> dict[str, Any]:
    return next(cell.config.train_args for cell in cells if cell.variant == variant)


def timestep_plot(rows: list, densities: dict[str, dict[str, Any]]) -> bytes:
    """Left: the recorded density of each training timestep distribution; right: cIoU (95% interval) of each
    one at every step count it was evaluated at (variant names `LABEL@STEPS`)."""
    import matplotlib.style
    from matplotlib.figure import Figure

    from bench.ablate import page

    labels = list(dict.fromkeys(variant.split("@")[0] for variant in densities))
    with matplotlib.style.context("default"):
        figure = Figure(figsize=(10, 3.8))
        density_axes, quality = figure.subplots(1, 2)
        for label in labels:
            curve = next(densities[v] for v in densities if v.split("@")[0] == label)
            density_axes.plot(curve["t"], curve["density"], label=label)
        density_axes.set(xlabel="t (1 = pure noise)", ylabel="density", yscale="log",
                         title="training timestep densities")
        shown = [row for row in rows if "@" in row.variant and row.variant.split("@")[0] in labels]
        steps = sorted({row.variant.split("@")[1] for row in shown}, key=int)
        width = 0.8 / max(1, len(steps))
        for i, step in enumerate(steps):
            found = [(labels.index(row.variant.split("@")[0]), row) for row in shown if row.variant.endswith(f"@{step}")]
            xs = [x + i * width for x, _ in found]
            values = [100 * row.values["ciou"] for _, row in found]
            ends = [row.values["ciou_ci95"] or [row.values["ciou"]] * 2 for _, row in found]
            errors = [[v - 100 * lo for v, (lo, _) in zip(values, ends)], [100 * hi - v for v, (_, hi) in zip(values, ends)]]
            quality.bar(xs, values, width, yerr=errors, capsize=3, label=f"{step} step{'s' if step != '1' else ''}")
        quality.set_xticks([x + width * (len(steps) - 1) / 2 for x in range(len(labels))], labels, rotation=20,
                           fontsize="small")
        quality.set(ylabel="cIoU % (95% interval)", title="quality of each distribution")
        for axes in (density_axes, quality):
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
        figure.tight_layout()
        return page.png(figure)


def _project_relative(argument: str) -> str:
    """`key_dir=relative/path` -> the project root's path when it exists there (the files give paths so)."""
    from bench.report.text import PROJECT_ROOT

    key, sep, value = argument.partition("=")
    if sep and key.endswith("_dir") and value and not Path(value).is_absolute() and (PROJECT_ROOT / value).exists():
        return f"{key}={PROJECT_ROOT / value}"
    return argument


def _with_checkpoint(config: TrainedEvalConfig, checkpoint: str) -> TrainedEvalConfig:
    import dataclasses

    return dataclasses.replace(config, checkpoint=checkpoint)

