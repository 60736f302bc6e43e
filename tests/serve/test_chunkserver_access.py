"""Tests of the chunk server's request paths, bounds, authorization, TLS, listen addresses and logs.

Against a real server on 127.0.0.1: chunk ids parsed from request targets,
malformed and traversal paths refused with 400 (a fixed list and hypothesis'
random targets), files outside the chunk layout never served, request line
and header size bounds, the Authorization check, the request log (to a file
and to stdout, with control characters escaped), HTTPS and mutual TLS with
certificates made by ``openssl``, the checks of TLS and listen options, and
serving on several addresses (IPv6 when the loopback has it).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.digest import SHA512_256
from casync_format.errors import CasyncError, ParameterError
from casync_store import LocalStore
from casync_store.serve.chunkserver import ChunkServer, chunk_id_from_target
from casync_store.serve.httpserver import TLSOptions, parse_listen
from tests.support.certs import Certs
from tests.support.chunkserver import Blob, chunk_path, raw_get
from tests.support.http_client import raw_request, request

AUTH = "Bearer s3cr3t-t0ken-value"


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Blob:
    """A blob made into a store (shadows tests/conftest.py's ``blob``, which ``made`` needs)."""
    return Blob(str(tmp_path_factory.mktemp("blob")))


# --- paths ----------------------------------------------------------------------------------------


def test_chunk_id_from_target() -> None:
    cid = SHA512_256(b"a")
    h = cid.hex()
    assert chunk_id_from_target(f"/{h[:4]}/{h}.cacnk") == cid
    assert chunk_id_from_target(f"/{h[:4]}/{h}", uncompressed=True) == cid
    assert chunk_id_from_target(f"http://example.com:80/{h[:4]}/{h}.cacnk") == cid
    assert chunk_id_from_target(f"/{h[:4]}/{h}") is None
    assert chunk_id_from_target(f"/{h[:4]}/{h}.cacnk", uncompressed=True) is None


def bad_targets(store_dir: str, cid: bytes) -> list[str]:
    h, p = cid.hex(), cid.hex()[:4]
    other = "0000" if p != "0000" else "ffff"
    return [
        "/", "", "*", "/etc/passwd", "/../../../../etc/passwd", f"/{p}/../{p}/{h}.cacnk",
        f"/{p}/./{h}.cacnk", f"/%2e%2e/{p}/{h}.cacnk", f"/{p}%2f{h}.cacnk", f"/{p}/{h}%2ecacnk",
        f"//{p}/{h}.cacnk", f"/{p}//{h}.cacnk", f"{p}/{h}.cacnk", f"/{p}/{h}.cacnk/",
        f"/{p}/{h}.cacnk?x=1", f"/{p}/{h}.cacnk#f", f"/{p}/{h}.cacnk.cacnk", f"/{p}/{h}.CACNK",
        f"/{p.upper()}/{h.upper()}.cacnk", f"/{p}/{h[:-1]}.cacnk", f"/{p}/{h}0.cacnk",
        f"/{other}/{h}.cacnk", f"\\{p}\\{h}.cacnk", f"/{p}\\{h}.cacnk", f"/x/{p}/{h}.cacnk",
        f"{store_dir}/{p}/{h}.cacnk", f"/{p}/{h}.cacnk%00", f"/{p}/{h}", f"/{p}/{h}.cacnk.tmp",
        f"http://t/../{p}/{h}.cacnk", f"file:///{p}/{h}.cacnk", f"/{p}/{h}.cacnk;x",
    ]


def test_malformed_and_traversal_paths_are_400(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    cid = blob.ids[0]
    server = serve(blob.store)
    for target in bad_targets(blob.store_dir, cid):
        for method in ("GET", "HEAD", "PUT"):
            status, _ = raw_get(server, target, method)
            assert status == 400, (method, target, status)
    assert raw_get(server, f"http://t{chunk_path(cid)}")[0] == 200  # absolute-form is fine


def test_files_outside_the_chunk_layout_are_never_served(blob: Blob, serve: Callable[..., ChunkServer],
                                                         tmp_path: Any) -> None:
    store_dir = tmp_path / "s"
    store = LocalStore(str(store_dir), sync=False)
    cid = SHA512_256(b"secret")
    h = cid.hex()
    store_dir.mkdir()
    (store_dir / f"{h}.cacnk").write_bytes(b"top-level file")  # not under its prefix directory
    (store_dir / h[:4]).mkdir()
    (store_dir / h[:4] / "x.cacnk").write_bytes(b"odd name")
    server = serve(store)
    for target in (f"/{h}.cacnk", f"/{h[:4]}/x.cacnk", f"/{h[:4]}/../{h}.cacnk"):
        assert raw_get(server, target)[0] == 400
    assert raw_get(server, chunk_path(cid))[0] == 404


TARGET_CHARS = "/\\.%2eE0aAbcdfn?#:;~ -_\x00\x7f\xe9"


@st.composite
def targets(draw: st.DrawFn, ids: list[bytes]) -> str:
    """Random request targets: noise, and well-formed paths (present or not) with small mutations."""
    if draw(st.booleans()):
        return draw(st.text(alphabet=TARGET_CHARS, min_size=1, max_size=90))
    cid = draw(st.sampled_from([*ids[:8], SHA512_256(b"absent")]))
    path = list(chunk_path(cid, draw(st.sampled_from([".cacnk", "", ".cacnk.cacnk", "/"]))))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(path)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(TARGET_CHARS))
        if kind == "insert":
            path.insert(at, char)
        elif path and at < len(path):
            path[at:at + 1] = [] if kind == "delete" else [char]
    return "".join(path)


@pytest.fixture(scope="module")
def module_server(blob: Blob) -> Iterator[ChunkServer]:
    with ChunkServer(blob.store) as server:
        yield server


@given(data=st.data())
def test_random_targets_never_reach_outside_the_store(blob: Blob, module_server: ChunkServer,
                                                      data: st.DataObject) -> None:
    target = data.draw(targets(blob.ids))
    method = data.draw(st.sampled_from(["GET", "HEAD"]))
    if any(c in target for c in " \r\n"):
        target = target.replace(" ", "%20").replace("\r", "").replace("\n", "")
    status, body = raw_get(module_server, target, method)
    assert 400 <= status < 500 or status == 200, (target, status)
    cid = chunk_id_from_target(target)
    if status == 200:
        assert cid is not None and blob.store.has_chunk(cid)
        if method == "GET":
            assert body == blob.store.get_raw(cid)
    elif cid is None:
        assert status == 400


def test_request_size_bounds(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store)
    assert raw_get(server, "/" + "a" * 9000)[0] == 414
    huge_header = f"GET {chunk_path(blob.ids[0])} HTTP/1.1\r\nHost: t\r\nX-Big: {'b' * 70000}\r\n\r\n"
    assert raw_request(server, huge_header.encode())[0] == 431
    many = "".join(f"X-{i}: v\r\n" for i in range(200))
    assert raw_request(server, f"GET / HTTP/1.1\r\n{many}\r\n".encode())[0] == 431
    assert raw_request(server, b"GARBAGE\r\n\r\n")[0] == 400
    assert raw_request(server, b"GET / HTTP/9.0\r\n\r\n")[0] in (400, 505)


# --- authorization, TLS, logs -------------------------------------------------------------------


def test_authorization(blob: Blob, serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    log = tmp_path / "requests.log"
    server = serve(blob.store, authorization=AUTH, log=str(log))
    target = chunk_path(blob.ids[0])
    assert request(server, "GET", target)[0] == 401
    assert request(server, "GET", target, headers={"Authorization": AUTH + "x"})[0] == 401
    assert request(server, "GET", target, headers={"Authorization": "Bearer"})[0] == 401
    assert request(server, "HEAD", "/bad/path", headers={"Authorization": "x"})[0] == 401
    status, _, body = request(server, "GET", target, headers={"Authorization": AUTH})
    assert status == 200 and body == blob.store.get_raw(blob.ids[0])
    twice = f"GET {target} HTTP/1.1\r\nHost: t\r\nAuthorization: {AUTH}\r\nAuthorization: {AUTH}\r\n\r\n"
    assert raw_request(server, twice.encode())[0] == 401
    server.shutdown()
    text = log.read_text()
    assert text.count("\n") == 6 and " 401 " in text and " 200 " in text and target in text
    assert "s3cr3t" not in text


def test_request_log_to_stdout(blob: Blob, serve: Callable[..., ChunkServer],
                               capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(blob.store, log="-")
    request(server, "GET", chunk_path(blob.ids[0]), headers={"Authorization": "never-logged"})
    raw_get(server, "/evil\x1b[31m\x00")
    server.shutdown()
    out = capsys.readouterr().out
    assert f'"GET {chunk_path(blob.ids[0])} HTTP/1.1" 200' in out
    assert "never-logged" not in out and "\x1b" not in out and "\\x1b" in out


def client_context(certs: Certs, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca_cert)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def test_https(blob: Blob, certs: Certs, serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key))
    status, _, body = request(server, "GET", chunk_path(blob.ids[0]), context=client_context(certs))
    assert status == 200 and body == blob.store.get_raw(blob.ids[0])
    with pytest.raises(ssl.SSLError):  # a client that does not trust our CA
        request(server, "GET", chunk_path(blob.ids[0]), context=ssl.create_default_context())
    with contextlib.suppress(OSError):  # plain HTTP to a TLS port: no HTTP reply
        assert raw_get(server, chunk_path(blob.ids[0]))[0] == 0
    assert request(server, "GET", chunk_path(blob.ids[0]), context=client_context(certs))[0] == 200


def test_mutual_tls(blob: Blob, certs: Certs, serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    log = tmp_path / "log"
    tls = TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert, mutual=True)
    server = serve(blob.store, tls=tls, log=str(log))
    target = chunk_path(blob.ids[0])
    for refused in (client_context(certs),
                    client_context(certs, certs.other_client_cert, certs.other_client_key),
                    client_context(certs, certs.server_cert, certs.server_key)):  # not a client cert
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(server, "GET", target, context=refused)
    right = client_context(certs, certs.client_cert, certs.client_key)
    status, _, body = request(server, "GET", target, context=right)
    assert status == 200 and body == blob.store.get_raw(blob.ids[0])
    server.shutdown()
    assert log.read_text().count("TLS handshake failed") == 3


def test_tls_and_listen_options_are_checked(blob: Blob, certs: Certs, tmp_path: Any) -> None:
    with pytest.raises(ParameterError, match="client CA"):
        ChunkServer(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key, mutual=True))
    with pytest.raises(ParameterError, match="mutual"):
        ChunkServer(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert))
    with pytest.raises(ParameterError, match=r"nope\.pem"):
        ChunkServer(blob.store, tls=TLSOptions(str(tmp_path / "nope.pem"), certs.server_key))
    with pytest.raises(ParameterError, match="listen address"):
        ChunkServer(blob.store, listen=["8080"])
    with pytest.raises(ParameterError, match="request log"):
        ChunkServer(blob.store, log=str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(ParameterError, match="Authorization"):
        ChunkServer(blob.store, authorization="a\r\nX-Injected: 1")
    taken = ChunkServer(blob.store)
    taken.start()
    try:
        with pytest.raises(CasyncError, match="cannot listen") as exc:  # a failure, not a usage error
            ChunkServer(blob.store, listen=[f"127.0.0.1:{taken.addresses[0][1]}"]).start()
        assert not isinstance(exc.value, ParameterError)
    finally:
        taken.shutdown()


def test_parse_listen() -> None:
    assert parse_listen(":8080") == ("", 8080)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert parse_listen("localhost:65535") == ("localhost", 65535)
    assert parse_listen(":http") == ("", 80)
    assert parse_listen(":https") == ("", 443)
    for bad in ("8080", "::1:80", "[::1]", "[::1]80", "host:65536", "host:-1", "host:", "host:no such",
                "[127.0.0.1]:80", "a b:80"):
        with pytest.raises(ParameterError):
            parse_listen(bad)


def test_several_listen_addresses(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    listen = ["127.0.0.1:0", "localhost:0", ":0"]  # ":0": every interface (IPv6 dual-stack when possible)
    if socket.has_ipv6 and _ipv6_loopback():
        listen.append("[::1]:0")
    server = serve(blob.store, listen=listen)
    assert len(server.addresses) == len(listen)
    for host, port in server.addresses:
        host = "127.0.0.1" if host in ("::", "0.0.0.0") else host
        with contextlib.closing(http.client.HTTPConnection(host, port, timeout=10)) as conn:
            conn.request("HEAD", chunk_path(blob.ids[0]))
            assert conn.getresponse().status == 200


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
