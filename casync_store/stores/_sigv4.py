"""AWS Signature Version 4 for S3 requests, in the ``Authorization`` header (stdlib hmac and hashlib only).

The S3 store's fast path signs its single-object GET, HEAD and PUT requests
here instead of in botocore. The canonical request is built as S3 defines
it and as botocore's ``S3SigV4Auth`` builds it:

- the URI is the request path exactly as sent: the object key
  percent-encoded once by :func:`quote_key` (everything but unreserved
  characters and ``/``); S3 neither normalises it (``a/../b`` and ``//``
  stay) nor encodes it a second time, unlike other AWS services;
- no query string;
- every header given is signed, plus ``host``, ``x-amz-date``,
  ``x-amz-content-sha256`` and, with a session token,
  ``x-amz-security-token``: names lower-cased and sorted, values trimmed
  with inner runs of spaces collapsed;
- the payload hash is the caller's: :data:`UNSIGNED_PAYLOAD` or the body's
  SHA-256 in hex (:func:`payload_hash`).

:func:`sign` returns the headers to send; it keeps no state, so refreshed
credentials are simply passed in with the next request.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping

__all__ = ["ALGORITHM", "UNSIGNED_PAYLOAD", "payload_hash", "quote_key", "sign"]

#: The signing algorithm named in the Authorization header.
ALGORITHM = "AWS4-HMAC-SHA256"
#: The payload hash of a request whose body is not signed (S3 accepts it for any body).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_TIMESTAMP = "%Y%m%dT%H%M%SZ"


def quote_key(key: str) -> str:
    """An object key as an S3 request path (and canonical URI) segment: UTF-8, percent-encoded once."""
    return urllib.parse.quote(key, safe="/~")


def payload_hash(body: bytes) -> str:
    """The ``x-amz-content-sha256`` value that signs ``body``."""
    return hashlib.sha256(body).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def sign(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    payload: str,
    credentials: tuple[str, str, str | None],
    region: str,
    service: str = "s3",
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """The headers of a signed request: ``headers`` plus the signed and the ``Authorization`` ones.

    ``path`` is the request path as sent (see :func:`quote_key`), ``host``
    the ``Host`` header value, ``payload`` the payload hash,
    ``credentials`` (access key id, secret key, session token or None or
    ""), ``now`` the signing time in UTC (the clock when None).
    """
    access_key, secret_key, token = credentials
    stamp = now.strftime(_TIMESTAMP) if now is not None else time.strftime(_TIMESTAMP, time.gmtime())
    out = dict(headers)
    out["Host"] = host
    out["X-Amz-Date"] = stamp
    out["X-Amz-Content-SHA256"] = payload
    if token:
        out["X-Amz-Security-Token"] = token
    canonical = {name.lower(): " ".join(value.split()) for name, value in out.items()}
    names = sorted(canonical)
    signed = ";".join(names)
    request = "\n".join((
        method.upper(), path, "",
        "".join(f"{name}:{canonical[name]}\n" for name in names),
        signed, payload,
    ))  # fmt: skip
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(request.encode("utf-8")).hexdigest()
    to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{digest}"
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), stamp[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return out
