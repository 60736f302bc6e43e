"""The writer registry of a local store: who writes it now, and what a prune must keep.

A writer registers as ``STORE/.pycasync-writers/w-PID-RANDOM``: a file it
holds an flock on for its whole run, written when it registered (its mtime is
the writer's start). Registering takes the store lock (an flock on the
directory ``.pycasync-writers`` itself) shared for a moment;
:func:`prune_cutoff` takes it exclusively for a moment to read the live
registrations, removing those no process holds any more (a writer killed with
-9). The rules a prune follows with that cutoff are in
:mod:`casync_store.stores.local`. Without ``fcntl`` (not POSIX) writers are
not registered.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time

try:
    import fcntl
except ImportError:  # no flock (not POSIX): writers are not registered
    fcntl = None  # type: ignore[assignment]

from casync_format.errors import StoreError

from ._chunkfile import OPEN_DIR

__all__ = ["WRITERS_DIR", "LOCK_NAME", "PRUNE_SLACK", "LOCK_WAIT", "register_writer", "release_writer",
           "prune_cutoff"]

WRITERS_DIR = ".pycasync-writers"  # one flocked registration file per running writer
LOCK_NAME = WRITERS_DIR  # the store lock (its flock): shared to register a writer, exclusive to read them
PRUNE_SLACK = 1.0  # seconds kept before a live writer's registration (for a clock set back a little)
LOCK_WAIT = 30.0  # seconds a registration or a prune's snapshot waits for the store lock at most


def register_writer(root: str, name: str) -> tuple[str, int] | None:
    """Register a writer of the store at ``root`` (``name`` in messages): ``(file, fd holding it)``.

    Best effort: None where the root cannot be written or flock is missing.
    Raises :class:`StoreError` if a prune holds the store lock longer than
    :data:`LOCK_WAIT`.
    """
    if fcntl is None:
        return None
    directory = os.path.join(root, WRITERS_DIR)
    try:
        os.makedirs(directory, exist_ok=True)
        lock_fd = os.open(directory, OPEN_DIR)
    except OSError:
        return None
    try:
        _flock(lock_fd, fcntl.LOCK_SH, name, "register a writer")
        path = os.path.join(directory, f"w-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
            os.write(fd, f"{time.time()!r}\n".encode("ascii"))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path, fd
    finally:
        os.close(lock_fd)  # drops the shared lock: registered


def release_writer(registration: tuple[str, int]) -> None:
    """End a registration :func:`register_writer` made."""
    path, fd = registration
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)  # drops the flock


def _flock(fd: int, mode: int, name: str, what: str) -> None:
    """flock ``fd``; a holder for longer than LOCK_WAIT is a StoreError (never a hang)."""
    deadline = time.monotonic() + LOCK_WAIT
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                held = f"{LOCK_NAME} is held by another process"
                raise StoreError(f"store {name}: cannot {what}: {held}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def prune_cutoff(root: str, name: str) -> int:
    """The mtime (ns) from which on an unreferenced chunk of the store at ``root`` is kept.

    Times are the file system's own clock: the store lock's mtime is set to
    now until it moves past its first value (at most one clock tick), and
    that later value is the cutoff, so every chunk written before the prune
    began is older, and everything done after this returns is not. Then the
    lock is taken exclusively for a moment to read the live writers (each
    registration's mtime, set when it registered) and remove the
    registrations no process holds.
    """
    directory = os.path.join(root, WRITERS_DIR)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        lock_fd = os.open(directory, OPEN_DIR)
    except OSError as exc:
        raise StoreError(f"store {name}: cannot open {WRITERS_DIR}: {exc.strerror}") from None
    try:
        cutoff = _next_tick(lock_fd)
        if fcntl is None:
            return cutoff
        _flock(lock_fd, fcntl.LOCK_EX, name, "prune")
        try:
            names = [e.name for e in os.scandir(directory) if e.name.startswith("w-")]
        except FileNotFoundError:
            names = []
        for entry in names:
            start = _live_writer_start(os.path.join(directory, entry))
            if start is not None:
                cutoff = min(cutoff, start - int(PRUNE_SLACK * 1e9))
        return cutoff
    finally:
        os.close(lock_fd)


def _next_tick(fd: int) -> int:
    """Set ``fd``'s mtime to now until the file system's clock moves on; return that new mtime (ns)."""
    os.utime(fd)
    first = os.fstat(fd).st_mtime_ns
    deadline = time.monotonic() + 1.0
    while True:
        os.utime(fd)
        now = os.fstat(fd).st_mtime_ns
        if now != first or time.monotonic() > deadline:
            return max(now, first)
        time.sleep(0.001)


def _live_writer_start(path: str) -> int | None:
    """A registration's mtime (ns) if a live process holds it; else remove it and return None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: the writer runs
            return os.fstat(fd).st_mtime_ns
        with contextlib.suppress(OSError):  # nobody holds it: its writer died (kill -9)
            os.unlink(path)
        return None
    finally:
        os.close(fd)
