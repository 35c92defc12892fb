"""The outbox: every outgoing mail is a row, written in the same transaction as the
change that caused it, then sent by `deliver_due` over a few reused SMTP connections.

`queue_mail` renders the template, signs the Message-ID, threads the mail, and
applies the rules that keep the desk from writing where it must not: addresses
that bounced or complained, and the limits on automatic replies (per recipient,
per ticket, and desk-wide). A mail those rules stop is still a row, with status
`suppressed` and the reason, so that `maildesk outbox list` shows it.

Delivery retries temporary failures (4xx, refused connections) with capped
exponential backoff and records permanent ones (5xx) with the server's answer.
A row is marked sent only after the server accepted it; a crash in between may
send it again, with the same Message-ID (guarantee 3, docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import jinja2

from .. import signing, store
from ..store import Outbox, Suppression, Ticket
from ..verp import verp_pattern
from ..vocab import AUTO_REPLIES, COUNTED_LANES, COUNTED_NOTICES, Lane
from .render import TemplateMissing, _render_context, snapshot

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime

log = logging.getLogger(__name__)

# an addr-spec we put on the SMTP wire as it is: printable ASCII, no spaces, brackets or quotes
SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass
class Thread:
    """Where a mail sits in its recipient's conversation."""

    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)

    @classmethod
    def after(cls, message_id: str | None, references=()) -> Thread:
        refs = [r for r in references if r]
        if message_id:
            refs.append(message_id)
        return cls(message_id, refs)


def claim_due(now: dt.datetime, limit: int, skip=frozenset(), claimer: int | None = None) -> list[int]:
    """The ids of up to `limit` queued or deferred outbox rows due at `now`, oldest
    first, except `skip`. On PostgreSQL, where the send processes of several desk
    processes share the outbox, they are claimed for the send process whose lease is
    `claimer` (store.claims.lease_mark): a row claimed by another send process is
    skipped while that one lives (holds its lease), and taken over at once when it
    died. The desk's record of the delivery (results.record_results) clears the claim."""
    due = Outbox.status.in_(("queued", "deferred")) & (Outbox.next_attempt_at <= now)
    if store.is_sqlite() or claimer is None:  # one desk process: it only reads here (the desk writes the results)
        ids = cast("Iterable[tuple[int]]", Outbox.select(Outbox.id).where(due).order_by(Outbox.id)
                   .limit(limit + len(skip)).tuples())
        return [i for (i,) in ids if i not in skip][:limit]
    cursor = store.execute(
        f'UPDATE "outbox" SET "claimed_by" = ? WHERE "id" IN (SELECT "id" FROM "outbox" WHERE "status" IN (?, ?) '
        'AND "next_attempt_at" <= ? AND NOT ("id" = ANY(?)) AND ("claimed_by" IS NULL OR "claimed_by" = ? '
        f'OR "claimed_by" NOT IN ({store.claims.LIVE_LEASES})) '
        'ORDER BY "id" LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING "id"',
        (claimer, "queued", "deferred", Outbox.next_attempt_at.db_value(now), list(skip), claimer, limit))
    return sorted(i for (i,) in cursor.fetchall())


def thread_for(ticket: Ticket, rcpt: str) -> Thread:
    """The ids this recipient has seen on this ticket, oldest first: the requester's own
    mails and every mail the desk sent them."""
    # at the same time, their mail comes before the desk's answer to it
    ids = store.execute(
        'SELECT "created_at", 1, "id", "message_id" FROM "outbox" WHERE "ticket_id" = ? AND "rcpt" = ? AND "status" != ? '
        'UNION ALL SELECT "created_at", 0, "id", "message_id" FROM "message" WHERE "ticket_id" = ? AND "direction" = ? '
        'AND "from_addr" = ? AND "message_id" IS NOT NULL',
        (ticket.id, rcpt, "suppressed", ticket.id, "in", rcpt), prepare=True).fetchall()
    ids = sorted((str(at), rank, rid, mid) for at, rank, rid, mid in ids)
    refs = list(dict.fromkeys(mid for *_, mid in ids))
    if ticket.thread_root and rcpt == ticket.requester and ticket.thread_root not in refs:
        refs.insert(0, ticket.thread_root)
    return Thread(refs[-1] if refs else None, refs)


def _suppressions(rt: Runtime, now: dt.datetime) -> dict:
    if "suppressions" not in rt.memo:
        rt.memo["suppressions"] = {
            s.email: s for s in Suppression.select().where(Suppression.until > now)
        }
    return rt.memo["suppressions"]


def forget_suppressions(rt: Runtime) -> None:
    """After a bounce or a complaint changed who may get mail."""
    rt.memo.pop("suppressions", None)


def suppression_reason(rt: Runtime, rcpt: str, now: dt.datetime, automatic: bool) -> str | None:
    row = _suppressions(rt, now).get(rcpt)
    if row is None or row.until <= now:
        return None
    if row.reason == "bounce":
        return f"address bounced ({row.detail}); no mail until {row.until:%Y-%m-%d}"
    if row.reason == "complaint" and automatic:
        return f"recipient complained (feedback report); no automatic mail until {row.until:%Y-%m-%d}"
    return None


def _count(rt: Runtime, key: tuple, sql: str, params, known: int | None = None) -> int:
    """A count of automatic mail, read once per cycle (unless `known`) and then kept
    up to date."""
    counts = rt.memo.setdefault("auto_counts", {})
    if key not in counts:
        counts[key] = known if known is not None else store.scalar(sql, params) or 0
    return counts[key]


_COUNTED = '"lane" = ? AND "automatic" = ? AND "status" != ? AND "created_at" > ?'

# The counters of automatic mail (docs/mail.md, Floods): a row counts
# in the lane of the mail that caused it (vocab.Lane), so that forged mail never uses up
# a real sender's allowance; the staff lane (authenticated staff, #for tickets) is never counted.
_WHOSE: dict[str, str] = {Lane.AUTH: "senders whose mail passed authentication",
                          Lane.UNAUTH: "senders whose mail did not pass authentication"}


def auto_reply_limit(rt: Runtime, rcpt: str, ticket: Ticket | None, now: dt.datetime, lane: Lane = Lane.UNAUTH) -> str | None:
    """Sliding 24-hour windows per recipient and per ticket, and the desk-wide hourly cap,
    each counted within `lane`."""
    if lane not in COUNTED_LANES:
        return None
    lim = rt.cfg.limits
    day = Outbox.created_at.db_value(now - dt.timedelta(days=1))
    n = _count(rt, ("rcpt", rcpt, lane), f'SELECT COUNT(*) FROM "outbox" WHERE "rcpt" = ? AND {_COUNTED}',
               (rcpt, lane, True, "suppressed", day))
    if n >= lim.auto_replies_per_sender_per_day:
        return (f"{rcpt} already got {n} automatic replies in 24 hours as one of the {_WHOSE[lane]} "
                "(limits.auto_replies_per_sender_per_day)")
    if ticket is not None:
        n = _count(rt, ("ticket", ticket.id, lane), f'SELECT COUNT(*) FROM "outbox" WHERE "ticket_id" = ? AND {_COUNTED}',
                   (ticket.id, lane, True, "suppressed", day),
                   known=0 if getattr(ticket, "is_new", False) else None)  # opened by this message: none yet
        if n >= lim.auto_replies_per_ticket_per_day:
            return f"ticket already sent {n} automatic replies in 24 hours (limits.auto_replies_per_ticket_per_day)"
    return _desk_limit(rt, now, lane, automatic=True)


def sender_count(rt: Runtime, rcpt: str, now: dt.datetime, lane: Lane) -> tuple[str, list] | None:
    """The count auto_reply_limit will read for `rcpt` (once a cycle), as a scalar
    sub-select and its parameters, for a stage that reads a count of its own about
    the same sender to read in the same statement (`sender_counted`); None if known."""
    key = ("rcpt", rcpt, lane)
    if lane not in COUNTED_LANES or key in rt.memo.get("auto_counts", {}):
        return None
    day = Outbox.created_at.db_value(now - dt.timedelta(days=1))
    return f'(SELECT COUNT(*) FROM "outbox" WHERE "rcpt" = ? AND {_COUNTED})', [rcpt, lane, True, "suppressed", day]


def sender_counted(rt: Runtime, rcpt: str, lane: Lane, n: int) -> None:
    """What the sub-select of sender_count read."""
    rt.memo.setdefault("auto_counts", {}).setdefault(("rcpt", rcpt, lane), n)


def notice_limit(rt: Runtime, now: dt.datetime, lane: Lane) -> str | None:
    """Staff notices that outside mail causes (vocab.COUNTED_NOTICES) have a desk-wide
    hourly cap of their own in each lane: a flood of new tickets costs the technicians'
    inboxes no more than limits.auto_replies_per_hour an hour."""
    return _desk_limit(rt, now, lane, automatic=False) if lane in COUNTED_LANES else None


def _desk_limit(rt: Runtime, now: dt.datetime, lane: Lane, automatic: bool) -> str | None:
    hour = Outbox.created_at.db_value(now - dt.timedelta(hours=1))
    n = _count(rt, ("desk", lane, automatic), f'SELECT COUNT(*) FROM "outbox" WHERE {_COUNTED}',
               (lane, automatic, "suppressed", hour))
    if n < rt.cfg.limits.auto_replies_per_hour:
        return None
    _alert_pause_once(rt, now, n, lane)
    still = "staff and authenticated senders are" if lane == Lane.UNAUTH else "staff are"
    what = "automatic replies to" if automatic else "staff notices about mail from"
    return f"{what} {_WHOSE[lane]} paused: {n} in the last hour (limits.auto_replies_per_hour); {still} still answered"


def _counted(rt: Runtime, rcpt: str, ticket: Ticket | None, lane: Lane, automatic: bool) -> None:
    counts = rt.memo.setdefault("auto_counts", {})
    keys: list[tuple] = [("desk", lane, automatic)]
    if automatic:
        keys += [("rcpt", rcpt, lane), ("ticket", ticket.id if ticket else None, lane)]
    for key in keys:
        if key in counts:
            counts[key] += 1


def _alert_pause_once(rt: Runtime, now, n, lane):
    last = store.get_setting("autopause_alerted_at")
    if last and dt.datetime.fromisoformat(last) > now - dt.timedelta(hours=1):
        return
    store.put_setting("autopause_alerted_at", now.isoformat())
    log.warning("automatic mail paused lane=%s: %d in the last hour", lane, n)
    for im in rt.cfg.roles.incident_managers:
        queue_mail(rt, now, "autopause", rcpt=im, automatic=False, context={"count": n, "lane": str(lane)})


def is_desk_address(rt: Runtime, addr: str) -> bool:
    """An address of the desk: `desk.address`, a mailbox's, a sub-address of one
    (`helpdesk+anything@`), or a bounce address. None is ever a requester, participant
    or technician, and the desk never writes to one."""
    addr = addr.strip().lower()
    local, _, domain = addr.rpartition("@")
    for own in rt.cfg.desk_addresses:
        own_local, _, own_domain = own.rpartition("@")
        if domain == own_domain and (local == own_local or local.startswith(own_local + "+")):
            return True
    return bool(bounce_pattern(rt).fullmatch(addr))


def bounce_pattern(rt: Runtime):
    """The VERP envelope senders of the desk's mail: each mailbox's mail bounces to its
    own address (smtp.deliver_due)."""
    if "bounce_pattern" not in rt.memo:
        pairs = [a.rpartition("@") for a in rt.cfg.desk_addresses]
        rt.memo["bounce_pattern"] = verp_pattern(rt.cfg.desk.bounce_address, tuple(dict.fromkeys(p[0] for p in pairs)),
                                                 tuple(dict.fromkeys(p[2] for p in pairs)))
    return rt.memo["bounce_pattern"]


def sender_address(rt: Runtime, ticket: Ticket | None) -> str:
    """The From of the desk's mail: the address of the ticket's mailbox, else `desk.address`."""
    return rt.cfg.address_of(ticket.mailbox) if ticket is not None else rt.cfg.desk.address


def queue_mail(
    rt: Runtime,
    now: dt.datetime,
    kind: str,
    *,
    rcpt: str,
    rcpt_name: str = "",
    ticket: Ticket | None = None,
    context: dict | None = None,
    automatic: bool | None = None,
    from_name: str | None = None,
    thread: Thread | None = None,
    inbound=None,
    lane: Lane | None = None,
) -> Outbox | None:
    """Render `kind` for `rcpt` and write it to the outbox. Returns the row (which may
    be `suppressed`), or None when the recipient is the desk itself. `lane` is the
    standing of the mail that caused this one (vocab.Lane); an automatic reply to mail
    of unknown standing counts as unauthenticated."""
    cfg = rt.cfg
    rcpt = rcpt.strip().lower()
    if len(rcpt) > 254 or not SAFE_ADDRESS.match(rcpt) or is_desk_address(rt, rcpt):  # RFC 5321 4.5.3.1.3
        return None  # never write to ourselves (that is how loops start), nor to a malformed address
    if automatic is None:
        automatic = kind in AUTO_REPLIES
    if automatic and lane is None:
        lane = Lane.UNAUTH
    counted = lane if lane in COUNTED_LANES and (automatic or kind in COUNTED_NOTICES) else None
    reason = suppression_reason(rt, rcpt, now, automatic)
    if reason is None and counted:
        reason = auto_reply_limit(rt, rcpt, ticket, now, counted) if automatic else notice_limit(rt, now, counted)

    values = {
        "rcpt": rcpt, "rcpt_name": rcpt_name, "ticket": ticket, "now": now,
        "ref": rt.ref(ticket) if ticket else "", "tag": rt.tag(ticket) if ticket else "",
    }
    values.update(context or {})
    frozen = snapshot(values)
    try:
        subject = rt.templates.subject(kind, **_render_context(rt, frozen))
    except (jinja2.TemplateError, TemplateMissing) as e:
        # a broken template (an admin's override, say) fails its own mail, not the message that caused it
        log.error("template %s: %s", kind, e)
        subject, reason = f"({kind})", f"template {kind} failed: {type(e).__name__}: {e}"[:1000]
    if ticket is not None and frozen["tag"] not in subject:
        subject = f"{frozen['tag']} {subject}"
    if thread is None:
        thread = thread_for(ticket, rcpt) if ticket is not None else Thread()
    frozen["_thread"] = [thread.in_reply_to, thread.references]
    sender = sender_address(rt, ticket)
    if sender != cfg.desk.address:
        frozen["_from"] = sender  # the ticket's mailbox answers (render.render_row)
    row = Outbox.create(
        ticket=ticket, kind=kind, automatic=automatic, rcpt=rcpt, rcpt_name=rcpt_name, from_name=from_name or "",
        message_id=signing.new_message_id(rt.key, ticket.id if ticket else None, rcpt, cfg.desk.domain),
        subject=subject, context=json.dumps(frozen, ensure_ascii=False, separators=(",", ":")),
        created_at=now, next_attempt_at=now,
        status="failed" if reason and reason.startswith("template") else "suppressed" if reason else "queued",
        last_error=reason, inbound=inbound, lane=str(lane) if lane else None,
    )
    if reason:
        log.info("suppressed kind=%s rcpt=%s ticket=%s: %s", kind, rcpt, frozen["ref"] or "-", reason)
    elif counted:
        _counted(rt, rcpt, ticket, counted, automatic)
    return row
