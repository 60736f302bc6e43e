"""A real S3 API server on 127.0.0.1 for tests: moto in server mode, in a subprocess.

:func:`start_moto` runs ``python -m moto.server -H 127.0.0.1 -p PORT`` on a
free port (retrying another port if it loses a race for it), its output in
``DIRECTORY/moto.log``, and waits until it answers HTTP; the returned
:class:`MotoServer` has the ``endpoint`` URL (``http://127.0.0.1:PORT``)
and :meth:`MotoServer.stop`. moto accepts any access key unless its IAM
checks are switched on (:func:`enable_auth`, for tests that must prove which
credentials were used). :func:`make_bucket` creates a bucket.
:func:`shared_moto` is one server per test process, started on first use and
stopped at exit, so modules that cannot see a fixture (the store contract
suite) share it; the ``moto_server`` fixture (session scope, in
``tests/conftest.py``) yields it. Both skip when moto or boto3 is missing,
but fail under ``CI=true``.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import free_port
from tests.support.sshd import stop_process

__all__ = ["MotoServer", "start_moto", "make_bucket", "require_moto", "shared_moto", "enable_auth", "client",
           "TEST_KEY", "TEST_SECRET"]  # fmt: skip

#: Credentials for a server without IAM checks (any key works; these keep boto3 off the AWS chain).
TEST_KEY = "pycasync-test-key"
TEST_SECRET = "pycasync-test-secret"


@dataclass
class MotoServer:
    """A running moto server."""

    endpoint: str  #: ``http://127.0.0.1:PORT``
    process: subprocess.Popen[bytes]
    log: str  #: the server's output

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self.endpoint.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Stop the server."""
        stop_process(self.process)


def require_moto() -> None:
    """Skip the test without moto (server extra) and boto3; fail under CI=true."""
    missing = [m for m in ("moto", "boto3", "flask", "werkzeug") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"moto[server] and boto3 are needed for S3 tests (missing: {', '.join(missing)})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + ", but CI=true requires them")
        pytest.skip(message)


def _wait(proc: subprocess.Popen[bytes], endpoint: str, log: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"moto exited with status {proc.returncode}: {f.read().strip()[-2000:]}")
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=1):
                return
        except urllib.error.HTTPError:  # it answers
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto did not answer on {endpoint} within {timeout} s")


def start_moto(directory: str) -> MotoServer:
    """Start a moto server on 127.0.0.1 with its log in ``directory``."""
    require_moto()
    log = os.path.join(os.path.abspath(directory), "moto.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "MOTO_"))}
    for attempt in range(3):
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            _wait(proc, endpoint, log)
            return MotoServer(endpoint, proc, log)
        except RuntimeError:
            proc.kill()
            proc.wait()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@functools.cache
def client(endpoint: str, service: str = "s3", key: str = TEST_KEY, secret: str = TEST_SECRET) -> Any:
    """A boto3 client of the server (to plant or inspect objects behind a store's back; cached)."""
    import boto3

    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
    )  # fmt: skip


def make_bucket(endpoint: str, name: str) -> None:
    """Create bucket ``name`` on the server at ``endpoint``."""
    client(endpoint).create_bucket(Bucket=name)


def enable_auth(server: MotoServer, users: int = 1) -> list[tuple[str, str]]:
    """Create IAM users allowed everything, then make the server check every request's signature.

    Returns ``(access key id, secret)`` per user. Irreversible for this server.
    """
    iam = client(server.endpoint, "iam")
    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allow_all]})
    keys = []
    for i in range(users):
        name = f"pycasync-user-{i}"
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=policy)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys.append((key["AccessKeyId"], key["SecretAccessKey"]))
    url = server.endpoint + "/moto-api/reset-auth"
    request = urllib.request.Request(url, data=b"0", method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
    return keys


_shared: list[MotoServer] = []


def _stop_shared(directory: str) -> None:
    for server in _shared:
        server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def shared_moto() -> MotoServer:
    """The moto server of this test process (started on first use, stopped at exit)."""
    require_moto()
    if not _shared or _shared[0].process.poll() is not None:
        directory = tempfile.mkdtemp(prefix="pycasync-moto-")
        _shared[:] = [start_moto(directory)]
        atexit.register(_stop_shared, directory)
    return _shared[0]

