"""Ablation kinds: the registry behind `kind = ...` ("did you mean" for an unknown one), the built-in kinds'
classes, and a kind registered from outside made and assembled by the driver through the protocol alone."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench.ablate import driver
from bench.ablate.cells import Cell
from bench.ablate.evaluate import EvalKind
from bench.ablate.kinds import ABLATION_KINDS
from bench.ablate.load import ablation_names, load_ablation
from bench.ablate.pca import PcaKind
from bench.ablate.spec import Ablation, EvalConfig, PcaConfig, TrainedEvalConfig
from bench.ablate.train import TrainKind
from bench.errors import BenchError
from bench.registry import UnknownNameError


def test_the_built_in_kinds_are_registered_classes():
    assert ABLATION_KINDS.names() == ["eval", "pca", "train"]
    assert [ABLATION_KINDS.get(name) for name in ("eval", "train", "pca")] == [EvalKind, TrainKind, PcaKind]
    assert issubclass(TrainKind, EvalKind)  # it evaluates what it trained as an eval cell does
    assert (EvalKind.config, TrainKind.config, PcaKind.config) == (EvalConfig, TrainedEvalConfig, PcaConfig)
    for name in ablation_names():
        ablation = load_ablation(name)
        assert ablation.config_class is ABLATION_KINDS.get(ablation.kind).config


def test_an_unknown_kind_suggests_the_closest(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown ablation kind 'trian'. Did you mean 'train'?"):
        ABLATION_KINDS.get("trian")
    (tmp_path / "toy.toml").write_text('kind = "evl"\n[variants.a]\n[budgets.smoke]\n')
    with pytest.raises(BenchError, match=r"^toy.toml: unknown ablation kind 'evl'. Did you mean 'eval'\? Known: eval, "):
        load_ablation("toy", tmp_path)


@dataclasses.dataclass(frozen=True)
class CountConfig:
    count: int = 1


class CountKind:
    """A kind whose cell writes its count times its seed; its page lists them."""

    config: ClassVar[type] = CountConfig
    default_context: ClassVar[str] = ""

    def data_identity(self, config: Any) -> tuple:
        return ()

    def fingerprints(self, config: Any, data_root: str | None) -> dict[str, str]:
        return {"nothing": "0"}

    def is_complete(self, directory: Path) -> bool:
        return (Path(directory) / "value.txt").is_file()

    def is_started(self, directory: Path) -> bool:
        return False

    def make(self, cell: Cell, directory: Path, command: str, data_root: str | None, resume: bool) -> None:
        (Path(directory) / "value.txt").write_text(str(cell.config.count * cell.seed))

    def assemble(self, ablation: Ablation, budget: str, cells: list[Cell], out: Path, command: str,
                 missing: list[tuple[str, str]]) -> list[Path]:
        page = Path(out) / "page.md"
        page.write_text("".join(f"{cell.name} {(cell.directory(out) / 'value.txt').read_text()}\n" for cell in cells))
        return [page]


def _toy_count_ablation(tmp_path: Path, monkeypatch, budget: str) -> None:
    """defs/toy.toml of kind "count" (variants one and three, smoke budget `budget`), loaded by the driver."""
    monkeypatch.setitem(ABLATION_KINDS._entries, "count", CountKind)
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "toy.toml").write_text('kind = "count"\nreference = "one"\n[variants.one]\n[variants.three]\ncount = 3\n'
                                   f"[budgets.smoke]\n{budget}")
    monkeypatch.setattr(driver, "load_ablation", functools.partial(load_ablation, directory=defs))


def test_a_kind_registered_from_outside_runs_through_the_driver(tmp_path, monkeypatch, capsys):
    _toy_count_ablation(tmp_path, monkeypatch, "seeds = 2\n")
    assert driver.run(driver.Options(name="toy", out=tmp_path / "out")) == 0
    assert (tmp_path / "out" / "page.md").read_text() == "one:0 0\none:1 1\nthree:0 0\nthree:1 3\n"
    assert "wrote" in capsys.readouterr().out


def test_variant_seeds_gives_the_named_variants_more_seeds_and_only_those(tmp_path, monkeypatch):
    _toy_count_ablation(tmp_path, monkeypatch, "seeds = 2\nvariant_seeds = { three = 3 }\n")
    assert driver.run(driver.Options(name="toy", out=tmp_path / "out")) == 0
    assert (tmp_path / "out" / "page.md").read_text() == "one:0 0\none:1 1\nthree:0 0\nthree:1 3\nthree:2 6\n"
    with pytest.raises(BenchError, match="seed '2' is not one of one's seeds"):
        driver.run(driver.Options(name="toy", out=tmp_path / "out", only="one:2"))
    assert driver.run(driver.Options(name="toy", out=tmp_path / "other", only="three:2")) == 0  # its own count
    assert driver.run(driver.Options(name="toy", out=tmp_path / "out", seeds=1, collect=True)) == 0  # --seeds: all
    assert (tmp_path / "out" / "page.md").read_text() == "one:0 0\nthree:0 0\n"


@pytest.mark.parametrize("table, message", [("{ four = 5 }", "unknown variant 'four'"),
                                            ("{ three = 1 }", "at least the budget's seeds"),
                                            ("{ three = 2.5 }", "whole number")])
def test_variant_seeds_names_a_known_variant_and_no_fewer_seeds_than_the_budget(tmp_path, table, message):
    (tmp_path / "toy.toml").write_text('reference = "one"\n[variants.one]\n[variants.three]\n'
                                       f"[budgets.smoke]\nseeds = 2\nvariant_seeds = {table}\n")
    with pytest.raises(BenchError, match=message):
        load_ablation("toy", directory=tmp_path)


def test_only_names_a_variant_whose_name_holds_a_colon_with_or_without_its_seed():
    from bench.ablate.cells import parse_only

    joint = load_ablation("joint")
    assert parse_only("joint-1:1:2", joint, "small", None) == [("joint-1:1", 2)]
    assert parse_only("joint-2:1", joint, "small", None) == [("joint-2:1", 0), ("joint-2:1", 1), ("joint-2:1", 2)]
    assert parse_only("untrained:1", joint, "small", None) == [("untrained", 1)]
    with pytest.raises(BenchError, match="seed '3' is not one of joint-2:1's seeds"):
        parse_only("joint-2:1:3", joint, "small", None)
