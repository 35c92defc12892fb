"""KPIs (DESIGN section 7): volumes, backlog, response and resolution times in
business minutes of each ticket's own SLA calendar, SLA compliance, first-contact
resolution, reopens, escalations and surveys, overall and by category, group and
technician.

Definitions where the contract is silent:
- first-contact resolution: a resolved ticket whose resolution was the first
  technician mail the requester got (no earlier public reply) and that was never
  reopened;
- SLA compliance counts a target as missed when it was met late or is still unmet
  after its due time; targets still running in time are not counted yet;
- self-service resolutions are the tickets resolved with closure code `self-service`
  (the requester's "this solved it" click on an offered article); the deflection rate
  is their share of the tickets opened; an article's uses are its clicks of all time,
  and in the period those on tickets opened in it.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict

from ..store import KbArticle, KbOffer, Message, Survey, Ticket, utcnow
from ..vocab import ACTIVE, CLOSURE_SELF_SERVICE


def _calendar(rt, t: Ticket):
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


def _kpis(rt, tickets: list[Ticket], replies_before: dict, surveys: dict, now: dt.datetime) -> dict:
    first, resolution = [], []
    resp_met = resp_missed = res_met = res_missed = 0
    fcr = reopened = escalations = 0
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
        if t.resolved_at and not t.reopen_count and replies_before.get(t.id, 0) == 0:
            fcr += 1
        reopened += t.reopen_count > 0
        escalations += t.escalation_count
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
        "escalations": escalations,
        "self_service_resolutions": self_service,
        "deflection_rate": _rate(self_service, len(tickets)),
        "surveys_sent": len(sent),
        "survey_response_rate": _rate(len(answered), len(sent)),
        "survey_mean_rating": round(statistics.fmean(s.rating for s in answered), 2) if answered else None,
    }


def build(rt, since: dt.datetime | None = None, now: dt.datetime | None = None,
          until: dt.datetime | None = None) -> dict:
    """The KPIs of the tickets created in [since, until), measured at `now` (a target
    still open at `now` and past due counts as missed)."""
    now = now or utcnow()
    q = Ticket.select()
    if since:
        q = q.where(Ticket.created_at >= since)
    if until:
        q = q.where(Ticket.created_at < until)
    tickets = list(q)
    ids = [t.id for t in tickets]
    surveys = {s.ticket_id: s for s in Survey.select().where(Survey.ticket.in_(ids))} if ids else {}
    # public technician replies sent before the resolution: 0 means resolved at first contact
    replies_before: dict[int, int] = defaultdict(int)
    if ids:
        resolved_at = {t.id: t.resolved_at for t in tickets}
        for tid, at in (Message.select(Message.ticket, Message.created_at)
                        .where(Message.ticket.in_(ids) & (Message.direction == "out") & (Message.kind == "reply")).tuples()):
            if resolved_at.get(tid) and at < resolved_at[tid]:
                replies_before[tid] += 1
    backlog: dict = defaultdict(lambda: defaultdict(int))
    for t in Ticket.select(Ticket.status, Ticket.priority).where(Ticket.status.in_(ACTIVE)):
        backlog[t.status][t.priority] += 1
    out = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "generated_at": now.astimezone(rt.cfg.desk.timezone).isoformat(timespec="seconds"),
        "opened": len(tickets),
        "resolved": sum(1 for t in tickets if t.resolved_at or t.status in ("resolved", "closed")),
        "closed": sum(1 for t in tickets if t.status == "closed"),
        "backlog": {s: dict(p) for s, p in backlog.items()},
        "overall": _kpis(rt, tickets, replies_before, surveys, now),
    }
    out["knowledge_base"] = _knowledge_base(ids)
    for key, attr in (("by_category", "category"), ("by_group", "group"), ("by_technician", "assignee")):
        groups: dict = defaultdict(list)
        for t in tickets:
            groups[getattr(t, attr) or "(none)"].append(t)
        out[key] = {name: _kpis(rt, ts, replies_before, surveys, now) for name, ts in sorted(groups.items())}
    return out


def _knowledge_base(ids: list[int]) -> dict:
    """Articles offered and taken on the period's tickets, and each article's uses."""
    period: dict = defaultdict(lambda: [0, 0])
    tickets_offered = set()
    for article_id, ticket_id, taken in (KbOffer.select(KbOffer.article, KbOffer.ticket, KbOffer.taken_at)
                                         .where(KbOffer.ticket.in_(ids)).tuples() if ids else ()):
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


def as_text(r: dict) -> str:
    o = r["overall"]
    lines = [
        f"maildesk report{' since ' + r['since'][:10] if r['since'] else ''} (generated {r['generated_at']})",
        "",
        f"Tickets opened {r['opened']}, resolved {r['resolved']}, closed {r['closed']}",
        "Backlog: " + (", ".join(f"{s} {sum(p.values())} ({', '.join(f'{k} {v}' for k, v in p.items())})"
                                 for s, p in r["backlog"].items()) or "none"),
        f"Time to first response: {_minutes(o['time_to_first_response'])} (business time)",
        f"Time to resolution:     {_minutes(o['time_to_resolution'])} (business time)",
        f"SLA compliance: response {_fmt(o['sla_response_compliance'])}, resolution {_fmt(o['sla_resolution_compliance'])}",
        f"First-contact resolution {_fmt(o['first_contact_resolution_rate'])}, reopen rate {_fmt(o['reopen_rate'])}, "
        f"escalations {o['escalations']}",
        f"Surveys sent {o['surveys_sent']}, response rate {_fmt(o['survey_response_rate'])}, "
        f"mean rating {o['survey_mean_rating'] if o['survey_mean_rating'] is not None else '-'}",
        f"Self-service: {o['self_service_resolutions']} resolved by a knowledge-base article, "
        f"deflection rate {_fmt(o['deflection_rate'])}; articles offered on {r['knowledge_base']['tickets_offered_articles']} "
        f"ticket(s)",
    ]
    articles = r["knowledge_base"]["articles"]
    if articles:
        lines += ["", "Knowledge base: each article's uses of all time; on this period's tickets, offered and taken"]
        for a in articles:
            lines.append(f"  {a['ref']:<7} uses {a['use_count']:>4}  offered {a['offered_in_period']:>4}  "
                         f"taken {a['used_in_period']:>4}  {a['title'][:60]}{'  [retired]' if a['retired'] else ''}")
    for key, title in (("by_category", "By category"), ("by_group", "By group"), ("by_technician", "By technician")):
        lines += ["", title]
        for name, k in r[key].items():
            lines.append(
                f"  {name:<24} tickets {k['tickets']:>4}  SLA resp {_fmt(k['sla_response_compliance']):>4}  "
                f"res {_fmt(k['sla_resolution_compliance']):>4}  FCR {_fmt(k['first_contact_resolution_rate']):>4}  "
                f"esc {k['escalations']:>3}  rating {k['survey_mean_rating'] if k['survey_mean_rating'] is not None else '-'}"
            )
    return "\n".join(lines)
