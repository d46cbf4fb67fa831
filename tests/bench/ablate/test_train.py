"""Training ablations (kind "train"): the trainer's command line, trainings shared by variants that differ only
in evaluation, a cell interrupted after training finished by --resume, cells declared in runs.toml, claims
naming variants, and the readouts the readout ablation compares."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.ablate.cells import Cell
from bench.ablate.evaluate import EvalKind
from bench.ablate.load import load_ablation
from bench.ablate.train import training_directory
from bench.cli import main
from bench.report.read_runs import load_runs
from bench.rundir.declared import read_declared
from genmask.readout import fit_linear, fit_pc1


def _cell(name: str, variant: str, seed: int, budget: str = "small") -> Cell:
    ablation = load_ablation(name)
    return Cell(name, variant, seed, budget, ablation.resolve(variant, budget), {})


def test_the_training_command_carries_the_variant_and_the_seed():
    argv = _cell("timeshift", "tail-0.1@1", 2).config.training_argv(2)
    assert "train.seed=2" in argv and "train.seg_sampler_params={'a': 0.1}" in argv
    assert "--preset=tiny" in argv and "train.init=checkpoint" in argv  # from the included _finetune.toml
    assert argv[1:] == sorted(argv[1:])  # options first, then overrides in a stable order


def test_variants_that_differ_only_in_evaluation_share_one_training():
    one, four = _cell("timeshift", "tail-0.05@1", 0), _cell("timeshift", "tail-0.05@4", 0)
    assert one.key() != four.key()  # two result directories ...
    assert training_directory(one) == training_directory(four)  # ... one training
    assert training_directory(one) != training_directory(_cell("timeshift", "tail-0.05@1", 1))
    assert training_directory(one) != training_directory(_cell("timeshift", "tail-0.1@1", 0))


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "table.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.startswith("latency")} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_timeshift_smoke_trains_evaluates_and_a_cell_interrupted_after_training_is_resumed(tmp_path, monkeypatch,
                                                                                           capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    common = ["ablate", "timeshift", "--budget", "smoke"]
    (tmp_path / "runs.toml").write_text("# the committed runs\n")
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    declared = read_declared(tmp_path)  # complete cells below a results directory are declared there ...
    assert [entry.label for entry in declared] == ["untrained@1", "tail-0.05@1", "tail-0.5@1", "context-every-object"]
    assert {run.name for run in load_runs(tmp_path)} == {e.directory for e in declared}  # ... and check out
    cells = sorted(c for c in (tmp_path / "whole" / "runs").iterdir() if not c.name.startswith("context-"))
    assert [c.name.split("-s0-")[0] for c in cells] == ["tail-0.05@1", "tail-0.5@1", "untrained@1"]
    for cell in cells:
        training = json.loads((cell / "training.json").read_text())
        steps = 0 if cell.name.startswith("untrained") else 2
        command = " ".join(training["command"])
        assert training["metrics"]["step"] == steps and "train.init=checkpoint" in command
        assert "train.lr=0.0001" in command and "train.warmup_steps=0" in command  # the checkpoint's own final rate
    report = (tmp_path / "whole" / "report.md").read_text()
    # two training steps cannot be shown to beat the checkpoint they start from: the page withholds its verdicts
    assert "Control check" in report and "no verdict is given" in report and "**no verdict**" in report
    assert "### Training" in report and "bench train --model genmask" in report
    assert "Δ cIoU vs tail-0.05@1" in report  # every variant against the reference, paired by seed and sample
    assert (tmp_path / "whole" / "plots" / "variants.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plots/variants.png" in report  # every variant and its paired difference, embedded in the report

    real_make = EvalKind.make
    monkeypatch.setattr(EvalKind, "make", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed after the first cell's training, before its evaluation
        main([*common, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(EvalKind, "make", real_make)
    assert not (tmp_path / "killed" / "table.csv").exists()
    assert main([*common, "--out", str(tmp_path / "killed")]) == 2  # started, so not silently redone
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert "reused training" in capsys.readouterr().err  # the cached training is not repeated
    assert _table(tmp_path / "killed") == _table(tmp_path / "whole")


def test_a_linear_readout_recovers_a_linear_latent_code():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 8, 8)) > 0.5  # 4 x 4 latent positions of 2 x 2 pixels
    patches = masks.reshape(40, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(40, 4, 4, 4)
    code = rng.normal(size=(4, 6))  # each position's 4 pixels linearly mixed into 6 channels
    latents = np.einsum("nhwk,kc->nchw", np.where(patches, 1.0, -1.0), code)
    readout = fit_linear(latents, masks, factor=2)
    scores = readout(torch.from_numpy(latents).float()[:, :, None])
    assert scores.shape == (40, 1, 8, 8)
    assert np.array_equal(scores[:, 0].numpy() > 0, masks)


def test_pc1_readout_is_oriented_so_that_foreground_scores_high():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=5)
    masks = rng.random((30, 4, 4)) > 0.5
    latents = -np.einsum("nhw,c->nchw", np.where(masks, 1.0, -1.0), direction)  # foreground along -direction
    black = -np.einsum("nhw,c->nchw", -np.ones((1, 4, 4)), direction)
    white = -np.einsum("nhw,c->nchw", np.ones((1, 4, 4)), direction)
    readout = fit_pc1(latents, black, white, factor=1)
    scores = readout(torch.from_numpy(latents).float()[:, :, None])
    assert np.array_equal(scores[:, 0].numpy() > 0, masks)


@pytest.mark.slow
def test_training_cells_keep_their_log_and_the_page_plots_learning_curves(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grounding"
    curve_args = 'train_args={"train.eval_every"=1, "train.steps"=2}'
    assert main(["ablate", "grounding", "--budget", "smoke", "--out", str(out), "--set", curve_args]) == 0
    logs = sorted(out.glob("runs/*/training_log.jsonl"))
    assert len(logs) == 2
    assert (out / "plots" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "learning_curves.png" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_rival_learning_rate_sweep_trains_the_rival_and_val_chooses_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lr-unet"
    chooses = 'splits=["val", "testA"]'  # val chooses, testA reports
    curve_args = 'train_args={"train.eval_every"=1}'
    assert main(["ablate", "lr-unet", "--budget", "smoke", "--out", str(out), "--set", chooses,
                 "--set", curve_args]) == 0
    page = (out / "report.md").read_text()
    chosen = page.split("Chosen on val (highest mean cIoU over seeds): **")[1].split("**")[0]
    assert chosen in {"lr-2e-3", "lr-6e-3"}
    training = page.split("### Training")[1]
    rows = [line.split("|") for line in training.splitlines() if line.startswith("| lr-")]
    assert len(rows) == 2 and all(row[5].strip() not in ("", "nan") for row in rows)  # the rival's own val field
    assert "learning_curves.png" in page  # read from the rival's log ("val", not GenMask's "val_1step")


def test_a_no_training_controls_final_validation_starts_the_learning_curves(tmp_path, monkeypatch):
    from bench.ablate.train import TRAINING_LOG, TrainKind, learning_curve_plot

    joint = load_ablation("joint")
    logs = {"untrained": [{"stage": "dit", "final": {"step": 0, "val_1step": {"ciou_all": 0.30}}}],
            "segmentation-only": [{"stage": "dit", "step": 50, "val_1step": {"ciou_all": 0.32}},
                                  {"stage": "dit", "final": {"step": 100, "val_1step": {"ciou_all": 0.33}}}]}
    cells = []
    for variant, records in logs.items():
        cell = Cell("joint", variant, 0, "small", joint.resolve(variant, "small"), {})
        cell.directory(tmp_path).mkdir(parents=True)
        (cell.directory(tmp_path) / TRAINING_LOG).write_text("".join(json.dumps(r) + "\n" for r in records))
        cells.append(cell)
    monkeypatch.setattr(TrainKind, "is_complete", lambda self, directory: True)
    curves = TrainKind().learning_curves(cells, tmp_path)
    assert curves == {"untrained": {0: [0.30]}, "segmentation-only": {50: [0.32], 100: [0.33]}}
    assert learning_curve_plot(curves)[:4] == b"\x89PNG"
