"""The ``sftp://[user@]host[:port]/path`` chunk and index stores, over paramiko.

:class:`SFTPStore` keeps casync's layout (``<path>/xxxx/<id>.cacnk``) on an
SSH server's filesystem; :class:`SFTPIndexStore` keeps index files as
``<path>/<name>``. Both write to a temporary name beside the target and
rename it over the target (``posix-rename@openssh.com``; plain rename where
the server lacks it), so readers see a whole file or none. Connections follow
the user's OpenSSH client config, read with paramiko from
``$PYCASYNC_SSH_CONFIG`` when set, else ``~/.ssh/config`` (``HOME``
decides; the system-wide ``/etc/ssh/ssh_config`` is not read): ``Host``
aliases, ``HostName``, ``Port``, ``User``, ``IdentityFile`` (several),
``IdentitiesOnly``, ``IdentityAgent none``, ``UserKnownHostsFile``,
``GlobalKnownHostsFile``, ``HostKeyAlias``, ``StrictHostKeyChecking``,
``ConnectTimeout``, ``Compression`` and ``ProxyCommand``; a user or port in
the URL wins over the config. Keys come from the configured identity files,
then the ssh agent, then (when no identity file is configured) the default
``~/.ssh/id_*`` files, as OpenSSH tries them; an encrypted identity file is
used through the agent. Host keys are checked against the known-hosts files:
``StrictHostKeyChecking`` ``yes``, ``ask`` or unset refuse an unknown host,
``accept-new`` appends its key to the first ``UserKnownHostsFile``, ``no``
accepts any key with a warning; a changed key is refused unless ``no``. Up
to ``options.concurrency`` (default :data:`DEFAULT_SESSIONS`) SFTP sessions
are opened lazily, :data:`SESSIONS_PER_CONNECTION` per SSH connection, each
used by one thread at a time; an operation whose connection dropped is
retried on a new one ``options.error_retry`` times. paramiko is imported only
when a store first connects (:class:`MissingDependency` ``ssh`` without it).

That is the fallback: as desync does, the SSH connection is normally the
OpenSSH client itself, ``$CASYNC_SSH_PATH`` (default ``ssh``, when it is
installed): each session runs ``PROGRAM -s [-F CONFIG] [-p PORT] [-l USER]
-- HOST sftp`` and paramiko's SFTP client speaks over its pipes, so
everything of the user's ssh setup applies (ProxyJump, certificates, agents,
Kerberos, ControlMaster); what ssh says on stderr ends up in the error
message. ``-F`` is given for an explicit ``$PYCASYNC_SSH_CONFIG``, or for
``$HOME/.ssh/config`` when ``$HOME`` is not the user's home (ssh itself
reads the passwd entry's). paramiko's own SSH (everything above) is used
when no ssh program is found or ``$PYCASYNC_SFTP_CLIENT=paramiko``
(:func:`ssh_program` decides).
The SSH connection machinery (config, host keys, authentication, the session
pool) lives in :mod:`._sshconnect`; this module is the SFTP stores on top of it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import logging
import os
import posixpath
import pwd
import re
import secrets
import shutil
import socket
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, TypeVar

from casync_format.errors import (
    CasyncError,
    ChunkMissing,
    IndexNotFound,
    ParameterError,
    StoreError,
)

from ..plumbing.atomic import TEMP_PREFIX
from ..plumbing.config import StoreOptions
from ..plumbing.locparse import Location
from ._sshconnect import (
    DEFAULT_TIMEOUT,
    SESSIONS_PER_CONNECTION,
    SSH_CONFIG_ENV,
    PipeSessionPool,
    SessionPool,
    Target,
    load_paramiko,
    reason,
    resolve_target,
)
from .base import PruneStore
from .http import MAX_BLOB_SIZE
from .indexstore import WriteIndexStore, check_index_name, copy_exactly
from .layout import CHUNK_SUFFIX, chunk_path, is_chunk_dir, parse_chunk_file
from .local import STALE_TEMP_AGE

__all__ = [
    "SFTPStore",
    "SFTPIndexStore",
    "SFTPLocation",
    "open_sftp",
    "open_sftp_index_store",
    "parse_location",
    "DEFAULT_SESSIONS",
    "SESSIONS_PER_CONNECTION",
    "SSH_CONFIG_ENV",
    "SFTP_CLIENT_ENV",
    "ssh_program",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: SFTP sessions per store when ``options.concurrency`` is 0.
DEFAULT_SESSIONS = 4
_SMALL_READ = 32768  # paramiko's largest single read request; bigger reads are pipelined
_INDEX_BLOCK = 1 << 20
_BAD_TEXT = re.compile(r"[\x00-\x20\x7f\"'`$;|&<>\\]")


#: Environment variable choosing the SSH client of sftp:// stores: ``openssh`` or ``paramiko``.
SFTP_CLIENT_ENV = "PYCASYNC_SFTP_CLIENT"


def ssh_program() -> str | None:
    """The OpenSSH client program sftp:// stores run, or None for paramiko's own SSH.

    ``$PYCASYNC_SFTP_CLIENT`` decides when set (``openssh``: ``$CASYNC_SSH_PATH``
    or ``ssh``; ``paramiko``); otherwise ``$CASYNC_SSH_PATH`` when set, as
    desync runs it, else ``ssh`` when it is on the PATH, else None.
    ParameterError for another value.
    """
    choice = os.environ.get(SFTP_CLIENT_ENV, "").strip().lower()
    program = os.environ.get("CASYNC_SSH_PATH") or None
    if choice in ("", "auto"):
        return program or shutil.which("ssh")
    if choice == "paramiko":
        return None
    if choice == "openssh":
        return program or "ssh"
    raise ParameterError(f"${SFTP_CLIENT_ENV} must be openssh or paramiko, not {choice!r}")


def _home_config() -> str | None:
    """``$HOME/.ssh/config`` when ``$HOME`` is not the passwd home ssh reads, and the file exists."""
    home = os.environ.get("HOME")
    try:
        own = pwd.getpwuid(os.getuid()).pw_dir
    except (KeyError, OSError):
        own = None
    if not home or (own is not None and os.path.realpath(home) == os.path.realpath(own)):
        return None
    path = os.path.join(home, ".ssh", "config")
    return path if os.path.isfile(path) else None


@dataclass(frozen=True)
class SFTPLocation:
    """The parts of an ``sftp://`` location; ``path`` is absolute on the server."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None


def parse_location(location: str) -> SFTPLocation:
    """Split ``sftp://[user@]host[:port]/path``; raises ParameterError (never echoing a password)."""
    loc = Location.parse(location)
    what = f"sftp store location {loc.redacted()!r}"
    if loc.scheme != "sftp":
        raise ParameterError(f"{what}: not an sftp:// location")
    if loc.password is not None:
        raise ParameterError(f"{what}: passwords are not supported (use keys or an agent)")
    port = loc.port
    if not loc.port_valid or port == 0:
        raise ParameterError(f"{what}: the port must be a number from 1 to 65535")
    host = loc.host
    user = urllib.parse.unquote(loc.user) if loc.user is not None else None
    for part, text in (("host", host), ("user name", user or "x")):
        if not text or _BAD_TEXT.search(text) or text.startswith("-"):
            raise ParameterError(f"{what}: {part} {text!r} is not allowed")
    rest = loc.path + (f"?{loc.query}" if loc.query else "")
    path = urllib.parse.unquote(rest + (f"#{loc.fragment}" if loc.fragment else ""))
    if not path.startswith("/"):
        raise ParameterError(f"{what}: needs an absolute path (sftp://host/path/to/store)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise ParameterError(f"{what}: control characters in the path")
    path = posixpath.normpath(path).replace("//", "/")
    return SFTPLocation(host, path, user, port or None)


class _SFTPBase:
    """What both stores share: the location, the target, the pool and retried operations."""

    def __init__(self, location: str, options: StoreOptions | None, ssh_config: str | None) -> None:
        options = options or StoreOptions()
        self.location = parse_location(location)
        self.name = Location.parse(location).redacted()  # passwords were refused: as given
        self.path = self.location.path
        self.retries = max(0, options.error_retry)
        self.retry_interval = options.error_retry_base_interval
        self._options = options
        self._ssh_config = ssh_config
        self._target: Target | None = None
        self._target_lock = threading.Lock()
        self._posix_rename = True
        sessions = options.concurrency if options.concurrency > 0 else DEFAULT_SESSIONS
        program = ssh_program()
        self.openssh = program is not None  #: sessions run the OpenSSH client
        if program is not None:
            timeout = options.timeout or DEFAULT_TIMEOUT
            self._pool: SessionPool = PipeSessionPool(self._ssh_argv(program), self.name, sessions, timeout)
        else:
            self._pool = SessionPool(self._resolve, sessions)

    def _ssh_argv(self, program: str) -> list[str]:
        """``PROGRAM -s [-F CONFIG] [-p PORT] [-l USER] -- HOST sftp``, as desync runs it."""
        loc = self.location
        argv = [program, "-s"]
        config = self._ssh_config or os.environ.get(SSH_CONFIG_ENV) or _home_config()
        if config:
            argv += ["-F", os.path.expanduser(config)]
        if loc.port is not None:
            argv += ["-p", str(loc.port)]
        if loc.user is not None:
            argv += ["-l", loc.user]
        return [*argv, "--", loc.host, "sftp"]

    def __str__(self) -> str:
        return self.name

    def _resolve(self) -> Target:
        with self._target_lock:
            if self._target is None:
                loc = self.location
                self._target = resolve_target(
                    self.name, loc.host, loc.user, loc.port, self._options, self._ssh_config
                )
            return self._target

    def _run(self, doing: str, op: Callable[[Any], T], retry: bool = True) -> T:
        """``op(sftp_client)`` on a pooled session; retried on a new session when the connection drops.

        An SFTP error status (OSError on a live session) is final: a StoreError naming ``doing``.
        """
        attempt = 0
        while True:
            session = self._pool.acquire(self.name)
            healthy = False
            try:
                result = op(session.client)
                healthy = True
                return result
            except CasyncError:
                healthy = session.alive()
                raise
            except (OSError, EOFError, load_paramiko().SSHException) as exc:
                healthy = session.alive() and not isinstance(exc, socket.timeout)
                if healthy and isinstance(exc, OSError):
                    raise StoreError(f"store {self}: cannot {doing}: {reason(exc)}") from None
                if attempt >= self.retries or not retry:
                    who = self.location.host if self.openssh else self._resolve().who
                    raise StoreError(f"store {self}: connection to {who} lost while trying to {doing}: "
                                     f"{reason(exc)}") from None  # fmt: skip
                log.info("store %s: connection lost (%s); retrying", self, reason(exc))
            finally:
                self._pool.release(session, healthy)
            time.sleep(self.retry_interval * (1 << attempt))
            attempt += 1

    def _upload(self, sftp: Any, path: str, write: Callable[[Any], object]) -> None:
        """Write a temp file beside ``path`` (making directories as needed) and rename it over ``path``."""
        directory = posixpath.dirname(path)
        tmp = posixpath.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        try:
            f = sftp.open(tmp, "wxb")
        except FileNotFoundError:
            _makedirs(sftp, directory)
            f = sftp.open(tmp, "wxb")
        try:
            with f:
                f.set_pipelined(True)
                write(f)
            self._rename(sftp, tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise

    def _rename(self, sftp: Any, tmp: str, path: str) -> None:
        if self._posix_rename:
            try:
                sftp.posix_rename(tmp, path)
                return
            except OSError as exc:
                if exc.errno is not None or "unsupported" not in str(exc).lower():
                    raise
                self._posix_rename = False  # an old server: plain rename, which refuses to replace
                log.info("store %s: the server lacks posix-rename; replacing files is not atomic", self)
        try:
            sftp.rename(tmp, path)
        except OSError:
            if not _exists(sftp, path):
                raise
            self._replace_fallback(sftp, tmp, path)

    def _replace_fallback(self, sftp: Any, tmp: str, path: str) -> None:
        """Without posix-rename, a chunk already there is the same chunk: keep it."""
        sftp.remove(tmp)

    def close(self) -> None:
        self._pool.close()


def _exists(sftp: Any, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _makedirs(sftp: Any, directory: str) -> None:
    """Create ``directory`` and missing parents; another writer making them at once is fine."""
    missing: list[str] = []
    while directory not in ("/", "") and not _exists(sftp, directory):
        missing.append(directory)
        directory = posixpath.dirname(directory)
    for d in reversed(missing):
        try:
            sftp.mkdir(d)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(d).st_mode or 0):
                raise


def _read_all(f: Any, limit: int, what: str) -> bytes:
    size = f.stat().st_size or 0
    if size > limit:
        raise StoreError(f"{what} is {size} bytes, more than {limit}: refused")
    data = f.read(size) if size <= _SMALL_READ else b"".join(f.readv([(0, size)]))
    if len(data) != size:
        raise OSError(errno.EIO, f"short read ({len(data)} of {size} bytes)")
    return bytes(data)


# --------------------------------------------------------------------------- the stores


class SFTPStore(_SFTPBase, PruneStore):
    """A chunk store in a directory on an SSH server, reached over SFTP (see the module docstring).

    ``ssh_config`` names the ssh client config to read instead of
    ``$PYCASYNC_SSH_CONFIG`` or ``~/.ssh/config``.
    """

    def __init__(
        self, location: str, options: StoreOptions | None = None, *, ssh_config: str | None = None
    ) -> None:
        options = options or StoreOptions()
        if options.uncompressed:
            raise StoreError(f"store {location}: uncompressed stores are not supported in this version")
        _SFTPBase.__init__(self, location, options, ssh_config)
        self.verify = not options.skip_verify
        self.cipher = options.chunk_cipher()  # desync's encryption: files sealed, named ``...<suffix>``
        self._suffix = CHUNK_SUFFIX + (self.cipher.suffix if self.cipher else "")
        self._max_file = MAX_BLOB_SIZE + (self.cipher.overhead if self.cipher else 0)

    def check(self) -> None:
        if not self._run("check the store", lambda sftp: _exists(sftp, self.path)):
            raise StoreError(f"store {self} does not exist")

    def chunk_path(self, chunk_id: bytes) -> str:
        """Where the chunk's file lives on the server."""
        return posixpath.join(self.path, chunk_path(chunk_id, self._suffix))

    def get_raw(self, chunk_id: bytes) -> bytes:
        path = self.chunk_path(chunk_id)

        def read(sftp: Any) -> bytes | None:
            try:
                with sftp.open(path, "rb") as f:
                    return _read_all(f, self._max_file, f"store {self}: chunk {chunk_id.hex()}")
            except FileNotFoundError:
                return None

        blob = self._run(f"read chunk {chunk_id.hex()}", read)
        if blob is None:
            raise ChunkMissing(chunk_id, self)
        return blob if self.cipher is None else self.cipher.decrypt(blob, chunk_id, self)

    def has_chunk(self, chunk_id: bytes) -> bool:
        path = self.chunk_path(chunk_id)
        return self._run(f"look up chunk {chunk_id.hex()}", lambda sftp: _exists(sftp, path))

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        path, sealed = self.chunk_path(chunk_id), blob if self.cipher is None else self.cipher.encrypt(blob)
        self._run(f"write chunk {chunk_id.hex()}", lambda c: self._upload(c, path, lambda f: f.write(sealed)))

    def remove_chunk(self, chunk_id: bytes) -> None:
        path = self.chunk_path(chunk_id)

        def remove(sftp: Any) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self._run(f"remove chunk {chunk_id.hex()}", remove)

    def _list(self, directory: str, missing_ok: bool) -> list[Any]:
        """One directory's entries (attributes with ``filename``), read on a pooled session."""

        def listing(sftp: Any) -> list[Any]:
            try:
                return list(sftp.listdir_iter(directory))
            except FileNotFoundError:
                if missing_ok:
                    return []
                raise StoreError(f"store {self} does not exist") from None

        return self._run(f"list {directory}", listing)

    def _prefix_dirs(self) -> list[str]:
        entries = self._list(self.path, missing_ok=False)
        return sorted(e.filename for e in entries
                      if is_chunk_dir(e.filename) and not stat.S_ISREG(e.st_mode or 0))  # fmt: skip

    def iter_chunk_ids(self) -> Iterator[bytes]:
        """Chunk ids, one prefix directory listed at a time (no session is held while yielding)."""
        for prefix in self._prefix_dirs():
            for entry in sorted(self._list(posixpath.join(self.path, prefix), missing_ok=True),
                                key=lambda e: e.filename):  # fmt: skip
                chunk_id = parse_chunk_file(entry.filename, prefix, self._suffix)
                if chunk_id is not None and stat.S_ISREG(entry.st_mode or 0):
                    yield chunk_id

    def prune(
        self, keep: set[bytes] | frozenset[bytes], max_temp_age: float = STALE_TEMP_AGE, *,
        removed: Callable[[bytes, int], None] | None = None,
    ) -> int:
        """Remove unreferenced chunks, and temp files of writers that died ``max_temp_age`` s ago."""
        count = 0
        cutoff = time.time() - max_temp_age
        for prefix in self._prefix_dirs():
            directory = posixpath.join(self.path, prefix)
            for entry in self._list(directory, missing_ok=True):
                chunk_id = parse_chunk_file(entry.filename, prefix, self._suffix)
                if chunk_id is not None and chunk_id not in keep:
                    self.remove_chunk(chunk_id)
                    count += 1
                    if removed is not None:
                        removed(chunk_id, entry.st_size if entry.st_size is not None else -1)
                elif entry.filename.startswith(TEMP_PREFIX) and (entry.st_mtime or 0) < cutoff:
                    tmp = posixpath.join(directory, entry.filename)
                    self._run(f"remove {tmp}", functools.partial(_remove_quietly, path=tmp))
        return count


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _remove_quietly(sftp: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        sftp.remove(path)


class _RemoteReader(io.RawIOBase):
    """An open remote file holding a pooled session until closed; reads are pipelined."""

    def __init__(self, f: Any, size: int, done: Callable[[bool], None], name: str) -> None:
        self._f = f
        self._size = size
        self._pos = 0
        self._done: Callable[[bool], None] | None = done
        self._name = name

    def readable(self) -> bool:
        return True

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            block = self.read(_INDEX_BLOCK)
            if not block:
                return b"".join(parts)
            parts.append(block)

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos, _INDEX_BLOCK)
        if n <= 0:
            return 0
        try:
            data = self._f.read(n) if n <= _SMALL_READ else b"".join(self._f.readv([(self._pos, n)]))
        except (OSError, EOFError) as exc:
            raise StoreError(f"index {self._name}: read failed: {reason(exc)}") from None
        if not data:
            raise StoreError(f"index {self._name}: ended after {self._pos} of {self._size} bytes")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            healthy = True
            try:
                self._f.close()
            except Exception:
                healthy = False
            done(healthy)
        super().close()


class SFTPIndexStore(_SFTPBase, WriteIndexStore):
    """Index files in a directory on an SSH server: ``<path>/<name>``.

    An open index holds one of the store's sessions until it is closed.
    """

    def __init__(
        self, location: str, options: StoreOptions | None = None, *, ssh_config: str | None = None
    ) -> None:
        _SFTPBase.__init__(self, location, options, ssh_config)

    def _file(self, name: str) -> str:
        return posixpath.join(self.path, check_index_name(name, self))

    def _where(self, name: str) -> str:
        return f"{self.name.rstrip('/')}/{name}"

    def open_index(self, name: str) -> BinaryIO:
        path = self._file(name)
        opened: list[tuple[Any, int]] = []

        def start(sftp: Any) -> None:
            try:
                f = sftp.open(path, "rb")
            except FileNotFoundError:
                raise IndexNotFound(f"index {self._where(name)} does not exist") from None
            try:
                st = f.stat()
                if not stat.S_ISREG(st.st_mode or stat.S_IFREG):
                    raise StoreError(f"index {self._where(name)} is not a regular file")
            except BaseException:
                f.close()
                raise
            opened.append((f, st.st_size or 0))

        # The session stays with the reader: take it outside _run's release.
        session = self._pool.acquire(self.name)
        try:
            start(session.client)
        except IndexNotFound:
            self._pool.release(session, True)
            raise
        except (OSError, EOFError, load_paramiko().SSHException) as exc:
            self._pool.release(session, session.alive())
            raise StoreError(f"index {self._where(name)}: {reason(exc)}") from None
        except BaseException:
            self._pool.release(session, session.alive())
            raise
        f, size = opened[0]
        reader = _RemoteReader(f, size, lambda ok: self._pool.release(session, ok and session.alive()),
                               self._where(name))  # fmt: skip
        return io.BufferedReader(reader, _INDEX_BLOCK)  # type: ignore[return-value]

    def has_index(self, name: str) -> bool:
        path = self._file(name)
        return self._run(f"look up index {name}", lambda sftp: _exists(sftp, path))

    def put_index(self, name: str, source: BinaryIO, size: int) -> None:
        path = self._file(name)
        # A retry replays the source, so only a seekable one is retried.
        start = source.tell() if _seekable(source) else None

        def upload(sftp: Any) -> None:
            if start is not None:
                source.seek(start)
            self._upload(sftp, path, lambda f: copy_exactly(source, f, size))

        self._run(f"write index {name}", upload, retry=start is not None)

    def _replace_fallback(self, sftp: Any, tmp: str, path: str) -> None:
        """Without posix-rename an index is replaced by remove then rename (briefly absent)."""
        sftp.remove(path)
        sftp.rename(tmp, path)


def open_sftp(location: str, options: StoreOptions) -> SFTPStore:
    """The :data:`~casync_store.stores.backends.BACKENDS` factory for ``sftp://``."""
    return SFTPStore(location, options)


def open_sftp_index_store(location: str, options: StoreOptions) -> SFTPIndexStore:
    """The :data:`~casync_store.stores.backends.BACKENDS` factory for ``sftp://``."""
    return SFTPIndexStore(location, options)
