"""Fixtures of the store tests.

- ``server``: a running :class:`tests.support.faulty_http.FaultyServer` (a real
  HTTP server that misbehaves on request), stopped at teardown.
- ``chunk``: ``(id, data, blob)`` of a chunk that ``server`` holds.

For the S3 tests (``test_s3*.py``):

- ``s3_env``: no AWS settings of the machine (credential variables cleared,
  HOME and the AWS config files in the test's tmp_path, no EC2 metadata) and
  any key for the plain moto server; the S3 modules use it for every test
  (``pytestmark = pytest.mark.usefixtures("s3_env")``).
- ``bucket``: the name of a new, empty bucket on the shared moto server.
- ``fast_sends``: ``(method, path, headers)`` of every request the S3 fast
  path sends from now on (none made by boto3).
- ``blob_file``: the path of a 1.1 MB file (random, zeros, random).

(Modules with their own ``server`` or ``chunk`` fixture or function, such as
``test_sftp.py``, override these.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from casync_store.stores import _s3client
from tests.support.faulty_http import FaultyServer
from tests.support.http_store import chunk_path, make_chunk
from tests.support.moto import TEST_KEY, TEST_SECRET, MotoServer, make_bucket
from tests.support.s3_helpers import CRED_VARS

__all__: list[str] = []


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    with FaultyServer() as srv:
        yield srv


@pytest.fixture
def chunk(server: FaultyServer) -> tuple[bytes, bytes, bytes]:
    """A chunk the server holds."""
    cid, data, blob = make_chunk(1)
    server.chunks[chunk_path(cid)] = blob
    return cid, data, blob


# --- the S3 tests -----------------------------------------------------------------------------------


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No AWS settings of the machine; any key for the plain moto server."""
    for name in CRED_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("S3_ACCESS_KEY", TEST_KEY)
    monkeypatch.setenv("S3_SECRET_KEY", TEST_SECRET)


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    name = f"pycasync-{uuid.uuid4().hex[:12]}"
    make_bucket(moto_server.endpoint, name)
    return name


@pytest.fixture
def fast_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, headers) of every request the S3 fast path sends, and none made by boto3."""
    sent: list[tuple[str, str, dict[str, str]]] = []
    real_send = _s3client.FastPath._send

    def send(self: Any, conn: Any, method: str, path: str, body: Any) -> Any:
        conn_request = conn.request

        def request(method: str, url: str, body: Any = None, headers: Any = None, **kw: Any) -> Any:
            sent.append((method, url, dict(headers or {})))
            return conn_request(method, url, body=body, headers=headers, **kw)

        conn.request = request
        try:
            return real_send(self, conn, method, path, body)
        finally:
            conn.request = conn_request

    monkeypatch.setattr(_s3client.FastPath, "_send", send)
    return sent


@pytest.fixture
def blob_file(tmp_path: Any) -> str:
    import random

    data = random.Random(5).randbytes(600_000) + bytes(200_000) + random.Random(6).randbytes(300_000)
    path = str(tmp_path / "blob")
    with open(path, "wb") as f:
        f.write(data)
    return path
