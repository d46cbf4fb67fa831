"""[grid] in ablation files: the product of the axes in its documented order, merged keys, each error naming the
file, and timeshift's grid resolving to exactly the variants, configurations and cell keys of the hand-written file
it replaced."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.ablate.cells import Cell
from bench.ablate.load import DEFS, load_ablation
from bench.ablate.spec import EvalConfig
from bench.errors import BenchError

REPO = Path(__file__).resolve().parents[3]
HAND_WRITTEN = "4ebe2a1"  # the last commit whose timeshift.toml spells every variant by hand

TOY = """
question = "q"
reference = "center"
[base]
model = "center"
[variants.center]
[grid]
name = "{area}-{batch}"
[grid.axes.area]
small = { model_args = { area = 0.25 } }
large = { model_args = { area = 0.5 } }
[grid.axes.batch]
b2 = { batch_size = 2 }
b4 = { batch_size = 4, model_args = { shape = "disc" } }
[budgets.smoke]
limit = 3
"""


def _load(tmp_path: Path, text: str):
    (tmp_path / "toy.toml").write_text(text)
    return load_ablation("toy", tmp_path)


def test_the_grid_is_the_product_first_axis_outermost_after_the_explicit_variants(tmp_path):
    ablation = _load(tmp_path, TOY)
    assert ablation.variant_names("smoke") == ["center", "small-b2", "small-b4", "large-b2", "large-b4"]
    assert ablation.variants["large-b4"] == {"model_args": {"area": 0.5, "shape": "disc"}, "batch_size": 4}
    assert ablation.resolve("small-b4", "smoke") == EvalConfig(model="center", batch_size=4, limit=3,
                                                               model_args={"area": "0.25", "shape": "disc"})


def test_a_budget_and_a_claim_name_grid_variants(tmp_path):
    text = TOY.replace("limit = 3", 'limit = 3\nvariants = ["large-b2"]') + (
        '[[claims]]\ntext = "t"\nrule = "first-above-second"\ncompare = ["large-b2", "small-b2"]\n')
    ablation = _load(tmp_path, text)
    assert ablation.variant_names("smoke") == ["large-b2"] and ablation.claims[0].compare == ("large-b2", "small-b2")


NAME = 'name = "{area}-{batch}"'
B2 = "b2 = { batch_size = 2 }"


@pytest.mark.parametrize("changes, message", [
    ([(NAME, 'name = "{area}-{bacth}"')],
     "toy.toml: [grid] name '{area}-{bacth}': unknown placeholder 'bacth'. Did you mean 'batch'?"),
    ([(NAME, 'name = "{area}"')], "toy.toml: [grid] name '{area}' must name axis 'batch' exactly once, as {batch}"),
    ([(B2, "b2 = { batch_size = 2, model_args = { area = 1.0 } }")],
     "toy.toml: [grid] 'small-b2': axes 'area' and 'batch' both set 'model_args.area'"),
    ([(B2, "b2 = { model_args = 2 }")], "toy.toml: [grid] 'small-b2': axes 'area' and 'batch' both set 'model_args'"),
    ([("[variants.center]", "[variants.large-b2]")],
     "toy.toml: [grid] makes variant 'large-b2', which [variants] defines too"),
    ([(B2, "b2 = 2")], "toy.toml: [grid.axes.batch] 'b2' must be a table of variant keys"),
    ([("[grid]", "[grid]\naxis = 1")], "toy.toml: [grid]: unknown key 'axis'. Did you mean 'axes'?"),
    ([(NAME + "\n", "")], "toy.toml: [grid] needs a name"),
    ([("[budgets.smoke]", "[grid.axes.none]\n[budgets.smoke]")], "toy.toml: [grid.axes.none] needs labels"),
    ([(NAME, 'name = "{area}{batch}"'), ("[grid.axes.batch]", 'smallb = {}\n[grid.axes.batch]'), (B2, '"4" = {}')],
     "toy.toml: [grid] name '{area}{batch}' makes variant 'smallb4' twice"),  # small x b4 and smallb x 4
], ids=["unknown-placeholder", "axis-not-named", "two-axes-one-table-key", "table-and-value", "explicit-too",
        "not-a-table", "unknown-key", "no-name", "empty-axis", "same-name-twice"])
def test_a_grid_error_names_the_file_and_what_is_wrong(tmp_path, changes, message):
    text = TOY
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(BenchError) as error:
        _load(tmp_path, text)
    assert str(error.value).startswith(message)


def _hand_written(tmp_path: Path) -> Path:
    """A defs folder with timeshift.toml as it was spelled by hand, beside today's shared files."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{HAND_WRITTEN}:bench/ablate/defs/timeshift.toml"],
                           capture_output=True, text=True)
    if shown.returncode:
        pytest.skip(f"commit {HAND_WRITTEN} is not in this clone (a shallow one?)")
    assert "[grid]" not in shown.stdout
    (tmp_path / "timeshift.toml").write_text(shown.stdout)
    for shared in DEFS.glob("_*.toml"):
        shutil.copy(shared, tmp_path)
    return tmp_path


def test_the_timeshift_grid_resolves_exactly_as_the_hand_written_variants(tmp_path):
    """Same names in the same order, same configuration and cell key under every budget: the committed cells stay
    theirs and the tables keep their row order."""
    grid, hand = load_ablation("timeshift"), load_ablation("timeshift", _hand_written(tmp_path))
    assert "[grid]" in grid.path.read_text()
    assert list(grid.variants) == list(hand.variants) and len(grid.variants) == 19
    assert grid.variants == hand.variants
    # variant_seeds (extra seeds for named variants) came after the hand-written file; it adds cells, changes none
    budgets = {name: {key: value for key, value in budget.items() if key != "variant_seeds"}
               for name, budget in grid.budgets.items()}
    assert all(set(budget.get("variant_seeds", {})) <= set(hand.variants) for budget in grid.budgets.values())
    assert budgets == hand.budgets and grid.claims == hand.claims and grid.reference == hand.reference
    for budget in hand.budgets:
        assert grid.variant_names(budget) == hand.variant_names(budget)
        for variant in hand.variant_names(budget):
            ours, theirs = grid.resolve(variant, budget), hand.resolve(variant, budget)
            assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
            for seed in grid.seeds(budget):
                data = {"synthref": "fingerprint"}
                assert (Cell("timeshift", variant, seed, budget, ours, data).key()
                        == Cell("timeshift", variant, seed, budget, theirs, data).key())
