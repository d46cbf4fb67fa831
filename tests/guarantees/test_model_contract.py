"""Every registered model (the harness's own and the `genmask_bench.models` entry points, as `bench list` names
them) honours `bench.models.SegModel`: one mask per input at that input's size, boolean or probabilities in
[0, 1] without NaN, the same mask for a sample alone as inside a batch, and a configuration (run.json's
model_config) that is JSON. Each model is built as the runner builds it, on the shipped checkpoint, offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.masks import encode_rle
from bench.models import MODELS, ModelInput, SegModel
from bench.rundir.predictions import write_records
from bench.suites.base import IGNORE, Sample

SIZES = [(24, 40), (37, 29), (16, 16)]  # (height, width): none square but the last, none the models' own size
TEXTS = ["the red circle", "the square on the left", "the blue triangle below the circle"]
FLOAT_TOLERANCE = 1e-4


def box(height: int, width: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def batch() -> list[ModelInput]:
    """Three inputs: random images with a rectangle target (its border ignored) and a second object beside it."""
    rng = np.random.default_rng(0)
    batch = []
    for index, ((h, w), text) in enumerate(zip(SIZES, TEXTS)):
        target_box = box(h, w, h // 4, w // 4, h // 2 + 2, w // 2 + 2)
        target = target_box.astype(np.uint8)
        target[target_box & ~box(h, w, h // 4 + 1, w // 4 + 1, h // 2 + 1, w // 2 + 1)] = IGNORE
        objects = [target_box, box(h, w, 0, 0, h // 5 + 1, w)]
        sample = Sample(sample_id=f"s{index}", split="val", image_path=Path(f"synthetic/s{index}.png"), text=text,
                        height=h, width=w, load_target=lambda t=target: t.copy(),
                        load_objects=lambda o=objects: [m.copy() for m in o])
        batch.append(ModelInput(sample, rng.integers(0, 256, (h, w, 3), dtype=np.uint8), text))
    return batch


@pytest.fixture(scope="module")
def extra_options(tmp_path_factory, batch) -> dict[str, dict[str, str]]:
    """What a model needs beyond the image and text, by model name: replay's predictions file (the targets'
    foreground). The oracle reads the ground truth and the context baselines the objects through the samples."""
    predictions = tmp_path_factory.mktemp("replay") / "predictions.jsonl"
    write_records(predictions, [{"sample_id": x.sample.sample_id, "split": x.sample.split,
                                 "segmentation": encode_rle(x.sample.target() == 1)} for x in batch])
    return {"replay": {"predictions": str(predictions)}}


@pytest.fixture(scope="module", params=MODELS.names())
def model(request, extra_options) -> SegModel:
    """The registered model built as `bench run --model NAME` builds it (CPU, seed 0, default checkpoint)."""
    return MODELS.get(request.param)(device="cpu", seed=0, **extra_options.get(request.param, {}))


@pytest.fixture(scope="module")
def predicted(model, batch) -> list[np.ndarray]:
    return [np.asarray(mask) for mask in model.predict(batch)]


def test_one_mask_per_input_at_that_inputs_size(predicted, batch):
    assert len(predicted) == len(batch)
    assert [mask.shape for mask in predicted] == [x.image.shape[:2] for x in batch]
    assert [mask.shape for mask in predicted] == [(x.sample.height, x.sample.width) for x in batch]


def test_masks_are_boolean_or_probabilities_without_nan(predicted):
    for mask in predicted:
        if mask.dtype != bool:
            assert np.issubdtype(mask.dtype, np.floating), mask.dtype
            assert not np.isnan(mask).any()
            assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_a_sample_alone_gets_the_mask_it_gets_in_a_batch(model, predicted, batch):
    for index, x in enumerate(batch):
        (alone,) = model.predict([x])
        alone = np.asarray(alone)
        assert alone.dtype == predicted[index].dtype and alone.shape == predicted[index].shape
        if alone.dtype == bool:
            assert np.array_equal(alone, predicted[index]), f"{x.sample.sample_id}: alone differs from in a batch"
        else:
            np.testing.assert_allclose(alone, predicted[index], atol=FLOAT_TOLERANCE)


def test_the_config_recorded_in_run_json_is_json(model, predicted):
    config = model.config()  # after predicting: what the runner records when the run ends
    assert isinstance(config, dict)
    json.dumps(config, allow_nan=False, sort_keys=True)
