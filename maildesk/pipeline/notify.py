"""Stage 9: the mails the earlier stages decided on become outbox rows, in the same
transaction as the changes that caused them (guarantee 3, docs/architecture.md).

Nothing is sent here: `smtp.deliver_due` sends after the commit. The desk never
answers automatic mail (RFC 3834), so automatic replies to such mail are dropped
here whatever stage asked for them. Each mail counts against the limits in the lane
of the mail that caused it: staff, authenticated, or not (docs/mail.md, Floods: "a flood costs only
the flooder").
"""

from __future__ import annotations

from ..mailout import queue
from ..vocab import AUTO_REPLIES
from .context import Context


def queue_mail(ctx: Context) -> None:
    lane = ctx.lane if ctx.intents else None  # whose allowance the answers use (vocab.Lane)
    for intent in ctx.intents:
        automatic = intent.kind in AUTO_REPLIES if intent.automatic is None else intent.automatic
        if ctx.automatic is not None and automatic and intent.rcpt == ctx.sender:
            ctx.decide(f"{intent.kind} to {intent.rcpt} not queued: never answer automatic mail")
            continue
        ticket = intent.ticket or ctx.ticket
        row = queue.queue_mail(
            ctx.rt, ctx.now, intent.kind, rcpt=intent.rcpt, rcpt_name=intent.rcpt_name,
            ticket=intent.ticket or ctx.ticket, context=intent.context, automatic=automatic,
            from_name=intent.from_name, thread=intent.thread, inbound=ctx.inbound, lane=lane,
        )
        if row is None:
            ctx.decide(f"{intent.kind} to {intent.rcpt} not queued: that is the desk's own address")
            continue
        if intent.public is not None and ticket is not None and intent.rcpt == ticket.requester:
            intent.public.message_id = row.message_id  # the requester's copy is the one replies cite
            intent.public.to = intent.rcpt
            intent.public.save()
        if row.status == "suppressed":
            ctx.decide(f"{intent.kind} to {intent.rcpt} suppressed: {row.last_error}")
        else:
            ctx.decide(f"queued {intent.kind} to {intent.rcpt} (outbox #{row.id}, <{row.message_id}>)")
    ctx.intents.clear()
