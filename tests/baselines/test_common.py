"""The rivals' shared glue: the same sample stream as GenMask, the config, the generic trainer (exact resume,
final directory with its cost) and the adapter's resizing, on a toy rival defined here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from baselines.common import (
    RivalModule,
    RivalSegModel,
    RivalTrainConfig,
    RivalTrainer,
    batch_items,
    bce_dice_loss,
    images_to_float,
    load_rival,
    stream_fingerprint,
    training_data,
)
from bench.models.base import ModelInput
from bench.training.overrides import ConfigError
from genmask.config import GenMaskConfig, TrainConfig
from tests.baselines.helpers import assert_same_checkpoint

SMALL = ["train.train_samples=6", "train.val_samples=4", "train.image_size=32", "train.batch_size=4",
         "train.warmup_steps=1", "train.eval_every=0", "train.threads=1"]


@dataclass
class ToyConfig:
    width: int = 4


class ToyModule(RivalModule):
    """Two convolutions and a word-count bias: enough to learn something and to save/load."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, config.width, 3, padding=1), nn.ReLU(), nn.Conv2d(config.width, 1, 1))
        self.text = nn.Linear(1, 1)

    def forward(self, images: np.ndarray, texts: list[str]) -> torch.Tensor:
        words = torch.tensor([[float(len(t.split()))] for t in texts], device=self.device)
        return self.conv(images_to_float(images, self.device))[:, 0] + self.text(words)[:, :, None]


class ToyTrainer(RivalTrainer):
    name = "toy"
    model_config = ToyConfig
    recipe = {"lr": 1e-2}

    @classmethod
    def build(cls, config):
        return ToyModule(config.model)


class ToySegModel(RivalSegModel):
    name = "toy"
    trainer = ToyTrainer


def test_defaults_mirror_genmask_data_stream() -> None:
    train, genmask = RivalTrainConfig(), TrainConfig()
    for key in ("seed", "data", "data_root", "train_samples", "group_size", "task_weights", "val_samples"):
        assert getattr(train, key) == getattr(genmask, key), key
    tiny = json.loads((Path(__file__).resolve().parents[2] / "genmask/checkpoints/tiny/config.json").read_text())
    assert train.image_size == tiny["image_size"]
    config = ToyTrainer.default_config()
    assert config.train.lr == 1e-2 and config.model.width == 4


def test_overrides_are_checked() -> None:
    args = SimpleNamespace(config=None, overrides=["train.steps=7", "model.width=3", "train.task_weights={'referring': 2.0}"])
    config = ToyTrainer.resolve_config(args)
    assert config.train.steps == 7 and config.model.width == 3 and config.train.task_weights == {"referring": 2.0}
    with pytest.raises(ConfigError, match="unknown config key"):
        ToyTrainer.resolve_config(SimpleNamespace(config=None, overrides=["train.stepz=7"]))
    with pytest.raises(ConfigError, match="unknown config key"):
        ToyTrainer.resolve_config(SimpleNamespace(config=None, overrides=["model.depth=7"]))


@pytest.mark.parametrize("group_size", [1, 3])
def test_stream_is_genmask_stream(group_size: int) -> None:
    """The rival's batch holds exactly the instructions GenMask's make_batch draws for the same seed and step."""
    from genmask.train import make_batch

    train = RivalTrainConfig(train_samples=12, batch_size=6, image_size=32, group_size=group_size, seed=3)
    data = training_data(train)
    genmask = GenMaskConfig()
    for key in ("seed", "train_samples", "group_size", "task_weights", "batch_size"):
        setattr(genmask.train, key, getattr(train, key))
    latents = np.zeros((max(len(data.images), len(data.masks)), 1, 1, 1, 1), dtype=np.float16)
    data.image_latents, data.mask_latents = latents, latents
    model = SimpleNamespace(config=genmask)
    for step in (0, 1, 7, 123):
        items = [data.items[i] for i in batch_items(data, train, step)]
        assert [item.text for item in items] == make_batch(model, data, None, step)["texts"]
        other_rank = [data.items[i].text for i in batch_items(data, train, step, rank=1, world=2)]
        assert other_rank == make_batch(model, data, None, step, rank=1, world_size=2)["texts"]
    assert stream_fingerprint(train) == stream_fingerprint(RivalTrainConfig(**vars(train)))
    assert stream_fingerprint(train)["sha256_16"] != stream_fingerprint(RivalTrainConfig(seed=4))["sha256_16"]


def test_bce_dice_is_low_for_right_logits() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    right = torch.where(masks, 10.0, -10.0)
    assert float(bce_dice_loss(right, masks)) < 0.01 < float(bce_dice_loss(-right, masks))


def train_toy(out: Path, *extra: str) -> int:
    return ToyTrainer.main(["--out", str(out), *SMALL, "train.steps=6", *extra])


def test_resume_is_exact_and_final_directory_records_the_cost(tmp_path) -> None:
    assert train_toy(tmp_path / "straight") == 0
    assert train_toy(tmp_path / "split", "train.stop_at_step=3") == 0
    assert json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())["step"] == 3
    assert train_toy(tmp_path / "split", "--resume") == 0
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "split")
    final = tmp_path / "straight" / "final"
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    metrics = json.loads((final / "metrics.json").read_text())
    cost = metrics["cost"]
    assert metrics["step"] == 6 and 0.0 <= metrics["val"]["ciou_all"] <= 1.0
    assert cost["parameters_total"] == cost["parameters_trainable"] == sum(p.numel() for p in ToyModule(ToyConfig()).parameters())
    assert cost["train_flops"] == 6 * cost["train_flops_per_step"] > 0
    assert cost["train_samples_seen"] == 24 and cost["train_wall_seconds"] > 0
    assert metrics["data_stream"]["batch_size"] == 4 and metrics["data_stream"]["train_samples"] == 6

    # the adapter: round trip of the weights, resize to the input and back
    module, config, _ = load_rival(ToyTrainer, final)
    assert config.train.steps == 6 and config.train.lr == 1e-2
    adapter = ToySegModel(checkpoint=str(final))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)]
    masks = adapter.predict([ModelInput(sample=None, image=image, text="the red one") for image in images])
    assert [m.shape for m in masks] == [(40, 50), (32, 32)] and masks[0].dtype == bool
    with torch.no_grad():
        direct = module(images[1][None], ["the red one"])[0] > 0
    np.testing.assert_array_equal(masks[1], direct.numpy())
    record = adapter.config()
    assert record["cost"]["train_flops"] == cost["train_flops"] and record["image_size"] == 32
    assert adapter.check_suite("refcoco", synthetic=False) and not adapter.check_suite("synthref", synthetic=True)


def test_loading_refuses_another_models_checkpoint(tmp_path) -> None:
    assert train_toy(tmp_path, "train.steps=1") == 0
    config = json.loads((tmp_path / "final" / "config.json").read_text())
    (tmp_path / "final" / "config.json").write_text(json.dumps(config | {"name": "unet"}))
    with pytest.raises(ValueError, match="not 'toy'"):
        load_rival(ToyTrainer, tmp_path / "final")
