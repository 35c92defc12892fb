"""The processing pipeline: one stored inbound message in, ticket changes and outbox
rows out, in one transaction.

The stages run in this order; each is a plain function of the `Context`:

    parse.read              bytes -> parsed mail, within the size and structure limits
    screen.classify         duplicates, the desk's own mail, automatic mail
    correlate.find_ticket   one-click token, In-Reply-To/References, subject tag
    screen.file_automatic   bounces, complaints, out-of-office: recorded, never answered
    identity.authenticate   who the sender is to the ticket, and whether to believe it
    stage.apply          #commands, one-click links, survey answers
    triage.open_ticket      a new incident: categorize, prioritize, route, assign
    converse.attach         a reply joins the conversation and is relayed
    notify.queue_mail       the decided mails become outbox rows

A stage stops a message with `Discard` (done, with an outcome) or `Reject`
(quarantine, with a reason). Any other exception also quarantines the message with
its error (one of the codebase's two broad catches, around one message): a bad message never
blocks the others, and `maildesk inbound retry ID` runs it again.

A batch of messages is one transaction and, at first, one savepoint: most batches go
through whole; their events, outcomes and offers are written together, at the savepoint's end.
A message whose Message-ID (or a mail it cites) another desk process has claimed is
left out before anything of it is written (`claims.Held`) and stays pending for the
next round; one that cannot be read (or is over the limits) is quarantined in place,
for the same reason. When one message fails (or finds its ticket held by another
desk process, `store.Busy`), the batch is undone and run again one message at a time,
each in a savepoint of its own, so that each commits or fails alone; a message that
meets `Busy` then stays pending for the next round. On PostgreSQL the batch is claimed
(`store.claims.claim_pending`), so that several desk processes share the queue, and
its messages' own claims (screen.classify's) are made together, in one round trip,
once each has been read (`_claim_ahead`).
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from .. import store
from ..mailin import automatic
from ..mailin.mime import clean_header_text
from ..mailin.mime.headers import getaddresses
from ..mailout.queue import queue_mail
from ..store import Inbound, InboundRaw, Outbox
from . import commands, converse, correlate, identity, notify, parse, screen, triage
from .context import Context, Discard, Reject

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..service.runtime import Runtime

log = logging.getLogger(__name__)

STAGES = (
    parse.read, screen.classify, correlate.find_ticket, screen.file_automatic, identity.authenticate,
    commands.apply, triage.open_ticket, converse.attach, notify.queue_mail,
)

BATCH = 100  # messages per transaction: each still commits or fails alone (savepoints)


@dataclass
class Processed:
    done: int = 0
    quarantined: int = 0
    deferred: int = 0  # held by another desk process: pending until the next round

    def __str__(self):
        return f"processed={self.done} quarantined={self.quarantined}" + (f" deferred={self.deferred}" if self.deferred else "")

    def add(self, other: Processed) -> None:
        self.done += other.done
        self.quarantined += other.quarantined
        self.deferred += other.deferred


def process_pending(rt: Runtime, now: dt.datetime, should_stop=lambda: False, between=lambda: None,
                    intake=lambda: None) -> Processed:
    """Process every pending message, BATCH to a transaction; `intake` runs before
    each batch (the desk commits newly fetched mail there), `between` after each
    commit (the desk records delivery results there). Stops early when every message
    of a batch is held by other desk processes: they are taken up in the next round."""
    report = Processed()
    while not should_stop():
        intake()
        if store.is_sqlite():
            # the only desk process: the batch is read, and read ahead, before the write
            # transaction, so that the fetch process's next commit waits for nothing
            ids, _ = store.claims.claim_pending(BATCH)
            if not ids:
                break
            raws = _raws(rt, ids)
            with store.write_transaction():
                batch = process_batch(rt, ids, raws, now)
        else:
            with store.write_transaction():
                ids, waiting = store.claims.claim_pending(BATCH)  # the rows stay ours until the commit
                batch = process_batch(rt, ids, _raws(rt, ids), now) if ids else Processed()
                batch.deferred += waiting
            if not ids and not waiting:
                break
        report.add(batch)
        between()
        if not batch.done and not batch.quarantined:
            break  # all held by other desk processes: the next round takes them
    return report


def _raws(rt: Runtime, ids: list[int]) -> dict:
    """id -> (bytes, the fetch process's summary, or what this process read ahead). The
    bytes of a message with a summary are not read (None): the stages need them only
    for what it does not hold (Context.raw_bytes), and on PostgreSQL they cost more to
    send than the summary (as hex text, decoded again here)."""
    rows = store.execute('SELECT "inbound_id", CASE WHEN "summary" IS NULL THEN "data" END, "summary" FROM "inbound_raw" '
                         f'WHERE "inbound_id" IN ({", ".join("?" * len(ids))})', ids).fetchall()
    return {i: (data, summary, None if summary else parse.read_ahead(rt, bytes(data or b"")))
            for i, data, summary in cast("Iterable[tuple[int, bytes | memoryview | None, str | None]]", rows)}


def process_batch(rt: Runtime, ids: list[int], raws: dict, now: dt.datetime) -> Processed:
    """The messages `ids` in the open transaction: first all in one savepoint; if any
    fails, undone and run again one at a time (module docstring)."""
    report = Processed()
    inbounds = list(Inbound.select().where(Inbound.id.in_(ids)).order_by(Inbound.id))
    store.expect_rows(len(inbounds))  # (PostgreSQL: the ids of its messages and mail, drawn at once)
    if len(inbounds) > 1:
        contexts, held, unread, at = [], 0, 0, None
        try:
            with store.savepoint():
                read = []
                for ib in inbounds:  # the first stage for all: the batch's claims are then made at once
                    at = ib.id
                    raw, summary, reading = raws.get(ib.id, (b"", None, None))
                    ctx = _context(rt, ib, now, raw, summary, (), reading)
                    try:
                        STAGES[0](ctx)
                    except Reject as r:  # unreadable or over the limits, refused before anything of it was written
                        quarantine(rt, ib, ctx, r.reason, now, tell_sender=r.tell_sender)
                        unread += 1
                        continue
                    read.append(ctx)
                _claim_ahead(read)
                for ctx in read:
                    at = ctx.inbound.id
                    try:
                        _run(ctx, STAGES[1:])
                    except store.claims.Held as e:  # nothing of it written yet: the batch goes on without it
                        log.info("inbound=%s msgid=<%s> waits for the next round: %s", at, ctx.inbound.message_id or "", e)
                        held += 1
                        continue
                    contexts.append(ctx)
                store.flush_held()  # inside the savepoint: a write that fails undoes the batch
        except Exception as e:  # noqa: BLE001 - whatever it was, each message is run again alone
            log.info("batch of %d undone at inbound=%s (%s: %s); processing it one message at a time",
                     len(inbounds), at, type(e).__name__, str(e)[:200])
            rt.begin_cycle()  # what this process remembers may count what was undone
            inbounds = list(Inbound.select().where(Inbound.id.in_(ids)).order_by(Inbound.id))
        else:
            for ctx in contexts:
                _log_processed(ctx)
            report.done, report.deferred, report.quarantined = len(contexts), held, unread
            return report
    for ib in inbounds:
        raw, summary, reading = raws.get(ib.id, (b"", None, None))
        outcome = process_one(rt, ib, now, raw, summary, reading=reading)
        if outcome is None:
            report.deferred += 1
        elif outcome:
            report.done += 1
        else:
            report.quarantined += 1
    return report


def _claim_ahead(contexts: list[Context]) -> None:
    """PostgreSQL: the claims of a batch's messages (screen.classify's) in one statement,
    not one round trip each, then the stored mail they cite (correlate.read_ahead) in
    another. A message that is a copy of one before it in the batch, or cites one, is
    claimed at its turn, once that one is stored (the claim would not find it, or
    would wait for it)."""
    if store.is_sqlite():
        return
    seen: set[str] = set()
    ahead = []
    for ctx in contexts:
        claim = screen.claim_of(ctx)
        if claim.message_id not in seen and seen.isdisjoint(claim.cited):
            ahead.append((ctx, claim))
        if claim.message_id:
            seen.add(claim.message_id)
    if len(ahead) > 1:  # (one alone is claimed at its turn, by a prepared statement)
        for (ctx, _), claimed in zip(ahead, store.claims.claim_messages([c for _, c in ahead]), strict=True):
            ctx.claimed = claimed
    correlate.read_ahead(contexts)


def _context(rt: Runtime, ib: Inbound, now: dt.datetime, raw, summary, earlier, reading, retried: bool = False) -> Context:
    return Context(rt=rt, now=now, inbound=ib, raw=None if raw is None else bytes(raw), summary=summary, reading=reading,
                   decisions=list(earlier), retried=retried)


def _run(ctx: Context, stages: Sequence = STAGES) -> None:
    """The stages, and what they decided written down."""
    try:
        for stage in stages:
            stage(ctx)
        ctx.outcome = "new-ticket" if ctx.new_ticket else "reply"
    except Discard as stop:
        ctx.outcome = stop.outcome
        ctx.decide(f"outcome {stop.outcome}: {stop.reason}")
        notify.queue_mail(ctx)
    # nothing reads what these two write before the next statement: on PostgreSQL
    # they go with it (store.write)
    if ctx.ticket is not None:
        if ctx.ticket.id is None:
            ctx.ticket.save()
        else:
            store.save_changes(ctx.ticket, later=True)
    ib = ctx.inbound
    ib.status, ib.outcome, ib.error = "processed", ctx.outcome, None
    ib.ticket = ctx.ticket
    ib.decisions = "\n".join(ctx.decisions)
    ib.processed_at = ctx.now
    ib.worker = ctx.rt.worker
    # what this run set: the outcome, and Message-ID, subject and From where parse.read
    # found them changed since the fetch stored them; on PostgreSQL with the batch's
    # others, in one statement (store.save_outcome)
    store.save_outcome(ib)


def _log_processed(ctx: Context) -> None:
    ib = ctx.inbound
    log.info("processed inbound=%s outcome=%s ticket=%s msgid=<%s>", ib.id, ctx.outcome, ctx.ref, ib.message_id or "")


def process_one(rt: Runtime, ib: Inbound, now: dt.datetime, raw: bytes | memoryview | None, summary: str | None = None,
                earlier: Sequence[str] = (), reading=None, retried: bool = False) -> bool | None:
    """Run the stages on one message, in a savepoint of its own; True if processed,
    False if quarantined, None if another desk process holds what it needs (it stays
    pending). `earlier` is the decision log of an earlier attempt (a retry keeps it); a
    `retried` message is past the per-sender cap on new tickets."""
    ctx = _context(rt, ib, now, raw, summary, earlier, reading, retried)
    try:
        with store.savepoint():  # a failing message undoes only itself
            _run(ctx)
            store.flush_held()  # inside its savepoint: a write that fails fails this message
        _log_processed(ctx)
        return True
    except Reject as r:
        quarantine(rt, ib, ctx, r.reason, now, tell_sender=r.tell_sender)
    except Exception as e:  # noqa: BLE001 - any failure quarantines this message only
        if store.claims.is_busy(e):
            log.info("inbound=%s msgid=<%s> waits for the next round: %s", ib.id, ib.message_id or "", e)
            return None
        log.exception("quarantined inbound=%s after an error", ib.id)
        quarantine(rt, ib, ctx, f"{type(e).__name__}: {e}"[:2000], now)
    return False


_SAVED = [Inbound.status, Inbound.outcome, Inbound.error, Inbound.ticket, Inbound.decisions, Inbound.processed_at,
          Inbound.message_id, Inbound.subject, Inbound.from_addr, Inbound.worker]


def quarantine(rt: Runtime, ib: Inbound, ctx: Context, reason: str, now: dt.datetime, tell_sender: bool = False) -> None:
    head = _head(ctx.raw_bytes())
    if head is not None and (not ib.from_addr or not ib.subject):
        _headers_only(ib, head)
    ctx.decide(f"quarantined: {reason}")
    ib.status, ib.outcome, ib.error, ib.ticket = "quarantined", "quarantined", reason, None
    ib.decisions = "\n".join(ctx.decisions)
    ib.processed_at = now
    ib.worker = rt.worker
    ib.save(only=_SAVED)
    log.warning("quarantined inbound=%s msgid=<%s>: %s", ib.id, ib.message_id or "", reason)
    if tell_sender and head is not None:
        _tell_sender_once(rt, ib, head, reason, now)


def _head(raw: bytes):
    """The header block of a message that could not be parsed whole, or None."""
    try:
        return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:65536])
    except Exception:  # noqa: BLE001 - best effort for the listing and the notice only
        return None


def _headers_only(ib: Inbound, head) -> None:
    """From, Subject and Message-ID of a message that could not be parsed whole."""
    try:
        ib.from_addr = ib.from_addr or clean_header_text(str(head.get("From", "")))[:500]
        ib.subject = ib.subject or clean_header_text(str(head.get("Subject", "")))[:500]
        ib.message_id = ib.message_id or (clean_header_text(str(head.get("Message-ID", ""))).strip().strip("<>") or None)
    except Exception:  # noqa: BLE001 - best effort for the listing only
        pass


def _tell_sender_once(rt: Runtime, ib: Inbound, head, reason: str, now: dt.datetime) -> None:
    if Outbox.select().where((Outbox.inbound == ib) & (Outbox.kind == "too_large")).exists():
        return
    froms = [a.lower() for _, a in getaddresses([str(v) for v in head.get_all("From", [])]) if "@" in a]
    if len(froms) != 1 or automatic.classify_for_desk(rt.cfg.desk, head, rt.key, rt.cfg.desk_addresses) is not None:
        return
    queue_mail(rt, now, "too_large", rcpt=froms[0], inbound=ib,
               context={"reason": reason, "subject": ib.subject, "limit": rt.cfg.limits.max_message_bytes})


def retry(rt: Runtime, inbound_id: int, now: dt.datetime) -> Inbound:
    """Run a quarantined message through the pipeline again; mail held by the per-sender
    cap on new tickets goes past it."""
    with store.write_transaction():
        ib = Inbound.get_by_id(inbound_id)
        earlier = (ib.decisions.splitlines() if ib.decisions else []) + [f"retried at {now.isoformat()}:"]
        ib.status, ib.error = "pending", None
        ib.save(only=[Inbound.status, Inbound.error])
        raw = InboundRaw.get_or_none_by_id(inbound_id)
        # parsed again from the bytes: the summary was made by the code that failed
        process_one(rt, ib, now, raw.data if raw else b"", None, earlier, retried=True)
    return Inbound.get_by_id(inbound_id)
