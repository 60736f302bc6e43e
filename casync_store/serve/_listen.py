"""Where the HTTP servers listen: desync's listen addresses, bound sockets, and the TLS context.

:func:`parse_listen` splits ``[HOST]:PORT`` (IPv6 in brackets, service
names allowed), :func:`bind` opens a listening socket for one (an empty
host: IPv6 dual-stack), :func:`server_context` builds the server-side SSL
context of a :class:`TLSOptions` (TLS 1.2 or later; client certificates
required with mutual TLS).
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from casync_format.errors import CasyncError, ParameterError

__all__ = ["TLSOptions", "parse_listen", "bind", "server_context"]

_SERVICE_PORTS = {"http": 80, "https": 443}


@dataclass
class TLSOptions:
    """Serve HTTPS with ``cert``/``key`` (PEM); ``mutual`` requires a client cert signed by ``client_ca``."""

    cert: str
    key: str
    client_ca: str | None = None
    mutual: bool = False


def parse_listen(address: str) -> tuple[str, int]:
    """Split a desync listen address into (host, port); host "" means every interface."""
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":") or ":" not in host:
            raise ParameterError(f"invalid listen address {address!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or ":" in host:
            raise ParameterError(f"invalid listen address {address!r}: expected [HOST]:PORT")
    if not host.strip() == host or any(c.isspace() for c in host):
        raise ParameterError(f"invalid listen address {address!r}")
    return host, _parse_port(address, port_text)


def _parse_port(address: str, text: str) -> int:
    if re.fullmatch(r"[0-9]{1,5}", text):
        port = int(text)
        if port <= 65535:
            return port
    elif re.fullmatch(r"[a-z][a-z0-9-]*", text):
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            if text in _SERVICE_PORTS:
                return _SERVICE_PORTS[text]
    raise ParameterError(f"invalid port in listen address {address!r}")


def bind(address: str) -> socket.socket:
    """A listening socket for a desync listen address ("" host: IPv6 dual-stack, else IPv4)."""
    host, port = parse_listen(address)
    candidates: list[tuple[int, Any]]
    try:
        if host == "":
            candidates = [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
        else:
            infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
            candidates = [(info[0], info[4]) for info in infos[:1]]
    except socket.gaierror as exc:
        raise ParameterError(f"cannot listen on {address}: {exc.strerror}") from None
    error: OSError | None = None
    for family, sockaddr in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host == "":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(sockaddr)
            sock.listen(256)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    # A busy or forbidden port is a failure at run time (exit 1), not a usage error.
    raise CasyncError(f"cannot listen on {address}: {getattr(error, 'strerror', None) or error}")


def server_context(tls: TLSOptions) -> ssl.SSLContext:
    """The server-side SSL context for ``tls`` (TLS >= 1.2; client certs required when mutual)."""
    if tls.mutual and not tls.client_ca:
        raise ParameterError("mutual TLS requires a client CA (--client-ca)")
    if tls.client_ca and not tls.mutual:
        raise ParameterError("a client CA (--client-ca) requires mutual TLS (--mutual-tls)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ParameterError(f"cannot load TLS certificate {tls.cert} / key {tls.key}: {exc}") from None
    if tls.mutual:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=tls.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ParameterError(f"cannot load client CA {tls.client_ca}: {exc}") from None
    return ctx
