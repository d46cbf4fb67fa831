"""GenMask's training data: groups of instructions on one image, suites and COCO captions as sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.training.stream import GroupedSegData, SegItem, draw_items, suite_groups, synth_groups
from genmask.config import TrainConfig
from genmask.data import coco_captions


def test_synth_groups_keep_every_instruction_of_a_scene() -> None:
    data = synth_groups(seed=0, scenes=6, image_size=32)
    assert len(data.images) == 6 and data.masks.dtype == bool
    assert {item.kind for item in data.items} == {"referring", "reasoning"}
    assert all(len(members) > 3 for members in data.by_image)  # many texts per scene, not one
    for item in data.items:  # every target mask is one of its own scene's objects
        assert data.masks[item.mask].any()
    owners = {}
    for item in data.items:
        assert owners.setdefault(item.mask, item.image) == item.image


def toy_data() -> GroupedSegData:
    """Two images: image 0 has targets 0, 1, 2 (two texts each), image 1 has target 3."""
    items = [SegItem(0, mask, f"text {mask} {n}", "referring") for mask in range(3) for n in range(2)]
    items += [SegItem(1, 3, "only", "referring"), SegItem(1, 3, "why", "reasoning")]
    return GroupedSegData(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((4, 8, 8), bool), items)


def test_groups_come_from_one_image_with_different_targets_first() -> None:
    data = toy_data()
    train = TrainConfig(group_size=3)
    for step in range(20):
        chosen = [data.items[i] for i in draw_items(data, 6, train, torch.Generator().manual_seed(step))]
        for group in (chosen[:3], chosen[3:]):
            assert len({item.image for item in group}) == 1
            if group[0].image == 0:
                assert len({item.mask for item in group}) == 3  # three different targets
    same = draw_items(data, 6, train, torch.Generator().manual_seed(3))
    assert same == draw_items(data, 6, train, torch.Generator().manual_seed(3))  # a pure function of the generator


def test_task_weights_choose_the_kind_of_text() -> None:
    data = toy_data()
    train = TrainConfig(group_size=1, task_weights={"referring": 0.0, "reasoning": 1.0})
    chosen = [data.items[i] for i in draw_items(data, 40, train, torch.Generator().manual_seed(0))]
    assert {item.kind for item in chosen if item.image == 1} == {"reasoning"}
    assert {item.kind for item in chosen if item.image == 0} == {"referring"}  # the only kind image 0 has


def test_a_refer_format_suite_is_training_data_grouped_by_image(tmp_path, refer_dataset) -> None:
    square = [[2, 2, 10, 2, 10, 10, 2, 10]]  # x 2..10, y 2..10 on a 16 x 20 image
    refer_dataset(tmp_path, {1: (16, 20)}, [(7, 1, "train", square, [(1, "left box"), (2, "the big box")]),
                                            (8, 1, "train", [[12, 2, 18, 2, 18, 8, 12, 8]], [(3, "right box")]),
                                            (7, 1, "val", square, [(4, "held out")])], category="box")
    data = suite_groups("refcoco", str(tmp_path), image_size=8, limit=100)
    assert sorted(item.text for item in data.items) == ["left box", "right box", "the big box"]
    assert len(data.images) == 1 and data.by_image == [[0, 1, 2]]  # one image, one group
    assert data.masks.shape == (3, 8, 8) and {item.kind for item in data.items} == {"referring"}
    left = next(item for item in data.items if item.text == "left box")
    assert data.masks[left.mask][2, 2] and not data.masks[left.mask][2, 7]  # resized with the image


def test_coco_captions_are_read_from_the_split_folder(tmp_path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    for image_id, colour in ((1, (255, 0, 0)), (2, (0, 0, 255))):
        Image.new("RGB", (40, 30), colour).save(tmp_path / "train2017" / f"{image_id:012d}.jpg")
    captions = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": 30, "width": 40} for i in (1, 2)],
                "annotations": [{"id": 10, "image_id": 1, "caption": "A red picture. "},
                                {"id": 11, "image_id": 1, "caption": "Another caption of image 1"},
                                {"id": 12, "image_id": 2, "caption": "a blue picture"}]}
    path = tmp_path / "annotations" / "captions_train2017.json"
    path.write_text(json.dumps(captions), encoding="utf-8")
    images, texts = coco_captions(path, image_size=16, limit=10)
    assert texts == ["A red picture.", "a blue picture"]  # one caption per image
    assert images.shape == (2, 16, 16, 3) and images[0, 8, 8, 0] > 200 and images[1, 8, 8, 2] > 200


def test_unknown_suite_split_is_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="no bogus split"):
        suite_groups("synthref", "", 32, 4, split="bogus")


def test_reasonseg_train_split_is_training_data(tmp_path, reasonseg_sample) -> None:
    for index in range(2):
        reasonseg_sample(tmp_path, f"image_{index}", split="train", texts=[f"what holds the coffee {index}?", "the cup"],
                         shapes=[{"label": "target", "points": [[2, 2], [8, 2], [8, 8], [2, 8]]}], size=(12, 16),
                         fill=200, is_sentence=True)
    data = suite_groups("reasonseg", str(tmp_path), image_size=8, limit=100)
    assert len(data.images) == 2 and {item.kind for item in data.items} == {"reasoning"}
    assert all(members and {data.items[i].image for i in members} == {image}
               for image, members in enumerate(data.by_image))  # the samples of an image form its group
    assert all(data.masks[item.mask].any() for item in data.items)
