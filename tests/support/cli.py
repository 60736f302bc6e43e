"""Running pycasync's command line (``python3 pycasync.py``) as a subprocess, as the CLI tests do.

:func:`run` runs one command from the checkout (stdin closed unless
``input`` is given, 120 s timeout); :func:`ok` also asserts exit status 0;
:func:`one_error` checks a failure's status and its single
``pycasync: error: ...`` line. :func:`data`, :func:`read` and
:func:`chunk_files` make and inspect test files. :class:`Server` is a
``pycasync chunk-server`` (or ``index-server``) subprocess on 127.0.0.1
whose port is read from its verbose log. The fixtures built on these (``env``
in ``tests/conftest.py``; ``blob``, ``made``, ``serve`` in
``tests/cli/conftest.py``) pass the environment in.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

from tests.support import CLI, ROOT

__all__ = ["CLI", "ROOT", "run", "ok", "one_error", "data", "read", "chunk_files", "Server"]


def run(env: dict[str, str], *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``pycasync.py ARGS`` in ``env`` from the checkout; the finished process."""
    stdin = subprocess.DEVNULL if input is None else None
    return subprocess.run(
        [sys.executable, CLI, *args],
        env=env,
        input=input,
        stdin=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )


def ok(env: dict[str, str], *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """:func:`run`, asserting exit status 0."""
    proc = run(env, *args, input=input)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def one_error(proc: subprocess.CompletedProcess[bytes], status: int, *fragments: str) -> str:
    """Check the process failed with ``status`` and exactly one error line on stderr."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == status, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pycasync: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def data(n: int, seed: int) -> bytes:
    """``n`` pseudo-random bytes for ``seed``."""
    return random.Random(seed).randbytes(n)


def read(path: str) -> bytes:
    """A file's bytes."""
    with open(path, "rb") as f:
        return f.read()


def chunk_files(store: str) -> list[str]:
    """The sorted names of the ``.cacnk`` files anywhere under ``store``."""
    return sorted(n for _, _, names in os.walk(store) for n in names if n.endswith(".cacnk"))


_SERVING = re.compile(rb"serving .* on (?:https?://)?127\.0\.0\.1:(\d+)")


class Server:
    """A ``pycasync chunk-server`` (or ``index-server``) subprocess.

    ``program`` is how pycasync is run (default: this Python and ``pycasync.py``).
    """

    def __init__(
        self, environ: dict[str, str], *args: str, command: str = "chunk-server",
        program: tuple[str, ...] | None = None,
    ) -> None:
        self.command = command
        argv = [*(program or (sys.executable, CLI)), "-v", command, "-l", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(argv, env=environ, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = self._wait_port()
        self.url = f"http://127.0.0.1:{self.port}/"

    def _wait_port(self) -> int:
        assert self.proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            seen += line
            m = _SERVING.search(line)
            if m:
                return int(m.group(1))
        self.proc.kill()
        raise AssertionError(f"{self.command} did not start: {seen.decode(errors='replace')}")

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            assert self.proc.stderr is not None
            self.proc.stderr.close()
