"""GenMask tiny on CPU, through the harness: the runner's overhead outside the forward passes (from run.json's
timings), per-sample latency by part at 1, 4 and 32 steps (the model's own `timings`), and training samples
per second of each preset (the trainer's own clock, set-up left out)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_measured

OVERHEAD_LIMIT = 0.10  # share of the prediction loop spent outside the model
LIMIT = 32  # samples per split (synthref val, testA, testB)
STEPS = (1, 4, 32)


def _genmask_run(tmp_path, *extra: str) -> tuple[dict, float]:
    """(run.json, wall seconds) of `bench run --suite synthref --model genmask` on the shipped tiny checkpoint."""
    out = tmp_path / "run"
    measured = run_measured(["-m", "bench", "run", "--suite", "synthref", "--model", "genmask", "--out", str(out),
                             "--no-progress", "--bootstrap", "0", *extra])
    return json.loads((out / "run.json").read_text()), measured.seconds


@pytest.mark.benchmark(group="runner overhead (GenMask tiny, synthref)")
def test_runner_overhead_outside_the_model(benchmark, tmp_path):
    run, wall = benchmark.pedantic(lambda: _genmask_run(tmp_path, "--limit", str(LIMIT)), rounds=1, iterations=1)
    timings = run["timings"]
    loop = timings["data_s"] + timings["model_s"] + timings["metric_s"]
    share = (timings["data_s"] + timings["metric_s"]) / loop
    benchmark.extra_info.update(role="overhead", samples=timings["samples"], loop_s=loop, model_s=timings["model_s"],
                                data_s=timings["data_s"], metric_s=timings["metric_s"], process_wall_s=wall,
                                overhead_share=share, limit=OVERHEAD_LIMIT)
    assert share <= OVERHEAD_LIMIT, f"{share:.1%} of the prediction loop is outside the model"


@pytest.mark.benchmark(group="GenMask tiny latency per sample (CPU, batch 8)")
@pytest.mark.parametrize("steps", STEPS)
def test_latency_by_part(benchmark, steps, tmp_path):
    run, _ = benchmark.pedantic(
        lambda: _genmask_run(tmp_path, "--split", "val", "--limit", "16", "--model-arg", f"steps={steps}"),
        rounds=1, iterations=1)
    samples = run["timings"]["samples"]
    parts = {part: seconds / samples for part, seconds in run["timings"]["model_breakdown_s"].items()}
    benchmark.extra_info.update(role="latency", steps=steps, samples=samples, per_sample_s=parts,
                                model_per_sample_s=run["timings"]["model_s"] / samples)


def _train(preset: str, out, vae_dir: str, batch: int, steps: int) -> float:
    """Seconds a training step takes: from the trainer's own wall clock (started after set-up), between the log
    line of step 0 and the end of the last step (one checkpoint save included), so set-up and the first step
    are left out."""
    run_measured(["-m", "bench", "train", "--model", "genmask", "--preset", preset, "--stage", "dit",
                  "--out", str(out), f"train.vae_dir={vae_dir}", f"train.steps={steps}", "train.train_samples=64",
                  "train.val_samples=8", "train.caption_samples=16", "train.eval_every=0",
                  f"train.batch_size={batch}", "train.warmup_steps=1"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    first = next(r["wall"] for r in log if r.get("step") == 0 and "wall" in r)
    last = next(r["final"]["wall_seconds"] for r in log if "final" in r)
    return (last - first) / (steps - 1)


@pytest.mark.benchmark(group="training samples per second (CPU, dit stage)")
@pytest.mark.parametrize("preset, batch, steps", [("micro", 8, 30), ("tiny", 16, 6)])
def test_training_throughput(benchmark, preset, batch, steps, tmp_path):
    if preset == "micro":  # no shipped micro VAE: train one for two steps
        run_measured(["-m", "bench", "train", "--model", "genmask", "--preset", "micro", "--stage", "vae",
                      "--out", str(tmp_path / "vae"), "train.vae_steps=2"])
        vae_dir = str(tmp_path / "vae" / "vae")
    else:
        vae_dir = str(REPO / "genmask" / "checkpoints" / "tiny" / "vae")
    per_step = benchmark.pedantic(_train, args=(preset, tmp_path / "dit", vae_dir, batch, steps), rounds=1,
                                  iterations=1)
    benchmark.extra_info.update(role="training", preset=preset, batch_size=batch, steps=steps, step_s=per_step,
                                samples_per_s=batch / per_step)
