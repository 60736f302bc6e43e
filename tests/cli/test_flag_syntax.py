"""desync's (cobra's) flag syntax on every command: ``--flag=true|false`` and comma-separated lists.

The argv rewriting is checked with hypothesis over every boolean and every
list option of every command (taken from the parser itself, so a new flag is
covered when it is added); then ``--cache-repair=false`` end to end: a
damaged chunk in the cache is an error instead of being replaced, while the
default (and ``-r=true``) replaces it.
"""

from __future__ import annotations

import argparse
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pycasync
from casync_store.cli import build_parser
from casync_store.cli._parser import UsageError, split_list
from tests.support.cli import chunk_files, ok, one_error, read, run

PARSER = build_parser()
TRUE, FALSE = ["true", "TRUE", "True", "t", "T", "1"], ["false", "FALSE", "False", "f", "F", "0"]


def _actions(command: str) -> list[argparse.Action]:
    return [a for a in PARSER.commands[command]._actions if a.option_strings and a.help != argparse.SUPPRESS]


BOOLEANS = sorted(
    (command, opt, action.dest, bool(action.const))
    for command in PARSER.commands
    for action in _actions(command)
    if action.nargs == 0 and isinstance(action.const, bool)
    for opt in action.option_strings
)
LISTS = sorted(
    (command, opt, action.dest)
    for command in PARSER.commands
    for action in _actions(command)
    if isinstance(action, argparse._ExtendAction)
    for opt in action.option_strings
)


def _parse(argv: list[str]) -> argparse.Namespace:
    return PARSER.parse_args(pycasync.rewrite_argv(argv, PARSER))


def _positionals(command: str) -> list[str]:
    """Enough positional arguments for ``command`` to parse."""
    out = []
    for action in PARSER.commands[command]._actions:
        if not action.option_strings and action.dest != "help":
            out.append("x")
    return out


def test_the_tables_are_not_empty() -> None:
    options = {opt for _, opt, _, _ in BOOLEANS}
    assert {"--in-place", "-k", "--cache-repair", "-r", "-y", "--trust-insecure"} <= options
    assert "--skip-verify-read" in options
    assert {("extract", "-s"), ("chunk-server", "-l"), ("extract", "--seed")} <= {(c, o) for c, o, _ in LISTS}
    every = {c for c, opt, _, _ in BOOLEANS if opt == "--cache-repair"}
    assert every >= {"make", "extract", "cache", "chop", "info", "list-chunks", "tar", "untar", "mtree",
                     "prune", "chunk-server", "index-server", "mount-index"}
    assert ("verify", "-r", "repair", True) in BOOLEANS  # verify's own -r/--repair, as in desync


@given(case=st.sampled_from(BOOLEANS), value=st.sampled_from(TRUE + FALSE), before=st.booleans())
def test_every_boolean_takes_an_explicit_value(
    case: tuple[str, str, str, bool], value: str, before: bool
) -> None:
    command, opt, dest, const = case
    # the flag given plainly first: an explicit value later wins, as in cobra
    argv = [command, *([opt] if before else []), f"{opt}={value}", *_positionals(command)]
    args = _parse(argv)
    assert getattr(args, dest) == (const if value in TRUE else not const)


@given(case=st.sampled_from(BOOLEANS), value=st.text(min_size=1, max_size=6).filter(
    lambda v: v.strip().lower() not in {"1", "0", "t", "f", "true", "false", "yes", "no"}))
def test_a_boolean_with_another_value_is_a_usage_error(case: tuple[str, str, str, bool], value: str) -> None:
    command, opt, _, _ = case
    with pytest.raises(UsageError, match="invalid boolean value"):
        pycasync.rewrite_argv([command, f"{opt}={value}"], PARSER)


_PART = st.text(st.characters(blacklist_characters=",\"\r\n\x00", blacklist_categories=("Cs",)), min_size=1,
                max_size=8).filter(lambda p: not p.startswith("-"))  # "-x" alone would read as an option


@given(case=st.sampled_from(LISTS), groups=st.lists(st.lists(_PART, min_size=1, max_size=3), min_size=1,
                                                     max_size=3))
def test_every_list_option_takes_commas_and_repeats(
    case: tuple[str, str, str], groups: list[list[str]]
) -> None:
    command, opt, dest = case
    argv = [command]
    for group in groups:
        argv += [opt, ",".join(group)] if not opt.startswith("--") else [f"{opt}={','.join(group)}"]
    args = _parse([*argv, *_positionals(command)])
    assert getattr(args, dest) == [part for group in groups for part in group]


@given(parts=st.lists(st.text(st.characters(blacklist_characters='"\r\n\x00', blacklist_categories=("Cs",)),
                              max_size=8), max_size=4))
def test_split_list_reads_quoted_parts_as_cobra(parts: list[str]) -> None:
    text = ",".join('"' + p + '"' for p in parts)  # quoted: commas inside stay
    assert split_list(text) == [p for p in parts if p]


_TOKENS = ["-k", "--in-place=false", "-k=true", "-s", "a,b", "--seed", "x", "--"]


@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=8))
def test_rewriting_never_touches_values_or_what_follows_the_double_dash(tokens: list[str]) -> None:
    argv = ["extract", *tokens]
    out = pycasync.rewrite_argv(argv, PARSER)
    if "--" in tokens:
        cut = argv.index("--")
        assert out[out.index("--"):] == argv[cut:]
    assert len(out) == len(argv)


def test_hidden_negations_stay_out_of_help(env: dict[str, str]) -> None:
    text = ok(env, "extract", "--help").stdout.decode()
    assert "=false" not in text.split("options:")[0] and "--cache-repair" in text


# --------------------------------------------------------------------------- end to end


def test_cli_boolean_values_and_lists(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: str
) -> None:
    store, index, content = made
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", f"{tmp_path}/nothing,{store}", "--in-place=false", "-k=false", index, out)
    assert read(out) == content
    ok(env, "extract", "--in-place=true", "-s", store, index, out)  # -k: in place over the same data
    assert read(out) == content
    one_error(run(env, "extract", "--in-place=maybe", "-s", store, index, out), 2, "--in-place", "maybe")
    ok(env, "prune", "-y=true", "-s", store, index)


def _damage_one(cache: str) -> str:
    for directory, _, names in os.walk(cache):
        for name in sorted(names):
            if name.endswith(".cacnk"):
                path = os.path.join(directory, name)
                with open(path, "r+b") as f:
                    f.seek(0, os.SEEK_END)
                    f.truncate(f.tell() // 2)
                return path
    raise AssertionError("no chunk in the cache")


def test_cache_repair_false_is_an_error(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: str
) -> None:
    store, index, content = made
    cache = os.path.join(tmp_path, "cache")
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", store, "-c", cache, index, out)
    assert chunk_files(cache) == chunk_files(store)
    damaged = _damage_one(cache)
    proc = run(env, "extract", "-s", store, "-c", cache, "--cache-repair=false", index, out + "2")
    line = one_error(proc, 1)
    assert os.path.basename(damaged)[:-len(".cacnk")] in line and cache in line
    assert not os.path.exists(out + "2")
    with open(damaged, "rb") as f:
        short = f.read()
    ok(env, "extract", "-s", store, "-c", cache, "-r=true", index, out + "3")  # repaired from the store
    assert read(out + "3") == content and read(damaged) != short
    _damage_one(cache)
    ok(env, "extract", "-s", store, "-c", cache, index, out + "4")  # the default: repair
    assert read(out + "4") == content
