"""maildesk.desk.lifecycle: the status machine, assignment, resolution, closure and
the reopen window (DESIGN section 5), on a real SQLite store without mail."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from maildesk.desk import lifecycle
from maildesk.store import Event
from maildesk.vocab import Status
from tests.builders import ticket_row

BERLIN = ZoneInfo("Europe/Berlin")
# medium: respond within 1 business hour, resolve within 8 (Mon-Fri 09:00-17:00 Berlin)
SLA = [{"priority": p, "response": "1h", "resolution": "8h", "calendar": "business"}
       for p in ("critical", "high", "medium", "low")]


def nov(hhmm: str, day: int = 30) -> dt.datetime:
    """A time on Monday 30 November 2026 (or another day of that month), Berlin time."""
    return dt.datetime(2026, 11, day, *map(int, hhmm.split(":")), tzinfo=BERLIN)


def history(ticket) -> list[tuple[str, str]]:
    return [(e.kind, e.detail) for e in Event.select().where(Event.ticket == ticket.id).order_by(Event.id)]


@pytest.fixture
def rt(runtime):
    return runtime(sla=SLA)


@pytest.mark.parametrize("old", list(Status))
def test_the_status_machine_allows_exactly_its_transitions_and_records_each(rt, old):
    for new in Status:
        t = ticket_row(rt, nov("10:00"), status=old)
        if new == old:
            lifecycle.change_status(rt, t, new, nov("10:05"), "alice@example.test")
            assert t.status == old and history(t) == []
        elif new in lifecycle.ALLOWED[old]:
            lifecycle.change_status(rt, t, new, nov("10:05"), "alice@example.test", "why not")
            assert t.status == new and t.updated_at == nov("10:05")
            assert ("status", f"{old} -> {new}: why not") in history(t)
        else:
            with pytest.raises(lifecycle.NotAllowed, match=f"a {old} ticket cannot become {new}"):
                lifecycle.change_status(rt, t, new, nov("10:05"), "alice@example.test")
            assert t.status == old and history(t) == []


def test_a_cancelled_ticket_is_final_and_a_closed_one_can_only_reopen():
    assert lifecycle.ALLOWED["cancelled"] == set()
    assert lifecycle.ALLOWED["closed"] == {"open"}
    assert lifecycle.ALLOWED["resolved"] == {"closed", "open"}


def test_on_hold_pauses_the_resolution_clock_and_leaving_it_adds_the_paused_business_time(rt):
    t = ticket_row(rt, nov("10:00"))
    assert t.resolution_due == dt.datetime(2026, 12, 1, 10, 0, tzinfo=BERLIN)
    lifecycle.change_status(rt, t, "on-hold", nov("11:00"), "alice@example.test")
    assert t.paused_at == nov("11:00")
    lifecycle.change_status(rt, t, "in-progress", nov("14:00"), "alice@example.test")
    assert t.paused_at is None and t.paused_minutes == 180
    assert t.resolution_due == dt.datetime(2026, 12, 1, 13, 0, tzinfo=BERLIN)
    kinds = [k for k, _ in history(t)]
    assert kinds.index("sla-paused") < kinds.index("sla-resumed")


def test_in_progress_counts_as_the_first_response_once(rt):
    t = ticket_row(rt, nov("10:00"))
    lifecycle.change_status(rt, t, "in-progress", nov("10:30"), "alice@example.test")
    lifecycle.change_status(rt, t, "open", nov("10:40"), "alice@example.test")
    lifecycle.change_status(rt, t, "in-progress", nov("11:30"), "alice@example.test")
    assert t.first_response_at == nov("10:30")
    assert [d for k, d in history(t) if k == "sla-response"] == [
        "first response by status in-progress; response target met"]


def test_assigning_a_new_ticket_opens_it_and_makes_the_technician_a_participant(rt):
    t = ticket_row(rt, nov("10:00"), status="new")
    lifecycle.assign(rt, t, "bob@example.test", nov("10:01"), "desk", "round robin in service-desk")
    assert (t.status, t.assignee, t.group) == ("open", "bob@example.test", "service-desk")
    assert history(t) == [("status", "new -> open: assigned"),
                          ("assigned", "nobody -> bob@example.test (round robin in service-desk)")]
    assert lifecycle.is_participant(t, "Bob@Example.test")


def test_the_group_follows_the_technician_and_nobody_can_be_assigned(rt):
    t = ticket_row(rt, nov("10:00"), assignee="alice@example.test")
    lifecycle.assign(rt, t, "carol@example.test", nov("10:01"), "alice@example.test", "")
    assert t.group == "network"
    assert ("group", "service-desk -> network (follows Carol)") in history(t)
    lifecycle.assign(rt, t, None, nov("10:02"), "carol@example.test", "back to the queue")
    assert t.assignee is None and t.group == "network"
    assert history(t)[-1] == ("assigned", "carol@example.test -> nobody (back to the queue)")


def test_moving_a_ticket_to_its_own_group_records_nothing(rt):
    t = ticket_row(rt, nov("10:00"))
    lifecycle.set_group(t, "service-desk", nov("10:01"), "alice@example.test", "")
    assert history(t) == []


def test_a_participant_is_added_once_whatever_the_case_of_the_address(rt):
    t = ticket_row(rt, nov("10:00"))
    lifecycle.add_participant(t, "Boss@Example.org", "cc")
    lifecycle.add_participant(t, "boss@example.org", "cc")
    assert lifecycle.is_participant(t, "BOSS@example.org") and not lifecycle.is_participant(t, "mallory@evil.example")


def test_resolving_records_the_code_the_text_and_whether_the_target_was_met(rt):
    t = ticket_row(rt, nov("10:00"))
    lifecycle.resolve(rt, t, "fixed", "New drum.", nov("12:00"), "alice@example.test")
    assert (t.status, t.closure_code, t.resolution, t.resolved_at) == ("resolved", "fixed", "New drum.", nov("12:00"))
    assert t.first_response_at == nov("12:00")  # a resolution answers the requester too
    assert ("resolved", "resolved with code fixed; resolution target met") in history(t)
    assert t.sla_next_at is None  # no clock runs on a resolved ticket


def test_a_late_resolution_says_the_target_was_missed(rt):
    t = ticket_row(rt, nov("10:00"))
    lifecycle.resolve(rt, t, "workaround", "", dt.datetime(2026, 12, 1, 10, 1, tzinfo=BERLIN), "alice@example.test")
    assert ("resolved", "resolved with code workaround; resolution target missed") in history(t)


def test_closing_records_why_with_the_closure_code(rt):
    t = ticket_row(rt, nov("10:00"))
    lifecycle.resolve(rt, t, "fixed", "", nov("12:00"), "alice@example.test")
    lifecycle.close(rt, t, nov("13:00"), "jane@example.org", "confirmed by the requester")
    assert t.status == "closed" and t.closed_at == nov("13:00")
    assert history(t)[-1] == ("closed", "confirmed by the requester; code fixed")


def test_reopening_keeps_the_assignee_and_counts_the_time_resolved_as_paused(rt):
    t = ticket_row(rt, nov("09:00"), assignee="alice@example.test")
    assert t.resolution_due == nov("17:00")
    lifecycle.resolve(rt, t, "fixed", "", nov("10:00"), "alice@example.test")
    lifecycle.reopen(rt, t, nov("12:00"), "jane@example.org", "not fixed")
    assert (t.status, t.assignee, t.reopen_count, t.resolved_at) == ("open", "alice@example.test", 1, None)
    assert t.paused_minutes == 120 and t.resolution_due == dt.datetime(2026, 12, 1, 11, 0, tzinfo=BERLIN)
    assert [k for k, _ in history(t)][-3:] == ["status", "reopened", "sla-resumed"]


@pytest.mark.parametrize("since,now,inside", [
    (nov("10:00"), nov("11:00"), True),
    (nov("10:00", day=23), nov("10:00"), True),  # exactly the window (7d)
    (nov("10:00", day=23), nov("10:00") + dt.timedelta(seconds=1), False),
])
def test_the_reopen_window_counts_from_the_resolution_and_includes_its_last_moment(rt, since, now, inside):
    t = ticket_row(rt, since, status="resolved", resolved_at=since)
    assert lifecycle.within_reopen_window(rt, t, now) is inside


def test_a_closed_ticket_without_a_resolution_counts_from_its_closure_and_an_open_one_is_outside(rt):
    t = ticket_row(rt, nov("10:00", day=25), status="closed", closed_at=nov("10:00", day=25))
    assert lifecycle.within_reopen_window(rt, t, nov("10:00"))
    assert not lifecycle.within_reopen_window(rt, ticket_row(rt, nov("10:00")), nov("10:00"))
