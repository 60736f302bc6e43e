"""Server commands: pull and push (casync's remote protocol on stdin/stdout), chunk-server and index-server.

They hand stores to other machines by calling one server of
:mod:`casync_store.serve`; the listening, TLS, authorization and logging flags
of the two HTTP servers are :func:`add_server_flags`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from casync_format.encrypt import ChunkCipher, make_cipher
from casync_format.errors import ParameterError

from ._common import Command, Context, add_store_flags, add_stores, require
from ._parser import PROG, Parser, nonnegative_int, positive_duration, positive_int
from ._storefile import add_store_file_flag, check_store_file_flags, open_store_file

__all__ = [
    "Pull", "Push", "ChunkServer", "IndexServer",
    "add_pull_flags", "add_server_flags", "server_tls", "server_limits", "announce",
]


def add_pull_flags(p: Any, top: bool) -> None:
    """The options casync's client passes to the remote command, before or after ``pull``."""
    dflt = None if top else argparse.SUPPRESS
    p.add_argument("--log-level", metavar="LEVEL", default=dflt,
                   help="casync's log level (accepted, for pull)")
    p.add_argument("--rate-limit-bps", type=nonnegative_int, metavar="N", default=dflt,
                   help="limit pull's sending rate to N bytes per second")


class Pull(Command):
    """``pull``: serve chunks (and an index) to a casync/desync client on stdin/stdout."""

    name = "pull"
    summary = "Serve chunks over stdin/stdout with casync's remote protocol"
    description = (
        "The server side of ssh:// stores: casync and desync clients run\n"
        "'ssh HOST casync pull - - - STORE' (set CASYNC_REMOTE_PATH=pycasync on the\n"
        "client to get this command instead). Chunks of the WSTORE and RSTORE\n"
        "arguments ('-' for none) are served read-only, tried in order; INDEX, when\n"
        "not '-', is the index file a client may ask for. --log-level and\n"
        "--rate-limit-bps, which casync passes before the command, are accepted."
    )
    examples = (
        "pycasync pull - - - /srv/store\n"
        "CASYNC_REMOTE_PATH=pycasync casync extract --store=host:/srv/store x.caibx x"
    )
    positionals = (
        ("base", "'-' (casync's base path)"),
        ("archive", "archive file or '-'"),
        ("index", "index file a client may fetch, or '-'"),
        ("wstore", "chunk store, or '-'"),
    )

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("rstore", nargs="*", help="more chunk stores, tried in order")
        add_pull_flags(p, top=False)

    def add_top_arguments(self, p: Parser) -> None:
        add_pull_flags(p, top=True)

    def run(self, ctx: Context) -> int:
        from casync_store.serve.pull import serve

        a = ctx.args
        locations = [loc for loc in (a.wstore, *a.rstore) if loc != "-"]
        with contextlib.ExitStack() as stack:
            stores = [ctx.open(stack, loc, must_exist=True) for loc in locations]
            serve(sys.stdin.buffer, sys.stdout.buffer, stores,
                  index_path=None if a.index == "-" else a.index,
                  archive_path=None if a.archive == "-" else a.archive,
                  rate_limit_bps=a.rate_limit_bps or None)
        return 0


class Push(Command):
    """``push``: take the chunks and index a casync client pushes on stdin/stdout."""

    name = "push"
    summary = "Receive chunks and an index over stdin/stdout with casync's remote protocol"
    description = (
        "The server side of 'casync make host:/srv/x.caibx DIR': casync runs\n"
        "'ssh host casync push - ARCHIVE INDEX WSTORE' (set CASYNC_REMOTE_PATH=pycasync\n"
        "on the client to get this command instead). The chunks the pushed index\n"
        "lists that no store (WSTORE, then the RSTORE arguments) holds are asked\n"
        "of the client, checked against their ids and stored in WSTORE; the index\n"
        "(and an ARCHIVE, when not '-') is renamed into place only once complete,\n"
        "with every chunk it needs stored. --log-level and --rate-limit-bps, which\n"
        "casync passes before the command, are accepted."
    )
    examples = (
        "pycasync push - - /srv/x.caibx /srv/store\n"
        "CASYNC_REMOTE_PATH=pycasync casync make --store=host:/srv/store host:/srv/x.caibx blob"
    )
    positionals = (
        ("base", "'-' (casync's base path)"),
        ("archive", "where a pushed archive goes, or '-'"),
        ("index", "where a pushed index goes, or '-'"),
        ("wstore", "chunk store the pushed chunks go to, or '-'"),
    )

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("rstore", nargs="*", help="more chunk stores whose chunks are not asked for")
        add_pull_flags(p, top=False)

    def run(self, ctx: Context) -> int:
        from casync_store.serve.push import receive

        a = ctx.args
        if a.base != "-":
            raise ParameterError("push: pushing to a base directory is not supported (casync neither)")
        with contextlib.ExitStack() as stack:
            wstore = ctx.open(stack, a.wstore, writable=True) if a.wstore != "-" else None
            rstores = [ctx.open(stack, loc, must_exist=True) for loc in a.rstore if loc != "-"]
            receive(sys.stdin.buffer, sys.stdout.buffer, wstore, rstores,
                    index_path=None if a.index == "-" else a.index,
                    archive_path=None if a.archive == "-" else a.archive)
        return 0


def add_server_flags(p: Parser, what: str) -> None:
    """Listening, TLS, authorization and logging flags of chunk-server and index-server."""
    p.add_argument("-l", "--listen", action="append", metavar="ADDRESS",
                   help="listen address, e.g. :8080 or 127.0.0.1:8080 (repeatable; default :http)")
    p.add_argument("-w", "--writable", "--writeable", action="store_true",
                   help=f"accept {what} by PUT" + (" (only with a single store)" if what == "chunks" else ""))
    p.add_argument("--cert", metavar="FILE", help="server certificate (PEM) for HTTPS, needs --key")
    p.add_argument("--key", metavar="FILE", help="server key (PEM) for HTTPS, needs --cert")
    p.add_argument("--mutual-tls", action="store_true",
                   help="require a client certificate signed by --client-ca (needs --cert and --key)")
    p.add_argument("--client-ca", metavar="FILE",
                   help="authorities that sign client certificates (needs --mutual-tls, --cert, --key)")
    p.add_argument("--authorization", metavar="VALUE",
                   help="required value of the Authorization header (default $DESYNC_HTTP_AUTH); allowed "
                   "without TLS as in desync, but then sent in clear text without --cert/--key")
    p.add_argument("--log", metavar="FILE", help="request log file ('-' for stdout)")
    g = p.add_argument_group("connection limits (against slow or greedy clients)")
    g.add_argument("--head-timeout", type=positive_duration, default=20.0, metavar="DURATION",
                   help="time a client has to send a complete request head, from its connection (or a "
                   "later request's first byte); trickling bytes does not extend it (default 20s)")
    g.add_argument("--idle-timeout", type=positive_duration, default=60.0, metavar="DURATION",
                   help="time a keep-alive connection may wait for its next request, and each read of "
                   "a body may wait (default 60s)")
    g.add_argument("--max-connections", type=positive_int, default=512, metavar="N",
                   help="open connections in all; when all are taken, the one waiting longest for its "
                   "request head is closed (default 512)")
    g.add_argument("--max-client-connections", type=positive_int, default=64, metavar="N",
                   help="open connections per client address (IPv4 address, IPv6 /64); more are "
                   "answered 503 and closed at once (default 64)")


def server_tls(a: argparse.Namespace) -> Any:
    """The TLSOptions of --cert/--key/--mutual-tls/--client-ca (None for plain HTTP).

    As desync's servers do, every combination that would quietly serve less
    than asked (a client CA or mutual TLS without a certificate, a client CA
    that nothing checks, mutual TLS trusting any CA) is a usage error, and so
    is an empty file name or an empty --authorization.
    """
    from casync_store.serve.httpserver import TLSOptions

    for flag, value in (("--cert", a.cert), ("--key", a.key), ("--client-ca", a.client_ca)):
        if value is not None and not value.strip():
            raise ParameterError(f"{flag} needs a file name, got an empty one")
    if getattr(a, "authorization", None) is not None and not a.authorization.strip():
        raise ParameterError("--authorization is empty: give the required Authorization header value")
    if (a.cert is None) != (a.key is None):
        raise ParameterError("--cert and --key must be given together")
    if a.cert is None:
        if a.mutual_tls:
            raise ParameterError("--mutual-tls needs --cert and --key (TLS must be enabled)")
        if a.client_ca is not None:
            raise ParameterError("--client-ca needs --cert and --key (TLS must be enabled)")
        return None
    if a.mutual_tls and a.client_ca is None:
        raise ParameterError("--mutual-tls needs --client-ca (the authorities that sign client certificates)")
    if a.client_ca is not None and not a.mutual_tls:
        raise ParameterError("--client-ca needs --mutual-tls (otherwise client certificates are not checked)")
    return TLSOptions(a.cert, a.key, client_ca=a.client_ca, mutual=a.mutual_tls)


def server_limits(a: argparse.Namespace) -> Any:
    """The Limits of --head-timeout, --idle-timeout, --max-connections, --max-client-connections."""
    from casync_store.serve.httpserver import Limits

    return Limits(head_timeout=a.head_timeout, idle_timeout=a.idle_timeout, io_timeout=a.idle_timeout,
                  max_connections=a.max_connections, max_client_connections=a.max_client_connections)


def _authorization(a: argparse.Namespace) -> str | None:
    """--authorization, else $DESYNC_HTTP_AUTH as desync's servers read it."""
    return a.authorization or os.environ.get("DESYNC_HTTP_AUTH") or None


def announce(command: str, what: object, tls: bool, mode: str) -> Callable[[list[tuple[str, int]]], None]:
    """The ``ready`` callback of a server: one line on stderr with its addresses, always.

    ``pycasync chunk-server: serving /srv/store on http://127.0.0.1:8080 (read-only)``;
    the store's name is redacted as in every message (no password of a URL).
    """
    from casync_store.plumbing.locparse import redact

    scheme = "https" if tls else "http"

    def ready(addresses: list[tuple[str, int]]) -> None:
        hosts = [(f"[{host}]" if ":" in host else host, port) for host, port in addresses]
        urls = ", ".join(f"{scheme}://{host}:{port}" for host, port in hosts)
        sys.stderr.write(f"{PROG} {command}: serving {redact(str(what))} on {urls} ({mode})\n")
        sys.stderr.flush()

    return ready


class ChunkServer(Command):
    """``chunk-server``: serve stores over HTTP(S) until SIGTERM/SIGINT."""

    name = "chunk-server"
    summary = "Serve a store over HTTP(S)"
    description = (
        "Serves the chunks of the stores given with -s (tried in order, through an\n"
        "optional cache -c; remote stores make it a caching proxy) at\n"
        "/xxxx/<id>.cacnk, the layout casync's and desync's HTTP clients read.\n"
        "Read-only unless -w, which accepts PUT of chunks (verified against their\n"
        "id) into the single store. -u serves uncompressed chunks at /xxxx/<id>.\n"
        "With --cert and --key it serves HTTPS; --mutual-tls --client-ca FILE also\n"
        "requires client certificates signed by FILE. --mutual-tls or --client-ca\n"
        "without --cert/--key (or one without the other) is a usage error, never\n"
        "plain HTTP. --authorization works without TLS, as in desync, but its value\n"
        "is then sent in clear text. A client must send each request head within\n"
        "--head-timeout (one deadline, however slowly it trickles), may hold at most\n"
        "--max-client-connections connections per address (more are answered 503 at\n"
        "once), and when --max-connections are open the connection that has waited\n"
        "longest for its head is closed: a slowloris attack does not starve real\n"
        "clients. --store-file FILE takes the stores and cache from desync's JSON\n"
        "file instead of -s/-c and reads it again on SIGHUP: requests in flight\n"
        "finish on the old stores, new ones go to the new. Once listening it prints\n"
        "one line on stderr with its addresses. Stops cleanly on SIGTERM or SIGINT."
    )
    examples = (
        "pycasync chunk-server -s /srv/store -l :8080\n"
        "pycasync chunk-server -s http://upstream/store -c /var/cache/store -l 127.0.0.1:8080"
    )

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, True, "store to serve chunks from")
        p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
        add_server_flags(p, "chunks")
        p.add_argument("-u", "--uncompressed", action="store_true", help="serve uncompressed chunks")
        p.add_argument("--skip-verify-read", action="store_true", default=None,
                       help="do not verify chunks read from the stores; as in desync, "
                       "compressed chunks are served as stored unless this is false (then a chunk that does "
                       "not decode to its id gets a 500); -u and cache fills verify unless this is true")
        add_store_file_flag(p)
        p.add_argument("--skip-verify-write", action="store_true", default=None,
                       help="accepted for desync (whose default it is); a PUT (-w) is always "
                       "verified against its id here, whatever this says")
        p.add_argument("--encryption", action="store_true",
                       help="serve (and accept) chunks encrypted, whatever the stores hold; the key is "
                       "$DESYNC_ENCRYPTION_KEY unless --encryption-key is given (needs pycasync[crypt])")
        p.add_argument("--encryption-key", metavar="HEX", default="",
                       help="hex-encoded 256-bit key (e.g. openssl rand -hex 32); implies --encryption")
        p.add_argument("--encryption-algorithm", metavar="NAME", default="",
                       help="xchacha20-poly1305 (default) or aes-256-gcm; implies --encryption")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.serve.chunkserver import serve_chunks

        a = ctx.args
        check_store_file_flags(a)
        if a.store_file is None:
            require(a.store, "no store given (use -s or --store-file)")
        if a.writable and (len(a.store or ()) > 1 or a.cache):
            raise ParameterError("-w needs exactly one store and no cache")
        tls = server_tls(a)
        cipher = wire_cipher(a.encryption, a.encryption_key, a.encryption_algorithm)  # before any store
        if a.skip_verify_read is not None:
            ctx.skip_verify = a.skip_verify_read
        with contextlib.ExitStack() as stack:
            hangup = None
            if a.store_file is not None:
                store, hangup = open_store_file(ctx, stack, a.store_file, writable=a.writable)
            else:
                store = ctx.open_cached(stack, a.store, a.cache, writable=a.writable, must_exist=True)
            mode = ("writable" if a.writable else "read-only") + (", uncompressed" if a.uncompressed else "")
            mode += f", encrypted ({cipher.algorithm}, key id {cipher.key_id})" if cipher else ""
            ready = announce(self.name, store, tls is not None, mode)
            serve_chunks(store, a.listen or [":http"], digest=ctx.digest, writable=a.writable,
                         uncompressed=a.uncompressed, tls=tls, authorization=_authorization(a), log=a.log,
                         ready=ready, verify=a.skip_verify_read is False, limits=server_limits(a),
                         hangup=hangup, cipher=cipher)
        return 0


def wire_cipher(encryption: bool, key: str, algorithm: str) -> ChunkCipher | None:
    """The chunk server's wire cipher: any of the three flags enables it (the key
    from ``DESYNC_ENCRYPTION_KEY`` unless given); the variable alone does not."""
    enabled = encryption or bool(key or algorithm)
    if enabled and not key:
        key = os.environ.get("DESYNC_ENCRYPTION_KEY", "")
    return make_cipher(enabled, key, algorithm)


class IndexServer(Command):
    """``index-server``: serve an index store over HTTP(S) until SIGTERM/SIGINT."""

    name = "index-server"
    summary = "Serve index files over HTTP(S)"
    description = (
        "Serves the index files of the index store -s (a local directory, or an\n"
        "http(s)://, sftp:// or s3+http(s):// location) at /<name>, the layout\n"
        "desync's HTTP index stores read. Read-only unless -w, which accepts PUT\n"
        "of indexes (checked to be valid indexes, stored atomically). The name is\n"
        "the last path segment, as desync takes it; '.', '..' and encoded '/' are\n"
        "refused. Only index files are served: names ending in .caibx or .caidx\n"
        "that are regular files (or links to them inside the directory); GET, HEAD\n"
        "or PUT of any other name is a 400. HTTPS, mutual TLS,\n"
        "--authorization, --log and the connection limits work as for chunk-server."
    )
    examples = (
        "pycasync index-server -s /srv/indexes -l :8080\n"
        "pycasync index-server -s /srv/indexes -w -l 127.0.0.1:8080"
    )

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, False, "index store to serve (a directory or a URL)")
        add_server_flags(p, "indexes")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.serve.indexserver import serve_indexes
        from casync_store.stores.indexstore import WriteIndexStore, open_index_store

        a = ctx.args
        require(a.store, "no index store given (use -s)")
        tls = server_tls(a)
        with contextlib.ExitStack() as stack:
            store = stack.enter_context(open_index_store(a.store, ctx.options_for, must_exist=True))
            if a.writable and not isinstance(store, WriteIndexStore):
                raise ParameterError(f"index store {a.store} is read-only: -w cannot be used")
            serve_indexes(store, a.listen or [":http"], writable=a.writable, tls=tls,
                          authorization=_authorization(a), log=a.log,
                          ready=announce(self.name, store, tls is not None,
                                         "writable" if a.writable else "read-only"),
                          limits=server_limits(a))
        return 0
