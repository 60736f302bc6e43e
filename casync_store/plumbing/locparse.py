"""Location strings, parsed once: the :class:`Location` value and the one redaction rule.

A location is a local path (scheme ``""``) or a URL ``scheme://netloc/path``
whose scheme has at least two characters (a one-letter "scheme" is a Windows
drive, and ``name:x`` without ``//`` is a path, as in desync).
:meth:`Location.parse` splits a string once (and remembers the last few, so
the store layer, the index layer and the config file share one parse); a
malformed URL (``http://[::1/x``) is a :class:`ParameterError` naming it.

:func:`redact` is how every message and log line shows a location: the
password of ``scheme://user:password@`` becomes ``***`` (``user:***@``, as Go's
HTTP client prints URLs); a user name without a password is kept for
``ssh://`` and ``sftp://`` (a login name) and masked for every other scheme,
where it is sent as a credential (``https://TOKEN@host``). It works on any
text (also on what cannot be parsed, on glob patterns and on ``a|b``
failover groups) and masks generously: everything up to the last ``@``
before the path counts as user information.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass

from casync_format.errors import ParameterError

__all__ = ["Location", "redact", "split_url", "MASK", "LOGIN_SCHEMES"]

#: What a password (or a user name used as a credential) is shown as.
MASK = "***"
#: Schemes whose user name is a login name, not a secret.
LOGIN_SCHEMES = frozenset({"ssh", "sftp"})

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+)://")
# Generous on purpose: any "xxx://" (also glob patterns such as "http?://"), and
# user information up to the last "@" before the next "/".
_USERINFO = re.compile(r"(?P<scheme>[^/:|@]*)://(?P<info>[^/]*)@")


def _mask(m: re.Match[str]) -> str:
    scheme, info = m.group("scheme"), m.group("info")
    user, colon, _ = info.partition(":")
    if colon:
        shown = f"{user}:{MASK}"
    elif scheme.lower() in LOGIN_SCHEMES:
        shown = info
    else:
        shown = MASK
    return f"{scheme}://{shown}@"


def redact(text: str) -> str:
    """``text`` as messages show it: passwords (and credential user names) in URLs as ``***``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(_mask, text)


def split_url(location: str) -> urllib.parse.SplitResult:
    """``urllib.parse.urlsplit``, with a malformed URL (``http://[::1/x``) as a ParameterError naming it."""
    try:
        return urllib.parse.urlsplit(location)
    except ValueError as exc:
        raise ParameterError(f"invalid location {redact(location)!r}: {exc}") from None


@dataclass(frozen=True, repr=False)
class Location:
    """One location string, split once. URL parts are as written (still percent-encoded).

    For a local path ``scheme`` is ``""``, ``path`` is the text and every
    other part is empty. ``host`` is lower-case without IPv6 brackets;
    ``port_valid`` is False for a port that is not a number from 0 to 65535
    (``port`` is then None). ``str()`` and ``repr()`` never show a password.
    """

    text: str
    scheme: str = ""
    netloc: str = ""
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    port_valid: bool = True
    path: str = ""
    query: str = ""
    fragment: str = ""

    @staticmethod
    def parse(text: str) -> Location:
        """The :class:`Location` of ``text``; raises :class:`ParameterError` for a malformed URL."""
        return _parse(text)

    @property
    def is_url(self) -> bool:
        """Whether the location is a URL (``file://`` included), not a plain path."""
        return self.scheme != ""

    @property
    def is_remote(self) -> bool:
        """Whether the location names another machine's store (a URL other than ``file://``)."""
        return self.scheme not in ("", "file")

    @property
    def hostport(self) -> str:
        """The netloc without user information: ``host[:port]`` as written."""
        return self.netloc.rpartition("@")[2]

    @property
    def rest(self) -> str:
        """Everything after ``scheme://`` (the whole text for a local path)."""
        return self.text[len(self.scheme) + 3 :] if self.scheme else self.text

    def with_path(self, path: str, query: str | None = None) -> str:
        """The URL with another path (and query; the same one by default), without fragment."""
        return urllib.parse.urlunsplit(
            (self.scheme, self.netloc, path, self.query if query is None else query, "")
        )

    def redacted(self) -> str:
        """The location as messages show it (see :func:`redact`)."""
        return redact(self.text)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"Location({self.redacted()!r})"


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> Location:
    m = _SCHEME.match(text)
    if m is None:
        return Location(text, path=text)
    parts = split_url(text)
    try:
        port, port_valid = parts.port, True
    except ValueError:
        port, port_valid = None, False
    return Location(
        text,
        scheme=m.group(1).lower(),
        netloc=parts.netloc,
        user=parts.username,
        password=parts.password,
        host=parts.hostname or "",
        port=port,
        port_valid=port_valid,
        path=parts.path,
        query=parts.query,
        fragment=parts.fragment,
    )
