"""bench.training: schedule, resume rule, checkpoints, EMA, validation metrics, array cache, trainer registry."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from bench.training import TRAINERS, Trainer
from bench.training.cache import cache_root, cached_arrays
from bench.training.checkpoint import Checkpoint
from bench.training.ema import EMA
from bench.training.log import JsonlLog, plot_learning_curve, read_log, validation_curve
from bench.training.schedule import LRSchedule, ScheduleMismatchError
from bench.training.validation import validation_metrics


# ------------------------------------------------------------------------------------------ schedule
def test_lr_schedule_follows_its_analytic_form() -> None:
    schedule = LRSchedule(base_lr=2.0, warmup=10, total=110, min_ratio=0.1)
    for step in range(10):  # linear warm-up reaching 1 on the last warm-up step
        assert schedule.factor(step) == pytest.approx((step + 1) / 10)
    for step in range(10, 111):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 100))
        assert schedule.factor(step) == pytest.approx(expected)
        assert schedule.lr(step) == pytest.approx(2.0 * expected)
    assert schedule.factor(10) == pytest.approx(1.0)
    assert schedule.factor(60) == pytest.approx(0.55)  # cosine midpoint: halfway between 1 and min_ratio
    assert schedule.factor(110) == pytest.approx(0.1) and schedule.factor(500) == pytest.approx(0.1)
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=123.0)
    assert schedule.apply(optimizer, 60) == pytest.approx(1.1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.1)


def small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 3, generator=generator)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update()


def test_resume_refuses_a_changed_schedule_and_continues_the_saved_one(tmp_path) -> None:
    saved = LRSchedule(1e-3, 5, 100, 0.1)
    model = small_model(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    Checkpoint(tmp_path).save(model, optimizer, step=7, wall_seconds=3.5, schedule=saved)

    fresh = small_model(1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    changed = LRSchedule(2e-3, 5, 200, 0.1)
    with pytest.raises(ScheduleMismatchError, match="--new-schedule") as error:
        Checkpoint(tmp_path).resume(fresh, torch.optim.AdamW(fresh.parameters()), changed)
    message = str(error.value)
    assert "base_lr 0.001 in the checkpoint, 0.002 now" in message and "total 100 in the checkpoint, 200 now" in message
    assert "warmup" not in message and "min_ratio" not in message  # names only what differs
    for name, tensor in fresh.state_dict().items():  # refused before anything was loaded
        torch.testing.assert_close(tensor, before[name])

    optimizer = torch.optim.AdamW(fresh.parameters())
    state, schedule = Checkpoint(tmp_path).resume(fresh, optimizer, saved)
    assert schedule == saved and state["step"] == 7 and state["wall_seconds"] == 3.5
    assert schedule.apply(optimizer, state["step"]) == pytest.approx(saved.lr(7))

    _, schedule = Checkpoint(tmp_path).resume(fresh, optimizer, changed, new_schedule=True)
    assert schedule == changed  # the explicit option follows the new schedule from the saved step

    state_file = tmp_path / "checkpoint" / "state.json"  # a checkpoint from before schedules were saved
    state_file.write_text(json.dumps({"step": 7, "wall_seconds": 0.0}))
    assert Checkpoint(tmp_path).resume(fresh, optimizer, changed)[1] == changed


# ---------------------------------------------------------------------------------------- checkpoint
def test_checkpoint_round_trip_restores_model_ema_and_optimizer(tmp_path, monkeypatch) -> None:
    schedule = LRSchedule(1e-2, 2, 20, 0.1)
    model = small_model(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMA(model, 0.9)
    train_steps(model, optimizer, ema, 3, seed=0)
    Checkpoint(tmp_path).save(model, optimizer, step=3, wall_seconds=1.0, schedule=schedule, ema=ema, note="x")
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer.pt", "state.json"]  # no temporary files left

    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    restored = small_model(1)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-2)
    restored_ema = EMA(restored, 0.9)
    state, _ = Checkpoint(tmp_path).resume(restored, restored_optimizer, schedule, ema=restored_ema)
    assert loads == [{"weights_only": True}]
    assert state == {"step": 3, "wall_seconds": 1.0, "schedule": schedule.to_dict(), "note": "x"}
    for name, tensor in model.state_dict().items():  # parameters and BatchNorm buffers
        torch.testing.assert_close(restored.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for name, tensor in ema.state_dict().items():
        torch.testing.assert_close(restored_ema.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    # the optimizer moments came back too: one more step lands both runs on the same weights
    train_steps(model, optimizer, ema, 1, seed=1)
    train_steps(restored, restored_optimizer, restored_ema, 1, seed=1)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for name, tensor in ema.state_dict().items():
        torch.testing.assert_close(restored_ema.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    Checkpoint(tmp_path).save(model, optimizer, step=4, wall_seconds=2.0, schedule=schedule)  # now without EMA
    assert not (tmp_path / "checkpoint" / "ema.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="no EMA weights"):
        Checkpoint(tmp_path).resume(restored, restored_optimizer, schedule, ema=restored_ema)


# ----------------------------------------------------------------------------------------------- EMA
def test_ema_after_k_updates_equals_the_hand_computed_average() -> None:
    module = nn.Linear(2, 1)
    module.bias.requires_grad_(False)  # frozen weights are not averaged
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -2.0]]))
    ema = EMA(module, decay=0.9)
    assert set(ema.state_dict()) == {"weight"}
    values = [torch.tensor([[3.0, 0.0]]), torch.tensor([[-1.0, 4.0]]), torch.tensor([[0.5, 0.5]])]
    for value in values:
        with torch.no_grad():
            module.weight.copy_(value)
        ema.update()
    w0, (p1, p2, p3) = torch.tensor([[1.0, -2.0]]), values
    expected = 0.9**3 * w0 + 0.1 * (0.9**2 * p1 + 0.9 * p2 + p3)
    torch.testing.assert_close(ema.state_dict()["weight"], expected)
    with ema.applied():
        torch.testing.assert_close(module.weight.detach(), expected)
    torch.testing.assert_close(module.weight.detach(), p3)  # the trained weights are back
    with pytest.raises(ValueError):
        EMA(module, decay=1.0)


# ---------------------------------------------------------------------------------------- validation
def reference(predicted: np.ndarray, target: np.ndarray, chosen: list[bool]) -> tuple[float, float]:
    """Plain-Python cIoU (sum I / sum U) and gIoU (mean I / U, an empty union counting 1)."""
    inters, unions = [], []
    for p, t, keep in zip(predicted, target, chosen):
        if keep:
            inters.append(sum(bool(a) and bool(b) for a, b in zip(p.ravel(), t.ravel())))
            unions.append(sum(bool(a) or bool(b) for a, b in zip(p.ravel(), t.ravel())))
    return sum(inters) / sum(unions), sum(i / u if u else 1.0 for i, u in zip(inters, unions)) / len(inters)


def test_validation_metrics_equal_a_plain_python_reference() -> None:
    rng = np.random.default_rng(0)
    predicted, target = rng.random((40, 5, 7)) > 0.5, rng.random((40, 5, 7)) > 0.7
    predicted[3] = target[3] = False  # an empty union
    kinds = [["referring", "reasoning"][i % 2] for i in range(40)]
    rules = [["spatial", "ordinal", "largest", "odd_shape"][i % 4] for i in range(40)]
    result = validation_metrics(predicted, target, kinds, rules)
    assert list(result) == ["ciou_all", "giou_all", "ciou_reasoning", "giou_reasoning", "ciou_referring",
                            "giou_referring", "ciou_by_rule"]  # the keys genmask's training log has always used
    assert (result["ciou_all"], result["giou_all"]) == pytest.approx(reference(predicted, target, [True] * 40))
    for kind in ("referring", "reasoning"):
        expected = reference(predicted, target, [k == kind for k in kinds])
        assert (result[f"ciou_{kind}"], result[f"giou_{kind}"]) == pytest.approx(expected)
    assert sorted(result["ciou_by_rule"]) == sorted(set(rules))
    for rule, value in result["ciou_by_rule"].items():
        assert value == pytest.approx(reference(predicted, target, [r == rule for r in rules])[0])
    assert list(validation_metrics(predicted, target)) == ["ciou_all", "giou_all"]
    with pytest.raises(ValueError):
        validation_metrics(predicted, target, kinds[:-1])


# --------------------------------------------------------------------------------------------- cache
def test_cache_returns_the_same_arrays_without_building_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "bench"))
    monkeypatch.setenv("GENMASK_CACHE", str(tmp_path / "old"))
    assert cache_root() == tmp_path / "bench"
    module = nn.Linear(2, 2)
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(6, dtype=np.float16).reshape(2, 3) + len(calls), "b": np.array([True, False])}

    first = cached_arrays(["a", "b"], {"seed": 1}, build, modules=[module])
    second = cached_arrays(["a", "b"], {"seed": 1}, build, modules=[module])
    assert len(calls) == 1
    for name in ("a", "b"):
        assert second[name].dtype == first[name].dtype
        np.testing.assert_array_equal(second[name], first[name])
    assert not list((tmp_path / "bench").rglob("*.tmp"))
    cached_arrays(["a", "b"], {"seed": 2}, build, modules=[module])  # another key
    with torch.no_grad():
        module.weight.add_(1.0)
    cached_arrays(["a", "b"], {"seed": 1}, build, modules=[module])  # other weights
    assert len(calls) == 3
    monkeypatch.delenv("BENCH_CACHE")
    assert cache_root() == tmp_path / "old"  # the older variable is still honoured


# ------------------------------------------------------------------------------------------ log, plot
def test_log_is_written_by_the_main_process_only_and_plots_deterministically(tmp_path) -> None:
    JsonlLog(tmp_path / "other.jsonl", enabled=False).write({"step": 0})
    assert not (tmp_path / "other.jsonl").exists()
    log = JsonlLog(tmp_path / "log.jsonl")
    log.write({"step": 0, "loss": 1.0})
    log.write({"step": 5, "val_1step": {"ciou_all": 0.5, "giou_all": 0.4}, "wall": 2.0})
    rows = validation_curve(read_log(log.path), "val_1step")
    assert rows == [{"step": 5, "wall": 2.0, "ciou_all": 0.5}]
    for name in ("a.png", "b.png"):
        plot_learning_curve(rows, tmp_path / name, {"all": "ciou_all"}, xlabel="step", ylabel="cIoU", title="t")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


# -------------------------------------------------------------------------------------------- trainers
def test_trainers_come_from_entry_points_and_the_package_imports_without_torch() -> None:
    assert "genmask" in TRAINERS.names()
    trainer = TRAINERS.get("genmask")
    assert issubclass(trainer, Trainer) and trainer.__name__ == "GenMaskTrainer"
    code = "import sys, bench.training; print(sorted({'torch', 'genmask'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_trainer_main_parses_the_shared_options_and_returns_the_exit_code() -> None:
    class Echo(Trainer):
        name = "echo"

        @classmethod
        def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
            parser.add_argument("overrides", nargs="*")

        @classmethod
        def run(cls, args: argparse.Namespace) -> int:
            cls.seen = args
            return 7

    assert Echo.main(["a=1", "--resume", "--new-schedule", "b=2"]) == 7
    assert Echo.seen.overrides == ["a=1", "b=2"] and Echo.seen.resume and Echo.seen.out == ".cache/train/echo"
    with pytest.raises(SystemExit):
        Echo.main(["--new-schedule"])  # only meaningful when resuming
