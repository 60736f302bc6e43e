"""Helpers of the S3 store tests in tests/stores (no tests here).

:data:`SMALL` (chunker parameters of the make tests), :data:`FAST` (store
options without retries), :data:`CRED_VARS` (the environment variables the
``s3_env`` fixture clears); :func:`chunk`: ``(id, data, blob)`` of a
deterministic gzip chunk (the same bytes for a seed); :func:`keys` and
:func:`put`: list and write a bucket's objects with boto3;
:func:`boto_object_calls`: the single-object calls boto3 makes for a store
from now on; :func:`read_bytes` a file's content; :func:`run_cli` pycasync's
command line in this process. The fixtures (``s3_env``, ``bucket``,
``fast_sends``, ``blob_file``) are in ``tests/stores/conftest.py``.
"""

from __future__ import annotations

import functools

import pycasync
from casync_format import chunk as chunk_codec
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.s3 import S3IndexStore, S3Store
from tests.support.moto import MotoServer, client

__all__ = ["SMALL", "FAST", "CRED_VARS", "chunk", "keys", "put", "boto_object_calls", "read_bytes", "run_cli"]

SMALL = ChunkerParams(4096, 16384, 65536)
FAST = StoreOptions(error_retry=0)
CRED_VARS = (
    "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN", "S3_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
)  # fmt: skip


@functools.cache  # the same bytes for a seed: the gzip header holds the time
def chunk(seed: int, size: int = 3000) -> tuple[bytes, bytes, bytes]:
    data = seed.to_bytes(4, "little") * (size // 4)
    return SHA512_256(data), data, chunk_codec.encode(data, "gzip")


def keys(server: MotoServer, bucket: str) -> list[str]:
    pages = client(server.endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def put(server: MotoServer, bucket: str, key: str, body: bytes = b"x") -> None:
    client(server.endpoint).put_object(Bucket=bucket, Key=key, Body=body)


def boto_object_calls(store: S3Store | S3IndexStore) -> list[str]:
    """The single-object operations boto3 makes from now on (the fast path's fallbacks)."""
    calls: list[str] = []
    for op in ("GetObject", "HeadObject", "PutObject"):
        store._s3.client.meta.events.register(f"before-call.s3.{op}", lambda op=op, **kw: calls.append(op))
    return calls


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def run_cli(*args: str) -> int:
    return pycasync.main(list(args))
