"""Stage 3: which ticket a mail belongs to (docs/mail.md, threading; in this order):

1. a one-click token in the subject, checked before anything else: signed for the
   ticket's requester (the one person links go to). A click whose From is not that
   recipient is kept for the commands stage to record and refuse; text that only
   looks like a token (its signature is not the desk's) is ordinary mail;
2. `In-Reply-To`, then `References` from the newest, against every stored
   Message-ID, inbound and outbound (never the ids of automatic mail, bounces and
   reports: NOT_ANCHORS). A sender who is not a participant of that ticket (nor
   staff) threads onto it only by citing a desk mail sent to that very sender (a
   Message-ID signed for them); otherwise the mail is a new ticket that mentions the
   cited one (`ctx.cites`): a stranger never joins a ticket by citing its mail;
3. the subject tag `[INC-42]`, but only when the sender is a participant of that
   ticket or staff: a stranger's mail with a guessed tag starts a new ticket;
4. otherwise a new ticket.

A reply to desk mail that concerns no ticket (a report, an alert; not an answer
such as #help's), sent to this sender, is recorded and opens nothing. A requester's reply to a resolved or closed
ticket after `lifecycle.reopen_window` starts a new ticket that follows the old one.
"""

from __future__ import annotations

import logging
import re

from .. import signing, store
from ..desk import survey
from ..desk.lifecycle import is_participant, within_reopen_window
from ..desk.links import click_comment, judge_click
from ..store import Ticket
from ..vocab import AUTO_REPLIES
from .context import Context, Discard

log = logging.getLogger(__name__)

TAG = re.compile(r"\[\s*([A-Za-z][A-Za-z0-9]*)-(\d{1,12})\s*\]")
MAX_IDS = 60  # a References header longer than this is not worth more queries
# stored kinds of message whose Message-ID never threads anything: a bounce's or a
# report's own id is the sender's to choose (a planted anchor)
NOT_ANCHORS = ("automatic", "bounce", "complaint")


def find_ticket(ctx: Context) -> None:
    if _by_token(ctx):
        return
    if _by_message_id(ctx) or _by_tag(ctx):
        _late_reply(ctx)
        return
    if ctx.cites is not None:
        ctx.decide(f"a new ticket that mentions {ctx.rt.ref(ctx.cites)}: "
                   f"{ctx.sender or 'the sender'} is not a participant there")
        return
    ctx.decide("no thread matched: a new ticket")


def _by_token(ctx: Context) -> bool:
    token = signing.find_token(ctx.mail.subject)
    if token is None:
        return False
    ticket = Ticket.get_or_none_by_id(token.ticket_id)
    looks = f"{token.action}-{token.ticket_id}"
    if ticket is None:
        ctx.decide(f"the subject looks like a one-click token ({looks}) for no ticket: read as ordinary mail")
        return False
    key = ctx.rt.key
    # links go to the requester alone; an old token may have gone to a cc participant
    for rcpt in dict.fromkeys([ticket.requester] + ([ctx.sender] if ctx.sender and token.old else [])):
        if signing.verify_token(key, token, rcpt):
            break
    else:
        log.warning("token-like subject with a bad signature ticket=%s from=%s msgid=<%s>",
                    ctx.rt.ref(ticket), ctx.sender or "?", ctx.mail.message_id or "")
        ctx.decide(f"the subject looks like a one-click token ({looks}) but its signature is not the desk's: "
                   "read as ordinary mail")
        return False
    ctx.ticket, ctx.token, ctx.token_rcpt = ticket, token, rcpt
    ctx.how = f"one-click link ({token.action})"
    if ctx.sender != rcpt or token.old:
        sent_by = f", sent by {ctx.sender or 'an ambiguous sender'}"
        ctx.decide(f"a one-click link ({token.action}) of {ctx.ref} made for {rcpt}"
                   + (" in the old form, bound to no resolution" if token.old else sent_by))
        return True
    ctx.decide(f"threaded by a valid one-click token ({token.action}) onto {ctx.ref}")
    if token.action == "notfixed" and ctx.automatic is None:
        verdict = judge_click(ticket, token, ctx.now, ctx.cfg.lifecycle.reopen_window.total, None)
        if verdict.act == "follow-up":
            ctx.follows, ctx.ticket, ctx.token, ctx.how = ticket, None, None, ""
            ctx.subject = f"Not fixed: {ticket.subject}"[:500]
            ctx.body = click_comment(ctx.mail.reply_text) or (
                f"{ctx.sender} says {ctx.rt.ref(ticket)} is not fixed (one-click link, after the reopen window).")
            ctx.decide(f"{ctx.rt.ref(ticket)} is past the reopen window: the 'not fixed' link opens a new ticket that follows it")
    return True


def cited_ids(ctx: Context) -> list[str]:
    """The Message-IDs a mail threads by, in the order they are tried."""
    mail = ctx.mail
    return list(dict.fromkeys(mail.in_reply_to + list(reversed(mail.references))))[:MAX_IDS]


# stored mail, then the desk's own mail (which wins), in one statement; `{ids}` is how
# the Message-IDs are given, NOT_ANCHORS follow the first of them
_ANCHORS = (
    'SELECT 0, "message_id", "ticket_id", \'message\' FROM "message" WHERE "message_id" {ids} '
    f'AND "kind" NOT IN ({", ".join("?" * len(NOT_ANCHORS))}) '
    'UNION ALL SELECT 1, "message_id", "ticket_id", "kind" FROM "outbox" WHERE "message_id" {ids}'
)


def read_ahead(contexts: list[Context]) -> None:
    """PostgreSQL: what `_by_message_id` would read for each of a batch's messages, in
    one statement for the batch, not a round trip each (`ctx.anchors`). Called once the
    batch's claims are made (pipeline._claim_ahead): a mail that another desk process
    was storing, and that a claim waited for, is committed by then. Only for a mail
    claimed with the batch (`ctx.claimed`; one claimed at its turn may wait then) and
    citing none of the Message-IDs of the mail before it in the batch (those are
    stored at their turn); any other mail reads at its own. The rows read are never
    changed once written (a Message-ID, its ticket, its kind), so that reading them
    a batch early reads what the turn would; the tickets they name are read (and locked)
    with the batch too, and read again at their turn if written since (store.read_ahead)."""
    earlier: set[str] = set()
    wanted: list[tuple[Context, list[str]]] = []
    for ctx in contexts:
        ids = cited_ids(ctx)
        if ids and ctx.claimed is not None and earlier.isdisjoint(ids):
            wanted.append((ctx, ids))
        if ctx.mail.message_id:
            earlier.add(ctx.mail.message_id)
    if len(wanted) < 2:
        return
    every = list(dict.fromkeys(i for _, ids in wanted for i in ids))
    rows = store.execute(_ANCHORS.format(ids="= ANY(?)"), [every, *NOT_ANCHORS, every], prepare=True).fetchall()
    by_id: dict[str, list[tuple]] = {}
    for row in rows:
        by_id.setdefault(row[1], []).append(row)
    for ctx, ids in wanted:
        ctx.anchors = [row for i in ids for row in by_id.get(i, ())]
    # and the tickets they name, locked, in one more round trip, not one each at their turn
    store.read_ahead(Ticket, sorted({row[2] for row in rows if row[2] is not None}))


def _by_message_id(ctx: Context) -> bool:
    ids = cited_ids(ctx)
    if not ids:
        return False
    found: dict[str, tuple[int | None, str]] = {}
    rows = ctx.anchors
    if rows is None:  # not read with its batch: a round trip of its own on PostgreSQL
        marks = ", ".join("?" * len(ids))
        rows = store.execute(_ANCHORS.format(ids=f"IN ({marks})"), ids + list(NOT_ANCHORS) + ids,
                             prepare=True).fetchall()
    for desks, mid, tid, kind in sorted(rows, key=lambda row: row[0]):
        if desks:
            found[mid] = (tid, kind)
        else:
            found.setdefault(mid, (tid, kind))
    signed = _signed_for_sender(ctx, ids)
    for mid in ids:
        if mid not in found:
            continue
        tid, kind = found[mid]
        if tid is None:  # a report, an alert (not an answer to someone's mail, such as #help's)
            if mid in signed and kind not in AUTO_REPLIES:
                raise Discard("recorded", f"answers the desk's {kind} mail <{mid}>, which concerns no ticket: "
                                          "recorded, no ticket opened")
            continue
        ticket = Ticket.get_by_id(tid)
        why = _may_thread(ctx, ticket, signed)
        if why is None:
            ctx.decide(f"<{mid}> ({kind}) belongs to {ctx.rt.ref(ticket)}, but {ctx.sender or 'the sender'} is not a "
                       "participant there and cites no desk mail of it sent to them: not threaded")
            ctx.cites = ctx.cites or ticket
            continue
        ctx.ticket = ticket
        ctx.how = f"In-Reply-To/References <{mid}>"
        ctx.reply_to_kind = kind
        ctx.decide(f"threaded by <{mid}> ({kind}) onto {ctx.ref}: {why}")
        return True
    return False


def _signed_for_sender(ctx: Context, ids: list[str]) -> dict[str, int]:
    """The cited desk Message-IDs whose signature says they were sent to this sender,
    with the ticket id each names."""
    if not ctx.sender:
        return {}
    key, domain = ctx.rt.key, ctx.cfg.desk.domain
    signed = {}
    for mid in ids:
        if signing.is_desk_id(mid, domain):
            tid = signing.verify_message_id(key, mid, ctx.sender, domain)
            if tid is not None:
                signed[mid] = tid
    return signed


def _may_thread(ctx: Context, ticket: Ticket, signed: dict[str, int]) -> str | None:
    """Why this sender may thread onto `ticket` by its Message-IDs, or None."""
    s = ctx.sender
    if not s:
        return None
    if is_participant(ticket, s):
        return f"{s} is a participant"
    if ctx.cfg.is_staff(s):
        return f"{s} is staff"
    if ticket.id in signed.values():
        return f"it cites desk mail of that ticket sent to {s}"
    return None


def _by_tag(ctx: Context) -> bool:
    prefix = ctx.cfg.desk.ticket_prefix.lower()
    for m in TAG.finditer(ctx.mail.subject):
        if m.group(1).lower() != prefix:
            continue
        tag = f"[{m.group(1)}-{m.group(2)}]"
        ticket = Ticket.get_or_none_by_id(int(m.group(2)))
        if ticket is None:
            ctx.decide(f"subject tag {tag} names no ticket: ignored")
            return False
        if not ctx.sender:
            ctx.decide(f"subject tag {tag} ignored: the sender is ambiguous ({ctx.mail.sender_problem})")
            return False
        if is_participant(ticket, ctx.sender) or ctx.cfg.is_staff(ctx.sender):
            ctx.ticket, ctx.how = ticket, f"subject tag {tag}"
            ctx.decide(f"threaded by subject tag {tag}: {ctx.sender} is a participant")
            return True
        ctx.decide(f"subject tag {tag} ignored: {ctx.sender} is not a participant of that ticket")
        return False
    return False


def _late_reply(ctx: Context) -> None:
    """After the reopen window, a requester's reply to a finished ticket starts a new one."""
    t = ctx.ticket
    if t is None or t.status not in ("resolved", "closed", "cancelled") or ctx.token or ctx.automatic:
        return
    if ctx.cfg.is_staff(ctx.sender):
        return
    if ctx.reply_to_kind == "survey" and survey.reading(ctx.mail.reply_text or "",
                                                        ctx.cfg.lifecycle.thanks_phrases)[0] != "other":
        return  # a rating or praise: the survey takes it, whenever it comes
    if t.status != "cancelled" and within_reopen_window(ctx.rt, t, ctx.now):
        return
    ctx.decide(f"{ctx.ref} is {t.status} and past the reopen window: a new ticket that follows it")
    ctx.follows, ctx.ticket, ctx.how = t, None, ""
