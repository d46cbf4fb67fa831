"""The dependency direction: models plug into the harness; the harness never imports a model package, and no
two project modules import each other (directly or around a cycle)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "genmask", "baselines")
MODEL_PACKAGES = ("genmask", "baselines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import submodule` depends on the submodule; anything else on the module itself
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in modules] or [node.module]
        found |= {name for name in names if name in modules}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_the_harness_never_names_a_model_package():
    offenders = []
    for path in (REPO / "bench").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            named = []
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                named = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # lazy "module:attr" targets
                named = [node.value] if re.fullmatch(r"[\w.]+:\w+", node.value) else []
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}: {name}" for name in named
                          if name.split(".")[0].split(":")[0] in MODEL_PACKAGES]
    assert not offenders, offenders


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_between_project_modules():
    assert find_cycles(_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_run_and_score_share_the_run_directory_and_not_each_other():
    graph = _graph()
    assert "bench.run_command" not in graph["bench.score_command"]
    assert "bench.score_command" not in graph["bench.run_command"]
    assert "bench.run_command" not in graph["bench.metrics"]
    assert "bench.metrics" in graph["bench.run_command"]
    assert "bench.rundir.session" in graph["bench.run_command"] & graph["bench.score_command"]
    above = ("bench.cli", "bench.run_command", "bench.score_command", "bench.report", "bench.ablate")
    rundir = {name: deps for name, deps in graph.items() if name.startswith("bench.rundir")}
    assert not {f"{name} -> {dep}" for name, deps in rundir.items() for dep in deps if dep.startswith(above)}


def test_files_are_renamed_into_place_by_bench_io_alone():
    """One atomic writer: no other module renames a file over another (the synthetic data's staging folder is a
    directory, renamed once it is whole)."""
    allowed = {"bench/io.py", "bench/synth/build.py"}
    offenders = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Attribute) and node.attr in ("replace", "rename")
                        and isinstance(node.value, ast.Name) and node.value.id == "os"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert {offender.split(":")[0] for offender in offenders} <= allowed, offenders


def test_list_score_and_report_import_no_deep_learning_library(tmp_path):
    """Start-up stays light: these commands never need torch, diffusers, transformers or a model package."""
    code = (
        "import sys\n"
        "from bench.cli import main\n"
        "import bench.score_command, bench.report\n"
        f"main(['list']); main(['report', '--results', {str(tmp_path)!r}])\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'genmask', 'baselines')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
