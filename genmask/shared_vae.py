"""A frozen VAE shared by several GenMask checkpoints is committed once: a checkpoint may hold `vae.json` (the
folder it uses, relative to the checkpoint, and the SHA-256 of its weights) instead of its own `vae/`.

    python -m genmask.shared_vae CHECKPOINT --vae VAE_DIR   # replace CHECKPOINT/vae by a reference to VAE_DIR

`GenMask.from_pretrained` follows the reference and refuses weights whose SHA-256 differs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path

from bench.errors import BenchError, DataFormatError
from bench.io import SMALL_JSON_LIMIT, read_json, write_json

REFERENCE_FILE = "vae.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def weights_sha256(vae_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(Path(vae_dir) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vae_directory(checkpoint: Path) -> Path:
    """The checkpoint's VAE folder: its own `vae/`, or the one its `vae.json` names, checked by SHA-256."""
    checkpoint = Path(checkpoint)
    reference = checkpoint / REFERENCE_FILE
    if (checkpoint / "vae").exists() or not reference.exists():
        return checkpoint / "vae"
    entry = read_json(reference, SMALL_JSON_LIMIT)
    if not (isinstance(entry, dict) and isinstance(entry.get("directory"), str) and isinstance(entry.get("sha256"), str)):
        raise DataFormatError(f"{reference}: expected an object with the strings 'directory' and 'sha256'")
    target = (checkpoint / entry["directory"]).resolve()
    if not (target / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{reference}: the VAE it references, {target}, has no {WEIGHTS_FILE}")
    digest = weights_sha256(target)
    if digest != entry["sha256"]:
        raise ValueError(f"{reference}: {target / WEIGHTS_FILE} has SHA-256 {digest[:16]}..., not the "
                         f"{entry['sha256'][:16]}... this checkpoint was trained with")
    return target


def reference_vae(checkpoint: Path, vae_dir: Path) -> Path:
    """Replace `checkpoint/vae` by `vae.json` naming `vae_dir`, after checking that both hold the same weights."""
    checkpoint, vae_dir = Path(checkpoint), Path(vae_dir)
    own = checkpoint / "vae"
    if not (own / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{own}: no {WEIGHTS_FILE} to replace")
    if own.resolve() == vae_dir.resolve() or own.resolve() in vae_dir.resolve().parents:
        raise ValueError(f"{vae_dir} is the folder the reference replaces ({own}); reference a copy kept elsewhere")
    digest = weights_sha256(vae_dir)
    if weights_sha256(own) != digest:
        raise ValueError(f"{own} and {vae_dir} hold different weights: a reference would change the model")
    entry = {"directory": os.path.relpath(vae_dir.resolve(), checkpoint.resolve()), "sha256": digest}
    write_json(checkpoint / REFERENCE_FILE, entry)
    shutil.rmtree(own)
    return checkpoint / REFERENCE_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genmask.shared_vae", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a GenMask save_pretrained directory")
    parser.add_argument("--vae", type=Path, required=True, help="the VAE folder to reference (same weights)")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {reference_vae(args.checkpoint, args.vae)}")
    except (OSError, ValueError, BenchError) as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
