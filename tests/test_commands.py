"""Technicians work the desk by mail: relayed replies, #commands, notes, tasks, roles
and sender authentication (issue 5; DESIGN section 4 and guarantee 5)."""

from __future__ import annotations

import re

import pytest

from tests.builders import answer, events, mail, open_ticket, reply_to

AR_PASS = "mx.example.test; dkim=pass header.d=example.test; dmarc=pass header.from=example.test"


def command(desk, notice, text, frm="alice@example.test", headers=None):
    """`frm` answers `notice` with `text`; what the desk sends after it is all the sink holds."""
    desk.smtp.reset()
    answer(desk, notice, text, frm=frm, headers=headers)


# --- relayed replies ---------------------------------------------------------------


def test_a_technicians_reply_goes_to_the_requester_from_the_desk_with_their_name(desk):
    ack, notice = open_ticket(desk, msgid="<req-1@client.example>")
    command(desk, notice, "Hi Jane, I will swap the drum at 2 pm.\n\n--\nAlice\nIT", frm="Alice <alice@example.test>")
    (relay,) = desk.sent(to="jane@example.org")
    assert relay.message["From"].addresses[0].display_name == "Alice via Example IT Service Desk"
    assert relay.message["From"].addresses[0].addr_spec == "helpdesk@example.test"
    assert "[INC-1]" in relay.subject
    assert relay.header("In-Reply-To") == ack.header("Message-ID")  # in the requester's own thread
    assert "<req-1@client.example>" in relay.header("References")
    assert "I will swap the drum at 2 pm." in relay.text
    assert "> " not in relay.text and "Assigned to you" not in relay.text  # no quoted history
    assert relay.header("Auto-Submitted") is None
    t = desk.tickets()[0]
    assert t["first_response_at"] is not None


def test_a_requesters_reply_reaches_the_assignee(desk):
    ack, notice = open_ticket(desk)
    command(desk, ack, "It now also jams.", frm="jane@example.org")
    (fwd,) = desk.sent(to="alice@example.test")
    assert "It now also jams." in fwd.text and "[INC-1]" in fwd.subject
    shown = fwd.message["From"].addresses[0].display_name
    assert "Jane Doe" in shown or "jane@example.org" in shown


def test_cc_participants_get_the_technicians_reply(desk):
    desk.deliver(mail("jane@example.org", "Monitor dead", "No picture.", cc="boss@example.org"))
    desk.run()
    notice = desk.sent(to="alice@example.test")[-1]
    answer(desk, notice, "New monitor on its way.")
    assert desk.sent(to="boss@example.org") and desk.sent(to="jane@example.org")


# --- commands -----------------------------------------------------------------------


def test_each_command_changes_the_ticket_and_records_an_event(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#assign bob\n#priority high\n#category Network\n#impact high\n#urgency high")
    t = desk.tickets()[0]
    assert (t["assignee"], t["priority"], t["category"], t["impact"], t["urgency"]) == (
        "bob@example.test", "high", "Network", "high", "high")
    assert desk.sent(to="bob@example.test")  # the new assignee is told
    command(desk, notice, "#group network")
    t = desk.tickets()[0]
    assert t["group"] == "network" and t["assignee"] == "carol@example.test"
    command(desk, notice, "#status in-progress")
    assert desk.tickets()[0]["status"] == "in-progress"
    command(desk, notice, "#cc boss@example.org")
    kinds = {e["kind"] for e in events(desk)}
    assert {"assigned", "priority", "category", "group", "status", "cc-added"} <= kinds
    assert all(e["actor"] == "alice@example.test" for e in events(desk, kind="cc-added"))


def test_assign_me_assigns_the_sender(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#assign me", frm="bob@example.test")
    # bob answers a mail that was sent to alice: that signed id is not his
    assert desk.tickets()[0]["assignee"] == "alice@example.test"
    (refusal,) = desk.sent(to="bob@example.test")
    assert "not sent to bob@example.test" in refusal.text
    bob_notice = desk.sent(to="bob@example.test")[-1]
    command(desk, bob_notice, "#assign me", frm="bob@example.test")
    assert desk.tickets()[0]["assignee"] == "bob@example.test"


def test_commands_are_case_insensitive_and_html_mail_is_read_as_text(desk):
    ack, notice = open_ticket(desk)
    desk.smtp.reset()
    raw = mail("alice@example.test", "Re: " + notice.subject, None,
               html="<html><body><div>#STATUS in-progress</div><div>#Priority High</div><br><p>On it.</p></body></html>",
               in_reply_to=notice.header("Message-ID"), references=[notice.header("Message-ID")])
    desk.deliver(raw)
    desk.run()
    t = desk.tickets()[0]
    assert t["status"] == "in-progress" and t["priority"] == "high"
    assert "On it." in desk.sent(to="jane@example.org")[0].text


def test_one_bad_line_changes_nothing_and_the_reply_lists_each_line(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#status in-progress\n#priority urgentest\n#frobnicate now\n\nText for Jane.")
    t = desk.tickets()[0]
    assert t["status"] == "open" and t["priority"] == "medium"
    assert not desk.sent(to="jane@example.org")  # nothing relayed
    (refusal,) = desk.sent(to="alice@example.test")
    text = refusal.text
    assert "#status in-progress" in text and "-> ok" in text
    assert "#priority urgentest" in text and "needs a priority" in text
    assert "#frobnicate now" in text and "unknown command" in text
    assert "Not done" in refusal.subject and "[INC-1]" in refusal.subject
    assert events(desk, kind="refused")


def test_a_mail_of_commands_only_is_not_relayed(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#status in-progress\n#priority low")
    assert desk.tickets()[0]["status"] == "in-progress"
    assert not desk.sent(to="jane@example.org")


def test_a_note_never_reaches_the_requester(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#note\nJane's printer is under warranty; call the vendor.")
    assert not desk.sent(to="jane@example.org")
    msgs = desk.ticket("INC-1")["messages"]
    note = msgs[-1]
    assert note["internal"] is True and "under warranty" in note["body"] and "#note" not in note["body"]
    assert desk.tickets()[0]["first_response_at"] is None  # a note is no response


def test_help_lists_the_commands_this_sender_may_use(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#help")
    staff_help = desk.sent(to="alice@example.test")[0].text
    assert "#assign" in staff_help and "#resolve" in staff_help
    command(desk, ack, "#help", frm="jane@example.org")
    requester_help = desk.sent(to="jane@example.org")[0].text
    assert "#close" in requester_help and "#reopen" in requester_help and "#assign" not in requester_help


def test_tasks_are_numbered_their_assignee_told_and_resolve_waits_for_them(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#task order a new drum @bob\n#task test print")
    tasks = desk.ticket("INC-1")["tasks"]
    assert [(k["number"], k["title"], k["assignee"], k["done"]) for k in tasks] == [
        (1, "order a new drum", "bob@example.test", False), (2, "test print", None, False)]
    (told,) = desk.sent(to="bob@example.test")
    assert "order a new drum" in told.text and "#done 1" in told.text
    command(desk, notice, "#resolve fixed\nDrum replaced.")
    assert desk.tickets()[0]["status"] == "open"
    refusal = desk.sent(to="alice@example.test")[0].text
    assert "open tasks" in refusal and "#1 order a new drum" in refusal and "#2 test print" in refusal
    command(desk, notice, "#done 1\n#done 2")
    assert all(k["done"] for k in desk.ticket("INC-1")["tasks"])
    command(desk, notice, "#resolve fixed\nDrum replaced.")
    assert desk.tickets()[0]["status"] == "resolved"


def test_escalate_moves_the_ticket_to_the_next_group(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#escalate")
    t = desk.tickets()[0]
    assert t["group"] == "network" and t["assignee"] == "carol@example.test"
    assert desk.sent(to="carol@example.test")


def test_major_and_link_make_parent_and_child(desk):
    ack, notice = open_ticket(desk, subject="Printers down on floor 2", body="No printer prints.")
    desk.deliver(mail("joe@example.org", "My printer does nothing", "Nothing comes out."))
    desk.run()
    bob_notice = desk.sent(to="bob@example.test")[-1]
    command(desk, bob_notice, "#link INC-1", frm="bob@example.test")
    refusal = desk.sent(to="bob@example.test")[0].text
    assert "not a major incident" in refusal
    command(desk, notice, "#major")
    t1 = next(t for t in desk.tickets() if t["ref"] == "INC-1")
    assert t1["priority"] == "critical" and t1["is_major"]
    (told,) = desk.sent(to="im@example.test")
    assert "MAJOR INCIDENT" in told.subject
    command(desk, bob_notice, "#link INC-1", frm="bob@example.test")
    t2 = next(t for t in desk.tickets() if t["ref"] == "INC-2")
    assert t2["parent"] == "INC-1"
    assert desk.ticket("INC-1")["children"] == ["INC-2"]


def test_requester_may_close_their_own_ticket_but_not_anothers(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(mail("joe@example.org", "Mouse broken", "Left button."))
    desk.run()
    joe_ack = desk.sent(to="joe@example.org")[-1]
    desk.smtp.reset()
    # Joe answers his own acknowledgement, but names Jane's ticket in the subject
    raw = reply_to(joe_ack, "joe@example.org", "#close", subject="Re: [INC-1] Printer")
    desk.deliver(raw)
    desk.run()
    assert {t["ref"]: t["status"] for t in desk.tickets()}["INC-1"] == "open"
    command(desk, ack, "#close", frm="jane@example.org")
    assert {t["ref"]: t["status"] for t in desk.tickets()}["INC-1"] == "cancelled"


def test_a_requester_may_not_run_technician_commands(desk):
    ack, notice = open_ticket(desk)
    command(desk, ack, "#priority critical", frm="jane@example.org")
    assert desk.tickets()[0]["priority"] == "medium"
    (refusal,) = desk.sent(to="jane@example.org")
    assert "only technicians" in refusal.text


def test_an_unknown_hash_word_in_a_requesters_mail_is_plain_text(desk):
    ack, notice = open_ticket(desk)
    desk.smtp.reset()
    command(desk, ack, "#thanks for the quick help\n#blessed it prints again, almost.", frm="jane@example.org")
    assert not desk.sent(to="jane@example.org")  # no refusal
    (relay,) = desk.sent(to="alice@example.test")
    assert "#thanks for the quick help" in relay.text and "#blessed it prints again" in relay.text
    assert not events(desk, kind="refused") and desk.tickets()[0]["status"] == "open"
    desk.smtp.reset()
    command(desk, ack, "#status\n#wow what a desk", frm="jane@example.org")  # a known query, then text
    (status,) = [m for m in desk.sent(to="jane@example.org")]
    assert "Not done" not in status.subject
    (relay,) = desk.sent(to="alice@example.test")
    assert "#wow what a desk" in relay.text
    desk.smtp.reset()
    command(desk, notice, "#frobnicate now\nFor Jane.")  # a technician's unknown command is still refused
    assert "unknown command" in desk.sent(to="alice@example.test")[0].text and not desk.sent(to="jane@example.org")


# --- authentication -------------------------------------------------------------------


STRICT = {"trust_sender_address": False, "trusted_authserv_ids": ["mx.example.test"]}


@pytest.fixture
def strict_desk(desk):
    desk.write_config(security=STRICT)
    return desk


@pytest.mark.parametrize("results", [
    AR_PASS,  # DMARC
    "mx.example.test; dkim=pass header.d=example.test; dmarc=none",  # an aligned DKIM pass is enough
], ids=["dmarc-pass", "aligned-dkim-pass"])
def test_an_authenticated_technician_runs_commands(strict_desk, results):
    ack, notice = open_ticket(strict_desk)
    command(strict_desk, notice, "#status in-progress", headers={"Authentication-Results": results})
    assert strict_desk.tickets()[0]["status"] == "in-progress"


@pytest.mark.parametrize("headers,why", [
    ({}, "no Authentication-Results header from a trusted server"),
    ({"Authentication-Results": "mx.example.test; dmarc=fail header.from=example.test"}, "do not pass"),
    ({"Authentication-Results": "mx.evil.example; dmarc=pass header.from=example.test"}, "no Authentication-Results"),
    ({"Authentication-Results": "mx.example.test; dkim=pass header.d=evil.example"}, "do not pass"),
])
def test_a_forged_technician_changes_nothing_and_is_told_why(strict_desk, headers, why):
    ack, notice = open_ticket(strict_desk)
    command(strict_desk, notice, "#status in-progress\nHi Jane, here is a link to reset your password.", headers=headers)
    t = strict_desk.tickets()[0]
    assert t["status"] == "open"
    assert not strict_desk.sent(to="jane@example.org")  # never relayed
    (told,) = strict_desk.sent(to="alice@example.test")
    assert why in told.text
    note = strict_desk.ticket("INC-1")["messages"][-1]
    assert note["internal"] and note["kind"] == "unauthenticated"


@pytest.mark.parametrize("security,old,new", [
    # a forger adds a passing header below the receiving server's failing one: only the topmost counts
    (STRICT, b"From:", b"Authentication-Results: mx.example.test; dmarc=fail header.from=example.test\r\n"
                       b"Authentication-Results: mx.example.test; dmarc=pass header.from=example.test\r\nFrom:"),
    # two From addresses never run commands, even where sender addresses are trusted
    ({"trust_sender_address": True}, b"From: alice@example.test", b"From: alice@example.test, mallory@evil.example"),
], ids=["forged-lower-auth-results", "two-from-addresses"])
def test_a_technicians_reply_a_forger_edited_runs_no_command(desk, security, old, new):
    desk.write_config(security=security)
    ack, notice = open_ticket(desk)
    desk.smtp.reset()
    raw = reply_to(notice, "alice@example.test", "#status in-progress")
    assert old in raw
    desk.deliver(raw.replace(old, new, 1))
    desk.run()
    assert desk.tickets()[0]["status"] == "open"


@pytest.mark.parametrize("cites", [
    lambda notice: re.sub(r"-[0-9a-f]{20}@", "-" + "0" * 20 + "@", notice.header("Message-ID")),
    lambda notice: "CAF-not-the-desks@mail.example.org",
], ids=["forged-signature", "someone-elses-mail"])
def test_a_command_mail_that_cites_no_genuine_desk_mail_changes_nothing_and_says_why(desk, cites):
    ack, notice = open_ticket(desk)
    desk.smtp.reset()
    cited = cites(notice)
    desk.deliver(mail("alice@example.test", "Re: [INC-1] Printer", "#status in-progress",
                      in_reply_to=cited, references=[cited] if cited else None))
    desk.run()
    assert desk.tickets()[0]["status"] == "open"
    why = ("claims to be desk mail but its signature is wrong (spoofed)" if "example.test" in cited
           else "answers no desk mail")
    assert any(why in e["detail"] for e in events(desk, kind="unauthenticated"))
    assert why in desk.sent(to="alice@example.test")[0].text


def test_staff_may_address_a_ticket_by_its_tag_in_a_new_mail_when_authenticated(desk):
    open_ticket(desk)
    desk.deliver(mail("alice@example.test", "Re: [INC-1] Printer", "#status in-progress"))
    desk.run()
    assert desk.tickets()[0]["status"] == "in-progress"  # the fixture trusts the sender address
    desk.write_config(security={"trust_sender_address": False})
    desk.deliver(mail("alice@example.test", "[INC-1] Printer", "#status on-hold"))
    desk.run()
    assert desk.tickets()[0]["status"] == "in-progress"


def test_trust_sender_address_is_what_lets_plain_mail_through(desk):
    ack, notice = open_ticket(desk)
    command(desk, notice, "#status in-progress")  # the fixture trusts the sender address
    assert desk.tickets()[0]["status"] == "in-progress"
    desk.write_config(security={"trust_sender_address": False})
    command(desk, notice, "#status on-hold")
    assert desk.tickets()[0]["status"] == "in-progress"
