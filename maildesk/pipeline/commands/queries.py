"""A new mail of one query command is answered, and opens no ticket:

- `#status`: the sender's own open tickets (those they requested), to the sender's
  own address: nothing of anybody else's, so it needs no authentication;
- `#kb search WORDS` from a staff address: the best articles and resolved tickets,
  in a staff-only mail to that address.

Anything else (`#kb search` from a requester, a query with more text below it) is
a new incident like any other mail.
"""

from __future__ import annotations

from ...mailout.queue import Thread
from ...store import Ticket
from ...vocab import ACTIVE, Status
from ..context import Context, Discard
from .actions import _send_kb_search, status_entry
from .table import COMMAND_LINE

OPEN = (*ACTIVE, Status.RESOLVED)  # resolved: waiting for the requester's word
LISTED = 50  # tickets in one #status answer, newest first


def answer_query(ctx: Context, line: str) -> None:
    """Raise Discard when `line` is a query answered here; return when it is not one."""
    m = COMMAND_LINE.match(line)
    assert m is not None  # split_block keeps only the lines that match
    name, arg = m.group(1).lower(), (m.group(2) or "").strip()
    if name == "status" and not arg:
        _status(ctx)
    elif name == "kb" and arg.lower().startswith("search ") and ctx.sender and ctx.cfg.is_staff(ctx.sender):
        if not ctx.automatic:
            _send_kb_search(ctx, arg[len("search "):].strip()[:500],
                            thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
        raise Discard("kb-search", "a #kb search mail from staff: answered, no ticket")


def _status(ctx: Context) -> None:
    if ctx.automatic or not ctx.sender:
        raise Discard("status", "a #status mail " + ("that is automatic mail" if ctx.automatic else "without a single sender")
                      + ": not answered")
    rows = list(Ticket.select().where((Ticket.requester == ctx.sender) & Ticket.status.in_(OPEN))
                .order_by(Ticket.id.desc()).limit(LISTED))
    ctx.send("status", ctx.sender, rcpt_name=ctx.sender_name, thread=Thread.after(ctx.mail.message_id, ctx.mail.references),
             context={"tickets": [status_entry(ctx.rt, t) for t in rows], "one": False})
    raise Discard("status", f"a #status mail: answered with the sender's {len(rows)} open ticket(s), no ticket")
