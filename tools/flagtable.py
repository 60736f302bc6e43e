#!/usr/bin/env python3
"""desync's command/flag pairs against pycasync's: supported, refused or missing, with totals.

Reads desync's cobra commands from its Go sources (``cmd/desync/*.go`` of a
git checkout or bare mirror, default the mirror under ``/work/.mirror``):
each file's ``Use:`` names its command, and its ``flags.XxxVar[P](...)``
calls, the shared helpers it calls (``addStoreOptions``,
``addServerOptions``, whose flags are read from their own bodies) and the
root command's persistent flags give its flags, with short name, Go type and
default. Each pair is then tried on the real ``pycasync.py`` (a process; the
tools never import the CLI): ``CMD --FLAG VALUE --help`` (VALUE desync's
default, or a placeholder), which parses the flag and its value and then
stops at ``--help``, is *supported* when the flag is in ``CMD --help`` and
parses, *refused* on pycasync's "not supported in this version" error,
*missing* when the command does not know it; a known flag whose placeholder
value is rejected counts as supported and is listed.
A short name desync has and we lack is listed too. Prints the table and the
totals; ``--brief`` prints only the totals and the refused/missing pairs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

CLI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pycasync.py")
__all__ = ["Flag", "desync_commands", "classify", "main"]

MIRROR = "/work/.mirror/folbricht+desync/repo"
_KINDS = "Bool|StringSlice|StringArray|String|Int64|Int|Uint64|Uint|Duration|Float64"
_CALL = re.compile(rf"\b(?:flags|f|cmd\.PersistentFlags\(\)|cmd\.Flags\(\))\.({_KINDS})(Var)?(P)?\(")
_USE = re.compile(r'Use:\s*"([\w-]+)')
_HELPERS = {"addStoreOptions": "store", "addServerOptions": "server"}


@dataclass(frozen=True)
class Flag:
    """One desync flag: long and short name, Go type, default (as written), where it comes from."""

    name: str
    short: str
    kind: str
    default: str
    origin: str  # "command", "store", "server" or "persistent"


def _go_files(repo: str) -> dict[str, str]:
    """``cmd/desync/*.go`` (no tests, no Windows variants) of a checkout or bare mirror: name -> text."""
    if os.path.isdir(os.path.join(repo, "cmd", "desync")):
        d = os.path.join(repo, "cmd", "desync")
        names = sorted(os.listdir(d))
        read = {n: open(os.path.join(d, n)).read() for n in names}  # noqa: SIM115
    else:
        listing = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", "HEAD", "cmd/desync/"],
                                 check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
        read = {os.path.basename(p): _git_show(repo, p) for p in listing}
    skip = ("_test.go", "_windows.go")
    return {n: t for n, t in read.items() if n.endswith(".go") and not n.endswith(skip)}


def _git_show(repo: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def _split_args(text: str) -> list[str]:
    """The top-level comma-separated arguments of a Go call starting after its '(' (to its ')')."""
    args: list[str] = []
    depth, cur, quote, i = 0, "", "", 0
    while i < len(text):
        c = text[i]
        if quote:
            cur += c
            if c == "\\":
                cur += text[i + 1]
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"`":
            quote, cur = c, cur + c
        elif c in "([{":
            depth, cur = depth + 1, cur + c
        elif c in ")]}" and depth == 0:
            break
        elif c in ")]}":
            depth, cur = depth - 1, cur + c
        elif c == "," and depth == 0:
            args, cur = [*args, cur.strip()], ""
        else:
            cur += c
        i += 1
    return [*args, cur.strip()] if cur.strip() else args


def _unquote(arg: str) -> str:
    return arg[1:-1] if arg[:1] in "\"`" else arg


def _flags_in(text: str, origin: str) -> list[Flag]:
    """Every ``flags.KindVar[P](...)`` flag definition in ``text``."""
    out = []
    for m in _CALL.finditer(text):
        kind, var, short = m.group(1), m.group(2), m.group(3)
        args = _split_args(text[m.end():])
        if var:
            args = args[1:]
        name = _unquote(args[0])
        s = _unquote(args[1]) if short else ""
        default = args[2 if short else 1]
        out.append(Flag(name, s, kind, _unquote(default), origin))
    return out


def _function_body(text: str, func: str) -> str:
    start = text.index(f"func {func}(")
    end = text.find("\nfunc ", start + 1)
    return text[start:end if end > 0 else len(text)]


def desync_commands(repo: str = MIRROR) -> dict[str, list[Flag]]:
    """desync's commands (``Use:`` names) and their flags, the shared and persistent ones included."""
    files = _go_files(repo)
    helpers: dict[str, list[Flag]] = {}
    for text in files.values():
        for func, origin in _HELPERS.items():
            if f"func {func}(" in text:
                helpers[func] = _flags_in(_function_body(text, func), origin)
    persistent = _flags_in(files["root.go"], "persistent")
    commands: dict[str, list[Flag]] = {}
    for name, text in sorted(files.items()):
        uses = _USE.findall(text)
        if name == "root.go" or not uses:
            continue
        flags = _flags_in(text, "command")
        for func in _HELPERS:
            if re.search(rf"\b{func}\(", text) and f"func {func}(" not in text:
                flags += helpers[func]
        commands[uses[0]] = flags + persistent
    return commands


def _value(flag: Flag) -> list[str]:
    """Arguments following ``--FLAG`` for a parse test: nothing for booleans, else a plausible value."""
    if flag.kind == "Bool":
        return []
    if flag.kind in ("Int", "Uint64"):
        return [flag.default if flag.default.isdigit() and flag.default != "0" else "2"]
    if flag.kind == "Duration":
        return ["1s"]
    return [flag.default] if flag.default and not flag.default.startswith(("desync.", "[]")) else ["x"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME="/nonexistent")
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, env=env)  # fmt: skip


def _known(help_text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None


def classify(command: str, flag: Flag, help_text: str | None) -> tuple[str, str]:
    """(``supported``|``refused``|``missing``, a note) of ``pycasync COMMAND --FLAG VALUE --help``.

    ``help_text`` is ``pycasync COMMAND --help`` (None: no such command).
    Options are processed in order, so a refused flag fails before ``--help``
    runs, a known one converts its value first, and an unknown one is left
    over while ``--help`` exits 0.
    """
    if help_text is None:
        return "missing", "no such command"
    proc = _run(command, "--" + flag.name, *_value(flag), "--help")
    if "not supported in this version" in proc.stderr:
        return "refused", ""
    if not _known(help_text, "--" + flag.name):
        return "missing", proc.stderr.strip().splitlines()[-1] if proc.returncode else ""
    notes = []
    if flag.short and not _known(help_text, "-" + flag.short):
        notes.append(f"no -{flag.short}")
    if proc.returncode != 0:
        error = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        notes.append(f"value {' '.join(_value(flag)) or '(none)'} rejected: {error}")
    return "supported", "; ".join(notes)


def _ours() -> dict[str, str]:
    """pycasync's commands (from ``pycasync --help``) and each one's ``--help`` text."""
    top = _run("--help").stdout
    block = top[top.index("commands:"):]
    names = re.findall(r"^ {4}([a-z][\w-]+)\s", block, re.M)
    helps = {}
    for name in names:
        proc = _run(name, "--help")
        if proc.returncode == 0:
            helps[name] = proc.stdout
    return helps


def main(argv: list[str] | None = None) -> int:
    """Print the table (or with --brief only the totals and the gaps); exit 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--desync", default=MIRROR, help=f"desync checkout or bare mirror (default {MIRROR})")
    ap.add_argument("--brief", action="store_true", help="only totals and refused/missing pairs")
    a = ap.parse_args(argv)
    commands = desync_commands(a.desync)
    helps = _ours()
    pairs = [(cmd, f) for cmd, flags in commands.items() for f in flags]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda pair: classify(pair[0], pair[1], helps.get(pair[0])), pairs))
    rows = [(cmd, f, status, note) for (cmd, f), (status, note) in zip(pairs, results)]
    if not a.brief:
        print(f"{'command':<16} {'flag':<28} {'from':<10} {'status':<9} note")
        for cmd, f, status, note in rows:
            name = f"--{f.name}" + (f", -{f.short}" if f.short else "")
            print(f"{cmd:<16} {name:<28} {f.origin:<10} {status:<9} {note}")
        print()
    counts = {s: sum(1 for r in rows if r[2] == s) for s in ("supported", "refused", "missing")}
    ours = set(helps) - set(commands)
    print(f"desync commands: {len(commands)} ({sum(c in helps for c in commands)} in pycasync; "
          f"pycasync only: {', '.join(sorted(ours)) or 'none'})")
    print(f"command/flag pairs: {len(rows)}: supported {counts['supported']}, refused {counts['refused']}, "
          f"missing {counts['missing']}")
    for cmd, f, status, note in rows:
        if status != "supported" or (a.brief and note):
            print(f"  {status:<9} {cmd} --{f.name}" + (f"  ({note})" if note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
