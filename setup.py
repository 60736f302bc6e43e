"""Build script: declares only the optional C accelerator (metadata is in setup.cfg).

``optional=True`` makes a failed compile a warning, not a failed install;
pycasync then uses its pure-Python chunker. Where libzstd's and OpenSSL's
development files are found (Debian: ``libzstd-dev``, ``libssl-dev``), the
extension also gets ``fetch_chunk_file`` (a local store's read + decompress +
verify + write of one chunk in one call) and links both libraries; without
them it is built without that function and extract takes its Python path.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from setuptools import Extension, setup

_HEADERS = ("zstd.h", "openssl/evp.h")
_INCLUDE_DIRS = ("/usr/include", "/usr/local/include", "/opt/homebrew/include")


def _fetch_libraries() -> tuple[list[str], list[str], list[str]]:
    """(include dirs, library dirs, libraries) for zstd and libcrypto, or empty lists if absent."""
    pkg_config = shutil.which("pkg-config")
    if pkg_config and os.environ.get("PYCASYNC_NO_FETCH") != "1":
        probe = subprocess.run([pkg_config, "--exists", "libzstd", "libcrypto"], check=False)
        if probe.returncode == 0:
            def flags(option: str) -> list[str]:
                out = subprocess.run([pkg_config, option, "libzstd", "libcrypto"],
                                     capture_output=True, text=True, check=True).stdout
                return out.split()
            cflags, libs = flags("--cflags"), flags("--libs")
            def picked(found: list[str], prefix: str) -> list[str]:
                return [f[2:] for f in found if f.startswith(prefix)]
            return picked(cflags, "-I"), picked(libs, "-L"), picked(libs, "-l")
    if os.environ.get("PYCASYNC_NO_FETCH") != "1":
        for base in _INCLUDE_DIRS:
            if all(os.path.exists(os.path.join(base, h)) for h in _HEADERS):
                return [], [], ["zstd", "crypto"]
    return [], [], []


_includes, _libdirs, _libraries = _fetch_libraries()

setup(
    ext_modules=[
        Extension(
            "casync_format._chunker",
            ["casync_format/_chunker.c", "casync_format/_chunkfile.c"],
            include_dirs=_includes,
            library_dirs=_libdirs,
            libraries=_libraries,
            define_macros=[("PYCASYNC_HAVE_FETCH", "1")] if _libraries else [],
            optional=True,
        ),
    ],
)
