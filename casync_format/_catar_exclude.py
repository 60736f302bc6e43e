"""casync's ``.caexclude`` rules: parsing the files and testing names against them.

When an archive's feature flags carry ``CA_FORMAT_EXCLUDE_FILE``, casync reads
a ``.caexclude`` file in every directory it archives. Each line (delimited by
``\\n`` or NUL, at most 64 KiB; surrounding spaces/tabs stripped; empty lines
and ``#`` comments ignored) is a glob pattern matched with ``fnmatch(3)`` and
``FNM_PERIOD`` against one path component: ``!`` negates it; a pattern
containing a ``/`` is *anchored* (applies only relative to the directory of
the file), otherwise it also applies in every subdirectory; a component
followed by ``/`` only matches directories; ``a/b`` matches ``b`` inside a
directory matching ``a``. A name is excluded when some positive rule matches
it and no negative one does. This module reproduces those semantics (not
casync's data structure); :class:`ExcludeRules` is immutable and shared
between directories. Invalid lines (empty components, ``.``, ``..``) raise
:class:`~casync_format.errors.FormatError`, as casync refuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import re
from collections.abc import Sequence

from .errors import FormatError

__all__ = ["ExcludeRules", "EXCLUDE_FILE_NAME", "parse_exclude_file", "glob_match"]

EXCLUDE_FILE_NAME = b".caexclude"
_LINE_MAX = 64 * 1024
_FNM_PERIOD = 4  # glibc's value
_POSITIVE, _NEGATIVE, _INNER = range(3)


def _load_fnmatch():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=False)
        func = libc.fnmatch
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
    func.restype = ctypes.c_int
    return func


_LIBC_FNMATCH = _load_fnmatch()


def glob_match(pattern: bytes, name: bytes) -> bool:
    """``fnmatch(pattern, name, FNM_PERIOD) == 0``: the C library's, or an approximation without one."""
    if _LIBC_FNMATCH is not None:
        return _LIBC_FNMATCH(pattern, name, _FNM_PERIOD) == 0
    if name.startswith(b".") and not pattern.startswith((b".", b"\\.")):
        return False
    regex = fnmatch.translate(pattern.decode("latin-1"))
    return re.match(regex, name.decode("latin-1"), re.DOTALL) is not None


class _Rule:
    """One pattern node: positive, negative, or inner (with the rules below it)."""

    __slots__ = ("anchored", "children", "directory_only", "kind", "pattern")

    def __init__(self, kind: int, pattern: bytes, anchored: bool, directory_only: bool) -> None:
        self.kind = kind
        self.pattern = pattern
        self.anchored = anchored
        self.directory_only = directory_only
        self.children: tuple[_Rule, ...] = ()


def _parse_line(line: bytes) -> _Rule:
    kind = _POSITIVE
    if line.startswith(b"!"):
        kind, line = _NEGATIVE, line[1:]
    anchored = b"/" in line
    # A run of slashes counts as one; leading ones only anchor; a trailing one means "directories only".
    stripped = line.lstrip(b"/")
    trailing = stripped.endswith(b"/")
    components = re.split(rb"/+", stripped.rstrip(b"/")) if stripped.strip(b"/") else [b""]
    for component in components:
        if component in (b"", b".", b".."):
            raise FormatError(f"invalid .caexclude line {line!r}: empty, '.' or '..' component")
    rules = []
    for i, component in enumerate(components):
        last = i == len(components) - 1
        rules.append(
            _Rule(kind if last else _INNER, component, anchored, (not last) or trailing)
        )
    for parent, child in zip(rules, rules[1:]):
        parent.children = (child,)
    return rules[0]


def parse_exclude_file(data: bytes) -> list[_Rule]:
    """The rules of a ``.caexclude`` file's content (raises FormatError for invalid lines)."""
    rules = []
    for raw in re.split(b"[\n\0]", data):
        if len(raw) > _LINE_MAX:
            raise FormatError(f".caexclude line longer than {_LINE_MAX} bytes")
        line = raw.strip(b" \t")
        if not line or line.startswith(b"#"):
            continue
        rules.append(_parse_line(line))
    return rules


class ExcludeRules:
    """The exclusion rules in force in one directory (immutable)."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Sequence[_Rule] = ()) -> None:
        self._rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def with_file(self, data: bytes) -> ExcludeRules:
        """These rules plus those of a ``.caexclude`` file found in the directory."""
        extra = parse_exclude_file(data)
        return ExcludeRules(self._rules + tuple(extra)) if extra else self

    def test(self, name: bytes, is_directory: bool) -> tuple[bool, ExcludeRules]:
        """Whether ``name`` is excluded, and the rules in force inside it (when a directory)."""
        positive = negative = False
        inherited: list[_Rule] = []
        for rule in self._rules:
            if is_directory and not rule.anchored:
                inherited.append(rule)
            if rule.directory_only and not is_directory:
                continue
            if not glob_match(rule.pattern, name):
                continue
            if rule.kind == _NEGATIVE:
                negative = True
            elif rule.kind == _POSITIVE:
                positive = True
            else:
                inherited.extend(rule.children)
        return positive and not negative, ExcludeRules(inherited)
