"""Why a GenMask checkpoint scores what it scores: cIoU per rule, use of the instruction, mask sizes, learning curve.

    python -m genmask.diagnose [--checkpoint DIR] [--samples 512] [--log OUT/log.jsonl] [--out DIR] [--leak]

Validation scenes are the training run's own held-out stream (`bench.training.heldout`), so numbers line up
with the validation cIoU in the training log. Writes DIR/diagnostics.json, DIR/DIAGNOSTICS.md (with
the command that made it) and, given the training log, DIR/learning_curve.png. `--leak` adds the leak probe
(`genmask.leak`): per noise level, how much of the mask the noisy latent alone gives away; `--calibrate` the mask
threshold that maximises one-step cIoU on these validation scenes (for `--model-arg threshold=` on the test splits).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from bench.training.heldout import VAL_SEED_OFFSET, SegData, synth_segmentation
from bench.training.log import plot_learning_curve, read_log, validation_curve
from bench.training.validation import ciou, giou, sample_scores, validation_metrics
from genmask.adapter import SHIPPED_CHECKPOINT
from genmask.leak import DEFAULT_GRID, leak_markdown, leak_table
from genmask.model import GenMask
from genmask.train import predict_masks

CURVE_SERIES = {"all": "ciou_all", "referring": "ciou_referring", "reasoning": "ciou_reasoning"}


def mean_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample IoU of two (N, H, W) boolean stacks; an empty union counts as agreement (1)."""
    return giou(sample_scores(a, b))


def instruction_use(model: GenMask, data: SegData, own: np.ndarray, seed: int = 0) -> dict:
    """Predict again with each scene given the next scene's instruction: a model that ignores the text barely
    changes its masks (agreement near 1) and scores about as well against the true target."""
    other_texts = data.texts[1:] + data.texts[:1]
    other = predict_masks(model, data.images, other_texts, steps=1, seed=seed)
    return {"agreement_iou_own_vs_other_instruction": mean_iou(own, other),
            "ciou_with_other_instruction": ciou(sample_scores(other, data.masks))}


def mask_sizes(predicted: np.ndarray, target: np.ndarray) -> dict:
    """Mean foreground pixels predicted and in the ground truth (faint one-step masks come out too small)."""
    return {"mean_predicted_area": float(predicted.sum(axis=(1, 2)).mean()),
            "mean_target_area": float(target.sum(axis=(1, 2)).mean())}


def diagnose(model: GenMask, data: SegData, steps: tuple[int, ...] = (1, 4), seed: int = 0) -> dict:
    """All diagnostics of one model on one validation set."""
    result: dict = {"samples": len(data.texts), "seed": seed}
    one_step = None
    for n in steps:
        predicted = predict_masks(model, data.images, data.texts, steps=n, seed=seed)
        result[f"steps_{n}"] = validation_metrics(predicted, data.masks, data.kinds, data.rules)
        result[f"steps_{n}"] |= mask_sizes(predicted, data.masks)
        if n == 1:
            one_step = predicted
    if one_step is not None:
        result["instruction_use"] = instruction_use(model, data, one_step, seed)
    return result


# on the decoded [-1, 1] scale: fine steps near -1, where faint one-step masks are cut best, then -0.9 ... 0.5
THRESHOLD_GRID = (-0.99, -0.98, -0.97, -0.95, *(round(-0.9 + 0.1 * i, 1) for i in range(15)))


def calibrate_threshold(model: GenMask, data: SegData, grid: tuple[float, ...] = THRESHOLD_GRID, seed: int = 0,
                        batch: int = 64) -> dict:
    """One-step cIoU of the validation scenes at every mask threshold of `grid` (scores decoded once) and the best
    one: chosen here, on the training run's held-out stream, then used on the test splits (`threshold=` model-arg)."""
    scores = []
    for start in range(0, len(data.texts), batch):
        part, _ = model.predict_scores(list(data.images[start : start + batch]), data.texts[start : start + batch],
                                       steps=1, seed=seed)
        scores += part
    stacked = np.stack(scores)
    rows = [{"threshold": t, "ciou": ciou(sample_scores(stacked > t, data.masks))} for t in grid]
    best = max(rows, key=lambda row: row["ciou"])
    return {"checkpoint_threshold": model.config.mask_threshold, "rows": rows, "best": best}


def _calibration_lines(result: dict) -> list[str]:
    best, current = result["best"], result["checkpoint_threshold"]
    at_current = next((r["ciou"] for r in result["rows"] if abs(r["threshold"] - current) < 1e-9), None)
    lines = ["## Mask threshold chosen on validation", "",
             f"One-step cIoU of the validation scenes (the training run's held-out stream, never a test split) at each "
             f"threshold of the decoded score (checkpoint: {current:g}). Best: {best['threshold']:g} "
             f"(cIoU {best['ciou']:.3f}" + (f", against {at_current:.3f} at {current:g}" if at_current is not None else "")
             + f"); use it on the test splits with `bench run ... --model-arg threshold={best['threshold']:g}`.", "",
             "| threshold | " + " | ".join(f"{r['threshold']:g}" for r in result["rows"]) + " |",
             "|---|" + "---|" * len(result["rows"]),
             "| cIoU | " + " | ".join(f"{r['ciou']:.3f}" for r in result["rows"]) + " |"]
    return lines


def learning_curve(log: Path) -> list[dict]:
    """Periodic validation records of a training log: step, wall seconds and one-step cIoU (all, per kind and,
    where the log has it, per rule)."""
    return validation_curve(read_log(log), "val_1step")


def extrapolate(curve: list[dict], key: str, target: float, fraction: float = 0.5) -> dict | None:
    """A straight line through the last `fraction` of the validation points (cIoU against training hours): the
    fitted value now, the slope per hour and the further hours it needs to reach `target`. Linear is the
    optimistic reading: learning curves flatten."""
    points = [(row["wall"] / 3600, row[key]) for row in curve if row.get("wall") is not None and key in row]
    points = points[int(len(points) * (1 - fraction)):]
    if len(points) < 3:
        return None
    hours, values = np.array(points).T
    slope, intercept = np.polyfit(hours, values, 1)
    now = float(slope * hours[-1] + intercept)
    more = float((target - now) / slope) if slope > 1e-9 else float("inf")  # a flat line never gets there
    return {"series": key, "target": target, "points": len(points), "hours_so_far": float(hours[-1]),
            "fitted_now": now, "slope_per_hour": float(slope), "more_hours_to_target": max(0.0, more)}


def _extrapolation_lines(fits: list[dict]) -> list[str]:
    if not fits:
        return []
    lines = ["", "## How far the targets are", "",
             "A straight line through the last half of the validation points (cIoU against training hours, as the "
             "log's wall clock counts them); the hours are the run's own, on this machine. Linear is optimistic: "
             "learning curves flatten.", "",
             "| series | target | hours so far | fitted now | slope per hour | further hours to the target |",
             "|---|---|---|---|---|---|"]
    for fit in fits:
        more = "never (not rising)" if fit["more_hours_to_target"] == float("inf") else f"{fit['more_hours_to_target']:.1f}"
        lines.append(f"| {fit['series']} | {fit['target']:.2f} | {fit['hours_so_far']:.1f} | {fit['fitted_now']:.3f} | "
                     f"{fit['slope_per_hour']:+.3f} | {more} |")
    return lines


def _rule_table(result: dict, steps: tuple[int, ...]) -> list[str]:
    rules = sorted(result[f"steps_{steps[0]}"]["ciou_by_rule"])
    lines = ["| rule | " + " | ".join(f"{n}-step cIoU" for n in steps) + " |", "|---|" + "---|" * len(steps)]
    for rule in rules:
        lines.append(f"| {rule} | " + " | ".join(f"{result[f'steps_{n}']['ciou_by_rule'][rule]:.3f}" for n in steps) + " |")
    return lines


def markdown(result: dict, checkpoint: str, command: str, steps: tuple[int, ...], curve: list[dict]) -> str:
    """DIAGNOSTICS.md: the command, the headline numbers, the per-rule table and the curve."""
    name = "the shipped tiny checkpoint" if Path(checkpoint) == SHIPPED_CHECKPOINT else f"`{checkpoint}`"
    lines = [f"# Diagnostics of {name}", "", f"Made by `{command}`.", "",
             f"{result['samples']} validation scenes, noise seed {result['seed']}.", "",
             "| | " + " | ".join(f"{n} step{'s' * (n > 1)}" for n in steps) + " |", "|---|" + "---|" * len(steps)]
    for key in ("ciou_all", "ciou_referring", "ciou_reasoning", "giou_all", "mean_predicted_area", "mean_target_area"):
        lines.append(f"| {key} | " + " | ".join(f"{result[f'steps_{n}'][key]:.3f}" for n in steps) + " |")
    if "instruction_use" in result:
        use = result["instruction_use"]
        lines += ["", "Use of the instruction (one step, each scene given the next scene's instruction): "
                  f"masks agree with the own-instruction masks at mean IoU "
                  f"{use['agreement_iou_own_vs_other_instruction']:.3f}; cIoU against the true target "
                  f"{use['ciou_with_other_instruction']:.3f}."]
    lines += ["", "## cIoU per rule", "", *_rule_table(result, steps)]
    if curve:
        lines += ["", "## Learning curve", "", "![learning curve](learning_curve.png)", "",
                  "| step | minutes | cIoU all | referring | reasoning |", "|---|---|---|---|---|"]
        for row in curve:
            minutes = "" if row["wall"] is None else f"{row['wall'] / 60:.0f}"
            lines.append(f"| {row['step']} | {minutes} | {row.get('ciou_all', float('nan')):.3f} | "
                         f"{row.get('ciou_referring', float('nan')):.3f} | {row.get('ciou_reasoning', float('nan')):.3f} |")
        lines += _compared_curve_lines(curve, result.get("compared_curves", {}))
        lines += _rule_curve_table(curve)
    if "leak" in result:
        lines += ["", *leak_markdown(result["leak"])]
    if "threshold" in result:
        lines += ["", *_calibration_lines(result["threshold"])]
    lines += _extrapolation_lines(result.get("extrapolation", []))
    return "\n".join(lines) + "\n"


def _compared_curve_lines(curve: list[dict], compared: dict[str, list[dict]]) -> list[str]:
    """This run's validation cIoU beside other runs' at the steps they share (the same held-out scenes when the
    runs share `train.seed` and `train.val_samples`)."""
    if not compared:
        return []
    mine = {row["step"]: row for row in curve}
    lines = ["", "### Beside other runs", "",
             "Validation one-step cIoU (all / referring) at the steps both logs have; other runs: "
             + ", ".join(f"{label} (`{rows[0]['log']}`)" for label, rows in compared.items()) + ".", "",
             "| step | this run | " + " | ".join(compared) + " |", "|---|---|" + "---|" * len(compared)]
    others = {label: {row["step"]: row for row in rows} for label, rows in compared.items()}
    for step in sorted(mine):
        if not all(step in rows for rows in others.values()):
            continue
        cells = [mine[step], *(rows[step] for rows in others.values())]
        lines.append(f"| {step} | " + " | ".join(
            f"{row.get('ciou_all', float('nan')):.3f} / {row.get('ciou_referring', float('nan')):.3f}"
            for row in cells) + " |")
    return lines


def _rule_curve_table(curve: list[dict]) -> list[str]:
    """Validation cIoU per rule at each logged step that has it: which rules are being learned."""
    rows = [row for row in curve if "ciou_by_rule" in row]
    if not rows:
        return []
    rules = sorted({rule for row in rows for rule in row["ciou_by_rule"]})
    lines = ["", "### cIoU per rule during training", "", "| rule | " + " | ".join(str(r["step"]) for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for rule in rules:
        cells = [f"{row['ciou_by_rule'][rule]:.2f}" if rule in row["ciou_by_rule"] else "" for row in rows]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genmask.diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="GenMask directory (default: the shipped tiny checkpoint)")
    parser.add_argument("--samples", type=int, default=512, help="validation scenes (default 512)")
    parser.add_argument("--steps", default="1,4", help="comma-separated sampling steps to score (default 1,4)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--log", help="the training run's log.jsonl, for the learning curve")
    parser.add_argument("--compare-log", action="append", default=[], metavar="LABEL=LOG",
                        help="with --log: another run's log.jsonl, its validation curve drawn and tabled beside this "
                             "run's (repeatable)")
    parser.add_argument("--out", default="results/genmask-tiny", help="output directory (default results/genmask-tiny)")
    parser.add_argument("--targets", default="ciou_referring=0.8,ciou_reasoning=0.6",
                        help="with --log: curve series and the cIoU each should reach, extrapolated linearly "
                             "(default ciou_referring=0.8,ciou_reasoning=0.6: the quality targets of the tiny model)")
    parser.add_argument("--leak", action="store_true",
                        help="add the leak probe: one-step x0 from the true mask latent noised to each t of --leak-grid, "
                             "scored with the own and another scene's instruction, beside the trained sampler's mass")
    parser.add_argument("--calibrate", action="store_true",
                        help="add the mask threshold that maximises one-step cIoU on the validation scenes")
    parser.add_argument("--leak-grid", default=",".join(f"{t:g}" for t in DEFAULT_GRID),
                        help=f"noise levels of the leak probe (default {','.join(f'{t:g}' for t in DEFAULT_GRID)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = args.checkpoint or str(SHIPPED_CHECKPOINT)
    if not (Path(checkpoint) / "config.json").exists():
        print(f"genmask.diagnose: no checkpoint at {checkpoint} (expected config.json)", file=sys.stderr)
        return 2
    try:
        steps = tuple(int(n) for n in args.steps.split(","))
        grid = tuple(float(t) for t in args.leak_grid.split(","))
    except ValueError as error:
        print(f"genmask.diagnose: --steps and --leak-grid take comma-separated numbers ({error})", file=sys.stderr)
        return 2
    compared = {}
    for item in args.compare_log:
        label, sep, log = item.partition("=")
        if not sep or not Path(log).is_file():
            print(f"genmask.diagnose: --compare-log takes LABEL=LOG with an existing log.jsonl, got {item!r}",
                  file=sys.stderr)
            return 2
        compared[label] = [{**row, "log": log} for row in learning_curve(Path(log))]
    if min(steps) < 1 or not all(0.0 <= t <= 1.0 for t in grid):
        print("genmask.diagnose: --steps must be >= 1 and --leak-grid values in [0, 1]", file=sys.stderr)
        return 2
    model = GenMask.from_pretrained(checkpoint).eval()
    seed = model.config.train.seed + VAL_SEED_OFFSET
    data = synth_segmentation(seed, args.samples, model.config.image_size)
    result = diagnose(model, data, steps, args.seed)
    if args.leak:
        result["leak"] = leak_table(model, data.images, data.masks, data.texts, grid, args.seed)
    if args.calibrate:
        result["threshold"] = calibrate_threshold(model, data, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = learning_curve(Path(args.log)) if args.log else []
    if curve:
        plot_learning_curve(curve, out / "learning_curve.png", CURVE_SERIES, xlabel="training step (batch 32)",
                            ylabel="validation one-step cIoU", title="tiny GenMask: validation during training",
                            others={f"{label}: all": (rows, "ciou_all") for label, rows in compared.items()})
        result["learning_curve"] = curve
        if compared:
            result["compared_curves"] = compared
        targets = dict(item.split("=") for item in args.targets.split(",") if item)
        fits = [extrapolate(curve, key, float(value)) for key, value in targets.items()]
        result["extrapolation"] = [fit for fit in fits if fit is not None]
    command = "python -m genmask.diagnose " + shlex.join(argv if argv is not None else sys.argv[1:])
    (out / "diagnostics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "DIAGNOSTICS.md").write_text(markdown(result, checkpoint, command.strip(), steps, curve), encoding="utf-8")
    print(f"wrote {out / 'DIAGNOSTICS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
