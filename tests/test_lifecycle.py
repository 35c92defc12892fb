"""Resolution, confirmation, closure, survey; major incidents and their review
(issue 6; DESIGN sections 4 and 5), driven with `run --once --now`."""

from __future__ import annotations

import re

import pytest

from tests.builders import answer, click, mail, mailto_links, open_ticket, reply_to
from tests.conftest import both_databases

pytestmark = both_databases  # every test here runs on SQLite and on PostgreSQL

RESOLVE = "#resolve fixed\nI replaced the drum."


def at(hhmm: str, day: str = "2026-11-30") -> str:
    return f"{day}T{hhmm}:00+01:00"


def subjects(captured) -> list[str]:
    """The subjects of the one-click mailto: links of a mail."""
    return [subject for _, subject, _ in mailto_links(captured.text)]


def resolved(desk, now=at("10:00")):
    """A ticket opened at 09:00 and resolved by alice: its resolution mail to the requester."""
    ack, notice = open_ticket(desk, now=at("09:00"))
    answer(desk, notice, RESOLVE, now=now)
    return desk.sent(subject_has="Resolved")[0]


def test_resolution_mail_carries_the_text_and_two_signed_links(desk):
    res = resolved(desk)
    t = desk.tickets()[0]
    assert t["status"] == "resolved" and t["closure_code"] == "fixed" and t["resolved_at"]
    assert res.rcpts == ["jane@example.org"]
    assert "I replaced the drum." in res.text and "#resolve" not in res.text
    links = subjects(res)
    assert any("Yes, it is fixed" in s and "[INC-1]" in s for s in links)
    assert any("No, it is not fixed" in s for s in links)
    assert all(re.search(r"(fixed|notfixed)-1-0-[0-9a-f]{16}", s) for s in links)  # bound to resolution 0
    assert "closes by itself in 3 days" in res.text
    assert res.message.get_content_type() == "multipart/alternative"  # text plus HTML


@pytest.mark.parametrize("confirm", [
    lambda desk, res: click(desk, res, "Yes, it is fixed", now=at("11:00")),
    lambda desk, res: answer(desk, res, "#close", frm="jane@example.org", now=at("11:00")),
], ids=["fixed-link", "close-command"])
def test_the_requester_confirms_the_resolution_and_one_survey_goes_out(desk, confirm):
    confirm(desk, resolved(desk))
    t = desk.tickets()[0]
    assert t["status"] == "closed" and t["closed_at"] and t["closure_code"] == "fixed"
    (survey,) = desk.sent(subject_has="How did we do")
    assert len([s for s in subjects(survey) if "Rating" in s]) == 5
    assert "reply with a number" in survey.text


def test_a_survey_is_rated_by_link_then_by_reply_and_the_reply_replaces_the_rating(desk):
    click(desk, resolved(desk), "Yes, it is fixed", now=at("11:00"))
    (survey,) = desk.sent(subject_has="How did we do")
    click(desk, survey, "Rating 4", now=at("11:05"))
    s = desk.ticket("INC-1")["survey"]
    assert s["rating"] == 4 and s["answered_at"] and s["sent_at"]
    answer(desk, survey, "5 - Alice was great, thanks!", frm="jane@example.org", now=at("11:10"))
    s = desk.ticket("INC-1")["survey"]
    assert s["rating"] == 5 and "Alice was great" in s["comment"]
    assert desk.tickets()[0]["status"] == "closed"  # a survey answer reopens nothing
    thanks = desk.sent(subject_has="Thank you for your rating")
    assert len(thanks) == 2 and "replaces your earlier rating of 4" in thanks[-1].text
    assert any("replaces the earlier rating 4" in e["detail"] for e in desk.ticket("INC-1")["events"])


def test_not_fixed_link_reopens_with_the_same_assignee_and_the_sla_resumed(desk):
    desk.write_config(sla=[
        {"priority": p, "response": "1h", "resolution": "8h", "calendar": "business"}
        for p in ("critical", "high", "medium", "low")])
    ack, notice = open_ticket(desk, now=at("09:00"))
    due_before = desk.tickets()[0]["resolution_due"]
    answer(desk, notice, RESOLVE, now=at("10:00"))
    res = desk.sent(subject_has="Resolved")[0]
    click(desk, res, "No, it is not fixed", now=at("12:00"))
    t = desk.tickets()[0]
    assert t["status"] == "open" and t["assignee"] == "alice@example.test" and t["resolved_at"] is None
    # two business hours spent resolved are added to the resolution target
    assert due_before.startswith("2026-11-30T17:00") and t["resolution_due"].startswith("2026-12-01T11:00")
    assert t["reopen_count"] == 1
    reopened = desk.sent(subject_has="Reopened")
    assert reopened and reopened[0].rcpts == ["alice@example.test"]


def test_a_reply_with_new_content_reopens_but_thanks_and_out_of_office_do_not(desk):
    res = resolved(desk)
    answer(desk, res, "Thanks a lot!\n\nJane", frm="jane@example.org", now=at("11:00"))
    desk.deliver(mail("jane@example.org", "Out of Office: " + res.subject, "I am on holiday until Monday.",
                      in_reply_to=res.header("Message-ID"), headers={"Auto-Submitted": "auto-replied"}))
    desk.run(now=at("11:05"))
    assert desk.tickets()[0]["status"] == "resolved"
    answer(desk, res, "It jams again since this morning.", frm="jane@example.org", now=at("11:30"))
    assert desk.tickets()[0]["status"] == "open"


def test_a_reply_after_the_reopen_window_opens_a_new_ticket_that_follows_the_old(desk):
    res = resolved(desk)
    answer(desk, res, "It broke again.", frm="jane@example.org",
           now="2026-12-09T10:00:00+01:00")  # 9 days later; the window is 7d
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert tickets["INC-1"]["status"] == "closed"  # auto-closed meanwhile, not reopened
    assert tickets["INC-2"]["follows"] == "INC-1" and tickets["INC-2"]["status"] in ("new", "open")
    assert any(e["kind"] == "linked" for e in desk.ticket("INC-1")["events"])


def test_auto_close_closes_resolved_tickets_after_the_period_and_says_so(desk):
    resolved(desk)
    desk.run(now="2026-12-02T09:00:00+01:00")  # 2 days: not yet
    assert desk.tickets()[0]["status"] == "resolved"
    desk.run(now="2026-12-03T10:01:00+01:00")  # 3 days after 10:00
    t = desk.tickets()[0]
    assert t["status"] == "closed" and t["closure_code"] == "fixed"
    assert any("closed automatically" in e["detail"] for e in desk.ticket("INC-1")["events"])
    assert desk.sent(subject_has="How did we do")


def test_survey_goes_at_most_once_per_requester_in_the_period(desk):
    for i, when in enumerate((at("09:00"), at("09:10"))):
        desk.deliver(mail("jane@example.org", f"Problem {i}", "Broken printer."))
        desk.run(now=when)
    notices = [m for m in desk.smtp.messages if "Assigned to you" in (m.subject or "")]
    for n in notices:
        answer(desk, n, RESOLVE, frm=n.rcpts[0], now=at("10:00"))
    for res in desk.sent(subject_has="Resolved"):
        click(desk, res, "Yes, it is fixed", now=at("11:00"))
    assert all(t["status"] == "closed" for t in desk.tickets())
    assert len(desk.sent(subject_has="How did we do")) == 1
    assert sum(1 for t in desk.tickets() if desk.ticket(t["ref"])["survey"]) == 1


def test_a_forged_survey_token_is_ordinary_mail_and_someone_elses_link_changes_nothing(desk):
    click(desk, resolved(desk), "Yes, it is fixed", now=at("11:00"))
    desk.deliver(mail("jane@example.org", "[INC-1] Rating 1 - Very poor (rate1-1-0-0123456789abcdef)", "Thanks!"))
    desk.deliver(mail("mallory@evil.example",
                      next(s for s in subjects(desk.sent(subject_has="How did we do")[0]) if "Rating 1" in s), "x"))
    desk.run(now=at("11:05"))
    assert desk.ticket("INC-1")["survey"]["rating"] is None
    outcomes = {i["from"]: i["outcome"] for i in desk.inbound()[:2]}
    assert outcomes == {"mallory@evil.example": "ignored", "jane@example.org": "reply"}
    assert any(e["kind"] == "click-refused" and "mallory@evil.example" in e["detail"] for e in desk.ticket("INC-1")["events"])


# --- major incidents -----------------------------------------------------------------


@pytest.fixture
def major(desk):
    """INC-1 a major incident with three children from three requesters."""
    ack, notice = open_ticket(desk, now=at("09:00"), subject="Printers down everywhere", body="No printer prints.")
    answer(desk, notice, "#major", now=at("09:05"))
    for who in ("ann", "ben", "cat"):
        desk.deliver(mail(f"{who}@example.org", f"{who}: printer dead", "Cannot print.", msgid=f"<{who}-1@client.example>"))
    desk.run(now=at("09:10"))
    for ref in ("INC-2", "INC-3", "INC-4"):
        child_notice = next(m for m in desk.smtp.messages if f"[{ref}]" in (m.subject or "") and "Assigned" in m.subject)
        desk.deliver(reply_to(child_notice, child_notice.rcpts[0], "#link INC-1"))
    desk.run(now=at("09:15"))
    desk.smtp.reset()
    return desk, notice


def test_a_reply_on_a_major_incident_reaches_every_childs_requester_in_their_thread(major):
    desk, notice = major
    answer(desk, notice, "We know; the print server is being restarted.", now=at("09:30"))
    for who, ref in (("jane", "INC-1"), ("ann", "INC-2"), ("ben", "INC-3"), ("cat", "INC-4")):
        (m,) = desk.sent(to=f"{who}@example.org")
        assert f"[{ref}]" in m.subject and "print server" in m.text
        if who != "jane":  # each child's relay threads under that child's own conversation
            assert f"<{who}-1@client.example>" in (m.header("References") or ""), m.header("References")
    assert all(desk.tickets() and t["first_response_at"] for t in desk.tickets())


def test_resolving_and_closing_a_major_incident_cascades_and_sends_the_review(major):
    desk, notice = major
    answer(desk, notice, "#resolve workaround\nPrint server restarted; use floor 1 meanwhile.", now=at("10:00"))
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert all(t["status"] == "resolved" and t["closure_code"] == "workaround" for t in tickets.values())
    for who in ("jane", "ann", "ben", "cat"):
        (m,) = desk.sent(to=f"{who}@example.org")
        assert "Resolved" in m.subject and "Print server restarted" in m.text
    res = desk.sent(to="jane@example.org")[0]
    click(desk, res, "Yes, it is fixed", now=at("11:00"))
    tickets = {t["ref"]: t for t in desk.tickets()}
    # the children do not close with it: each closes by its own rules (its requester's word, or auto-close)
    assert [r for r, t in tickets.items() if t["status"] == "closed"] == ["INC-1"]
    assert all(t["status"] == "resolved" for r, t in tickets.items() if r != "INC-1")
    desk.run(now="2026-12-04T11:00:00+01:00")  # past lifecycle.auto_close_after (3d)
    assert all(t["status"] == "closed" for t in desk.tickets())
    (review,) = desk.sent(subject_has="Post-incident review")
    assert review.rcpts == ["im@example.test"]
    text = review.text
    for heading in ("Timeline", "reported", "first response", "resolved", "closed", "Linked tickets:  3",
                    "Requesters:      4", "Survey results", "Detection", "Communication", "Process", "Resources"):
        assert heading in text, heading
    assert "met" in text or "breached" in text
