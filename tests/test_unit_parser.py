"""The command line is parsed alike whether the parser was built for the command at
hand (as every `maildesk` process does, to start faster) or whole."""

from __future__ import annotations

import contextlib
import io

import pytest

from maildesk.ops.cli import HANDLERS
from maildesk.ops.parser import COMMANDS, build_parser, command_of

LINES = [
    ["init"], ["--config", "x.toml", "check-config"], ["-v", "run", "--once", "--now", "2026-11-30T09:00"],
    ["tickets", "list", "--status", "open", "--limit", "5", "--before", "INC-9", "--json"],
    ["--config=x.toml", "-vv", "tickets", "show", "INC-4"], ["inbound", "list", "--failed", "--limit", "3"],
    ["inbound", "retry", "12"], ["--verbose", "why", "<a@b>"], ["outbox", "list", "--before", "7"],
    ["report", "--since", "2026-11-01", "--until", "2026-11-07", "--json"], ["status", "--now", "2026-11-30"],
    ["example-config"], ["systemd-unit"], ["kb", "list", "--json"], ["kb", "show", "KB-7"],
    ["--config", "tickets", "status"],  # a config file named like a command
]


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_a_command_line_parses_the_same_with_the_parser_built_for_it_as_with_the_whole_one(argv):
    built_for_it = build_parser(argv).parse_args(argv)
    assert vars(built_for_it) == vars(build_parser().parse_args(argv))
    assert built_for_it.handler in HANDLERS


def test_every_command_has_a_handler_and_every_handler_a_command():
    assert {build_parser(argv).parse_args(argv).handler for argv in LINES} == set(HANDLERS)


def _output(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit):
        build_parser(argv).parse_args(argv)
    return out.getvalue()


def test_help_and_errors_before_a_command_name_every_command():
    for argv in (["-h"], ["--config", "x.toml", "--help"], ["bogus"]):
        text = _output(argv)
        assert all(name in text for name, _, _ in COMMANDS), (argv, text)


def test_a_known_command_with_a_wrong_subcommand_names_its_own_choices():
    assert "invalid choice: 'lst' (choose from 'list', 'show')" in _output(["tickets", "lst"])


def test_the_command_is_read_past_the_options_before_it():
    assert command_of(["--config", "status", "-vv", "why", "<x@y>"]) == "why"
    assert command_of(["--config=a.toml", "--verbose", "tickets", "list"]) == "tickets"
    assert command_of(["--conf", "a.toml", "tickets"]) is None  # an abbreviation: argparse decides, with all in view
    assert command_of(["--version", "tickets"]) is None
    assert command_of(["tickets-list"]) is None
    assert command_of(None) is None


@pytest.mark.parametrize("columns", ["50", "0", "wide", None])
def test_help_is_as_wide_as_argparse_makes_it_without_loading_shutil(monkeypatch, columns):
    import argparse

    from maildesk.ops.parser import _Formatter

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _Formatter("maildesk")._width == argparse.HelpFormatter("maildesk")._width  # type: ignore[attr-defined]


def test_the_cli_module_run_as_a_script_finds_its_handlers():
    """`python -m maildesk.ops.cli` runs main() at the end of the module: every name a
    command needs is defined by then (HANDLERS once came after it: a NameError)."""
    import subprocess
    import sys

    from tests.conftest import child_env

    out = subprocess.run([sys.executable, "-m", "maildesk.ops.cli", "example-config"], capture_output=True, text=True,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    assert "[desk]" in out.stdout
