"""S3 chunk and index stores (``s3+http(s)://host[:port]/bucket[/prefix]``) in desync's layout, over boto3.

A location names an S3-compatible endpoint, a bucket and an optional key
prefix; ``?lookup=path|dns|auto`` picks path-style, virtual-host ("dns") or
boto's automatic addressing (path-style for any endpoint but AWS's). Chunks
are the objects ``<prefix>/xxxx/<id>.cacnk`` (as in local stores and desync),
indexes the objects ``<prefix>/<name>``; listings stream one
ListObjectsV2 page at a time, prune deletes in batches, and
:func:`upgrade_s3` moves desync's old flat layout. One thread-safe boto3
client per store carries every request: ``options.concurrency`` pooled
connections (``-n``, default 10; more threads wait for one),
``options.timeout`` for connecting and each read
(desync's one minute when unset, negative = no limit), ``options.error_retry``
retries with botocore's "standard" backoff on throttling, 5xx and connection
errors (botocore picks the delays; ``error_retry_base_interval`` only spaces
the retries of short chunk bodies), TLS verification per ``trust_insecure``
and ``ca_cert`` and a client certificate. Credentials are chosen as desync
chooses them: ``S3_ACCESS_KEY``/``S3_SECRET_KEY``/``S3_SESSION_TOKEN``, else
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, else
the config file's ``s3-credentials`` entry (``options.s3_credentials``: keys,
or an AWS shared credentials file and profile), else boto3's standard chain,
and unsigned (anonymous) requests when that finds nothing. The region is
``S3_REGION``, else the entry's ``aws-region``, else the chain's, else
``us-east-1``. Messages name the store location and never a key or token.
boto3 is imported only when a store is opened (extra ``s3``).
"""

from __future__ import annotations

import configparser
import contextlib
import io
import itertools
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

from casync_format.errors import ChunkMissing, IndexNotFound, MissingDependency, ParameterError, StoreError

from .config import S3Credentials, StoreOptions, split_url
from .http import MAX_BLOB_SIZE
from .indexstore import WriteIndexStore, check_index_name
from .progress import Progress, phase
from .store import PruneStore

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

#: Connections per store when ``options.concurrency`` is 0 (desync's ``-n`` default).
DEFAULT_CONCURRENCY = 10
#: The region signed for when nothing names one.
DEFAULT_REGION = "us-east-1"
#: Keys asked for per ListObjectsV2 page (S3's maximum; tests lower it).
LIST_PAGE_SIZE = 1000
#: Keys removed per DeleteObjects request while pruning (S3's maximum).
DELETE_BATCH = 1000
#: Bytes per part of a multipart index upload; smaller indexes take one PUT (S3's minimum is 5 MiB).
INDEX_PART_SIZE = 8 << 20

_DEFAULT_TIMEOUT = 60.0
_NO_TIMEOUT = 7 * 86400.0  # botocore has no "none"; a week stands for it
_LOOKUPS = {"auto": "auto", "path": "path", "dns": "virtual"}
_MISSING = ("NoSuchKey", "NotFound", "404")
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "403", "401", "Forbidden")  # fmt: skip
_CHUNK_KEY = re.compile(r"([0-9a-f]{4})/(\1[0-9a-f]{60})\.cacnk\Z")
_OLD_CHUNK_KEY = re.compile(r"[0-9a-f]{64}\Z")
_PROFILE_KEYS = ("access_key_id", "secret_access_key", "session_token")
_TYPE = "application/octet-stream"
_READ_STEP = 1 << 20


def _boto() -> Any:
    """The boto3 module, or MissingDependency("s3", "boto3")."""
    try:
        import boto3
    except ImportError:
        raise MissingDependency("s3", "boto3") from None
    return boto3


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
    parts = split_url(location)
    if parts.scheme not in ("s3+http", "s3+https"):
        raise ParameterError(f"store {location}: not an s3+http:// or s3+https:// location")
    if "@" in parts.netloc:
        raise ParameterError(
            f"S3 location s3+{parts.scheme[3:]}://{parts.netloc.rpartition('@')[2]}{parts.path}: "
            "credentials in the URL are not supported (use S3_ACCESS_KEY/S3_SECRET_KEY or s3-credentials)"
        )
    if not parts.hostname:
        raise ParameterError(f"store {location}: no host in the S3 location")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ParameterError(f"store {location}: invalid port") from None
    bucket, _, prefix = urllib.parse.unquote(parts.path).strip("/").partition("/")
    if not bucket:
        raise ParameterError(f"store {location}: no bucket in the S3 location (s3+http://host/bucket/prefix)")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    lookup = (query.pop("lookup", None) or ["auto"])[-1] or "auto"
    if lookup not in _LOOKUPS:
        raise ParameterError(f"store {location}: unknown S3 bucket lookup {lookup!r} (use path, dns or auto)")
    if query:
        raise ParameterError(f"store {location}: unknown parameter {sorted(query)[0]!r} (only lookup=)")
    prefix = "/".join(p for p in prefix.split("/") if p)
    return S3Location(
        location=location,
        endpoint=f"{parts.scheme[3:]}://{parts.netloc}",
        bucket=bucket,
        prefix=prefix + "/" if prefix else "",
        addressing=_LOOKUPS[lookup],
    )


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class _Credentials:
    source: str  # where they came from, for logs (never the values)
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    region: str = ""
    chain: bool = False  # use boto3's standard chain


def _profile(path: str, profile: str, where: str) -> tuple[str, str, str]:
    """(key id, secret, token) of ``profile`` in an AWS shared credentials file."""
    parser = configparser.RawConfigParser()
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise StoreError(f"store {where}: cannot read AWS credentials file {path}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError):
        raise StoreError(f"store {where}: AWS credentials file {path} is not an INI file") from None
    if not parser.has_section(profile):
        raise StoreError(f"store {where}: AWS credentials file {path} has no profile {profile!r}")
    section = parser[profile]
    access, secret, token = (section.get(f"aws_{k}", "").strip() for k in _PROFILE_KEYS)
    if not access or not secret:
        raise StoreError(f"store {where}: profile {profile!r} of {path} lacks a key id or secret")
    return access, secret, token


def _credentials(where: str, entry: S3Credentials | None) -> _Credentials:
    """Pick the credentials for a store, in desync's order (see the module docstring)."""
    env = os.environ
    region = env.get("S3_REGION", "")
    for names in (("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN"),
                  ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")):  # fmt: skip
        access, secret, token = (env.get(n, "") for n in names)
        if access or secret:
            return _Credentials(f"environment {names[0]}", access, secret, token, region)
    if entry is not None:
        region = region or entry.aws_region
        if entry.access_key:
            return _Credentials("config access-key", entry.access_key, entry.secret_key, "", region)
        if entry.aws_credentials_file:
            profile = entry.aws_profile or env.get("AWS_PROFILE") or "default"
            keys = _profile(entry.aws_credentials_file, profile, where)
            return _Credentials(f"config aws-credentials-file, profile {profile}", *keys, region)
    return _Credentials("AWS default credential chain", region=region, chain=True)


# --------------------------------------------------------------------------- the client


def _timeout(seconds: float | None) -> float:
    if seconds is None or seconds == 0:
        return _DEFAULT_TIMEOUT
    return _NO_TIMEOUT if seconds < 0 else float(seconds)


def _session(creds: _Credentials, where: str) -> tuple[Any, bool]:
    """A boto3 session with the chosen credentials, and whether requests go unsigned."""
    boto3 = _boto()
    from botocore.exceptions import BotoCoreError

    try:
        if not creds.chain:
            return boto3.session.Session(
                aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key,
                aws_session_token=creds.token or None,
                region_name=creds.region or None,
            ), False
        session = boto3.session.Session(region_name=creds.region or None)
        return session, session.get_credentials() is None
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise StoreError(f"store {where}: S3 credentials: {exc}") from None


def _client_config(options: StoreOptions, where: S3Location, region: str, anonymous: bool) -> Any:
    """botocore's Config for a store: pool, timeouts, retries, addressing, TLS client certificate."""
    import botocore
    from botocore.config import Config

    settings: dict[str, Any] = {
        "region_name": region,
        "connect_timeout": _timeout(options.timeout),
        "read_timeout": _timeout(options.timeout),
        "retries": {"max_attempts": max(0, options.error_retry), "mode": "standard"},
        "max_pool_connections": options.concurrency or DEFAULT_CONCURRENCY,
        "s3": {"addressing_style": where.addressing},
    }
    if anonymous:
        settings["signature_version"] = botocore.UNSIGNED
    if options.client_cert:
        key = options.client_key
        settings["client_cert"] = (options.client_cert, key) if key else options.client_cert
    if "request_checksum_calculation" in Config.OPTION_DEFAULTS:
        # Many S3-compatible servers reject the CRC trailers newer botocore sends by default.
        settings["request_checksum_calculation"] = "when_required"
        settings["response_checksum_validation"] = "when_required"
    return Config(**settings)


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
    """One boto3 client bound to a bucket and prefix; turns boto's errors into ours."""

    def __init__(self, where: S3Location, options: StoreOptions) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError as URLLib3Error  # botocore's transport

        self.where = where
        self.bucket = where.bucket
        self.retries = max(0, options.error_retry)
        self.retry_interval = max(0.0, options.error_retry_base_interval)
        creds = _credentials(where.location, options.s3_credentials)
        session, anonymous = _session(creds, where.location)
        self.credentials_source = "none found: anonymous requests" if anonymous else creds.source
        log.debug("store %s: S3 credentials from %s", where.location, self.credentials_source)
        config = _client_config(options, where, session.region_name or DEFAULT_REGION, anonymous)
        verify: bool | str = False if options.trust_insecure else (options.ca_cert or True)
        self.client = session.client("s3", endpoint_url=where.endpoint, verify=verify, config=config)
        #: One slot per pooled connection: more threads wait rather than open (and drop) extra connections.
        self.slots = threading.BoundedSemaphore(config.max_pool_connections)
        #: transport errors (connection, timeout, short body: urllib3's are not always wrapped)
        self.errors: tuple[type[BaseException], ...] = (BotoCoreError, URLLib3Error)
        self.client_error: type[BaseException] = ClientError

    def error(self, exc: BaseException, what: str) -> StoreError:
        """A one-line StoreError for a boto error (never showing credentials)."""
        loc = self.where.location
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            return StoreError(f"store {loc}: {what}: {exc}".splitlines()[0])
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
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
        """``client.<op>(Bucket=..., **kwargs)``; KeyError for a missing key, StoreError otherwise."""
        with self.slots:
            return self._call(op, what, kwargs)

    def _call(self, op: str, what: str, kwargs: dict[str, Any]) -> Any:
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except self.client_error as exc:
            if self.missing(exc):
                raise KeyError(kwargs.get("Key")) from None
            raise self.error(exc, what) from None
        except self.errors as exc:
            raise self.error(exc, what) from None

    def read(self, key: str, limit: int, what: str) -> bytes:
        """A whole object of at most ``limit`` bytes; bodies cut short are retried."""
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
            try:
                data = _read_body(body, limit) if declared <= limit else b""
            except (OSError, *self.errors) as exc:
                raise _BrokenBody(exc) from None
            finally:
                body.close()
        if max(declared, len(data)) > limit:
            raise StoreError(f"store {self.where.location}: {what} is larger than {limit} bytes")
        return data

    def exists(self, key: str, what: str) -> bool:
        try:
            self.call("head_object", f"HEAD {what}", Key=key)
        except KeyError:
            return False
        return True

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
        except KeyError:  # HEAD has no error code: a 404 is the bucket's absence
            raise StoreError(f"store {self}: bucket {self._s3.bucket} does not exist") from None

    def chunk_key(self, chunk_id: bytes) -> str:
        """The object key of a chunk."""
        name = chunk_id.hex()
        return f"{self.where.prefix}{name[:4]}/{name}.cacnk"

    def get_raw(self, chunk_id: bytes) -> bytes:
        try:
            return self._s3.read(self.chunk_key(chunk_id), MAX_BLOB_SIZE, f"chunk {chunk_id.hex()}")
        except KeyError:
            raise ChunkMissing(chunk_id, self) from None

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._s3.exists(self.chunk_key(chunk_id), f"chunk {chunk_id.hex()}")

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        what, key = f"PUT chunk {chunk_id.hex()}", self.chunk_key(chunk_id)
        self._s3.call("put_object", what, Key=key, Body=bytes(blob), ContentType=_TYPE)

    def iter_chunk_ids(self) -> Iterator[bytes]:
        start = len(self.where.prefix)
        for key in self._s3.keys(self.where.prefix):
            m = _CHUNK_KEY.match(key, start)
            if m:
                yield bytes.fromhex(m.group(2))

    def remove_chunk(self, chunk_id: bytes) -> None:
        with contextlib.suppress(KeyError):
            self._s3.call("delete_object", f"DELETE chunk {chunk_id.hex()}", Key=self.chunk_key(chunk_id))

    def prune(self, keep: set[bytes] | frozenset[bytes]) -> int:
        """Remove chunks not in ``keep``, up to :data:`DELETE_BATCH` per request; returns how many."""
        count = 0
        batch: list[bytes] = []
        for cid in self.iter_chunk_ids():
            if cid not in keep:
                batch.append(cid)
            if len(batch) >= DELETE_BATCH:
                count += self._remove_many(batch)
                batch = []
        return count + (self._remove_many(batch) if batch else 0)

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


def open_s3(location: str, options: StoreOptions) -> S3Store:
    """The :data:`~casync_store.location.BACKENDS` factory for ``s3+http(s)://``."""
    return S3Store(location, options)


def upgrade_s3(store: S3Store, progress: Progress | None = None) -> int:
    """Move chunks from desync's old flat layout (``<prefix><id>``) to ``<prefix>/xxxx/<id>.cacnk``.

    Each old object is copied to its new key, then deleted; the listing is
    streamed, and running it again (also after an interruption) converts
    what is left. Returns the number of objects converted.
    """
    s3 = store._s3
    moved = 0
    with phase(progress, "Upgrading", 0):
        for key in s3.keys(store.where.prefix):
            name = key[len(store.where.prefix) :]
            if not _OLD_CHUNK_KEY.match(name):
                continue
            try:
                s3.call("copy_object", f"copy {key}", Key=store.chunk_key(bytes.fromhex(name)),
                        CopySource={"Bucket": s3.bucket, "Key": key})  # fmt: skip
                s3.call("delete_object", f"DELETE {key}", Key=key)
            except KeyError:  # moved by a concurrent upgrade since it was listed
                continue
            moved += 1
            if progress is not None:
                progress.add(1)
    return moved


# --------------------------------------------------------------------------- index store


class _BodyReader(io.RawIOBase):
    """A readable raw stream over an S3 object body; errors become StoreError."""

    def __init__(
        self, body: Any, wrap: Callable[[BaseException], StoreError], errors: tuple[type, ...]
    ) -> None:
        self._body = body
        self._wrap = wrap
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (OSError, *self._errors) as exc:
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
        except KeyError:
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
            parts, left = [], size
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
            except (KeyError, StoreError) as exc:
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
    """The :data:`~casync_store.indexstore.INDEX_BACKENDS` factory for ``s3+http(s)://``."""
    return S3IndexStore(location, options)
