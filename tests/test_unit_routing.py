"""maildesk.desk.routing: round robin that survives restarts, least loaded with ties to
whoever waited longest, `none`, and who is away (DESIGN section 3, [assignment])."""

from __future__ import annotations

import datetime as dt

import pytest

from maildesk.desk import routing
from tests.builders import ticket_row

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
TEAM = [{"email": f"{n}@example.test", "name": n.title(), "groups": ["service-desk"]} for n in ("ann", "ben", "cy")]
TEAM.append({"email": "carol@example.test", "name": "Carol", "groups": ["network"]})


def picks(rt, n: int, group: str = "service-desk", **kw) -> list[str | None]:
    out = []
    for _ in range(n):
        tech, _why = routing.pick_assignee(rt, group, NOW, **kw)
        out.append(tech.email.split("@")[0] if tech else None)
    return out


def test_round_robin_takes_the_members_in_turn_and_keeps_the_turn_across_restarts(runtime):
    assert picks(runtime(technicians=TEAM), 4) == ["ann", "ben", "cy", "ann"]
    assert picks(runtime(technicians=TEAM), 2) == ["ben", "cy"]  # a new runtime on the same store


def test_round_robin_keeps_a_turn_per_group(runtime):
    rt = runtime(technicians=TEAM)
    assert picks(rt, 1) + picks(rt, 1, "network") + picks(rt, 1) == ["ann", "carol", "ben"]


def test_round_robin_skips_whoever_is_away_and_says_so(runtime):
    team = [dict(t, away_until="2026-12-31") if t["email"].startswith("ben") else t for t in TEAM]
    rt = runtime(technicians=team)
    assert picks(rt, 3) == ["ann", "cy", "ann"]
    _tech, why = routing.pick_assignee(rt, "service-desk", NOW)
    assert why == "round robin in service-desk; skipped Ben away until 2026-12-31 (config)"


def test_a_configured_absence_ends_at_midnight_of_its_day_in_the_desks_time_zone(runtime):
    rt = runtime(technicians=[dict(TEAM[0], away_until="2026-11-30")])
    ann = rt.cfg.technician("ann@example.test")
    midnight = dt.datetime(2026, 11, 29, 23, 0, tzinfo=dt.UTC)  # 00:00 in Berlin
    assert routing.away_reason(rt, ann, midnight - dt.timedelta(seconds=1)) == "away until 2026-11-30 (config)"
    assert routing.away_reason(rt, ann, midnight) is None


def test_a_technicians_own_out_of_office_reply_makes_them_away_until_its_end(runtime):
    rt = runtime(technicians=TEAM)
    routing.mark_away(rt, "ann@example.test", NOW + dt.timedelta(hours=8))
    ann = rt.cfg.technician("ann@example.test")
    assert routing.away_reason(rt, ann, NOW) == "out of office until 2026-11-30 18:00 (auto-reply)"
    assert routing.away_reason(rt, ann, NOW + dt.timedelta(hours=8)) is None
    assert picks(rt, 2) == ["ben", "cy"]
    assert picks(runtime(technicians=TEAM), 1) == ["ben"]  # remembered in the store, not only in memory


def test_when_everyone_is_away_nobody_is_picked_and_the_reason_lists_them(runtime):
    rt = runtime()
    for who in ("alice@example.test", "bob@example.test"):
        routing.mark_away(rt, who, NOW + dt.timedelta(hours=1))
    tech, why = routing.pick_assignee(rt, "service-desk", NOW)
    assert tech is None
    assert why.startswith("no available technician in service-desk; skipped Alice out of office until")


def test_an_excluded_technician_is_passed_over(runtime):
    assert picks(runtime(technicians=TEAM), 3, exclude=("ann@example.test",)) == ["ben", "cy", "ben"]


@pytest.mark.parametrize("config,group,why", [
    ({"assignment": {"strategy": "none"}}, "service-desk", "strategy none: left in the service-desk queue"),
    ({"groups": [{"name": "service-desk", "strategy": "none"}, {"name": "network"}]}, "service-desk",
     "strategy none: left in the service-desk queue"),
    ({}, None, "strategy round_robin: left in the desk queue"),
])
def test_strategy_none_or_no_group_leaves_the_ticket_in_the_queue(runtime, config, group, why):
    assert routing.pick_assignee(runtime(**config), group, NOW) == (None, why)


def test_a_groups_own_strategy_overrides_the_desks(runtime):
    rt = runtime(assignment={"strategy": "none"}, technicians=TEAM,
                 groups=[{"name": "service-desk", "strategy": "round_robin"}, {"name": "network"}])
    assert picks(rt, 1) == ["ann"] and picks(rt, 1, "network") == [None]


def test_least_loaded_counts_the_open_tickets_of_each_member(runtime):
    rt = runtime(technicians=TEAM, assignment={"strategy": "least_loaded"})
    for who, status in (("ann", "open"), ("ann", "in-progress"), ("ben", "on-hold"), ("cy", "resolved"),
                        ("cy", "closed")):
        ticket_row(rt, NOW, assignee=f"{who}@example.test", status=status)
    tech, why = routing.pick_assignee(rt, "service-desk", NOW)
    assert tech.email == "cy@example.test" and why == "least loaded in service-desk"


def test_least_loaded_ties_go_to_whoever_waited_longest_then_to_the_order_of_the_config(runtime):
    rt = runtime(technicians=TEAM, assignment={"strategy": "least_loaded"})
    assert picks(rt, 1) == ["ann"]  # nobody was ever assigned: the config's order
    routing.note_assignment(rt, "ann@example.test", NOW)
    routing.note_assignment(rt, "ben@example.test", NOW - dt.timedelta(hours=1))
    assert picks(rt, 1) == ["cy"]
    routing.note_assignment(rt, "cy@example.test", NOW + dt.timedelta(minutes=1))
    assert picks(rt, 1) == ["ben"]


def test_the_staff_who_hear_of_a_ticket_are_its_assignee_or_else_its_group(runtime):
    rt = runtime()
    assert routing.staff_recipients(rt, ticket_row(rt, NOW, assignee="bob@example.test")) == ["bob@example.test"]
    assert routing.staff_recipients(rt, ticket_row(rt, NOW)) == ["alice@example.test", "bob@example.test"]
    assert routing.staff_recipients(rt, ticket_row(rt, NOW, group=None)) == []
