"""The stage: the command block of a reply checked as a whole, then run; refusals.
"""

from __future__ import annotations

from ...desk import survey
from ...store import Ticket, savepoint
from ..context import Context, Discard
from ..messages import refuse
from .clicks import _one_click
from .readers import CommandError
from .queries import answer_query
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
    block, ctx.body = split_block(ctx.mail.reply_text)
    if not block:
        return
    ctx.block = block
    parsed, problems = [], []
    for line in block:
        m = COMMAND_LINE.match(line)
        name, arg = m.group(1).lower(), (m.group(2) or "").strip()
        command = find_command(name, arg)
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


def _new_mail(ctx: Context) -> None:
    """A new mail runs no commands, except that a mail of just #help gets the list."""
    block, rest = split_block(ctx.mail.reply_text)
    ctx.body = ctx.mail.text.strip()  # a new mail is kept whole: a forwarded history is the incident
    if block and not rest and all(COMMAND_LINE.match(line).group(1).lower() == "help" for line in block):
        if ctx.sender and not ctx.automatic:
            ctx.is_staff = ctx.cfg.is_staff(ctx.sender)
            from ...mailout.queue import Thread

            ctx.send("help", ctx.sender, rcpt_name=ctx.sender_name, context={"commands": allowed_commands(ctx)},
                     thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
        raise Discard("help", "a #help mail: answered with the command list, no ticket")
    if len(block) == 1 and not rest:
        answer_query(ctx, block[0])  # #status, #kb search: answered, no ticket
    if block:
        ctx.decide("command lines in a new mail are not run: a new mail opens a ticket")
