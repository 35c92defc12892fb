"""The satisfaction survey sent when a ticket closes.

One survey per ticket, and at most one per requester in `survey.min_days_between`
days. The requester answers with one of five one-click `mailto:` links (signed
tokens), or by replying with a number and a comment. A second answer replaces the
first and says so.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import TYPE_CHECKING

from ..mailout.queue import queue_mail
from ..store import Survey, Ticket
from .lifecycle import event
from .links import mailto

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)

LABELS = {1: "Very poor", 2: "Poor", 3: "OK", 4: "Good", 5: "Excellent"}


def maybe_send(rt: Runtime, ticket: Ticket, now: dt.datetime, inbound=None) -> bool:
    cfg = rt.cfg.survey
    if not cfg.enabled or "@" not in ticket.requester:
        return False
    if Survey.select().where(Survey.ticket == ticket).exists():
        return False
    since = now - dt.timedelta(days=cfg.min_days_between)
    recent = Survey.select().where((Survey.requester == ticket.requester) & (Survey.sent_at > since)).first()
    if recent is not None:
        event(ticket, now, "desk", "survey-skipped",
              f"no survey: {ticket.requester} got one on {recent.sent_at:%Y-%m-%d} "
              f"(survey.min_days_between = {cfg.min_days_between})",
              inbound)
        return False
    Survey.create(ticket=ticket, requester=ticket.requester, sent_at=now)
    links = [(n, LABELS[n], mailto(rt, f"rate{n}", ticket, ticket.requester, f"Rating {n} - {LABELS[n]}")) for n in range(1, 6)]
    queue_mail(rt, now, "survey", rcpt=ticket.requester, rcpt_name=ticket.requester_name, ticket=ticket,
               inbound=inbound, context={"links": links})
    event(ticket, now, "desk", "survey-sent", f"survey sent to {ticket.requester}", inbound)
    return True


def record_answer(rt: Runtime, ticket: Ticket, rating: int, comment: str | None, now: dt.datetime, who: str, via: str,
                  inbound=None) -> bool:
    s = Survey.get_or_none(Survey.ticket == ticket)
    if s is None:
        log.warning("survey answer for ticket=%s that got no survey; ignored", rt.ref(ticket))
        return False
    replaced = s.rating
    s.rating, s.answered_at = rating, now
    if comment is not None or replaced is None:
        s.comment = comment
    s.save()
    detail = f"rating {rating} ({LABELS[rating]}) by {via}"
    if replaced is not None:
        detail += f"; replaces the earlier rating {replaced}"
    event(ticket, now, who, "survey-answer", detail, inbound)
    queue_mail(rt, now, "survey_thanks", rcpt=ticket.requester, ticket=ticket, inbound=inbound,
               context={"rating": rating, "label": LABELS[rating], "replaced": replaced})
    return True


_ANSWER = re.compile(r"^\s*\(?([1-5])\)?(?![\d.,]\d)\s*(?:/\s*5)?[\s.,:;!\-)]*(.*)$", re.S)
_PRAISE = re.compile(r"\b(thanks?|thank you|great|excellent|perfect|awesome|brilliant|super|fantastic|wonderful|"
                     r"quick|fast|helpful|well done|good job|appreciated?|satisfied|happy|danke|merci)\b", re.I)
_TROUBLE = re.compile(r"\b(not|no longer|still|again|back|broken|fails?|failed|failing|error|problem|issue|"
                      r"doesn'?t|does not|isn'?t|won'?t|can'?t|cannot|wrong|worse)\b", re.I)


def reading(text: str, thanks_phrases=()) -> tuple[str, int | None, str | None]:
    """How a reply to the survey reads: ("rating", n, comment) when it starts with a
    number from 1 to 5; ("praise", None, text) when it thanks or praises and reports no
    trouble; else ("other", None, None): a reply like any other, which follows the
    reopen rules (docs/mail.md)."""
    m = _ANSWER.match(text or "")
    if m:
        return "rating", int(m.group(1)), m.group(2).strip() or None
    words = (text or "").strip()
    lowered = words.lower()
    praised = _PRAISE.search(words) or any(p.lower() in lowered for p in thanks_phrases)
    if words and praised and not _TROUBLE.search(words):
        return "praise", None, words[:2000]
    return "other", None, None


def answer_by_reply(ctx) -> bool:
    """A reply to the survey mail: a rating (a number from 1 to 5 first, then an
    optional comment), or feedback in words (thanks, praise) kept with the survey.
    False for anything else, which the conversation stages treat as a reply."""
    kind, rating, comment = reading(ctx.mail.reply_text or "", ctx.cfg.lifecycle.thanks_phrases)
    if kind == "rating" and rating is not None:
        return record_answer(ctx.rt, ctx.ticket, rating, comment, ctx.now, ctx.sender, "reply", ctx.inbound)
    if kind == "praise":
        return record_feedback(ctx.rt, ctx.ticket, comment or "", ctx.now, ctx.sender, ctx.inbound)
    return False


def record_feedback(rt: Runtime, ticket: Ticket, text: str, now: dt.datetime, who: str, inbound=None) -> bool:
    """Words without a rating: kept as the survey's comment, the ticket stays closed."""
    s = Survey.get_or_none(Survey.ticket == ticket)
    if s is None:
        return False
    s.comment = text
    if s.answered_at is None:
        s.answered_at = now
    s.save()
    event(ticket, now, who, "survey-feedback", "feedback by reply, without a rating; the ticket stays as it is", inbound)
    return True
