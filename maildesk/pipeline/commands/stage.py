"""The stage: the command block of a reply checked as a whole, then run; refusals.
"""

from __future__ import annotations

from ...desk import survey
from ...mailout.queue import Thread, is_desk_address
from ...store import Ticket, savepoint
from ...vocab import is_staff_only
from ..context import Context, Discard
from ..messages import refuse
from .clicks import _one_click
from .queries import answer_query
from .readers import _ADDRESS, CommandError
from .table import COMMAND_LINE, allowed_commands, find_command, may_run, split_block

# --- the stage -------------------------------------------------------------------------


def apply(ctx: Context) -> None:
    if ctx.ticket is None:
        _new_mail(ctx)
        return
    if ctx.token:
        _one_click(ctx)
    if ctx.reply_to_kind == "survey" and ctx.role == "requester" and survey.answer_by_reply(ctx):
        raise Discard("survey", "survey answer by reply")
    # in a requester's mail an unknown #word is plain text (docs/mail.md, Commands)
    block, ctx.body = split_block(ctx.mail.reply_text, known_only=not ctx.is_staff or ctx.role == "requester")
    _staff_only(ctx, block)
    if not block:
        return
    ctx.block = block
    lines, problems, denied = [], [], False
    for i, line in enumerate(block):  # first: known, allowed, authenticated
        name, arg = _name_and_arg(line)
        command = find_command(name, arg)
        why_not = "unknown command (send #help for the list)" if command is None else may_run(ctx, command)
        if why_not is None and name == "public" and i > 0:
            why_not = "#public works only as the first line of the reply"
        denied = denied or why_not is not None
        if command is not None and why_not is None:
            try:  # its argument as the ticket stands now, to list every problem if the block is refused
                command.read(ctx, arg)
            except CommandError as e:
                why_not = str(e)
        problems.append((line, why_not or "ok"))
        lines.append((line, command, arg))
    if denied:
        refuse(ctx, problems)
    if any(name == "note" for name in (_name_and_arg(line)[0] for line in block)):
        ctx.internal = True  # before any line runs: #resolve then #note keeps the words internal too
    _run_all(ctx, lines)
    ctx.decide(f"commands applied: {'; '.join(line for line, _, _ in lines)}")


def _name_and_arg(line: str) -> tuple[str, str]:
    """The command name, lower case, and the argument of a line that split_block kept."""
    m = COMMAND_LINE.match(line)
    assert m is not None  # split_block keeps only the lines that match
    return m.group(1).lower(), (m.group(2) or "").strip()


def _staff_only(ctx: Context, block: list[str]) -> None:
    """A staff reply to a staff-only mail (vocab.is_staff_only) is an internal note
    unless its first line is #public (docs/mail.md, Commands)."""
    if not ctx.is_staff or ctx.role == "requester" or not is_staff_only(ctx.reply_to_kind):
        return
    if block and _name_and_arg(block[0])[0] == "public":
        ctx.decide(f"answers a staff-only mail ({ctx.reply_to_kind}) but starts with #public: it goes to the requester")
        return
    ctx.internal = True
    ctx.decide(f"answers a staff-only mail ({ctx.reply_to_kind}): kept as an internal note "
               "(start the reply with #public to reach the requester)")


def _run_all(ctx: Context, lines) -> None:
    """Check and apply the block line by line in one savepoint, each line against the
    state the lines before it leave (`#done 1` then `#resolve fixed` works); a line
    that fails undoes the lines before it, and none of the block stays applied."""
    intents = len(ctx.intents)
    assert ctx.ticket is not None  # apply() runs commands on a ticket only
    ticket_id = ctx.ticket.id
    failed: tuple[int, str] | None = None
    try:
        with savepoint():
            for i, (_line, command, arg) in enumerate(lines):
                try:
                    command.run(ctx, command.read(ctx, arg))
                except CommandError as e:
                    failed = (i, str(e))
                    raise
            ctx.ticket.save()
    except CommandError:
        assert failed is not None  # set by the line that raised it
        at, why = failed
        del ctx.intents[intents:]
        ctx.ticket = Ticket.get_by_id(ticket_id)
        problems = [(line, "ok" if i < failed[0] else failed[1] if i == failed[0] else "not run")
                    for i, (line, _, _) in enumerate(lines)]
        refuse(ctx, problems)


def _new_mail(ctx: Context) -> None:
    """A new mail runs no commands, except that a mail of just #help gets the list."""
    block, rest = split_block(ctx.mail.reply_text)
    # a new mail is kept whole: a forwarded history is the incident (a follow-up opened
    # by a 'not fixed' link brings its comment, set by correlate)
    ctx.body = ctx.body or ctx.mail.text.strip()
    if block and not rest and all(_name_and_arg(line)[0] == "help" for line in block):
        if ctx.sender and not ctx.automatic:
            ctx.is_staff = ctx.cfg.is_staff(ctx.sender)
            ctx.send("help", ctx.sender, rcpt_name=ctx.sender_name, context={"commands": allowed_commands(ctx)},
                     thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
        raise Discard("help", "a #help mail: answered with the command list, no ticket")
    if block and _name_and_arg(block[0])[0] == "for":
        _log_for_caller(ctx, block, rest)
        return
    if len(block) == 1 and not rest:
        answer_query(ctx, block[0])  # #status, #kb search: answered, no ticket
    if block:
        ctx.decide("command lines in a new mail are not run: a new mail opens a ticket")


def _log_for_caller(ctx: Context, block: list[str], rest: str) -> None:
    """`#for EMAIL` at the top of a new mail from an authenticated technician: the
    incident is logged for that caller (a phone call, a walk-in). The caller is the
    requester and gets the acknowledgement; the technician follows as staff."""
    ctx.is_staff = ctx.cfg.is_staff(ctx.sender)
    problems = [(line, "only #for runs in a new mail") for line in block[1:]]
    addr = _name_and_arg(block[0])[1].lower()
    if not ctx.cfg.may_command(ctx.sender, None):
        problems.insert(0, (block[0], "only technicians may use it"))
    elif not ctx.authenticated:
        problems.insert(0, (block[0], f"you are not authenticated: {ctx.auth_reason}"))
    elif not _ADDRESS.match(addr) or is_desk_address(ctx.rt, addr):
        problems.insert(0, (block[0], "expected the caller's email address, e.g. #for jane@example.org"))
    if problems or not rest.strip():
        if not problems:
            problems = [(block[0], "write what the caller reported below the command")]
        ctx.decide("#for refused: " + "; ".join(f"{line}: {why}" for line, why in problems))
        if ctx.sender:
            ctx.send("refused", ctx.sender, rcpt_name=ctx.sender_name, context={"problems": problems,
                     "auth_reason": ctx.auth_reason},
                     thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
        raise Discard("refused", "a #for mail that could not be run")
    ctx.logged_for, ctx.body = addr, rest.strip()
    ctx.decide(f"#for: {ctx.sender} logs this incident for {addr}")
