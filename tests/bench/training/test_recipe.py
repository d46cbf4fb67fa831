"""One recipe (issue 22): every trainer's `train` section is the harness's `Recipe`, nothing declares a copy of it,
and a saved config reads back equal (the committed checkpoints' configs included)."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.training import TRAINERS
from bench.training.overrides import apply_nested, apply_overrides, dotted_items
from bench.training.recipe import EMARecipe, Recipe, SampleStream

REPO = Path(__file__).resolve().parents[3]
RECIPE_FIELDS = {f.name for f in dataclasses.fields(Recipe)}
LEGACY_VALUES = {"shortcut": {True: "frame", False: "none"}}  # GenMaskConfig.from_dict reads the older booleans


def _genmask(name: str = "tiny"):
    from genmask.config import preset

    return preset(name)


def _vlm(name: str = "tiny"):
    from genmask.vlm import vlm_preset

    return vlm_preset(name)


def _sam(name: str = "tiny"):
    from baselines.lisa.sam import SAM_PRESETS

    return SAM_PRESETS[name]()


def _rival(name: str) -> Callable[[], Any]:
    return lambda: TRAINERS.get(name).default_config()


# every registered trainer and how to make its default configuration
CONFIGS: dict[str, Callable[[], Any]] = {
    "genmask": _genmask, "genmask-vlm": _vlm, "sam-tiny": _sam,
    "unet": _rival("unet"), "diffusion-features": _rival("diffusion-features"), "lisa": _rival("lisa"),
}


def _reload(trainer: str, saved: dict[str, Any], source: str) -> dict[str, Any]:
    """A saved config dict read back by the trainer's own loader, and saved again."""
    if trainer == "genmask":
        from genmask.config import GenMaskConfig

        return GenMaskConfig.from_dict(saved, source).to_dict()
    if trainer in ("unet", "diffusion-features", "lisa"):
        return TRAINERS.get(trainer).config_from_dict(saved, source).to_dict()
    config = CONFIGS[trainer]()
    apply_nested(config, saved, source)
    return config.to_dict()


def test_every_trainer_trains_on_the_one_recipe() -> None:
    assert set(CONFIGS) == set(TRAINERS.names()), "a new trainer: add it here, its train section a Recipe"
    for name, make in CONFIGS.items():
        train = make().train
        assert isinstance(train, Recipe), name
        assert isinstance(train, EMARecipe) == (name != "sam-tiny"), name  # SAM's pretraining keeps no EMA
    for name in ("genmask", "unet", "diffusion-features", "lisa"):  # the rivals draw GenMask's samples
        assert isinstance(CONFIGS[name]().train, SampleStream), name


def test_no_module_declares_the_recipe_again() -> None:
    """A dataclass that names most of the recipe's fields is a copy of it: it must subclass Recipe instead (a
    subclass redeclares a field only to change its default)."""
    copies = []
    for path in sorted(p for package in ("bench", "genmask", "baselines") for p in (REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                declared = {item.target.id for item in node.body
                            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
                if len(declared & RECIPE_FIELDS) > len(RECIPE_FIELDS) // 2 and node.name != "Recipe":
                    copies.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not copies, copies


def test_each_trainer_keeps_its_own_defaults() -> None:
    expected = {  # the defaults each trainer had before the recipe was shared
        "genmask": dict(threads=2, steps=8000, weight_decay=0.0, warmup_steps=200, ema_decay=0.0),
        "genmask-vlm": dict(threads=2, steps=4000, weight_decay=0.01, warmup_steps=100, ema_decay=0.0),
        "sam-tiny": dict(threads=1, steps=3000, weight_decay=0.01, warmup_steps=100),
        "unet": dict(threads=1, steps=2000, lr=2e-3, weight_decay=1e-4, warmup_steps=100),
    }
    common = dict(seed=0, lr=1e-3, min_lr_ratio=0.1, grad_clip=1.0, eval_every=500, checkpoint_minutes=5.0,
                  max_minutes=0.0, stop_at_step=0)
    for name, values in expected.items():
        train = CONFIGS[name]().train
        for key, value in (common | values).items():
            assert getattr(train, key) == value, (name, key)


@pytest.mark.parametrize("trainer", sorted(CONFIGS))
def test_a_saved_config_reads_back_equal(trainer: str) -> None:
    config = apply_overrides(CONFIGS[trainer](), ["train.lr=0.002", "train.stop_at_step=3", "train.seed=5"])
    saved = json.loads(json.dumps(config.to_dict()))
    assert saved["train"]["lr"] == 0.002 and "recipe" not in saved["train"]  # flat train.* keys
    assert _reload(trainer, saved, "<saved>") == saved


def _committed_configs() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((REPO / "genmask/checkpoints").rglob("*.json")):
        data = json.loads(path.read_text())
        if "transformer" in data and "train" in data:
            found.append(("genmask", path))
        elif path.name in ("foundation.json", "config-vlm.json"):
            found.append(("genmask-vlm", path))
    for path in sorted((REPO / "baselines/checkpoints").rglob("*.json")):
        data = json.loads(path.read_text())
        if path.name == "sam_tiny.json":
            found.append(("sam-tiny", path))
        elif path.name == "config.json" and data.get("name") in CONFIGS:
            found.append((data["name"], path))
    return found


@pytest.mark.parametrize("trainer,path", _committed_configs(), ids=lambda value: str(value)[-60:])
def test_committed_configs_load_unchanged(trainer: str, path: Path) -> None:
    """Every key a committed config holds reads back with its value (keys it predates take their defaults)."""
    data = json.loads(path.read_text())
    data = data.get("config", data)  # foundation.json nests it
    reloaded = dict(dotted_items(_reload(trainer, data, str(path))))
    for key, value in dotted_items({k: v for k, v in data.items() if k not in ("name", "external_prefixes")}):
        expected = LEGACY_VALUES.get(key, {}).get(value, value) if isinstance(value, bool) else value
        assert reloaded[key] == expected, (path, key)
