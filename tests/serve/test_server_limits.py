"""Issue 10, items 1, 2 and 11: the chunk and index servers under hostile clients and flags.

Every test runs real ``pycasync chunk-server`` / ``index-server`` processes
on 127.0.0.1 (port 0; the bound port is read from the verbose log, whose
stderr is drained by a thread so a chatty server never blocks on its pipe):

- the index server serves index files only: ``GET /server.key`` of a key
  sitting in the served directory is a 400 without the key's bytes, and so
  are HEAD and PUT of any non-index name, names through a symbolic link
  leaving the directory and special files; a refused PUT writes nothing;
- TLS options that would be ignored without ``--cert``/``--key`` are usage
  errors (exit 2, one line naming the option) and nothing listens;
- slowloris: 300 sockets from 127.0.0.2..127.0.0.31 trickling a request
  head a byte every 0.5 s (replaced as soon as they are cut, for 8 s) are cut
  at the head timeout while real GETs from 127.0.0.1 keep succeeding with the
  right bytes, also with fewer slots than attackers (eviction); the
  per-address cap answers the extra connections of one address 503 at once
  while another address is still served; an idle keep-alive connection and
  a trickled second request are bounded too.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from tests.support import CLI, ROOT
from tests.support.certs import Certs, make_certs
from tests.support.cli import ok, one_error

_SERVING = re.compile(rb"serving .* on (?:https?://)?127\.0\.0\.1:(\d+)")


class ServerProcess:
    """A ``pycasync -v chunk-server``/``index-server`` on 127.0.0.1:0, its stderr drained."""

    def __init__(self, environ: dict[str, str], command: str, *args: str) -> None:
        argv = [sys.executable, CLI, "-v", command, "-l", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(argv, env=environ, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[bytes] = []
        found = threading.Event()
        self.port = 0

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                m = _SERVING.search(line)
                if m and not self.port:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        self._drainer = threading.Thread(target=drain, daemon=True)
        self._drainer.start()
        found.wait(30)
        if not self.port:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{command} did not start: {b''.join(self.lines).decode(errors='replace')}")

    def request(self, method: str, target: str, body: bytes | None = None,
                source: str = "127.0.0.1") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20, source_address=(source, 0))
        try:
            conn.request(method, target, body=body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._drainer.join(5)
            assert self.proc.stderr is not None
            self.proc.stderr.close()  # no descriptor left for the garbage collector to close later


@pytest.fixture
def serve(env: dict[str, str]) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(command: str, *args: str) -> ServerProcess:
        server = ServerProcess(env, command, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def snapshot(directory: str) -> dict[str, str]:
    """Every entry under ``directory`` (links as their target) and a hash of each file."""
    found = {}
    for base, dirs, files in os.walk(directory):
        for name in files + dirs:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, directory)
            if os.path.islink(path):
                found[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                found[rel] = "special"
    return found


# --------------------------------------------------------------------------- item 1: index files only

SECRET = b"-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def index_dir(env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]
              ) -> tuple[str, bytes]:
    """A served directory holding a real index, the server's key and other hostile entries."""
    _, index, _ = made
    with open(index, "rb") as f:
        index_bytes = f.read()
    base = str(tmp_path)
    root = os.path.join(base, "indexes")
    os.mkdir(root)
    outside = os.path.join(base, "outside.caibx")  # a real index, but outside the served directory
    with open(outside, "wb") as f:
        f.write(index_bytes)
    files = {"blob.caibx": index_bytes, "tree.caidx": index_bytes, "server.key": SECRET,
             "server.crt": SECRET, "config.json": SECRET, "key.caibx": SECRET}
    for name, content in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    os.symlink("blob.caibx", os.path.join(root, "latest.caibx"))  # inside: served
    os.symlink(outside, os.path.join(root, "out.caibx"))
    os.symlink("../outside.caibx", os.path.join(root, "up.caibx"))
    os.symlink("/etc/passwd", os.path.join(root, "passwd.caibx"))
    os.symlink("server.key", os.path.join(root, "skey.caibx"))  # the owner's link: an index name
    os.mkdir(os.path.join(root, "dir.caibx"))
    os.mkfifo(os.path.join(root, "fifo.caibx"))
    return root, index_bytes


REFUSED_NAMES = [
    "/server.key", "/server.crt", "/config.json", "/indexes/server.key", "/server.key?x=1.caibx",
    "/%73erver.key", "/server.key%00.caibx", "/..%2fserver.key", "/../indexes/server.key", "/.caibx",
    "/blob.caibx.bak", "/blob.CAIBX", "/out.caibx", "/up.caibx", "/passwd.caibx", "/dir.caibx",
    "/fifo.caibx",
]


def test_index_server_serves_only_index_files(
    index_dir: tuple[str, bytes], serve: Callable[..., ServerProcess]
) -> None:
    root, index_bytes = index_dir
    server = serve("index-server", "-s", root)
    assert server.request("GET", "/blob.caibx") == (200, index_bytes)
    assert server.request("GET", "/tree.caidx") == (200, index_bytes)
    assert server.request("GET", "/latest.caibx") == (200, index_bytes)  # a link inside the store
    assert server.request("HEAD", "/blob.caibx")[0] == 200
    assert server.request("GET", "/missing.caibx")[0] == 404
    for target in REFUSED_NAMES:
        for method in ("GET", "HEAD"):
            status, body = server.request(method, target)
            assert status == 400, (method, target, status)
            assert b"SECRET" not in body and b"root:" not in body
    assert server.proc.poll() is None  # the FIFO did not hang or kill it
    assert server.request("GET", "/blob.caibx") == (200, index_bytes)


def test_index_server_put_of_a_non_index_name_writes_nothing(
    index_dir: tuple[str, bytes], serve: Callable[..., ServerProcess]
) -> None:
    root, index_bytes = index_dir
    base = os.path.dirname(root)
    server = serve("index-server", "-w", "-s", root)
    before = snapshot(base)
    for target in [*REFUSED_NAMES, "/new.txt", "/new", "/authorized_keys", "/x.caibx.tmp"]:
        status, body = server.request("PUT", target, body=index_bytes)
        assert status == 400, (target, status, body)
    assert snapshot(base) == before
    # index names are stored; skey.caibx, a link inside to server.key, is replaced, not written through
    for name in ("new.caibx", "skey.caibx"):
        assert server.request("PUT", "/" + name, body=index_bytes)[0] == 200
        assert not os.path.islink(os.path.join(root, name))
        with open(os.path.join(root, name), "rb") as f:
            assert f.read() == index_bytes
    with open(os.path.join(root, "server.key"), "rb") as f:
        assert f.read() == SECRET


# --------------------------------------------------------------------------- item 2: no silent downgrade


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DOWNGRADES = [
    (["--client-ca", "{ca}"], "--client-ca"),
    (["--mutual-tls"], "--mutual-tls"),
    (["--mutual-tls", "--client-ca", "{ca}"], "--mutual-tls"),
    (["--cert", "{cert}"], "--cert and --key"),
    (["--key", "{key}"], "--cert and --key"),
    (["--cert", "{cert}", "--mutual-tls", "--client-ca", "{ca}"], "--cert and --key"),
    (["--key", "{key}", "--client-ca", "{ca}"], "--cert and --key"),
    (["--cert", "{cert}", "--key", "{key}", "--mutual-tls"], "--mutual-tls needs --client-ca"),
    (["--cert", "{cert}", "--key", "{key}", "--client-ca", "{ca}"], "--client-ca needs --mutual-tls"),
    (["--cert", "", "--key", ""], "--cert"),
    (["--cert", "{cert}", "--key", "{key}", "--mutual-tls", "--client-ca", ""], "--client-ca"),
    (["--authorization", ""], "--authorization"),
    (["--authorization", " "], "--authorization"),
]


@pytest.mark.parametrize("command", ["chunk-server", "index-server"])
@pytest.mark.parametrize("flags, fragment", DOWNGRADES)
def test_tls_options_without_tls_are_usage_errors(
    env: dict[str, str], tmp_path: os.PathLike[str], certs: Certs,
    command: str, flags: list[str], fragment: str,
) -> None:
    store = os.path.join(tmp_path, "store")
    os.mkdir(store)
    files = {"ca": certs.ca_cert, "cert": certs.server_cert, "key": certs.server_key}
    port = free_port()
    argv = [sys.executable, CLI, command, "-s", store, "-l", f"127.0.0.1:{port}",
            *(f.format(**files) for f in flags)]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    answered = False
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            answered = answered or s.connect_ex(("127.0.0.1", port)) == 0
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate(timeout=30)
    assert not answered, "the server listened"
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    line = one_error(result, 2, fragment)
    assert "plain" not in out.decode() and out == b""
    assert line.count("pycasync: error:") == 1


@pytest.mark.parametrize("command", ["chunk-server", "index-server"])
def test_help_says_authorization_without_tls_is_clear_text(env: dict[str, str], command: str) -> None:
    text = " ".join(ok(env, command, "--help").stdout.decode().split())
    assert "sent in clear text without --cert/--key" in text


# --------------------------------------------------------------------------- item 11: slowloris

HEAD_TIMEOUT = 2.0
TRICKLE = 0.5  # seconds between two bytes of one trickling head
TRICKLE_HEAD = b"GET / HTTP/1.1\r\nHost: victim\r\nX-Slow: " + b"a" * 10_000


def store_chunks(store: str) -> list[tuple[str, bytes]]:
    """(URL path, stored bytes) of every chunk file in a local store."""
    found = []
    for base, _dirs, names in os.walk(store):
        for name in sorted(names):
            if name.endswith(".cacnk"):
                with open(os.path.join(base, name), "rb") as f:
                    found.append((f"/{name[:4]}/{name}", f.read()))
    return found


class Trickler:
    """``count`` sockets from 127.0.0.2.. (``per_address`` each), every one sending its head a byte
    every TRICKLE s; each dropped one is replaced while the attack lasts. Records every lifetime."""

    def __init__(self, port: int, count: int, per_address: int) -> None:
        self.port = port
        self.sources = [f"127.0.0.{2 + i // per_address}" for i in range(count)]
        self.selector = selectors.DefaultSelector()
        self.lifetimes: list[float] = []
        self.opened = 0
        self.peak = 0
        self.answered = 0  # connections that got any byte back (none should: they never finish a head)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, source: str) -> None:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        self.selector.register(sock, selectors.EVENT_READ, [source, time.monotonic(), 0])
        self.opened += 1

    def _close(self, key: selectors.SelectorKey) -> None:
        self.selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]

    def _run(self) -> None:
        for source in self.sources:
            self._open(source)
        next_tick = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TRICKLE
                for key in list(self.selector.get_map().values()):
                    state = key.data
                    with contextlib.suppress(OSError):  # not connected yet, or already reset
                        state[2] += key.fileobj.send(TRICKLE_HEAD[state[2]:state[2] + 1])  # type: ignore[union-attr]
            self.peak = max(self.peak, len(self.selector.get_map()))
            for key, _ in self.selector.select(max(0.0, min(0.05, next_tick - time.monotonic()))):
                try:
                    data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.answered += 1
                    continue
                source, since, _ = key.data
                self.lifetimes.append(time.monotonic() - since)
                self._close(key)
                self._open(source)  # the attack goes on
        for key in list(self.selector.get_map().values()):
            self._close(key)
        self.selector.close()

    def __enter__(self) -> Trickler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def real_gets(server: ServerProcess, chunks: list[tuple[str, bytes]], until: float, workers: int = 4
              ) -> tuple[int, list[str], float]:
    """GETs of every chunk from 127.0.0.1 until ``until``: (count, errors, max latency in s)."""
    count, errors, latencies = [0], [], [0.0]
    lock = threading.Lock()

    def worker(n: int) -> None:
        i = n
        conn = None
        while time.monotonic() < until:
            path, data = chunks[i % len(chunks)]
            i += workers
            started = time.monotonic()
            try:
                if conn is None or i % 32 < workers:  # keep-alive mostly, a fresh connection in 8
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or body != data:
                    raise AssertionError(f"{path}: status {response.status}, {len(body)} bytes")
            except Exception as exc:  # counted and reported below
                with lock:
                    errors.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
                continue
            with lock:
                count[0] += 1
                latencies[0] = max(latencies[0], time.monotonic() - started)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(until - time.monotonic() + 30)
    return count[0], errors, latencies[0]


@pytest.mark.parametrize("slots", [None, 128], ids=["512-slots", "128-slots-evicting"])
def test_slowloris_does_not_starve_real_clients(
    made: tuple[str, str, bytes], serve: Callable[..., ServerProcess], slots: int | None,
) -> None:
    """300 trickling sockets from 30 addresses, sustained for 8 s, with real GETs alongside.

    With 128 slots the attack holds more connections than the server has: the
    oldest head-waiting ones are evicted so real clients are still served.
    """
    store = made[0]
    chunks = store_chunks(store)
    assert chunks
    extra = ["--max-connections", str(slots)] if slots else []
    server = serve("chunk-server", "-s", store, "--head-timeout", f"{HEAD_TIMEOUT}s", *extra)
    with Trickler(server.port, count=300, per_address=10) as attack:
        time.sleep(1.0)  # the attack is in place before the first real GET
        count, errors, latency = real_gets(server, chunks, until=time.monotonic() + 7.0)
    cut = attack.lifetimes
    print(f"\nslowloris ({slots or 512} slots): {attack.opened} trickling sockets opened, peak {attack.peak} "
          f"at once, {len(cut)} cut after {min(cut, default=0):.2f}..{max(cut, default=0):.2f} s; "
          f"{count} real GETs, {len(errors)} errors, max GET latency {latency * 1000:.0f} ms")
    assert errors == [], errors[:5]
    assert count >= 50
    assert attack.peak >= 290 and attack.answered == 0
    assert len(cut) >= 300  # every one of the first wave was cut, and more
    assert max(cut) < HEAD_TIMEOUT + 2.5, "a trickling head outlived the head timeout"
    if slots is None:  # cut by the deadline, not earlier: trickling did not extend it either
        assert min(cut) > HEAD_TIMEOUT - 0.3
    else:
        assert min(cut) > 0.8  # evicted only after waiting a second
    assert latency < 5.0
    assert server.proc.poll() is None
    log = b"".join(server.lines)
    assert b"connection slots were taken" in log if slots else b"sent no complete request head in time" in log


def test_per_address_cap_closes_extra_connections_at_once(
    made: tuple[str, str, bytes], serve: Callable[..., ServerProcess],
) -> None:
    store = made[0]
    path, data = store_chunks(store)[0]
    cap = 8
    server = serve("chunk-server", "-s", store, "--max-client-connections", str(cap))
    held = []
    for _ in range(cap):  # silent connections from one address: all within its cap
        held.append(socket.create_connection(("127.0.0.1", server.port), 5, ("127.0.0.5", 0)))
    time.sleep(0.3)  # the server has accepted and counted them
    refused = []
    for _ in range(5):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                      source_address=("127.0.0.5", 0)) as sock:
            try:
                answer = sock.recv(4096)
            except ConnectionResetError:
                answer = b""
            refused.append((time.monotonic() - started, answer))
    for elapsed, answer in refused:
        assert elapsed < 1.0
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 ")
    assert any(answer.startswith(b"HTTP/1.1 503 ") for _, answer in refused)
    # another address, and 127.0.0.1, are served meanwhile; the held connections are still open
    assert server.request("GET", path, source="127.0.0.6") == (200, data)
    assert server.request("GET", path) == (200, data)
    for sock in held:
        sock.settimeout(0.05)
        with pytest.raises(socket.timeout):
            sock.recv(1)
    # a held connection is a working one, and closing one makes room for a new one
    held[0].settimeout(5)
    held[0].sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert held[0].recv(100).startswith(b"HTTP/1.1 200 ")
    held.pop().close()
    time.sleep(0.3)
    assert server.request("GET", path, source="127.0.0.5") == (200, data)
    for sock in held:
        sock.close()
    assert b"over the limit of 8 per client address" in b"".join(server.lines)


def _closed_after(sock: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (trickling ``trickle`` a byte every TRICKLE s)."""
    started = time.monotonic()
    sock.settimeout(TRICKLE)
    for i in range(100):
        if i < len(trickle):
            with contextlib.suppress(OSError):
                sock.send(trickle[i:i + 1])
        try:
            if sock.recv(4096) == b"":
                break
        except socket.timeout:
            continue
        except OSError:
            break
    return time.monotonic() - started


def test_idle_keep_alive_and_next_head_are_bounded(
    made: tuple[str, str, bytes], serve: Callable[..., ServerProcess],
) -> None:
    store = made[0]
    path, _ = store_chunks(store)[0]
    server = serve("chunk-server", "-s", store, "--idle-timeout", "1s", "--head-timeout", "2s")
    head = f"HEAD {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    for trickle, low, high in ((b"", 0.7, 2.5), (TRICKLE_HEAD, 1.7, 3.5)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 ")
            # idle: closed after --idle-timeout; trickling the next head: --head-timeout after its first byte
            elapsed = _closed_after(sock, trickle)
            assert low < elapsed < high, (trickle[:4], elapsed)
