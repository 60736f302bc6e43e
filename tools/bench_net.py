"""Network cases of ``tools/bench.py``: HTTP clients and load against one ``pycasync chunk-server``.

Both cases start ``pycasync chunk-server -s STORE -l 127.0.0.1:PORT`` (a free
port; ready once it accepts connections) over the store pycasync's ``make``
filled (made untimed if missing), read the server's peak RSS (``VmHWM`` in
``/proc/PID/status``) and stop it with SIGTERM; a server that does not exit 0
fails the row. ``http-extract`` times ``casync --store=http://... extract``
against ``pycasync extract -s http://...`` for the same index; both outputs
must hash like the input, and the check names the server's peak RSS.
``http-load`` runs ``--clients`` threads in this process, each with one
keep-alive connection GETting ``--load-chunks`` chunk files (0: all of them),
starting at different offsets of the store's chunk list. A response counts as
an error unless it is a 200 whose body has the stored file's length (the
first client also compares every body with the stored bytes); any error fails
the row. The row's size column is the bytes served, its time and MB/s are the
whole load's, its RSS is the server's, and its check reads "req/s N, E errors".
The Python client threads share one interpreter, so on a small machine they,
not the server, may be the bottleneck.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Callable, TypeVar

from bench_core import (
    CASES,
    BenchError,
    Case,
    Context,
    Measurement,
    Row,
    Tool,
    _check_outputs,
    _last_line,
    remove,
    skipped,
)

__all__ = [
    "LoadStats",
    "NET_CASES",
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "Child",
    "ChunkServer",
    "case_http_extract",
    "case_http_load",
    "free_port",
    "has_command",
    "peak_rss_kib",
    "pycasync_tool",
    "store_chunks",
]

READY_TIMEOUT = 30.0
"""Seconds a starting chunk-server may take to accept connections."""
STOP_TIMEOUT = 20.0
"""Seconds a chunk-server may take to exit after SIGTERM before it is killed."""


def has_command(tool: Tool, verb: str) -> bool:
    """Whether ``tool`` knows the sub-command ``verb`` (its ``--help`` exits 0)."""
    try:
        res = subprocess.run([*tool.command, verb, "--help"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def pycasync_tool(ctx: Context) -> Tool | None:
    """The pycasync tool of this run, if it is available."""
    return next((t for t in ctx.tools if t.name == "pycasync"), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def peak_rss_kib(pid: int) -> int:
    """A live process's peak RSS (``VmHWM``) in KiB, 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Child:
    """A pycasync child process (server, mount) as a context manager: started and waited
    for on entry (:meth:`ready`), stopped on exit (:meth:`stop`), its stderr kept."""

    #: what the child is, for messages
    what = "child"

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def __enter__(self: _C) -> _C:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not self.ready():
                if self.proc.poll() is not None:
                    raise BenchError(f"{self.what} exited with {self.proc.returncode}: {self.stderr()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.what} was not ready within {READY_TIMEOUT:.0f} s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            self.log.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()

    def ready(self) -> bool:
        """Whether the child is ready for use (polled after it started)."""
        raise NotImplementedError

    def stderr(self) -> str:
        """The child's last stderr line."""
        self.log.seek(0)
        return _last_line(self.log.read()[-4000:].decode("utf-8", "replace"))

    def peak_rss_kib(self) -> int:
        """The child's peak RSS so far (VmHWM) in KiB, 0 if unknown."""
        return peak_rss_kib(self.proc.pid) if self.proc is not None else 0

    def _request_stop(self) -> None:
        """Ask the child to end (SIGTERM; nothing once it has exited)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def _force_stop(self) -> None:
        """End a child that did not stop in time."""
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> int:
        """Stop and wait (forced after :data:`STOP_TIMEOUT`); the exit code (-9: had to be killed)."""
        if self.proc is None or self.exit_code is not None:
            return self.exit_code if self.exit_code is not None else 0
        self.proc.poll()
        self._request_stop()  # also for a child already gone (a mount may outlive its process)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._force_stop()
            self.proc.wait()
        self.exit_code = self.proc.returncode
        return self.exit_code


_C = TypeVar("_C", bound=Child)


class ChunkServer(Child):
    """A ``chunk-server`` child process on 127.0.0.1 (a context manager that stops it)."""

    host = "127.0.0.1"
    what = "chunk-server"

    def __init__(self, tool: Tool, store: str) -> None:
        self.port = free_port(self.host)
        self.url = f"http://{self.host}:{self.port}/"
        super().__init__([*tool.command, "chunk-server", "-s", store, "-l", f"{self.host}:{self.port}"])

    def ready(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def verdict(self, row: Row) -> None:
        """Stop the server and add its peak RSS and a bad exit to ``row``."""
        rss = self.peak_rss_kib()
        code = self.stop()
        row.check += f"; server RSS {rss / 1024:.0f} MiB"
        if code != 0:
            row.ok = False
            row.check += f"; SERVER EXIT {code} after SIGTERM: {self.stderr()}"


def _prerequisite(ctx: Context) -> Tool | str:
    """pycasync with its chunk-server command, or why the case cannot run."""
    tool = pycasync_tool(ctx)
    if tool is None:
        return "pycasync unavailable"
    if not has_command(tool, "chunk-server"):
        return "pycasync has no chunk-server command"
    ctx.ensure_made(tool)
    return tool


def case_http_extract(ctx: Context) -> list[Row]:
    """casync's and pycasync's HTTP clients extract pycasync's index from one chunk-server."""
    tool = _prerequisite(ctx)
    if isinstance(tool, str):
        return skipped("http-extract", tool)
    index = ctx.path(tool, "caibx")
    with ChunkServer(tool, ctx.path(tool, "store")) as server:
        url = server.url

        def argv(c: Context, t: Tool) -> list[str]:
            return t.extract(url, index, c.path(t, "out"))

        def prepare(c: Context, t: Tool) -> None:
            remove(c.path(t, "out"))

        rows = Case("http-extract", "extract over HTTP", prepare, argv, _check_outputs)(ctx)
        server.verdict(rows[0])
    return rows


def store_chunks(store: str) -> list[tuple[str, int, str]]:
    """(URL path, file size, file path) of every chunk file in a local store."""
    out = []
    for dirpath, _dirs, files in os.walk(store):
        for name in files:
            if name.endswith(".cacnk"):
                path = os.path.join(dirpath, name)
                out.append((f"/{name[:4]}/{name}", os.path.getsize(path), path))
    out.sort()
    return out


@dataclass
class LoadStats:
    """What one load client saw."""

    ok: int = 0
    errors: int = 0
    nbytes: int = 0
    first_error: str = ""


def _response_problem(status: int, body: bytes, size: int, path: str | None) -> str | None:
    if status != 200:
        return f"HTTP {status}"
    if len(body) != size:
        return f"{len(body)} bytes instead of {size}"
    if path is not None:
        with open(path, "rb") as f:
            if f.read() != body:
                return "body differs from the stored chunk"
    return None


def _load_client(server: ChunkServer, chunks: list[tuple[str, int, str]], start: int, count: int,
                 verify: bool) -> LoadStats:
    """GET ``count`` chunks from ``start`` on, over one keep-alive connection (reopened on errors)."""
    stats = LoadStats()
    conn: http.client.HTTPConnection | None = None
    for i in range(count):
        url_path, size, path = chunks[(start + i) % len(chunks)]
        try:
            if conn is None:
                conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            conn.request("GET", url_path)
            resp = conn.getresponse()
            body = resp.read()
            problem = _response_problem(resp.status, body, size, path if verify else None)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if conn is not None:
                conn.close()
            conn = None
        if problem:
            stats.errors += 1
            stats.first_error = stats.first_error or f"GET {url_path}: {problem}"
        else:
            stats.ok += 1
            stats.nbytes += len(body)
    if conn is not None:
        conn.close()
    return stats


def case_http_load(ctx: Context) -> list[Row]:
    """``--clients`` concurrent clients GET chunks from one chunk-server: req/s, errors, server RSS."""
    tool = _prerequisite(ctx)
    if isinstance(tool, str):
        return skipped("http-load", tool)
    chunks = store_chunks(ctx.path(tool, "store"))
    if not chunks:
        raise BenchError("pycasync's store holds no chunks")
    per = ctx.load_chunks or len(chunks)
    with ChunkServer(tool, ctx.path(tool, "store")) as server:
        start = time.perf_counter()
        with ThreadPoolExecutor(ctx.clients) as pool:
            futures = [
                pool.submit(_load_client, server, chunks, i * len(chunks) // ctx.clients, per, i == 0)
                for i in range(ctx.clients)
            ]
            results = [f.result() for f in futures]
        wall = time.perf_counter() - start
        total = LoadStats(*(sum(getattr(r, k) for r in results) for k in ("ok", "errors", "nbytes")))
        total.first_error = next((r.first_error for r in results if r.first_error), "")
        row = Row("http-load", total.nbytes, {tool.name: Measurement(wall, server.peak_rss_kib(), 0)})
        requests = total.ok + total.errors
        row.check = f"req/s {requests / wall:.0f}, {total.errors} errors ({ctx.clients} clients x {per} GETs)"
        if total.errors:
            row.ok = False
            row.check += f"; first: {total.first_error}"
        server.verdict(row)
    return [row]


NET_CASES: dict[str, Callable[[Context], list[Row]]] = {
    "http-extract": case_http_extract,
    "http-load": case_http_load,
}
"""The network cases, in run order (registered in :data:`bench_core.CASES`)."""
CASES.update(NET_CASES)
