"""S3 chunk and index stores (``s3+http(s)://host[:port]/bucket[/prefix]``) in desync's layout, over boto3.

A location names an S3-compatible endpoint, a bucket and an optional key prefix; ``?lookup=path|dns|auto``
picks path-style, virtual-host ("dns") or boto's automatic addressing (path style: the endpoint is always
explicit). Chunks are the objects ``<prefix>/xxxx/<id>.cacnk`` (as in local stores and desync), indexes the
objects ``<prefix>/<name>``; listings stream one ListObjectsV2 page at a time, prune deletes in batches, and
:func:`upgrade_s3` moves desync's old flat layout. One thread-safe boto3 client per store carries every
request but the fast path's (below), both within ``options.concurrency`` connections in use (``-n``, default
10; more threads wait for one), ``options.timeout`` for connecting and each read (desync's one minute when
unset, negative = no limit), ``options.error_retry`` retries with botocore's "standard" backoff on
throttling, 5xx and connection errors (botocore picks the delays; ``error_retry_base_interval`` only spaces
the retries of short chunk bodies), TLS verification per ``trust_insecure`` and ``ca_cert`` and a client
certificate. Credentials are chosen as desync chooses them:
``S3_ACCESS_KEY``/``S3_SECRET_KEY``/``S3_SESSION_TOKEN``, else
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, else the config file's
``s3-credentials`` entry (``options.s3_credentials``: keys, or an AWS shared credentials file and profile),
else boto3's standard chain, and unsigned (anonymous) requests when that finds nothing. The region is
``S3_REGION``, else the entry's ``aws-region``, else the chain's, else ``us-east-1``. Messages name the
store location and never a key or token. boto3 is imported only when a store is opened (extra ``s3``). The
client and the fast path are built by :mod:`._s3client` (which never imports this module); this module holds
the locations, the stores and their error handling. A missing object is :class:`._s3client.NoSuchObject`
from the bucket wrapper to the stores, which alone turn it into ChunkMissing, IndexNotFound or ``False``; a
stray KeyError is never taken for one.

The per-chunk requests (GET, HEAD and PUT of one object; HEAD of an index) take a fast path: botocore spends
milliseconds of CPU on each call, so they are signed here with AWS Signature V4 (:mod:`._sigv4`; GET and
HEAD with ``UNSIGNED-PAYLOAD``, PUT with the body's SHA-256, which every S3-compatible server accepts and
which protects bodies sent over plain HTTP) and sent over :mod:`.http`'s pooled request loop, with its TLS
context (``trust_insecure``, ``ca_cert``, client certificate), proxies (loopback hosts go direct), timeouts
and retries: 5xx, connection errors, timeouts and short bodies are retried ``error_retry`` times, ``attempt
* error_retry_base_interval`` apart. boto3 still picks the credentials (each request asks botocore's
credentials object afresh, so refreshed ones are used), and the URL and signing region come from botocore
itself: one HeadObject request is made by the client when the store opens and answered in-process, never
sent, showing where botocore sends this bucket's requests (path style, virtual host, or what ``lookup=auto``
means to it) and for which region it signs. A 200 (2xx for PUT) is the answer, 404 a missing object (or a
missing bucket, when S3 says NoSuchBucket), 403 with a credentials error code is "access denied"; any other
status goes to boto3 for that request (a 301 or 400, e.g. a bucket in another region, switches the fast path
off for good, so botocore's redirect handling takes over). ARN and S3 Express buckets, or a fast path that
cannot be set up (e.g. an https proxy), use boto3 throughout.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import ChunkInvalid, ChunkMissing, IndexNotFound, ParameterError, StoreError

from ..plumbing.config import StoreOptions
from ..plumbing.locparse import Location
from ..plumbing.progress import Progress, phase
from ._httpclient import TooLarge
from ._s3client import DEFAULT_CONCURRENCY, DEFAULT_REGION, NoSuchObject, fast_path, make_client
from .base import PruneStore
from .http import MAX_BLOB_SIZE
from .indexstore import WriteIndexStore, check_index_name
from .layout import CHUNK_SUFFIX, chunk_path, parse_chunk_path

__all__ = [
    "S3Store",
    "S3IndexStore",
    "S3Location",
    "open_s3",
    "open_s3_index_store",
    "parse_s3_location",
    "upgrade_s3",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_REGION",
    "LIST_PAGE_SIZE",
    "DELETE_BATCH",
    "INDEX_PART_SIZE",
]

log = logging.getLogger(__name__)

#: Keys asked for per ListObjectsV2 page (S3's maximum; tests lower it).
LIST_PAGE_SIZE = 1000
#: Keys removed per DeleteObjects request while pruning (S3's maximum).
DELETE_BATCH = 1000
#: Bytes per part of a multipart index upload; smaller indexes take one PUT (S3's minimum is 5 MiB).
INDEX_PART_SIZE = 8 << 20

_LOOKUPS = {"auto": "auto", "path": "path", "dns": "virtual"}
_MISSING = ("NoSuchKey", "NotFound", "404")
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "403", "401", "Forbidden")  # fmt: skip
_OLD_CHUNK_KEY = re.compile(r"[0-9a-f]{64}\Z")
_TYPE = "application/octet-stream"
_READ_STEP = 1 << 20
_ERROR_LIMIT = 1 << 16  # bytes of a fast-path answer that is not a 200 GET
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
#: Fast-path answers meaning the bucket lives elsewhere (region, endpoint): botocore takes over for good.
_WRONG_PLACE = (301, 400)


# --------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class S3Location:
    """A parsed ``s3+http(s)://`` location."""

    location: str  #: as given, for messages
    endpoint: str  #: ``http(s)://host[:port]``
    bucket: str
    prefix: str  #: ``""`` or ``"a/b/"`` (always ending in ``/``)
    addressing: str  #: botocore's addressing style: auto, path or virtual


def parse_s3_location(location: str) -> S3Location:
    """Split ``s3+http(s)://host[:port]/bucket[/prefix][?lookup=...]``; ParameterError names what is wrong."""
    loc = Location.parse(location)
    if loc.scheme not in ("s3+http", "s3+https"):
        raise ParameterError(f"store {loc}: not an s3+http:// or s3+https:// location")
    if "@" in loc.netloc:
        raise ParameterError(
            f"S3 location {loc}: "
            "credentials in the URL are not supported (use S3_ACCESS_KEY/S3_SECRET_KEY or s3-credentials)"
        )
    if not loc.host:
        raise ParameterError(f"store {loc}: no host in the S3 location")
    if not loc.port_valid:
        raise ParameterError(f"store {loc}: invalid port")
    bucket, _, prefix = urllib.parse.unquote(loc.path).strip("/").partition("/")
    if not bucket:
        raise ParameterError(f"store {loc}: no bucket in the S3 location (s3+http://host/bucket/prefix)")
    query = urllib.parse.parse_qs(loc.query, keep_blank_values=True)
    lookup = (query.pop("lookup", None) or ["auto"])[-1] or "auto"
    if lookup not in _LOOKUPS:
        raise ParameterError(f"store {loc}: unknown S3 bucket lookup {lookup!r} (use path, dns or auto)")
    if query:
        raise ParameterError(f"store {loc}: unknown parameter {sorted(query)[0]!r} (only lookup=)")
    prefix = "/".join(p for p in prefix.split("/") if p)
    return S3Location(
        location=location,
        endpoint=f"{loc.scheme[3:]}://{loc.netloc}",
        bucket=bucket,
        prefix=prefix + "/" if prefix else "",
        addressing=_LOOKUPS[lookup],
    )


# --------------------------------------------------------------------------- credentials


class _BrokenBody(Exception):
    """A body that ended early or stalled (retried)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _read_body(body: Any, limit: int) -> bytes:
    """Read to the end (where botocore checks the length) or past ``limit``."""
    parts: list[bytes] = []
    total = 0
    while total <= limit:
        piece = body.read(_READ_STEP)
        if not piece:
            break
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)


class _Bucket:
    """One boto3 client bound to a bucket and prefix, and the fast path; turns their errors into ours."""

    def __init__(self, where: S3Location, options: StoreOptions) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError as URLLib3Error  # botocore's transport

        self.where = where
        self.bucket = where.bucket
        self.retries = max(0, options.error_retry)
        self.retry_interval = max(0.0, options.error_retry_base_interval)
        made = make_client(where, options)
        self.client = made.client
        self.credentials_source = made.credentials_source
        #: The fast path for single-object requests; None: boto3 makes them all.
        self.fast = fast_path(made.client, made.session, where, options, made.anonymous)
        self._fast_transport = self.fast
        #: One slot per pooled connection: more threads wait rather than open (and drop) extra connections.
        self.slots = threading.BoundedSemaphore(made.pool_size)
        #: transport errors (connection, timeout, short body: urllib3's are not always wrapped)
        self.errors: tuple[type[BaseException], ...] = (BotoCoreError, URLLib3Error)
        self.client_error: type[BaseException] = ClientError

    def error(self, exc: BaseException, what: str) -> StoreError:
        """A one-line StoreError for a boto error (never showing credentials)."""
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            return StoreError(f"store {self.where.location}: {what}: {exc}".splitlines()[0])
        code = str(response.get("Error", {}).get("Code", ""))
        return self.status_error(code, response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"), what)

    def status_error(self, code: str, status: object, what: str) -> StoreError:
        """The StoreError for an S3 error code and HTTP status."""
        loc = self.where.location
        if code == "NoSuchBucket":
            return StoreError(f"store {loc}: bucket {self.bucket} does not exist")
        if code in _DENIED:
            return StoreError(f"store {loc}: {what}: access denied ({code}): check the S3 credentials")
        detail = f"HTTP {status}" if code in ("", str(status)) else f"{code} (HTTP {status})"
        return StoreError(f"store {loc}: {what}: {detail}")

    @staticmethod
    def missing(exc: BaseException) -> bool:
        """Whether a ClientError says the key does not exist."""
        response = getattr(exc, "response", None)
        return isinstance(response, dict) and str(response.get("Error", {}).get("Code")) in _MISSING

    def call(self, op: str, what: str, **kwargs: Any) -> Any:
        """``client.<op>(Bucket=..., **kwargs)``; NoSuchObject for a missing key, StoreError otherwise."""
        with self.slots:
            return self._call(op, what, kwargs)

    def _call(self, op: str, what: str, kwargs: dict[str, Any]) -> Any:
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except self.client_error as exc:
            if self.missing(exc):
                raise NoSuchObject(kwargs.get("Key")) from None
            raise self.error(exc, what) from None
        except self.errors as exc:
            raise self.error(exc, what) from None

    def signed(
        self, method: str, key: str, what: str, body: bytes | None = None, limit: int = _ERROR_LIMIT
    ) -> bytes | None:
        """The body of a success on the fast path; NoSuchObject for 404, StoreError for 403 and no bucket.

        None: boto3 must make this request (no fast path, or an answer it handles; see the module).
        """
        fast = self.fast
        if fast is None:
            return None
        with self.slots:
            try:
                status, data = fast.request(method, key, what, body, limit)
            except TooLarge:
                loc = self.where.location
                raise StoreError(f"store {loc}: {what} is larger than {limit} bytes") from None
            except self.errors as exc:  # botocore could not refresh the credentials
                raise self.error(exc, f"{method} {what}") from None
        if status == 200 or (method == "PUT" and 200 <= status < 300):
            return data
        found = _ERROR_CODE.search(data)
        code = found.group(1).decode("ascii", "replace") if found else str(status)
        if (status == 404 and code == "NoSuchBucket") or (status in (401, 403) and code in _DENIED):
            raise self.status_error(code, status, f"{method} {what}")
        if status == 404 and method != "PUT":
            raise NoSuchObject(key)
        if status in _WRONG_PLACE:
            self.fast = None
        log.debug("store %s: %s %s: fast path answered HTTP %s %s: asking boto3%s", self.where.location,
                  method, what, status, code, " (from now on)" if self.fast is None else "")  # fmt: skip
        return None

    def read(self, key: str, limit: int, what: str) -> bytes:
        """A whole object of at most ``limit`` bytes; bodies cut short are retried."""
        data = self.signed("GET", key, what, limit=limit)
        if data is not None:
            return data
        for attempt in itertools.count(1):
            try:
                return self._read_once(key, limit, what)
            except _BrokenBody as exc:
                if attempt > self.retries:
                    raise self.error(exc.cause, f"GET {what}") from None
            time.sleep(attempt * self.retry_interval)
        raise AssertionError("unreachable")

    def _read_once(self, key: str, limit: int, what: str) -> bytes:
        with self.slots:  # held until the body is read: the connection is busy until then
            answer = self._call("get_object", f"GET {what}", {"Key": key})
            declared = answer.get("ContentLength") or 0
            body = answer["Body"]  # not "with": that yields urllib3's stream, which skips the length check
            caught: tuple[type[BaseException], ...] = (OSError, *self.errors)
            try:
                data = _read_body(body, limit) if declared <= limit else b""
            except caught as exc:
                raise _BrokenBody(exc) from None
            finally:
                body.close()
        if max(declared, len(data)) > limit:
            raise StoreError(f"store {self.where.location}: {what} is larger than {limit} bytes")
        return data

    def exists(self, key: str, what: str) -> bool:
        try:
            if self.signed("HEAD", key, what) is None:
                self.call("head_object", f"HEAD {what}", Key=key)
        except NoSuchObject:
            return False
        return True

    def put(self, key: str, body: bytes, what: str) -> None:
        if self.signed("PUT", key, what, body) is None:
            self.call("put_object", f"PUT {what}", Key=key, Body=body, ContentType=_TYPE)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, one ListObjectsV2 page (:data:`LIST_PAGE_SIZE`) in memory at a time."""
        more: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", "list", Prefix=prefix, MaxKeys=LIST_PAGE_SIZE, **more)
            for obj in page.get("Contents", ()):
                yield obj["Key"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            more = {"ContinuationToken": token}

    def close(self) -> None:
        if self._fast_transport is not None:
            self._fast_transport.close()
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- chunk store


class S3Store(PruneStore):
    """A chunk store in an S3 bucket: ``<prefix>/xxxx/<id>.cacnk`` objects."""

    def __init__(self, location: str, options: StoreOptions | None = None) -> None:
        options = options or StoreOptions()
        if options.uncompressed:
            raise StoreError(f"store {location}: uncompressed stores are not supported in this version")
        self.where = parse_s3_location(location)
        self.verify = not options.skip_verify
        self.cipher = options.chunk_cipher()  # desync's encryption: objects sealed, keys ``...<suffix>``
        self._suffix = CHUNK_SUFFIX + (self.cipher.suffix if self.cipher else "")
        self._s3 = _Bucket(self.where, options)
        #: Where the credentials came from (e.g. "environment S3_ACCESS_KEY"), never their values.
        self.credentials_source = self._s3.credentials_source

    def __str__(self) -> str:
        return self.where.location

    def __repr__(self) -> str:
        return f"S3Store({self.where.location!r})"

    def check(self) -> None:
        try:
            self._s3.call("head_bucket", "checking the bucket")
        except NoSuchObject:  # HEAD has no error code: a 404 is the bucket's absence
            raise StoreError(f"store {self}: bucket {self._s3.bucket} does not exist") from None

    def chunk_key(self, chunk_id: bytes) -> str:
        """The object key of a chunk."""
        return self.where.prefix + chunk_path(chunk_id, self._suffix)

    def get_raw(self, chunk_id: bytes) -> bytes:
        try:
            limit = MAX_BLOB_SIZE + (self.cipher.overhead if self.cipher else 0)
            blob = self._s3.read(self.chunk_key(chunk_id), limit, f"chunk {chunk_id.hex()}")
        except NoSuchObject:
            raise ChunkMissing(chunk_id, self) from None
        return blob if self.cipher is None else self.cipher.decrypt(blob, chunk_id, self)

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        """The chunk's verified data (see :meth:`fetch_chunk`)."""
        return self.fetch_chunk(chunk_id, digest, size, max_size)[1]

    def fetch_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, bytes]:
        """(stored bytes, verified data); a body that arrives whole but does not decode (cut
        short on the way, e.g. by a proxy) is fetched again, as often as other errors are."""
        for attempt in itertools.count(1):
            blob = self.get_raw(chunk_id)
            try:
                return blob, self.decode(chunk_id, blob, digest, size, max_size)
            except ChunkInvalid as exc:
                if attempt > self._s3.retries:
                    raise
                log.debug("store %s: chunk %s: %s: fetched again", self, chunk_id.hex(), exc.cause)
            time.sleep(attempt * self._s3.retry_interval)
        raise AssertionError("unreachable")

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._s3.exists(self.chunk_key(chunk_id), f"chunk {chunk_id.hex()}")

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        sealed = bytes(blob) if self.cipher is None else self.cipher.encrypt(blob)
        self._s3.put(self.chunk_key(chunk_id), sealed, f"chunk {chunk_id.hex()}")

    def iter_chunk_ids(self) -> Iterator[bytes]:
        start = len(self.where.prefix)
        for key in self._s3.keys(self.where.prefix):
            chunk_id = parse_chunk_path(key, self._suffix, start=start)
            if chunk_id is not None:
                yield chunk_id

    def remove_chunk(self, chunk_id: bytes) -> None:
        with contextlib.suppress(NoSuchObject):
            self._s3.call("delete_object", f"DELETE chunk {chunk_id.hex()}", Key=self.chunk_key(chunk_id))

    def prune(
        self, keep: set[bytes] | frozenset[bytes], *, removed: Callable[[bytes, int], None] | None = None
    ) -> int:
        """Remove chunks not in ``keep``, up to :data:`DELETE_BATCH` per request; returns how many.

        ``removed(id, -1)`` is called for each chunk in a batch deleted."""
        count = 0
        batch: list[bytes] = []
        for cid in self.iter_chunk_ids():
            if cid not in keep:
                batch.append(cid)
            if len(batch) >= DELETE_BATCH:
                count += self._remove_batch(batch, removed)
                batch = []
        return count + (self._remove_batch(batch, removed) if batch else 0)

    def _remove_batch(self, ids: list[bytes], removed: Callable[[bytes, int], None] | None) -> int:
        count = self._remove_many(ids)
        if removed is not None:
            for cid in ids:
                removed(cid, -1)
        return count

    def _remove_many(self, ids: list[bytes]) -> int:
        objects = [{"Key": self.chunk_key(cid)} for cid in ids]
        answer = self._s3.call("delete_objects", "DELETE chunks", Delete={"Objects": objects, "Quiet": True})
        failed = [e for e in answer.get("Errors", ()) if e.get("Code") not in _MISSING]
        if failed:
            raise StoreError(
                f"store {self}: cannot remove {failed[0].get('Key')}: {failed[0].get('Code')}"
                + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
            )
        return len(ids)

    def close(self) -> None:
        self._s3.close()


def open_s3(location: str, options: StoreOptions) -> S3Store:  # the BACKENDS factory for s3+http(s)://
    return S3Store(location, options)


def upgrade_s3(store: S3Store, progress: Progress | None = None) -> int:
    """Move chunks from desync's old flat layout (``<prefix><id>``) to ``<prefix>/xxxx/<id>.cacnk``.

    Each old object is copied to its new key, then deleted; the listing is
    streamed, and running it again (also after an interruption) converts
    what is left. Returns the number of objects converted. Refused for an encrypted store.
    """
    if store.cipher is not None:  # the old objects are plain: a copy would not seal them
        raise StoreError(f"store {store}: upgrade-s3 does not apply to encrypted stores")
    s3 = store._s3
    moved = 0
    with phase(progress, "Upgrading", 0, "chunks"):
        for key in s3.keys(store.where.prefix):
            name = key[len(store.where.prefix) :]
            if not _OLD_CHUNK_KEY.match(name):
                continue
            try:
                s3.call("copy_object", f"copy {key}", Key=store.chunk_key(bytes.fromhex(name)),
                        CopySource={"Bucket": s3.bucket, "Key": key})  # fmt: skip
                s3.call("delete_object", f"DELETE {key}", Key=key)
            except NoSuchObject:  # moved by a concurrent upgrade since it was listed
                continue
            moved += 1
            if progress is not None:
                progress.add(1)
    return moved


# --------------------------------------------------------------------------- index store


class _BodyReader(io.RawIOBase):
    """A readable raw stream over an S3 object body; errors become StoreError."""

    def __init__(
        self, body: Any, wrap: Callable[[BaseException], StoreError], errors: tuple[type[BaseException], ...]
    ) -> None:
        self._body = body
        self._wrap = wrap
        self._caught: tuple[type[BaseException], ...] = (OSError, *errors)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except self._caught as exc:
            raise self._wrap(exc) from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3IndexStore(WriteIndexStore):
    """Index files as the objects ``<prefix>/<name>`` of an S3 bucket."""

    def __init__(self, location: str, options: StoreOptions | None = None) -> None:
        self.where = parse_s3_location(location)
        self._s3 = _Bucket(self.where, options or StoreOptions())
        self.credentials_source = self._s3.credentials_source

    def __str__(self) -> str:
        return self.where.location

    def _key(self, name: str) -> str:
        return self.where.prefix + check_index_name(name, self)

    def _name(self, name: str) -> str:
        return f"index {name} in {self}"

    def open_index(self, name: str) -> BinaryIO:
        try:
            answer = self._s3.call("get_object", f"GET {self._name(name)}", Key=self._key(name))
        except NoSuchObject:
            raise IndexNotFound(f"{self._name(name)} does not exist") from None
        raw = _BodyReader(answer["Body"], lambda exc: self._s3.error(exc, f"GET {self._name(name)}"),
                          self._s3.errors)  # fmt: skip
        return io.BufferedReader(raw, 1 << 20)  # type: ignore[return-value]

    def has_index(self, name: str) -> bool:
        return self._s3.exists(self._key(name), self._name(name))

    def put_index(self, name: str, source: BinaryIO, size: int) -> None:
        """Upload ``size`` bytes of ``source``: one PUT, or a multipart upload of
        :data:`INDEX_PART_SIZE` parts (completed only once every part is in)."""
        key, what = self._key(name), f"PUT {self._name(name)}"
        if size <= INDEX_PART_SIZE:
            body = _read_part(source, size, size)
            self._s3.call("put_object", what, Key=key, Body=body, ContentType=_TYPE)
            return
        upload = self._s3.call("create_multipart_upload", what, Key=key, ContentType=_TYPE)
        uid = upload["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            left = size
            while left:
                body = _read_part(source, min(left, INDEX_PART_SIZE), size)
                left -= len(body)
                answer = self._s3.call("upload_part", what, Key=key, UploadId=uid, PartNumber=len(parts) + 1,
                                       Body=body)  # fmt: skip
                parts.append({"ETag": answer["ETag"], "PartNumber": len(parts) + 1})
            self._s3.call("complete_multipart_upload", what, Key=key, UploadId=uid,
                          MultipartUpload={"Parts": parts})  # fmt: skip
        except BaseException:
            try:
                self._s3.call("abort_multipart_upload", what, Key=key, UploadId=uid)
            except (NoSuchObject, StoreError) as exc:
                log.warning("%s: cannot abort the multipart upload: %s", self, exc)
            raise

    def close(self) -> None:
        self._s3.close()


def _read_part(source: BinaryIO, n: int, size: int) -> bytes:
    """Exactly ``n`` bytes of ``source`` (StoreError when it ends early)."""
    out = bytearray()
    while len(out) < n:
        block = source.read(n - len(out))
        if not block:
            raise StoreError(f"index source ended before its {size} bytes")
        out += block
    return bytes(out)


def open_s3_index_store(location: str, options: StoreOptions) -> S3IndexStore:
    """The :data:`~casync_store.stores.backends.BACKENDS` factory for ``s3+http(s)://``."""
    return S3IndexStore(location, options)
