"""Triage: categorize, prioritize, route and assign every new incident (issue 3)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.config import DEFAULT_MATRIX, parse_config
from maildesk.pipeline.triage import _matcher, categorize, keyword_counts, prioritize
from maildesk.vocab import LEVELS
from tests.builders import mail, minimal_config


def cfg(**sections):
    base = minimal_config(
        groups=[{"name": "service-desk"}, {"name": "network"}],
        categories=[
            {"name": "Network", "keywords": ["network", "wifi"], "group": "network"},
            {"name": "Network/VPN", "keywords": ["vpn", "tunnel"]},
            {"name": "Hardware", "keywords": ["printer", "laptop"]},
            {"name": "Printing", "keywords": ["printer", "toner"]},
        ],
        priority={
            "vip": ["ceo@example.test"],
            "impact_keywords": {"high": ["everyone", "all users", "outage"], "medium": ["our team"], "low": ["only me"]},
            "urgency_keywords": {"high": ["urgent", "down", "cannot work"], "low": ["when you can"]},
        },
    )
    for key, value in sections.items():
        base[key] = {**base[key], **value} if key == "priority" else value
    return parse_config(base)


# --- categorize --------------------------------------------------------------------


def test_the_category_with_most_keyword_matches_wins():
    d = categorize(cfg(), "The VPN tunnel drops, and the vpn client hangs; wifi is fine")
    assert d.value == "Network/VPN"
    assert '"vpn" x2' in d.why and '"tunnel"' in d.why


def test_a_tie_goes_to_the_category_listed_first():
    assert categorize(cfg(), "the printer is broken").value == "Hardware"


def test_keywords_match_whole_words_only_and_ignore_case():
    assert categorize(cfg(), "PRINTER offline").value == "Hardware"
    assert categorize(cfg(), "networking course and printers").value == "General"


def test_no_match_gives_general():
    d = categorize(cfg(), "my chair squeaks")
    assert d.value == "General" and d.why == "no keyword matched"


def test_a_sub_category_routes_to_its_parents_group():
    assert cfg().category_group("Network/VPN") == "network"
    assert cfg().category_group("General") == "service-desk"


# --- prioritize --------------------------------------------------------------------


@pytest.mark.parametrize("impact,urgency", list(itertools.product(LEVELS, LEVELS)))
def test_every_cell_of_the_default_matrix(impact, urgency):
    words = {"impact": {"high": "outage", "medium": "", "low": "only me"},
             "urgency": {"high": "urgent", "medium": "", "low": "when you can"}}
    text = f"{words['impact'][impact]} {words['urgency'][urgency]}"
    p = prioritize(cfg(), text, "jane@example.org")
    assert (p.impact, p.urgency) == (impact, urgency)
    assert p.priority == DEFAULT_MATRIX[impact][urgency]


def test_a_configured_matrix_replaces_the_default():
    matrix = {i: {u: "low" for u in LEVELS} for i in LEVELS}
    matrix["high"]["high"] = "critical"
    c = cfg(priority={"matrix": matrix})
    assert prioritize(c, "outage urgent", "x@example.org").priority == "critical"
    assert prioritize(c, "outage", "x@example.org").priority == "low"


def test_a_vip_raises_impact_one_level():
    p = prioritize(cfg(), "the printer is slow", "ceo@example.test")
    assert p.impact == "high" and p.priority == "high"
    assert "VIP" in p.why


def test_the_explanation_names_keywords_and_defaults():
    p = prioritize(cfg(), "outage in building 3", "jane@example.org")
    assert p.why == 'priority high: impact high (keyword "outage"), urgency medium (default)'


def test_an_importance_header_raises_urgency_but_never_lowers_it():
    assert prioritize(cfg(), "printer", "j@example.org", urgent_header="high").urgency == "high"
    assert prioritize(cfg(), "urgent", "j@example.org", urgent_header=None).urgency == "high"


# --- config errors -------------------------------------------------------------------


def test_check_config_names_the_key_and_run_refuses_to_start(desk):
    desk.write_config(categories=[{"name": "X", "keywords": ["x"], "group": "nowhere"}])
    code, out, err = desk.cli("check-config")
    assert code == 2 and 'categories[0].group: unknown group "nowhere"' in err and "Traceback" not in err
    code, out, err = desk.cli("run", "--once")
    assert code == 2 and "categories[0].group" in err


# --- through the desk ------------------------------------------------------------------


def test_new_incidents_land_in_their_groups_with_explained_decisions(desk):
    desk.deliver(mail("jane@example.org", "VPN down for all users", "Nobody can connect to the vpn. Urgent!"))
    desk.deliver(mail("joe@example.org", "Printer toner", "The printer needs toner, when you can."))
    desk.run()
    t = {x["subject"]: x for x in desk.tickets()}
    vpn, printer = t["VPN down for all users"], t["Printer toner"]
    assert (vpn["category"], vpn["group"], vpn["impact"], vpn["urgency"], vpn["priority"]) == (
        "Network/VPN", "network", "high", "high", "critical")
    assert vpn["assignee"] == "carol@example.test" and vpn["status"] == "open"
    assert (printer["category"], printer["group"], printer["priority"]) == ("Hardware", "service-desk", "low")
    events = desk.ticket(vpn["ref"])["events"]
    details = [e["detail"] for e in events]
    assert any('category Network/VPN (keyword' in d and '"vpn"' in d for d in details)
    assert any(d.startswith("priority critical: impact high (keyword") for d in details)
    assert any(e["kind"] == "assigned" and "carol" in e["detail"] for e in events)


def test_round_robin_shares_tickets_across_a_restart(desk):
    desk.write_config(technicians=[
        {"email": f"{n}@example.test", "name": n.title(), "groups": ["service-desk"]} for n in ("ann", "ben", "cat")
    ])
    for i in range(2):
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Help."))
    desk.run()
    for i in range(2, 6):  # a new process: the pointer lives in the database
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Help."))
    desk.run()
    by_subject = {t["subject"]: t["assignee"] for t in desk.tickets()}
    order = [by_subject[f"Issue {i}"] for i in range(6)]
    assert order == ["ann@example.test", "ben@example.test", "cat@example.test"] * 2


def test_least_loaded_picks_the_technician_with_fewest_open_tickets(desk):
    desk.write_config(assignment={"strategy": "least_loaded"})
    for i in range(3):
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Help."))
    desk.run()
    counts = {}
    for t in desk.tickets():
        counts[t["assignee"]] = counts.get(t["assignee"], 0) + 1
    assert sorted(counts.values()) == [1, 2]


def test_an_away_technician_is_skipped(desk):
    desk.write_config(technicians=[
        {"email": "alice@example.test", "name": "Alice", "groups": ["service-desk"], "away_until": "2099-01-01"},
        {"email": "bob@example.test", "name": "Bob", "groups": ["service-desk"]},
    ])
    for i in range(2):
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Help."))
    desk.run()
    assert {t["assignee"] for t in desk.tickets()} == {"bob@example.test"}
    assert any("Alice away until 2099-01-01" in e["detail"] for e in desk.ticket("INC-1")["events"])


def test_a_technicians_out_of_office_reply_makes_them_away(desk):
    desk.deliver(mail("user0@example.org", "Issue 0", "Help."))
    desk.run()
    notice = desk.sent(to="alice@example.test")[0]
    desk.deliver(mail("alice@example.test", "Automatic reply: " + notice.subject, "I am out until Monday.",
                      in_reply_to=notice.header("Message-ID"), headers={"Auto-Submitted": "auto-replied"}))
    desk.run()
    for i in (1, 2):
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Help."))
    desk.run()
    by_subject = {t["subject"]: t for t in desk.tickets()}
    assert by_subject["Issue 0"]["status"] == "open"  # the out-of-office changed nothing
    assert by_subject["Issue 1"]["assignee"] == by_subject["Issue 2"]["assignee"] == "bob@example.test"


def test_strategy_none_leaves_the_ticket_in_the_group_queue_and_tells_the_group(desk):
    desk.write_config(assignment={"strategy": "none"})
    desk.deliver(mail("jane@example.org", "Printer", "Broken printer."))
    desk.run()
    t = desk.tickets()[0]
    assert t["assignee"] is None and t["status"] == "new" and t["group"] == "service-desk"
    assert desk.sent(to="alice@example.test") and desk.sent(to="bob@example.test")


def test_the_assignment_notice_carries_the_incident_and_how_to_answer(desk):
    desk.deliver(mail("Jane Doe <jane@example.org>", "Laptop battery swollen", "The laptop battery bulges. Urgent.",
                      msgid="<orig@client.example>"))
    desk.run()
    notice = desk.sent(to="alice@example.test")[0]
    text = notice.text
    assert "[INC-1]" in notice.subject
    assert "The laptop battery bulges" in text
    assert "Hardware" in text and "high" in text and "urgency high (keyword \"urgent\")" in text
    assert "jane@example.org" in text and "#note" in text and "#help" in text
    assert notice.header("Message-ID").startswith("<md-1-")
    assert notice.header("Auto-Submitted") == "auto-generated"
    ack = desk.sent(to="jane@example.org")[0]
    assert "Hardware" in ack.text and "high" in ack.text


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["vpn", "VPN", "wifi", "our", "team", "Our  Team", "printers", "xvpn", "_vpn",
                                 "ſ", "é", " ", "\n", ",", "-", "all", "users", "all users", "é vpn"]), max_size=14))
def test_the_fast_keyword_scan_counts_what_the_exact_pattern_finds_at_every_position(parts):
    keywords = ("vpn", "wifi", "our team", "our", "team", "all users", "users", "printer")
    text = " ".join(parts) if len(parts) % 2 else "".join(parts)
    exact = _matcher(keywords)[0]
    expected: dict[str, int] = {}
    for found in exact.findall(text):
        key = " ".join(found.lower().split())
        expected[key] = expected.get(key, 0) + 1
    assert keyword_counts(keywords, text) == expected
