"""Stages 2 and 4: what is automatic mail, what is a duplicate, and what becomes of
the automatic mail once we know its ticket.

The desk never answers automatic mail (RFC 3834; docs/mail.md, Automatic mail): a bounce at a
validly signed VERP address that names that mail's recipient is recorded on the
ticket whose mail bounced and that one address is marked undeliverable; such a
complaint stops automatic mail to it; any other report is recorded and changes
nothing (guarantee 7). Out-of-office and other automatic
replies are threaded onto their ticket without changing it (and a technician's own
out-of-office makes them away). Automatic mail that belongs to no ticket opens one
only when it is machine-generated content a person may act on (monitoring alerts,
list and bulk mail), and never gets an acknowledgement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import signing, store
from ..desk import away, routing
from ..mailin import automatic
from ..mailin.automatic import bounce_info, complaint_recipients, is_out_of_office, verp_addresses
from ..mailout.queue import bounce_pattern, forget_suppressions
from ..store import Message, Outbox, Suppression, Ticket
from ..vocab import LOOP_HEADER
from . import floods
from .context import Context, Discard

log = logging.getLogger(__name__)

# Automatic mail that may open a ticket of its own (without an acknowledgement).
OPENS_TICKETS = ("auto-generated", "bulk", "list")
# Reports about the desk's own mail: believed only at a signed VERP address (_file_report).
REPORTS = ("bounce", "delay", "complaint")
MAX_SIGNED = 10  # signed VERP addresses of one report worth a lookup


def classify(ctx: Context) -> None:
    mail = ctx.mail
    # the same message again (a second copy, a re-delivery): same id, same sender. A
    # different message that reuses the id (careless software, forgery) is not lost.
    # Claimed first: another desk process may be processing a copy of it, or the mail it answers.
    # (on PostgreSQL most often claimed already, with the rest of its batch: ctx.claimed)
    claimed, prior = ctx.claimed if ctx.claimed is not None else store.claims.claim_message(*claim_of(ctx))
    if not claimed:
        raise store.claims.Held(f"<{mail.message_id}>, or a mail it answers, is being processed by another desk "
                                "process, or the mail it answers is still waiting to be processed")
    if prior is not None:
        ctx.ticket = Ticket.get_by_id(prior)
        raise Discard("duplicate", f"Message-ID <{mail.message_id}> from the same sender is already stored "
                                   f"on {ctx.rt.ref(prior)}")
    verdict = ctx.verdict
    if verdict is False:
        verdict = automatic.classify_for_desk(ctx.cfg.desk, mail.tree(), ctx.rt.key, ctx.cfg.desk_addresses)
    if (verdict is None or verdict.kind != "own") and mail.raw_headers(LOOP_HEADER):
        ctx.decide(f"{LOOP_HEADER} is another desk's, not this one's: the mail is judged as any other")
    if verdict is None:
        return
    ctx.automatic = verdict
    ctx.decide(f"automatic mail ({verdict.kind}): {verdict.reason}; it gets no reply")
    if verdict.kind == "own":
        raise Discard("own", "the desk's own mail came back; dropped to prevent a loop")


def claim_of(ctx: Context) -> store.claims.Claim:
    """What classify claims for a mail that was read: its Message-ID, the ids it cites
    that matter (the first of In-Reply-To, the last of References: a few, each a lock
    in a table all of the database server's sessions share, which an In-Reply-To of
    thousands would fill), its sender, and on PostgreSQL the flood counts read with
    the claim."""
    mail = ctx.mail
    assert mail is not None
    return store.claims.Claim(mail.message_id, mail.in_reply_to[:2] + mail.references[-2:],
                              ctx.sender or ctx.inbound.from_addr, ctx.inbound.id,
                              None if store.is_sqlite() else floods.counts_ahead(ctx))


def file_automatic(ctx: Context) -> None:
    verdict = ctx.automatic
    if verdict is None:
        return
    if verdict.kind in REPORTS:
        _file_report(ctx)
    if ctx.sender and ctx.cfg.is_staff(ctx.sender):
        if verdict.kind == "auto-reply" and is_out_of_office(ctx.mail.tree()):
            _mark_away(ctx)
    if ctx.ticket is not None:
        _store_automatic(ctx, kind="automatic")
        ctx.event("automatic", f"{verdict.kind} from {ctx.sender or ctx.inbound.from_addr or 'unknown sender'} threaded; "
                               f"status stays {ctx.ticket.status}", actor="desk")
        raise Discard("automatic", f"threaded onto {ctx.ref}; no reply, no change")
    if verdict.kind in OPENS_TICKETS:
        ctx.decide(f"{verdict.kind} mail threads onto no ticket: it opens one, without acknowledgement")
        return
    raise Discard("automatic", "recorded; it threads onto no ticket")


def _mark_away(ctx: Context) -> None:
    """A technician's own out-of-office makes them away; a forged one must not empty
    the queue (docs/security.md, Staff mail: only when it is authenticated; guarantee 7)."""
    passed = ctx.passed_authentication()
    if not passed.passed:
        ctx.decide(f"out-of-office from {ctx.sender} is not authenticated ({passed.reason}): "
                   "their availability is unchanged")
        return
    tz = ctx.cfg.desk.timezone
    back = away.back_from_text(f"{ctx.mail.subject}\n{ctx.mail.text}", ctx.now, tz)
    until = back or ctx.now + ctx.cfg.assignment.away_after_autoreply.total
    routing.mark_away(ctx.rt, ctx.sender, until)
    how = "the date in the reply" if back else "assignment.away_after_autoreply"
    ctx.decide(f"{ctx.sender} is out of office ({passed.reason}): skipped by assignment until "
               f"{until.astimezone(tz):%Y-%m-%d %H:%M} ({how})")


def _store_automatic(ctx: Context, kind: str) -> None:
    """Automatic mail kept on its ticket, internal. Its Message-ID is stored (a second
    copy is then a duplicate) but is never a thread anchor: correlate skips NOT_ANCHORS."""
    mail = ctx.mail
    ctx.message = Message.create(
        ticket=ctx.ticket, inbound=ctx.inbound, direction="in", message_id=mail.message_id,
        from_addr=ctx.sender or ctx.inbound.from_addr, from_name=ctx.sender_name, subject=mail.subject,
        body=mail.text[:20000], internal=True, kind=kind, created_at=ctx.now,
    )


# --- bounces, delay notices, complaints (docs/mail.md, "Bounces"; guarantee 7) ---------


@dataclass(frozen=True)
class Report:
    """What a bounce, delay notice or complaint claims, before anything is believed."""

    action: str  # failed | delayed | complaint | unreadable
    named: tuple[str, ...]  # the recipients it reports, lower case
    diagnostic: str
    verp: tuple[tuple[int, str], ...]  # (outbox id, signature or "") of the VERP addresses it names


def read_report(ctx: Context) -> Report:
    tree, pattern = ctx.mail.tree(), bounce_pattern(ctx.rt)
    if ctx.automatic.kind == "complaint":
        return Report("complaint", complaint_recipients(tree), "feedback report", verp_addresses(tree, pattern))
    info = bounce_info(tree, verp=pattern)
    if info is None:
        return Report("unreadable", (), "no delivery status could be read", verp_addresses(tree, pattern))
    return Report(info.action, info.recipients, info.diagnostic, verp_addresses(tree, pattern))


def signed_row(key: bytes, report: Report, row_of) -> tuple[Outbox | None, bool, str]:
    """Which outgoing mail a report is provably about: (row, names_its_recipient, why).

    Only a VERP address whose signature is valid for its row and that row's recipient
    proves anything (nobody but that recipient's mail system saw it); the report must
    also name that recipient. Unsigned addresses (forged, listed by the hundred, or of
    mail sent before VERP was signed) and bad signatures prove nothing. `row_of(id)`
    reads one outbox row; at most MAX_SIGNED rows are read."""
    signed = [(i, sig) for i, sig in report.verp if sig][:MAX_SIGNED]
    unsigned = [i for i, sig in report.verp if not sig]
    problems = []
    for outbox_id, sig in signed:
        row = row_of(outbox_id)
        if row is None or not signing.verify_verp(key, outbox_id, row.rcpt, sig):
            problems.append(f"VERP address for #{outbox_id} has a signature that is not the desk's")
            continue
        if row.rcpt.lower() not in report.named:
            return row, False, (f"its signed VERP address names outbox #{outbox_id} to {row.rcpt}, but it reports "
                                f"{', '.join(report.named[:5]) or 'no recipient'}")
        return row, True, f"its signed VERP address names outbox #{outbox_id} to {row.rcpt}"
    if unsigned:
        listed = ", ".join(f"#{i}" for i in unsigned[:5]) + (f" and {len(unsigned) - 5} more" if len(unsigned) > 5 else "")
        problems.append(f"it names VERP address(es) {listed} without a signature")
    return None, False, "; ".join(problems) or "it arrived at no signed VERP address of the desk"


def _file_report(ctx: Context) -> None:
    """A bounce, delay notice or complaint changes something only when `signed_row`
    proves it: then the one address it names is suppressed (a bounce: all mail; a
    complaint: automatic mail) and it is recorded on that mail's ticket. Anything else
    is recorded and changes nothing: no suppression, no participant, no thread anchor,
    no ticket (the ids it cites are the attacker's to choose, so the ticket correlate
    found by them is dropped)."""
    ctx.ticket, ctx.how = None, ""
    report = read_report(ctx)
    row, names_rcpt, why = signed_row(ctx.rt.key, report, Outbox.get_or_none_by_id)
    what = {"failed": "bounce", "delayed": "delay notice", "complaint": "complaint"}.get(report.action, "delivery report")
    about = f"{what} ({report.diagnostic or 'no diagnostic'})"
    outcome = "complaint" if report.action == "complaint" else "bounce"
    if row is None or not names_rcpt:
        detail = f"{about}: {why}; nothing changed (no suppression, no participant, no thread)"
        if row is not None and row.ticket_id is not None:
            ctx.ticket = Ticket.get_by_id(row.ticket_id)
            _store_automatic(ctx, kind=outcome)
            ctx.event("report-ignored", detail, actor="desk")
        else:
            ctx.decide(detail)
        log.warning("unproven %s inbound=%s msgid=<%s>: %s", what, ctx.inbound.id, ctx.mail.message_id or "", why)
        raise Discard(outcome, detail)
    until = ctx.now + ctx.cfg.bounces.undeliverable_for.total
    mail_to = f"{row.kind} mail to {row.rcpt} (outbox #{row.id})"
    if report.action == "failed":
        Outbox.update(status="bounced", last_error=f"bounced: {report.diagnostic}"[:1000]).where(Outbox.id == row.id).execute()
        _suppress(row, "bounce", report.diagnostic[:300], until, ctx.now)
        detail = (f"{mail_to} bounced: {report.diagnostic or 'no diagnostic'}; "
                  f"{row.rcpt} marked undeliverable until {until.astimezone(ctx.cfg.desk.timezone):%Y-%m-%d}")
        kind = "bounce"
    elif report.action == "complaint":
        _suppress(row, "complaint", "feedback report", until, ctx.now)
        detail = (f"feedback-loop complaint about {mail_to}: no automatic mail to {row.rcpt} "
                  f"until {until.astimezone(ctx.cfg.desk.timezone):%Y-%m-%d}")
        kind = "complaint"
    else:
        detail = f"{mail_to} is delayed: {report.diagnostic or 'no diagnostic'} (not a bounce; the server keeps trying)"
        kind = "delivery-delayed"
    forget_suppressions(ctx.rt)
    if row.ticket_id is not None:
        ctx.ticket, ctx.how = Ticket.get_by_id(row.ticket_id), f"signed VERP address of outbox #{row.id}"
        _store_automatic(ctx, kind=outcome)
        ctx.event(kind, detail, actor="desk")
    else:
        ctx.decide(detail)
    raise Discard(outcome, detail)


def _suppress(row: Outbox, reason: str, detail: str, until, now) -> None:
    Suppression.insert(email=row.rcpt, reason=reason, detail=detail, until=until, created_at=now, outbox=row.id).on_conflict(
        conflict_target=[Suppression.email],
        update={Suppression.reason: reason, Suppression.until: until, Suppression.detail: detail,
                Suppression.outbox: row.id},
    ).execute()
