"""Floods (docs/mail.md, Floods): how many tickets a sender opened by mail in the last
hour, in the lane of their mail (vocab.Lane), and the hold past
limits.new_tickets_per_sender_per_hour. Read by triage (hold_flood, opened) and, ahead,
with the claim of a new mail (screen.classify, counts_ahead).
"""

from __future__ import annotations

import datetime as dt

from .. import store
from ..mailout import queue
from ..store import Ticket
from ..vocab import COUNTED_LANES, Lane
from .context import Context, Reject


def hold_flood(ctx: Context, requester: str, lane: Lane) -> None:
    """A flood costs only the flooder (docs/mail.md, Floods): past limits.new_tickets_per_sender_per_hour
    a sender's new mail is held, quarantined as rate-limited and never lost, until an
    admin's `maildesk inbound retry` takes it past the cap. Authenticated and
    unauthenticated mail are counted apart, so that mail forged in a sender's name
    never holds their own; staff mail is not counted."""
    if lane not in COUNTED_LANES:
        return
    if ctx.retried:
        ctx.decide("retried by an admin: past limits.new_tickets_per_sender_per_hour")
        return
    cap = ctx.cfg.limits.new_tickets_per_sender_per_hour
    n = _opened_count(ctx, requester, lane)
    if n >= cap:
        whose = "that passed authentication" if lane == Lane.AUTH else "that did not pass authentication"
        raise Reject(f"rate-limited: {requester} opened {n} tickets in the last hour by mail {whose} "
                     f"(limits.new_tickets_per_sender_per_hour = {cap}); the mail is held, and "
                     f"`maildesk inbound retry {ctx.inbound.id}` takes it past the cap")


_OPENED = '(SELECT COUNT(*) FROM "ticket" WHERE "requester" = ? AND "created_at" > ? AND "opened_lane" = ?)'


def counts_ahead(ctx: Context) -> store.claims.Also | None:
    """The counts of the sender that hold_flood and the acknowledgement's limit read when
    this mail opens a ticket, in both counted lanes (which one is not known yet), for the
    claim to read in its own statement (screen.classify; on PostgreSQL a round trip less
    for each new ticket). None when they are known, or when the mail cites mail (a reply,
    most likely: it opens no ticket). Read for a mail that then does not open a ticket,
    they are the counts still, as `_opened_count` would have read them."""
    sender, mail = ctx.sender, ctx.mail
    if not sender or mail is None or mail.in_reply_to or mail.references:
        return None
    return _unknown_counts(ctx, sender, COUNTED_LANES)


def _unknown_counts(ctx: Context, sender: str, lanes) -> store.claims.Also | None:
    """The counts of `sender` in `lanes` not known yet this cycle, as scalar sub-selects:
    tickets opened in the last hour, and the acknowledgement's count of automatic mail
    (queue.sender_count); `take` keeps what they read. None when all are known."""
    counts = ctx.rt.memo.setdefault("opened_tickets", {})
    hour = Ticket.created_at.db_value(ctx.now - dt.timedelta(hours=1))
    parts: list[str] = []
    params: list = []
    keys: list[tuple[str, Lane]] = []
    for lane in lanes:
        if (sender, str(lane)) not in counts:
            parts.append(_OPENED)
            params += [sender, hour, str(lane)]
            keys.append(("opened", lane))
        auto = queue.sender_count(ctx.rt, sender, ctx.now, lane)
        if auto is not None:
            parts.append(auto[0])
            params += auto[1]
            keys.append(("auto", lane))
    if not parts:
        return None

    def take(values: list) -> None:
        for (what, lane), n in zip(keys, values, strict=True):
            if what == "opened":
                counts.setdefault((sender, str(lane)), n or 0)
            else:
                queue.sender_counted(ctx.rt, sender, lane, n or 0)

    return store.claims.Also(", ".join(parts), params, take)


def _opened_count(ctx: Context, requester: str, lane: Lane) -> int:
    """Tickets opened by this sender in the last hour, in this lane: read once a cycle
    (or with the claim, counts_ahead), then kept up to date (`opened`). The
    acknowledgement's count of automatic mail to the same sender is read in the same
    round trip."""
    counts = ctx.rt.memo.setdefault("opened_tickets", {})
    key = (requester, str(lane))
    if key not in counts:
        unknown = _unknown_counts(ctx, requester, (lane,))
        assert unknown is not None  # this count, at least
        unknown.take(list(store.execute(f"SELECT {unknown.sql}", unknown.params, prepare=True).fetchone()))
    return counts[key]


def opened(ctx: Context, requester: str, lane: Lane) -> None:
    counts = ctx.rt.memo.get("opened_tickets", {})
    key = (requester, str(lane))
    if key in counts:
        counts[key] += 1
