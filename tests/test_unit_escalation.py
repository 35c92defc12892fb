"""maildesk.desk.escalation: what a fired mark does (a reminder, a functional escalation,
a hierarchical one) and `#escalate`, on a real SQLite store; the mail is queued, not sent."""

from __future__ import annotations

import datetime as dt

import pytest

from maildesk.desk import escalation
from maildesk.desk.sla import Mark
from maildesk.store import Event, Outbox
from tests.builders import ticket_row

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def queued(t) -> list[tuple[str, str]]:
    """(kind, recipient) of the mail queued about ticket `t`, in order."""
    return [(o.kind, o.rcpt) for o in Outbox.select().where(Outbox.ticket == t.id).order_by(Outbox.id)]


def history(t) -> list[tuple[str, str]]:
    return [(e.kind, e.detail) for e in Event.select().where(Event.ticket == t.id).order_by(Event.id)]


@pytest.mark.parametrize("minutes,text", [
    (-5, "not late"), (0, "less than a minute late"), (59, "59m late"), (90, "1h 30m late"), (1440, "1d 0m late"),
    (1440 + 125, "1d 2h 5m late"), (3 * 1440 + 60, "3d 1h 0m late"),
])
def test_how_late_is_said_in_days_hours_and_minutes(minutes, text):
    due = NOW - dt.timedelta(minutes=minutes, seconds=30 if minutes >= 0 else 0)
    assert escalation.late_by(NOW, due) == text


def test_nothing_due_is_never_late():
    assert escalation.late_by(NOW, None) == "not late"


def test_a_reminder_goes_to_the_assignee_or_else_to_every_member_of_the_group(runtime):
    rt = runtime()
    mine = ticket_row(rt, NOW, assignee="bob@example.test")
    nobodys = ticket_row(rt, NOW)
    for t in (mine, nobodys):
        escalation.fire(rt, t, Mark("response", "warn", NOW), NOW)
    assert queued(mine) == [("reminder", "bob@example.test")]
    assert queued(nobodys) == [("reminder", "alice@example.test"), ("reminder", "bob@example.test")]
    assert history(mine)[0][0] == "sla-reminder" and "response target due" in history(mine)[0][1]


def test_a_breach_moves_the_ticket_to_the_next_group_and_tells_the_new_and_the_previous_assignee(runtime):
    rt = runtime()
    t = ticket_row(rt, NOW - dt.timedelta(hours=2), assignee="alice@example.test")
    t.response_due = NOW - dt.timedelta(hours=1)
    escalation.fire(rt, t, Mark("response", "breach", t.response_due), NOW)
    assert (t.group, t.assignee, t.escalation_count) == ("network", "carol@example.test", 1)
    assert queued(t) == [("escalated", "carol@example.test"), ("escalated", "alice@example.test")]
    assert history(t)[0] == ("escalated", "functional escalation to network: response target breached (1h 0m late)")


def test_escalating_within_a_group_with_nowhere_to_go_passes_the_ticket_to_someone_else(runtime):
    rt = runtime(groups=[{"name": "service-desk", "tier": 1}, {"name": "network", "tier": 2}])
    t = ticket_row(rt, NOW, assignee="alice@example.test")
    escalation.escalate(rt, t, NOW, "alice@example.test", "needs a second pair of eyes")
    assert (t.group, t.assignee) == ("service-desk", "bob@example.test")
    assert queued(t) == [("escalated", "bob@example.test"), ("escalated", "alice@example.test")]


def test_escalating_where_nobody_else_is_available_keeps_the_assignee_and_says_so(runtime):
    rt = runtime()
    t = ticket_row(rt, NOW, group="network", category="Network", assignee="carol@example.test")
    escalation.escalate(rt, t, NOW, "carol@example.test", "stuck")
    assert (t.group, t.assignee) == ("network", "carol@example.test")
    assert ("assigned", "stays with carol@example.test (round robin in network)") in history(t)
    assert queued(t) == []  # the same technician is not "escalated to" again (issue 13 point 4)


def test_escalate_to_a_named_group_goes_there(runtime):
    rt = runtime()
    t = ticket_row(rt, NOW, group="network", category="Network", assignee="carol@example.test")
    escalation.escalate(rt, t, NOW, "carol@example.test", "a printer after all", to_group="service-desk")
    assert t.group == "service-desk" and t.assignee in ("alice@example.test", "bob@example.test")


def test_a_group_without_technicians_hears_of_it_as_a_group(runtime):
    rt = runtime(groups=[{"name": "service-desk", "tier": 1, "escalates_to": "security"}, {"name": "network"},
                         {"name": "security"}])
    t = ticket_row(rt, NOW, assignee="alice@example.test")
    escalation.escalate(rt, t, NOW, "desk", "response target breached")
    assert (t.group, t.assignee) == ("security", None)
    assert queued(t) == [("escalated", "alice@example.test")]  # the previous assignee; security has no members


def test_the_second_level_tells_the_groups_manager_and_the_incident_managers_once_each(runtime):
    rt = runtime(roles={"incident_managers": ["im@example.test", "lead@example.test"]})
    t = ticket_row(rt, NOW - dt.timedelta(days=2), assignee="alice@example.test")
    t.resolution_due = NOW - dt.timedelta(minutes=90)
    escalation.fire(rt, t, Mark("resolution", "level2", t.resolution_due), NOW)
    assert queued(t) == [("escalation_l2", "lead@example.test"), ("escalation_l2", "im@example.test")]
    kind, detail = history(t)[0]
    assert kind == "escalated"
    assert detail.startswith("hierarchical escalation: resolution target 1h 30m late; told lead@example.test, im@example.test")
    assert t.escalation_count == 1


def test_a_second_level_with_nobody_to_tell_is_recorded_as_such(runtime):
    rt = runtime(groups=[{"name": "service-desk", "tier": 1}], roles={"incident_managers": []},
                 technicians=[{"email": "alice@example.test", "groups": ["service-desk"]}],
                 categories=[{"name": "Hardware", "keywords": ["printer"]}])
    t = ticket_row(rt, NOW - dt.timedelta(days=2))
    escalation.fire(rt, t, Mark("response", "level2", t.response_due), NOW)
    assert queued(t) == []
    assert history(t)[0][1].endswith("told nobody (no manager or incident manager configured)")
