"""Argument readers: each returns the command's argument checked, or raises
`CommandError` with what is wrong.
"""

from __future__ import annotations

import re

from ...desk import kb, kbterms, lifecycle
from ...errors import MaildeskError
from ...mailout.queue import is_desk_address
from ...store import KbArticle, Task, Ticket
from ...vocab import ACTIVE

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class CommandError(MaildeskError):
    """What is wrong with one command line, said to its sender."""


# --- argument readers ---------------------------------------------------------------


def _none(ctx, arg):
    if arg:
        raise CommandError("takes no argument")
    return None


def _required(what):
    def read(ctx, arg):
        if not arg:
            raise CommandError(f"needs {what}")
        return arg

    return read


def _choice(choices, what):
    def read(ctx, arg):
        value = (arg or "").strip().lower()
        if value not in choices:
            raise CommandError(f"needs {what}: one of {', '.join(choices)}")
        return value

    return read


def _technician(ctx, arg):
    if not arg:
        raise CommandError("needs a technician: a name, an address, or me")
    who = arg.strip().lstrip("@")
    if who.lower() == "me":
        tech = ctx.cfg.technician(ctx.sender)
        if tech is None:
            raise CommandError(f"{ctx.sender} is not a technician, so 'me' names nobody")
        return tech
    tech = ctx.cfg.find_technician(who)
    if tech is None:
        raise CommandError(f'no technician called "{who}"')
    return tech


def _group(ctx, arg):
    if not arg:
        raise CommandError("needs a group name")
    if ctx.cfg.group(arg.strip()) is None:
        raise CommandError(f'no group called "{arg.strip()}" (groups: {", ".join(g.name for g in ctx.cfg.groups) or "none"})')
    return arg.strip()


def _optional_group(ctx, arg):
    return _group(ctx, arg) if arg else None


def _category(ctx, arg):
    if not arg:
        raise CommandError("needs a category name")
    name = arg.strip()
    c = ctx.cfg.category(name)
    if c is None and name.lower() != "general":
        raise CommandError(f'no category called "{name}"')
    return c.name if c else "General"


def _closure_code(ctx, arg):
    codes = ctx.cfg.lifecycle.closure_codes
    code = (arg or "").strip().lower()
    if code not in codes:
        raise CommandError(f"needs a closure code: one of {', '.join(codes)}")
    if ctx.ticket.status not in ACTIVE:
        raise CommandError(f"{ctx.ref} is already {ctx.ticket.status}")
    open_tasks = list(ctx.ticket.tasks.where(Task.done == False).order_by(Task.number))  # noqa: E712
    if open_tasks:
        listing = "; ".join(f"#{t.number} {t.title}" for t in open_tasks)
        raise CommandError(f"{ctx.ref} has open tasks: {listing} (finish them with #done N first)")
    return code


def _task(ctx, arg):
    if not arg:
        raise CommandError("needs a title, e.g. #task replace the cable @alice")
    m = re.match(r"^(.*?)\s+@(\S+)$", arg.strip())
    title, who = (m.group(1), m.group(2)) if m else (arg.strip(), None)
    tech = _technician(ctx, who) if who else None
    if not title.strip():
        raise CommandError("needs a title before the @name")
    return title.strip()[:500], tech


def _task_number(ctx, arg):
    if not arg or not arg.strip().lstrip("#").isdigit():
        raise CommandError("needs a task number, e.g. #done 2")
    n = int(arg.strip().lstrip("#"))
    task = Task.get_or_none((Task.ticket == ctx.ticket) & (Task.number == n))
    if task is None:
        raise CommandError(f"{ctx.ref} has no task {n}")
    if task.done:
        raise CommandError(f"task {n} is already done")
    return task


def _major_ref(ctx, arg):
    prefix = ctx.cfg.desk.ticket_prefix
    m = re.fullmatch(rf"\[?{re.escape(prefix)}-(\d+)\]?", (arg or "").strip(), re.I)
    if not m:
        raise CommandError(f"needs a ticket reference such as {prefix}-7")
    parent = Ticket.get_or_none_by_id(int(m.group(1)))
    if parent is None:
        raise CommandError(f"there is no ticket {arg.strip()}")
    if parent.id == ctx.ticket.id:
        raise CommandError("a ticket cannot be its own parent")
    if not parent.is_major:
        raise CommandError(f"{ctx.rt.ref(parent)} is not a major incident (declare it with #major first)")
    return parent


def _address(ctx, arg):
    addr = (arg or "").strip().strip("<>").lower()
    if not _ADDRESS.match(addr):
        raise CommandError("needs a mail address")
    if is_desk_address(ctx.rt, addr):
        raise CommandError(f"{addr} is an address of the desk itself")
    return addr


def _reopenable(ctx, arg):
    _none(ctx, arg)
    t = ctx.ticket
    if t.status not in ("resolved", "closed"):
        raise CommandError(f"{ctx.ref} is {t.status}, not resolved or closed")
    if not lifecycle.within_reopen_window(ctx.rt, t, ctx.now):
        raise CommandError(f"{ctx.ref} is past the reopen window ({ctx.cfg.lifecycle.reopen_window.words}); "
                           "write a new mail to open a new ticket")
    return None


def _closable(ctx, arg):
    _none(ctx, arg)
    if ctx.ticket.status in ("closed", "cancelled"):
        raise CommandError(f"{ctx.ref} is already {ctx.ticket.status}")
    return None


def _kb(ctx, arg):
    """`#kb [TITLE]`, `#kb search WORDS`, `#kb retire N` (docs/mail.md, Knowledge base)."""
    head, _, rest = (arg or "").strip().partition(" ")
    if head.lower() == "search":
        if not rest.strip():
            raise CommandError("needs words to search for, e.g. #kb search vpn drops")
        return ("search", rest.strip()[:500])
    if head.lower() == "retire":
        n = kb.parse_number(rest)
        if n is None:
            raise CommandError("needs an article number, e.g. #kb retire 7")
        article = KbArticle.get_or_none_by_id(n)
        if article is None:
            raise CommandError(f"there is no article {kb.ref(n)}")
        if article.retired:
            raise CommandError(f"{kb.ref(n)} is already retired")
        return ("retire", article)
    t = ctx.ticket
    resolving = any(_RESOLVE_LINE.match(line) for line in ctx.block)
    if t.status not in ("resolved", "closed") and not resolving:
        raise CommandError(f"{ctx.ref} is {t.status}: publish with #resolve in the same mail, or once it is resolved")
    # with #resolve, the text below the commands is the resolution (once #resolve has run, the
    # ticket holds it: the block runs line by line); else a text of its own, or the resolution
    text = kbterms.clean_resolution(ctx.body if ctx.body.strip() else (t.resolution or ""))
    if not text:
        raise CommandError("nothing to publish: write the fix below the commands")
    title = " ".join((arg or "").split())[:200] or kbterms.title_from_subject(t.subject)
    return ("publish", title, text, resolving)


_RESOLVE_LINE = re.compile(r"(?i)^#resolve(?:\s|$)")


def _status_query(ctx, arg):
    """`#status` without an argument: anyone on the ticket may ask, nobody else."""
    _none(ctx, arg)
    if not (ctx.role in ("requester", "participant") or ctx.is_staff):
        raise CommandError(f"only the requester, the participants and staff of {ctx.ref} may ask for its status")
    return None
