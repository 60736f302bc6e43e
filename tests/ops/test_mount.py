"""Tests of ``casync_store.ops.mount``: the blob of an index as a read-only file in a real FUSE mount.

The mount runs in a child process (``python -c`` calling :func:`mount_index`
over a LocalStore) on a real ``/dev/fuse`` with Debian's ``fusermount``;
the tests read the file like any program would, then unmount with
``fusermount -u``, SIGTERM or SIGINT and expect exit status 0 and the mount
gone. Without /dev/fuse, fusermount or fusepy those tests skip, but fail
under ``CI=true``. :class:`IndexFS` (the filesystem logic), :class:`ChunkCache`
and :func:`mount_name` are also tested in-process without FUSE, where
hypothesis drives arbitrary read ranges.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.chunker import ChunkerParams
from casync_format.errors import MissingDependency, ParameterError, StoreError
from casync_store import LocalStore
from casync_store.ops.make import make
from casync_store.ops.mount import ChunkCache, IndexFS, mount_index, mount_name
from casync_store.stores.indexio import open_index
from tests.support import ROOT

PARAMS = ChunkerParams(4096, 16384, 65536)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

RUNNER = r"""
import os, sys
root, store_dir, index_path, mnt, ready_file, cache = sys.argv[1:7]
sys.path.insert(0, root)
from casync_store import LocalStore
from casync_store.stores.indexio import open_index
from casync_store.ops.mount import mount_index, mount_name

def ready(path):
    with open(ready_file + ".tmp", "w") as f:
        f.write(path)
    os.replace(ready_file + ".tmp", ready_file)

with LocalStore(store_dir) as store, open_index(index_path) as index:
    mount_index(index, store, mnt, mount_name(index_path), cache_bytes=int(cache),
                mtime=os.stat(index_path).st_mtime, ready=ready)
print("unmounted", flush=True)
"""


# ---------------------------------------------------------------- fixtures


def _fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK) and not shutil.which("fusermount"):
        return "/dev/fuse is not accessible"
    if not shutil.which("fusermount"):
        return "fusermount is missing (Debian package 'fuse')"
    try:
        import fuse  # noqa: F401
    except ImportError:
        return "fusepy is not installed"
    except OSError as exc:
        return f"libfuse is not usable: {exc}"
    return None


@pytest.fixture(scope="module")
def need_fuse() -> None:
    """Skip without a usable FUSE (fail under CI=true)."""
    problem = _fuse_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}, but CI=true requires the FUSE tests")
        pytest.skip(problem)


@dataclass
class Blob:
    """A blob made into a store: its data, input file, index and store directory."""

    data: bytes
    path: str
    index: str
    store: str

    def items(self) -> list[tuple[int, int, bytes]]:
        with open_index(self.index) as index:
            return [(c.start, c.size, c.id) for c in index]


def _blob_data() -> bytes:
    rng = random.Random(5)
    unique = rng.randbytes(3 * 1024 * 1024)
    zeros = bytes(300 * 1024)  # a zero run: max-size all-zero chunks, never fetched
    repeat = unique[100_000:400_000]  # chunks the index holds twice
    return unique[:2_000_000] + zeros + unique[2_000_000:] + repeat + rng.randbytes(12_345)


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Blob:
    """A ~3.6 MB blob with random data, a zero run and repeats, chunked 4/16/64 KiB."""
    d = tmp_path_factory.mktemp("blob")
    data = _blob_data()
    path, index, store = (str(d / n) for n in ("disk.img", "disk.img.caibx", "store"))
    with open(path, "wb") as f:
        f.write(data)
    make(index, path, LocalStore(store, sync=False), params=PARAMS)
    return Blob(data, path, index, store)


class MountProcess:
    """A child process serving a mount (context manager: always unmounted and reaped)."""

    def __init__(self, store: str, index: str, mountpoint: str, cache_bytes: int = 1 << 20) -> None:
        self.mountpoint = mountpoint
        self.ready_file = mountpoint + ".ready"
        self.log = mountpoint + ".log"
        os.makedirs(mountpoint, exist_ok=True)
        argv = [sys.executable, "-c", RUNNER, ROOT, store, index, mountpoint, self.ready_file,
                str(cache_bytes)]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self.file = ""

    def __enter__(self) -> MountProcess:
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                pytest.fail(f"the mount did not come up (exit {self.proc.returncode}): {self.stderr()}")
            time.sleep(0.02)
        with open(self.ready_file) as f:
            self.file = f.read()
        assert os.path.ismount(self.mountpoint)
        return self

    def __exit__(self, *exc: object) -> None:
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount", "-u", "-z", self.mountpoint], capture_output=True, check=False)
        if self.proc.poll() is None:
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stderr(self) -> str:
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_exit(self) -> int:
        """The exit status once the process ends by itself; also asserts the mount is gone."""
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the mount process did not exit: {self.stderr()}")
        assert not os.path.ismount(self.mountpoint)
        assert self.proc.stdout is not None
        assert self.proc.stdout.read() == b"unmounted\n"
        return code


def _unmount(mountpoint: str) -> None:
    res = subprocess.run(["fusermount", "-u", mountpoint], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def _random_ranges(rng: random.Random, blob: Blob, n: int) -> list[tuple[int, int]]:
    """(offset, length) pairs: anywhere, around chunk boundaries, and at or past EOF."""
    size = len(blob.data)
    starts = [start for start, _, _ in blob.items()]
    ranges = []
    for k in range(n):
        kind = k % 3
        if kind == 0:
            off = rng.randrange(size)
        elif kind == 1:
            off = max(0, rng.choice(starts) + rng.randint(-300, 300))
        else:
            off = size - rng.randint(-100, 5000)
        ranges.append((off, rng.choice((1, 17, 4096, 65536, 200_000))))
    return ranges


# ---------------------------------------------------------------- real FUSE


@pytest.mark.usefixtures("need_fuse")
def test_mount_reads_like_the_blob(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    mnt = os.path.join(tmp_path, "mnt")
    with MountProcess(blob.store, blob.index, mnt) as m:
        assert m.file == os.path.join(mnt, "disk.img")
        assert os.listdir(mnt) == ["disk.img"]
        st_dir, st_file = os.stat(mnt), os.stat(m.file)
        assert stat.S_IMODE(st_dir.st_mode) == 0o555 and stat.S_ISDIR(st_dir.st_mode)
        assert stat.S_IMODE(st_file.st_mode) == 0o444 and stat.S_ISREG(st_file.st_mode)
        assert st_file.st_size == len(blob.data)
        assert int(st_file.st_mtime) == int(os.stat(blob.index).st_mtime)

        rng = random.Random(1)
        fd = os.open(m.file, os.O_RDONLY)
        try:
            for off, n in _random_ranges(rng, blob, 300):
                assert os.pread(fd, n, off) == blob.data[off : off + n], (off, n)
        finally:
            os.close(fd)

        errors: list[BaseException] = []

        def reader(seed: int) -> None:
            try:
                r = random.Random(seed)
                with open(m.file, "rb", buffering=0) as f:
                    for off, n in _random_ranges(r, blob, 40):
                        f.seek(off)
                        assert f.read(n) == blob.data[off : off + n]
                    f.seek(0)
                    assert hashlib.sha256(f.read()).digest() == hashlib.sha256(blob.data).digest()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]

        with open(m.file, "rb") as f:
            assert f.read() == blob.data
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
            with pytest.raises(OSError) as exc:
                os.close(os.open(m.file, flags))
            assert exc.value.errno == errno.EROFS
        with pytest.raises(OSError) as exc:
            open(os.path.join(mnt, "new"), "wb").close()
        assert exc.value.errno == errno.EROFS
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(mnt, "other"))
        _unmount(mnt)
        assert m.wait_exit() == 0, m.stderr()


@pytest.mark.usefixtures("need_fuse")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts(blob: Blob, tmp_path: os.PathLike[str], sig: int) -> None:
    mnt = os.path.join(tmp_path, "mnt")
    with MountProcess(blob.store, blob.index, mnt) as m:
        with open(m.file, "rb") as f:
            assert f.read(100_000) == blob.data[:100_000]
        m.proc.send_signal(sig)
        assert m.wait_exit() == 0, m.stderr()


@pytest.mark.usefixtures("need_fuse")
def test_missing_chunk_is_eio_and_the_mount_stays(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    store = os.path.join(tmp_path, "store")
    shutil.copytree(blob.store, store)
    items = blob.items()
    start, size, cid = items[len(items) // 3]
    assert sum(1 for _, _, c in items if c == cid) == 1
    os.unlink(LocalStore(store).chunk_path(cid))
    mnt = os.path.join(tmp_path, "mnt")
    with MountProcess(store, blob.index, mnt, cache_bytes=0) as m:
        fd = os.open(m.file, os.O_RDONLY)
        try:
            for _ in range(2):  # a failure is not cached: it fails again, the same way
                with pytest.raises(OSError) as exc:
                    os.pread(fd, size, start)
                assert exc.value.errno == errno.EIO
            assert os.pread(fd, 65536, 0) == blob.data[:65536]
            tail = len(blob.data) - 65536
            assert os.pread(fd, 65536, tail) == blob.data[tail:]
        finally:
            os.close(fd)
        assert os.path.ismount(mnt)
        _unmount(mnt)
        assert m.wait_exit() == 0
        log = m.stderr()
        assert cid.hex() in log and store in log, log
        assert "Traceback" not in log, log


@pytest.mark.usefixtures("need_fuse")
def test_cli_mount_index(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    helped = subprocess.run([sys.executable, os.path.join(ROOT, "pycasync.py"), "mount-index", "--help"],
                            capture_output=True, check=False)
    if helped.returncode != 0:
        pytest.skip("the CLI has no mount-index command yet")
    mnt = os.path.join(tmp_path, "mnt")
    os.mkdir(mnt)
    cli = [sys.executable, os.path.join(ROOT, "pycasync.py")]
    argv = [*cli, "mount-index", "-s", blob.store, blob.index, mnt]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        path = os.path.join(mnt, "disk.img")
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                assert proc.stderr is not None
                why = proc.stderr.read() if proc.poll() is not None else "timeout"
                pytest.fail(f"mount-index did not mount: {why!r}")
            time.sleep(0.02)
        with open(path, "rb") as f:
            assert f.read() == blob.data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0
        assert not os.path.ismount(mnt)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount", "-u", "-z", mnt], check=False)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


# ---------------------------------------------------------------- errors before mounting


def test_mountpoint_must_be_a_directory(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    with LocalStore(blob.store) as store, open_index(blob.index) as index:
        for where in (blob.path, os.path.join(tmp_path, "absent")):
            with pytest.raises(ParameterError, match="is not a directory"):
                mount_index(index, store, where, "x")


def test_missing_fusepy(blob: Blob, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fuse", None)  # what an uninstalled package looks like
    store = LocalStore(blob.store)
    with open_index(blob.index) as index, pytest.raises(MissingDependency) as exc:
        mount_index(index, store, str(tmp_path), "x")
    assert exc.value.extra == "fuse" and exc.value.module == "fusepy"
    assert "pycasync[fuse]" in str(exc.value)


def test_missing_libfuse(blob: Blob, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fuse")
    monkeypatch.delitem(sys.modules, "fuse", raising=False)  # restored afterwards
    monkeypatch.setenv("FUSE_LIBRARY_PATH", os.path.join(tmp_path, "no-libfuse.so.2"))
    store = LocalStore(blob.store)
    with open_index(blob.index) as index, pytest.raises(StoreError, match="libfuse is not usable") as exc:
        mount_index(index, store, str(tmp_path), "x")
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- IndexFS without FUSE


class SlowCountingStore(LocalStore):
    """A real LocalStore that counts get_raw per chunk and takes its time (to overlap readers)."""

    def __init__(self, path: str, delay: float = 0.0) -> None:
        super().__init__(path)
        self.delay = delay
        self.calls: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def get_raw(self, chunk_id: bytes) -> bytes:
        with self._lock:
            self.calls[chunk_id] = self.calls.get(chunk_id, 0) + 1
        time.sleep(self.delay)
        return super().get_raw(chunk_id)


@pytest.fixture
def fs(blob: Blob) -> Iterator[IndexFS]:
    with LocalStore(blob.store) as store, open_index(blob.index) as index:
        ops = IndexFS(index, store, "disk.img", cache_bytes=256 * 1024, mtime=1_700_000_000.5)
        yield ops
        ops.close()


@given(st.data())
def test_indexfs_reads_any_range(fs: IndexFS, blob: Blob, data: st.DataObject) -> None:
    size = len(blob.data)
    off = data.draw(st.integers(0, size + 10), label="offset")
    n = data.draw(st.integers(0, 300_000), label="size")
    assert fs("read", "/disk.img", n, off, 0) == blob.data[off : off + n]


def test_indexfs_sequential_reads_and_readahead(fs: IndexFS, blob: Blob) -> None:
    last = fs.index.find(131071)
    ahead = [fs.index[i].id for i in range(last + 1, last + 1 + fs.readahead)]  # before threads use it
    fs.read("/disk.img", 65536, 0)
    fs.read("/disk.img", 65536, 65536)  # sequential: the chunks after it are fetched in the background
    deadline = time.monotonic() + 10
    while not all(cid in fs.cache for cid in ahead) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(cid in fs.cache for cid in ahead)
    out = bytearray()
    for off in range(0, len(blob.data), 131072):
        out += fs.read("/disk.img", 131072, off)
    assert out == blob.data
    assert fs.cache.held <= fs.cache.max_bytes
    assert fs.readahead > 0
    fs.close()
    assert fs.read("/disk.img", 10, 5) == blob.data[5:15]  # reading still works, prefetching stopped


def test_indexfs_metadata(fs: IndexFS, blob: Blob) -> None:
    assert fs.readdir("/") == [".", "..", "disk.img"]
    root, f = fs.getattr("/"), fs.getattr("/disk.img")
    assert root["st_mode"] == stat.S_IFDIR | 0o555
    assert f["st_mode"] == stat.S_IFREG | 0o444 and f["st_size"] == len(blob.data)
    assert f["st_mtime"] == 1_700_000_000_500_000_000
    assert fs.statfs("/")["f_blocks"] * 4096 >= len(blob.data)
    for path in ("/nope", "/disk.img/x"):
        with pytest.raises(OSError) as exc:
            fs.getattr(path)
        assert exc.value.errno == errno.ENOENT
    assert fs.open("/disk.img", os.O_RDONLY) == 0
    with pytest.raises(OSError) as exc:
        fs.open("/disk.img", os.O_RDWR)
    assert exc.value.errno == errno.EROFS
    for op, args in (("write", ("/disk.img", b"x", 0, 0)), ("truncate", ("/disk.img", 0)),
                     ("create", ("/new", 0o644)), ("unlink", ("/disk.img",)), ("mkdir", ("/d", 0o755))):
        with pytest.raises(OSError) as exc:
            fs(op, *args)
        assert exc.value.errno == errno.EROFS, op
    with pytest.raises(OSError) as exc:
        fs("ioctl", "/disk.img")
    assert exc.value.errno == errno.ENOSYS
    with pytest.raises(ParameterError):
        IndexFS(fs.index, fs.store, "a/b")


def test_indexfs_missing_chunk(
    blob: Blob, tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture
) -> None:
    store_dir = os.path.join(tmp_path, "store")
    shutil.copytree(blob.store, store_dir)
    start, _, cid = blob.items()[5]
    os.unlink(LocalStore(store_dir).chunk_path(cid))
    with LocalStore(store_dir) as store, open_index(blob.index) as index:
        ops = IndexFS(index, store, "disk.img", readahead=0)
        with caplog.at_level(logging.ERROR, logger="casync_store.ops.mount"), pytest.raises(OSError) as exc:
            ops.read("/disk.img", 10, start + 1)
        assert exc.value.errno == errno.EIO
        assert ops.read("/disk.img", start, 0) == blob.data[:start]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and cid.hex() in lines[0] and store_dir in lines[0]


def test_indexfs_damaged_chunk(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    store_dir = os.path.join(tmp_path, "store")
    shutil.copytree(blob.store, store_dir)
    start, _, cid = blob.items()[3]
    other = LocalStore(store_dir).chunk_path(blob.items()[0][2])
    shutil.copyfile(other, LocalStore(store_dir).chunk_path(cid))  # wrong content under this id
    with LocalStore(store_dir) as store, open_index(blob.index) as index, pytest.raises(OSError) as exc:
        IndexFS(index, store, "disk.img").read("/disk.img", 10, start)
    assert exc.value.errno == errno.EIO


def test_indexfs_fetches_each_chunk_once_for_concurrent_readers(blob: Blob) -> None:
    store = SlowCountingStore(blob.store, delay=0.05)
    with open_index(blob.index) as index:
        ops = IndexFS(index, store, "disk.img", readahead=0)
        barrier = threading.Barrier(8)
        results: list[bytes] = []

        def read() -> None:
            barrier.wait()
            results.append(ops.read("/disk.img", 200_000, 50_000))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [blob.data[50_000:250_000]] * 8
    assert store.calls and set(store.calls.values()) == {1}


def test_indexfs_zero_chunks_are_not_fetched(blob: Blob) -> None:
    store = SlowCountingStore(blob.store)
    zero_at = blob.data.index(bytes(PARAMS.max_size))
    with open_index(blob.index) as index:
        ops = IndexFS(index, store, "disk.img", readahead=0)
        first = index[index.find(zero_at + PARAMS.max_size)]
        assert first.size == PARAMS.max_size
        assert ops.read("/disk.img", first.size, first.start) == bytes(first.size)
    assert store.calls == {}


# ---------------------------------------------------------------- ChunkCache


def test_chunk_cache_is_bounded_lru() -> None:
    cache = ChunkCache(10)
    for key in (b"a", b"b", b"c"):
        assert cache.get(key, lambda k=key: k * 4) == key * 4
    assert cache.held == 8 and len(cache) == 2  # "a" made room for "c"
    assert cache.get(b"b", lambda: b"never") == b"bbbb"  # a hit refreshes "b"
    cache.get(b"d", lambda: b"dddd")
    assert b"b" in cache and b"c" not in cache
    assert cache.get(b"big", lambda: b"x" * 11) == b"x" * 11  # returned, not kept
    assert b"big" not in cache and cache.held <= 10
    assert (cache.fetches, cache.hits) == (5, 1)
    with pytest.raises(ParameterError):
        ChunkCache(-1)


def test_chunk_cache_shares_one_failure() -> None:
    cache = ChunkCache(100)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def fail() -> bytes:
        calls.append(1)
        started.set()
        release.wait(5)
        raise StoreError("boom")

    errors: list[BaseException] = []

    def get() -> None:
        try:
            cache.get(b"k", fail)
        except StoreError as exc:
            errors.append(exc)

    first = threading.Thread(target=get)
    first.start()
    started.wait(5)
    waiters = [threading.Thread(target=get) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.3)  # the waiters are blocked on the fetch in flight by now
    release.set()
    for t in [first, *waiters]:
        t.join()
    assert len(errors) == 4 and len(calls) == 1
    assert b"k" not in cache  # a failure is not cached
    assert cache.get(b"k", lambda: b"ok") == b"ok"


# ---------------------------------------------------------------- mount_name


@pytest.mark.parametrize(
    ("location", "name"),
    [
        ("/x/disk.img.caibx", "disk.img"),
        ("blob.caibx", "blob"),
        ("rel/dir/vm.caibx", "vm"),
        ("noext", "noext"),
        ("-", "blob"),
        ("/x/.caibx", "blob"),
        ("http://h:8080/idx/my%20disk.caibx", "my disk"),
        ("s3+http://127.0.0.1:9000/bucket/pre/fs.caibx?lookup=path", "fs"),
        ("sftp://u@h/srv/i/a.b.caibx", "a.b"),
        ("https://h/idx/", "blob"),
        ("https://h/idx/%2F.caibx", "blob"),
        ("file:///tmp/x.caibx", "x"),
    ],
)
def test_mount_name(location: str, name: str) -> None:
    assert mount_name(location) == name


@given(st.text(min_size=1))
def test_mount_name_is_always_one_file_name(location: str) -> None:
    name = mount_name(location)
    assert name and name not in (".", "..") and "/" not in name and "\0" not in name
