"""Stage 8: a reply on an existing ticket joins its conversation.

- A requester's (or Cc'd participant's) reply is stored and relayed to the assignee
  (or the group), naming its sender's address and whether the mail was verified
  (never a display name from the mail). On a resolved or closed ticket within the
  reopen window it reopens the ticket, unless it is only a thank-you. Those a
  participant copies (To/Cc) on a verified reply become participants; on an
  unverified one they do not, and the sender is told so at their own address. Nobody
  joins a ticket by writing to it (docs/mail.md, "Participants").
- A technician's reply is relayed to the requester and the Cc'd participants, from
  the desk's address with the technician's name, threaded into each recipient's
  own conversation; it is the first response for the SLA. On a major incident it
  also goes to the requester of every child ticket, each in their own thread.
  An unauthenticated technician's mail is never relayed: it is kept as an internal
  note and its sender is told why. `#note` mail, and a reply to a staff-only mail
  without `#public` (the commands stage decides), is internal and goes to nobody.
"""

from __future__ import annotations

import re

from ..desk import resolution, routing, sla
from ..desk.lifecycle import MAX_COPIED, add_participant, is_participant, within_reopen_window
from ..mailout.queue import is_desk_address
from ..store import Message, Ticket, claims
from ..vocab import ACTIVE
from .context import Context
from .messages import attribution, refuse, store_message


def attach(ctx: Context) -> None:
    if ctx.ticket is None or ctx.new_ticket:
        return
    if ctx.sender and ctx.sender == ctx.ticket.requester or not ctx.is_staff:
        _from_requester_side(ctx)
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


def _from_requester_side(ctx: Context) -> None:
    t = ctx.ticket
    assert t is not None  # attach() runs on a ticket only
    ctx.message = store_message(ctx, t, internal=False, kind="reply")
    ctx.event("reply", f"reply from {ctx.sender or ctx.inbound.from_addr} "
                       f"({'verified' if ctx.verified else 'not verified'}: {ctx.verified_reason})")
    _copied(ctx, t)
    if t.status in ("resolved", "closed"):
        if is_thanks(ctx.body, ctx.cfg.lifecycle.thanks_phrases):
            ctx.decide(f"a thank-you: {ctx.ref} stays {t.status}")
        elif ctx.role != "requester":
            ctx.decide(f"not the requester: {ctx.ref} stays {t.status}")
        elif within_reopen_window(ctx.rt, t, ctx.now):
            resolution.reopen_ticket(ctx.rt, t, ctx.now, ctx.sender, "the requester replied", ctx.inbound, body=ctx.body,
                                     by=attribution(ctx))
            return
    if not ctx.body.strip():
        return
    for rcpt in routing.staff_recipients(ctx.rt, t):
        if rcpt != ctx.sender:
            ctx.send("requester_reply", rcpt, ticket=t, from_name=ctx.sender or ctx.inbound.from_addr,
                     context={"message": ctx.message, "body": ctx.body, **attribution(ctx)})


def _copied(ctx: Context, t: Ticket) -> None:
    """Those a participant copies on a verified reply join the ticket; on an
    unverified one, nobody does and the sender is told at their own address."""
    if ctx.role not in ("requester", "participant") or ctx.automatic is not None:
        return
    copied = [a.addr for a in ctx.mail.to + ctx.mail.cc if a.addr and "@" in a.addr]
    new = [a for a in dict.fromkeys(copied) if a != ctx.sender and not is_desk_address(ctx.rt, a)
           and not is_participant(t, a)]
    if not new:
        return
    if not ctx.verified:
        ctx.event("cc-refused", f"{', '.join(new[:MAX_COPIED])}{' ...' if len(new) > MAX_COPIED else ''} copied by "
                                f"{ctx.sender}, not added: the mail is not verified ({ctx.verified_reason})")
        ctx.send("unverified", ctx.sender, ticket=t,
                 context={"refused": [f"adding {a} as a participant" for a in new[:MAX_COPIED]],
                          "reason": ctx.verified_reason})
        return
    for addr in new[:MAX_COPIED]:
        add_participant(t, addr, "cc")
    ctx.event("cc-added", f"{', '.join(new[:MAX_COPIED])} copied by {ctx.sender} on a verified reply: now participants")
    if len(new) > MAX_COPIED:
        ctx.event("cc-refused", f"{len(new) - MAX_COPIED} more copied by {ctx.sender} not added "
                                f"(at most {MAX_COPIED} per mail)")


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
    name = tech.display_name if tech else ctx.sender  # never a display name taken from the mail
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
