"""Read refer's refs(*.p) pickles without letting them run code or exhaust memory.

Only plain containers and scalars load (no global is ever looked up). The pure-Python unpickler reads from
memory, so a forged length or memo index allocates nothing; what it built is then measured as the decoded
tree it stands for (shared references counted at every use), and refused beyond MAX_DEPTH levels,
MAX_OBJECTS objects or MAX_TEXT characters: a few hundred bytes of references to references cannot expand
into gigabytes.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import DataFormatError

REQUIRED_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
REQUIRED_SENTENCE_KEYS = ("sent_id", "sent")
MAX_DEPTH = 32  # refs nest 6 levels: list > ref > sentences > sentence > tokens > str
MAX_OBJECTS = 1 << 25  # RefCOCOg's largest refs file holds about 5 million
MAX_TEXT = 1 << 30  # characters of all strings, each use of a shared one counted
CONTAINERS = (list, tuple, dict, set, frozenset)


class _RefusingUnpickler(pickle._Unpickler):
    """An unpickler that refuses every global, so no class can be built and no callable reached."""

    def __init__(self, file: io.BufferedIOBase, source: Path):
        # Python 2 `str` objects arrive as bytes and are decoded afterwards (UTF-8, else Latin-1)
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> NoReturn:
        raise DataFormatError(
            f"{self.source}: refusing pickled global {module}.{name} (only plain data is allowed)"
        )

    def persistent_load(self, pid: Any) -> NoReturn:
        raise DataFormatError(f"{self.source}: refusing pickled persistent id {pid!r}")


def load_refs_pickle(path: Path) -> list[dict[str, Any]]:
    """Load a refs(*.p) file as a list of ref dicts, refusing anything but plain data, and check its keys."""
    path = Path(path)
    try:
        data = _RefusingUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except DataFormatError:
        raise
    except Exception as exc:  # truncated or garbage files raise many kinds of errors inside pickle
        raise DataFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    _check_expansion(data, path)
    refs = _decode_bytes(data)
    _check_refs(refs, path)
    return refs


def _check_expansion(data: Any, path: Path) -> None:
    """Refuse data nested deeper than MAX_DEPTH, containing itself, or standing for a tree (every use of a
    shared object counted) of more than MAX_OBJECTS objects or MAX_TEXT characters."""
    sizes: dict[int, tuple[int, int]] = {}  # id of a container -> (objects, characters) of its tree
    open_ids: set[int] = set()

    def measure(value: Any, depth: int) -> tuple[int, int]:
        if isinstance(value, (str, bytes)):
            return 1, len(value)
        if not isinstance(value, CONTAINERS):
            return 1, 0
        if id(value) in sizes:
            return sizes[id(value)]
        if depth >= MAX_DEPTH or id(value) in open_ids:
            raise DataFormatError(f"{path}: refusing data nested deeper than {MAX_DEPTH} levels or containing itself")
        open_ids.add(id(value))
        objects, text = 1, 0
        for child in (x for item in value.items() for x in item) if isinstance(value, dict) else value:
            child_objects, child_text = measure(child, depth + 1)
            objects, text = objects + child_objects, text + child_text
            if objects > MAX_OBJECTS or text > MAX_TEXT:
                raise DataFormatError(f"{path}: refusing data that expands beyond {MAX_OBJECTS} objects or "
                                      f"{MAX_TEXT} characters (references shared many times over)")
        open_ids.discard(id(value))
        sizes[id(value)] = objects, text
        return objects, text

    measure(data, 0)


def _decode_bytes(value: Any) -> Any:
    """Recursively turn Python 2 byte strings into str (UTF-8, falling back to Latin-1)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, dict):
        return {_decode_bytes(k): _decode_bytes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode_bytes(v) for v in value)
    return value


def _check_refs(refs: Any, path: Path) -> None:
    """Raise DataFormatError naming the file and entry unless `refs` is a list of well-formed ref dicts."""
    if not isinstance(refs, list):
        raise DataFormatError(f"{path}: expected a list of refs, found {type(refs).__name__}")
    for index, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise DataFormatError(f"{path}: entry {index} is a {type(ref).__name__}, expected a dict")
        missing = [key for key in REQUIRED_REF_KEYS if key not in ref]
        if missing:
            raise DataFormatError(f"{path}: entry {index} lacks {', '.join(missing)}")
        if not isinstance(ref["sentences"], list):
            raise DataFormatError(f"{path}: entry {index}: sentences is not a list")
        for sent_index, sentence in enumerate(ref["sentences"]):
            if not isinstance(sentence, dict) or any(key not in sentence for key in REQUIRED_SENTENCE_KEYS):
                raise DataFormatError(
                    f"{path}: entry {index}, sentence {sent_index} lacks {' or '.join(REQUIRED_SENTENCE_KEYS)}"
                )
