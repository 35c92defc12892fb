"""KPIs (docs/kpis.md): volumes, backlog, response and resolution times in business
minutes of each ticket's own SLA calendar, SLA compliance overall and per priority,
the list of missed targets, first-contact resolution, reopens, escalations and
surveys; by category, group and technician. `maildesk report` prints them; the
weekly job (jobs.weekly_report) mails them to the process owners.

Definitions:
- a period is the tickets *created* in [since, until); `now` is the clock the report
  measures against (a target still open and past due at `now` counts as missed;
  targets still running in time are not counted yet);
- first-contact resolution: a resolved ticket resolved by its first assignee, never
  escalated, reassigned or reopened, with no public technician reply before the
  resolution;
- escalations: one per ticket, target and level (functional or hierarchical; a
  technician's `#escalate` is a functional escalation of target "manual");
- self-service resolutions are the tickets resolved with closure code `self-service`
  (the requester's "this solved it" click on an offered article); the deflection rate
  is their share of the tickets opened; an article's uses are its clicks of all time,
  and in the period those on tickets opened in it;
- a technician is credited with the tickets they resolved, and charged with the
  targets missed while they held the ticket (the assignee when the breach mark
  fired, else the assignee at the time of the report).
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from ..store import Event, KbArticle, KbOffer, Message, SlaMark, Survey, Ticket, utcnow
from ..vocab import ACTIVE, CLOSURE_SELF_SERVICE, PRIORITIES

if TYPE_CHECKING:
    from ..service.runtime import Runtime


def _calendar(rt: Runtime, t: Ticket):
    try:
        return rt.calendar(rt.cfg.sla_for(t.priority, t.category).calendar)
    except StopIteration:
        return rt.calendar("24x7")


def _stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "mean_minutes": None, "median_minutes": None}
    return {"count": len(values), "mean_minutes": round(statistics.fmean(values), 1),
            "median_minutes": round(statistics.median(values), 1)}


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 3) if d else None


def _target(done_at, due, status: str, now: dt.datetime) -> tuple[int, int]:
    """(met, missed) for one SLA target: met in time, met late or still open past due."""
    if due is None:
        return 0, 0
    if done_at is not None:
        return int(done_at <= due), int(done_at > due)
    return 0, int(now > due and status in ACTIVE)


class _History:
    """What the report reads from the tickets' events, once for the whole period."""

    def __init__(self, ids: list[int]):
        self.resolver: dict[int, str] = {}
        self.assignees: dict[int, list[str]] = defaultdict(list)
        self.escalations: dict[int, set[tuple[str, str]]] = defaultdict(set)
        if not ids:
            return
        rows = (Event.select(Event.ticket, Event.actor, Event.kind, Event.detail)
                .where(Event.ticket.in_(ids) & Event.kind.in_(("assigned", "resolved", "escalated")))
                .order_by(Event.at, Event.id).tuples())
        for tid, actor, kind, detail in cast("Iterable[tuple[int, str, str, str]]", rows):
            if kind == "resolved" and detail.startswith("resolved with code") and tid not in self.resolver:
                self.resolver[tid] = actor
            elif kind == "assigned":
                m = re.search(r"-> (\S+@\S+?)(?: \(|$)", detail)
                if m and (not self.assignees[tid] or self.assignees[tid][-1] != m.group(1)):
                    self.assignees[tid].append(m.group(1))
            elif kind == "escalated":
                level = "hierarchical" if detail.startswith("hierarchical") else "functional"
                target = next((w for w in ("response", "resolution") if f"{w} target" in detail), "manual")
                self.escalations[tid].add((target, level))

    def first_contact(self, t: Ticket, replies_before: int) -> bool:
        if not t.resolved_at or t.reopen_count or t.escalation_count or self.escalations.get(t.id) or replies_before:
            return False
        assignees = self.assignees.get(t.id, [])
        resolver = self.resolver.get(t.id)
        return len(assignees) <= 1 and (not assignees or resolver is None or resolver == assignees[0])


def _kpis(rt: Runtime, tickets: list[Ticket], replies_before: dict, surveys: dict, history: _History,
          now: dt.datetime) -> dict:
    first, resolution = [], []
    resp_met = resp_missed = res_met = res_missed = 0
    fcr = reopened = 0
    resolved = [t for t in tickets if t.resolved_at or t.status in ("resolved", "closed")]
    for t in tickets:
        cal = _calendar(rt, t)
        if t.first_response_at:
            first.append(cal.between(t.created_at, t.first_response_at))
        if t.resolved_at:
            resolution.append(cal.between(t.created_at, t.resolved_at) - (t.paused_minutes or 0))
        met, missed = _target(t.first_response_at, t.response_due, t.status, now)
        resp_met, resp_missed = resp_met + met, resp_missed + missed
        met, missed = _target(t.resolved_at, t.resolution_due, t.status, now)
        res_met, res_missed = res_met + met, res_missed + missed
        fcr += history.first_contact(t, replies_before.get(t.id, 0))
        reopened += t.reopen_count > 0
    escalations = [e for t in tickets for e in history.escalations.get(t.id, ())]
    self_service = sum(1 for t in tickets if t.closure_code == CLOSURE_SELF_SERVICE)
    sent = [surveys[t.id] for t in tickets if t.id in surveys]
    answered = [s for s in sent if s.rating is not None]
    return {
        "tickets": len(tickets),
        "time_to_first_response": _stats(first),
        "time_to_resolution": _stats([max(0.0, r) for r in resolution]),
        "sla_response_compliance": _rate(resp_met, resp_met + resp_missed),
        "sla_resolution_compliance": _rate(res_met, res_met + res_missed),
        "first_contact_resolution_rate": _rate(fcr, len(resolved)),
        "reopen_rate": _rate(reopened, len(resolved)),
        "escalations": len(escalations),
        "escalated_tickets": sum(1 for t in tickets if history.escalations.get(t.id)),
        "escalations_functional": sum(1 for _, level in escalations if level == "functional"),
        "escalations_hierarchical": sum(1 for _, level in escalations if level == "hierarchical"),
        "self_service_resolutions": self_service,
        "deflection_rate": _rate(self_service, len(tickets)),
        "surveys_sent": len(sent),
        "survey_response_rate": _rate(len(answered), len(sent)),
        "survey_mean_rating": round(statistics.fmean(s.rating for s in answered), 2) if answered else None,
    }


def _missed_targets(rt: Runtime, tickets: list[Ticket], now: dt.datetime) -> list[dict]:
    """Every target missed in the period, with who held the ticket when it was missed."""
    ids = [t.id for t in tickets]
    rows = (SlaMark.select(SlaMark.ticket, SlaMark.target, SlaMark.group, SlaMark.assignee)
            .where(SlaMark.ticket.in_(ids) & (SlaMark.level == "breach")).tuples()) if ids else []
    marks = {(tid, target): (group, assignee) for tid, target, group, assignee in
             cast("Iterable[tuple[int, str, str | None, str | None]]", rows)}
    tz = rt.cfg.desk.timezone
    out = []
    for t in tickets:
        for target, done, due in (("response", t.first_response_at, t.response_due),
                                  ("resolution", t.resolved_at, t.resolution_due)):
            if _target(done, due, t.status, now)[1]:
                group, holder = marks.get((t.id, target), (t.group, t.assignee))
                out.append({"ref": rt.ref(t), "target": target, "priority": t.priority,
                            "due": due.astimezone(tz).isoformat(timespec="minutes"),
                            "met_at": done.astimezone(tz).isoformat(timespec="minutes") if done else None,
                            "held_by": holder or t.assignee, "group": group or t.group})
    return out


def build(rt: Runtime, since: dt.datetime | None = None, now: dt.datetime | None = None,
          until: dt.datetime | None = None) -> dict:
    """The KPIs of the tickets created in [since, until), measured at `now`."""
    now = now or utcnow()
    q = Ticket.select()
    if since:
        q = q.where(Ticket.created_at >= since)
    if until:
        q = q.where(Ticket.created_at < until)
    tickets = list(q.order_by(Ticket.id))
    ids = [t.id for t in tickets]
    surveys = {s.ticket_id: s for s in Survey.select().where(Survey.ticket.in_(ids))} if ids else {}
    # public technician replies sent before the resolution: any means not resolved at first contact
    replies_before: dict[int, int] = defaultdict(int)
    if ids:
        resolved_at = {t.id: t.resolved_at for t in tickets}
        replies = (Message.select(Message.ticket, Message.created_at)
                   .where(Message.ticket.in_(ids) & (Message.direction == "out") & (Message.kind == "reply")).tuples())
        for tid, at in cast("Iterable[tuple[int, dt.datetime]]", replies):
            if resolved_at.get(tid) and at < resolved_at[tid]:
                replies_before[tid] += 1
    history = _History(ids)
    backlog: dict = defaultdict(lambda: defaultdict(int))
    for t in Ticket.select(Ticket.status, Ticket.priority).where(Ticket.status.in_(ACTIVE)):
        backlog[t.status][t.priority] += 1
    missed = _missed_targets(rt, tickets, now)

    def kpis(ts: list[Ticket]) -> dict:
        return _kpis(rt, ts, replies_before, surveys, history, now)

    tz = rt.cfg.desk.timezone
    out = {
        "since": since.astimezone(tz).isoformat() if since else None,
        "until": until.astimezone(tz).isoformat() if until else None,
        "generated_at": now.astimezone(tz).isoformat(timespec="seconds"),
        "opened": len(tickets),
        "resolved": sum(1 for t in tickets if t.resolved_at or t.status in ("resolved", "closed")),
        "closed": sum(1 for t in tickets if t.status == "closed"),
        "backlog": {s: dict(p) for s, p in backlog.items()},
        "overall": kpis(tickets),
        "by_priority": {p: kpis(ts) for p in PRIORITIES if (ts := [t for t in tickets if t.priority == p])},
        "missed_targets": missed,
        "knowledge_base": _knowledge_base(ids),
    }
    for key, attr in (("by_category", "category"), ("by_group", "group")):
        groups: dict = defaultdict(list)
        for t in tickets:
            groups[getattr(t, attr) or "(none)"].append(t)
        out[key] = {name: kpis(ts) for name, ts in sorted(groups.items())}
    out["by_technician"] = _by_technician(rt, tickets, history, missed, kpis)
    return out


def _knowledge_base(ids: list[int]) -> dict:
    """Articles offered and taken on the period's tickets, and each article's uses."""
    period: dict = defaultdict(lambda: [0, 0])
    tickets_offered = set()
    rows = (KbOffer.select(KbOffer.article, KbOffer.ticket, KbOffer.taken_at)
            .where(KbOffer.ticket.in_(ids)).tuples()) if ids else []
    for article_id, ticket_id, taken in cast("Iterable[tuple[int, int, dt.datetime | None]]", rows):
        period[article_id][0] += 1
        period[article_id][1] += taken is not None
        tickets_offered.add(ticket_id)
    return {
        "tickets_offered_articles": len(tickets_offered),
        "articles": [
            {"number": a.id, "ref": f"KB-{a.id}", "title": a.title, "retired": a.retired, "use_count": a.use_count,
             "offered_in_period": period[a.id][0], "used_in_period": period[a.id][1]}
            for a in KbArticle.select().order_by(KbArticle.use_count.desc(), KbArticle.id)
        ],
    }


def _by_technician(rt: Runtime, tickets: list[Ticket], history: _History, missed: list[dict], kpis) -> dict:
    """Each technician's KPIs over the tickets they resolved, and the targets missed
    while they held a ticket."""
    resolved_by: dict = defaultdict(list)
    for t in tickets:
        who = history.resolver.get(t.id)
        if who and rt.cfg.technician(who):
            resolved_by[who].append(t)
    charged: dict = defaultdict(int)
    for m in missed:
        if m["held_by"]:
            charged[m["held_by"]] += 1
    out = {}
    for email in sorted(set(resolved_by) | set(charged)):
        row = kpis(resolved_by.get(email, []))
        row["resolved"] = len(resolved_by.get(email, []))
        row["targets_missed_while_held"] = charged.get(email, 0)
        out[email] = row
    return out


# --- as text ---------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v <= 1:
        return f"{v * 100:.0f}%"
    return str(v)


def _minutes(s: dict) -> str:
    if not s["count"]:
        return "-"
    return f"mean {s['mean_minutes']:.0f} min, median {s['median_minutes']:.0f} min (n={s['count']})"


def _period(r: dict) -> str:
    if r["since"] and r["until"]:
        return f" for tickets opened {r['since'][:10]} to {r['until'][:10]}"
    if r["since"]:
        return f" since {r['since'][:10]}"
    if r["until"]:
        return f" until {r['until'][:10]}"
    return ""


def as_text(r: dict) -> str:
    o = r["overall"]
    lines = [
        f"maildesk report{_period(r)} (as of {r['generated_at']})",
        "",
        f"Tickets opened {r['opened']}, resolved {r['resolved']}, closed {r['closed']}",
        "Backlog now: " + (", ".join(f"{s} {sum(p.values())} ({', '.join(f'{k} {v}' for k, v in p.items())})"
                                     for s, p in r["backlog"].items()) or "none"),
        f"Time to first response: {_minutes(o['time_to_first_response'])} (business time)",
        f"Time to resolution:     {_minutes(o['time_to_resolution'])} (business time)",
        f"SLA compliance: response {_fmt(o['sla_response_compliance'])}, resolution {_fmt(o['sla_resolution_compliance'])}",
        f"First-contact resolution {_fmt(o['first_contact_resolution_rate'])}, reopen rate {_fmt(o['reopen_rate'])}, "
        f"escalations {o['escalations']} ({o['escalations_functional']} functional, "
        f"{o['escalations_hierarchical']} hierarchical, on {o['escalated_tickets']} tickets)",
        f"Surveys sent {o['surveys_sent']}, response rate {_fmt(o['survey_response_rate'])}, "
        f"mean rating {o['survey_mean_rating'] if o['survey_mean_rating'] is not None else '-'}",
        f"Self-service: {o['self_service_resolutions']} resolved by a knowledge-base article, "
        f"deflection rate {_fmt(o['deflection_rate'])}; articles offered on "
        f"{r['knowledge_base']['tickets_offered_articles']} ticket(s)",
        "",
        "SLA compliance by priority",
    ]
    for p, k in r["by_priority"].items():
        lines.append(f"  {p:<10} tickets {k['tickets']:>4}  response {_fmt(k['sla_response_compliance']):>4}  "
                     f"resolution {_fmt(k['sla_resolution_compliance']):>4}")
    lines += ["", f"Missed targets ({len(r['missed_targets'])})"]
    for m in r["missed_targets"]:
        lines.append(f"  {m['ref']:<10} {m['target']:<10} {m['priority']:<8} due {m['due']}  "
                     f"{'met ' + m['met_at'] if m['met_at'] else 'still open'}  held by {m['held_by'] or 'nobody'}")
    articles = r["knowledge_base"]["articles"]
    if articles:
        lines += ["", "Knowledge base: each article's uses of all time; on this period's tickets, offered and taken"]
        for a in articles:
            lines.append(f"  {a['ref']:<7} uses {a['use_count']:>4}  offered {a['offered_in_period']:>4}  "
                         f"taken {a['used_in_period']:>4}  {a['title'][:60]}{'  [retired]' if a['retired'] else ''}")
    for key, title in (("by_category", "By category"), ("by_group", "By group")):
        lines += ["", title]
        for name, k in r[key].items():
            lines.append(
                f"  {name:<24} tickets {k['tickets']:>4}  SLA resp {_fmt(k['sla_response_compliance']):>4}  "
                f"res {_fmt(k['sla_resolution_compliance']):>4}  FCR {_fmt(k['first_contact_resolution_rate']):>4}  "
                f"esc {k['escalations']:>3}  rating {k['survey_mean_rating'] if k['survey_mean_rating'] is not None else '-'}"
            )
    lines += ["", "By technician (credited with what they resolved, charged with what they held when a target was missed)"]
    for name, k in r["by_technician"].items():
        lines.append(
            f"  {name:<24} resolved {k['resolved']:>4}  in time {_fmt(k['sla_resolution_compliance']):>4}  "
            f"FCR {_fmt(k['first_contact_resolution_rate']):>4}  missed while held {k['targets_missed_while_held']:>3}  "
            f"rating {k['survey_mean_rating'] if k['survey_mean_rating'] is not None else '-'}"
        )
    return "\n".join(lines)
