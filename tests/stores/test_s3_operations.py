"""S3 stores in make, extract, info, prune and verify, through the library and the command line.

Against a real S3 API server (moto, in a subprocess on 127.0.0.1): make into
an S3 store and index store, extract through a local cache, info, verify
with repair and prune (library); make, extract, info and friends through
``pycasync.main`` with ``?lookup=path`` locations; S3 as the cache of
another store; ``check`` naming a missing bucket; and ``--verbose`` never
logging the key, secret or session token of a request.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from typing import Any

import pytest

from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, StoreError
from casync_store import CachedStore, LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.info import index_info
from casync_store.ops.maintain import prune_store, verify_store
from casync_store.ops.make import make
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.indexio import open_index
from casync_store.stores.s3 import S3Store
from tests.support import CLI
from tests.support.moto import MotoServer
from tests.support.s3_helpers import SMALL, chunk, keys, put, read_bytes, run_cli

pytestmark = pytest.mark.usefixtures("s3_env")  # no AWS settings of the machine (tests/stores/conftest.py)


# --- operations through the library and the command line ------------------------------------------


def test_library_operations(moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any) -> None:
    location = f"s3+{moto_server.endpoint}/{bucket}/ops"
    store = S3Store(location, StoreOptions(concurrency=4))
    index_loc = f"s3+{moto_server.endpoint}/{bucket}/indexes/blob.caibx"
    stats = make(index_loc, blob_file, store, params=SMALL)
    assert stats.chunks_total > 10
    with open_index(index_loc) as index:
        cache = LocalStore(str(tmp_path / "cache"), sync=False)
        out = str(tmp_path / "out")
        extract(index, out, CachedStore(store, cache), concurrency=4)
        assert read_bytes(out) == read_bytes(blob_file)
        cached = set(cache.iter_chunk_ids())  # all but the all-zero chunk (a hole, never fetched)
        assert cached <= set(store.iter_chunk_ids()) and len(cached) >= info_unique(index) - 1
        info = index_info(index, [store])
        assert info.in_store == info.unique and info.size == os.path.getsize(blob_file)
        assert verify_store(store, SHA512_256).invalid == []
        extra = chunk(50)
        store.put_raw(extra[0], extra[2])
        damaged = next(iter(index)).id
        store.put_raw(damaged, b"garbage")
        result = verify_store(store, SHA512_256, repair=True)
        assert result.invalid == [damaged] and not store.has_chunk(damaged)
        assert prune_store(store, [index]) == 1 and not store.has_chunk(extra[0])
        with pytest.raises(ChunkMissing) as exc:  # the damaged chunk was removed
            extract(index, str(tmp_path / "out2"), store)
        assert exc.value.chunk_id == damaged


def info_unique(index: Any) -> int:
    return len({item.id for item in index})


def test_cli_commands(moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any) -> None:
    store = f"s3+{moto_server.endpoint}/{bucket}/cli?lookup=path"
    index = f"s3+{moto_server.endpoint}/{bucket}/cli-indexes/blob.caibx?lookup=path"
    local_index = str(tmp_path / "blob.caibx")
    assert run_cli("make", "-s", store, "-m", "4096:16384:65536", local_index, blob_file) == 0
    assert run_cli("make", "-s", store, "-m", "4096:16384:65536", index, blob_file) == 0
    assert run_cli("extract", "-s", store, "-c", str(tmp_path / "cache"), index, str(tmp_path / "out")) == 0
    assert read_bytes(str(tmp_path / "out")) == read_bytes(blob_file)
    assert run_cli("info", "-s", store, index) == 0
    assert run_cli("verify", "-s", store) == 0
    extra = chunk(60)
    S3Store(store).put_raw(extra[0], extra[2])
    assert run_cli("prune", "-y", "-s", store, index) == 0
    assert not S3Store(store).has_chunk(extra[0])
    for cid, _data, blob in (chunk(61), chunk(62)):
        put(moto_server, bucket, f"cli/{cid.hex()}", blob)
    assert run_cli("upgrade-s3", "-s", store) == 0
    assert S3Store(store).has_chunk(chunk(61)[0]) and not any(
        re.fullmatch(r"cli/[0-9a-f]{64}", k) for k in keys(moto_server, bucket)
    )
    nobucket = f"s3+{moto_server.endpoint}/no-such-bucket-x"
    assert run_cli("extract", "-e", "0", "-s", nobucket, index, str(tmp_path / "o2")) != 0


def test_s3_as_cache(moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any) -> None:
    """An S3 store as the cache (-c): filled on the first extract, the only source on the second."""
    import shutil

    remote_dir = str(tmp_path / "remote")
    index = str(tmp_path / "c.caibx")
    make(index, blob_file, LocalStore(remote_dir, sync=False), params=SMALL)
    cache = S3Store(f"s3+{moto_server.endpoint}/{bucket}/as-cache-{uuid.uuid4().hex[:6]}")
    with open_index(index) as idx:
        extract(idx, str(tmp_path / "out1"), CachedStore(LocalStore(remote_dir), cache), concurrency=4)
        cached, held = set(cache.iter_chunk_ids()), set(LocalStore(remote_dir).iter_chunk_ids())
        assert cached <= held and len(cached) >= len(held) - 1  # all but the all-zero chunk (a hole)
        shutil.rmtree(remote_dir)
        extract(idx, str(tmp_path / "out2"), CachedStore(LocalStore(remote_dir), cache), concurrency=4)
    assert read_bytes(str(tmp_path / "out1")) == read_bytes(str(tmp_path / "out2")) == read_bytes(blob_file)


def test_check_names_a_missing_bucket(
    moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any
) -> None:
    S3Store(f"s3+{moto_server.endpoint}/{bucket}/any/prefix").check()  # the bucket exists: no error
    missing = f"s3+{moto_server.endpoint}/no-such-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match=r"bucket no-such-bucket-\w+ does not exist"):
        S3Store(missing).check()
    index = str(tmp_path / "c.caibx")
    assert run_cli("make", index, blob_file) == 0
    # a report on a missing bucket is an error, not "0 chunks"
    assert run_cli("info", "-s", missing, index) == 1


def test_verbose_cli_logs_no_secrets(
    moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any
) -> None:
    """--verbose shows pycasync's debug lines, never the key, secret or session token of a request."""
    import subprocess

    store = f"s3+{moto_server.endpoint}/{bucket}/verbose"
    secret, token = "Sec" + uuid.uuid4().hex, "Tok" + uuid.uuid4().hex
    env = dict(os.environ, S3_ACCESS_KEY="AKIAVERBOSETEST", S3_SECRET_KEY=secret, S3_SESSION_TOKEN=token,
               HOME=str(tmp_path))
    cli = CLI
    for args in (["make", "-s", store, str(tmp_path / "v.caibx"), blob_file],
                 ["info", "-s", store, str(tmp_path / "v.caibx")]):
        proc = subprocess.run([sys.executable, cli, "-v", *args], env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert b"DEBUG" in proc.stderr or b"INFO" in proc.stderr  # verbose is on
        for leak in (secret, token, "AKIAVERBOSETEST", "Signature="):
            assert leak.encode() not in proc.stderr, leak
