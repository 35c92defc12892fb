"""Stage 7: a new incident is logged, categorized, prioritized, routed and assigned,
each decision an event on the ticket that says why (ITIL steps 1-4).

The decisions themselves (`categorize`, `prioritize`) are pure functions of the
config and the mail, so that they can be tested without any I/O.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..config import Config
from ..desk import kb, lifecycle, routing, sla
from ..mailin.authentication import Policy
from ..mailout.queue import Thread, is_desk_address
from ..mailout.render import snapshot
from ..store import Ticket
from ..vocab import LEVELS
from . import floods
from .context import Context
from .messages import reply_to_note, store_message

GENERAL = "General"


@dataclass(frozen=True)
class Decision:
    value: str
    why: str


@functools.lru_cache(maxsize=64)
def _matcher(keywords: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern | None] | None:
    """One pattern for a whole keyword list: whole words, case-insensitive; a keyword
    may be a phrase ("all users"). One scan of the text counts them all. With it, for
    ASCII keywords, the same alternatives without the word boundaries and in lower
    case, which finds where a keyword may begin several times faster (keyword_counts)."""
    words = sorted({" ".join(k.lower().split()) for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    exact = re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)", re.I)
    return exact, re.compile(alternatives) if all(w.isascii() for w in words) else None


def keyword_counts(keywords: tuple[str, ...], text: str) -> dict[str, int]:
    """How often each keyword occurs in `text` (by its normalized form: lower case,
    single spaces)."""
    pattern = _matcher(tuple(keywords))
    counts: dict[str, int] = {}
    if pattern is None:
        return counts
    exact, candidates = pattern
    if candidates is None or not text.isascii():
        found_all = exact.findall(text)
    else:
        # the exact pattern tried only where a keyword begins, as findall tries every
        # position in turn: in ASCII, lower case is what re.I compares
        found_all, lowered, at = [], text.lower(), 0
        while (candidate := candidates.search(lowered, at)) is not None:
            found = exact.match(text, candidate.start())
            if found is None:
                at = candidate.start() + 1
            else:
                found_all.append(found.group())
                at = found.end()
    for found in found_all:
        key = " ".join(found.lower().split())
        counts[key] = counts.get(key, 0) + 1
    return counts


def categorize(cfg: Config, text: str) -> Decision:
    """The category with the most keyword matches; a tie goes to the one listed first."""
    counts = keyword_counts(tuple(k for c in cfg.categories for k in c.keywords), text)
    best, best_score, best_hits = None, 0, []
    for cat in cfg.categories:
        hits = [(k, n) for k in cat.keywords if (n := counts.get(" ".join(k.lower().split()), 0))]
        score = sum(n for _, n in hits)
        if score > best_score:
            best, best_score, best_hits = cat, score, hits
    if best is None:
        return Decision(GENERAL, "no keyword matched")
    words = ", ".join(f'"{k}"' + (f" x{n}" if n > 1 else "") for k, n in best_hits)
    return Decision(best.name, f"keyword{'s' if len(best_hits) > 1 or best_score > 1 else ''} {words}")


def _level(keywords: dict, text: str) -> tuple[str, str]:
    counts = keyword_counts(tuple(k for level in LEVELS for k in keywords.get(level, ())), text)
    for level in LEVELS:
        for k in keywords.get(level, ()):
            if counts.get(" ".join(k.lower().split())):
                return level, f'keyword "{k}"'
    return "medium", "default"


def _raise(level: str) -> str:
    return LEVELS[max(0, LEVELS.index(level) - 1)]


def header_urgency(mail) -> str | None:
    """`Importance: high`, `X-Priority: 1`/`2`, `Priority: urgent` (RFC 2156, Outlook)."""
    importance = mail.header("Importance").strip().lower()
    x_priority = mail.header("X-Priority").strip()[:1]
    priority = mail.header("Priority").strip().lower()
    if importance == "high" or x_priority in ("1", "2") or priority == "urgent":
        return "high"
    return None


@dataclass(frozen=True)
class Priority:
    impact: str
    urgency: str
    priority: str
    why: str


def prioritize(cfg: Config, text: str, requester: str, urgent_header: str | None = None) -> Priority:
    p = cfg.priority
    impact, impact_why = _level(p.impact_keywords, text)
    if requester in p.vip:
        raised = _raise(impact)
        impact_why += f", raised to {raised} for VIP {requester}" if raised != impact else f", VIP {requester}"
        impact = raised
    urgency, urgency_why = _level(p.urgency_keywords, text)
    if urgent_header and LEVELS.index(urgent_header) < LEVELS.index(urgency):
        urgency, urgency_why = urgent_header, f"{urgency_why}, raised to {urgent_header} by the mail's importance header"
    priority = p.matrix[impact][urgency]
    return Priority(impact, urgency, priority,
                    f"priority {priority}: impact {impact} ({impact_why}), urgency {urgency} ({urgency_why})")


_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|fw|fwd|wg)\s*:\s*|\[[A-Z]+-\d+\]\s*)+", re.IGNORECASE)
_DESK_WORDS = re.compile(r"^(?:Resolved|Closed|On hold|Reminder|Escalated|Withdrawn)\s*:\s*", re.IGNORECASE)


def ticket_subject(subject: str | None, prefix: str) -> str:
    """The subject of a follow-up ticket opened by a reply to an old one: without the
    reply prefixes, the old ticket's tag and the desk's own words ("Resolved: ..."), so
    that it does not read "[INC-17] Re: [INC-1] Resolved: ..."."""
    text = subject or ""
    for _ in range(5):
        cleaned = _DESK_WORDS.sub("", _REPLY_PREFIX.sub("", text))
        if cleaned == text:
            break
        text = cleaned
    return text.strip() or "(no subject)"


# --- the stage ------------------------------------------------------------------------


def open_ticket(ctx: Context) -> None:
    if ctx.ticket is not None:
        return
    cfg, mail, now = ctx.cfg, ctx.mail, ctx.now
    requester = ctx.logged_for or ctx.sender or next((a.addr for a in mail.from_ if a.addr), "") or "unknown"
    subject = ctx.subject or (ticket_subject(mail.subject, cfg.desk.ticket_prefix) if ctx.follows else mail.subject) \
        or "(no subject)"
    lane = ctx.lane
    floods.hold_flood(ctx, requester, lane)
    t = Ticket(
        subject=subject, requester=requester, requester_name="" if ctx.logged_for else ctx.sender_name,
        status="new", created_at=now, updated_at=now, follows=ctx.follows,
        thread_root=None if ctx.logged_for else mail.message_id,  # the caller never saw the technician's mail
        opened_lane=str(lane),
    )
    text = f"{subject}\n{mail.reply_text}"  # the quoted history does not count
    box = cfg.home_mailbox([a.addr for a in mail.to + mail.cc], ctx.inbound.mailbox)
    t.mailbox = box.name if box else None
    cat = Decision(box.category, f"mailbox {box.name}") if box and box.category else categorize(cfg, text)
    pri = prioritize(cfg, text, requester, header_urgency(mail))
    t.category, t.impact, t.urgency, t.priority = cat.value, pri.impact, pri.urgency, pri.priority
    t.group, routed_by = cfg.category_route(cat.value), f"category {cat.value}"
    if t.group is None and box is not None and box.group:
        t.group, routed_by = box.group, f"mailbox {box.name}"
    t.group = t.group or cfg.default_group
    sla.apply_policy(ctx.rt, t, now)
    t.save()
    floods.opened(ctx, requester, lane)
    t.is_new = True  # nothing fired, nothing sent yet: spares the lookups
    ctx.ticket, ctx.new_ticket = t, True
    lifecycle.add_participant(t, requester, "requester")
    if ctx.logged_for:
        lifecycle.add_participant(t, ctx.sender, "staff")  # the technician who took the call
    copied = list(dict.fromkeys(a.addr.lower() for a in mail.to + mail.cc
                                if a.addr and a.addr.lower() != requester and "@" in a.addr and not _is_desk(ctx, a.addr)))
    for addr in copied[:lifecycle.MAX_COPIED]:
        lifecycle.add_participant(t, addr, "cc")
    ctx.message = store_message(ctx, t, internal=False, kind="mail")
    ctx.event("created", f"from {requester}" + (f" ({ctx.how})" if ctx.how else "")
              + (f"; logged by {ctx.sender} with #for" if ctx.logged_for else "")
              + (f"; follows {ctx.rt.ref(ctx.follows)}" if ctx.follows else ""))
    if ctx.follows is not None:
        ctx.event("linked", f"follow-up {ctx.ref} opened by a reply after the reopen window", ticket=ctx.follows)
    if ctx.cites is not None:
        # docs/mail.md, Threading: a stranger who cites a ticket's mail gets a new ticket that mentions it
        cited = ctx.rt.ref(ctx.cites)
        ctx.event("cites", f"cites mail of {cited}, where {requester} is not a participant: not threaded there "
                           f"(#link it if it belongs there)", actor="desk")
        ctx.event("cited", f"{ctx.ref} from {requester} cites this ticket's mail; {requester} is not a participant "
                           "and was not added", actor="desk", ticket=ctx.cites)
    left = copied[lifecycle.MAX_COPIED:]
    if left:
        ctx.event("cc-refused", f"{len(left)} more in To/Cc not added (at most {lifecycle.MAX_COPIED} per mail; "
                                f"a technician may #cc them): {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}",
                  actor="desk")
    ctx.event("category", f"category {cat.value} ({cat.why})", actor="desk")
    ctx.event("priority", pri.why, actor="desk")
    ctx.event("group", f"routed to {t.group or 'no group'} ({routed_by})", actor="desk")
    ctx.event("sla", sla.describe_due(ctx.rt, t), actor="desk")
    tech, how = routing.pick_assignee(ctx.rt, t.group, now)
    if tech:
        lifecycle.assign(ctx.rt, t, tech.email, now, "desk", how, ctx.inbound)
    else:
        ctx.event("assigned", f"not assigned: {how}", actor="desk")
    sla.refresh(ctx.rt, t)
    _notify_new(ctx, t, pri, cat)


def _is_desk(ctx: Context, addr: str) -> bool:
    return is_desk_address(ctx.rt, addr)


def _withheld(ctx: Context) -> bool:
    """Whether the acknowledgement must hold back what the mail said."""
    return not ctx.passed_authentication().passed and Policy.of(ctx.cfg.security).has_trusted_servers


def _notify_new(ctx: Context, t: Ticket, pri: Priority, cat: Decision) -> None:
    context = {"priority_why": pri.why, "category_why": cat.why, "message": ctx.message,
               "author": ctx.sender or t.requester, "auth_warning": ctx.auth_warning, "reply_to_note": reply_to_note(ctx),
               "cites": ctx.rt.ref(ctx.cites) if ctx.cites is not None else ""}
    staff = routing.staff_recipients(ctx.rt, t)
    why_not = kb.may_offer(ctx.cfg, sender=ctx.sender, automatic=ctx.automatic is not None, is_major=t.is_major,
                           passed_authentication=ctx.passed_authentication().passed)
    lookup = _look_up(ctx, t, staff, offering=why_not is None)
    if ctx.automatic is not None:
        ctx.decide(f"no acknowledgement: {ctx.automatic.kind} mail")
    elif not ctx.sender:
        ctx.decide(f"no acknowledgement: the sender is ambiguous ({ctx.mail.sender_problem})")
    elif ctx.logged_for:
        # the caller never saw the technician's mail: a thread of its own, and no count
        # against the limits of automatic replies
        by = ctx.cfg.technician(ctx.sender)
        ctx.send("ack", t.requester, ticket=t, thread=Thread(), automatic=False,
                 context=context | {"logged_by": by.display_name if by else ctx.sender})
    elif _withheld(ctx):
        # docs/mail.md, Floods: to a sender whose mail did not pass authentication, the
        # reference only; never the subject or text (nor the display name) an attacker
        # wrote, reflected to the address they forged
        ctx.decide("the mail did not pass authentication: its acknowledgement carries the reference, "
                   "not the subject or text, and goes to the sender alone")
        if why_not is not None:
            ctx.decide(f"knowledge base: no article offered: {why_not}")
        shown = {k: v for k, v in snapshot(t).items() if k in ("id", "status", "priority", "response_due", "resolution_due")}
        ctx.send("ack", t.requester, ticket=t, context={"withheld": True, "ticket": shown},
                 thread=Thread.after(ctx.mail.message_id, ctx.mail.references))

    else:
        ctx.send("ack", t.requester, rcpt_name=t.requester_name, ticket=t,
                 context=context | {"suggestions": _offer(ctx, t, lookup, why_not)},
                 thread=Thread.after(ctx.mail.message_id, ctx.mail.references))
    fixes = kb.known_fixes(ctx.rt, lookup)
    for rcpt in staff:
        ctx.send("assigned", rcpt, ticket=t, context=context | fixes, thread=Thread())


# --- known fixes (docs/mail.md, Knowledge base) ------------------------------------------------------


def _look_up(ctx: Context, t: Ticket, staff: list[str], offering: bool) -> kb.Lookup:
    """One search for the acknowledgement's offers and the assignment notice's list."""
    cfg = ctx.cfg.kb
    articles = max(cfg.suggest_in_ack if offering else 0, cfg.similar_in_notice if staff else 0)
    lookup = kb.look_up(ctx.rt, t, ctx.mail.subject, ctx.mail.reply_text, articles=articles,
                        tickets=cfg.similar_in_notice if staff else 0)
    if staff and (lookup.articles or lookup.tickets):
        listed = [kb.ref(m.id) for m in lookup.articles[: cfg.similar_in_notice]] + [ctx.rt.ref(m.id) for m in lookup.tickets]
        ctx.decide(f"knowledge base: the assignment notice lists {', '.join(listed)}")
    return lookup


def _offer(ctx: Context, t: Ticket, lookup: kb.Lookup, why_not: str | None) -> list[dict]:
    """The articles the acknowledgement offers: an explained decision on the ticket."""
    if why_not is not None:
        ctx.decide(f"knowledge base: no article offered: {why_not}")
        return []
    chosen = lookup.articles[: ctx.cfg.kb.suggest_in_ack]
    if not chosen:
        ctx.decide(f"knowledge base: no article offered: none scores kb.min_score = {ctx.cfg.kb.min_score} or more")
        return []
    ctx.event("kb-suggested", "offered " + "; ".join(m.why(kb.ref(m.id)) for m in chosen)
              + f" (kb.min_score = {ctx.cfg.kb.min_score})", actor="desk")
    return kb.offers(ctx.rt, t, chosen, t.requester, ctx.now)
