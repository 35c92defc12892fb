"""The SLA clock and escalations in business time, driven with `run --once --now`
(issue 4; DESIGN guarantee 6)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.builders import answer, open_ticket

FRIDAY_1630 = "2026-11-27T16:30:00+01:00"
JAM = {"subject": "Printer jam", "body": "The printer is jammed."}  # Hardware, medium: service-desk, alice

POLICIES = [
    {"priority": "critical", "response": "15m", "resolution": "4h", "calendar": "24x7"},
    {"priority": "high", "response": "30m", "resolution": "2h", "calendar": "business"},
    {"priority": "medium", "response": "1h", "resolution": "8h", "calendar": "business"},
    {"priority": "low", "response": "1d", "resolution": "5d", "calendar": "business"},
]


@pytest.fixture
def sla_desk(desk):
    desk.write_config(sla=POLICIES)
    return desk


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize("hours,mail,now,priority,response_due,resolution_due,assignee", [
    # Friday afternoon is due Monday morning; 8 business hours: 30 min on Friday, 7h30 on Monday
    ({}, JAM, FRIDAY_1630, "medium", "2026-11-30T09:30:00+01:00", "2026-11-30T16:30:00+01:00", "alice@example.test"),
    # a holiday of the config moves the due times a day
    ({"holidays": ["2026-11-30"]}, JAM, FRIDAY_1630, "medium",
     "2026-12-01T09:30:00+01:00", "2026-12-01T16:30:00+01:00", "alice@example.test"),
    # 2026-12-25 and 2026-12-26 are public holidays in Germany; 24 Dec is listed
    ({"holidays_country": "DE", "holidays": ["2026-12-24"]}, JAM, "2026-12-23T16:30:00+01:00", "medium",
     "2026-12-28T09:30:00+01:00", "2026-12-28T16:30:00+01:00", "alice@example.test"),
    # a critical ticket runs on the 24x7 calendar
    ({}, {"subject": "Outage: network down", "body": "Everyone is affected, network down."}, FRIDAY_1630, "critical",
     "2026-11-27T16:45:00+01:00", "2026-11-27T20:30:00+01:00", "carol@example.test"),
], ids=["friday-to-monday", "listed-holiday", "country-holidays", "critical-24x7"])
def test_due_times_run_on_the_calendar_of_the_policy_and_the_acknowledgement_states_them(
        sla_desk, hours, mail, now, priority, response_due, resolution_due, assignee):
    sla_desk.write_config(business_hours=hours)
    ack, notice = open_ticket(sla_desk, now=now, assignee=assignee, **mail)
    t = sla_desk.tickets()[0]
    assert t["priority"] == priority
    assert at(t["response_due"]) == at(response_due)
    assert at(t["resolution_due"]) == at(resolution_due)
    assert t["first_response_at"] is None
    for due in (response_due, resolution_due):
        assert f"{at(due):%a %d %b %Y %H:%M} CET" in ack.text


def test_the_first_public_reply_of_a_technician_meets_the_response_target(sla_desk):
    ack, notice = open_ticket(sla_desk, now="2026-11-30T10:00:00+01:00", **JAM)
    answer(sla_desk, notice, "I am on my way with a new drum.", now="2026-11-30T10:20:00+01:00")
    t = sla_desk.tickets()[0]
    assert at(t["first_response_at"]) == at("2026-11-30T10:20:00+01:00")
    assert any(e["kind"] == "sla-response" and "met" in e["detail"] for e in sla_desk.ticket("INC-1")["events"])


def test_on_hold_pauses_the_resolution_clock(sla_desk):
    ack, notice = open_ticket(sla_desk, now="2026-11-30T10:00:00+01:00", **JAM)
    t = sla_desk.tickets()[0]  # Monday 10:00 + 8 business hours: Tuesday 10:00
    assert at(t["resolution_due"]) == at("2026-12-01T10:00:00+01:00")
    answer(sla_desk, notice, "#status on-hold", now="2026-11-30T11:00:00+01:00")
    assert sla_desk.tickets()[0]["status"] == "on-hold"
    answer(sla_desk, notice, "#status in-progress", now="2026-11-30T14:00:00+01:00")  # 3 business hours on hold
    t = sla_desk.tickets()[0]
    assert t["status"] == "in-progress"
    assert at(t["resolution_due"]) == at("2026-12-01T13:00:00+01:00")
    kinds = [e["kind"] for e in sla_desk.ticket("INC-1")["events"]]
    assert "sla-paused" in kinds and "sla-resumed" in kinds


def test_a_priority_change_recomputes_both_targets_from_creation(sla_desk):
    ack, notice = open_ticket(sla_desk, now="2026-11-30T10:00:00+01:00", **JAM)
    answer(sla_desk, notice, "#priority high", now="2026-11-30T10:05:00+01:00")
    t = sla_desk.tickets()[0]
    assert t["priority"] == "high"
    assert at(t["response_due"]) == at("2026-11-30T10:30:00+01:00")
    assert at(t["resolution_due"]) == at("2026-11-30T12:00:00+01:00")


def test_reminder_then_escalations_fire_exactly_once_each(sla_desk):
    open_ticket(sla_desk, now="2026-11-30T10:00:00+01:00", **JAM)  # response due 11:00, resolution due Tue 10:00
    times = ["10:30", "10:46", "10:50", "11:01", "11:02", "11:30", "12:01", "12:05", "13:00"]
    for t in times:  # many cycles, each its own process-like run (a restart each time)
        sla_desk.run(now=f"2026-11-30T{t}:00+01:00")
    reminders = sla_desk.sent(subject_has="Reminder: response")
    assert len(reminders) == 1 and reminders[0].rcpts == ["alice@example.test"]
    escalated = sla_desk.sent(subject_has="Escalated")
    # level 1: to the network group's technician, and the previous assignee is told
    assert sorted(r for m in escalated for r in m.rcpts) == ["alice@example.test", "carol@example.test"]
    t = sla_desk.tickets()[0]
    assert t["group"] == "network" and t["assignee"] == "carol@example.test"
    level2 = sla_desk.sent(subject_has="ESCALATION")
    # level 2 at 12:00 (response unmet after a second period): the manager of the group that missed the
    # target (the service desk, which held it at 11:00; not the network group it was escalated to) and the
    # incident managers
    assert sorted(r for m in level2 for r in m.rcpts) == ["im@example.test", "lead@example.test"]
    assert "late" in level2[0].subject and "History" in level2[0].text
    for later in ("14:00", "15:00", "16:00"):
        sla_desk.run(now=f"2026-11-30T{later}:00+01:00")
    assert len(sla_desk.sent(subject_has="Reminder: response")) == 1
    assert len(sla_desk.sent(subject_has="ESCALATION")) == 2
    # resolution reminder at 75% of 8 business hours: Mon 16:00
    assert len(sla_desk.sent(subject_has="Reminder: resolution")) == 1


def test_a_ticket_resolved_in_time_gets_no_reminder(sla_desk):
    ack, notice = open_ticket(sla_desk, now="2026-11-30T10:00:00+01:00", **JAM)
    answer(sla_desk, notice, "#resolve fixed\nNew drum installed.", now="2026-11-30T10:20:00+01:00")
    for t in ("11:00", "12:00", "17:00"):
        sla_desk.run(now=f"2026-11-30T{t}:00+01:00")
    sla_desk.run(now="2026-12-02T10:00:00+01:00")
    assert not sla_desk.sent(subject_has="Reminder") and not sla_desk.sent(subject_has="Escalat")
