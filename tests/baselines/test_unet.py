"""The `unet` rival (CRIS-style U-Net): shapes, a loss that falls on a tiny overfit set, exact resume, the
save/load round trip (frozen foundation not copied, pinned by digest), the registries and the shipped checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baselines.common import RivalTrainConfig, load_rival, make_rival_batch, training_data
from baselines.unet import SHIPPED_CHECKPOINT, TextUNet, UNetConfig, UNetSegModel, UNetTrainer
from bench.models.base import MODELS, ModelInput
from bench.training import TRAINERS
from tests.baselines.helpers import assert_same_checkpoint, overfit_losses

SMALL = ["train.train_samples=6", "train.val_samples=4", "train.image_size=32", "train.batch_size=4",
         "train.warmup_steps=1", "train.eval_every=0", "train.threads=1", "model.channels=[8,16]",
         "model.sentence_dim=32", "model.kernel_dim=8"]


@pytest.fixture(scope="module")
def small_model() -> TextUNet:
    torch.manual_seed(0)
    return TextUNet(UNetConfig(channels=[8, 16], sentence_dim=32, kernel_dim=8))


@pytest.fixture(scope="module")
def overfit_batch() -> dict:
    train = RivalTrainConfig(train_samples=4, image_size=32, batch_size=4)
    return make_rival_batch(training_data(train), train, step=0)


def test_registered_names() -> None:
    assert MODELS.get("unet") is UNetSegModel
    assert TRAINERS.get("unet") is UNetTrainer


def test_shapes_and_frozen_foundation(small_model: TextUNet, overfit_batch: dict) -> None:
    logits = small_model(overfit_batch["images"], overfit_batch["texts"])
    assert logits.shape == (4, 32, 32) and torch.isfinite(logits).all()
    assert small_model.sentence_encoder(overfit_batch["images"], overfit_batch["texts"]).shape == (4, 256)
    assert not any(p.requires_grad for p in small_model.sentence_encoder.vlm.parameters())
    assert len(small_model.config.foundation_sha256) == 64  # pinned when built
    # a sample's prediction does not depend on its batch (the padding is cut to the longest instruction)
    alone = small_model(overfit_batch["images"][:1], overfit_batch["texts"][:1])
    torch.testing.assert_close(alone[0], logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool, width", [("mean", 128), ("answer", 128)])
def test_pooling_and_image_reading_options(overfit_batch: dict, pool: str, width: int) -> None:
    model = TextUNet(UNetConfig(channels=[8, 16], sentence_dim=32, kernel_dim=8, pool=pool, text_input="image+text"))
    assert model.sentence_encoder(overfit_batch["images"], overfit_batch["texts"]).shape == (4, width)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="text_input"):
        TextUNet(UNetConfig(text_input="pixels"))
    with pytest.raises(ValueError, match="changed since"):
        TextUNet(UNetConfig(foundation_sha256="0" * 64))


def test_loss_falls_on_a_tiny_overfit_set(overfit_batch: dict) -> None:
    torch.manual_seed(0)
    model = TextUNet(UNetConfig(channels=[8, 16], sentence_dim=32, kernel_dim=8)).train()
    losses = overfit_losses(model, lambda: UNetTrainer.loss(model, overfit_batch))
    assert losses[-1] < 0.6 * losses[0], losses


def test_resume_is_exact_and_round_trip(tmp_path) -> None:
    def train(out: Path, *extra: str) -> int:
        return UNetTrainer.main(["--out", str(out), *SMALL, "train.steps=4", *extra])

    assert train(tmp_path / "straight") == 0
    assert train(tmp_path / "split", "train.stop_at_step=2") == 0
    assert train(tmp_path / "split", "--resume") == 0
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "split")

    final = tmp_path / "straight" / "final"
    saved = load_file(final / "model.safetensors")
    assert saved and not any(key.startswith("sentence_encoder.vlm.") for key in saved)  # the foundation stays put
    config = json.loads((final / "config.json").read_text())
    assert config["name"] == "unet" and config["model"]["frozen_foundation"] and config["model"]["text_input"] == "text"
    module, _, metrics = load_rival(UNetTrainer, final)
    assert metrics["cost"]["parameters_trainable"] == sum(v.numel() for v in saved.values() if v.is_floating_point())
    adapter = UNetSegModel(checkpoint=str(final))
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    [mask] = adapter.predict([ModelInput(sample=None, image=image, text="the red circle")])
    with torch.no_grad():
        direct = (module(image[None], ["the red circle"])[0] > 0).numpy()
    np.testing.assert_array_equal(mask, direct)


def test_shipped_checkpoint_predicts() -> None:
    assert (SHIPPED_CHECKPOINT / "model.safetensors").exists(), "the shipped unet checkpoint is missing"
    assert (SHIPPED_CHECKPOINT / "RECIPE.md").exists()
    adapter = UNetSegModel()
    image = np.zeros((48, 80, 3), dtype=np.uint8)
    [mask] = adapter.predict([ModelInput(sample=None, image=image, text="the red circle")])
    assert mask.shape == (48, 80) and mask.dtype == bool
    cost = adapter.config()["cost"]
    assert cost["train_flops"] > 0 and cost["train_wall_seconds"] > 0 and cost["parameters_total"] > 0
