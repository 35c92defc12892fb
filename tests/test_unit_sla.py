"""maildesk.desk.sla and maildesk.desk.sweep: due times in the policy's calendar, the
marks of each target, the clock's pauses, and the sweep that fires each due mark once
(DESIGN section 5, guarantee 6), on a real SQLite store without mail servers."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from maildesk.desk import sla, sweep
from maildesk.desk.sla import Mark
from maildesk.store import Event, Outbox, SlaMark, Ticket
from tests.builders import ticket_row

BERLIN = ZoneInfo("Europe/Berlin")
SLA = [
    {"priority": "critical", "response": "15m", "resolution": "4h", "calendar": "24x7"},
    {"priority": "high", "response": "30m", "resolution": "2h", "calendar": "business"},
    {"priority": "medium", "response": "1h", "resolution": "8h", "calendar": "business"},
    {"priority": "low", "response": "1d", "resolution": "5d", "calendar": "business"},
    {"priority": "medium", "response": "2h", "resolution": "2d", "calendar": "business", "category": "Network"},
]


def at(hhmm: str, day: str = "2026-11-30") -> dt.datetime:
    """Berlin time; 30 November 2026 is a Monday."""
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=BERLIN)


@pytest.fixture
def rt(runtime):
    return runtime(sla=SLA)


# --- due times ---------------------------------------------------------------------------


@pytest.mark.parametrize("opened,priority,category,response,resolution", [
    (at("10:00"), "medium", "Hardware", at("11:00"), at("10:00", "2026-12-01")),
    (at("16:30", "2026-11-27"), "medium", "Hardware", at("09:30"), at("16:30")),  # Friday: Monday morning
    (at("16:30", "2026-11-27"), "critical", "Hardware", at("16:45", "2026-11-27"), at("20:30", "2026-11-27")),  # 24x7
    (at("07:00"), "high", "Hardware", at("09:30"), at("11:00")),  # before opening: from 09:00
    (at("10:00"), "medium", "Network/VPN", at("12:00"), at("10:00", "2026-12-02")),  # the parent category's policy
    (at("10:00"), "low", "Hardware", at("10:00", "2026-12-01"), at("10:00", "2026-12-07")),  # a day is a working day
])
def test_due_times_are_counted_from_creation_in_the_calendar_of_the_policy(rt, opened, priority, category,
                                                                           response, resolution):
    t = ticket_row(rt, opened, priority=priority, category=category)
    assert (t.response_due, t.resolution_due) == (response, resolution)


def test_the_policy_label_names_the_policy_applied(rt):
    assert ticket_row(rt, at("10:00")).sla_policy == "medium"


def test_time_on_hold_moves_the_resolution_target_but_not_the_response_target(rt):
    t = ticket_row(rt, at("10:00"))
    t.paused_minutes = 90
    sla.apply_policy(rt, t, at("12:00"))
    assert (t.response_due, t.resolution_due) == (at("11:00"), at("11:30", "2026-12-01"))


# --- marks --------------------------------------------------------------------------------


def test_each_target_has_a_reminder_at_warn_at_a_breach_and_a_second_level(rt):
    t = ticket_row(rt, at("10:00"))
    assert sla.marks(rt, t) == [
        Mark("response", "warn", at("10:45")),  # escalation.warn_at 0.75 of 1h
        Mark("response", "breach", at("11:00")),
        Mark("response", "level2", at("12:00")),  # still unmet after a second period
        Mark("resolution", "warn", at("16:00")),  # 0.75 of 8 business hours
        Mark("resolution", "breach", at("10:00", "2026-12-01")),
        Mark("resolution", "level2", at("10:00", "2026-12-01")),
    ]
    assert t.sla_next_at == at("10:45")


def test_a_first_response_ends_the_response_marks_and_a_pause_the_resolution_marks(rt):
    t = ticket_row(rt, at("10:00"))
    sla.record_first_response(rt, t, at("10:30"), "reply", "alice@example.test")
    assert {m.target for m in sla.marks(rt, t)} == {"resolution"}
    assert t.sla_next_at == at("16:00")
    sla.pause(rt, t, at("11:00"), "alice@example.test", "on-hold")
    assert sla.marks(rt, t) == [] and t.sla_next_at is None


def test_a_paused_resolution_clock_keeps_its_reminder_where_the_pause_puts_it(rt):
    t = ticket_row(rt, at("10:00"))
    sla.record_first_response(rt, t, at("10:30"), "reply", "alice@example.test")
    sla.pause(rt, t, at("11:00"), "alice@example.test", "on-hold")
    sla.resume(rt, t, at("14:00"), "alice@example.test", "in-progress")
    assert t.sla_next_at == at("11:00", "2026-12-01")  # 16:00 + 3 business hours: Tuesday 11:00


@pytest.mark.parametrize("status", ["resolved", "closed", "cancelled"])
def test_a_ticket_nobody_works_on_has_no_marks(rt, status):
    t = ticket_row(rt, at("10:00"), status=status)
    assert sla.marks(rt, t) == [] and t.sla_next_at is None


def test_the_next_mark_is_the_earliest_that_has_not_fired(rt):
    t = ticket_row(rt, at("10:00"))
    assert sla.next_mark_time(rt, t, fired={("response", "warn")}) == at("11:00")
    assert sla.next_mark_time(rt, t, fired={("response", "warn"), ("response", "breach"), ("response", "level2"),
                                            ("resolution", "warn"), ("resolution", "breach"),
                                            ("resolution", "level2")}) is None


def test_the_first_response_is_recorded_once_and_says_whether_it_was_in_time(rt):
    t = ticket_row(rt, at("10:00"))
    assert sla.record_first_response(rt, t, at("11:30"), "relay", "alice@example.test") is True
    assert sla.record_first_response(rt, t, at("11:45"), "relay", "bob@example.test") is False
    assert t.first_response_at == at("11:30")
    details = [e.detail for e in Event.select().where(Event.ticket == t.id, Event.kind == "sla-response")]
    assert details == ["first response by relay; response target missed"]


def test_pausing_twice_and_resuming_an_unpaused_clock_change_nothing(rt):
    t = ticket_row(rt, at("10:00"))
    sla.resume(rt, t, at("10:30"), "alice@example.test", "nothing to resume")
    sla.pause(rt, t, at("11:00"), "alice@example.test", "on-hold")
    sla.pause(rt, t, at("12:00"), "alice@example.test", "on-hold again")
    assert t.paused_at == at("11:00")
    sla.resume(rt, t, at("12:00"), "alice@example.test", "in-progress")
    assert t.paused_minutes == 60
    kinds = [e.kind for e in Event.select().where(Event.ticket == t.id).order_by(Event.id)]
    assert kinds == ["sla-paused", "sla-resumed"]


def test_paused_time_outside_business_hours_does_not_count(rt):
    t = ticket_row(rt, at("16:00", "2026-11-27"))  # Friday
    sla.pause(rt, t, at("16:30", "2026-11-27"), "alice@example.test", "on-hold")
    sla.resume(rt, t, at("09:15"), "alice@example.test", "in-progress")  # Monday
    assert t.paused_minutes == 45
    detail = Event.select().where(Event.ticket == t.id, Event.kind == "sla-resumed").get().detail
    assert detail == ("resolution clock resumed (in-progress) after 45 business minutes of paused time; resolution "
                      "due moved from 2026-11-30 16:00 CET to 2026-11-30 16:45 CET")


def test_the_due_times_are_described_in_the_desks_time_zone(rt):
    t = ticket_row(rt, at("10:00"))
    assert sla.describe_due(rt, t) == (
        "policy medium: response due 2026-11-30 11:00 CET, resolution due 2026-12-01 10:00 CET")


# --- the sweep ---------------------------------------------------------------------------


def sweep_at(rt, when: dt.datetime) -> int:
    rt.begin_cycle()
    return sweep.sweep(rt, when)


def fired(t) -> list[tuple[str, str]]:
    return sorted(SlaMark.select(SlaMark.target, SlaMark.level).where(SlaMark.ticket == t.id).tuples())


def test_the_sweep_reads_only_tickets_with_a_mark_due_earliest_first(rt):
    late = ticket_row(rt, at("10:00"))
    early = ticket_row(rt, at("09:00"))
    ticket_row(rt, at("10:00"), status="resolved")
    ticket_row(rt, at("10:30"))
    assert sweep.due_ticket_ids(at("10:50")) == [early.id, late.id]
    assert sweep.due_ticket_ids(at("10:50"), limit=1) == [early.id]
    assert sweep.due_ticket_ids(at("09:00")) == []


def test_a_due_mark_fires_once_whatever_the_sweeps_and_restarts(rt, runtime):
    t = ticket_row(rt, at("10:00"), assignee="alice@example.test")
    assert sweep_at(rt, at("10:44")) == 0
    assert sweep_at(rt, at("10:45")) == 1
    assert sweep_at(rt, at("10:46")) == 0
    assert sweep_at(runtime(sla=SLA), at("10:50")) == 0  # a restart: a new runtime on the same store
    assert fired(t) == [("response", "warn")]
    assert Ticket.get_by_id(t.id).sla_next_at == at("11:00")
    (reminder,) = Outbox.select().where(Outbox.ticket == t.id)
    assert (reminder.kind, reminder.rcpt) == ("reminder", "alice@example.test")


def test_every_mark_due_after_downtime_fires_once_in_time_order(rt):
    t = ticket_row(rt, at("10:00"), assignee="alice@example.test")
    first = sweep_at(rt, at("13:00"))
    assert first >= 1 and sweep_at(rt, at("13:00")) == 0
    assert ("response", "level2") in fired(t) and ("resolution", "warn") not in fired(t)
    assert Ticket.get_by_id(t.id).sla_next_at == at("16:00")


def test_a_ticket_that_stopped_meanwhile_fires_nothing_and_leaves_the_sweep(rt):
    t = ticket_row(rt, at("10:00"))
    Ticket.update(status="resolved").where(Ticket.id == t.id).execute()  # sla_next_at left behind
    assert sweep_at(rt, at("12:00")) == 0
    assert fired(t) == [] and Ticket.get_by_id(t.id).sla_next_at is None
    assert sweep.due_ticket_ids(at("12:00")) == []
