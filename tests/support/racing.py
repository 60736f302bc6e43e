"""Helpers for tests that race real processes: a CLI run, a file truncated meanwhile.

Used by the tests of inputs that change while they are read and of prune
beside writers (issue 10, items 6 and 7).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from casync_store.plumbing.atomic import TEMP_PREFIX

from . import CLI, ROOT

__all__ = ["cli", "cli_env", "write", "wait_open", "truncate_during", "temps"]


def cli(*args: str) -> list[str]:
    return [sys.executable, CLI, *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT
    return env


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def wait_open(pid: int, path: str, timeout: float = 30.0) -> bool:
    """Wait until process ``pid`` has ``path`` open; False if it ended first."""
    target = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return True
                except OSError:
                    continue
        except OSError:
            return False
        time.sleep(0.002)
    return False


def truncate_during(proc: subprocess.Popen[bytes], path: str, delay: float, size: int) -> None:
    """Once ``proc`` has ``path`` open, wait ``delay`` s and have another process truncate it."""
    if wait_open(proc.pid, path):
        time.sleep(delay)
        subprocess.run(["truncate", "-s", str(size), path], check=True)


def temps(directory: str) -> list[str]:
    return [n for _d, _s, names in os.walk(directory) for n in names if n.startswith(TEMP_PREFIX)]
