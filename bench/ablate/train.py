"""Cells of kind "train": `bench train --model TRAINER` with the variant's overrides and the cell's seed, then one
`bench run` of what it made, exactly as an "eval" cell (`bench.ablate.evaluate`) runs a shipped checkpoint.

The evaluated run directory is the durable result. The trained weights are a cache on top, in
CACHE/ablate/<ablation>/<training key> (`bench.training.cache.cache_root`), keyed by the trainer, its options
and overrides and the seed only, so variants that differ in evaluation alone (steps) share one training. A cell
first writes `training.json` (which training it waits for), so a crash at any point leaves it "started": --resume
resumes the training from its last checkpoint (exactly: batches and noise come from (seed, step)) and then the
evaluation. `generation = N` also scores the trained model's text-to-image samples on N held-out captions
(`genmask.generate`), written to `generation.json` and shown in the report.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.ablate import evaluate
from bench.ablate.cells import Cell
from bench.ablate.spec import Ablation, TrainedEvalConfig
from bench.errors import BenchError

TRAINING_FILE, GENERATION_FILE = "training.json", "generation.json"
data_identity, fingerprints, is_complete, is_started = (evaluate.data_identity, evaluate.fingerprints,
                                                        evaluate.is_complete, evaluate.is_started)


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


def make(cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
    """Train, then evaluate the trained model as an "eval" cell; record the training beside the run."""
    config: TrainedEvalConfig = cell.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"trainer": config.trainer, "command": config.training_argv(cell.seed),
              "directory": str(training_directory(cell))}
    _write_json(directory / TRAINING_FILE, record)  # from here on the cell counts as started
    trained = train(cell)
    metrics_file = trained / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.exists() else {}
    _write_json(directory / TRAINING_FILE, {**record, "metrics": metrics})
    if config.generation:
        _write_json(directory / GENERATION_FILE, generation(trained, config.generation, cell.seed))
    evaluated = Cell(cell.ablation, cell.variant, cell.seed, cell.budget,
                     _with_checkpoint(config, str(trained)), cell.data)
    evaluate.make(evaluated, directory, command, data_root, resume and (directory / "run.json").exists())


def generation(trained: Path, count: int, seed: int) -> dict[str, Any]:
    """Text-to-image quality of a trained GenMask on `count` held-out captions (`genmask.generate`)."""
    import torch

    from genmask.generate import generation_quality, held_out_captions
    from genmask.model import GenMask, generate_images

    model = GenMask.from_pretrained(trained).eval()
    captions, _ = held_out_captions(count, model.config.image_size)
    with torch.inference_mode():
        images = generate_images(model, captions, seed=seed)
    return generation_quality(images, captions)


def assemble(ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
             missing: list[tuple[str, str]]) -> list[Path]:
    """The eval kind's table and report, with what each cell's training recorded."""
    samplers = {cell.variant: _sampler(cell.config) for cell in cells if _sampler(cell.config)}
    plot = (lambda rows: {"plots/timesteps.png": timestep_plot(rows, samplers)}) if samplers else None
    return evaluate.assemble(ablation, budget, cells, out, command, missing, sections=_training_lines(cells, out),
                             plot_rows=plot)


def _sampler(config: TrainedEvalConfig) -> tuple[str, dict[str, float]] | None:
    """The segmentation timestep sampler a cell trains with, when its variant sets one."""
    name = config.train_args.get("train.seg_sampler")
    return (name, dict(config.train_args.get("train.seg_sampler_params", {}))) if name else None


def timestep_plot(rows: list, samplers: dict[str, tuple[str, dict[str, float]]]) -> bytes:
    """Left: the density of each training timestep distribution; right: cIoU (95% interval) of each one at every
    step count it was evaluated at (variant names `LABEL@STEPS`)."""
    import matplotlib.style
    import torch
    from matplotlib.figure import Figure

    from bench.ablate import report
    from genmask.timesteps import density

    t = torch.linspace(0.002, 0.998, 499, dtype=torch.float64)
    labels = list(dict.fromkeys(variant.split("@")[0] for variant in samplers))
    with matplotlib.style.context("default"):
        figure = Figure(figsize=(10, 3.8))
        densities, quality = figure.subplots(1, 2)
        for label in labels:
            name, params = next(samplers[v] for v in samplers if v.split("@")[0] == label)
            densities.plot(t.numpy(), density(name, t, **params).numpy(), label=label)
        densities.set(xlabel="t (1 = pure noise)", ylabel="density", yscale="log",
                      title="training timestep densities")
        steps = sorted({row.variant.split("@")[1] for row in rows if "@" in row.variant}, key=int)
        width = 0.8 / max(1, len(steps))
        for i, step in enumerate(steps):
            found = [(labels.index(row.variant.split("@")[0]), row) for row in rows if row.variant.endswith(f"@{step}")]
            xs = [x + i * width for x, _ in found]
            values = [100 * row.values["ciou"] for _, row in found]
            low = [v - 100 * (row.values["ciou_ci95"] or [row.values["ciou"]] * 2)[0] for v, (_, row) in zip(values, found)]
            high = [100 * (row.values["ciou_ci95"] or [row.values["ciou"]] * 2)[1] - v for v, (_, row) in zip(values, found)]
            quality.bar(xs, values, width, yerr=[low, high], capsize=3, label=f"{step} step{'s' if step != '1' else ''}")
        quality.set_xticks([x + width * (len(steps) - 1) / 2 for x in range(len(labels))], labels, rotation=20,
                           fontsize="small")
        quality.set(ylabel="cIoU % (95% interval)", title="quality of each distribution")
        for axes in (densities, quality):
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
        figure.tight_layout()
        return report.png(figure)


def _training_lines(cells: list[Cell], out: Path) -> list[str]:
    """A table of what each complete cell's training recorded: steps, minutes, in-training validation,
    generation quality."""
    rows = []
    for cell in cells:
        directory = cell.directory(out)
        if not (is_complete(directory) and (directory / TRAINING_FILE).exists()):
            continue
        metrics = json.loads((directory / TRAINING_FILE).read_text(encoding="utf-8")).get("metrics", {})
        gen_file = directory / GENERATION_FILE
        gen = json.loads(gen_file.read_text(encoding="utf-8")) if gen_file.exists() else {}
        val = metrics.get("val_1step", {})
        rows.append([cell.variant, str(cell.seed), str(metrics.get("step", "?")),
                     f"{metrics.get('wall_seconds', float('nan')) / 60:.1f}",
                     f"{100 * val['ciou_all']:.1f}" if "ciou_all" in val else "",
                     f"{100 * gen['colour_match']:.1f} / {100 * gen['count_match']:.1f}" if gen else ""])
    if not rows:
        return []
    from bench.report.text import markdown_table

    header = ["variant", "seed", "steps", "train minutes", "in-training val cIoU % (1 step)",
              "generation colour / count match %"]
    return ["### Training", "",
            "What each cell's training recorded (`training.json`, `generation.json` in its run directory). The "
            "in-training validation uses held-out synthetic scenes of the training stream, not the table's samples.",
            "", markdown_table(rows, header)]


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


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
