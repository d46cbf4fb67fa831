"""Run `python ARGS...` (-m module, -c code or a script) in this process and write its peak resident memory
(VmHWM, which unlike ru_maxrss starts afresh at exec and so is not inflated by a large parent) to OUT at exit.
Usage: python benchmarks/hwm.py OUT ARGS..."""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def _write_peak(out: str) -> None:
    status = Path("/proc/self/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    Path(out).write_text(str(kib / 1024))


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    atexit.register(_write_peak, out)
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
