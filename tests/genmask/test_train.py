"""GenMask training CLI on the micro preset: both stages run, resuming gives the same weights as one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.training.seeding import step_generator
from genmask.train import make_batch
from genmask.trainer import GenMaskTrainer


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("vae")
    assert GenMaskTrainer.main(["--preset", "micro", "--stage", "vae", "--out", str(out), "train.vae_steps=2"]) == 0
    metrics = json.loads((out / "vae" / "metrics.json").read_text())
    assert 0.0 <= metrics["mask_iou_val"] <= 1.0
    config = json.loads((out / "vae" / "config.json").read_text())
    assert len(config["latents_mean"]) == 4 and all(s > 0 for s in config["latents_std"])
    return str(out / "vae")


@pytest.fixture(autouse=True)
def latent_cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def dit(out, vae_dir: str, *extra: str) -> int:
    return GenMaskTrainer.main(["--preset", "micro", "--stage", "dit", "--out", str(out), f"train.vae_dir={vae_dir}",
                     "train.steps=4", "train.batch_size=4", "train.seg_fraction=0.5", *extra])


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_resumed_run_matches_an_uninterrupted_one(vae_dir: str, tmp_path, ema_decay: float) -> None:
    ema = f"train.ema_decay={ema_decay}"
    assert dit(tmp_path / "straight", vae_dir, ema) == 0
    assert dit(tmp_path / "split", vae_dir, ema, "train.stop_at_step=2") == 0
    assert json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())["step"] == 2
    assert dit(tmp_path / "split", vae_dir, ema, "--resume") == 0
    files = ["model.safetensors", *(["ema.safetensors"] if ema_decay else [])]
    assert (tmp_path / "straight" / "checkpoint" / "ema.safetensors").exists() == bool(ema_decay)
    for file in files:
        straight = load_file(tmp_path / "straight" / "checkpoint" / file)
        split = load_file(tmp_path / "split" / "checkpoint" / file)
        assert straight.keys() == split.keys()
        for name in straight:
            torch.testing.assert_close(straight[name], split[name], msg=f"{file}: {name}")
    metrics = json.loads((tmp_path / "straight" / "final" / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0.0 <= metrics["val_1step"]["ciou_all"] <= 1.0
    assert (tmp_path / "straight" / "final" / "config.json").exists()


def test_batches_mix_segmentation_and_generation(vae_dir: str) -> None:
    from bench.training.stream import GroupedSegData, SegItem
    from genmask.model import GenMask

    model = GenMask.from_preset("micro", vocabulary=["red"])
    model.config.train.batch_size, model.config.train.seg_fraction = 4, 0.5
    latents = torch.zeros(3, 4, 1, 8, 8).numpy()
    seg = GroupedSegData(images=torch.zeros(3, 32, 32, 3, dtype=torch.uint8).numpy(), masks=None,
                         items=[SegItem(i, i, "red", "referring") for i in range(3)],
                         image_latents=latents + 1, mask_latents=latents + 2)
    batch = make_batch(model, seg, (["a red circle"] * 2, latents + 3), step=5)
    assert batch["images"][2:] == [None, None] and batch["texts"][2:] == ["a red circle"] * 2
    assert torch.all(batch["x0"][:2] == 2) and torch.all(batch["x0"][2:] == 3)
    assert torch.all(batch["shortcut"][:2] == 1) and torch.all(batch["shortcut"][2:] == 0)  # null frame for t2i
    assert float(batch["t"][:2].min()) > 0.5  # genmask_tail: segmentation at high noise
    again = make_batch(model, seg, (["a red circle"] * 2, latents + 3), step=5)
    torch.testing.assert_close(batch["noise"], again["noise"])  # a pure function of (seed, step)


def test_resuming_with_another_schedule_needs_new_schedule(vae_dir: str, tmp_path) -> None:
    from bench.training.schedule import ScheduleMismatchError

    assert dit(tmp_path, vae_dir, "train.stop_at_step=2") == 0
    with pytest.raises(ScheduleMismatchError, match="total 4 in the checkpoint, 6 now"):
        dit(tmp_path, vae_dir, "--resume", "train.steps=6")
    assert dit(tmp_path, vae_dir, "--resume", "train.steps=6", "--new-schedule", "train.stop_at_step=3") == 0
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and state["schedule"]["total"] == 6  # the new schedule is saved from now on


def test_resuming_at_the_stop_step_exports_its_weights_without_training(vae_dir: str, tmp_path) -> None:
    """A run stopped by hand between parts: `--resume train.stop_at_step=<its step>` writes final/ of that step."""
    assert dit(tmp_path, vae_dir, "train.stop_at_step=2") == 0
    saved = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert dit(tmp_path, vae_dir, "--resume", "train.stop_at_step=2") == 0
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 2
    assert json.loads((tmp_path / "final" / "metrics.json").read_text())["step"] == 2
    again = load_file(tmp_path / "checkpoint" / "model.safetensors")
    for name in saved:
        torch.testing.assert_close(saved[name], again[name], msg=name)


def test_unknown_override_is_an_error(vae_dir: str, tmp_path) -> None:
    from bench.training.overrides import ConfigError

    with pytest.raises(ConfigError, match="train.stepz"):
        dit(tmp_path, vae_dir, "train.stepz=3")


def test_each_process_draws_its_own_batch_and_one_process_keeps_the_single_process_stream() -> None:
    def draw(*args):
        return torch.rand(4, generator=step_generator(0, 7, *args))

    torch.testing.assert_close(draw(), draw(0, 1))
    assert not torch.allclose(draw(0, 2), draw(1, 2))


@pytest.mark.slow
def test_two_process_torchrun_trains_both_stages(tmp_path) -> None:
    """accelerate under torchrun (gloo on CPU): DDP forward/backward in both stages, rank 0 alone writes."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "BENCH_CACHE": str(tmp_path / "cache")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "genmask.train", "--preset", "micro", "train.threads=1"]
    vae = subprocess.run([*launch, "--stage", "vae", "--out", str(tmp_path / "vae"), "train.vae_steps=2"],
                         env=env, capture_output=True, timeout=300)
    assert vae.returncode == 0, vae.stderr.decode()[-3000:]
    dit = subprocess.run([*launch, "--stage", "dit", "--out", str(tmp_path / "dit"), f"train.vae_dir={tmp_path / 'vae' / 'vae'}",
                          "train.steps=3", "train.batch_size=2", "train.seg_fraction=0.5", "train.eval_every=2"],
                         env=env, capture_output=True, timeout=300)
    assert dit.returncode == 0, dit.stderr.decode()[-3000:]
    assert json.loads((tmp_path / "dit" / "checkpoint" / "state.json").read_text())["step"] == 3
    log = [json.loads(line) for line in (tmp_path / "dit" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_1step" in r] == [2]  # evaluated once, by rank 0 only
    assert (tmp_path / "dit" / "final" / "metrics.json").exists()


@pytest.mark.parametrize("shortcut", ["frame", "channel"])
def test_dit_stage_adapts_a_vlm_foundation_in_groups(vae_dir: str, tmp_path, shortcut: str) -> None:
    from genmask.vlm import VLMTrainer

    assert VLMTrainer.main(["--preset", "micro", "--out", str(tmp_path / "vlm"), "train.steps=1"]) == 0
    assert dit(tmp_path / "dit", vae_dir, "train.init=foundation", f"train.vlm_dir={tmp_path / 'vlm' / 'final'}",
               "train.group_size=2", f"shortcut={shortcut}") == 0
    config = json.loads((tmp_path / "dit" / "final" / "config.json").read_text())
    assert config["encoder"]["prompt_suffix"] == " ans" and config["shortcut"] == shortcut
    assert config["transformer"]["in_channels"] == (10 if shortcut == "channel" else 6)  # + 2 coordinate channels


def test_text_to_image_foundation_renders_and_is_adapted(vae_dir: str, tmp_path) -> None:
    from safetensors.torch import load_file as load

    from genmask.generate import main as generate
    from genmask.vlm import VLMTrainer

    assert VLMTrainer.main(["--preset", "micro", "--out", str(tmp_path / "vlm"), "train.steps=1"]) == 0
    vlm = f"train.vlm_dir={tmp_path / 'vlm' / 'final'}"
    assert GenMaskTrainer.main(["--preset", "micro", "--stage", "t2i", "--out", str(tmp_path / "t2i"),
                                f"train.vae_dir={vae_dir}", "train.steps=2", "train.batch_size=4",
                                "train.init=foundation", vlm]) == 0
    config = json.loads((tmp_path / "t2i" / "final" / "config.json").read_text())
    assert (config["shortcut"], config["train"]["seg_fraction"], config["encoder"]["freeze"]) == ("none", 0.0, True)
    t2i = tmp_path / "t2i" / "final"
    assert generate(["a red circle", "--model", str(t2i), "--out", str(tmp_path / "gen"), "--steps", "2",
                     "--evaluate", "3"]) == 0
    assert (tmp_path / "gen" / "caption_0.png").exists()
    quality = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert quality["generated"]["n"] == 3 and 0.0 <= quality["generated"]["colour_match"] <= 1.0
    assert dit(tmp_path / "seg", vae_dir, "train.init=foundation", vlm, f"train.dit_dir={t2i}", "shortcut=channel",
               "train.steps=1", "train.lr=0.0") == 0
    before = load(t2i / "transformer" / "diffusion_pytorch_model.safetensors")
    after = load(tmp_path / "seg" / "final" / "transformer" / "diffusion_pytorch_model.safetensors")
    torch.testing.assert_close(after["blocks.0.attn1.to_q.weight"], before["blocks.0.attn1.to_q.weight"])
    assert after["patch_embedding.weight"].shape[1] == before["patch_embedding.weight"].shape[1] + 4
    torch.testing.assert_close(after["patch_embedding.weight"][:, 4:], before["patch_embedding.weight"])


def test_zero_steps_saves_the_starting_weights_without_encoding_data(vae_dir: str, tmp_path, monkeypatch) -> None:
    import genmask.train as train_module

    assert dit(tmp_path / "start", vae_dir) == 0
    monkeypatch.setattr(train_module, "load_grouped_data", lambda model: (_ for _ in ()).throw(AssertionError("encoded")))
    assert dit(tmp_path / "control", vae_dir, "train.init=checkpoint", f"train.init_dir={tmp_path / 'start' / 'final'}",
               "train.steps=0") == 0
    from safetensors.torch import load_file

    for part in ("transformer", "text_projection"):
        a = load_file(next((tmp_path / "start" / "final" / part).glob("*.safetensors")))
        b = load_file(next((tmp_path / "control" / "final" / part).glob("*.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "control" / "final" / "metrics.json").read_text())["train_flops"] == 0
