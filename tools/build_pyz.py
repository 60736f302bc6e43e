#!/usr/bin/env python3
"""Build ``pycasync.pyz``: the whole of pycasync as one file that runs with ``python3 pycasync.pyz``.

The archive is a :mod:`zipapp` (standard library only, here and where it
runs) holding the pure-Python sources of ``casync_format`` and
``casync_store``, the ``pycasync`` shim, and a ``__main__.py`` that runs the
command line. No compiled module goes in (a ``.so`` cannot be imported from
a zip, and would tie the file to one Python version): the chunker and the
catar helpers find no C extension and use their pure-Python
implementations, byte for byte the same. zstd chunks need a zstd binding on
the target (``python3-zstandard``, ``pip install zstandard``, or Python
3.14's ``compression.zstd``); everything else, xz and gzip stores included,
needs nothing but Python 3.9+.

Usage::

    python3 tools/build_pyz.py [-o pycasync.pyz]
    scp pycasync.pyz server:
    ssh server python3 pycasync.pyz chunk-server -s /srv/store -l :8080

The entries are written in sorted order with a fixed timestamp, so the same
sources always give the same bytes.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipapp
import zipfile

__all__ = ["PACKAGES", "MAIN", "sources", "build", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("casync_format", "casync_store")
MAIN = (
    '"""Run pycasync\'s command line from this archive (built by tools/build_pyz.py)."""\n'
    "import sys\n\n"
    "from pycasync import main\n\n"
    "sys.exit(main())\n"
)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can have: reproducible bytes


def sources(root: str = ROOT) -> list[tuple[str, str]]:
    """``(name in the archive, path on disk)`` of every file that goes in, sorted by name."""
    found = [("pycasync.py", os.path.join(root, "pycasync.py"))]
    for package in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in filenames:
                if name.endswith(".py") or name == "py.typed":
                    path = os.path.join(dirpath, name)
                    found.append((os.path.relpath(path, root).replace(os.sep, "/"), path))
    return sorted(found)


def build(output: str, root: str = ROOT, interpreter: str = "/usr/bin/env python3") -> int:
    """Write the archive to ``output`` (atomically); return its size in bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in [("__main__.py", MAIN.encode())] + [(n, _read(p)) for n, p in sources(root)]:
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    buf.seek(0)
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        # zipapp adds the #! line (and makes the file executable) in front of the zip.
        zipapp.create_archive(buf, tmp, interpreter=interpreter)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.getsize(output)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def main(argv: list[str] | None = None) -> int:
    """The command line: ``build_pyz.py [-o OUTPUT] [--python INTERPRETER]``."""
    parser = argparse.ArgumentParser(prog="build_pyz.py", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="pycasync.pyz",
                        help="archive to write (default pycasync.pyz)")
    parser.add_argument("--python", default="/usr/bin/env python3", help="interpreter of the #! line")
    args = parser.parse_args(argv)
    try:
        size = build(args.output, interpreter=args.python)
    except OSError as exc:
        print(f"build_pyz.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
