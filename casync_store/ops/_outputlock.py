"""Exclusive locks on ``extract``'s outputs, and one reusable temporary file per output.

Why: a killed extract used to leave a full-size ``.pycasync-tmp-PID-N`` file
that no later run removed (a device that retries an interrupted update fills
its disk), and two ``extract -k`` into one output both exited 0 with a mix of
both images.

The protocol. Every lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file,
held for the whole run. The kernel drops it when its holder dies, kill -9
included, so a lock that can be taken means nobody alive holds it:

- An extract that replaces its output assembles it in
  ``.pycasync-tmp-<output name>.extract`` next to the output: one fixed name
  per output (a hash of the name when it would be too long), so the next run
  finds what a dead one left. It opens that name (creating it if absent) and
  locks it. Refused: a live process is writing it, :class:`OutputBusy` names
  its pid. Taken: whatever the file holds is a dead run's leftover, and it is
  reused as a seed: the extract checks each chunk's bytes there against the
  chunk id, as ``-k`` does, and fetches only the wrong ones, so an interrupted
  update resumes and nothing unverified is ever kept. It then also locks the
  existing output (when that is a regular file), so no ``-k`` starts beside
  it. The temporary file is renamed over the output, or unlinked on failure,
  while the lock is still held, and only the holder ever renames or unlinks it.
- An extract in place (``-k``, block devices) locks the output itself, then
  probes the output's temporary name: locked, a live replacing run is busy
  with this output; not locked, it is a dead run's leftover and is removed.

A name can be renamed over or unlinked between ``open`` and ``flock``, so
every lock is checked once taken: the path must still name the locked inode,
else it is opened again. The two orders (temporary file, then output; output,
then temporary file) mean that two extracts starting at the same instant may
both fail, but never both proceed. The holder's pid comes from /proc/locks
(Linux); elsewhere the message says "another process". Without ``fcntl``
(Windows) there are no locks and every run gets a unique temporary name, as
before. Chunk writes (:func:`~casync_store.plumbing.atomic.write_file_atomic`) keep
their lock-free unique temporary names; only extract's outputs use this.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator

from casync_format.errors import OutputBusy

from ..plumbing.atomic import TEMP_PREFIX, _existing_mode, _fsync_dir, atomic_write
from ..plumbing.fileio import fdatasync

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCKING", "temp_path", "holder_pid", "replacing", "in_place"]

LOCKING = fcntl is not None
_SUFFIX = ".extract"
_NAME_MAX = 255
_ATTEMPTS = 100  # re-opens when the name keeps being renamed over (normally 1)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def temp_path(path: str) -> str:
    """The temporary file a replacing extract of ``path`` assembles the blob in."""
    directory, name = os.path.split(os.path.abspath(path))
    temp = f"{TEMP_PREFIX}{name}{_SUFFIX}"
    if len(os.fsencode(temp)) > _NAME_MAX:
        temp = f"{TEMP_PREFIX}{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}{_SUFFIX}"
    return os.path.join(directory, temp)


def holder_pid(fd: int) -> int | None:
    """The pid holding a flock on the file of ``fd``, from /proc/locks (None: unknown)."""
    st = os.fstat(fd)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    by_inode = None
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5308442 0 EOF"
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or not parts[4].isdigit():
            continue  # waiters ("1: -> FLOCK ...") and POSIX/OFD locks
        if parts[5] == where:
            return int(parts[4])
        if parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
            by_inode = int(parts[4])  # overlay filesystems may report another device
    return by_inode


def _flock_or_busy(fd: int, output: str) -> None:
    """Lock ``fd`` exclusively or raise :class:`OutputBusy` naming the holder.

    A holder that let go between our attempt and the look at /proc/locks
    (it finished) leaves no pid: then the lock is tried again, so a run
    that just ended neither blocks us nor goes unnamed.
    """
    for attempt in range(3):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pid = holder_pid(fd)
            if pid is not None or attempt == 2:
                raise OutputBusy(output, pid) from None


def _same_file(fd: int, path: str, follow: bool) -> bool:
    try:
        st = os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _lock(path: str, flags: int, mode: int, output: str, follow: bool) -> int | None:
    """An fd of ``path``, exclusively locked and still the file at ``path``.

    None when ``path`` does not exist (and ``flags`` do not create it);
    :class:`OutputBusy` (naming ``output``) when a live process holds it.
    """
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, flags, mode)
        except FileNotFoundError:
            if flags & os.O_CREAT:
                raise
            return None
        try:
            _flock_or_busy(fd, output)
            if _same_file(fd, path, follow):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # renamed over or unlinked before we locked it: open the new one
    raise OSError(errno.EAGAIN, "kept being replaced while it was being locked", path)


def _claim_temp(output: str) -> tuple[int, str]:
    """The locked fd and name of ``output``'s temporary file (created if absent)."""
    tmp = temp_path(output)
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | _O_NOFOLLOW | _O_BINARY
    try:
        fd = _lock(tmp, flags, 0o644, output, follow=False)
    except FileNotFoundError as exc:  # the output's directory: name the output
        raise FileNotFoundError(exc.errno, exc.strerror, output) from None
    assert fd is not None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a FIFO, a device, a hard link planted there
        os.close(fd)
        raise FileExistsError(errno.EEXIST, "is not a temporary file of pycasync: remove it", tmp)
    return fd, tmp


def _lock_existing(output: str) -> int | None:
    """A lock on the regular file at ``output``, if there is one we may open."""
    try:
        if not stat.S_ISREG(os.stat(output).st_mode):
            return None
        fd = _lock(output, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | _O_BINARY, 0, output, True)
    except (FileNotFoundError, PermissionError):  # nothing to replace, or one we may not read
        return None
    if fd is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def replacing(output: str, sync: bool = True) -> Iterator[tuple[int, int]]:
    """``(fd, leftover)``: the locked temporary file that replaces ``output`` on success.

    ``leftover`` is the size of what a dead run left in it (0: nothing); the
    caller may keep verified bytes of it. On an exception the file is removed
    and ``output`` is untouched; ``sync`` fsyncs the data before the rename and
    the directory after it. An existing output's permission bits are kept.
    """
    if not LOCKING:
        with atomic_write(output, sync=sync) as f:
            yield f.fileno(), 0
        return
    keep_mode = _existing_mode(os.path.abspath(output))  # refuses a directory before anything is written
    fd, tmp = _claim_temp(output)
    out_fd: int | None = None
    try:
        try:
            out_fd = _lock_existing(output)
            leftover = os.fstat(fd).st_size
            if keep_mode is not None:
                os.fchmod(fd, keep_mode)
            yield fd, leftover
            if sync:
                fdatasync(fd)
            try:
                os.replace(tmp, output)  # still locked: nobody can take the name over before
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, output) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    finally:
        os.close(fd)
        if out_fd is not None:
            os.close(out_fd)
    if sync:
        _fsync_dir(os.path.dirname(tmp))


def _remove_dead_temp(output: str) -> None:
    """Remove ``output``'s temporary file if a dead run left it; busy if a live one holds it."""
    tmp = temp_path(output)
    try:
        fd = _lock(tmp, os.O_RDWR | os.O_NONBLOCK | _O_NOFOLLOW | _O_BINARY, 0, output, False)
    except OSError:  # a symlink, a directory, unreadable: not ours to judge
        return
    if fd is None:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.unlink(tmp)
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_place(output: str) -> Iterator[int]:
    """A read-write fd of ``output`` (created if absent), exclusively locked while the block runs."""
    flags = os.O_RDWR | os.O_CREAT | _O_BINARY
    fd = _lock(output, flags, 0o666, output, follow=True) if LOCKING else os.open(output, flags, 0o666)
    assert fd is not None  # O_CREAT: never absent
    try:
        if LOCKING and not stat.S_ISBLK(os.fstat(fd).st_mode):  # no temporary file is made for a device
            _remove_dead_temp(output)
        yield fd
    finally:
        os.close(fd)
