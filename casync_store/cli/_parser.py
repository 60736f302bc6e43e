"""The argument parser machinery of the CLI, and the rewriting of old flag spellings.

:class:`Parser` is an :class:`argparse.ArgumentParser` that raises
:class:`UsageError` instead of printing usage and exiting, and remembers which
of its options take a value and which are booleans; :func:`modernize_argv`
uses that to turn the single-dash spellings of pre-2018 desync (``-clientCert
x``, ``-stats``, ``-s=x``) into the GNU ones before parsing. Two rules of
desync's (cobra's) flag syntax hold for every option, in this one place: a
boolean takes an explicit value (``--in-place=true``, ``-k=false``,
``--cache-repair=false``; the last one given wins), and a repeatable option
(``action="append"``) also takes a comma-separated list (``-s a,b``,
``-l :8080,:8081``; as in cobra, a part in double quotes may hold a comma).
The argument types (Go-style
booleans, bounded integers, durations, comma-separated store lists) and the
``--version`` and "known but not supported" actions live here too.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from casync_format import __version__
from casync_format.errors import ParameterError
from casync_store.plumbing.config import parse_duration

__all__ = [
    "PROG",
    "UsageError",
    "Parser",
    "VersionAction",
    "NotSupported",
    "bool_value",
    "int_at_least",
    "positive_int",
    "nonnegative_int",
    "duration",
    "positive_duration",
    "store_list",
    "split_list",
    "modernize_argv",
]

PROG = "pycasync"


class UsageError(Exception):
    """The command line cannot be parsed (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage, and remembers its options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: option string -> whether it takes a separate value (for argv rewriting)
        self.option_arity: dict[str, bool] = {}
        #: the option strings of boolean flags (each also takes ``=true`` / ``=false``)
        self.booleans: set[str] = set()
        #: command name -> its parser (on the top-level parser)
        self.commands: dict[str, Parser] = {}
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._record(super().add_argument(*args, **_as_list(kwargs)))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *a, **k: self._record(add(*a, **_as_list(k)))  # type: ignore[method-assign]
        return group

    def _record(self, action: argparse.Action) -> argparse.Action:
        for opt in action.option_strings:
            self.option_arity[opt] = action.nargs not in (0, "?")
        if action.option_strings and _is_boolean(action):
            # ``OPT=false`` is an option string of its own (hidden): argparse matches it whole.
            self.booleans.update(action.option_strings)
            argparse.ArgumentParser.add_argument(
                self, *(opt + "=false" for opt in action.option_strings), action="store_const",
                const=not action.const, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            )
        return action

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _is_boolean(action: argparse.Action) -> bool:
    return action.nargs == 0 and isinstance(action.const, bool) and isinstance(
        action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
    )


def _as_list(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A repeatable option (``action="append"``) that also takes comma-separated lists."""
    if kwargs.get("action") != "append":
        return kwargs
    item = kwargs.get("type") or str

    def items(text: str) -> list[Any]:
        return [item(part) for part in split_list(text)]

    items.__name__ = getattr(item, "__name__", "list")  # argparse names the type in its errors
    return {**kwargs, "action": "extend", "type": items}


class VersionAction(argparse.Action):
    """``--version``: the version and the backend of every accelerated function (and zstd)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from casync_format import describe_backends

        print(f"{PROG} {__version__} ({describe_backends()})")
        parser.exit()


class NotSupported(argparse.Action):
    """A desync flag this version knows but does not offer: refused by name, not misparsed."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        raise ParameterError(f"option {self.option_strings[0]} is not supported in this version of pycasync")


def bool_value(text: str) -> bool:
    """Go-style flag booleans (``--skip-verify-read=false``)."""
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argument type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


positive_int, nonnegative_int = int_at_least(1), int_at_least(0)


def duration(text: str) -> float:
    """An argument type: a Go-style duration (``500ms``, ``2s``) in seconds."""
    try:
        return parse_duration(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration(text: str) -> float:
    """An argument type: a duration above zero."""
    value = duration(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return value


def split_list(text: str) -> list[str]:
    """A comma-separated list as cobra reads one (CSV: ``"a,b",c`` is two); empty parts dropped."""
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise argparse.ArgumentTypeError(f"invalid list {text!r}: {exc}") from None
    return [part for row in rows for part in row if part]


def store_list(text: str) -> list[str]:
    """An argument type: ``-s a,b`` as desync takes it (empty parts dropped)."""
    return split_list(text)


# --------------------------------------------------------------------------- argv rewriting

#: Old (Go ``flag`` package) names that are not just camelCase spellings of the new ones.
_RENAMED = {"stats": "print-stats"}
#: Old long flags that this version has no equivalent for (reported, not misparsed as -s eed).
_OLD_UNSUPPORTED = {"cert", "key", "ignore", "ignore-chunks", "chunks-info"}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _modern(token: str, parser: Parser, everywhere: set[str]) -> list[str]:
    """The GNU form of one option token, for ``parser`` (the command's)."""
    body = token[2:] if token.startswith("--") else token[1:]
    name, eq, value = body.partition("=")
    if not token.startswith("--") and len(name) == 1:
        if eq and parser.option_arity.get("-" + name):  # Go style -s=value
            return ["-" + name, value]
        return [token]
    if token.startswith("--") and token.split("=", 1)[0] in parser.option_arity:
        return [token]
    candidates = [_RENAMED.get(name, ""), _CAMEL.sub(lambda m: "-" + m.group(1).lower(), name), name]
    for cand in candidates:
        if cand and "--" + cand in parser.option_arity:
            return ["--" + cand + eq + value]
    if not token.startswith("--") and any(
        c in _OLD_UNSUPPORTED or "--" + c in everywhere for c in candidates if c
    ):
        raise UsageError(f"option {token.split('=', 1)[0]} is not supported (see '{parser.prog} --help')")
    return [token]


def _boolean(token: str, parser: Parser) -> str:
    """``--flag=VALUE`` of a boolean as the parser takes it: ``--flag`` or ``--flag=false``."""
    name, eq, value = token.partition("=")
    if not eq or name not in parser.booleans:
        return token
    try:
        return name if bool_value(value) else name + "=false"
    except argparse.ArgumentTypeError:
        raise UsageError(
            f"argument {name}: invalid boolean value {value!r}: use true or false "
            f"(see '{parser.prog} --help')"
        ) from None


def modernize_argv(argv: Sequence[str], parser: Parser) -> list[str]:
    """Rewrite old desync spellings (``-clientCert x``, ``-stats``, ``-s=x``) to GNU ones.

    A boolean's ``=VALUE`` (``true``/``false``, ``1``/``0``, ``t``/``f``, any
    case) becomes the flag itself or its hidden ``OPT=false`` option.
    ``parser`` is the complete top-level parser. Values of options are never
    rewritten, and nothing after ``--`` is.
    """
    everywhere = set(parser.option_arity).union(*(p.option_arity for p in parser.commands.values()))
    out: list[str] = []
    current, i = parser, 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out.extend(argv[i - 1 :])
            break
        if current is parser and token in parser.commands:
            current = parser.commands[token]
            out.append(token)
            continue
        if not token.startswith("-") or token == "-":
            out.append(token)
            continue
        new = [_boolean(t, current) for t in _modern(token, current, everywhere)]
        out.extend(new)
        if len(new) == 1 and "=" not in new[0] and current.option_arity.get(new[0]) and i < len(argv):
            out.append(argv[i])  # the option's value, verbatim
            i += 1
    return out
