"""``manpage DIR``: man pages in roff, from the same parser definitions as ``--help``.

:func:`render_manpage` turns one argparse parser (the top-level one or a
command's) into a man(7) page: NAME, SYNOPSIS, DESCRIPTION, one section per
option group listing every flag with its value name and help, EXAMPLES and
SEE ALSO. :func:`write_manpages` writes ``pycasync.1`` and one
``pycasync-COMMAND.1`` per command into a directory (each atomically), so the
pages can never drift from ``--help``.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

from casync_store.plumbing.atomic import write_file_atomic

from ._common import Command, Context
from ._parser import PROG, Parser

__all__ = ["Manpage", "ManHeader", "render_manpage", "write_manpages", "roff_escape"]


def roff_escape(text: str) -> str:
    """``text`` safe in roff: backslashes and dashes escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _flag_line(action: argparse.Action) -> str:
    """The ``.TP`` tag of an option: its spellings in bold and its value name in italics."""
    takes_value = action.nargs != 0
    metavar = action.metavar or (action.dest.upper() if takes_value else "")
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    spellings = []
    for opt in action.option_strings:
        word = f"\\fB{roff_escape(opt)}\\fR"
        if takes_value:
            word += f" \\fI{roff_escape(str(metavar))}\\fR"
        spellings.append(word)
    if action.choices and not action.metavar and takes_value:
        spellings[-1] += " (" + roff_escape("|".join(str(c) for c in action.choices)) + ")"
    return ", ".join(spellings)


def _help_text(parser: Parser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        params = dict(vars(action), prog=parser.prog)
        params["choices"] = ", ".join(str(c) for c in action.choices or ())
        text = text % params
    return text


def _sections(parser: Parser) -> list[str]:
    """The option groups of ``parser`` as roff sections (positionals first)."""
    out = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        title = (group.title or "options").upper()
        if title in ("POSITIONAL ARGUMENTS", "POSITIONALS"):
            title = "ARGUMENTS"
        out.append(f".SH {roff_escape(title)}")
        for action in actions:
            name = f"\\fI{roff_escape(action.dest.upper())}\\fR"
            tag = _flag_line(action) if action.option_strings else name
            out += [".TP", tag, roff_escape(_help_text(parser, action))]
    return out


def _paragraphs(text: str) -> list[str]:
    """Plain text (paragraphs separated by blank lines) as roff, lines kept."""
    lines = []
    for block in text.strip().split("\n\n"):
        lines += [".PP", roff_escape(block)]
    return lines


@dataclass(frozen=True)
class ManHeader:
    """What every page's ``.TH`` line says: section, date, source and manual name."""

    section: str = "1"
    date: str = ""  # default: today
    source: str = PROG
    manual: str = f"{PROG} manual"


def render_manpage(
    parser: Parser, name: str, summary: str, description: str, examples: str = "",
    header: ManHeader = ManHeader(), see_also: Sequence[str] = (),
) -> str:
    """The man(7) page of ``parser``: ``name`` (e.g. ``pycasync-make``) and its help texts."""
    date = header.date or datetime.date.today().isoformat()
    usage = parser.format_usage().strip()
    usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
    th = [name.upper(), header.section, date, header.source, header.manual]
    lines = [
        ".TH " + " ".join(f'"{roff_escape(field)}"' for field in th),
        ".nh",  # no hyphenation: flag and command names stay whole
        ".SH NAME",
        f"{roff_escape(name)} \\- {roff_escape(summary)}",
        ".SH SYNOPSIS",
        roff_escape(" ".join(usage.split())),
        ".SH DESCRIPTION",
        *_paragraphs(description),
        *_sections(parser),
    ]
    if examples:
        lines += [".SH EXAMPLES", ".nf", roff_escape(examples.strip()), ".fi"]
    if see_also:
        section = header.section
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{roff_escape(page)}\\fR({section})" for page in see_also)]
    return "\n".join(lines) + "\n"


def write_manpages(
    parser: Parser, commands: Sequence[Command], directory: str | os.PathLike[str],
    header: ManHeader = ManHeader(), title: str = PROG,
) -> list[str]:
    """Write ``TITLE.SECTION`` and ``TITLE-COMMAND.SECTION`` per command into ``directory``.

    ``parser`` is the complete top-level parser (with ``parser.commands``);
    ``title`` names the pages (default ``pycasync``). Returns the paths
    written. Raises OSError (e.g. ``directory`` missing).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, "no such directory", directory)
    pages = [f"{title}-{command.name}" for command in commands]
    written = []
    top = render_manpage(parser, title, "content-addressed chunk stores, compatible with casync and desync",
                         parser.description or "", "\n".join(f"{PROG} {c.name} --help" for c in commands),
                         header, pages)
    for page, text in [(title, top)] + [
        (f"{title}-{c.name}", render_manpage(parser.commands[c.name], f"{title}-{c.name}", c.summary,
                                             c.description, c.examples, header, [title]))
        for c in commands
    ]:
        path = os.path.join(directory, f"{page}.{header.section}")
        write_file_atomic(path, text.encode())
        written.append(path)
    return written


class Manpage(Command):
    """``manpage``: write the man pages of pycasync and its commands."""

    name = "manpage"
    summary = "Write man pages for pycasync and every command"
    description = (
        "Writes pycasync.1 and one pycasync-COMMAND.1 per command into DIR (which\n"
        "must exist), in roff (man(7)), generated from the same definitions as\n"
        "--help: every flag of every command is listed. Read one with\n"
        "'man -l DIR/pycasync-make.1'."
    )
    examples = "pycasync manpage /usr/local/share/man/man1\nman -l /tmp/man/pycasync-extract.1"
    positionals = (("directory", "existing directory to write the pages to"),)

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("--section", default="1", metavar="N", help="man section (default 1)")
        p.add_argument("--date", default="", metavar="DATE", help="date in the page footer (default today)")
        p.add_argument("--source", default=PROG, metavar="TEXT",
                       help=f"source in the footer (default {PROG})")
        p.add_argument("--manual", default=f"{PROG} manual", metavar="TEXT",
                       help=f"manual name in the header (default '{PROG} manual')")
        p.add_argument("--title", default=PROG, metavar="NAME",
                       help=f"name of the pages: NAME.N and NAME-COMMAND.N (default {PROG})")

    def run(self, ctx: Context) -> int:
        from . import REGISTRY, build_parser

        a = ctx.args
        header = ManHeader(a.section, a.date, a.source, a.manual)
        write_manpages(build_parser(), REGISTRY, a.directory, header, title=a.title)
        return 0
