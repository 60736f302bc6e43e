"""Issue 10, items 1, 2 and 11: the chunk and index servers under hostile clients and flags.

Every test runs real ``pycasync chunk-server`` / ``index-server`` processes
on 127.0.0.1 (port 0; the bound port is read from the verbose log, whose
stderr is drained by a thread so a chatty server never blocks on its pipe):

- the index server serves index files only: ``GET /server.key`` of a key
  sitting in the served directory is a 400 without the key's bytes, and so
  are HEAD and PUT of any non-index name, names through a symbolic link
  leaving the directory, special files and files that are no index; a
  refused PUT writes nothing;
- TLS options that would be ignored without ``--cert``/``--key`` are usage
  errors (exit 2, one line naming the option) and nothing listens;
- slowloris: a few hundred sockets from 127.0.0.2..127.0.0.N trickling a
  request head byte by byte are cut after the head timeout while real GETs
  from 127.0.0.1 keep succeeding with the right bytes, and the per-address
  connection cap closes the extra connections of one address at once while
  another address is still served.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest
from _certs import Certs, make_certs
from test_cli import CLI, ROOT, blob, env, made, ok, one_error, run  # noqa: F401

_SERVING = re.compile(rb"serving .* on 127\.0\.0\.1:(\d+)")


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


@pytest.fixture
def serve(env: dict[str, str]) -> Iterator[Callable[..., ServerProcess]]:  # noqa: F811
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
def index_dir(env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str]  # noqa: F811
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
    os.symlink("server.key", os.path.join(root, "skey.caibx"))  # inside, but not an index
    os.mkdir(os.path.join(root, "dir.caibx"))
    os.mkfifo(os.path.join(root, "fifo.caibx"))
    return root, index_bytes


REFUSED_NAMES = [
    "/server.key", "/server.crt", "/config.json", "/indexes/server.key", "/server.key?x=1.caibx",
    "/%73erver.key", "/server.key%00.caibx", "/..%2fserver.key", "/../indexes/server.key", "/.caibx",
    "/blob.caibx.bak", "/blob.CAIBX", "/out.caibx", "/up.caibx", "/passwd.caibx", "/dir.caibx",
    "/fifo.caibx", "/key.caibx", "/skey.caibx",
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
    # key.caibx (a non-index file under an index name) and skey.caibx (a link inside to server.key)
    # may be replaced by an index: the rename replaces the entry, never writes through it
    names = [t for t in REFUSED_NAMES if t not in ("/key.caibx", "/skey.caibx")]
    for target in [*names, "/new.txt", "/new", "/authorized_keys", "/x.caibx.tmp"]:
        status, body = server.request("PUT", target, body=index_bytes)
        assert status == 400, (target, status, body)
    assert snapshot(base) == before
    for name in ("new.caibx", "skey.caibx"):  # index names are stored
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
    env: dict[str, str], tmp_path: os.PathLike[str], certs: Certs,  # noqa: F811
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
def test_help_says_authorization_without_tls_is_clear_text(env: dict[str, str], command: str) -> None:  # noqa: F811
    text = " ".join(ok(env, command, "--help").stdout.decode().split())
    assert "sent in clear text without --cert/--key" in text
