"""Who gets a ticket: the assignment strategies of `[assignment]` and who is away.

`round_robin` keeps a pointer per group in the database, so that the turn survives
restarts, and moves it atomically, so that desk processes sharing a PostgreSQL
database take turns too (store.claims.take_turn); `least_loaded` counts open tickets, ties going to whoever waited longest
since their last assignment; `none` leaves the ticket in the group's queue.
A technician is away while `away_until` (config) has not come, or for
`assignment.away_after_autoreply` after their own out-of-office reply reached us.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from peewee import fn

from .. import store
from ..config import Technician
from ..store import StaffState, Ticket, claims
from ..vocab import ACTIVE

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service.runtime import Runtime


def away_reason(rt: Runtime, tech: Technician, now: dt.datetime) -> str | None:
    if tech.away_until:
        back = dt.datetime.combine(tech.away_until, dt.time(0), tzinfo=rt.cfg.desk.timezone)
        if now < back:
            return f"away until {tech.away_until} (config)"
    state = _staff(rt).get(tech.email)
    if state and state.away_until and state.away_until > now:
        return f"out of office until {state.away_until.astimezone(rt.cfg.desk.timezone):%Y-%m-%d %H:%M} (auto-reply)"
    return None


def _staff(rt: Runtime) -> dict[str, StaffState]:
    """Who is away and who was last assigned, read once per cycle."""
    if "staff" not in rt.memo:
        rt.memo["staff"] = {s.email: s for s in StaffState.select()}
    return rt.memo["staff"]


def staff_recipients(rt: Runtime, ticket: Ticket) -> list[str]:
    """Who hears of a ticket: its assignee, else every member of its group."""
    if ticket.assignee:
        return [ticket.assignee]
    return [t.email for t in rt.cfg.members(ticket.group)]


def strategy_of(rt: Runtime, group: str | None) -> str:
    g = rt.cfg.group(group)
    return (g.strategy if g and g.strategy else None) or rt.cfg.assignment.strategy


def pick_assignee(rt: Runtime, group: str | None, now: dt.datetime, exclude=()) -> tuple[Technician | None, str]:
    """The technician the group's strategy picks, and why (for the ticket's history)."""
    strategy = strategy_of(rt, group)
    if strategy == "none" or not group:
        return None, f"strategy {strategy}: left in the {group or 'desk'} queue"
    members = rt.cfg.members(group)
    skipped = []
    available = []
    for t in members:
        reason = away_reason(rt, t, now)
        if reason:
            skipped.append(f"{t.display_name} {reason}")
        elif t.email not in exclude:
            available.append(t)
    note = f"; skipped {', '.join(skipped)}" if skipped else ""
    if not available:
        return None, f"no available technician in {group}{note}"
    if strategy == "least_loaded":
        chosen = _least_loaded(rt, available)
        return chosen, f"least loaded in {group}{note}"
    chosen = _round_robin(group, members, available)
    return chosen, f"round robin in {group}{note}"


def _round_robin(group: str, members: list[Technician], available: list[Technician]) -> Technician:
    order = [t.email for t in members]
    free = {t.email for t in available}

    def after(last: str | None) -> str:
        start = order.index(last) + 1 if last in order else 0
        return next((e for i in range(len(order)) if (e := order[(start + i) % len(order)]) in free), available[0].email)

    email = claims.take_turn(f"rr:{group}", after)
    return next(t for t in available if t.email == email)


def _least_loaded(rt: Runtime, available: list[Technician]) -> Technician:
    emails = [t.email for t in available]
    loads: dict[str, int] = dict(cast(
        "Iterable[tuple[str, int]]",
        Ticket.select(Ticket.assignee, fn.COUNT(Ticket.id))
        .where(Ticket.assignee.in_(emails) & Ticket.status.in_(ACTIVE))
        .group_by(Ticket.assignee)
        .tuples()
    ))
    staff = _staff(rt)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

    def last(email):
        s = staff.get(email)
        return (s.last_assigned_at if s else None) or epoch

    return min(available, key=lambda t: (loads.get(t.email, 0), last(t.email), emails.index(t.email)))


def _upsert_staff(rt: Runtime, email: str, field: str, value: dt.datetime, at_once: bool = False) -> None:
    (claims.write_at_once if at_once else store.execute)(
        f'INSERT INTO "staff_state" ("email", "{field}") VALUES (?, ?) '
        f'ON CONFLICT ("email") DO UPDATE SET "{field}" = excluded."{field}"',
        (email, StaffState.away_until.db_value(value)))
    state = _staff(rt).setdefault(email, StaffState(email=email))
    setattr(state, field, value)


def note_assignment(rt: Runtime, email: str, now: dt.datetime) -> None:
    # at once: another desk process assigning the same technician must not wait for this batch
    _upsert_staff(rt, email, "last_assigned_at", now, at_once=True)


def mark_away(rt: Runtime, email: str, until: dt.datetime) -> None:
    _upsert_staff(rt, email, "away_until", until)
