"""The lock on a run directory, held by the one command writing it (`bench run`, `bench score`, `bench compact`)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from bench.errors import BenchError
from bench.rundir.layout import LOCK_FILE
from bench.rundir.record import now_iso


class RunLock:
    """An exclusive lock on a run directory, held while one command writes it.

    The lock is a POSIX record lock on `<run>/.lock`: the kernel frees it when its process dies, even by
    SIGKILL, and forked children (data-loading workers that may outlive a killed run for a while) never hold
    it. A lock file left by a killed run is stale and is taken over (`stale` then says whose it was)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.stale: str | None = None  # the holder a killed run left in the lock file, once acquired
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock at once or raise BenchError naming the process that holds it."""
        while True:
            fd = _open_lock_file(self.path)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                holder = _read_fd(fd) or "another process"
                os.close(fd)
                raise BenchError(f"{self.path.parent} is being written by another run ({holder}); wait for it to "
                                 "end or choose another --out") from None
            try:  # the holder we waited for may have removed the file: lock the one at the path
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.stale = _read_fd(fd) or None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}".encode())
        self._fd = fd
        return self

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock file and free the lock (removing first, so no one locks a file about to vanish)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _open_lock_file(path: Path) -> int:
    """The lock file opened for writing, never through a link (O_NOFOLLOW) and refused unless a regular file
    with no other name (a hard link), so locking never truncates a file elsewhere."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BenchError(f"{path} is a symbolic link; remove it (a lock file is never followed)") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise BenchError(f"{path} is not a plain file of its own (a FIFO, device or hard link); remove it")
    return fd


def _read_fd(fd: int) -> str:
    """The holder a lock file names (its first line, at most 200 bytes of it)."""
    lines = os.pread(fd, 200, 0).decode("utf-8", errors="replace").strip().splitlines()
    return lines[0] if lines else ""
