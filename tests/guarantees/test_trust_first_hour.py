"""Issue 21, the first hour as a new user tries it: help without a model, quiet loading, messages that say what
to do, summaries that use the user's label and name what was written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from tests.guarantees.test_hostile import SQUARE

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "genmask" / "checkpoints" / "tiny"


def test_bench_train_help_needs_no_model(capsys):
    assert main(["train", "--help"]) == 0
    assert "genmask" in capsys.readouterr().out


def test_bench_train_without_a_model_says_which_there_are(capsys):
    assert main(["train"]) == 2
    assert "--model" in capsys.readouterr().err


def test_genmask_train_help_lists_the_configuration_keys():
    from genmask.trainer import GenMaskTrainer

    text = GenMaskTrainer.build_parser().format_help()
    assert "transformer.num_layers = 6" in text and "train.lr" in text


def test_a_trainer_ends_with_one_summary_line(capsys):
    from bench.training.trainers import print_summary

    print_summary({"step": 200, "val_ciou": 0.41234, "curve": list(range(500)), **{f"m{k}": 0.5 for k in range(20)}},
                  "runs/x")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "step 200" in out and "val_ciou 0.4123" in out and "runs/x" in out


def test_missing_data_names_data_root(tmp_path: Path, capsys):
    assert main(["run", "--suite", "refcoco", "--model", "oracle", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_score_summary_shows_the_label(tmp_path: Path, capsys, write_refer):
    root = write_refer(tmp_path / "data", [{"id": 1, "height": 64, "width": 64}], [SQUARE])
    assert main(["run", "--suite", "refcoco", "--split", "val", "--model", "oracle", "--data-root", str(root),
                 "--out", str(tmp_path / "run"), "--no-progress", "--bootstrap", "0", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["score", "--suite", "refcoco", "--split", "val", "--predictions",
                 str(tmp_path / "run" / "predictions.jsonl"), "--data-root", str(root), "--label", "my-model",
                 "--out", str(tmp_path / "scored"), "--bootstrap", "0"]) == 0
    assert "refcoco / my-model" in capsys.readouterr().out


@pytest.mark.slow
def test_no_progress_silences_model_loading(tmp_path: Path):
    made = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "synthref", "--split", "val", "--model",
                           "genmask", "--limit", "1", "--no-progress", "--bootstrap", "0", "--workers", "0", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "Loading weights" not in made.stderr and "\x1b[" not in made.stderr and "\r" not in made.stderr


@pytest.mark.slow
def test_generate_says_what_it_wrote_and_which_caption_each_image_shows(tmp_path: Path):
    made = subprocess.run([sys.executable, "-m", "genmask.generate", "a red square", "a blue circle", "--model",
                           str(TINY), "--out", str(tmp_path / "out"), "--steps", "1"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert str(tmp_path / "out") in made.stdout
    assert json.loads((tmp_path / "out" / "captions.json").read_text()) == {"caption_0.png": "a red square",
                                                                            "caption_1.png": "a blue circle"}


def test_genmask_trainer_help_loads_no_deep_learning_library() -> None:
    """`bench train --model genmask --help` answers at once: torch, diffusers and transformers load only to train."""
    import subprocess
    import sys

    script = ("import contextlib, io, sys\nfrom bench.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
              "    try:\n        main(['train', '--model', 'genmask', '--help'])\n    except SystemExit:\n        pass\n"
              "assert 'train.seg_sampler' in out.getvalue()\n"
              "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
