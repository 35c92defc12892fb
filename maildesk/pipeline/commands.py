"""Stage 6: `#commands` at the top of a reply, one-click links, and survey answers.

A command block is the lines at the very top of the reply (after the quoted history
is stripped and HTML turned into text) that each start with `#word`; the first other
line ends it. The block is all or nothing (DESIGN section 4): each line is checked
first (known, well formed, allowed for this sender, sender authenticated), and then
all are applied inside one savepoint; if any line fails, nothing changes and the
sender gets a reply that lists each line with what was wrong.

Each command is a small `Command` below: who may run it, how its argument is read,
what it does. The text after the block is the reply itself (`ctx.body`), relayed by
the next stage unless a command used it (`#note`, `#resolve`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

from .. import escalation, lifecycle, resolution, sla, survey
from ..config import LEVELS, PRIORITIES
from ..models import Message, Task, Ticket, savepoint
from .context import Context, Discard

log = logging.getLogger(__name__)

COMMAND_LINE = re.compile(r"^#([A-Za-z][A-Za-z-]*)(?:[ \t]+(.*))?$")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class CommandError(Exception):
    """What is wrong with one command line, said to its sender."""


@dataclass(frozen=True)
class Command:
    name: str
    who: str  # staff | requester | anyone
    usage: str
    summary: str
    read: Callable[[Context, str], Any]  # the argument, checked; raises CommandError
    run: Callable[[Context, Any], None]  # the change; may raise CommandError


def split_block(text: str) -> tuple[list[str], str]:
    """The command lines at the top of `text`, and the rest."""
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    block = []
    while i < len(lines) and COMMAND_LINE.match(lines[i].strip()):
        block.append(lines[i].strip())
        i += 1
    return block, "\n".join(lines[i:]).strip()


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
    if ctx.ticket.status not in lifecycle.ACTIVE:
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
    return addr


def _reopenable(ctx, arg):
    _none(ctx, arg)
    t = ctx.ticket
    if t.status not in ("resolved", "closed"):
        raise CommandError(f"{ctx.ref} is {t.status}, not resolved or closed")
    if not lifecycle.within_reopen_window(ctx.rt, t, ctx.now):
        raise CommandError(f"{ctx.ref} is past the reopen window ({ctx.cfg.lifecycle.reopen_window.text}); write a new mail to open a new ticket")
    return None


def _closable(ctx, arg):
    _none(ctx, arg)
    if ctx.ticket.status in ("closed", "cancelled"):
        raise CommandError(f"{ctx.ref} is already {ctx.ticket.status}")
    return None


# --- what each command does ----------------------------------------------------------


def _run_assign(ctx, tech):
    t = ctx.ticket
    lifecycle.assign(ctx.rt, t, tech.email, ctx.now, ctx.sender, "#assign", ctx.inbound)
    if tech.email != ctx.sender:
        ctx.send("assigned", tech.email, rcpt_name=tech.display_name, ticket=t, context={"by": ctx.sender})


def _run_group(ctx, group):
    t = ctx.ticket
    lifecycle.set_group(t, group, ctx.now, ctx.sender, "#group", ctx.inbound)
    tech = ctx.cfg.technician(t.assignee)
    if t.assignee and (tech is None or group not in tech.groups):
        from .. import routing

        chosen, how = routing.pick_assignee(ctx.rt, group, ctx.now)
        lifecycle.assign(ctx.rt, t, chosen.email if chosen else None, ctx.now, ctx.sender, how, ctx.inbound)
        for rcpt in ([chosen.email] if chosen else [m.email for m in ctx.cfg.members(group)]):
            if rcpt != ctx.sender:
                ctx.send("assigned", rcpt, ticket=t, context={"by": ctx.sender})


def _run_status(ctx, status):
    try:
        lifecycle.change_status(ctx.rt, ctx.ticket, status, ctx.now, ctx.sender, "#status", ctx.inbound)
    except lifecycle.NotAllowed as e:
        raise CommandError(str(e)) from None


def _run_priority(ctx, priority):
    t = ctx.ticket
    old = t.priority
    t.priority, t.priority_set = priority, True
    ctx.event("priority", f"{old} -> {priority} (set by #priority; the matrix no longer applies)")
    _recompute_sla(ctx)


def _run_level(which):
    def run(ctx, level):
        t = ctx.ticket
        old = getattr(t, which)
        setattr(t, which, level)
        detail = f"{which} {old} -> {level} (#{which})"
        if not t.priority_set:
            new = ctx.cfg.priority.matrix[t.impact][t.urgency]
            if new != t.priority:
                detail += f"; priority {t.priority} -> {new} (matrix: impact {t.impact} x urgency {t.urgency})"
                t.priority = new
        ctx.event("priority", detail)
        _recompute_sla(ctx)

    return run


def _recompute_sla(ctx):
    t = ctx.ticket
    old = (t.response_due, t.resolution_due)
    sla.apply_policy(ctx.rt, t, ctx.now)
    if (t.response_due, t.resolution_due) != old:
        ctx.event("sla", "targets recomputed from creation: " + sla.describe_due(ctx.rt, t), actor="desk")


def _run_category(ctx, name):
    t = ctx.ticket
    old = t.category
    t.category = name
    ctx.event("category", f"{old} -> {name} (#category)")
    _recompute_sla(ctx)


def _run_resolve(ctx, code):
    text = ctx.body
    ctx.body = ""  # the rest of the mail is the resolution, sent by the resolution mail
    resolution.resolve_ticket(ctx.rt, ctx.ticket, code, text, ctx.now, ctx.sender, ctx.inbound, by_name=_name(ctx))


def _run_note(ctx, _):
    ctx.internal = True


def _run_task(ctx, value):
    title, tech = value
    t = ctx.ticket
    n = (Task.select(Task.number).where(Task.ticket == t).order_by(Task.number.desc()).scalar() or 0) + 1
    task = Task.create(ticket=t, number=n, title=title, assignee=tech.email if tech else None, created_at=ctx.now)
    ctx.event("task-added", f"task {n}: {title}" + (f" (for {tech.display_name})" if tech else ""))
    if tech and tech.email != ctx.sender:
        ctx.send("task_assigned", tech.email, rcpt_name=tech.display_name, ticket=t, context={"task": task, "by": ctx.sender})


def _run_done(ctx, task):
    task.done, task.done_at = True, ctx.now
    task.save()
    ctx.event("task-done", f"task {task.number} done: {task.title}")


def _run_escalate(ctx, group):
    escalation.escalate(ctx.rt, ctx.ticket, ctx.now, ctx.sender, "#escalate", to_group=group, inbound=ctx.inbound)


def _run_major(ctx, _):
    t = ctx.ticket
    if t.is_major:
        raise CommandError(f"{ctx.ref} is already a major incident")
    t.is_major = True
    old = t.priority
    t.priority, t.priority_set = "critical", True
    ctx.event("major", f"declared a major incident; priority {old} -> critical")
    _recompute_sla(ctx)
    for im in ctx.cfg.roles.incident_managers:
        ctx.send("major_declared", im, ticket=t, context={"by": ctx.sender})


def _run_link(ctx, parent):
    t = ctx.ticket
    t.parent = parent
    ctx.event("linked", f"child of major incident {ctx.rt.ref(parent)}")
    ctx.event("linked", f"{ctx.ref} linked as a child", ticket=parent)


def _run_cc(ctx, addr):
    lifecycle.add_participant(ctx.ticket, addr, "cc")
    ctx.event("cc-added", f"{addr} added as a participant")


def _run_help(ctx, _):
    ctx.send("help", ctx.sender, rcpt_name=ctx.sender_name, ticket=ctx.ticket,
             context={"commands": allowed_commands(ctx)})


def _run_close(ctx, _):
    t = ctx.ticket
    if t.status == "resolved":
        resolution.close_ticket(ctx.rt, t, ctx.now, ctx.sender, "confirmed by #close", ctx.inbound)
    else:
        lifecycle.change_status(ctx.rt, t, "cancelled", ctx.now, ctx.sender, "withdrawn with #close", ctx.inbound)
        t.closed_at = ctx.now
        if t.assignee:
            ctx.send("withdrawn", t.assignee, ticket=t, context={"by": ctx.sender})


def _run_reopen(ctx, _):
    resolution.reopen_ticket(ctx.rt, ctx.ticket, ctx.now, ctx.sender, "#reopen", ctx.inbound)


def _name(ctx) -> str:
    tech = ctx.cfg.technician(ctx.sender)
    return tech.display_name if tech else (ctx.sender_name or ctx.sender)


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
    Command("task", "staff", "#task TITLE [@NAME]", "add a task", _task, _run_task),
    Command("done", "staff", "#done N", "complete task N", _task_number, _run_done),
    Command("escalate", "staff", "#escalate [GROUP]", "functional escalation", _optional_group, _run_escalate),
    Command("major", "staff", "#major", "declare a major incident", _none, _run_major),
    Command("link", "staff", "#link REF", "make this ticket a child of a major incident", _major_ref, _run_link),
    Command("cc", "staff", "#cc EMAIL", "add a participant", _address, _run_cc),
    Command("help", "anyone", "#help", "list the commands you may use", _none, _run_help),
    Command("close", "requester", "#close", "confirm the resolution and close the ticket", _closable, _run_close),
    Command("reopen", "requester", "#reopen", "reopen a resolved ticket", _reopenable, _run_reopen),
)}


def may_run(ctx: Context, command: Command) -> str | None:
    """Why this sender may not run `command` on this ticket, or None."""
    if command.who == "anyone":
        return None
    if command.who == "staff" and not ctx.is_staff:
        return "only technicians may use it"
    if command.who == "requester" and not (ctx.role == "requester" or ctx.is_staff):
        return f"only the requester of {ctx.ref} may use it"
    if not ctx.authenticated:
        return f"you are not authenticated: {ctx.auth_reason}"
    return None


def allowed_commands(ctx: Context) -> list[Command]:
    return [c for c in COMMANDS.values()
            if c.who == "anyone" or (c.who == "staff" and ctx.is_staff)
            or (c.who == "requester" and (ctx.role == "requester" or ctx.is_staff))]


# --- the stage -------------------------------------------------------------------------


def apply(ctx: Context) -> None:
    if ctx.ticket is None:
        _new_mail(ctx)
        return
    if ctx.token:
        _one_click(ctx)
    if ctx.reply_to_kind == "survey" and ctx.role == "requester" and survey.answer_by_reply(ctx):
        raise Discard("survey", "survey answer by reply")
    block, ctx.body = split_block(ctx.mail.reply_text)
    if not block:
        return
    parsed, problems = [], []
    for line in block:
        m = COMMAND_LINE.match(line)
        name, arg = m.group(1).lower(), (m.group(2) or "").strip()
        command = COMMANDS.get(name)
        try:
            if command is None:
                raise CommandError("unknown command (send #help for the list)")
            why_not = may_run(ctx, command)
            if why_not:
                raise CommandError(why_not)
            parsed.append((line, command, command.read(ctx, arg)))
            problems.append((line, "ok"))
        except CommandError as e:
            problems.append((line, str(e)))
    if any(p != "ok" for _, p in problems):
        refuse(ctx, problems)
    _run_all(ctx, parsed)
    ctx.decide(f"commands applied: {'; '.join(line for line, _, _ in parsed)}")
    ctx.command_only = not ctx.body


def _run_all(ctx: Context, parsed) -> None:
    """Apply the block in a savepoint: a line that fails undoes the lines before it."""
    intents = len(ctx.intents)
    ticket_id = ctx.ticket.id
    failed = None
    try:
        with savepoint():
            for i, (line, command, value) in enumerate(parsed):
                try:
                    command.run(ctx, value)
                except CommandError as e:
                    failed = (i, str(e))
                    raise
            ctx.ticket.save()
    except CommandError:
        del ctx.intents[intents:]
        ctx.ticket = Ticket.get_by_id(ticket_id)
        problems = [(line, "ok" if i != failed[0] else failed[1]) for i, (line, _, _) in enumerate(parsed)]
        problems = [(line, p if i <= failed[0] else "not run") for i, (line, p) in enumerate(problems)]
        refuse(ctx, problems)


def refuse(ctx: Context, problems: list[tuple[str, str]]) -> None:
    """Nothing changes; the mail is kept as an internal note; its sender is told why."""
    unauthenticated = ctx.is_staff and not ctx.authenticated
    kind = "unauthenticated" if unauthenticated else "refused"
    ctx.message = Message.create(
        ticket=ctx.ticket, inbound=ctx.inbound, direction="in", message_id=ctx.mail.message_id,
        from_addr=ctx.sender or ctx.inbound.from_addr, from_name=ctx.sender_name, subject=ctx.mail.subject,
        body=ctx.mail.text, internal=True, kind=kind, created_at=ctx.now,
    )
    summary = "; ".join(f"{line}: {p}" for line, p in problems if p not in ("ok", "not run"))
    ctx.event(kind, f"commands refused, nothing changed: {summary}"
              + ("; spoofed desk Message-ID" if ctx.spoofed_reference else ""),
              actor=ctx.sender or ctx.inbound.from_addr or "unknown")
    if ctx.sender:
        ctx.send(kind, ctx.sender, rcpt_name=ctx.sender_name, ticket=ctx.ticket,
                 context={"problems": problems, "auth_reason": ctx.auth_reason})
    raise Discard("refused", f"commands refused: {summary}")


def _new_mail(ctx: Context) -> None:
    """A new mail runs no commands, except that a mail of just #help gets the list."""
    block, rest = split_block(ctx.mail.reply_text)
    ctx.body = ctx.mail.text.strip()  # a new mail is kept whole: a forwarded history is the incident
    if block and not rest and all(COMMAND_LINE.match(line).group(1).lower() == "help" for line in block):
        if ctx.sender and not ctx.automatic:
            ctx.is_staff = ctx.cfg.is_staff(ctx.sender)
            from ..outbox import Thread

            ctx.send("help", ctx.sender, rcpt_name=ctx.sender_name, context={"commands": allowed_commands(ctx)},
                     thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
        raise Discard("help", "a #help mail: answered with the command list, no ticket")
    if block:
        ctx.decide("command lines in a new mail are not run: a new mail opens a ticket")


def _one_click(ctx: Context) -> None:
    action, _ = ctx.token
    t = ctx.ticket
    who = ctx.sender
    if action.startswith("rate"):
        survey.record_answer(ctx.rt, t, int(action[4:]), None, ctx.now, who, "one-click link", ctx.inbound)
        raise Discard("survey", f"survey rating {action[4:]} by link")
    if action == "fixed":
        if t.status == "resolved":
            resolution.close_ticket(ctx.rt, t, ctx.now, who, "confirmed fixed by the requester (one-click link)", ctx.inbound)
            raise Discard("confirmed", "the requester confirmed the resolution")
        ctx.decide(f"'fixed' link on a {t.status} ticket: nothing to confirm")
        raise Discard("ignored", f"'fixed' link, but {ctx.ref} is {t.status}")
    if action == "notfixed":
        if t.status in ("resolved", "closed") and lifecycle.within_reopen_window(ctx.rt, t, ctx.now):
            resolution.reopen_ticket(ctx.rt, t, ctx.now, who, "the requester says it is not fixed (one-click link)", ctx.inbound)
            raise Discard("reopened", "the requester rejected the resolution")
        raise Discard("ignored", f"'not fixed' link, but {ctx.ref} is {t.status}"
                      + (" and past the reopen window" if t.status in ("resolved", "closed") else ""))
