"""Trust, as an attacker tries it: forged authentication results, spoofed
out-of-office replies, another desk's mail, floods, and hostile header lengths
(issue 12 items 5, 7 and 8; DESIGN sections 3 and 4, guarantee 7).

Each attack is mail written as the attacker would write it, through the real
Dovecot and SMTP sink; each test asserts that nobody was muted, nothing was lost,
and that `maildesk why` tells what happened.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.mailin import authentication
from maildesk.mailin.authentication import Policy, a_label, check, organizational_domain
from tests.conftest import ROOT, both_databases, mail, reply_to

NOW = "2026-11-27T10:00:00+01:00"
LATER = "2026-11-27T10:05:00+01:00"

# What OpenDKIM and OpenDMARC on the desk's MX write, folded as Postfix passes it on.
MX_PASS = ("Authentication-Results: mx.example.test;\r\n\tdkim=pass (2048-bit key; unprotected) header.d=example.test "
           "header.i=@example.test header.a=rsa-sha256 header.s=sel1 header.b=\"Xb3kL9pQ\";\r\n"
           "\tdmarc=pass (p=reject dis=none) header.from=example.test")
MX_NONE = "Authentication-Results: mx.example.test; dkim=none; dmarc=none header.from=example.test"

# What Exchange Online writes: no authserv-id, Microsoft's own comments and properties.
M365_PASS = ("Authentication-Results: spf=pass (sender IP is 40.107.22.54)\r\n smtp.mailfrom=example.test; "
             "dkim=pass (signature was verified)\r\n header.d=example.test;dmarc=pass action=none\r\n "
             "header.from=example.test;compauth=pass reason=100")
M365_FAIL = ("Authentication-Results: spf=none (sender IP is 185.132.181.12)\r\n smtp.helo=mail.evil.example; "
             "dkim=none (message not signed)\r\n header.d=none;dmarc=fail action=none\r\n "
             "header.from=example.test;compauth=fail reason=001")


def at_the_top(raw: bytes, *fields: str) -> bytes:
    """The mail as a server hands it on after adding these fields above the rest."""
    eol = "\r\n" if b"\r\n" in raw[:400] else "\n"
    return "".join(f.replace("\r\n", eol) + eol for f in fields).encode() + raw


def open_ticket(desk, sender="Jane Doe <jane@example.org>", now=NOW):
    desk.deliver(mail(sender, "Printer on floor 3 is broken", "It prints blank pages.", msgid="<req-1@client.example>"))
    desk.run(now=now)
    return desk.sent(to="jane@example.org")[-1], desk.sent(to="alice@example.test")[-1]


def why(desk, msgid: str) -> str:
    code, out, err = desk.cli("why", msgid)
    assert code == 0, err
    return out


@pytest.fixture
def strict(desk):
    """A desk that believes only its MX's word (no trust_sender_address)."""
    desk.write_config(security={"trust_sender_address": False, "trusted_authserv_ids": ["mx.example.test"]})
    return desk


def technician_reply(desk, notice, text: str, *fields: str, msgid: str) -> str:
    desk.smtp.reset()
    raw = reply_to(notice, "Alice <alice@example.test>", text)
    raw = raw.replace(b"Message-ID:", b"X-Old-Message-ID:", 1)
    desk.deliver(at_the_top(raw, *fields, f"Message-ID: <{msgid}>"))
    desk.run(now=LATER)
    return why(desk, msgid)


# --- the rule itself, without I/O -------------------------------------------------------------

POLICY = Policy(frozenset({"mx.example.test"}))


def test_only_the_topmost_field_is_read_whatever_lies_below_it():
    passing = "mx.example.test; dmarc=pass header.from=example.test"
    assert check("a@example.test", [passing], [], POLICY).passed
    assert not check("a@example.test", ["mx.example.test; dmarc=fail header.from=example.test", passing], [], POLICY).passed
    assert not check("a@example.test", ["mx.evil.example; dmarc=pass header.from=example.test", passing], [], POLICY).passed


def test_dmarc_must_name_the_from_domain_itself():
    result = check("a@example.test", ["mx.example.test; dmarc=pass header.from=evil.test"], [], POLICY)
    assert not result.passed and "header.from=evil.test" in result.reason
    assert not check("a@example.test", ["mx.example.test; dmarc=pass header.from=sub.example.test"], [], POLICY).passed
    assert not check("a@example.test", ["mx.example.test; dmarc=pass"], [], POLICY).passed
    assert check("a@EXAMPLE.test", ["MX.Example.Test; dmarc=pass header.from=Example.TEST"], [], POLICY).passed


@pytest.mark.parametrize("d,passed", [
    ("example.test", True), ("mail.example.test", True), ("test", False), ("evil.test", False),
    ("example.test.evil.example", False), ("", False)])
def test_dkim_alignment_is_by_organizational_domain(d, passed):
    value = f"mx.example.test; dkim=pass header.d={d}" if d else "mx.example.test; dkim=pass"
    assert check("a@it.example.test", [value], [], POLICY).passed is passed


def test_dkim_alignment_follows_the_public_suffix_list_not_the_last_two_labels():
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("co.uk") is None
    assert organizational_domain("alice.github.io") == "alice.github.io"  # a private suffix
    assert not check("a@example.co.uk", ["mx.example.test; dkim=pass header.d=co.uk"], [], POLICY).passed
    assert not check("a@alice.github.io", ["mx.example.test; dkim=pass header.d=bob.github.io"], [], POLICY).passed


def test_domains_compare_as_idna_a_labels():
    assert a_label("Bücher.Example") == "xn--bcher-kva.example"
    value = "mx.example.test; dmarc=pass header.from=xn--bcher-kva.example"
    assert check("info@bücher.example", [value], [], POLICY).passed
    assert not check("info@b\u00fccher.example", ["mx.example.test; dmarc=pass header.from=bucher.example"], [], POLICY).passed
    assert a_label("exa mple.test") is None and a_label("-x.test") is None


def test_an_encoded_word_is_read_as_it_stands():
    encoded = "=?utf-8?q?mx.example.test=3B_dmarc=3Dpass_header.from=3Dexample.test?="
    result = check("a@example.test", [encoded], [], Policy(frozenset({"mx.example.test"}), microsoft365=True))
    assert not result.passed and "RFC 2047" in result.reason


def test_microsoft365_signals_count_only_when_enabled_and_only_on_top():
    m365 = Policy(microsoft365=True)
    value = " ".join(M365_PASS.split(":", 1)[1].split())
    assert check("a@example.test", [value], [], m365).passed
    assert not check("a@example.test", [value], [], POLICY).passed
    assert not check("a@example.test", [value], [], Policy()).passed
    assert check("a@example.test", [], ["Internal"], m365).passed
    assert not check("a@example.test", [], ["Anonymous", "Internal"], m365).passed
    assert not check("a@example.test", [], ["Internal"], POLICY).passed


def test_the_public_suffix_list_is_the_shipped_one_and_needs_no_network():
    code = ("import socket\n"
            "def refuse(*a, **k): raise OSError('no network in this test')\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
            "from maildesk.mailin.authentication import organizational_domain\n"
            "print(organizational_domain('a.b.example.co.uk'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "example.co.uk", out.stderr
    assert authentication.organizational_domain("test") is None


# --- forged authentication results, through the desk -----------------------------------------


def test_a_realistic_dmarc_pass_from_the_trusted_mx_lets_a_technician_act(strict):
    ack, notice = open_ticket(strict)
    log = technician_reply(strict, notice, "#status in-progress", MX_PASS, msgid="real-alice@example.test")
    assert strict.tickets()[0]["status"] == "in-progress"
    assert "dmarc=pass header.from=example.test from mx.example.test" in log


@pytest.mark.parametrize("forged,why_not", [
    ("Authentication-Results: mx.example.test; dmarc=pass header.from=evil.test",
     "dmarc=pass is for header.from=evil.test, not example.test"),
    ("Authentication-Results: mx.example.test; dkim=pass header.d=test",
     "dkim=pass header.d=test is not aligned with example.test"),
    ("Authentication-Results: =?utf-8?q?mx.example.test=3B_dmarc=3Dpass_header.from=3Dexample.test?=",
     "RFC 2047 encoded word"),
], ids=["dmarc-for-evil.test", "dkim-d-is-a-public-suffix", "rfc2047-encoded"])
def test_forged_authentication_results_run_no_command_and_relay_nothing(strict, forged, why_not):
    ack, notice = open_ticket(strict)
    log = technician_reply(strict, notice, "#status in-progress\nJane, your new password is Winter2026!", forged,
                           msgid="forged-alice@evil.example")
    assert strict.tickets()[0]["status"] == "open"
    assert not strict.sent(to="jane@example.org")  # the password went nowhere
    (told,) = strict.sent(to="alice@example.test")
    assert why_not in told.text
    assert why_not in log and "not authenticated" in log
    note = strict.ticket("INC-1")["messages"][-1]
    assert note["internal"] and note["kind"] == "unauthenticated"


def test_a_trusted_pass_below_a_forged_top_field_never_counts(strict):
    ack, notice = open_ticket(strict)
    log = technician_reply(strict, notice, "#priority critical",
                           "Authentication-Results: mx.evil.example; dmarc=pass header.from=example.test", MX_PASS,
                           msgid="under-alice@evil.example")
    assert strict.tickets()[0]["priority"] == "medium"
    assert "the topmost is from mx.evil.example" in log


def test_arc_results_and_an_attached_messages_results_never_count(strict):
    ack, notice = open_ticket(strict)
    strict.smtp.reset()
    attached = (f"{MX_PASS}\r\nFrom: alice@example.test\r\nTo: helpdesk@example.test\r\nSubject: old\r\n"
                "Message-ID: <old@example.test>\r\n\r\nold mail\r\n")
    raw = (f"ARC-Authentication-Results: i=1; mx.example.test; dmarc=pass header.from=example.test\r\n"
           f"From: alice@example.test\r\nTo: helpdesk@example.test\r\nSubject: Re: {notice.subject}\r\n"
           f"Message-ID: <arc-alice@evil.example>\r\nIn-Reply-To: {notice.header('Message-ID')}\r\n"
           f"References: {notice.header('Message-ID')}\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\nContent-Type: text/plain\r\n\r\n#resolve fixed\r\n"
           f"--Z\r\nContent-Type: message/rfc822\r\n\r\n{attached}--Z--\r\n").encode()
    strict.deliver(raw)
    strict.run(now=LATER)
    assert strict.tickets()[0]["status"] == "open"
    assert "no Authentication-Results header from a trusted server: the mail has none" in why(strict, "arc-alice@evil.example")


def test_microsoft365_results_and_internal_mark_count_when_the_desk_says_so(strict):
    strict.write_config(security={"trusted_authserv_ids": [], "microsoft365": True})
    ack, notice = open_ticket(strict)
    log = technician_reply(strict, notice, "#status in-progress", M365_PASS, msgid="m365-pass@example.test")
    assert strict.tickets()[0]["status"] == "in-progress" and "from Microsoft 365" in log
    log = technician_reply(strict, notice, "#status on-hold", M365_FAIL, "X-MS-Exchange-Organization-AuthAs: Anonymous",
                           msgid="m365-forged@evil.example")
    assert strict.tickets()[0]["status"] == "in-progress" and "dmarc=fail" in log
    log = technician_reply(strict, notice, "#priority high", "X-MS-Exchange-Organization-AuthAs: Internal",
                           "X-MS-Exchange-Organization-AuthMechanism: 04",
                           "X-MS-Exchange-Organization-AuthSource: AM0PR01MB1234.eurprd01.prod.exchangelabs.com",
                           msgid="m365-internal@example.test")
    assert strict.tickets()[0]["priority"] == "high" and "AuthAs: Internal" in log
    strict.write_config(security={"microsoft365": False})
    technician_reply(strict, notice, "#priority low", M365_PASS, "X-MS-Exchange-Organization-AuthAs: Internal",
                     msgid="m365-off@example.test")
    assert strict.tickets()[0]["priority"] == "high"


# --- out-of-office ------------------------------------------------------------------------------


def out_of_office(frm: str, msgid: str, *fields: str) -> bytes:
    raw = mail(frm, "Automatic reply: Out of Office", "I am away until Monday.", msgid=f"<{msgid}>",
               headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})
    return at_the_top(raw, *fields)


def test_a_spoofed_out_of_office_from_technicians_leaves_them_available(strict):
    strict.deliver(out_of_office("alice@example.test", "ooo-alice@evil.example"))
    strict.deliver(out_of_office("bob@example.test", "ooo-bob@evil.example", MX_NONE))
    strict.run(now=NOW)
    strict.deliver(mail("jane@example.org", "Printer broken", "Tray 2 jams."))
    strict.run(now=LATER)
    (ticket,) = strict.tickets()
    assert ticket["assignee"] in ("alice@example.test", "bob@example.test")  # the queue is not emptied
    assert "availability is unchanged" in why(strict, "ooo-alice@evil.example")
    assert "availability is unchanged" in why(strict, "ooo-bob@evil.example")


def test_an_authenticated_out_of_office_marks_the_technician_away(strict):
    strict.deliver(out_of_office("alice@example.test", "ooo-alice@example.test", MX_PASS))
    strict.run(now=NOW)
    for i in range(2):
        strict.deliver(mail(f"user{i}@example.org", f"Printer {i} broken", "Tray 2 jams."))
    strict.run(now=LATER)
    assert {t["assignee"] for t in strict.tickets()} == {"bob@example.test"}
    assert "alice@example.test is out of office" in why(strict, "ooo-alice@example.test")


# --- the loop header ----------------------------------------------------------------------------


def test_another_desks_relay_is_a_persons_mail_and_the_two_desks_do_not_loop(desk, tmp_path, dovecot, smtp):
    from tests.conftest import Desk

    (tmp_path / "vendor").mkdir()
    vendor = Desk(tmp_path / "vendor", dovecot, smtp, f"sqlite:///{tmp_path / 'vendor' / 'state' / 'maildesk.db'}")
    vendor.write_config(desk={"name": "Vendor Support", "address": "support@vendor.test"},
                        security={"secret": "the vendor desk's own secret, 32 bytes or more"})
    assert vendor.cli("init")[0] == 0
    # Jane asks the vendor, with our desk in copy; the vendor's technician answers her and us
    vendor.deliver(mail("jane@example.org", "Licence server down", "Our licences fail.", to="support@vendor.test",
                        cc="helpdesk@example.test"))
    vendor.run(now=NOW)
    notice = vendor.sent(to="alice@example.test")[-1]
    vendor.deliver(reply_to(notice, "alice@example.test", "We restarted the licence server."))
    vendor.run(now=LATER)
    relay = next(m for m in vendor.sent(to="helpdesk@example.test") if "restarted" in m.text)
    assert relay.header("X-Maildesk-Loop").startswith("support@vendor.test ")
    desk.deliver(relay.data)
    desk.run(now=LATER)
    (ticket,) = desk.tickets()  # a person's words, relayed: a ticket here, not dropped as our own mail
    assert ticket["requester"] == "support@vendor.test"
    assert "another desk's" in why(desk, relay.header("Message-ID"))
    ack = next(m for m in desk.sent(to="support@vendor.test") if m.header("Auto-Submitted") == "auto-replied")
    vendor.deliver(ack.data)  # our acknowledgement reaches the vendor: automatic mail, never answered
    vendor.run(now=LATER)
    assert not desk.sent(to="helpdesk@example.test")[1:]  # nothing more came back to us
    assert len([m for m in vendor.inbound() if m["outcome"] == "automatic"]) == 1


def test_the_desks_own_mail_is_known_by_its_loop_value_even_when_a_forwarder_rewrote_from(desk):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run(now=NOW)
    ack = desk.sent(to="jane@example.org")[0]
    value = ack.header("X-Maildesk-Loop")
    assert value.startswith("helpdesk@example.test ") and len(value.split()[1]) == 32
    forwarded = ack.data.replace(b"From: Example IT Service Desk <helpdesk@example.test>", b"From: jane@example.org", 1)
    forwarded = forwarded.replace(b"Reply-To: helpdesk@example.test\r\n", b"", 1)
    desk.deliver(forwarded)
    # a stranger who copies the old, guessable value (the desk's address) is not taken for the desk
    desk.deliver(mail("mallory@evil.example", "Please help", "My laptop is broken.", msgid="<loop-forged@evil.example>",
                      headers={"X-Maildesk-Loop": "helpdesk@example.test"}))
    desk.run(now=LATER)
    outcomes = sorted(m["outcome"] for m in desk.inbound())
    assert outcomes == ["new-ticket", "new-ticket", "own"]
    assert [t["requester"] for t in desk.tickets()] == ["mallory@evil.example", "jane@example.org"]


# --- floods -------------------------------------------------------------------------------------

ORG_PASS = "Authentication-Results: mx.example.test; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
ORG_FAIL = "Authentication-Results: mx.example.test; dkim=none; dmarc=fail (p=none) header.from=example.org"


def outbox_by_kind(desk, kind: str) -> list[dict]:
    return [o for o in desk.outbox() if o["kind"] == kind]


def test_a_flood_of_500_forged_senders_costs_only_the_flooder(strict):
    strict.write_config(limits={"auto_replies_per_hour": 40})
    lure = "URGENT: your mailbox is full, log in at http://evil.example/owa"
    strict.dovecot.append_many(strict.user, [
        at_the_top(mail(f"user{i}@example.org", lure, f"Log in at http://evil.example/owa?u={i} now.",
                        msgid=f"<flood-{i}@evil.example>"), ORG_FAIL)
        for i in range(500)])
    strict.run(now=NOW)
    strict.deliver(at_the_top(mail("Jane Doe <jane@example.org>", "Printer on floor 3 is broken", "Blank pages.",
                                   msgid="<jane-real@example.org>"), ORG_PASS))
    strict.deliver(at_the_top(mail("alice@example.test", "help", "#help", msgid="<alice-help@example.test>"), MX_PASS))
    strict.run(now=LATER)

    assert len(strict.tickets()) == 501  # nothing lost
    acks = [o for o in outbox_by_kind(strict, "ack") if o["to"].startswith("user")]
    assert sorted({o["status"] for o in acks}) == ["sent", "suppressed"]
    assert len([o for o in acks if o["status"] == "sent"]) == 40
    for ack in strict.sent(subject_has="[INC-"):
        if ack.rcpts[0].startswith("user"):
            assert ack.rcpts == [ack.message["To"].addresses[0].addr_spec]  # to the sender alone
            assert "We have received your message" in ack.subject and "as incident INC-" in ack.text
            shown = ack.subject + ack.text + ack.header("To")
            assert "evil.example" not in shown and "mailbox is full" not in shown
    (real,) = [m for m in strict.sent(to="jane@example.org")]
    assert "Printer on floor 3 is broken" in real.subject and "Jane Doe" in real.header("To")
    (help_,) = strict.sent(to="alice@example.test", subject_has="ommands")
    notices = [o for o in outbox_by_kind(strict, "assigned") if o["status"] != "suppressed"]
    assert len(notices) == 41  # 40 for the flood, and Jane's: the technicians are not buried
    assert len(strict.sent(to="im@example.test")) == 1
    log = why(strict, "flood-499@evil.example")
    assert "did not pass authentication" in log and "staff and authenticated senders are still answered" in log


@both_databases  # on PostgreSQL the counts are read ahead, with the claim of each new mail
def test_one_sender_opening_500_tickets_is_held_past_the_cap_and_nothing_is_lost(desk):
    desk.dovecot.append_many(desk.user, [
        mail("flooder@example.org", f"Printer {i} broken", "Tray 2 jams.", msgid=f"<one-{i}@example.org>")
        for i in range(500)])
    desk.deliver(mail("jane@example.org", "VPN down", "It drops.", msgid="<jane-vpn@example.org>"))
    desk.run(now=NOW)
    assert len([t for t in desk.tickets() if t["requester"] == "flooder@example.org"]) == 20
    held = desk.inbound(failed=True)
    assert len(held) == 480 and all(h["error"].startswith("rate-limited: flooder@example.org") for h in held)
    assert len(outbox_by_kind(desk, "assigned")) == 21  # 20 notices for the flooder, one for Jane
    assert desk.sent(to="jane@example.org") and any(t["requester"] == "jane@example.org" for t in desk.tickets())
    log = why(desk, "one-499@example.org")
    assert "limits.new_tickets_per_sender_per_hour" in log and "inbound retry" in log
    code, out, err = desk.cli("inbound", "retry", str(next(h["id"] for h in held if h["message_id"] == "one-499@example.org")))
    assert code == 0 and "new-ticket" in out
    assert "past limits.new_tickets_per_sender_per_hour" in why(desk, "one-499@example.org")


@both_databases
def test_mail_forged_in_a_senders_name_never_uses_up_their_own_allowance(strict):
    strict.write_config(limits={"new_tickets_per_sender_per_hour": 3, "auto_replies_per_sender_per_day": 3})
    for i in range(5):
        strict.deliver(at_the_top(mail("jane@example.org", f"Forged {i}", "Spam.", msgid=f"<forged-{i}@evil.example>"),
                                  ORG_FAIL))
    strict.run(now=NOW)
    assert len(strict.inbound(failed=True)) == 2
    strict.deliver(at_the_top(mail("jane@example.org", "Printer broken", "Tray 2.", msgid="<jane-own@example.org>"),
                              ORG_PASS))
    strict.run(now=LATER)
    assert any(t["subject"] == "Printer broken" for t in strict.tickets())
    assert any("Printer broken" in m.subject for m in strict.sent(to="jane@example.org"))


# --- hygiene ------------------------------------------------------------------------------------


def longest_header_line(raw: bytes) -> int:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return max(len(line) for line in head.split(b"\r\n"))


def test_a_2000_character_subject_name_and_message_id_still_get_an_acknowledgement(desk):
    name = "Ünïcödé " * 250  # 2000 characters of display name
    subject = "A" * 2000  # one word: nothing to fold it at
    msgid = "x" * 980 + "@evil.example"
    raw = (f"From: =?utf-8?b?{__import__('base64').b64encode(name.encode()).decode()}?= <long@example.org>\r\n"
           f"To: helpdesk@example.test\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
           f"References: {' '.join(f'<{i}{msgid}>' for i in range(12))}\r\n\r\nIt is broken.\r\n").encode()
    desk.deliver(raw)
    desk.run(now=NOW)
    rows = {o["kind"]: o for o in desk.outbox()}
    assert rows["ack"]["status"] == "sent" and rows["assigned"]["status"] == "sent"
    (ack,) = desk.sent(to="long@example.org")
    assert longest_header_line(ack.data) <= 998
    assert "A" * 200 in ack.subject.replace(" ", "")  # folded, not lost
    to_name = ack.message["To"].addresses[0].display_name
    assert 0 < len(to_name) <= 78
    notice = desk.sent(to="alice@example.test")[0]
    assert longest_header_line(notice.data) <= 998


def test_a_1000_octet_header_line_from_an_attacker_is_taken_in_and_answered(desk):
    raw = (b"From: " + b"M" * 1000 + b" <mallory@evil.example>\r\nTo: helpdesk@example.test\r\n"
           b"Subject: " + b"printer broken " * 70 + b"\r\nMessage-ID: <long-line@evil.example>\r\n"
           b"X-Junk: " + b"j" * 1000 + b"\r\n\r\nIt is broken.\r\n")
    desk.deliver(raw)
    desk.run(now=NOW)
    assert desk.tickets()[0]["requester"] == "mallory@evil.example"
    (ack,) = desk.sent(to="mallory@evil.example")
    assert longest_header_line(ack.data) <= 998 and ack.subject.count("printer broken") == 70
    assert "queued ack to mallory@evil.example" in why(desk, "long-line@evil.example")
    assert all(o["status"] == "sent" for o in desk.outbox())


@settings(max_examples=60, deadline=None)
@given(subject=st.text(min_size=0, max_size=3000), name=st.text(max_size=3000),
       ids=st.lists(st.text(alphabet="abcxyz0123456789.-_@", min_size=1, max_size=1200), max_size=15))
def test_every_header_line_the_desk_writes_is_under_998_octets(subject, name, ids):
    import datetime as dt
    import email

    from maildesk.mailout.render import build_mail

    raw = build_mail(from_addr="helpdesk@example.test", from_name=name + " via Desk", to_addr="jane@example.org",
                     to_name=name, subject=subject, message_id="md-1-abc@example.test",
                     date=dt.datetime(2026, 11, 27, tzinfo=dt.UTC), text="Hello", in_reply_to=ids[0] if ids else None,
                     references=ids, extra={"X-Maildesk-Loop": "helpdesk@example.test " + "f" * 32})
    assert longest_header_line(raw) <= 998
    parsed = email.message_from_bytes(raw)
    assert parsed["To"] and parsed["Message-ID"] == "<md-1-abc@example.test>"


@pytest.mark.parametrize("args,says", [
    (("inbound", "retry", "²"), "'²' is not an inbound message id"),
    (("inbound", "retry", "99999999999999999999999"), "is not an inbound message id"),
    (("inbound", "retry", "9" * 5000), "is not an inbound message id"),
    (("tickets", "show", "INC-99999999999999999999999"), "is not a ticket reference such as INC-42"),
    (("tickets", "show", "INC-٣"), "is not a ticket reference"),
    (("run", "--once", "--now", "0001-01-01T00:00:00+14:00"), "--now: '0001-01-01T00:00:00+14:00' is out of range"),
    (("run", "--once", "--now", "9999-12-31T23:59:59-14:00"), "is out of range"),
    (("report", "--now", "0001-01-01T00:00:00+00:00"), "is out of range"),
])
def test_hostile_command_line_values_end_in_one_sentence_and_exit_2(desk, args, says):
    code, out, err = desk.cli(*args)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and says in err


# --- check-config -------------------------------------------------------------------------------


def check_config(the_desk, **overrides) -> tuple[int, str]:
    the_desk.write_config(**overrides)
    code, out, err = the_desk.cli("check-config")
    assert "Traceback" not in err
    return code, err


def test_check_config_refuses_a_short_secret_negative_limits_and_staff_at_the_desks_address(desk):
    code, err = check_config(desk, limits={"auto_replies_per_hour": -1, "new_tickets_per_sender_per_hour": -5})
    assert code == 2 and err.strip().splitlines() == [
        "maildesk: limits.auto_replies_per_hour: must not be negative",
        "maildesk: limits.new_tickets_per_sender_per_hour: must not be negative"]
    code, err = check_config(desk, security={"secret": "x"}, limits={"auto_replies_per_hour": 0,
                                                                       "new_tickets_per_sender_per_hour": 0},
                             technicians=[{"email": "helpdesk@example.test", "name": "Desk", "groups": ["service-desk"]},
                                          {"email": "Helpdesk+alice@Example.test", "groups": ["service-desk"]}])
    assert code == 2
    lines = err.strip().splitlines()
    assert any(line.startswith("maildesk: security.secret: the signing secret is 1 byte,") for line in lines)
    assert any(line.startswith("maildesk: technicians[0].email: helpdesk@example.test is the desk's own") for line in lines)
    assert any(line.startswith("maildesk: technicians[1].email: helpdesk+alice@example.test is the desk's") for line in lines)


def test_check_config_names_a_short_secret_file_a_missing_templates_dir_and_an_escalation_cycle(desk, tmp_path):
    (tmp_path / "secret").write_text("short\n")
    security = dict(desk.config["security"])
    security.pop("secret")
    desk.config["security"] = security
    code, err = check_config(desk, security={"secret_file": str(tmp_path / "secret")},
                             desk={"templates_dir": str(tmp_path / "nowhere")},
                             groups=[{"name": "service-desk", "escalates_to": "network"},
                                     {"name": "network", "escalates_to": "security"},
                                     {"name": "security", "escalates_to": "network"}])
    assert code == 2
    assert "maildesk: security.secret_file: the signing secret is 5 bytes" in err
    assert f"maildesk: desk.templates_dir: {tmp_path / 'nowhere'} is not a directory" in err
    assert "maildesk: groups[1].escalates_to: the groups escalate in a circle (network -> security -> network)" in err
    assert err.count("circle") == 1


def test_check_config_does_not_hang_on_a_fifo_as_a_password_file(desk, tmp_path):
    import os

    os.mkfifo(tmp_path / "imap-password")
    imap = dict(desk.config["imap"])
    imap.pop("password")
    desk.config["imap"] = imap
    code, err = check_config(desk, imap={"password_file": str(tmp_path / "imap-password")})
    assert code == 2 and "imap.password_file:" in err and "not a regular file" in err


def test_check_config_renders_each_template_override_as_delivery_would(desk, tmp_path):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "ack.txt.j2").write_text("Subject: {{ tag }} got it\n\nThanks, {{ rcpt_name }}. {{ ref }}\n")
    desk.write_config(desk={"templates_dir": str(overrides)})
    code, out, err = desk.cli("check-config")
    assert code == 0, err
    (overrides / "too_large.txt.j2").write_text("Subject: too large\n\nAt most {{ limit // 0 }} bytes.\n")
    code, err = check_config(desk)
    assert code == 2 and "the too_large mail fails to render" in err and "ZeroDivisionError" in err
    (overrides / "too_large.txt.j2").write_text("Subject: too large\n\n{% if limit %}At most {{ limit }}\n")
    code, err = check_config(desk)
    assert code == 2 and "too_large.txt.j2 line" in err
    (overrides / "too_large.txt.j2").unlink()
    (overrides / "ack_typo.txt.j2").write_text("Subject: x\n\ny\n")
    code, err = check_config(desk)
    assert code == 2 and "ack_typo.txt.j2 overrides no template" in err
