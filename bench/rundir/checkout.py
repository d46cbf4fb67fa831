"""Paths inside the checkout, stored in run.json relative to it, so that a run reads the same in every clone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout this harness runs from, when it is one


def checkout_root() -> Path | None:
    """The checkout of this project the harness runs from; None when it runs from an installed copy."""
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else None


def store_relative(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every absolute path inside the checkout made relative, their JSON pointers ("model_config/
    checkpoint", ...) listed in `checkout_paths`; "command" is left as it was typed."""
    root = checkout_root()
    if root is None:
        return data
    relative: list[str] = []
    for key, value in data.items():
        if key not in ("command", "checkout_paths"):
            data[key] = _relative_paths(value, root, key, relative)
    data["checkout_paths"] = sorted(set(relative))
    return data


def restore_absolute(values: dict[str, Any]) -> None:
    """Make the paths that `values["checkout_paths"]` points at absolute again (a malformed list is emptied)."""
    root = checkout_root()
    pointers = values.get("checkout_paths")
    if not isinstance(pointers, list) or not all(isinstance(pointer, str) for pointer in pointers):
        pointers = values["checkout_paths"] = []
    for pointer in pointers if root is not None else []:
        _absolute_path(values, pointer, root)


def _relative_paths(value: Any, root: Path, pointer: str, found: list[str]) -> Any:
    """`value` with every string that is an absolute path inside `root` made relative to it; their pointers
    ("key/sub/0", JSON-pointer escaped) go to `found`."""
    if isinstance(value, dict):
        return {key: _relative_paths(item, root, f"{pointer}/{_escaped(key)}", found) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative_paths(item, root, f"{pointer}/{index}", found) for index, item in enumerate(value)]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        if path == root or root in path.parents:
            found.append(pointer)
            return path.relative_to(root).as_posix()
    return value


def _escaped(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _child(container: Any, part: str) -> Any:
    """A dict's value or a list's item named by one pointer part; None when there is none."""
    if isinstance(container, dict):
        return container.get(part.replace("~1", "/").replace("~0", "~"))
    if isinstance(container, list) and part.isdecimal() and int(part) < len(container):
        return container[int(part)]
    return None


def _absolute_path(values: dict[str, Any], pointer: str, root: Path) -> None:
    """Makes the relative path at `pointer` absolute below `root` (a pointer that names no string is left)."""
    *parents, last = pointer.split("/")
    container: Any = values
    for part in parents:
        container = _child(container, part)
    if isinstance(_child(container, last), str):
        key: Any = int(last) if isinstance(container, list) else last.replace("~1", "/").replace("~0", "~")
        container[key] = (root / container[key]).as_posix()
