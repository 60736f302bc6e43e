"""casync's remote protocol frames: layout, validation, round trips, damage."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import protocol as proto
from casync_format.errors import FormatError

ids = st.binary(min_size=32, max_size=32)
data = st.binary(min_size=1, max_size=2000)
reasons = st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), max_size=200)

messages = st.one_of(
    st.builds(proto.Hello, st.integers(1, proto.FEATURE_FLAGS_MAX)),
    st.builds(proto.IndexData, data),
    st.builds(proto.ArchiveData, data),
    st.just(proto.IndexEOF()),
    st.just(proto.ArchiveEOF()),
    st.builds(proto.Request, st.lists(ids, min_size=1, max_size=50).map(tuple), st.integers(0, 1)),
    st.builds(proto.Chunk, ids, data, st.integers(0, 1)),
    st.builds(proto.Missing, ids),
    st.just(proto.Goodbye()),
    st.builds(proto.Abort, st.integers(0, 2**31 - 2), reasons),
)


def _reader(blob: bytes) -> io.BytesIO:
    return io.BytesIO(blob)


def _frame(msg_type: int, body: bytes) -> bytes:
    return struct.pack("<QQ", 16 + len(body), msg_type) + body


# --------------------------------------------------------------------------- layout


def test_hello_bytes_are_caprotocol_h_layout() -> None:
    # What casync's pull sends first (captured from casync 2): size 24, HELLO, READABLE_STORE.
    assert proto.encode(proto.Hello(proto.READABLE_STORE)) == (
        b"\x18\0\0\0\0\0\0\0\xee\xfb\xa5\x8c\x94\xd0q<\x01\0\0\0\0\0\0\0"
    )


def test_constants_match_casync() -> None:
    assert proto.MSG_REQUEST == 0x8AB427E0F89D9210
    assert proto.MSG_CHUNK == 0x5213DD180A84BC8C
    assert proto.MSG_ABORT == 0xE7D9136B7EFEA352
    assert proto.PULL_CHUNKS == 0x40 and proto.PUSH_ARCHIVE == 0x1000
    assert proto.FEATURE_FLAGS_MAX == 0x1FFF and proto.SIZE_MAX == 16 * 1024 * 1024


def test_request_layout_flags_then_ids() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    frame = proto.encode(proto.Request((a, b), proto.REQUEST_HIGH_PRIORITY))
    assert frame == struct.pack("<QQQ", 16 + 8 + 64, proto.MSG_REQUEST, 1) + a + b


def test_chunk_layout() -> None:
    frame = proto.encode(proto.Chunk(b"\x07" * 32, b"xyz"))
    assert frame == struct.pack("<QQQ", 16 + 8 + 32 + 3, proto.MSG_CHUNK, 1) + b"\x07" * 32 + b"xyz"


def test_abort_layout_is_nul_terminated_and_sanitised() -> None:
    frame = proto.encode(proto.Abort(5, "bad\nthing"))
    assert frame.endswith(b"bad thing\0")
    assert proto.read_message(_reader(frame).read) == proto.Abort(5, "bad thing")


def test_names() -> None:
    assert proto.flag_names(proto.READABLE_STORE | proto.PULL_INDEX) == "readable-store|pull-index"
    assert proto.flag_names(0) == "none"
    assert proto.flag_names(0x4000) == "0x4000"
    assert proto.type_name(proto.MSG_INDEX_EOF) == "index-eof"
    assert proto.type_name(5) == "0x5"


# --------------------------------------------------------------------------- round trips


@given(st.lists(messages, max_size=8))
def test_round_trip_stream(msgs: list[proto.Message]) -> None:
    stream = _reader(b"".join(proto.encode(m) for m in msgs))
    out = []
    while (m := proto.read_message(stream.read)) is not None:
        out.append(m)
    assert out == msgs


@given(messages, st.data())
def test_truncated_frame_is_a_format_error(msg: proto.Message, draw: st.DataObject) -> None:
    frame = proto.encode(msg)
    cut = draw.draw(st.integers(1, len(frame) - 1))
    with pytest.raises(FormatError, match="truncated"):
        proto.read_message(_reader(frame[:cut]).read)


@given(st.binary(max_size=200))
def test_garbage_never_crashes(blob: bytes) -> None:
    stream = _reader(blob)
    try:
        while proto.read_message(stream.read) is not None:
            pass
    except FormatError:
        pass


@given(st.lists(ids, min_size=1, max_size=300), st.integers(1, 40))
def test_split_request_keeps_order_and_bounds(chunk_ids: list[bytes], per: int) -> None:
    frames = list(proto.split_request(chunk_ids, proto.REQUEST_HIGH_PRIORITY, per))
    assert all(1 <= len(f.ids) <= per for f in frames)
    assert [i for f in frames for i in f.ids] == chunk_ids


def test_max_request_fits_the_size_limit() -> None:
    req = proto.Request((b"\0" * 32,) * proto.MAX_REQUEST_IDS)
    assert len(proto.encode(req)) <= proto.SIZE_MAX
    with pytest.raises(FormatError):
        proto.encode(proto.Request((b"\0" * 32,) * (proto.MAX_REQUEST_IDS + 1)))


def test_reads_from_a_short_reading_source() -> None:
    frame = proto.encode(proto.Chunk(b"\x01" * 32, b"payload" * 100))
    stream = _reader(frame)
    assert proto.read_message(lambda n: stream.read(min(n, 3))) == proto.Chunk(b"\x01" * 32, b"payload" * 100)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (struct.pack("<QQ", 8, proto.MSG_GOODBYE), "invalid size 8"),
        (struct.pack("<QQ", 2**63, proto.MSG_CHUNK), "chunk message with invalid size"),
        (struct.pack("<QQ", proto.SIZE_MAX + 1, proto.MSG_INDEX), "invalid size"),
        (_frame(0x1234, b""), "unknown message type"),
        (b"bash: casync: command not found\n", "not a casync protocol message: b'bash: casync"),
        (_frame(proto.MSG_HELLO, struct.pack("<Q", 0)), "no feature flags"),
        (_frame(proto.MSG_HELLO, struct.pack("<Q", 0x2000)), "unknown feature flags"),
        (_frame(proto.MSG_HELLO, struct.pack("<QQ", 1, 0)), "must be 24"),
        (_frame(proto.MSG_GOODBYE, b"x"), "must be 16"),
        (_frame(proto.MSG_INDEX_EOF, b"x"), "must be 16"),
        (_frame(proto.MSG_INDEX, b""), "at least 17"),
        (_frame(proto.MSG_REQUEST, struct.pack("<Q", 0)), "at least"),
        (_frame(proto.MSG_REQUEST, struct.pack("<Q", 0) + b"\0" * 33), "whole chunk ids"),
        (_frame(proto.MSG_REQUEST, struct.pack("<Q", 2) + b"\0" * 32), "unknown flags"),
        (_frame(proto.MSG_CHUNK, struct.pack("<Q", 1) + b"\0" * 32), "at least"),
        (_frame(proto.MSG_CHUNK, struct.pack("<Q", 4) + b"\0" * 33), "unknown flags"),
        (_frame(proto.MSG_MISSING, b"\0" * 31), "must be 48"),
        (_frame(proto.MSG_ABORT, struct.pack("<Q", 1) + b"no nul"), "NUL-terminated"),
        (_frame(proto.MSG_ABORT, struct.pack("<Q", 1) + b"a\nb\0"), "control characters"),
        (_frame(proto.MSG_ABORT, struct.pack("<Q", 2**31) + b"x\0"), "out of range"),
        (b"\x18\0\0\0", "truncated message header"),
    ],
)
def test_invalid_frames(blob: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        proto.read_message(_reader(blob).read)


def test_huge_declared_size_is_refused_before_reading() -> None:
    reads: list[int] = []

    def read(n: int) -> bytes:
        reads.append(n)
        return struct.pack("<QQ", 2**40, proto.MSG_CHUNK) if len(reads) == 1 else b"\0" * n

    with pytest.raises(FormatError):
        proto.read_message(read)
    assert reads == [16]


def test_clean_end_of_input() -> None:
    assert proto.read_message(_reader(b"").read) is None


@pytest.mark.parametrize(
    "msg",
    [
        proto.Hello(0),
        proto.Hello(0x2000),
        proto.IndexData(b""),
        proto.Request(()),
        proto.Request((b"\0" * 31,)),
        proto.Request((b"\0" * 32,), 2),
        proto.Chunk(b"\0" * 32, b""),
        proto.Chunk(b"\0" * 32, b"x", 2),
        proto.Chunk(b"\0" * 32, b"x" * (proto.MAX_CHUNK_DATA + 1)),
        proto.Missing(b"\0" * 33),
        proto.Abort(-1, "x"),
        proto.Abort(2**31, "x"),
    ],
)
def test_invalid_messages_are_not_encoded(msg: proto.Message) -> None:
    with pytest.raises(FormatError):
        proto.encode(msg)


def test_abort_reason_is_bounded() -> None:
    assert len(proto.encode(proto.Abort(0, "x" * 100000))) < 5000


# --------------------------------------------------------------------------- hello rules


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        (proto.READABLE_STORE, proto.PULL_CHUNKS),
        (proto.READABLE_STORE | proto.READABLE_INDEX, proto.PULL_CHUNKS | proto.PULL_INDEX),
        (proto.READABLE_ARCHIVE, proto.PULL_ARCHIVE),
        (proto.PULL_CHUNKS, proto.READABLE_STORE | proto.READABLE_INDEX),
    ],
)
def test_compatible_hellos(local: int, remote: int) -> None:
    proto.check_hello(local, remote)


@pytest.mark.parametrize(
    ("local", "remote", "match"),
    [
        (proto.READABLE_STORE, proto.PULL_INDEX, "peer wants pull-index"),
        (proto.READABLE_INDEX, proto.PULL_CHUNKS,
         "peer wants pull-chunks, which needs readable-store, but this side offers readable-index"),
        (proto.PULL_CHUNKS, proto.READABLE_INDEX, "this side wants pull-chunks"),
        (proto.PULL_CHUNKS, proto.PULL_CHUNKS, "needs readable-store, but this side offers no service"),
        (proto.READABLE_STORE, proto.READABLE_STORE, "neither side"),
        (
            proto.WRITABLE_STORE | proto.WRITABLE_INDEX,
            proto.PUSH_INDEX_CHUNKS | proto.PUSH_INDEX,
            "push-index-chunks",
        ),
        (proto.READABLE_STORE, 0, "no feature flags"),
    ],
)
def test_incompatible_hellos(local: int, remote: int, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        proto.check_hello(local, remote)
