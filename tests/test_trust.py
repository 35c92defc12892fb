"""Trust: who may join, read and act on a ticket (issue 12 items 1-4 and 6; DESIGN
section 4 and guarantee 7). Each attack is written as an attacker would write it and
goes through the real Dovecot and SMTP sink; each test asserts the promise: nobody
outside the ticket received a byte of it, nobody was muted, nothing was lost, and
`maildesk why` tells what happened to the attack mail.

The units under the attacks (VERP signatures, the report check, the click rules, the
command reader) are tested at the end without I/O."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import urllib.parse
from types import SimpleNamespace

import pytest

from maildesk import signing
from maildesk.desk.links import MAILTO_BODY, click_comment, judge_click
from maildesk.pipeline.commands.table import command_text, split_block
from maildesk.pipeline.screen import Report, signed_row
from maildesk.verp import verp_address, verp_pattern
from tests.conftest import mail, reply_to

AR_PASS = "mx.example.test; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
SECRET = "The new password for your account is hunter2-correct-horse"


def at(hhmm: str, day: str = "2026-11-30") -> str:
    return f"{day}T{hhmm}:00+01:00"


def open_ticket(desk, sender="Jane Doe <jane@example.org>", cc=None, now=None, subject="Printer broken",
                headers=None):
    """A new ticket from jane; returns (her acknowledgement, the notice to its assignee)."""
    desk.deliver(mail(sender, subject, "It prints blank pages.", cc=cc, msgid="<req-1@client.example>",
                      headers=headers))
    desk.run(now=now)
    return desk.sent(to="jane@example.org")[-1], desk.sent(to="alice@example.test")[-1]


def why(desk, msgid: str) -> str:
    """`maildesk why`, its wrapped lines joined."""
    code, out, err = desk.cli("why", msgid)
    assert code == 0, err
    return " ".join(out.split())


def about_ticket(desk, ref="INC-1") -> list:
    """Every mail the desk sent that concerns `ref` (by its outbox row, not its subject:
    a stranger may put any tag in the subject of their own ticket)."""
    ids = {f"<{o['message_id']}>" for o in desk.outbox() if o["ticket"] == ref}
    return [m for m in desk.smtp.messages if m.header("Message-ID") in ids]


def assert_only_reached(desk, allowed: set[str], ref="INC-1", secret: str | None = None) -> None:
    """Nobody outside `allowed` received a byte of `ref` (nor the `secret` text)."""
    for m in about_ticket(desk, ref):
        assert set(m.rcpts) <= allowed, (m.rcpts, m.subject)
    if secret:
        for m in desk.smtp.messages:
            if secret in m.data.decode("utf-8", "replace"):
                assert set(m.rcpts) <= allowed, (m.rcpts, m.subject)


def assert_nobody_muted(desk) -> None:
    rows = desk.outbox()
    assert not [o for o in rows if o["rcpt_undeliverable"]], [o["to"] for o in rows if o["rcpt_undeliverable"]]
    assert not [o for o in rows if o["status"] == "bounced"]


def participants(desk, ref="INC-1") -> set[str]:
    return {p["email"] for p in desk.ticket(ref)["participants"]}


def events(desk, ref="INC-1", kind=None) -> list[dict]:
    return [e for e in desk.ticket(ref)["events"] if kind is None or e["kind"] == kind]


def desk_key(desk) -> bytes:
    return tomllib.loads(desk.config_path.read_text())["security"]["secret"].encode()


def dsn(to: str, rcpts: list[str], *, action="failed", msgid="<dsn-1@mx.example.org>", delivered_to=None,
        original_id="<whatever@example.test>", extra="") -> bytes:
    """A delivery status notification as Postfix writes it, as anybody can write it."""
    status = "5.1.1" if action == "failed" else "4.4.1"
    blocks = "".join(f"Final-Recipient: rfc822; {r}\r\nAction: {action}\r\nStatus: {status}\r\n"
                     f"Diagnostic-Code: smtp; 550 {status} <{r}>: User unknown\r\n\r\n" for r in rcpts)
    return (
        f"Return-Path: <>\r\nDelivered-To: {delivered_to or to}\r\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {to}\r\nSubject: {'Undelivered Mail Returned to Sender' if action == 'failed' else 'Delayed Mail'}\r\n"
        f"Message-ID: {msgid}\r\n{extra}Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n{blocks}"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: helpdesk@example.test\r\n"
        f"Message-ID: {original_id}\r\nSubject: [INC-1] Printer broken\r\n--B--\r\n"
    ).encode()


def arf(to: str, rcpt: str, *, return_path: str = "", msgid="<arf-1@isp.example>") -> bytes:
    """An ARF feedback report (RFC 5965) claiming `rcpt` pressed 'this is spam'."""
    rp = f"Return-Path: <{return_path}>\r\n" if return_path else ""
    return (
        f"From: abuse@isp.example\r\nTo: {to}\r\nSubject: FW: complaint\r\nMessage-ID: {msgid}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=F\r\n\r\n"
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\n"
        f"Version: 1\r\nOriginal-Rcpt-To: {rcpt}\r\n"
        f"--F\r\nContent-Type: message/rfc822\r\n\r\n{rp}From: helpdesk@example.test\r\nTo: {rcpt}\r\n"
        "Message-ID: <x@example.test>\r\nSubject: x\r\n\r\nbody\r\n--F--\r\n"
    ).encode()


def links(captured) -> dict[str, str]:
    """The one-click mailto: subjects of a mail, by their label."""
    found = {}
    for url in re.findall(r"mailto:[^\s\"<>]+", captured.text):
        subject = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["subject"][0]
        found[subject] = subject
    return found


def click(desk, captured, label: str, frm: str = "jane@example.org", now: str | None = None,
          comment: str = "", msgid: str | None = None):
    """Somebody sends the prepared mail of a one-click link, maybe with a comment above."""
    subject = next(s for s in links(captured) if label in s)
    desk.deliver(mail(frm, subject, (comment + "\n\n" if comment else "") + MAILTO_BODY, msgid=msgid))
    desk.run(now=now)


# --- 1. signed VERP: forged bounces, delay notices and complaints change nothing -----


def test_the_envelope_sender_is_a_signed_verp_address_of_that_mail_and_its_recipient(desk):
    ack, notice = open_ticket(desk)
    row = next(o for o in desk.outbox() if o["kind"] == "ack")
    sig = signing.verp_signature(desk_key(desk), row["id"], "jane@example.org")
    assert ack.envelope_from == f"helpdesk+bounce-{row['id']}-{sig}@example.test"
    assert notice.envelope_from != ack.envelope_from


def test_a_forged_bounce_to_bounce_1_mutes_nobody_and_why_says_so(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(dsn("helpdesk+bounce-1@example.test", ["jane@example.org", "alice@example.test"],
                     msgid="<forged-1@mx.example.org>"))
    desk.run()
    assert_nobody_muted(desk)
    assert desk.inbound()[0]["outcome"] == "bounce"
    assert not events(desk, kind="bounce")
    assert "without a signature" in why(desk, "forged-1@mx.example.org")
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "alice@example.test", "Tray 2 is fixed now."))
    desk.run()
    assert desk.sent(to="jane@example.org")  # she still hears from the desk


def test_a_report_listing_bounce_1_to_199_mutes_no_technician_and_no_requester(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(mail("joe@example.org", "Mouse broken", "Left button."))
    desk.run()
    listed = [f"helpdesk+bounce-{i}@example.test" for i in range(1, 200)]
    everyone = ["jane@example.org", "joe@example.org", "alice@example.test", "bob@example.test"]
    desk.deliver(dsn(", ".join(listed), everyone, msgid="<forged-199@mx.example.org>",
                     extra="X-Envelope-To: " + " ".join(listed) + "\r\n"))
    desk.run()
    assert_nobody_muted(desk)
    assert "#1, #2, #3, #4, #5 and 194 more without a signature" in why(desk, "forged-199@mx.example.org")
    desk.smtp.reset()
    desk.deliver(mail("jane@example.org", "Another problem", "The scanner too."))
    desk.run()
    assert desk.sent(to="jane@example.org") and (desk.sent(to="alice@example.test") or desk.sent(to="bob@example.test"))


def test_a_forged_bounce_to_the_plain_desk_address_naming_a_recent_recipient_changes_nothing(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(dsn("helpdesk@example.test", ["alice@example.test"], msgid="<forged-2@mx.example.org>",
                     original_id=notice.header("Message-ID")))  # it even names her notice
    desk.run()
    assert_nobody_muted(desk)
    assert "no signed VERP address" in why(desk, "forged-2@mx.example.org")


def test_a_bounce_whose_signature_was_tampered_with_changes_nothing(desk):
    ack, notice = open_ticket(desk)
    local, _, domain = ack.envelope_from.partition("@")
    tampered = local[:-1] + ("0" if local[-1] != "0" else "1") + "@" + domain
    desk.deliver(dsn(tampered, ["jane@example.org"], msgid="<forged-3@mx.example.org>"))
    desk.run()
    assert_nobody_muted(desk)
    assert "signature that is not the desk's" in why(desk, "forged-3@mx.example.org")


def test_a_bounce_at_ones_own_signed_address_naming_someone_else_mutes_nobody(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(mail("mallory@evil.example", "Question", "Hello?"))
    desk.run()
    own = desk.sent(to="mallory@evil.example")[-1]  # mallory sees his own envelope sender
    desk.deliver(dsn(own.envelope_from, ["jane@example.org", "alice@example.test"], msgid="<forged-4@evil.example>"))
    desk.run()
    assert_nobody_muted(desk)
    ignored = events(desk, "INC-2", "report-ignored")  # recorded on the ticket the signed address names
    assert ignored and "nothing changed" in ignored[0]["detail"]
    assert "but it reports jane@example.org, alice@example.test" in why(desk, "forged-4@evil.example")


def test_a_forged_complaint_mutes_nobody_but_a_signed_one_mutes_only_its_recipient(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(arf("helpdesk@example.test", "jane@example.org", msgid="<arf-forged@isp.example>"))
    desk.deliver(arf("helpdesk+bounce-1@example.test", "alice@example.test", msgid="<arf-forged-2@isp.example>"))
    desk.run()
    assert_nobody_muted(desk)
    assert "nothing changed" in why(desk, "arf-forged@isp.example")
    desk.deliver(arf("abuse-desk@isp.example", "jane@example.org", return_path=ack.envelope_from,
                     msgid="<arf-real@isp.example>"))
    desk.run()
    muted = {o["to"]: o["rcpt_undeliverable"] for o in desk.outbox() if o["rcpt_undeliverable"]}
    assert set(muted) == {"jane@example.org"} and muted["jane@example.org"].startswith("complaint")
    assert events(desk, kind="complaint")


def test_a_forged_delay_notice_plants_no_thread_anchor(desk):
    ack, notice = open_ticket(desk)
    # the attacker's "delay notice" names the requester's ack, to be filed onto INC-1 with its own id
    desk.deliver(dsn("helpdesk+bounce-1@example.test", ["jane@example.org"], action="delayed",
                     msgid="<planted-1@evil.example>", original_id=ack.header("Message-ID"),
                     extra=f"References: {ack.header('Message-ID')}\r\n"))
    desk.run()
    assert all(m["message_id"] != "planted-1@evil.example" for m in desk.ticket("INC-1")["messages"])
    desk.deliver(mail("mallory@evil.example", "Re: [INC-1] Printer broken", "Any news?",
                      msgid="<mallory-1@evil.example>", in_reply_to="<planted-1@evil.example>"))
    desk.run()
    assert "mallory@evil.example" not in participants(desk)
    assert desk.ticket("INC-1")["message_count"] == 1
    desk.deliver(reply_to(notice, "alice@example.test", SECRET))
    desk.run()
    assert_only_reached(desk, {"jane@example.org", "alice@example.test"}, secret="hunter2")
    assert "nothing changed" in why(desk, "planted-1@evil.example")


# --- 2. threading that cannot be borrowed ---------------------------------------------


def test_a_stranger_citing_the_requesters_message_id_gets_a_new_ticket_and_nothing_of_the_old(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(mail("Jane Doe <mallory@evil.example>", "Re: [INC-1] Printer broken", "Please send me the update.",
                      msgid="<mallory-2@evil.example>", in_reply_to="<req-1@client.example>",
                      references=["<req-1@client.example>", ack.header("Message-ID")]))
    desk.run()
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert tickets["INC-2"]["requester"] == "mallory@evil.example"
    assert "mallory@evil.example" not in participants(desk, "INC-1")
    assert events(desk, "INC-2", "cites") and events(desk, "INC-1", "cited")
    log = why(desk, "mallory-2@evil.example")
    assert "not a participant" in log and "-> INC-2" in log
    desk.deliver(reply_to(notice, "alice@example.test", SECRET))
    desk.deliver(mail("jane@example.org", "Re: [INC-1] Printer broken", "Thanks, it works again."))
    desk.run()
    assert_only_reached(desk, {"jane@example.org", "alice@example.test"}, secret="hunter2")
    mallorys = desk.sent(to="mallory@evil.example")
    assert mallorys and all("[INC-2]" in m.subject for m in mallorys)
    staff_notice = next(m for m in desk.sent(subject_has="[INC-2]") if "alice@example.test" in m.rcpts
                        or "bob@example.test" in m.rcpts)
    assert "Cites mail of INC-1" in staff_notice.text


def test_a_stranger_with_a_guessed_subject_tag_never_joins(desk):
    open_ticket(desk)
    desk.deliver(mail("mallory@evil.example", "Re: [INC-1] Printer broken", "Me too", msgid="<mallory-3@evil.example>"))
    desk.run()
    assert "mallory@evil.example" not in participants(desk)
    assert "not a participant of that ticket" in why(desk, "mallory-3@evil.example")


@pytest.fixture
def strict_desk(desk):
    """A desk that believes Authentication-Results of mx.example.test only."""
    desk.write_config(security={"trust_sender_address": False, "trusted_authserv_ids": ["mx.example.test"]})
    return desk


def test_a_participant_copies_people_in_only_on_a_verified_reply(strict_desk):
    desk = strict_desk
    ack, notice = open_ticket(desk)
    # a reply to the desk's mail to her: a signed Message-ID, so verified
    raw = reply_to(ack, "jane@example.org", "My boss needs to know too.")
    desk.deliver(raw.replace(b"To: helpdesk@example.test", b"To: helpdesk@example.test\r\nCc: boss@example.org", 1))
    desk.run()
    assert "boss@example.org" in participants(desk)
    assert events(desk, kind="cc-added")
    # a new mail with the tag, citing nothing and unauthenticated: not verified
    desk.deliver(mail("jane@example.org", "Re: [INC-1] Printer broken", "Adding eve.", cc="eve@evil.example",
                      msgid="<jane-unverified@client.example>"))
    desk.run()
    assert "eve@evil.example" not in participants(desk)
    told = desk.sent(subject_has="could not be verified")
    assert told and told[-1].rcpts == ["jane@example.org"] and "eve@evil.example" in told[-1].text
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "alice@example.test", "New drum tomorrow.",
                          headers={"Authentication-Results": "mx.example.test; dmarc=pass header.from=example.test"}))
    desk.run()
    assert desk.sent(to="boss@example.org") and not desk.sent(to="eve@evil.example")


def test_a_new_mail_copied_to_thousands_makes_ten_of_them_participants_and_mails_none_of_the_rest(desk):
    """An attacker's opening mail with 2,000 addresses in Cc: every participant gets each
    relay, resolution and closure of the ticket, so one mail would make the desk mail
    thousands at every step. Ten join, as on a reply; the rest are recorded for staff."""
    victims = [f"victim{i}@example.net" for i in range(2000)]
    desk.deliver(mail("mallory@example.org", "Printer broken", "It jams.", cc=", ".join(victims)))
    desk.run(now=at("09:00"))
    copied = {p["email"] for p in desk.ticket("INC-1")["participants"] if p["role"] == "cc"}
    assert copied == set(victims[:10])
    [refused] = events(desk, kind="cc-refused")
    assert refused["detail"].startswith("1990 more in To/Cc not added") and "victim10@example.net" in refused["detail"]
    assert not [m for m in desk.sent() if set(m.rcpts) & set(victims)]  # the acknowledgement: the sender's alone
    notice = desk.sent(to="alice@example.test")[-1]
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nNew drum.",
                          headers={"Authentication-Results": "mx.example.test; dmarc=pass header.from=example.test"}))
    desk.run(now=at("10:00"))
    told = {r for m in desk.sent(subject_has="Resolved") for r in m.rcpts if not r.endswith("@example.test")}  # not staff
    assert told == {"mallory@example.org", *victims[:10]}


def test_a_reply_to_an_alert_is_recorded_and_opens_no_ticket(desk):
    desk.write_config(limits={"auto_replies_per_hour": 1})
    for i in range(3):
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Broken."))
    desk.run()
    (alert,) = desk.sent(to="im@example.test")
    before = len(desk.tickets())
    desk.deliver(reply_to(alert, "im@example.test", "Raise the limit, please."))
    desk.run()
    assert len(desk.tickets()) == before
    assert desk.inbound()[0]["outcome"] == "recorded"


# --- 3. staff-only mail stays staff-only ----------------------------------------------


def test_a_staff_reply_to_an_escalation_is_an_internal_note_and_no_first_response(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#escalate"))
    desk.run()
    escalated = desk.sent(to="carol@example.test")[-1]
    assert "for staff only" in escalated.text
    desk.smtp.reset()
    desk.deliver(reply_to(escalated, "carol@example.test", "Call the CEO now, his VPN token is 4711."))
    desk.run()
    assert not desk.sent(to="jane@example.org")
    note = desk.ticket("INC-1")["messages"][-1]
    assert note["internal"] and "CEO" in note["body"]
    assert desk.tickets()[0]["first_response_at"] is None
    assert "staff-only mail (escalated)" in why(desk, desk.inbound()[0]["message_id"])
    desk.deliver(reply_to(escalated, "carol@example.test", "#public\nWe are on it, Jane."))
    desk.run()
    (relay,) = desk.sent(to="jane@example.org")
    assert "We are on it" in relay.text and "#public" not in relay.text and "CEO" not in relay.text
    assert desk.tickets()[0]["first_response_at"] is not None


def test_a_done_note_answering_a_task_mail_stays_internal(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#task swap the drum @bob"))
    desk.run()
    task_mail = desk.sent(to="bob@example.test")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(task_mail, "bob@example.test", "#done 1\nSwapped; the service PIN is 0000."))
    desk.run()
    assert desk.ticket("INC-1")["tasks"][0]["done"]
    assert not desk.sent(to="jane@example.org")


def test_a_reply_to_the_major_incident_notice_stays_internal(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#major"))
    desk.run()
    major = desk.sent(to="im@example.test")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(major, "im@example.test", "Call the CEO now."))
    desk.run()
    assert not desk.sent(to="jane@example.org")
    assert desk.ticket("INC-1")["messages"][-1]["internal"]


def test_resolving_in_a_reply_to_a_staff_only_mail_sends_the_templates_words_only(desk):
    ack, notice = open_ticket(desk)
    desk.deliver(reply_to(notice, "alice@example.test", "#escalate"))
    desk.run()
    escalated = desk.sent(to="carol@example.test")[-1]
    desk.smtp.reset()
    desk.deliver(reply_to(escalated, "carol@example.test", "#resolve fixed\nRoot cause: Bob's typo in the firewall."))
    desk.run()
    (res,) = desk.sent(to="jane@example.org")
    assert "Resolved" in res.subject and "typo" not in res.text and "marked it resolved" in res.text
    assert any(m["internal"] and "typo" in m["body"] for m in desk.ticket("INC-1")["messages"])


@pytest.mark.parametrize("prefix", ["\uff03note", "\u200b#note", "\u200f#note", "#\uff4e\uff4f\uff54\uff45",
                                    "\ufeff#note", "\u00a0\u200b\n#note"])
def test_a_look_alike_note_stays_internal(desk, prefix):
    ack, notice = open_ticket(desk)
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "alice@example.test", f"{prefix}\nJane's manager says she is on notice."))
    desk.run()
    assert not desk.sent(to="jane@example.org")
    note = desk.ticket("INC-1")["messages"][-1]
    assert note["internal"] and note["kind"] == "note" and "on notice" in note["body"]


# --- 4. honest attribution ------------------------------------------------------------


def test_staff_notices_name_the_real_sender_never_a_borrowed_display_name(desk):
    ack, notice = open_ticket(desk, cc="boss@example.org")
    desk.smtp.reset()
    desk.deliver(reply_to(ack, "Jane Doe <boss@example.org>", "Please cancel the drum, I changed my mind."))
    desk.run()
    (told,) = desk.sent(to="alice@example.test")
    assert told.text.startswith("boss@example.org wrote on INC-1") and "Jane Doe" not in told.text
    assert "Jane Doe" not in told.message["From"].addresses[0].display_name
    desk.deliver(mail("IT Security Team <mallory@evil.example>", "Password check", "Send me your password."))
    desk.run()
    new = next(m for m in desk.sent(subject_has="[INC-2]") if "mallory@evil.example" not in m.rcpts)
    assert "mallory@evil.example wrote" in new.text and "IT Security Team" not in new.text


def test_a_reply_to_that_names_someone_else_is_shown_to_staff_and_never_written_to(desk):
    ack, notice = open_ticket(desk, headers={"Reply-To": "Jane <jane@evil.example>"})
    assert "jane@evil.example" not in {r for m in desk.smtp.messages for r in m.rcpts}
    assert "Note: Reply-To jane@evil.example differs from the sender jane@example.org" in notice.text
    assert "jane@evil.example" not in ack.text  # the requester's own mail says nothing of it
    desk.smtp.reset()
    desk.deliver(reply_to(ack, "jane@example.org", "Still blank.", headers={"Reply-To": "drop@evil.example"}))
    desk.run()
    (told,) = desk.sent(to="alice@example.test")
    assert "Reply-To drop@evil.example differs from the sender" in told.text
    assert not [m for m in desk.smtp.messages if "drop@evil.example" in m.rcpts]
    assert [e["detail"] for e in events(desk, kind="reply-to")] == [
        "Reply-To jane@evil.example differs from the sender jane@example.org; the desk writes only to the sender's "
        "stored address",
        "Reply-To drop@evil.example differs from the sender jane@example.org; the desk writes only to the sender's "
        "stored address"]
    assert "jane@evil.example" not in participants(desk) and "drop@evil.example" not in participants(desk)
    desk.smtp.reset()
    desk.deliver(reply_to(ack, "jane@example.org", "Same as before.", headers={"Reply-To": "Jane <JANE@example.org>"}))
    desk.run()
    (told,) = desk.sent(to="alice@example.test")
    assert "Reply-To" not in told.text  # her own address is no news


def test_a_relay_carries_the_technicians_configured_name(desk):
    ack, notice = open_ticket(desk)
    desk.smtp.reset()
    desk.deliver(reply_to(notice, "The CEO <alice@example.test>", "On my way."))
    desk.run()
    (relay,) = desk.sent(to="jane@example.org")
    assert relay.message["From"].addresses[0].display_name == "Alice via Example IT Service Desk"


def test_requester_mail_that_failed_authentication_is_flagged_for_staff(strict_desk):
    desk = strict_desk
    open_ticket(desk, headers={"Authentication-Results": "mx.example.test; dmarc=fail header.from=example.org"})
    notice = desk.sent(to="alice@example.test")[-1]
    assert "WARNING: this mail failed authentication" in notice.text
    desk.deliver(mail("joe@example.org", "Mouse", "Broken.", headers={"Authentication-Results": AR_PASS}))
    desk.run()
    notice = next(m for m in desk.sent(subject_has="[INC-2]") if "joe@example.org" not in m.rcpts)
    assert "WARNING" not in notice.text


# --- 6. one-click for the requester alone ----------------------------------------------


def resolve(desk, notice, now, text="#resolve fixed\nI replaced the drum."):
    desk.deliver(reply_to(notice, "alice@example.test", text))
    desk.run(now=now)
    return next(m for m in reversed(desk.sent(to="jane@example.org")) if "Resolved" in m.subject)


def test_cc_participants_get_the_resolution_without_links_and_their_click_changes_nothing(desk):
    ack, notice = open_ticket(desk, cc="boss@example.org", now=at("09:00"))
    res = resolve(desk, notice, at("10:00"))
    boss_res = next(m for m in desk.sent(to="boss@example.org") if "Resolved" in m.subject)
    assert "mailto:" not in boss_res.text and "replaced the drum" in boss_res.text
    assert len(links(res)) == 2
    # the boss gets hold of jane's link (a forward) and clicks "not fixed" from his own account
    click(desk, res, "No, it is not fixed", frm="boss@example.org", now=at("10:30"), comment="Reopen it!",
          msgid="<boss-click@example.org>")
    assert desk.tickets()[0]["status"] == "resolved"
    refused = events(desk, kind="click-refused")
    assert refused and "made for jane@example.org was sent by boss@example.org" in refused[0]["detail"]
    assert "nothing changed" in why(desk, "boss-click@example.org")
    assert any(m["kind"] == "click-refused" and "Reopen it!" in m["body"] for m in desk.ticket("INC-1")["messages"])


def test_the_reopening_notice_names_who_wrote_whether_it_was_verified_and_a_failed_authentication(desk):
    """A reply in the requester's name reopens a resolved ticket (DESIGN section 5), verified
    or not; the notice that tells staff says which, as every staff notice does, and warns
    when the mail failed authentication at a server the desk trusts."""
    ack, notice = open_ticket(desk, now=at("09:00"))
    res = resolve(desk, notice, at("10:00"))
    desk.write_config(security={"trust_sender_address": False, "trusted_authserv_ids": ["mx.example.test"]})
    failed = {"Authentication-Results": "mx.example.test; dmarc=fail header.from=example.org"}
    # a new mail with the tag, citing nothing, that failed authentication: not verified
    desk.deliver(mail("jane@example.org", "Re: [INC-1] Printer broken", "It jams again.", headers=failed))
    desk.run(now=at("10:30"))
    assert desk.tickets()[0]["status"] == "open"
    reopened = desk.sent(to="alice@example.test", subject_has="Reopened")[-1]
    assert "By jane@example.org (the requester): NOT verified" in reopened.text
    assert "WARNING: this mail failed authentication" in reopened.text
    assert "--- jane@example.org wrote ---" in reopened.text and "It jams again." in reopened.text
    # resolved again; her reply to the resolution cites a desk Message-ID signed for her: verified
    desk.deliver(reply_to(notice, "alice@example.test", "#resolve fixed\nNew drum.",
                          headers={"Authentication-Results": "mx.example.test; dmarc=pass header.from=example.test"}))
    desk.run(now=at("11:00"))
    res = next(m for m in reversed(desk.sent(to="jane@example.org")) if "Resolved" in m.subject)
    desk.deliver(reply_to(res, "jane@example.org", "Still blank pages.",
                          headers={"Authentication-Results": "mx.example.test; dmarc=pass header.from=example.org"}))
    desk.run(now=at("11:30"))
    reopened = desk.sent(to="alice@example.test", subject_has="Reopened")[-1]
    assert "Still blank pages." in reopened.text
    assert "By jane@example.org (the requester): verified" in reopened.text and "WARNING" not in reopened.text


def test_a_confirm_from_a_stale_resolution_does_nothing_and_the_current_one_closes(desk):
    ack, notice = open_ticket(desk, now=at("09:00"))
    first = resolve(desk, notice, at("10:00"))
    click(desk, first, "No, it is not fixed", now=at("10:30"))
    assert desk.tickets()[0]["status"] == "open"
    second = resolve(desk, notice, at("11:00"), "#resolve fixed\nNew drum, new toner.")
    click(desk, first, "Yes, it is fixed", now=at("11:10"), msgid="<stale-click@example.org>")
    assert desk.tickets()[0]["status"] == "resolved"
    assert "no longer stands" in why(desk, "stale-click@example.org")
    click(desk, first, "No, it is not fixed", now=at("11:15"))
    assert desk.tickets()[0]["status"] == "resolved"  # rejecting an old resolution reopens nothing
    click(desk, second, "Yes, it is fixed", now=at("11:20"))
    assert desk.tickets()[0]["status"] == "closed"


def test_a_reject_after_the_reopen_window_opens_a_follow_up_ticket(desk):
    ack, notice = open_ticket(desk, now=at("09:00"))
    res = resolve(desk, notice, at("10:00"))
    click(desk, res, "No, it is not fixed", now="2026-12-09T10:00:00+01:00", comment="It jams again.")
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert tickets["INC-1"]["status"] == "closed"  # auto-closed meanwhile; not reopened
    follow = tickets["INC-2"]
    assert follow["follows"] == "INC-1" and follow["subject"] == "Not fixed: Printer broken"
    assert follow["requester"] == "jane@example.org"
    assert "It jams again." in desk.ticket("INC-2")["messages"][0]["body"]


def test_rating_links_are_valid_for_30_days(desk):
    ack, notice = open_ticket(desk, now=at("09:00"))
    res = resolve(desk, notice, at("10:00"))
    click(desk, res, "Yes, it is fixed", now=at("11:00"))
    survey = desk.sent(subject_has="How did we do")[-1]
    click(desk, survey, "Rating 2", now="2027-01-05T11:00:00+01:00", msgid="<late-rating@example.org>")
    assert desk.ticket("INC-1")["survey"]["rating"] is None
    assert "expired" in why(desk, "late-rating@example.org")
    click(desk, survey, "Rating 4", now="2026-12-20T11:00:00+01:00")
    assert desk.ticket("INC-1")["survey"]["rating"] == 4


def test_what_the_requester_writes_in_a_click_is_kept_and_shown_to_the_technician(desk):
    ack, notice = open_ticket(desk, now=at("09:00"))
    res = resolve(desk, notice, at("10:00"))
    desk.smtp.reset()
    click(desk, res, "Yes, it is fixed", now=at("11:00"), comment="Works, but the tray squeaks.")
    assert desk.tickets()[0]["status"] == "closed"
    assert any(m["kind"] == "click" and "tray squeaks" in m["body"] for m in desk.ticket("INC-1")["messages"])
    told = desk.sent(to="alice@example.test")
    assert told and "tray squeaks" in told[-1].text and "Verified:" in told[-1].text


def test_a_subject_that_only_looks_like_a_token_is_ordinary_mail(desk):
    ack, notice = open_ticket(desk, now=at("09:00"))
    resolve(desk, notice, at("10:00"))
    desk.deliver(mail("mallory@evil.example", "[INC-1] Yes, it is fixed (fixed-1-0-0123456789abcdef)", "Close it.",
                      msgid="<fake-token@evil.example>"))
    desk.run(now=at("10:30"))
    assert {t["ref"]: t["status"] for t in desk.tickets()}["INC-1"] == "resolved"
    log = why(desk, "fake-token@evil.example")
    assert "read as ordinary mail" in log and "-> INC-2" in log


def test_a_link_from_before_the_upgrade_changes_nothing(desk):
    ack, notice = open_ticket(desk, now=at("09:00"))
    resolve(desk, notice, at("10:00"))
    key = desk_key(desk)
    old = f"fixed-1-{signing._mac(key, 'token', 'fixed', 1, 'jane@example.org')[:16]}"  # the former scheme
    desk.deliver(mail("jane@example.org", f"[INC-1] Yes, it is fixed ({old})", MAILTO_BODY, msgid="<old-link@example.org>"))
    desk.run(now=at("10:30"))
    assert desk.tickets()[0]["status"] == "resolved"
    assert "old form" in why(desk, "old-link@example.org")


# --- the units under the attacks ---------------------------------------------------------


def test_verp_addresses_carry_a_signature_the_pattern_reads_back():
    key = b"k" * 32
    sig = signing.verp_signature(key, 42, "Jane@Example.org")
    address = verp_address("{local}+bounce-{id}@{domain}", "helpdesk", "example.test", 42, sig)
    m = verp_pattern("{local}+bounce-{id}@{domain}", "helpdesk", "example.test").search(f"for <{address.upper()}>")
    assert (int(m.group("id")), m.group("sig").lower()) == (42, sig)
    assert signing.verify_verp(key, 42, "jane@example.org", m.group("sig"))
    assert not signing.verify_verp(key, 43, "jane@example.org", sig)
    assert not signing.verify_verp(key, 42, "joe@example.org", sig)
    with pytest.raises(ValueError):
        verp_address("{local}+bounce-{id}@{domain}", "helpdesk", "example.test", 42, "zz")


def _row(i, rcpt, key):
    return SimpleNamespace(id=i, rcpt=rcpt, ticket_id=1, kind="ack")


@pytest.mark.parametrize("verp,named,expect", [
    ([(7, "good")], ("jane@example.org",), (7, True)),
    ([(7, "good")], ("alice@example.test",), (7, False)),
    ([(7, "0" * 16)], ("jane@example.org",), (None, False)),
    ([(i, "") for i in range(1, 200)], ("jane@example.org",), (None, False)),
    ([], ("jane@example.org",), (None, False)),
])
def test_only_a_valid_signature_naming_its_recipient_proves_a_report(verp, named, expect):
    key = b"k" * 32
    rows = {7: _row(7, "jane@example.org", key)}
    verp = [(i, signing.verp_signature(key, i, "jane@example.org") if s == "good" else s) for i, s in verp]
    row, names, why = signed_row(key, Report("failed", named, "550", tuple(verp)), rows.get)
    assert ((row.id if row else None), names) == expect, why


def test_a_click_acts_only_while_its_resolution_stands():
    now = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    week = dt.timedelta(days=7)

    def ticket(status, reopen_count=0, resolved_hours_ago=1):
        return SimpleNamespace(status=status, reopen_count=reopen_count, closed_at=None,
                               resolved_at=now - dt.timedelta(hours=resolved_hours_ago))

    def token(action, about="0"):
        return signing.Token(action, 1, about, "0" * 16)

    assert judge_click(ticket("resolved"), token("fixed"), now, week, None).act == "close"
    assert judge_click(ticket("resolved", 1), token("fixed"), now, week, None).act == "nothing"
    assert judge_click(ticket("closed"), token("fixed"), now, week, None).act == "nothing"
    assert judge_click(ticket("closed"), token("notfixed"), now, week, None).act == "reopen"
    assert judge_click(ticket("closed", resolved_hours_ago=24 * 9), token("notfixed"), now, week, None).act == "follow-up"
    assert judge_click(ticket("open", 1), token("notfixed"), now, week, None).act == "nothing"
    assert judge_click(ticket("closed"), token("rate3"), now, week, now - dt.timedelta(days=29)).act == "rate"
    assert judge_click(ticket("closed"), token("rate3"), now, week, now - dt.timedelta(days=31)).act == "nothing"


def test_tokens_name_their_recipient_and_resolution_and_old_ones_are_told_apart():
    key = b"k" * 32
    text = signing.make_token(key, "notfixed", 9, "jane@example.org", 2)
    token = signing.find_token(f"[INC-9] No ({text})")
    assert (token.action, token.ticket_id, token.about, token.old) == ("notfixed", 9, "2", False)
    assert signing.verify_token(key, token, "JANE@example.org")
    assert not signing.verify_token(key, token, "boss@example.org")
    assert not signing.verify_token(key, token._replace(about="3"), "jane@example.org")
    assert signing.find_token("Re: fixed-1-0123456789abcdef").old


def test_commands_are_read_after_nfkc_with_format_characters_dropped():
    assert command_text("\uff03\uff4e\uff4f\uff54\uff45") == "#note"
    assert command_text("\u200f\u200b#note\u200e") == "#note"
    block, rest = split_block("\u200b\n\ufeff#note\nsecret words")
    assert block == ["#note"] and rest == "secret words"
    assert click_comment(f"Thanks!\n\n{MAILTO_BODY}") == "Thanks!"
