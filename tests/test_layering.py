"""The layering rules of pycasync, checked on every module's syntax tree.

- ``casync_format`` imports only the standard library and itself, a zstd
  binding only in ``compress.py``, and never networking, processes, stores or
  the CLI (even where those are standard modules).
- ``casync_store`` never imports the CLI; boto3, paramiko and fuse appear
  only in their own backend modules.
- Every module has a docstring and an ``__all__``.
- The CLI is ``casync_store/cli``: nothing else (format, store, tools)
  imports it, ``pycasync.py`` is a shim of under 60 lines over it, it uses
  only public names of the library, and every command class is registered.

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
CRYPT_BINDINGS = {"cryptography"}  # the crypt extra: only casync_format/encrypt.py imports it (lazily)
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
        elif name in CRYPT_BINDINGS:
            if os.path.basename(rel) != "encrypt.py":
                bad.append(f"{name} (crypto bindings only in encrypt.py)")
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


# Which parts of casync_store a part may import (by first path component
# under casync_store/; "pipeline" is the module casync_store/pipeline.py).
# A part not listed as allowed is a layering violation: stores know nothing
# of operations or servers, plumbing knows nothing of chunks' owners, the
# servers serve stores and never reach into an operation.
PART_MAY_IMPORT = {
    "plumbing": {"plumbing"},
    "stores": {"plumbing", "stores"},
    "pipeline": {"plumbing", "stores"},
    "ops": {"plumbing", "stores", "pipeline", "ops"},
    "serve": {"plumbing", "stores", "pipeline", "serve"},
}


def _part(module: str) -> str:
    """``casync_store.ops.make`` -> ``ops``; ``casync_store.pipeline`` -> ``pipeline``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _store_imports(rel: str) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` of every casync_store import in ``rel``."""
    module = rel[:-3].replace(os.sep, ".")
    package = module.split(".")[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(_tree(rel)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "casync_store":
                found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "casync_store"]
    return found


_PARTED = [rel for rel in _modules("casync_store") if rel.count(os.sep) >= 1 and
           _part(rel[:-3].replace(os.sep, ".")) in PART_MAY_IMPORT]  # fmt: skip


@pytest.mark.parametrize("rel", _PARTED)
def test_parts_import_only_lower_layers(rel: str) -> None:
    mine = _part(rel[:-3].replace(os.sep, "."))
    bad = []
    for target, _names in _store_imports(rel):
        part = _part(target)
        if part and part not in PART_MAY_IMPORT[mine] and part != "cli":
            bad.append(target)
        elif part == "cli":
            bad.append(f"{target} (the CLI)")
    assert not bad, f"{rel} ({mine}) may not import: {', '.join(bad)}"


_OPS_AND_SERVE = [r for r in _PARTED if _part(r[:-3].replace(os.sep, ".")) in ("ops", "serve")]


@pytest.mark.parametrize("rel", _OPS_AND_SERVE)
def test_no_private_names_across_operations(rel: str) -> None:
    """An operation (or server) imports only public names of another operation's module."""
    me = rel[:-3].replace(os.sep, ".")
    bad = []
    for target, names in _store_imports(rel):
        if _part(target) != "ops" or target == me:
            continue
        private = [n for n in names if n.startswith("_")]
        leaf = target.rsplit(".", 1)[-1]
        if private or (leaf.startswith("_") and _part(me) != "ops"):
            bad.append(f"{target}: {', '.join(private) or 'a private module'}")
    assert not bad, f"{rel} reaches into: {'; '.join(bad)}"


def test_layering_finder_resolves_relative_imports() -> None:
    found = dict(_store_imports(os.path.join("casync_store", "ops", "extract.py")))
    assert "casync_store.pipeline" in found and "ChunkReader" in found["casync_store.pipeline"]
    assert "casync_store.stores.base" in found


# --------------------------------------------------------------------------- the CLI

_CLI_DIR = os.path.join("casync_store", "cli")
#: pycasync.py is the entry point only: the command line lives in casync_store/cli.
SHIM_MAX_LINES = 60


def _outside_cli() -> list[str]:
    found = _modules("casync_format") + _modules("casync_store") + _modules("tools")
    return [rel for rel in found if not rel.startswith(_CLI_DIR + os.sep)]


@pytest.mark.parametrize("rel", _outside_cli())
def test_nothing_imports_the_cli(rel: str) -> None:
    bad = [target for target, _names in _store_imports(rel) if _part(target) == "cli"]
    bad += [f"{name} (the CLI)" for name in imports(_tree(rel)) if name == "pycasync"]
    assert not bad, f"{rel} imports the CLI: {', '.join(bad)}"


def test_pycasync_is_a_thin_shim() -> None:
    with open(os.path.join(ROOT, "pycasync.py"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) < SHIM_MAX_LINES, f"pycasync.py has {len(lines)} lines: commands go in casync_store/cli"
    tree = _tree("pycasync.py")
    store = {target for target, _names in _store_imports("pycasync.py")}
    assert store == {"casync_store.cli"}, f"pycasync.py should import only casync_store.cli, not {store}"
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not defined, f"pycasync.py defines {defined}: they belong in casync_store/cli"


@pytest.mark.parametrize("rel", _modules(_CLI_DIR))
def test_cli_uses_only_public_library_names(rel: str) -> None:
    """The CLI calls the library's documented API, never its private modules or names."""
    bad = []
    for target, names in _store_imports(rel):
        if _part(target) == "cli":
            continue
        private = [n for n in names if n.startswith("_")]
        if private or any(p.startswith("_") for p in target.split(".")):
            bad.append(f"{target}: {', '.join(private) or 'a private module'}")
    assert not bad, f"{rel} reaches into: {'; '.join(bad)}"


def test_every_command_is_registered_once() -> None:
    cli = importlib.import_module("casync_store.cli")
    common = importlib.import_module("casync_store.cli._common")
    names = [command.name for command in cli.REGISTRY]
    assert len(names) == len(set(names)), f"commands registered twice: {names}"
    defined = set()
    for rel in _modules(_CLI_DIR):
        module = importlib.import_module(rel[:-3].replace(os.sep, ".").removesuffix(".__init__"))
        defined |= {
            obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, common.Command) and obj is not common.Command
        }  # fmt: skip
    registered = {type(command) for command in cli.REGISTRY}
    missing = sorted(c.__name__ for c in defined - registered)
    assert defined == registered, f"not in casync_store.cli.REGISTRY: {missing}"
    assert set(cli.COMMANDS) == set(names)
