"""Test certificates made with the ``openssl`` command line, for TLS tests.

:func:`make_certs` writes, into a directory, a test certificate authority, a
server certificate for ``127.0.0.1``, ``::1`` and ``localhost`` (subject
alternative names), a client certificate signed by the same CA, and a second,
unrelated CA with its own client certificate (a client the server must not
trust). Keys are unencrypted EC P-256 PEM files. Nothing here needs a
third-party package; a missing ``openssl`` skips the calling test (fails it
under ``CI=true``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Union

import pytest

__all__ = ["Certs", "make_certs"]

PathLike = Union[str, "os.PathLike[str]"]

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""

_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class Certs:
    """Paths (str) of the PEM files :func:`make_certs` wrote."""

    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca_cert: str
    other_client_cert: str
    other_client_key: str


def _openssl(*args: str) -> None:
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("openssl is not installed, but CI=true requires the TLS tests")
        pytest.skip("openssl is not installed")
    proc = subprocess.run([path, *args], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.decode(errors='replace')}")


def _make_ca(directory: str, name: str, config: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    _openssl("req", "-x509", "-new", *_KEY_ARGS, "-keyout", key, "-out", cert, "-days", "2",
             "-subj", f"/CN=pycasync test {name}", "-config", config, "-extensions", "v3_ca")
    return cert, key


def _make_leaf(
    directory: str, name: str, config: str, ca: tuple[str, str], extensions: str, serial: int
) -> tuple[str, str]:
    cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    csr = os.path.join(directory, f"{name}.csr")
    subject = "/CN=localhost" if extensions == "v3_server" else f"/CN=pycasync test {name}"
    _openssl("req", "-new", *_KEY_ARGS, "-keyout", key, "-out", csr, "-subj", subject, "-config", config)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", str(serial),
             "-days", "2", "-out", cert, "-extfile", config, "-extensions", extensions)
    return cert, key


def make_certs(directory: PathLike) -> Certs:
    """Create the CA, server, client and untrusted certificates in ``directory``."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    config = os.path.join(directory, "openssl.cnf")
    with open(config, "w", encoding="ascii") as f:
        f.write(_CONFIG)
    ca = _make_ca(directory, "ca", config)
    server = _make_leaf(directory, "server", config, ca, "v3_server", 1001)
    client = _make_leaf(directory, "client", config, ca, "v3_client", 1002)
    other_ca = _make_ca(directory, "other-ca", config)
    other_client = _make_leaf(directory, "other-client", config, other_ca, "v3_client", 2001)
    return Certs(
        ca_cert=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca_cert=other_ca[0],
        other_client_cert=other_client[0],
        other_client_key=other_client[1],
    )
