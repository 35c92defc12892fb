"""Stage 3: which ticket a mail belongs to (DESIGN section 4, in this order):

1. a one-click token in the subject (signed for this sender);
2. `In-Reply-To`, then `References` from the newest, against every stored
   Message-ID, inbound and outbound (never the ids of automatic mail, bounces and
   reports: NOT_ANCHORS);
3. the subject tag `[INC-42]`, but only when the sender is a participant of that
   ticket or staff: a stranger's mail with a guessed tag starts a new ticket;
4. otherwise a new ticket.

A requester's reply to a resolved or closed ticket after `lifecycle.reopen_window`
starts a new ticket that follows the old one.
"""

from __future__ import annotations

import logging
import re

from .. import signing, store
from ..desk.lifecycle import is_participant, within_reopen_window
from ..store import Ticket
from .context import Context, Discard

log = logging.getLogger(__name__)

TAG = re.compile(r"\[\s*([A-Za-z][A-Za-z0-9]*)-(\d{1,12})\s*\]")
MAX_IDS = 60  # a References header longer than this is not worth more queries
# stored kinds of message whose Message-ID never threads anything: a bounce's or a
# report's own id is the sender's to choose (a planted anchor)
NOT_ANCHORS = ("automatic", "bounce", "complaint")


def find_ticket(ctx: Context) -> None:
    if _by_token(ctx) or _by_message_id(ctx) or _by_tag(ctx):
        _late_reply(ctx)
        return
    ctx.decide("no thread matched: a new ticket")


def _by_token(ctx: Context) -> bool:
    token = signing.find_token(ctx.mail.subject)
    if token is None:
        return False
    action, tid, mac = token
    ticket = Ticket.get_or_none_by_id(tid)
    if ticket is None or not ctx.sender or not signing.verify_token(ctx.rt.key, action, tid, mac, ctx.sender):
        log.warning("bad one-click token action=%s ticket=%s from=%s", action, tid, ctx.sender or "?")
        raise Discard("ignored", f"one-click token {action}-{tid} is not valid for {ctx.sender or 'this sender'}: ignored")
    ctx.ticket, ctx.token, ctx.how = ticket, (action, tid), f"one-click link ({action})"
    ctx.decide(f"threaded by a valid one-click token ({action}) onto {ctx.ref}")
    return True


def _by_message_id(ctx: Context) -> bool:
    mail = ctx.mail
    ids = list(dict.fromkeys(mail.in_reply_to + list(reversed(mail.references))))[:MAX_IDS]
    if not ids:
        return False
    found: dict[str, tuple[int, str]] = {}
    marks = ", ".join("?" * len(ids))
    skip = ", ".join("?" * len(NOT_ANCHORS))
    for mid, tid in store.execute(f'SELECT "message_id", "ticket_id" FROM "message" WHERE "message_id" IN ({marks}) '
                                  f'AND "kind" NOT IN ({skip})', ids + list(NOT_ANCHORS)):
        found.setdefault(mid, (tid, "message"))
    for mid, tid, kind in store.execute(
        f'SELECT "message_id", "ticket_id", "kind" FROM "outbox" WHERE "message_id" IN ({marks}) AND "ticket_id" IS NOT NULL', ids
    ):
        found[mid] = (tid, kind)
    for mid in ids:
        if mid in found:
            tid, kind = found[mid]
            ctx.ticket = Ticket.get_by_id(tid)
            ctx.how = f"In-Reply-To/References <{mid}>"
            ctx.reply_to_kind = kind
            ctx.decide(f"threaded by <{mid}> ({kind}) onto {ctx.ref}")
            return True
    return False


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
    if t.status not in ("resolved", "closed", "cancelled") or ctx.token or ctx.automatic:
        return
    if ctx.cfg.is_staff(ctx.sender) or ctx.reply_to_kind == "survey":
        return
    if t.status != "cancelled" and within_reopen_window(ctx.rt, t, ctx.now):
        return
    ctx.decide(f"{ctx.ref} is {t.status} and past the reopen window: a new ticket that follows it")
    ctx.follows, ctx.ticket, ctx.how = t, None, ""
