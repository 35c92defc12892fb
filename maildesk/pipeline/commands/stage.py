"""The stage: the command block of a reply checked as a whole, then run; refusals.
"""

from __future__ import annotations

from ...desk import survey
from ...store import Ticket, savepoint
from ...vocab import is_staff_only
from ..context import Context, Discard
from ..messages import refuse
from .clicks import _one_click
from .readers import CommandError
from .table import COMMANDS, allowed_commands, command_name, may_run, split_block

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
    _staff_only(ctx, block)
    if not block:
        return
    parsed, problems = [], []
    for i, line in enumerate(block):
        name = command_name(line)
        arg = line[len(name) + 1:].strip()
        command = COMMANDS.get(name)
        try:
            if command is None:
                raise CommandError("unknown command (send #help for the list)")
            why_not = may_run(ctx, command)
            if why_not:
                raise CommandError(why_not)
            if name == "public" and i > 0:
                raise CommandError("#public works only as the first line of the reply")
            parsed.append((line, command, command.read(ctx, arg)))
            problems.append((line, "ok"))
        except CommandError as e:
            problems.append((line, str(e)))
    if any(p != "ok" for _, p in problems):
        refuse(ctx, problems)
    if any(command.name == "note" for _, command, _ in parsed):
        ctx.internal = True  # before any line runs: #resolve then #note keeps the words internal too
    _run_all(ctx, parsed)
    ctx.decide(f"commands applied: {'; '.join(line for line, _, _ in parsed)}")
    ctx.command_only = not ctx.body


def _staff_only(ctx: Context, block: list[str]) -> None:
    """A staff reply to a staff-only mail (vocab.is_staff_only) is an internal note
    unless its first line is #public (DESIGN section 4)."""
    if not ctx.is_staff or ctx.role == "requester" or not is_staff_only(ctx.reply_to_kind):
        return
    if block and command_name(block[0]) == "public":
        ctx.decide(f"answers a staff-only mail ({ctx.reply_to_kind}) but starts with #public: it goes to the requester")
        return
    ctx.internal = True
    ctx.decide(f"answers a staff-only mail ({ctx.reply_to_kind}): kept as an internal note "
               "(start the reply with #public to reach the requester)")


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


def _new_mail(ctx: Context) -> None:
    """A new mail runs no commands, except that a mail of just #help gets the list."""
    block, rest = split_block(ctx.mail.reply_text)
    # a new mail is kept whole: a forwarded history is the incident (a follow-up opened
    # by a 'not fixed' link brings its comment, set by correlate)
    ctx.body = ctx.body or ctx.mail.text.strip()
    if block and not rest and all(command_name(line) == "help" for line in block):
        if ctx.sender and not ctx.automatic:
            ctx.is_staff = ctx.cfg.is_staff(ctx.sender)
            from ...mailout.queue import Thread

            ctx.send("help", ctx.sender, rcpt_name=ctx.sender_name, context={"commands": allowed_commands(ctx)},
                     thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
        raise Discard("help", "a #help mail: answered with the command list, no ticket")
    if block:
        ctx.decide("command lines in a new mail are not run: a new mail opens a ticket")
