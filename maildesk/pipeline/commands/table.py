"""The command table: each `Command` says who may run it, how its argument is read
and what it does; `may_run` and `allowed_commands` answer for one sender.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...vocab import LEVELS, PRIORITIES
from ..context import Context
from .actions import (
    _run_assign,
    _run_category,
    _run_cc,
    _run_close,
    _run_done,
    _run_escalate,
    _run_group,
    _run_history,
    _run_kb,
    _run_level,
    _run_link,
    _run_major,
    _run_note,
    _run_priority,
    _run_public,
    _run_reopen,
    _run_resolve,
    _run_status,
    _run_status_query,
    _run_task,
)
from .readers import (
    _address,
    _category,
    _choice,
    _closable,
    _closure_code,
    _group,
    _kb,
    _major_ref,
    _none,
    _optional_group,
    _reopenable,
    _status_query,
    _task,
    _task_number,
    _technician,
)

log = logging.getLogger(__name__)

COMMAND_LINE = re.compile(r"^#([A-Za-z][A-Za-z-]*)(?:[ \t]+(.*))?$")


@dataclass(frozen=True)
class Command:
    name: str
    who: str  # staff | requester | anyone
    usage: str
    summary: str
    read: Callable[[Context, str], Any]  # the argument, checked; raises CommandError
    run: Callable[[Context, Any], None]  # the change; may raise CommandError


def _visible(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def command_text(line: str) -> str:
    """A line as commands are read (docs/mail.md, Commands): Unicode NFKC, invisible format
    characters (category Cf: zero-width space, RTL mark, BOM, ...) dropped, so that
    `＃note`, or `#note` behind a zero-width space or an RTL mark, is `#note`."""
    return _visible(unicodedata.normalize("NFKC", _visible(line))).strip()


def split_block(text: str, known_only: bool = False) -> tuple[list[str], str]:
    """The command lines at the top of `text` (as `command_text` reads them), and the rest.
    With `known_only` (a requester's mail) a line that names no command is plain text:
    the block ends there (`#thanks, it works` is a sentence, not an unknown command)."""
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines) and not command_text(lines[i]):
        i += 1
    block = []
    while i < len(lines) and (m := COMMAND_LINE.match(line := command_text(lines[i]))):
        if known_only and find_command(m.group(1).lower(), (m.group(2) or "").strip()) is None:
            break
        block.append(line)
        i += 1
    return block, "\n".join(lines[i:]).strip()


def command_name(line: str) -> str:
    """The command a line of a block names, lower case."""
    m = COMMAND_LINE.match(line)
    assert m is not None  # split_block keeps only the lines that match
    return m.group(1).lower()


def _run_help(ctx, _):
    ctx.send("help", ctx.sender, rcpt_name=ctx.sender_name, ticket=ctx.ticket,
             context={"commands": allowed_commands(ctx)})  # reads the table below when it runs


COMMANDS = {c.name: c for c in (
    Command("assign", "staff", "#assign NAME|EMAIL|me", "assign the ticket (its group follows)", _technician, _run_assign),
    Command("group", "staff", "#group NAME", "move the ticket to a group", _group, _run_group),
    Command("status", "staff", "#status open|in-progress|on-hold", "change the status; on-hold pauses the SLA clock",
            _choice(("open", "in-progress", "on-hold"), "a status"), _run_status),
    Command("priority", "staff", "#priority critical|high|medium|low", "set the priority (the matrix no longer applies)",
            _choice(PRIORITIES, "a priority"), _run_priority),
    Command("impact", "staff", "#impact high|medium|low", "set the impact", _choice(LEVELS, "a level"), _run_level("impact")),
    Command("urgency", "staff", "#urgency high|medium|low", "set the urgency", _choice(LEVELS, "a level"), _run_level("urgency")),
    Command("category", "staff", "#category NAME", "re-categorize", _category, _run_category),
    Command("resolve", "staff", "#resolve CODE", "resolve; the rest of your mail is the resolution sent to the requester",
            _closure_code, _run_resolve),
    Command("note", "staff", "#note", "keep this mail internal: never sent to the requester", _none, _run_note),
    Command("public", "staff", "#public", "as the first line: this reply to a staff-only mail goes to the requester",
            _none, _run_public),
    Command("task", "staff", "#task TITLE [@NAME]", "add a task", _task, _run_task),
    Command("done", "staff", "#done N", "complete task N", _task_number, _run_done),
    Command("escalate", "staff", "#escalate [GROUP]", "functional escalation", _optional_group, _run_escalate),
    Command("major", "staff", "#major", "declare a major incident", _none, _run_major),
    Command("link", "staff", "#link REF", "make this ticket a child of a major incident", _major_ref, _run_link),
    Command("cc", "staff", "#cc EMAIL", "add a participant", _address, _run_cc),
    Command("history", "staff", "#history", "get the ticket's conversation and facts by mail", _none, _run_history),
    Command("kb", "staff", "#kb [TITLE] | #kb search WORDS | #kb retire N",
            "with #resolve, or on a resolved ticket: publish the resolution as a knowledge-base article; "
            "search the articles; retire article N", _kb, _run_kb),
    Command("help", "anyone", "#help", "list the commands you may use", _none, _run_help),
    Command("close", "requester", "#close", "on a resolved ticket: it is fixed, close it; before that: withdraw it",
            _closable, _run_close),
    Command("reopen", "requester", "#reopen", "reopen a resolved ticket", _reopenable, _run_reopen),
)}


# Commands whose meaning depends on having no argument: `#status` alone asks for the
# ticket's status and is open to everyone on the ticket; `#status open` changes it.
QUERIES = {
    "status": Command("status", "anyone", "#status", "the ticket's status, assignee and due times, by mail to you",
                      _status_query, _run_status_query),
}


def find_command(name: str, arg: str) -> Command | None:
    """The command a line names: a query when it has no argument and there is one."""
    if not arg and name in QUERIES:
        return QUERIES[name]
    return COMMANDS.get(name)


def may_run(ctx: Context, command: Command) -> str | None:
    """Why this sender may not run `command` on this ticket, or None."""
    if command.who == "anyone":
        return None
    if command.who == "staff" and not ctx.is_staff:
        return "only technicians may use it"
    if command.who == "staff" and not ctx.cfg.may_command(ctx.sender, ctx.ticket.group if ctx.ticket else None):
        return f"only technicians, incident managers and the manager of {ctx.ref}'s group may use it"
    if command.who == "requester" and not (ctx.role == "requester" or ctx.is_staff):
        return f"only the requester of {ctx.ref} may use it"
    if command.who == "requester" and ctx.role == "requester":
        # docs/security.md: closing needs a verified mail (authenticated, a signed link, or a signed desk id)
        return None if ctx.verified else f"your mail is not verified: {ctx.verified_reason}"
    if not ctx.authenticated:
        return f"you are not authenticated: {ctx.auth_reason}"
    return None


def allowed_commands(ctx: Context) -> list[Command]:
    return [c for c in (*COMMANDS.values(), *QUERIES.values())
            if c.who == "anyone"
            or (c.who == "staff" and ctx.cfg.may_command(ctx.sender, ctx.ticket.group if ctx.ticket else None))
            or (c.who == "requester" and (ctx.role == "requester" or ctx.is_staff))]
