"""Read refer's refs(*.p) pickles without letting them run code or exhaust memory.

Only plain containers and scalars load (no global is ever looked up). Two ways in, the same guarantees:

- the fast path: a pure-Python scan walks every opcode first (no object is built) and accepts the file only
  if it uses plain-data opcodes alone, every length it declares lies inside the file and every memo index is
  one a pickler writes (at most the number of entries stored so far). Only then does CPython's C unpickler,
  with `find_class` refusing everything, build the data: with nothing forged left in it, its memory is
  bounded by the file's size (its memo is an array as long as the largest index, which is why the scan
  checks them).
- anything the scan does not accept (a global, a forged length or memo index, a truncated file, an opcode
  it does not know) goes to the restricted pure-Python unpickler, which reads from memory with a dict memo,
  so a forged length or memo index allocates nothing, and which names what it refuses.

Either way, what was built is then measured as the decoded tree it stands for (shared references counted
at every use) and refused beyond MAX_DEPTH levels, MAX_OBJECTS objects or MAX_TEXT characters: a few hundred
bytes of references to references cannot expand into gigabytes. The file itself is refused beyond
MAX_FILE_BYTES before it is read.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import DataFormatError
from bench.io import read_limited

REQUIRED_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
REQUIRED_SENTENCE_KEYS = ("sent_id", "sent")
MAX_DEPTH = 32  # refs nest 6 levels: list > ref > sentences > sentence > tokens > str
MAX_OBJECTS = 1 << 25  # RefCOCOg's largest refs file holds about 5 million
MAX_TEXT = 1 << 30  # characters of all strings, each use of a shared one counted
MAX_FILE_BYTES = 1 << 30  # the real refs files are tens of MB
CONTAINERS = (list, tuple, dict, set, frozenset)


class _Refusing:
    """Refuses every global and persistent id, so no class can be built and no callable reached."""

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


class _RefusingUnpickler(_Refusing, pickle._Unpickler):
    """The restricted pure-Python unpickler: reads from memory with a dict memo (forged indices allocate nothing)."""


class _RefusingCUnpickler(_Refusing, pickle.Unpickler):
    """The C unpickler, refusing every global too (the scan already kept globals out: defence in depth)."""


# The opcode scan: what follows each plain-data opcode. A non-negative number is a fixed argument size;
# the rest are below. Opcodes absent from the table (globals, reduce, build, extensions, persistent ids,
# out-of-band buffers) are not plain data.
_NEWLINE, _LEN1, _LEN4, _LEN8 = -1, -2, -3, -4
_ARGUMENTS = {
    b"(": 0, b".": 0, b"0": 0, b"1": 0, b"2": 0, b"N": 0, b"\x88": 0, b"\x89": 0,  # mark, stop, pops, dup, consts
    b"]": 0, b"a": 0, b"e": 0, b"l": 0, b")": 0, b"t": 0, b"\x85": 0, b"\x86": 0, b"\x87": 0,  # lists, tuples
    b"}": 0, b"d": 0, b"s": 0, b"u": 0, b"\x8f": 0, b"\x90": 0, b"\x91": 0, b"\x94": 0,  # dicts, sets, memoize
    b"J": 4, b"K": 1, b"M": 2, b"G": 8, b"h": 1, b"j": 4, b"q": 1, b"r": 4, b"\x80": 1, b"\x95": 8,
    b"I": _NEWLINE, b"L": _NEWLINE, b"S": _NEWLINE, b"V": _NEWLINE, b"F": _NEWLINE, b"g": _NEWLINE,
    b"p": _NEWLINE,
    b"U": _LEN1, b"C": _LEN1, b"\x8c": _LEN1, b"\x8a": _LEN1,
    b"T": _LEN4, b"B": _LEN4, b"X": _LEN4, b"\x8b": _LEN4,
    b"\x8e": _LEN8, b"\x8d": _LEN8, b"\x96": _LEN8,
}
_UNKNOWN = -99
_ARGUMENT_OF = [_ARGUMENTS.get(bytes([op]), _UNKNOWN) for op in range(256)]
_STOP, _PUT_TEXT, _BINPUT, _LONG_BINPUT, _MEMOIZE, _FRAME = ord("."), ord("p"), ord("q"), ord("r"), 0x94, 0x95
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def plain_and_bounded(data: bytes) -> bool:
    """True when `data` is one pickle of plain-data opcodes only, ending in STOP, whose declared lengths lie
    inside it and whose memo indices never exceed the number of entries stored before them (as every
    pickler writes them), so the C unpickler's memory stays bounded by the file's size. Walks the opcodes
    without building anything; False sends the file to the restricted pure-Python unpickler."""
    argument_of, end, pos, puts = _ARGUMENT_OF, len(data), 0, 0
    u32, u64 = _U32.unpack_from, _U64.unpack_from
    try:
        while True:
            op = data[pos]
            if op == 0x68:  # the commonest opcodes first: BINGET
                pos += 2
            elif op == 0x72:  # LONG_BINPUT
                if u32(data, pos + 1)[0] > puts:
                    return False
                puts += 1
                pos += 5
            elif op == 0x58:  # BINUNICODE
                pos += 5 + u32(data, pos + 1)[0]
            elif op == 0x28:
                pos += 1
            else:
                size = argument_of[op]
                pos += 1
                if size >= 0:
                    if op == _BINPUT or op == _MEMOIZE:
                        puts += 1
                    elif op == _STOP:
                        return True
                    elif op == _FRAME and (u64(data, pos)[0] > end - pos - 8):
                        return False
                    pos += size
                elif size == _LEN1:
                    pos += 1 + data[pos]
                elif size == _LEN4:
                    pos += 4 + u32(data, pos)[0]
                elif size == _NEWLINE:
                    newline = data.find(b"\n", pos)
                    if newline < 0:
                        return False
                    if op == _PUT_TEXT:
                        digits = data[pos:newline]
                        if not digits.isdigit() or len(digits) > 18 or int(digits) > puts:
                            return False
                        puts += 1
                    pos = newline + 1
                elif size == _LEN8:
                    pos += 8 + u64(data, pos)[0]
                else:
                    return False
    except (IndexError, struct.error):
        return False


def load_refs_pickle(path: Path) -> list[dict[str, Any]]:
    """Load a refs(*.p) file as a list of ref dicts, refusing anything but plain data, and check its keys."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise DataFormatError(f"{path}: refusing a refs pickle of {size} bytes (the limit is {MAX_FILE_BYTES})")
    data = _unpickle(read_limited(path, MAX_FILE_BYTES), path)  # a regular file only: never /dev/zero or a FIFO
    has_bytes = _check_expansion(data, path)
    refs = _decode_bytes(data) if has_bytes else data
    _check_refs(refs, path)
    return refs


def _unpickle(data: bytes, path: Path) -> Any:
    """The unpickled object: the C unpickler when the opcode scan accepts `data`, else the pure-Python one."""
    unpickler = (_RefusingCUnpickler if plain_and_bounded(data) else _RefusingUnpickler)(io.BytesIO(data), path)
    try:
        return unpickler.load()
    except DataFormatError:
        raise
    except Exception as exc:  # truncated or garbage files raise many kinds of errors inside pickle
        raise DataFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    finally:
        del unpickler  # its memo holds a reference to every object: freed here, before they are measured


def _check_expansion(data: Any, path: Path) -> bool:
    """Refuse data nested deeper than MAX_DEPTH (data containing itself nests without end), or standing for a
    tree (every use of a shared object counted) of more than MAX_OBJECTS objects or MAX_TEXT characters.
    Returns whether any byte string (a Python 2 `str`) was met.

    A container referenced more than once has its measure kept, so a chain of shared references is measured
    in time linear in the file, not in its expansion; which ones are shared is read off their reference counts
    (CPython), so that memo holds only them."""
    shared: dict[int, tuple[int, int]] = {}
    seen_bytes = False
    getrefcount = sys.getrefcount

    def too_big() -> NoReturn:
        raise DataFormatError(f"{path}: refusing data that expands beyond {MAX_OBJECTS} objects or "
                              f"{MAX_TEXT} characters (references shared many times over)")

    def measure(container: Any, depth: int) -> tuple[int, int]:
        nonlocal seen_bytes
        if depth >= MAX_DEPTH:
            raise DataFormatError(f"{path}: refusing data nested deeper than {MAX_DEPTH} levels or containing itself")
        objects, text = 1, 0
        for children in (container, container.values()) if type(container) is dict else (container,):
            for child in children:
                kind = type(child)
                if kind is str:
                    objects += 1
                    text += len(child)
                elif kind is bytes:
                    objects += 1
                    text += len(child)
                    seen_bytes = True
                elif kind in CONTAINERS:
                    size = shared.get(id(child))
                    if size is None:
                        size = measure(child, depth + 1)
                        if getrefcount(child) > 3:  # the parent, `child` and the argument: any more is sharing
                            shared[id(child)] = size
                    objects += size[0]
                    text += size[1]
                else:
                    objects += 1
                if objects > MAX_OBJECTS or text > MAX_TEXT:
                    too_big()
        return objects, text

    if isinstance(data, CONTAINERS):
        measure(data, 0)
    elif isinstance(data, (str, bytes)):
        seen_bytes = isinstance(data, bytes)
        if len(data) > MAX_TEXT:
            too_big()
    return seen_bytes


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
        wrong = [key for key in ("ref_id", "ann_id", "image_id") if not is_id(ref[key])]
        if wrong or not isinstance(ref["split"], str):
            raise DataFormatError(f"{path}: entry {index}: {', '.join(wrong) or 'split'} must be "
                                  f"{'an integer or string id' if wrong else 'a string'}")
        if not isinstance(ref["sentences"], list):
            raise DataFormatError(f"{path}: entry {index}: sentences is not a list")
        for sent_index, sentence in enumerate(ref["sentences"]):
            if not isinstance(sentence, dict) or any(key not in sentence for key in REQUIRED_SENTENCE_KEYS):
                raise DataFormatError(
                    f"{path}: entry {index}, sentence {sent_index} lacks {' or '.join(REQUIRED_SENTENCE_KEYS)}"
                )
            if not is_id(sentence["sent_id"]) or not isinstance(sentence["sent"], str):
                raise DataFormatError(f"{path}: entry {index}, sentence {sent_index}: sent_id must be an integer or "
                                      "string id and sent a string")


def is_id(value: Any) -> bool:
    """An id a ref may hold: an integer (not a boolean) or a string."""
    return isinstance(value, int | str) and not isinstance(value, bool)
