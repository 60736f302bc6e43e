"""S3 credentials and the S3 fast path (chunk requests signed by ``casync_store.stores._sigv4``).

Credentials are proven on a second moto server with its IAM checks on: a
request signed with the wrong key fails, so a store that works used the
credentials the test expected (environment over config, exact config key,
glob key, shared credentials file and profile, AWS chain, anonymous, the
command line's ``--config``), and no secret appears in any message. The fast
path (chunk GET/HEAD/PUT) is proven three ways: its signatures equal
botocore's ``S3SigV4Auth`` ones for awkward keys, tokens, methods, regions
and times (hypothesis); on the signature-checking server, chunk requests go
through it and never through boto3, a wrong secret is refused there, and
refreshed credentials are used at once; on a fault-injecting server, answers
it leaves to boto3 (redirects, 400, other statuses) are served by boto3.
"""

from __future__ import annotations

import datetime
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.errors import ChunkMissing, StoreError
from casync_store.plumbing.config import load_config
from casync_store.stores.s3 import S3Store
from tests.support.moto import TEST_KEY, MotoServer, enable_auth, make_bucket, start_moto
from tests.support.s3_helpers import FAST, boto_object_calls, chunk, read_bytes, run_cli

pytestmark = pytest.mark.usefixtures("s3_env")  # no AWS settings of the machine (tests/stores/conftest.py)


# --- credentials ----------------------------------------------------------------------------------


class AuthServer:
    """A moto server that checks signatures, two IAM users' keys and a bucket."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.bucket = "pycasync-auth"
        make_bucket(server.endpoint, self.bucket)
        (self.key_a, self.secret_a), (self.key_b, self.secret_b) = enable_auth(server, 2)
        # moto's signature check fails on a "/" in the list prefix: use the bucket root.
        self.location = f"s3+{server.endpoint}/{self.bucket}"
        self.host = server.endpoint  # the s3-credentials key: scheme://host:port


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    server = start_moto(str(tmp_path_factory.mktemp("moto-auth")))
    try:
        yield AuthServer(server)
    finally:
        server.stop()


def _config(tmp_path: Any, creds: dict[str, dict[str, str]]) -> Any:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"s3-credentials": creds}))
    return load_config(str(path))


def _profile(name: str, key: str, secret: str) -> str:
    return f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n\n"


def _works(store: S3Store) -> bool:
    cid, _data, blob = chunk(99)
    try:
        store.put_raw(cid, blob)
        return store.get_raw(cid) == blob and cid in set(store.iter_chunk_ids())
    except StoreError as exc:
        assert "access denied" in str(exc) and str(store) in str(exc)
        return False


def _store(auth: AuthServer, config: Any = None) -> S3Store:
    options = config.store_options_for(auth.location).replace(error_retry=0) if config else FAST
    return S3Store(auth.location, options)


def test_credentials_environment_over_config(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _config(tmp_path, {auth.host: {"access-key": auth.key_b, "secret-key": auth.secret_b}})
    bad = _config(tmp_path, {auth.host: {"access-key": auth.key_b, "secret-key": "wrong"}})
    monkeypatch.setenv("S3_ACCESS_KEY", auth.key_a)
    monkeypatch.setenv("S3_SECRET_KEY", auth.secret_a)
    store = _store(auth, bad)
    assert _works(store) and store.credentials_source == "environment S3_ACCESS_KEY"
    monkeypatch.setenv("S3_SECRET_KEY", "wrong")
    assert not _works(_store(auth, good)), "the environment must win over the config"
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth.key_a)  # desync also takes AWS_* before the config
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth.secret_a)
    store = _store(auth, bad)
    assert _works(store) and store.credentials_source == "environment AWS_ACCESS_KEY_ID"


def test_credentials_session_token_and_region(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_SESSION_TOKEN", "the-token")
    monkeypatch.setenv("S3_REGION", "eu-west-3")
    store = _store(auth)
    resolved = store._s3.client._request_signer._credentials.get_frozen_credentials()
    assert (resolved.access_key, resolved.token) == (TEST_KEY, "the-token")
    assert store._s3.client.meta.region_name == "eu-west-3"


@pytest.mark.parametrize("key", ["exact", "http://127.0.0.1:*", "http://*"])
def test_credentials_from_config(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    entry_key = auth.host if key == "exact" else key
    others = {"https://127.0.0.1:1": {"access-key": "other", "secret-key": "other"}}
    config = _config(tmp_path, {entry_key: {"access-key": auth.key_b, "secret-key": auth.secret_b,
                                            "aws-region": "ap-south-1"}, **others})  # fmt: skip
    store = _store(auth, config)
    assert _works(store) and store.credentials_source == "config access-key"
    assert store._s3.client.meta.region_name == "ap-south-1"
    wrong = _config(tmp_path, {entry_key: {"access-key": auth.key_b, "secret-key": "s3cr3t-wrong"}})
    with pytest.raises(StoreError) as exc:
        _store(auth, wrong).put_raw(*chunk(98)[::2])
    assert "access denied" in str(exc.value) and "s3cr3t-wrong" not in str(exc.value)
    options = wrong.store_options_for(auth.location)
    assert "s3cr3t-wrong" not in repr(options) and "s3cr3t-wrong" not in repr(options.s3_credentials)


def test_credentials_file_and_profile(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    creds = tmp_path / "aws-credentials"
    creds.write_text(_profile("default", auth.key_a, "wrong") + _profile("second", auth.key_b, auth.secret_b))
    entry = {"aws-credentials-file": str(creds), "aws-profile": "second"}
    store = _store(auth, _config(tmp_path, {auth.host: entry}))
    assert _works(store) and store.credentials_source == "config aws-credentials-file, profile second"
    assert not _works(_store(auth, _config(tmp_path, {auth.host: {"aws-credentials-file": str(creds)}})))
    with pytest.raises(StoreError, match="has no profile 'third'") as exc:
        _store(auth, _config(tmp_path, {auth.host: {**entry, "aws-profile": "third"}}))
    assert auth.secret_b not in str(exc.value)
    with pytest.raises(StoreError, match="cannot read AWS credentials file"):
        _store(auth, _config(tmp_path, {auth.host: {"aws-credentials-file": str(tmp_path / "nope")}}))


def test_credentials_aws_chain_and_anonymous(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    creds = tmp_path / "chain-credentials"
    creds.write_text(_profile("default", auth.key_a, auth.secret_a))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    config = _config(tmp_path, {"http://elsewhere:1": {"access-key": "x", "secret-key": "y"}})
    store = _store(auth, config)
    assert _works(store) and store.credentials_source == "AWS default credential chain"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = _store(auth, config)
    assert store.credentials_source.startswith("none found") and not _works(store)


def test_credentials_cli(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, blob_file: str
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"s3-credentials": {"http://127.0.0.1:*": {
        "access-key": auth.key_a, "secret-key": auth.secret_a}}}))  # fmt: skip
    index = str(tmp_path / "b.caibx")
    assert run_cli("--config", str(conf), "make", "-s", auth.location, index, blob_file) == 0
    out = str(tmp_path / "out")
    assert run_cli("--config", str(conf), "extract", "-s", auth.location, index, out) == 0
    assert read_bytes(out) == read_bytes(blob_file)
    conf.write_text(json.dumps({"s3-credentials": {"http://127.0.0.1:*": {
        "access-key": auth.key_a, "secret-key": "nope"}}}))  # fmt: skip
    assert run_cli("--config", str(conf), "extract", "-e", "0", "-s", auth.location, index, out + "2") != 0



# --- the fast path: SigV4 signing, fallback to boto3 ------------------------------------------------

_KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_AWKWARD = st.one_of(_KEY_TEXT, st.lists(st.sampled_from(
    [*" +%~!*'()&=:@,$;[]^`{}|\\\"<>#?/.ä€\t", "a/../b", "//", "%41", "%2F", "../"]), min_size=1,
    max_size=12).map("".join))  # fmt: skip


@given(key=_AWKWARD, method=st.sampled_from(["GET", "HEAD", "PUT"]), body=st.binary(max_size=64),
       token=st.sampled_from([None, "", "FwoGZXIvYXdzE+/tok=="]),
       region=st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2"]),
       host=st.sampled_from(["127.0.0.1:9000", "bucket.s3.example.com", "[::1]:8080"]),
       when=st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2099, 12, 31)))  # fmt: skip
def test_sigv4_matches_botocore(
    key: str, method: str, body: bytes, token: str | None, region: str, host: str, when: datetime.datetime
) -> None:
    """Our signature of a request is botocore's S3SigV4Auth signature of the same request, to the byte."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    from casync_store.stores import _sigv4

    when = when.replace(microsecond=0)
    path = "/bucket/" + _sigv4.quote_key("pre fix/" + key)
    put = method == "PUT"
    headers = {"Content-Type": "application/octet-stream"} if put else {}
    payload = _sigv4.payload_hash(body) if put else _sigv4.UNSIGNED_PAYLOAD
    ours = _sigv4.sign(method, host, path, headers, payload, ("AKIDEXAMPLE", "se/cr+et", token), region,
                       now=when)  # fmt: skip
    request = AWSRequest(method=method, url=f"https://{host}{path}", data=body if put else None,
                         headers=dict(headers))  # fmt: skip
    request.context["client_config"] = Config(s3={"payload_signing_enabled": put})
    signer = botocore.auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", "se/cr+et", token), "s3", region)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        signer.add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    for name in ("X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"):
        assert ours.get(name) == request.headers.get(name)


def test_fast_path_signs_for_real(
    auth: AuthServer, monkeypatch: pytest.MonkeyPatch, fast_sends: list[tuple[str, str, dict[str, str]]]
) -> None:
    """Against a server that checks signatures, chunks go through the fast path only, with awkward
    prefixes too; a wrong secret is refused there; refreshed credentials are used at once."""
    from botocore.credentials import RefreshableCredentials

    monkeypatch.setenv("S3_ACCESS_KEY", auth.key_a)
    monkeypatch.setenv("S3_SECRET_KEY", auth.secret_a)
    # moto's own check refuses botocore's signatures too for most other reserved characters and non-ASCII
    # (test_sigv4_matches_botocore covers those): spaces, "~" and an empty segment pass it.
    prefix = urllib.parse.quote("we ird~pre fix/sub dir//x")
    for location in (auth.location, f"{auth.location}/{prefix}?lookup=path"):
        store = S3Store(location, FAST)
        boto, before = boto_object_calls(store), len(fast_sends)
        cid, _data, blob = chunk(101)
        assert not store.has_chunk(cid)
        store.put_raw(cid, blob)
        assert store.has_chunk(cid) and store.get_raw(cid) == blob
        with pytest.raises(ChunkMissing):
            store.get_raw(chunk(102)[0])
        assert len(fast_sends) - before == 5 and boto == []
    assert all(h["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=") for _m, _u, h in fast_sends)
    monkeypatch.setenv("S3_SECRET_KEY", "wrong-secret")
    store = S3Store(auth.location, FAST)
    boto = boto_object_calls(store)
    for call in (lambda: store.get_raw(cid), lambda: store.has_chunk(cid), lambda: store.put_raw(cid, blob)):
        with pytest.raises(StoreError) as exc:
            call()
        assert "access denied" in str(exc.value) and "wrong-secret" not in str(exc.value)
    assert boto == []
    keys = {"secret": "wrong-secret"}  # refreshable credentials, asked again for every request

    def refresh() -> dict[str, Any]:  # expiring within botocore's mandatory refresh time: asked every time
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
        return {"access_key": auth.key_a, "secret_key": keys["secret"], "token": None,
                "expiry_time": soon.isoformat()}  # fmt: skip

    store._s3.fast._credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    with pytest.raises(StoreError, match="access denied"):
        store.get_raw(cid)
    keys["secret"] = auth.secret_a
    assert store.get_raw(cid) == blob and boto == []


def test_fast_path_falls_back_to_boto3(
    monkeypatch: pytest.MonkeyPatch, fast_sends: list[tuple[str, str, dict[str, str]]]
) -> None:
    """Answers the fast path does not handle go to boto3: a redirect or 400 (wrong region or endpoint)
    for good, any other status for that request only; anonymous requests carry no signature."""
    from tests.support.faulty_http import FaultyServer, Status

    cid, _data, blob = chunk(110)
    path = f"/bkt/p/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    moved = b"<Error><Code>PermanentRedirect</Code><Endpoint>elsewhere</Endpoint></Error>"
    region = b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-3</Region></Error>"

    def by_boto(server: FaultyServer) -> int:
        return sum("Botocore/" in r.headers.get("User-Agent", "") for r in server.requests if r.path == path)

    with FaultyServer() as server:
        server.chunks[path] = blob
        for status in (Status(409, b"<Error><Code>OperationAborted</Code></Error>"), Status(307)):
            store = S3Store(f"s3+{server.url}/bkt/p", FAST)
            server.plan(path, status)
            assert store.get_raw(cid) == blob and store._s3.fast is not None
            assert store.get_raw(cid) == blob
        assert by_boto(server) == 2 and len(fast_sends) == 4
        for status in (Status(301, moved), Status(400, region)):
            store = S3Store(f"s3+{server.url}/bkt/p", FAST)
            server.plan(path, status)
            assert store.get_raw(cid) == blob and store._s3.fast is None
            assert store.has_chunk(cid) and store.get_raw(cid) == blob
        assert by_boto(server) == 2 + 6 and len(fast_sends) == 6
        store = S3Store(f"s3+{server.url}/bkt/p", FAST)
        server.plan(path, Status(400, region))
        store.put_raw(cid, blob[::-1])  # PUT falls back too
        assert server.chunks[path] == blob[::-1] and store._s3.fast is None and by_boto(server) == 9
        monkeypatch.delenv("S3_ACCESS_KEY")
        monkeypatch.delenv("S3_SECRET_KEY")
        store = S3Store(f"s3+{server.url}/bkt/p", FAST)
        assert store.credentials_source.startswith("none found") and store.get_raw(cid) == blob[::-1]
        assert "Authorization" not in server.requests[-1].headers and by_boto(server) == 9
