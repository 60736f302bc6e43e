"""How an S3 store reaches its endpoint: the boto3 client (credentials, region, retries, TLS), the fast path.

:func:`make_client` picks the credentials in desync's order
(``S3_ACCESS_KEY``/``S3_SECRET_KEY``/``S3_SESSION_TOKEN``, then the ``AWS_*``
variables, then the config's ``s3-credentials`` entry: keys, or an AWS shared
credentials file and profile; then boto3's standard chain; else anonymous)
and builds one thread-safe boto3 client for a location, with the store's
pool size, timeouts, "standard" retries, addressing style and TLS settings.
:func:`fast_path` sets up the signed single-object requests that bypass
botocore's per-call cost (see :mod:`.s3` for when they are used): it asks
botocore, in-process and without sending anything, where it would send a
HeadObject and for which region it would sign, then signs requests itself
(:mod:`._sigv4`) and sends them through :mod:`.http`'s pooled request loop.
boto3 is imported only when a client is made (extra ``s3``).

:class:`NoSuchObject` is the one signal for "S3 has no such object": the
bucket wrapper of :mod:`.s3` raises it for a 404 (boto3's NoSuchKey and
friends, or the fast path's) and the stores turn it into ChunkMissing,
IndexNotFound or ``False``; any other exception stays what it is. This
module never imports :mod:`.s3`: it knows a location only through the
:class:`BucketAddress` protocol.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import types
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Protocol

from casync_format.errors import MissingDependency, ParameterError, StoreError

from ..plumbing.config import S3Credentials, StoreOptions
from . import _sigv4
from .http import _HTTPBase

__all__ = [
    "DEFAULT_CONCURRENCY", "DEFAULT_REGION", "BucketAddress", "Client", "FastPath", "NoSuchObject",
    "fast_path", "load_boto3", "make_client",
]

log = logging.getLogger("casync_store.stores.s3")

#: Connections per store when ``options.concurrency`` is 0 (desync's ``-n`` default).
DEFAULT_CONCURRENCY = 10
#: The region signed for when nothing names one.
DEFAULT_REGION = "us-east-1"

_DEFAULT_TIMEOUT = 60.0
_NO_TIMEOUT = 7 * 86400.0  # botocore has no "none"; a week stands for it
_PROFILE_KEYS = ("access_key_id", "secret_access_key", "session_token")
_TYPE = "application/octet-stream"


class NoSuchObject(Exception):
    """S3 says the object does not exist (HTTP 404 / NoSuchKey); :attr:`key` names it (None: unknown)."""

    def __init__(self, key: str | None) -> None:
        super().__init__(key)
        self.key = key


class BucketAddress(Protocol):
    """What the client needs to know of a parsed S3 location (:class:`.s3.S3Location` is one)."""

    @property
    def location(self) -> str:
        """The location as given, for messages."""

    @property
    def endpoint(self) -> str:
        """``http(s)://host[:port]``."""

    @property
    def bucket(self) -> str:
        """The bucket's name."""

    @property
    def addressing(self) -> str:
        """botocore's addressing style: auto, path or virtual."""


def load_boto3() -> Any:
    """The boto3 module, or MissingDependency("s3", "boto3")."""
    try:
        import boto3
    except ImportError:
        raise MissingDependency("s3", "boto3") from None
    return boto3


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
    boto3 = load_boto3()
    from botocore.exceptions import BotoCoreError

    try:
        if not creds.chain:
            # Keys chosen here need no AWS profile: $AWS_PROFILE may name one of the
            # aws-credentials-file's profiles that ~/.aws does not know (botocore would refuse it).
            import botocore.session

            no_profile = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
            return boto3.session.Session(
                aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key,
                aws_session_token=creds.token or None,
                region_name=creds.region or None,
                botocore_session=no_profile,
            ), False
        session = boto3.session.Session(region_name=creds.region or None)
        return session, session.get_credentials() is None
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise StoreError(f"store {where}: S3 credentials: {exc}") from None


def _client_config(options: StoreOptions, where: BucketAddress, region: str, anonymous: bool) -> Any:
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


@dataclass
class Client:
    """A store's boto3 client and what was decided making it."""

    client: Any
    session: Any
    anonymous: bool
    credentials_source: str  #: where the credentials came from (never their values)
    pool_size: int


def make_client(where: BucketAddress, options: StoreOptions) -> Client:
    """The boto3 client for a location: credentials and region chosen, pool, retries, TLS set."""
    creds = _credentials(where.location, options.s3_credentials)
    session, anonymous = _session(creds, where.location)
    source = "none found: anonymous requests" if anonymous else creds.source
    log.debug("store %s: S3 credentials from %s", where.location, source)
    config = _client_config(options, where, session.region_name or DEFAULT_REGION, anonymous)
    verify: bool | str = False if options.trust_insecure else (options.ca_cert or True)
    client = session.client("s3", endpoint_url=where.endpoint, verify=verify, config=config)
    return Client(client, session, anonymous, source, config.max_pool_connections)


class FastPath(_HTTPBase):
    """Single-object requests signed by :mod:`._sigv4` and sent by :mod:`.http`'s request loop."""

    def __init__(self, where: BucketAddress, options: StoreOptions, base: str, credentials: Any,
                 region: str) -> None:  # fmt: skip
        super().__init__(base, options)  # TLS, proxy, timeout, a pool of ``concurrency`` connections
        self.location = where.location  # messages name the S3 location
        self.attempts = 1 + max(0, options.error_retry)  # retries, as botocore counts them
        parts = urllib.parse.urlsplit(base)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
        default = 443 if parts.scheme == "https" else 80
        self.host_header = host if parts.port in (None, default) else f"{host}:{parts.port}"
        self._credentials = credentials  # botocore's (perhaps refreshable) credentials; None: anonymous
        self._region = region

    def _make_headers(self, parts: Any, options: StoreOptions) -> dict[str, str]:
        return {"User-Agent": "pycasync"}  # http-auth and cookies are the HTTP store's, not S3's

    def _send(self, conn: Any, method: str, path: str, body: Any) -> Any:
        """Sign (afresh for every attempt, with the credentials of the moment) and send."""
        signed = {"Content-Type": _TYPE} if body is not None else {}
        if self._credentials is None:
            signed["Host"] = self.host_header
        else:
            payload = _sigv4.UNSIGNED_PAYLOAD if body is None else _sigv4.payload_hash(body)
            now = self._credentials.get_frozen_credentials()
            keys = (now.access_key, now.secret_key, now.token)
            signed = _sigv4.sign(method, self.host_header, path, signed, payload, keys, self._region)
        conn.request(method, self._origin + path, body=body, headers={**self._headers, **signed})
        return conn.getresponse()

    def request(self, method: str, key: str, what: str, body: bytes | None, limit: int) -> tuple[int, bytes]:
        """(status, body) of the first answer that is not a 5xx (TooLarge: a 200 body above ``limit``)."""
        status, _reason, data = self._call(method, self.base_path + _sigv4.quote_key(key), what, body, limit)
        return status, data  # type: ignore[return-value]


def _probe(client: Any, bucket: str) -> tuple[str, str]:
    """(URL, Authorization header) of the HeadObject of key "x" botocore would send: made, never sent."""
    from botocore.awsrequest import AWSResponse

    seen: list[Any] = []

    def answer(request: Any, **_: Any) -> Any:
        seen[:] = [request.url, request.headers.get("Authorization") or ""]
        return AWSResponse(request.url, 200, {}, types.SimpleNamespace(stream=lambda: iter(())))

    events, uid = client.meta.events, "pycasync-s3-probe"
    events.register_first("before-send.s3.HeadObject", answer, unique_id=uid)
    try:
        client.head_object(Bucket=bucket, Key="x")
    finally:
        events.unregister("before-send.s3.HeadObject", unique_id=uid)
    url, auth = seen
    return url, auth.decode("latin-1") if isinstance(auth, bytes) else auth


def fast_path(client: Any, session: Any, where: BucketAddress, options: StoreOptions,
               anonymous: bool) -> FastPath | None:  # fmt: skip
    """The fast path to where botocore sends this bucket's requests, or None (see the module)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if ":" in where.bucket or where.bucket.endswith("--x-s3"):
        return None  # ARNs and S3 Express: not plain SigV4 to one host
    try:  # botocore's own URL (addressing) and signature (region) of a request
        url, auth = _probe(client, where.bucket)
    except (BotoCoreError, ClientError, ValueError) as exc:
        log.debug("store %s: no S3 fast path: %s", where.location, str(exc).splitlines()[0])
        return None
    parts = urllib.parse.urlsplit(url)
    scope = re.match(r"AWS4-HMAC-SHA256 Credential=[^/,]*/\d{8}/([^/,]+)/s3/aws4_request,", auth)
    if parts.scheme not in ("http", "https") or parts.query or not parts.path.endswith("/x") or (
        not scope and not (anonymous and not auth)
    ):
        log.debug("store %s: no S3 fast path: botocore signs for this bucket differently", where.location)
        return None
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path[:-1], "", ""))
    credentials = None if anonymous else session.get_credentials()
    try:
        fast = FastPath(where, options, base, credentials, scope.group(1) if scope else "")
    except (ParameterError, StoreError) as exc:  # e.g. an https:// proxy: botocore's errors will tell
        log.debug("store %s: no S3 fast path: %s", where.location, exc)
        return None
    log.debug("store %s: S3 fast path to %s%s", where.location, fast.host_header, fast.base_path)
    return fast
