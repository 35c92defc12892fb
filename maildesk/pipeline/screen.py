"""Stages 2 and 4: what is automatic mail, what is a duplicate, and what becomes of
the automatic mail once we know its ticket.

The desk never answers automatic mail (RFC 3834; docs/mail.md, automatic mail): bounces are
recorded on the ticket whose mail bounced and the address is marked undeliverable;
complaints stop automatic mail to the address; out-of-office and other automatic
replies are threaded onto their ticket without changing it (and a technician's own
out-of-office makes them away). Automatic mail that belongs to no ticket opens one
only when it is machine-generated content a person may act on (monitoring alerts,
list and bulk mail), and never gets an acknowledgement.
"""

from __future__ import annotations

import datetime as dt

from .. import store
from ..desk import away, routing
from ..mailin import automatic
from ..mailin.automatic import bounce_info, complaint_recipients, is_out_of_office
from ..mailout.queue import bounce_pattern, forget_suppressions
from ..store import Message, Outbox, Suppression, Ticket
from .context import Context, Discard

# Automatic mail that may open a ticket of its own (without an acknowledgement).
OPENS_TICKETS = ("auto-generated", "bulk", "list")


def classify(ctx: Context) -> None:
    mail = ctx.mail
    # the same message again (a second copy, a re-delivery): same id, same sender. A
    # different message that reuses the id (careless software, forgery) is not lost.
    # Claimed first: another desk process may be processing a copy of it, or the mail it answers.
    claimed, prior = store.claims.claim_message(mail.message_id, mail.in_reply_to + mail.references[-2:],
                                                ctx.sender or ctx.inbound.from_addr)
    if not claimed:
        raise store.Busy(f"another desk process is processing <{mail.message_id}> or a mail it answers")
    if prior is not None:
        ctx.ticket = Ticket.get_by_id(prior)
        raise Discard("duplicate", f"Message-ID <{mail.message_id}> from the same sender is already stored "
                                   f"on {ctx.rt.ref(prior)}")
    verdict = (ctx.verdict if ctx.verdict is not False
               else automatic.classify_for_desk(ctx.cfg.desk, mail.tree(), ctx.cfg.desk_addresses))
    if verdict is None:
        return
    ctx.automatic = verdict
    ctx.decide(f"automatic mail ({verdict.kind}): {verdict.reason}; it gets no reply")
    if verdict.kind == "own":
        raise Discard("own", "the desk's own mail came back; dropped to prevent a loop")


def file_automatic(ctx: Context) -> None:
    verdict = ctx.automatic
    if verdict is None:
        return
    if verdict.kind in ("bounce", "delay"):
        _file_bounce(ctx)
    if verdict.kind == "complaint":
        _file_complaint(ctx)
    if ctx.sender and ctx.cfg.is_staff(ctx.sender):
        if verdict.kind == "auto-reply" and is_out_of_office(ctx.mail.tree()):
            tz = ctx.cfg.desk.timezone
            back = away.back_from_text(f"{ctx.mail.subject}\n{ctx.mail.text}", ctx.now, tz)
            until = back or ctx.now + ctx.cfg.assignment.away_after_autoreply.total
            routing.mark_away(ctx.rt, ctx.sender, until)
            how = "the date in the reply" if back else "assignment.away_after_autoreply"
            ctx.decide(f"{ctx.sender} is out of office: skipped by assignment until {until.astimezone(tz):%Y-%m-%d %H:%M} "
                       f"({how})")
    if ctx.ticket is not None:
        _store_automatic(ctx, kind="automatic")
        ctx.event("automatic", f"{verdict.kind} from {ctx.sender or ctx.inbound.from_addr or 'unknown sender'} threaded; "
                               f"status stays {ctx.ticket.status}", actor="desk")
        raise Discard("automatic", f"threaded onto {ctx.ref}; no reply, no change")
    if verdict.kind in OPENS_TICKETS:
        ctx.decide(f"{verdict.kind} mail threads onto no ticket: it opens one, without acknowledgement")
        return
    raise Discard("automatic", "recorded; it threads onto no ticket")


def _store_automatic(ctx: Context, kind: str) -> None:
    mail = ctx.mail
    ctx.message = Message.create(
        ticket=ctx.ticket, inbound=ctx.inbound, direction="in", message_id=mail.message_id,
        from_addr=ctx.sender or ctx.inbound.from_addr, from_name=ctx.sender_name, subject=mail.subject,
        body=mail.text[:20000], internal=True, kind=kind, created_at=ctx.now,
    )


def _file_bounce(ctx: Context) -> None:
    desk = ctx.cfg.desk
    info = bounce_info(ctx.mail.tree(), verp=bounce_pattern(ctx.rt))
    if info is None:
        return
    rows = []
    if info.verp_ids:
        rows = list(Outbox.select().where(Outbox.id.in_(list(info.verp_ids))))
    if not rows and info.original_message_ids:
        rows = list(Outbox.select().where(Outbox.message_id.in_(list(info.original_message_ids))))
    if not rows and info.recipients:
        week = ctx.now - dt.timedelta(days=7)
        rows = list(Outbox.select().where(Outbox.rcpt.in_(list(info.recipients)) & (Outbox.created_at > week))
                    .order_by(Outbox.id.desc()).limit(1))
    if not rows:
        ctx.decide(f"{info.action} report ({info.diagnostic or 'no diagnostic'}) matches no mail the desk sent")
        raise Discard("bounce", "recorded; it is about no mail the desk sent")
    row = rows[0]
    ctx.ticket = ctx.ticket or row.ticket
    ctx.how = ctx.how or f"bounce of outbox #{row.id}"
    what = f"{row.kind} mail to {row.rcpt} (outbox #{row.id})"
    if info.action == "failed":
        until = ctx.now + ctx.cfg.bounces.undeliverable_for.total
        for r in rows:
            Outbox.update(status="bounced", last_error=f"bounced: {info.diagnostic}"[:1000]).where(Outbox.id == r.id).execute()
            Suppression.insert(email=r.rcpt, reason="bounce", detail=info.diagnostic[:300], until=until,
                               created_at=ctx.now, outbox=r.id).on_conflict(
                conflict_target=[Suppression.email],
                update={Suppression.reason: "bounce", Suppression.until: until, Suppression.detail: info.diagnostic[:300]},
            ).execute()
        forget_suppressions(ctx.rt)
        detail = (f"{what} bounced: {info.diagnostic or 'no diagnostic'}; "
                  f"{row.rcpt} marked undeliverable until {until.astimezone(desk.timezone):%Y-%m-%d}")
    else:
        detail = f"{what} is delayed: {info.diagnostic or 'no diagnostic'} (not a bounce; the server keeps trying)"
    if ctx.ticket is not None:
        _store_automatic(ctx, kind="bounce")
        ctx.event("bounce" if info.action == "failed" else "delivery-delayed", detail, actor="desk")
    else:
        ctx.decide(detail)
    raise Discard("bounce", detail)


def _file_complaint(ctx: Context) -> None:
    until = ctx.now + ctx.cfg.bounces.undeliverable_for.total
    who = [r for r in complaint_recipients(ctx.mail.tree()) if Outbox.select().where(Outbox.rcpt == r).exists()]
    for rcpt in who:
        Suppression.insert(email=rcpt, reason="complaint", detail="feedback report", until=until, created_at=ctx.now).on_conflict(
            conflict_target=[Suppression.email], update={Suppression.until: until}
        ).execute()
    forget_suppressions(ctx.rt)
    detail = (f"feedback-loop complaint about {', '.join(who)}: no automatic mail to them until {until:%Y-%m-%d}"
              if who else "feedback-loop complaint about no address the desk wrote to")
    raise Discard("complaint", detail)
