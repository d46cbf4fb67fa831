"""Which code made a result: the commit (and whether the tree differs), the package versions and a hash of the
source files, recorded in run.json and in ablation cells' provenance.json."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

SOURCE_PACKAGES = ("bench", "genmask", "baselines")  # the harness, the model and its rivals
PACKAGES = ("genmask-bench", "numpy", "torch", "diffusers", "transformers", "accelerate", "pycocotools")


def git_commit() -> str:
    """HEAD of the checkout the harness runs from, suffixed `-dirty` when its code (the project's packages and
    pyproject.toml) differs from it; results and other data being rewritten do not count."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PACKAGES,
                                "pyproject.toml"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def source_hash() -> str:
    """SHA-256 (first 16 hex digits) of every .py and .toml file of the project's packages, by relative path: the
    code a result was made with, whether or not it was committed. Computed once per process, at first use."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".toml") and path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_identity() -> dict[str, object]:
    """The commit, whether the tree differs from it, and the source hash: what an ablation cell records."""
    commit = git_commit()
    return {"commit": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty"), "source_hash": source_hash()}
