"""The layering rules of pycasync, checked on every module's syntax tree.

- ``casync_format`` imports only the standard library and itself, a zstd
  binding only in ``compress.py``, and never networking, processes, stores or
  the CLI (even where those are standard modules).
- ``casync_store`` never imports the CLI; boto3, paramiko and fuse appear
  only in their own backend modules.
- Every module has a docstring and an ``__all__``.

Imports are found anywhere in a module (also inside functions and ``try``
blocks), and so are ``importlib.import_module("...")``/``__import__("...")``
calls with a literal name.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ZSTD_BINDINGS = {"zstandard", "pyzstd", "compression"}  # compression.zstd: stdlib from 3.14
FORMAT_FORBIDDEN = {
    "socket", "http", "urllib", "ssl", "subprocess", "asyncio", "ftplib", "smtplib",
    "boto3", "botocore", "paramiko", "fuse", "requests", "urllib3",
    "casync_store", "pycasync",
}  # fmt: skip
# third-party module -> the only casync_store modules that may import it
STORE_CONFINED = {
    "boto3": {"s3.py", "_s3client.py"},
    "botocore": {"s3.py", "_s3client.py"},
    "paramiko": {"sftp.py", "_sshconnect.py", "ssh.py"},
    "fuse": {"mount.py"},
}

# Used only before Python 3.10 (no sys.stdlib_module_names); anything else is
# classified by where it is found on disk.
_STDLIB_FALLBACK = frozenset(
    {
        "__future__", "abc", "argparse", "array", "ast", "base64", "binascii", "bisect", "builtins",
        "bz2", "codecs", "collections", "concurrent", "contextlib", "copy", "ctypes", "dataclasses",
        "datetime", "enum", "errno", "fcntl", "fnmatch", "functools", "gc", "getpass", "glob", "gzip",
        "hashlib", "heapq", "hmac", "importlib", "io", "itertools", "json", "logging", "lzma", "math",
        "mmap", "multiprocessing", "numbers", "operator", "os", "pathlib", "pickle", "platform",
        "queue", "random", "re", "resource", "select", "shlex", "shutil", "signal", "socket", "ssl",
        "stat", "string", "struct", "subprocess", "sys", "sysconfig", "tempfile", "textwrap",
        "threading", "time", "traceback", "types", "typing", "unittest", "urllib", "uuid", "warnings",
        "weakref", "zlib", "http",
    }
)


def _is_stdlib(name: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return name in names
    if name in _STDLIB_FALLBACK or name in sys.builtin_module_names:
        return True
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return False
    stdlib = sysconfig.get_paths()["stdlib"]
    origin = os.path.realpath(spec.origin)
    return origin.startswith(os.path.realpath(stdlib)) and "site-packages" not in origin


def _modules(package: str) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, package)):
        rel = os.path.relpath(dirpath, ROOT)
        found += [os.path.join(rel, name) for name in files if name.endswith(".py")]
    return sorted(found)


def _all_modules() -> list[str]:
    found = _modules("casync_format") + _modules("casync_store")
    if os.path.exists(os.path.join(ROOT, "pycasync.py")):
        found.append("pycasync.py")
    return found


def _tree(rel: str) -> ast.Module:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return ast.parse(f.read(), rel)


def imports(tree: ast.Module) -> set[str]:
    """Top-level names of every absolute module imported (relative ones are the package itself)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            target = node.args[0].value
            is_import = called in ("import_module", "__import__")
            if is_import and isinstance(target, str) and not target.startswith("."):
                names.add(target.split(".")[0])
    return names


def test_import_finder_sees_every_form() -> None:
    tree = ast.parse(
        "import a.b\nfrom c.d import e\nfrom . import f\nfrom .g import h\n"
        "def x():\n    import i\n    importlib.import_module('j.k')\n    __import__('l')\n"
        "try:\n    import m\nexcept ImportError:\n    pass\n"
    )
    assert imports(tree) == {"a", "c", "i", "j", "l", "m"}


@pytest.mark.parametrize("rel", _modules("casync_format"))
def test_casync_format_imports_only_stdlib(rel: str) -> None:
    bad = []
    for name in sorted(imports(_tree(rel))):
        if name in FORMAT_FORBIDDEN:
            bad.append(f"{name} (forbidden in casync_format)")
        elif name in ZSTD_BINDINGS:
            if os.path.basename(rel) != "compress.py":
                bad.append(f"{name} (zstd bindings only in compress.py)")
        elif name != "casync_format" and not _is_stdlib(name):
            bad.append(f"{name} (not in the standard library)")
    assert not bad, f"{rel} imports: " + ", ".join(bad)


@pytest.mark.parametrize("rel", _modules("casync_store"))
def test_casync_store_layering(rel: str) -> None:
    bad = []
    base = os.path.basename(rel)
    for name in sorted(imports(_tree(rel))):
        if name == "pycasync":
            bad.append("pycasync (the CLI)")
        elif name in STORE_CONFINED and base not in STORE_CONFINED[name]:
            bad.append(f"{name} (only in {', '.join(sorted(STORE_CONFINED[name]))})")
        elif name in ZSTD_BINDINGS:
            bad.append(f"{name} (use casync_format.compress)")
    assert not bad, f"{rel} imports: " + ", ".join(bad)


@pytest.mark.parametrize("rel", _all_modules())
def test_module_has_docstring_and_all(rel: str) -> None:
    tree = _tree(rel)
    doc = ast.get_docstring(tree)
    assert doc and doc.strip(), f"{rel} has no module docstring"
    targets = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            targets.append(node.target.id)
    assert "__all__" in targets, f"{rel} has no __all__"


@pytest.mark.parametrize("rel", _all_modules())
def test_all_names_exist(rel: str) -> None:
    module_name = rel[:-3].replace(os.sep, ".").replace("/", ".")
    if module_name.endswith(".__init__"):
        module_name = module_name[: -len(".__init__")]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in ("casync_format", "casync_store", "pycasync", ""):
            raise
        pytest.skip(f"{module_name}: optional dependency missing: {exc}")
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names missing attributes: {missing}"
