"""The ``untar`` operation: restore a catar archive (or a chunked caidx) into a directory.

:func:`untar` decodes a catar stream with :func:`casync_format.catar_read.iter_catar`
and recreates what it holds under ``target_dir``: directories, regular files
(streamed), symlinks, fifos, sockets and device nodes (``mknod``, which needs
root: otherwise it fails, like desync), permissions including
setuid/setgid/sticky (set after the owner, since chown clears them), owners
(as root, unless ``no_same_owner``; user/group names win over numbers when
the archive carries them and they resolve, as in casync), nanosecond mtimes
(symlinks without following them; directories once their contents are done),
extended attributes and file capabilities where the filesystem allows
(refusals are counted and logged at debug level, never fatal). ACLs, SELinux
labels, chattr flags and quota project ids are decoded but not restored.
:func:`untar_index` does the same from an index and a store, fetching chunks
in order with a bounded thread pool (:func:`index_reader`, also usable alone
as a stream of the archive).

Safety: every object is created relative to an open descriptor of its parent
directory (``dir_fd``), directories are opened with ``O_NOFOLLOW``, files
with ``O_CREAT|O_EXCL|O_NOFOLLOW``, and the decoder refuses ``b""``,
``.``/``..``, ``/`` and duplicate names; so nothing is ever created through a
symlink, neither one the archive made nor one already in the target, and
nothing lands outside ``target_dir``. The target directory is created when
missing; an existing one is extracted into, as desync and casync do: an
existing real directory of the same name is reused, anything else in the way
(a file, a symlink, or a directory where the archive has a non-directory) is
removed first, without following symlinks and without recursion, whatever its
depth (:mod:`casync_store.plumbing.dirfd`). A regular file that fails half-way
is removed; no temporary names are used.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import stat
from dataclasses import dataclass
from typing import Callable

from casync_format.catar import (
    CA_FORMAT_WITH_2SEC_TIME,
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_ACL,
    CA_FORMAT_WITH_READ_ONLY,
    CA_FORMAT_WITH_SEC_TIME,
    CA_FORMAT_WITH_USEC_TIME,
    CA_FORMAT_WITH_USER_NAMES,
    Entry,
)
from casync_format.catar_read import CatarReader, Item, PayloadReader, Source, iter_catar
from casync_format.constants import (
    CA_FORMAT_WITH_32BIT_UIDS,
    CA_FORMAT_WITH_NSEC_TIME,
    CA_FORMAT_WITH_PERMISSIONS,
)
from casync_format.index import Index

from ..pipeline import ChunkReader
from ..plumbing.dirfd import DIR_FLAGS as _DIR_FLAGS
from ..plumbing.dirfd import FD_WINDOW as _FD_WINDOW
from ..plumbing.dirfd import remove as _remove
from ..plumbing.dirfd import reopen_dotdot as _reopen_dotdot
from ..plumbing.pool import ThreadMap, default_workers
from ..stores.base import Store

__all__ = ["UntarStats", "untar", "untar_index", "index_reader", "IndexReader"]

log = logging.getLogger(__name__)

_OWNER_FLAGS = CA_FORMAT_WITH_16BIT_UIDS | CA_FORMAT_WITH_32BIT_UIDS | CA_FORMAT_WITH_USER_NAMES
_TIME_FLAGS = (
    CA_FORMAT_WITH_SEC_TIME | CA_FORMAT_WITH_USEC_TIME | CA_FORMAT_WITH_NSEC_TIME | CA_FORMAT_WITH_2SEC_TIME
)

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_COPY_BLOCK = 1 << 20
_BATCH = 4  # chunks a fetching thread takes at a time
_XATTR_REFUSALS = frozenset(
    {
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.EPERM,
        errno.EACCES,
        errno.EINVAL,
        errno.E2BIG,
        errno.ERANGE,
        errno.ENOSPC,
        errno.ENOENT,  # /proc missing for a special file's xattrs
    }
)


@dataclass
class UntarStats:
    """What ``untar`` restored."""

    directories: int = 0  # including the target directory itself
    files: int = 0
    symlinks: int = 0
    devices: int = 0
    fifos: int = 0
    sockets: int = 0
    bytes_written: int = 0  # file contents
    xattrs_skipped: int = 0  # attributes the filesystem or our privileges refused
    chunks: int = 0  # chunks fetched (untar_index only)

    def to_dict(self) -> dict[str, int]:
        """The stats with dashed keys, for --print-stats."""
        return {key.replace("_", "-"): value for key, value in self.__dict__.items()}


class IndexReader(io.RawIOBase):
    """The archive of an index as a read-only stream, chunks fetched ahead in order.

    ``concurrency`` threads fetch, decompress and verify chunks, a few
    consecutive ones at a time; at most 16 per thread are held at any time, so
    memory stays bounded. Close it (or use
    ``with``) to stop the threads early. Errors name the chunk and the store.
    """

    def __init__(self, index: Index, store: Store, concurrency: int | None = None) -> None:
        super().__init__()
        source = ChunkReader(store, index)
        workers = default_workers(concurrency)
        # Batches of consecutive chunks cut the hand-offs between threads.
        self._map = ThreadMap(source.data, iter(index), workers, in_flight=4 * _BATCH * workers, batch=_BATCH)
        self._chunks = iter(self._map)
        self._data = b""
        self._pos = 0
        self.chunks = 0  # chunks handed out so far

    def readable(self) -> bool:
        """Always True."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes of the archive (the rest for -1); ``b""`` at the end."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_COPY_BLOCK), b""))
        while self._pos >= len(self._data):
            if self.closed:
                raise ValueError("read from a closed IndexReader")
            data = next(self._chunks, None)
            if data is None:
                return b""
            self.chunks += 1
            self._data, self._pos = data, 0
        pos = self._pos
        if pos == 0 and size >= len(self._data):
            self._pos = len(self._data)
            return self._data
        self._pos = pos + size
        return self._data[pos : pos + size]

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer``; the number of bytes read (0 at the end)."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Stop the fetching threads."""
        if not self.closed:
            self._map.close()
        super().close()


def index_reader(index: Index, store: Store, concurrency: int | None = None) -> IndexReader:
    """A stream of the blob (archive) an index describes; see :class:`IndexReader`."""
    return IndexReader(index, store, concurrency)


def untar(
    source: Source | str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    no_same_owner: bool = False,
    no_same_permissions: bool = False,
) -> UntarStats:
    """Restore the catar read from ``source`` into ``target_dir`` (see the module).

    ``source`` is a catar file's path, a binary file or a ``read(n)`` callable.

    Raises FormatError for a damaged or hostile archive (naming the byte
    offset or the path) and OSError naming the path for filesystem failures.
    """
    target_dir = os.fspath(target_dir)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _Extractor(target_dir, no_same_owner, no_same_permissions).run(iter_catar(f))
    reader = iter_catar(source)
    return _Extractor(target_dir, no_same_owner, no_same_permissions).run(reader)


def untar_index(
    index: Index,
    store: Store,
    target_dir: str | os.PathLike[str],
    *,
    concurrency: int | None = None,
    no_same_owner: bool = False,
    no_same_permissions: bool = False,
) -> UntarStats:
    """Restore the archive of a caidx ``index`` from ``store`` into ``target_dir``."""
    with index_reader(index, store, concurrency) as stream:
        stats = untar(
            stream, target_dir, no_same_owner=no_same_owner, no_same_permissions=no_same_permissions
        )
        stats.chunks = stream.chunks
    return stats


class _Level:
    """An open directory being filled: its descriptor and what to apply at the end.

    ``owner`` is the (uid, gid) a file created in it gets (None: unknown);
    ``plain`` says that no default ACL overrides the mode a file is created
    with. Both let :class:`_Extractor` skip calls that would change nothing.
    """

    __slots__ = ("checked", "created", "entry", "fd", "ident", "owner", "path", "plain", "st")

    def __init__(self, fd: int, entry: Entry, path: bytes, created: bool) -> None:
        self.fd = fd
        self.entry = entry
        self.path = path
        self.created = created
        self.st = st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)
        self.owner: tuple[int, int] | None = None
        self.plain = False
        self.checked = False  # the predictions were checked on the first file made here

    def check(self, fd: int, mode: int | None) -> None:
        """Check the predictions on a file just made here (with ``mode``, if not None); drop wrong ones."""
        self.checked = True
        st = os.fstat(fd)
        if self.owner is not None and (st.st_uid, st.st_gid) != self.owner:
            self.owner = None
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            self.plain = False


def _umask() -> int:
    """The process umask, read without changing it where /proc tells."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Extractor:
    """Applies decoder items to the filesystem below one target directory."""

    def __init__(self, target_dir: str, no_same_owner: bool, no_same_permissions: bool) -> None:
        self.target = target_dir
        self.no_same_owner = no_same_owner
        self.no_same_permissions = no_same_permissions
        self.root_user = hasattr(os, "geteuid") and os.geteuid() == 0
        self.umask = _umask()
        self.stats = UntarStats()
        self.levels: list[_Level] = []
        self.flags = 0
        self._ids: dict[tuple[bool, bytes], int | None] = {}
        # Predict the owner of new files, to skip chowns that change nothing (each
        # directory checks it on its first file: a filesystem may map owners).
        self.predict = self.root_user and not no_same_owner
        self.euid = os.geteuid() if self.predict else -1
        self.egid = os.getegid() if self.predict else -1

    def run(self, reader: CatarReader) -> UntarStats:
        """Consume every item; close every descriptor whatever happens."""
        try:
            for item in reader:
                self._item(item, reader)
        finally:
            for level in self.levels:
                if level.fd >= 0:
                    os.close(level.fd)
            self.levels.clear()
        return self.stats

    def _item(self, item: Item, reader: CatarReader) -> None:
        try:
            if item.kind == "file":
                self._file(item)
            elif item.kind == "enter":
                if not self.levels:
                    self.flags = reader.feature_flags or 0
                    self._root(item.entry)  # type: ignore[arg-type]
                else:
                    self._enter(item)
            else:
                self._leave()
        except OSError as exc:
            where = os.path.join(self.target, os.fsdecode(item.path)) if item.path else self.target
            raise OSError(exc.errno, exc.strerror, where) from exc

    # -- directories --------------------------------------------------------------

    def _root(self, entry: Entry) -> None:
        created = not os.path.isdir(self.target)
        if created:
            os.makedirs(self.target, exist_ok=True)
        fd = os.open(self.target, _DIR_FLAGS & ~os.O_NOFOLLOW)
        self._push(fd, entry, b"", created)

    def _enter(self, item: Item) -> None:
        entry: Entry = item.entry  # type: ignore[assignment]
        pfd = self.levels[-1].fd
        name = entry.name
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
            created = True
        except FileExistsError:
            created = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if created or exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            _remove(pfd, name)  # a file or symlink in the way: replace it
            os.mkdir(name, 0o700, dir_fd=pfd)
            created = True
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        self._push(fd, entry, item.path, created)
        if len(self.levels) > _FD_WINDOW:
            old = self.levels[-_FD_WINDOW - 1]
            if old.fd >= 0:
                os.close(old.fd)
                old.fd = -1

    def _push(self, fd: int, entry: Entry, path: bytes, created: bool) -> None:
        try:
            level = _Level(fd, entry, path, created)
        except OSError:
            os.close(fd)
            raise
        parent = self.levels[-1] if self.levels else None
        self.levels.append(level)
        self.stats.directories += 1
        # While it is filled a directory must be writable, and setgid already (its
        # children inherit the group); the archive's exact mode comes at the end.
        st = level.st
        mode = st.st_mode
        if created and not self.no_same_permissions:
            mode = (entry.mode & 0o7777) | 0o700
            os.fchmod(fd, mode)
        elif not created and not self.root_user and mode & 0o300 != 0o300:
            os.fchmod(fd, (mode & 0o7777) | 0o700)
        if self.predict:
            level.owner = (self.euid, st.st_gid if mode & stat.S_ISGID else self.egid)
        # A default ACL, which a new directory inherits, replaces the umask for its children.
        level.plain = parent.plain if created and parent is not None else not _default_acl(fd)

    def _leave(self) -> None:
        level = self.levels.pop()
        if self.levels and self.levels[-1].fd < 0:
            self.levels[-1].fd = self._reopen_parent(level)
        try:
            self._apply(level.fd, level.entry, level.created)
        finally:
            os.close(level.fd)
            level.fd = -1

    def _reopen_parent(self, level: _Level) -> int:
        parent = self.levels[-1]
        return _reopen_dotdot(level.fd, parent.ident, "during extraction", os.fsdecode(parent.path))

    # -- other objects ------------------------------------------------------------

    def _file(self, item: Item) -> None:
        entry: Entry = item.entry  # type: ignore[assignment]
        pfd = self.levels[-1].fd
        fmt = stat.S_IFMT(entry.mode)
        if fmt == stat.S_IFREG:
            self._regular(self.levels[-1], entry, item.payload)  # type: ignore[arg-type]
            self.stats.files += 1
        elif fmt == stat.S_IFLNK:
            _create(pfd, entry.name, lambda: os.symlink(entry.target, entry.name, dir_fd=pfd))  # type: ignore[arg-type]
            self._apply_at(pfd, entry, symlink=True)
            self.stats.symlinks += 1
        else:
            self._special(pfd, entry, fmt)

    def _regular(self, level: _Level, entry: Entry, payload: PayloadReader) -> None:
        pfd, name = level.fd, entry.name
        mode = self._mode(entry, True)
        # Created with its final mode where that is sure to be what open() makes
        # (no umask or default ACL in the way, no bits a later chown would clear).
        exact = mode is not None and level.plain and not mode & (0o7000 | self.umask)
        create_mode = mode if exact and mode is not None else 0o600
        fd = _create(pfd, name, lambda: os.open(name, _FILE_FLAGS, create_mode, dir_fd=pfd))
        try:
            left = entry.size
            while left:
                view = payload.read_view(_COPY_BLOCK)
                size = len(view)
                if not size:
                    break
                written = os.write(fd, view)
                while written < size:
                    written += os.write(fd, view[written:])
                left -= size
                self.stats.bytes_written += size
            if not level.checked:
                level.check(fd, mode if exact else None)
                exact = exact and level.plain
            self._apply(fd, entry, True, level.owner, exact)
        except BaseException:
            os.close(fd)
            fd = -1
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=pfd)
            raise
        finally:
            if fd >= 0:
                os.close(fd)

    def _special(self, pfd: int, entry: Entry, fmt: int) -> None:
        name = entry.name
        if fmt == stat.S_IFIFO:
            _create(pfd, name, lambda: os.mkfifo(name, 0o600, dir_fd=pfd))
            self.stats.fifos += 1
        elif fmt == stat.S_IFSOCK:
            _create(pfd, name, lambda: os.mknod(name, stat.S_IFSOCK | 0o600, dir_fd=pfd))
            self.stats.sockets += 1
        else:
            _create(pfd, name, lambda: os.mknod(name, fmt | 0o600, entry.rdev, dir_fd=pfd))
            self.stats.devices += 1
        self._apply_at(pfd, entry, symlink=False)

    # -- metadata -----------------------------------------------------------------

    def _owner(self, entry: Entry) -> tuple[int, int] | None:
        if self.no_same_owner or not self.root_user or not self.flags & _OWNER_FLAGS:
            return None
        uid, gid = entry.uid, entry.gid
        if self.flags & CA_FORMAT_WITH_USER_NAMES:
            if entry.user:
                uid = self._lookup(False, entry.user, uid)
            if entry.group:
                gid = self._lookup(True, entry.group, gid)
        return uid, gid

    def _lookup(self, group: bool, name: bytes, default: int) -> int:
        key = (group, name)
        if key not in self._ids:
            import grp
            import pwd

            try:
                text = os.fsdecode(name)
                self._ids[key] = grp.getgrnam(text).gr_gid if group else pwd.getpwnam(text).pw_uid
            except KeyError:
                self._ids[key] = None
        found = self._ids[key]
        return default if found is None else found

    def _mode(self, entry: Entry, created: bool) -> int | None:
        """The permission bits to set, or None to leave them."""
        if self.no_same_permissions:
            return None if not created else (0o777 if stat.S_ISDIR(entry.mode) else 0o666) & ~self.umask
        if self.flags & (CA_FORMAT_WITH_PERMISSIONS | CA_FORMAT_WITH_ACL):
            return entry.mode & 0o7777
        if self.flags & CA_FORMAT_WITH_READ_ONLY:
            return entry.mode & 0o7777 & ~self.umask
        return (0o777 if stat.S_ISDIR(entry.mode) else 0o666) & ~self.umask

    def _apply(
        self,
        fd: int,
        entry: Entry,
        created: bool,
        owned: tuple[int, int] | None = None,
        mode_set: bool = False,
    ) -> None:
        """Owner, xattrs, mode, mtime of an open file or directory (in that order).

        The chown is skipped when the owner is ``owned`` already (a new file's,
        checked), and the chmod when ``mode_set`` (the file was created with it).
        """
        owner = self._owner(entry)
        if owner is not None and owner != owned:
            os.fchown(fd, *owner)
        for key, value in entry.xattrs:
            self._setxattr(fd, key, value, entry)
        if entry.fcaps is not None and stat.S_ISREG(entry.mode):
            self._setxattr(fd, b"security.capability", entry.fcaps, entry)
        if not mode_set:
            mode = self._mode(entry, created)
            if mode is not None:
                os.fchmod(fd, mode)
        if self.flags & _TIME_FLAGS:
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    def _apply_at(self, pfd: int, entry: Entry, symlink: bool) -> None:
        """The same for a symlink or special file, by name, never following it."""
        name = entry.name
        owner = self._owner(entry)
        if owner is not None:
            os.chown(name, *owner, dir_fd=pfd, follow_symlinks=False)
        if entry.xattrs:
            path = b"/proc/self/fd/%d/%s" % (pfd, name)
            for key, value in entry.xattrs:
                self._setxattr(path, key, value, entry)
        mode = None if symlink else self._mode(entry, True)
        if mode is not None:
            os.chmod(name, mode, dir_fd=pfd)  # our own fresh node, not a symlink
        if self.flags & _TIME_FLAGS:
            os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _setxattr(self, target: int | bytes, key: bytes, value: bytes, entry: Entry) -> None:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _XATTR_REFUSALS:
                raise
            self.stats.xattrs_skipped += 1
            log.debug("xattr %r of %r not restored: %s", key, entry.name, exc.strerror)


def _default_acl(fd: int) -> bool:
    """Whether the directory ``fd`` has a default ACL (False where ACLs are not supported)."""
    try:
        os.getxattr(fd, "system.posix_acl_default")
    except OSError:
        return False
    return True


def _create(pfd: int, name: bytes, make: Callable[[], object]) -> int:
    """Run ``make`` (which creates ``name``); if something is in the way, remove it and retry."""
    try:
        result = make()
    except FileExistsError:
        _remove(pfd, name)
        result = make()
    return result if isinstance(result, int) else -1
