"""Stage 8: a reply on an existing ticket joins its conversation.

- A requester's (or Cc'd participant's) reply is stored and relayed to the assignee
  (or the group). On a resolved or closed ticket within the reopen window it
  reopens the ticket, unless it is only a thank-you.
- A technician's reply is relayed to the requester and the Cc'd participants, from
  the desk's address with the technician's name, threaded into each recipient's
  own conversation; it is the first response for the SLA. On a major incident it
  also goes to the requester of every child ticket, each in their own thread.
  An unauthenticated technician's mail is never relayed: it is kept as an internal
  note and its sender is told why. `#note` mail is internal and goes to nobody.
"""

from __future__ import annotations

import re

from ..desk import resolution, routing, sla
from ..desk.lifecycle import add_participant, within_reopen_window
from ..store import Message, Ticket, claims
from ..vocab import ACTIVE
from .context import Context
from .messages import refuse, store_message


def attach(ctx: Context) -> None:
    if ctx.ticket is None or ctx.new_ticket:
        return
    if ctx.sender and ctx.sender == ctx.ticket.requester or not ctx.is_staff:
        _from_requester_side(ctx, ctx.ticket)
    else:
        _from_staff(ctx, ctx.ticket)


def is_thanks(text: str, phrases) -> bool:
    """A short reply that only says thank you (lifecycle.thanks_phrases)."""
    t = re.sub(r"[^\w\s,']", " ", text.lower()).strip()
    if not t or len(t) > 160:
        return not t
    words = t.replace(",", " ").split()
    for phrase in sorted(phrases, key=len, reverse=True):
        p = re.sub(r"[^\w\s']", " ", phrase.lower()).split()
        if p and words[: len(p)] == p and len(words) - len(p) <= 4:
            return True
    return False


def _from_requester_side(ctx: Context, t: Ticket) -> None:
    if ctx.role == "stranger" and ctx.sender:
        add_participant(t, ctx.sender, "cc")  # answered a mail of the ticket: now part of it
        ctx.decide(f"{ctx.sender} joins {ctx.ref} as a participant")
    ctx.message = store_message(ctx, t, internal=False, kind="reply")
    ctx.event("reply", f"reply from {ctx.sender or ctx.inbound.from_addr}")
    if t.status in ("resolved", "closed"):
        if is_thanks(ctx.body, ctx.cfg.lifecycle.thanks_phrases):
            ctx.decide(f"a thank-you: {ctx.ref} stays {t.status}")
        elif ctx.role != "requester":
            ctx.decide(f"not the requester: {ctx.ref} stays {t.status}")
        elif within_reopen_window(ctx.rt, t, ctx.now):
            resolution.reopen_ticket(ctx.rt, t, ctx.now, ctx.sender, "the requester replied", ctx.inbound, body=ctx.body)
            return
    if not ctx.body.strip():
        return
    for rcpt in routing.staff_recipients(ctx.rt, t):
        if rcpt != ctx.sender:
            ctx.send("requester_reply", rcpt, ticket=t, from_name=ctx.sender_name or ctx.sender,
                     context={"message": ctx.message, "body": ctx.body})


def _from_staff(ctx: Context, t: Ticket) -> None:
    if not ctx.authenticated:
        refuse(ctx, [("(your reply)", f"not relayed: you are not authenticated: {ctx.auth_reason}")])
    if ctx.internal:
        ctx.message = store_message(ctx, t, internal=True, kind="note")
        ctx.event("note", f"internal note by {ctx.sender}")
        return
    if not ctx.body.strip():
        ctx.message = store_message(ctx, t, internal=True, kind="commands", body=ctx.mail.reply_text)
        ctx.decide("a mail of commands only: nothing relayed")
        return
    ctx.message = store_message(ctx, t, internal=False, kind="reply")
    relay_staff_reply(ctx, t, ctx.message)
    if t.status in ACTIVE:
        sla.record_first_response(ctx.rt, t, ctx.now, f"public reply of {ctx.sender}", ctx.sender, ctx.inbound)
    for child in (claims.locked(t.children.where(Ticket.status.not_in(("closed", "cancelled")))) if t.is_major else ()):
        relay_staff_reply(ctx, child, ctx.message)
        if child.first_response_at is None and child.status in ACTIVE:
            sla.record_first_response(ctx.rt, child, ctx.now, f"reply on major incident {ctx.ref}", ctx.sender, ctx.inbound)
            child.save()


def relay_staff_reply(ctx: Context, t: Ticket, source: Message) -> None:
    """The technician's words to the ticket's requester and Cc'd participants."""
    tech = ctx.cfg.technician(ctx.sender)
    name = tech.display_name if tech else (ctx.sender_name or ctx.sender)
    out = Message.create(
        ticket=t, inbound=ctx.inbound, direction="out", from_addr=ctx.sender, from_name=name,
        subject=ctx.mail.subject, body=ctx.body, internal=False, kind="reply", created_at=ctx.now,
    )
    elsewhere = ctx.ticket is not None and t.id != ctx.ticket.id  # relayed to a child of the major incident
    ctx.event("reply", f"reply of {name} relayed to the requester" + (f" (from {ctx.ref})" if elsewhere else ""), ticket=t)
    for rcpt in [t.requester] + [p.email for p in t.participants if p.role == "cc"]:
        if rcpt and rcpt != ctx.sender and "@" in rcpt:
            ctx.send("relay", rcpt, ticket=t, from_name=name, public=out,
                     context={"body": ctx.body, "by": name, "source": source})
