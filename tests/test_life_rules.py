"""The life-cycle rules a real week at a desk trips over (issue 13), each through the
real Dovecot and SMTP sink with `run --once --now`: priority raises, downtime, major
incidents and their children, escalation paths, the manager of the group that missed,
out-of-office, what the requester is told, what staff mails carry, and the report."""

from __future__ import annotations

import json

from tests.conftest import mail, reply_to

POLICIES = [
    {"priority": "critical", "response": "15m", "resolution": "4h", "calendar": "24x7"},
    {"priority": "high", "response": "30m", "resolution": "2h", "calendar": "business"},
    {"priority": "medium", "response": "1h", "resolution": "8h", "calendar": "business"},
    {"priority": "low", "response": "1d", "resolution": "5d", "calendar": "business"},
]


def at(hhmm: str, day: str = "2026-11-30") -> str:  # a Monday
    return f"{day}T{hhmm}:00+01:00"


def open_ticket(desk, frm="jane@example.org", subject="Printer jam", body="The printer in room 4 is jammed.",
                when="09:10"):
    desk.write_config(sla=POLICIES)
    desk.deliver(mail(frm, subject, body))
    desk.run(now=at(when))
    return desk.sent(to="alice@example.test")[-1]


def test_raising_the_priority_of_an_old_ticket_sends_no_reminder_or_escalation_for_a_moment_already_past(desk):
    notice = open_ticket(desk)  # medium: response due 10:10
    desk.deliver(reply_to(notice, "alice@example.test", "#priority high\n#note\nLooking at it."))
    desk.run(now=at("11:10"))  # high: response was due 09:40, resolution 11:10
    desk.run(now=at("11:11"))
    assert not desk.sent(subject_has="Reminder") and not desk.sent(subject_has="Escalat")
    assert not desk.sent(subject_has="ESCALATION")
    t = desk.ticket("INC-1")
    assert t["assignee"] == "alice@example.test"  # not escalated away from who raised it
    assert any(e["kind"] == "sla-missed" and "response target missed at the change" in e["detail"]
               for e in t["events"])
    # the report counts the response target as missed
    code, out, _ = desk.cli("report", "--now", at("11:11"), "--json")
    assert json.loads(out)["overall"]["sla_response_compliance"] == 0.0


def test_after_days_of_downtime_a_ticket_gets_only_the_latest_mark_of_each_target(desk):
    open_ticket(desk)  # response due Mon 10:10, resolution due Tue 09:10 (8 business hours)
    desk.run(now=at("09:00", "2026-12-04"))  # the desk was down from Monday to Friday
    reminders = desk.sent(subject_has="Reminder")
    assert reminders == []  # both reminders superseded by their breaches
    # response: only level 2 (2 x 1h, Mon 11:10) fires, not its breach; resolution: breach and level 2,
    # due at the same moment, both fire
    assert not [m for m in desk.sent(subject_has="Escalated") if "response" in m.text.split("\n")[0]]
    targets = sorted({m.subject.split("ESCALATION: ")[1].split(" target")[0] for m in desk.sent(subject_has="ESCALATION")})
    assert targets == ["resolution", "response"]
    events = desk.ticket("INC-1")["events"]
    assert sum(e["kind"] == "sla-superseded" for e in events) >= 2


def test_a_childs_clock_is_held_while_its_major_incident_is_worked_and_the_child_closes_by_its_own_rules(desk):
    desk.write_config(sla=POLICIES)
    desk.deliver(mail("jane@example.org", "Mail server down", "Nobody can send mail."))
    desk.run(now=at("09:00"))
    notice = desk.sent(to="alice@example.test")[-1]
    desk.deliver(reply_to(notice, "alice@example.test", "#major"))
    desk.run(now=at("09:02"))
    desk.deliver(mail("ann@example.org", "cannot send mail", "Outlook says the server is unavailable."))
    desk.run(now=at("09:05"))
    child_notice = next(m for m in desk.smtp.messages if "[INC-2]" in (m.subject or "") and "Assigned" in m.subject)
    desk.deliver(reply_to(child_notice, child_notice.rcpts[0], "#link INC-1"))
    desk.run(now=at("09:06"))
    linked = desk.sent(to="ann@example.org", subject_has="Part of a wider incident")
    assert len(linked) == 1 and "INC-1" in linked[0].text
    for hhmm in ("10:00", "12:00", "16:00", "17:30"):  # well past the child's own medium targets
        desk.run(now=at(hhmm))
    child_staff_mail = [m for m in desk.smtp.messages if "[INC-2]" in (m.subject or "")
                        and ("Reminder" in m.subject or "Escalat" in m.subject or "ESCALATION" in m.subject)]
    assert child_staff_mail == []
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nThe mail server is back."))
    desk.run(now=at("17:40"))
    (res,) = desk.sent(to="ann@example.org", subject_has="Resolved")
    assert "INC-2" in res.subject and "Yes, it is fixed" in res.text  # her own confirm links
    jane_res = desk.sent(to="jane@example.org", subject_has="Resolved")[0]
    from tests.test_lifecycle import click
    click(desk, jane_res, "Yes, it is fixed", now=at("17:45"))
    statuses = {t["ref"]: t["status"] for t in desk.tickets()}
    assert statuses == {"INC-1": "closed", "INC-2": "resolved"}  # ann has not confirmed yet
    click(desk, res, "Yes, it is fixed", frm="ann@example.org", now=at("17:50"))
    assert {t["ref"]: t["status"] for t in desk.tickets()}["INC-2"] == "closed"


def test_a_category_with_an_escalation_path_escalates_there_and_not_along_the_group_chain(desk):
    desk.write_config(
        groups=[{"name": "service-desk", "escalates_to": "network", "manager": "lead@example.test"},
                {"name": "network", "manager": "netlead@example.test"},
                {"name": "desktop", "manager": "desklead@example.test"}],
        technicians=[{"email": "alice@example.test", "name": "Alice", "groups": ["service-desk"]},
                     {"email": "carol@example.test", "name": "Carol", "groups": ["network"]},
                     {"email": "dave@example.test", "name": "Dave", "groups": ["desktop"]}],
        categories=[{"name": "Hardware", "keywords": ["printer", "laptop"], "group": "service-desk",
                     "escalates_to": "desktop"},
                    {"name": "Network", "keywords": ["network"], "group": "network"}],
    )
    open_ticket(desk)
    desk.run(now=at("10:11"))  # response breach at 10:10
    t = desk.tickets()[0]
    assert t["group"] == "desktop" and t["assignee"] == "dave@example.test"
    desk.run(now=at("11:11"))  # response level 2 at 11:10: the manager of the group that missed it
    told = sorted(r for m in desk.sent(subject_has="ESCALATION") for r in m.rcpts)
    assert told == ["im@example.test", "lead@example.test"]  # not desklead: desktop did not miss it


def test_an_unknown_escalation_path_is_a_config_error_naming_its_key(desk):
    desk.write_config(categories=[{"name": "Hardware", "keywords": ["printer"], "escalates_to": "nowhere"}])
    code, out, err = desk.cli("check-config")
    assert code != 0 and "categories[0].escalates_to" in err


def test_an_out_of_office_reply_naming_a_date_keeps_the_technician_away_until_then(desk):
    desk.write_config(sla=POLICIES)
    desk.deliver(mail("alice@example.test", "Automatic reply: out of office",
                      "I am out of the office and back on 3 December.",
                      headers={"Auto-Submitted": "auto-replied"}))
    desk.run(now=at("08:00"))
    inbound = json.loads(desk.cli("inbound", "list", "--json")[1])
    why = " ".join(desk.cli("why", inbound[0]["message_id"])[1].split())
    assert "until 2026-12-03 00:00" in why and "the date in the reply" in why
    desk.deliver(mail("jane@example.org", "Printer jam", "The printer is jammed."))
    desk.run(now=at("09:10", "2026-12-02"))
    assert desk.tickets()[0]["assignee"] == "bob@example.test"


def test_an_away_assignee_hands_the_ticket_over_at_the_reminder(desk):
    open_ticket(desk)  # assigned to alice; the response reminder comes at 09:55
    desk.deliver(mail("alice@example.test", "Out of office", "I am out of the office until Friday.",
                      headers={"Auto-Submitted": "auto-replied"}))
    desk.run(now=at("09:30"))
    desk.run(now=at("09:56"))
    t = desk.tickets()[0]
    assert t["assignee"] == "bob@example.test"
    (handed,) = desk.sent(to="bob@example.test", subject_has="Assigned to you")
    assert "who is away" in handed.text and "The printer in room 4 is jammed." in handed.text


def test_reminders_escalations_and_task_mails_carry_what_the_requester_wrote(desk):
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#task Check the toner @bob\n#note"))
    desk.run(now=at("09:20"))
    desk.run(now=at("10:11"))  # reminder at 09:55, breach at 10:10 in the same catch-up: the breach only
    desk.run(now=at("09:56", "2026-12-01"))
    for m in (desk.sent(subject_has="Task 1")[0], desk.sent(subject_has="Escalated")[0]):
        assert "The printer in room 4 is jammed." in m.text, m.subject


def test_the_requester_is_told_of_on_hold_with_the_technicians_words_and_of_withdrawal(desk):
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#status on-hold\nWe are waiting for a new drum."))
    desk.run(now=at("09:30"))
    (held,) = desk.sent(to="jane@example.org", subject_has="On hold")
    assert "waiting for a new drum" in held.text
    assert not desk.sent(to="jane@example.org", subject_has="Re:")  # said once, not relayed again
    ack = desk.sent(to="jane@example.org")[0]
    desk.deliver(reply_to(ack, "jane@example.org", "#close\nIt works again, sorry."))
    desk.run(now=at("09:40"))
    (gone,) = desk.sent(to="jane@example.org", subject_has="Withdrawn")
    assert "INC-1" in gone.subject


def test_closing_without_a_survey_tells_the_requester_it_is_closed(desk):
    desk.write_config(survey={"enabled": False})
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nCleared the jam."))
    desk.run(now=at("09:30"))
    desk.run(now=at("10:00", "2026-12-04"))  # auto-close after 3 days
    (closed,) = desk.sent(to="jane@example.org", subject_has="Closed")
    assert "is closed" in closed.text


def test_the_weekly_report_reaches_the_process_owners_once_as_text_and_html(desk):
    desk.write_config(roles={"incident_managers": ["im@example.test"], "process_owners": ["owner@example.test"]},
                      reports={"weekly": "mon 08:00"})
    open_ticket(desk, when="09:10")  # Monday 30 Nov: after this week's report moment
    desk.run(now=at("08:30", "2026-12-07"))
    desk.run(now=at("09:30", "2026-12-07"))
    (report,) = desk.sent(to="owner@example.test")
    assert "KPI report" in report.subject and "Tickets opened 1" in report.text
    html = report.message.get_body(preferencelist=("html",)).get_content()
    assert "<table" in html and "Tickets opened 1" in html
    desk.run(now=at("09:00", "2026-12-08"))
    assert len(desk.sent(to="owner@example.test")) == 1


def test_the_report_credits_resolvers_charges_holders_and_counts_an_escalation_once(desk):
    notice = open_ticket(desk)
    desk.run(now=at("10:11"))  # response breach: escalated from alice to carol (network)
    carol = desk.sent(to="carol@example.test", subject_has="Escalated")[0]
    desk.deliver(reply_to(carol, "carol@example.test", "#resolve fixed\nNew drum."))
    desk.run(now=at("10:30"))
    r = json.loads(desk.cli("report", "--now", at("10:31"), "--json")[1])
    o = r["overall"]
    assert o["first_contact_resolution_rate"] == 0.0  # escalated: not first contact
    assert o["escalations"] == 1 and o["escalated_tickets"] == 1
    assert r["by_technician"]["carol@example.test"]["resolved"] == 1
    assert r["by_technician"]["alice@example.test"]["targets_missed_while_held"] == 1
    (missed,) = r["missed_targets"]
    assert missed["target"] == "response" and missed["held_by"] == "alice@example.test"
    assert "medium" in r["by_priority"]
    assert notice is not None


def test_what_every_user_sees_reads_well(desk):
    """Issue 13 point 11: one signature, words not config values, usable links in plain text,
    a clean follow-up subject, and `tickets show` listing each mail once."""
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "Please try tray 1 meanwhile.\n\nAlice"))
    desk.run(now=at("09:20"))
    (relay,) = desk.sent(to="jane@example.org", subject_has="Re:")
    assert relay.text.count("Alice") == 1
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nCleared the jam."))
    desk.run(now=at("09:30"))
    (res,) = desk.sent(to="jane@example.org", subject_has="Resolved")
    assert "in 3 days" in res.text and "3d" not in res.text
    assert '"#close"' in res.text
    link_lines = [line for line in res.text.splitlines() if "mailto:" in line]
    assert link_lines and all(line.startswith("<mailto:") and line.endswith(">") for line in link_lines)
    desk.run(now=at("10:00", "2026-12-14"))  # closed, and past the reopen window
    desk.deliver(reply_to(res, "jane@example.org", "It is jammed again."))
    desk.run(now=at("10:05", "2026-12-14"))
    follow = desk.tickets()[0]
    assert follow["ref"] == "INC-2" and follow["subject"] == "Printer jam"
    shown = desk.ticket("INC-1")["messages"]
    tech = [m for m in shown if m["direction"] == "in" and m["from"] == "alice@example.test" and "tray 1" in m["body"]]
    assert len(tech) == 1
    out_kinds = [m["kind"] for m in shown if m["direction"] == "out"]
    assert "ack" in out_kinds and "assigned" in out_kinds and "relay" in out_kinds and "resolution" in out_kinds


def test_a_late_breach_says_how_late_in_words():
    import datetime as dt

    from maildesk.desk.escalation import late_by
    due = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)
    assert late_by(due + dt.timedelta(seconds=20), due) == "less than a minute late"
    assert late_by(due + dt.timedelta(hours=26, minutes=5), due) == "1d 2h 5m late"


def _closed_with_survey(desk):
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nCleared the jam."))
    desk.run(now=at("09:30"))
    desk.run(now=at("10:00", "2026-12-03"))  # auto-closed after 3 days: the survey goes out
    (survey,) = desk.sent(to="jane@example.org", subject_has="ow did we do") or desk.sent(
        to="jane@example.org", subject_has="urvey")
    return survey


def test_a_survey_answered_in_words_of_praise_is_feedback_and_does_not_reopen(desk):
    survey = _closed_with_survey(desk)
    desk.deliver(reply_to(survey, "jane@example.org", "Great service, very quick!"))
    desk.run(now=at("10:30", "2026-12-03"))
    t = desk.ticket("INC-1")
    assert t["status"] == "closed" and t["survey"]["comment"] == "Great service, very quick!"
    assert t["survey"]["rating"] is None
    assert len(desk.tickets()) == 1


def test_a_survey_reply_saying_the_problem_is_back_after_the_reopen_window_opens_a_follow_up(desk):
    survey = _closed_with_survey(desk)
    desk.deliver(reply_to(survey, "jane@example.org", "The printer is jammed again, same tray."))
    desk.run(now=at("10:00", "2026-12-10"))  # past the 7-day reopen window
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert tickets["INC-1"]["status"] == "closed" and "INC-2" in tickets
    assert desk.ticket("INC-2")["follows"] == "INC-1"


def test_a_survey_reply_that_starts_with_a_number_is_a_rating_with_its_comment(desk):
    survey = _closed_with_survey(desk)
    desk.deliver(reply_to(survey, "jane@example.org", "4 - quick, but the first answer was vague"))
    desk.run(now=at("10:30", "2026-12-03"))
    s = desk.ticket("INC-1")["survey"]
    assert s["rating"] == 4 and s["comment"] == "quick, but the first answer was vague"


def test_history_by_mail_gives_the_technician_the_conversation_and_the_notes(desk):
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#note\nToner low too; ordered."))
    desk.run(now=at("09:20"))
    desk.deliver(reply_to(notice, "alice@example.test", "#history"))
    desk.run(now=at("09:25"))
    (hist,) = desk.sent(to="alice@example.test", subject_has="History")
    assert "The printer in room 4 is jammed." in hist.text and "Toner low too" in hist.text
    assert "[internal]" in hist.text
    assert not desk.sent(to="jane@example.org", subject_has="History")


def test_a_technician_logs_a_phone_call_with_for_and_the_caller_gets_the_acknowledgement(desk):
    desk.write_config(sla=POLICIES)
    desk.deliver(mail("alice@example.test", "Laptop does not boot",
                      "#for bob.caller@example.org\nBob called: his laptop shows a black screen since this morning."))
    desk.run(now=at("09:00"))
    (t,) = desk.tickets()
    assert t["requester"] == "bob.caller@example.org"
    (ack,) = desk.sent(to="bob.caller@example.org")
    assert "Alice has logged what you reported as incident INC-1" in ack.text
    assert "In-Reply-To" not in ack.data.decode(errors="replace").split("\r\n\r\n", 1)[0]
    assert not desk.sent(to="alice@example.test", subject_has="We have received")


def test_for_from_someone_who_is_not_a_technician_is_refused_and_opens_nothing(desk):
    desk.deliver(mail("mallory@example.org", "please", "#for ceo@example.test\nReset my password."))
    desk.run(now=at("09:00"))
    assert desk.tickets() == []
    (refused,) = desk.sent(to="mallory@example.org")
    assert "only technicians" in refused.text
    assert not desk.sent(to="ceo@example.test")


def test_help_tells_a_requester_what_close_does_on_an_open_ticket(desk):
    open_ticket(desk)
    ack = desk.sent(to="jane@example.org")[0]
    desk.deliver(reply_to(ack, "jane@example.org", "#help"))
    desk.run(now=at("09:20"))
    (help_mail,) = desk.sent(to="jane@example.org", subject_has="elp") or desk.sent(to="jane@example.org")[1:]
    assert "withdraw" in help_mail.text


def test_done_then_resolve_in_one_mail_is_checked_in_order_and_works(desk):
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#task Replace the drum\n#note"))
    desk.run(now=at("09:20"))
    desk.deliver(reply_to(notice, "alice@example.test", "#done 1\n#resolve fixed\nNew drum in."))
    desk.run(now=at("09:30"))
    t = desk.ticket("INC-1")
    assert t["status"] == "resolved" and t["tasks"][0]["done"] is True


def test_resolve_before_done_in_one_mail_is_refused_and_changes_nothing(desk):
    notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#task Replace the drum\n#note"))
    desk.run(now=at("09:20"))
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\n#done 1\nNew drum in."))
    desk.run(now=at("09:30"))
    t = desk.ticket("INC-1")
    assert t["status"] == "open" and t["tasks"][0]["done"] is False
    (refused,) = desk.sent(to="alice@example.test", subject_has="efused") or [
        m for m in desk.sent(to="alice@example.test") if "open tasks" in m.text]
    assert "open tasks" in refused.text and "not run" in refused.text


def test_an_incident_manager_links_a_ticket_by_its_subject_tag_in_a_new_mail(desk):
    """Issue 13 point 4: told by the desk to '#link INC-9', he could not: he was never
    mailed about the child. Staff may address a ticket by its tag in a new mail."""
    desk.write_config(sla=POLICIES)
    desk.deliver(mail("jane@example.org", "Mail server down", "Nobody can send mail."))
    desk.deliver(mail("ann@example.org", "cannot send mail", "Outlook says the server is unavailable."))
    desk.run(now=at("09:00"))
    notice = desk.sent(to="alice@example.test", subject_has="[INC-1]")[-1]
    desk.deliver(reply_to(notice, "alice@example.test", "#major"))
    desk.run(now=at("09:02"))
    desk.deliver(mail("im@example.test", "[INC-2] cannot send mail", "#link INC-1"))
    desk.run(now=at("09:05"))
    assert desk.ticket("INC-2")["parent"] == "INC-1"


def test_a_stranger_naming_a_ticket_by_its_tag_in_a_new_mail_runs_nothing(desk):
    open_ticket(desk)
    desk.deliver(mail("mallory@evil.example", "[INC-1] Printer jam", "#close"))
    desk.run(now=at("09:20"))
    assert desk.ticket("INC-1")["status"] == "open"


def test_the_manager_told_of_a_missed_target_may_reassign_the_ticket_by_reply(desk):
    """Staff are technicians, group managers, incident managers and process owners; the
    manager of the ticket's group may use the technicians' commands (docs/mail.md)."""
    open_ticket(desk)
    desk.write_config(groups=[{"name": "service-desk", "tier": 1, "manager": "lead@example.test"},
                              {"name": "network", "tier": 2, "manager": "netlead@example.test"}])
    desk.run(now=at("11:11"))  # response unmet after a second period: level 2 to lead (no escalation path now)
    (l2,) = desk.sent(to="lead@example.test", subject_has="ESCALATION")
    desk.deliver(reply_to(l2, "lead@example.test", "#assign bob\nBob, please take this one."))
    desk.run(now=at("11:20"))
    t = desk.ticket("INC-1")
    assert t["assignee"] == "bob@example.test"
    assert not desk.sent(to="jane@example.org", subject_has="Re:")  # a staff-only mail's answer stays internal
