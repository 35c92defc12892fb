"""The command line's grammar: `maildesk [--config PATH] [-v] COMMAND ...`.

Each command is one entry of `COMMANDS`: its name, its help line, and the function that
adds its arguments (and subcommands), if it has any. Parsing sets `args.handler`, the
name of what runs it: the command's name (`check_config`) or its subcommand's
(`tickets_list`); ops/cli.py maps names to functions.

Built for the command at hand: a command answers in about a tenth of a second as a
process (docs/operations.md), and each subcommand's parser costs argparse a few
hundred microseconds (its help strings go through gettext one by one). So when the
command line names a known command, only that command's parser is built in full; the
others are not built at all. Without a command, with an unknown one, or with only
options (`maildesk -h`), every command is built, and help and errors read as always.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ..vocab import Status

STATUSES = tuple(s.value for s in Status)


class _Formatter(argparse.HelpFormatter):
    """argparse's own, with the terminal's width found as `shutil` finds it, without
    importing `shutil` (and the compression modules it brings) for every command."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


def _columns() -> int:
    try:
        if int(os.environ["COLUMNS"]) > 0:
            return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _subcommands(parser: argparse.ArgumentParser, metavar: str):
    return parser.add_subparsers(dest="sub", required=True, metavar=metavar)


def _add(sub, name: str, help: str, handler: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, formatter_class=_Formatter)
    p.set_defaults(handler=handler)
    return p


def _paging(parser: argparse.ArgumentParser, what: str) -> None:
    """--limit and --before of a list that shows everything unless asked for a page."""
    parser.add_argument("--limit", metavar="N", help=f"{what} a page holds (default: all)")
    parser.add_argument("--before", metavar="ID", help=f"only {what} older than ID: the next page after ID")
    parser.add_argument("--json", action="store_true")


# --- the commands ---------------------------------------------------------------------


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one full cycle, then exit")
    p.add_argument("--now", metavar="ISO-8601", help="with --once: run the cycle as if the clock said this time")


def _tickets(p: argparse.ArgumentParser) -> None:
    sub = _subcommands(p, "list|show")
    tl = _add(sub, "list", "tickets, newest first, a page at a time", "tickets_list")
    tl.add_argument("--status", choices=STATUSES)
    tl.add_argument("--limit", metavar="N", help="tickets a page holds (default 50)")
    tl.add_argument("--before", metavar="REF", help="only tickets older than REF: the next page after REF")
    tl.add_argument("--json", action="store_true")
    ts = _add(sub, "show", "one ticket with its messages, tasks and history", "tickets_show")
    ts.add_argument("ref", metavar="REF")
    ts.add_argument("--json", action="store_true")


def _inbound(p: argparse.ArgumentParser) -> None:
    sub = _subcommands(p, "list|retry")
    il = _add(sub, "list", "stored inbound mail and quarantined failures", "inbound_list")
    il.add_argument("--failed", action="store_true", help="only quarantined messages")
    _paging(il, "messages")
    ir = _add(sub, "retry", "process a quarantined message again", "inbound_retry")
    ir.add_argument("id", metavar="ID")


def _why(p: argparse.ArgumentParser) -> None:
    p.add_argument("message_id", metavar="MESSAGE-ID")


def _outbox(p: argparse.ArgumentParser) -> None:
    _paging(_add(_subcommands(p, "list"), "list", "outgoing mail and its delivery state", "outbox_list"), "mails")


def _report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="DATE", help="only tickets created on or after this date (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="only tickets created before the end of this date (YYYY-MM-DD)")
    p.add_argument("--now", metavar="ISO-8601", help="measure against this time instead of the clock")
    p.add_argument("--json", action="store_true")


def _status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--now", metavar="ISO-8601", help="measure ages against this time instead of the clock")
    p.add_argument("--json", action="store_true")


def _kb(p: argparse.ArgumentParser) -> None:
    sub = _subcommands(p, "list|show")
    _add(sub, "list", "the articles, newest first (retired ones marked)", "kb_list").add_argument(
        "--json", action="store_true")
    ks = _add(sub, "show", "one article with its text and versions", "kb_show")
    ks.add_argument("number", metavar="N", help="the article's number, e.g. 7 or KB-7")
    ks.add_argument("--json", action="store_true")


# each command: its name, its help line, and what adds its arguments (None: it has none)
COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None] | None], ...] = (
    ("init", "create or migrate the database; safe to run again", None),
    ("check-config", "validate the config", None),
    ("run", "the daemon, in the foreground", _run),
    ("tickets", "list or show tickets", _tickets),
    ("inbound", "stored inbound mail", _inbound),
    ("why", "the decision log of one message", _why),
    ("outbox", "outgoing mail", _outbox),
    ("report", "KPIs", _report),
    ("status", "health at a glance: fetching, inbound, outbox, next SLA deadlines", _status),
    ("example-config", "print the commented example configuration shipped in the package", None),
    ("systemd-unit", "print the hardened systemd unit shipped in the package, for this install", None),
    ("kb", "knowledge-base articles", _kb),
)


def build_parser(argv: Sequence[str] | None = None, version: str = "") -> argparse.ArgumentParser:
    """The parser for `argv` (default: every command, as for `maildesk -h`)."""
    p = argparse.ArgumentParser(prog="maildesk", description="An email-first IT incident desk.",
                                formatter_class=_Formatter)
    p.add_argument("--config", metavar="PATH", help="the TOML config (default: $MAILDESK_CONFIG or /etc/maildesk/maildesk.toml)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("--version", action="version", version=f"maildesk {version}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = command_of(argv)
    for name, help, build in COMMANDS:
        if named is None or name == named:
            command = sub.add_parser(name, help=help, formatter_class=_Formatter)
            # the handler is the command's name; a subcommand's own (`_add`) is set over it
            command.set_defaults(handler=name.replace("-", "_"))
            if build is not None:
                build(command)
    return p


def command_of(argv: Sequence[str] | None) -> str | None:
    """The known command `argv` names, read past the options before it; None when it
    names none, or when it asks for the version or for help before naming one."""
    if argv is None:
        return None
    known = {name for name, _, _ in COMMANDS}
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)  # its value, whatever it looks like
        elif arg in ("-h", "--help", "--version", "--"):
            return None
        elif arg.startswith("--config=") or arg == "--verbose" or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            continue
        elif arg.startswith("-"):
            return None  # an option argparse will judge: with every command in view
        else:
            return arg if arg in known else None
    return None
