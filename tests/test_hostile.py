"""Real-world and hostile mail: bounces, complaints, loops and floods, limits,
attachments, header injection, ambiguous senders, and the operators' tools
(issue 7; DESIGN section 6)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.builders import answer, mail
from tests.conftest import CORPUS
from tests.sandbox import free_port


def dsn(envelope_to: str, rcpt: str, original_id: str, action: str = "failed", status: str = "5.1.1") -> bytes:
    """An RFC 3464 delivery status notification as Postfix writes it."""
    subject = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    return (
        f"Return-Path: <>\r\nDelivered-To: {envelope_to}\r\nFrom: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {envelope_to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <dsn-{original_id[:8]}-{action}@mx.example.org>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{rcpt}>: Recipient address rejected: User unknown\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Example IT Service Desk <helpdesk@example.test>\r\n"
        f"To: {rcpt}\r\nMessage-ID: <{original_id}>\r\nSubject: [INC-1] something\r\n--B--\r\n"
    ).encode()


def ack_for(desk, rcpt: str):
    return next(m for m in desk.sent(to=rcpt) if m.header("Auto-Submitted") == "auto-replied")


# --- bounces and complaints -----------------------------------------------------------


def test_a_bounce_is_linked_to_the_mail_it_answers_and_stops_mail_to_that_address(desk):
    desk.deliver(mail("ghost@example.org", "Printer jam", "Tray 2."))
    desk.run()
    ack = ack_for(desk, "ghost@example.org")
    desk.deliver(dsn(ack.envelope_from, "ghost@example.org", ack.header("Message-ID").strip("<>")))
    desk.run()
    rows = {o["kind"]: o for o in desk.outbox() if o["to"] == "ghost@example.org"}
    assert rows["ack"]["status"] == "bounced" and "5.1.1" in rows["ack"]["last_error"]
    assert rows["ack"]["rcpt_undeliverable"].startswith("bounce until")
    bounce = [e for e in desk.ticket("INC-1")["events"] if e["kind"] == "bounce"]
    assert bounce and "undeliverable until" in bounce[0]["detail"]
    assert desk.inbound()[0]["outcome"] == "bounce"
    assert len(desk.sent(to="ghost@example.org")) == 1  # the bounce got no answer
    notice = desk.sent(to="alice@example.test")[0]
    answer(desk, notice, "Can you tell me which tray?")
    assert len(desk.sent(to="ghost@example.org")) == 1  # no more mail to it
    relay = next(o for o in desk.outbox() if o["to"] == "ghost@example.org" and o["kind"] == "relay")
    assert relay["status"] == "suppressed" and "bounced" in relay["last_error"]


def test_a_delay_warning_is_recorded_but_is_not_a_bounce(desk):
    desk.deliver(mail("slow@example.org", "Printer jam", "Tray 2."))
    desk.run()
    ack = ack_for(desk, "slow@example.org")
    desk.deliver(dsn(ack.envelope_from, "slow@example.org", ack.header("Message-ID").strip("<>"), "delayed", "4.4.1"))
    desk.run()
    row = next(o for o in desk.outbox() if o["to"] == "slow@example.org")
    assert row["status"] == "sent" and row["rcpt_undeliverable"] is None
    assert any(e["kind"] == "delivery-delayed" for e in desk.ticket("INC-1")["events"])


def test_a_feedback_complaint_stops_automatic_mail_to_that_address(desk):
    desk.deliver(mail("grumpy@example.org", "Printer jam", "Tray 2."))
    desk.run()
    ack = ack_for(desk, "grumpy@example.org")
    arf = (
        "From: abuse@isp.example\r\nTo: helpdesk@example.test\r\nSubject: FW: complaint\r\nMessage-ID: <arf-1@isp.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=F\r\n\r\n"
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n"
        "Original-Rcpt-To: grumpy@example.org\r\n"
        # the ISP returns the original with its envelope sender: the desk's signed VERP address
        f"--F\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{ack.envelope_from}>\r\n"
        "From: helpdesk@example.test\r\nTo: grumpy@example.org\r\n"
        f"Message-ID: {ack.header('Message-ID')}\r\nSubject: x\r\n\r\nbody\r\n--F--\r\n"
    ).encode()
    desk.deliver(arf)
    desk.deliver(mail("grumpy@example.org", "Another problem", "The mouse too."))
    desk.run()
    acks = [o for o in desk.outbox() if o["to"] == "grumpy@example.org" and o["kind"] == "ack"]
    assert [a["status"] for a in acks] == ["suppressed", "sent"]  # newest first
    assert "complained" in acks[0]["last_error"]


# --- loops and floods -------------------------------------------------------------------


def test_above_the_desk_wide_rate_automatic_replies_pause_and_managers_are_told_once(desk):
    desk.write_config(limits={"auto_replies_per_hour": 3})
    for i in range(6):
        desk.deliver(mail(f"user{i}@example.org", f"Issue {i}", "Broken."))
    desk.run()
    acks = [o for o in desk.outbox() if o["kind"] == "ack"]
    assert sorted(o["status"] for o in acks) == ["sent"] * 3 + ["suppressed"] * 3
    assert len(desk.sent(to="im@example.test")) == 1
    assert "paused" in desk.sent(to="im@example.test")[0].subject
    assert len(desk.tickets()) == 6  # the mail itself is processed all the same


def test_the_desks_own_mail_coming_back_is_dropped(desk):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()
    ack = ack_for(desk, "jane@example.org")
    desk.deliver(ack.data)  # a mis-configured forward sends it back to the desk
    desk.run()
    assert desk.inbound()[0]["outcome"] == "own"
    assert len(desk.tickets()) == 1 and len(desk.sent(to="jane@example.org")) == 1


@pytest.mark.parametrize("headers,frm", [
    ({"Precedence": "bulk"}, "news@example.org"),
    ({"List-Id": "<all.lists.example.org>"}, "list@example.org"),
    ({"X-Autoreply": "yes"}, "away@example.org"),
    ({}, "MAILER-DAEMON@example.org"),
    ({"Return-Path": "<>"}, "nobody@example.org"),
])
def test_automatic_mail_is_never_answered(desk, headers, frm):
    desk.deliver(mail(frm, "Something", "Text.", headers=headers))
    desk.run()
    assert not [m for m in desk.smtp.messages if frm.lower() in m.rcpts]


def test_an_out_of_office_reply_threads_onto_its_ticket_without_changing_it(desk):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()
    ack = ack_for(desk, "jane@example.org")
    desk.deliver(mail("jane@example.org", "Automatic reply: " + ack.subject, "I am out of the office until Monday.",
                      in_reply_to=ack.header("Message-ID"), headers={"Auto-Submitted": "auto-replied"}))
    desk.run()
    t = desk.ticket("INC-1")
    assert t["status"] == "open" and t["messages"][-1]["internal"] and t["messages"][-1]["kind"] == "automatic"
    assert len(desk.sent(to="jane@example.org")) == 1


# --- limits -------------------------------------------------------------------------------


def test_mail_over_the_size_limit_is_kept_quarantined_and_its_sender_told_once(desk):
    desk.write_config(limits={"max_message_bytes": 20_000})
    big = mail("big@example.org", "Screenshot", "See attached.\n" + "x" * 30_000)
    desk.deliver(big)
    desk.run()
    (failed,) = desk.inbound(failed=True)
    assert "over limits.max_message_bytes" in failed["error"] and failed["size"] >= 30_000
    (told,) = desk.sent(to="big@example.org")
    assert "too large" in told.subject
    code, out, err = desk.cli("inbound", "retry", str(failed["id"]))
    assert code == 1 and "still quarantined" in out
    assert len(desk.sent(to="big@example.org")) == 1  # told once
    desk.write_config(limits={"max_message_bytes": 100_000})
    code, out, err = desk.cli("inbound", "retry", str(failed["id"]))
    assert code == 0 and "new-ticket" in out
    assert desk.tickets()[0]["requester"] == "big@example.org"


@pytest.mark.parametrize("desk", ["sqlite", "postgresql"], indirect=True)
def test_an_oversized_mail_in_a_batch_is_quarantined_in_place_and_the_batch_is_not_undone(desk, caplog):
    desk.write_config(limits={"max_message_bytes": 20_000})
    desk.deliver(mail("jane@example.org", "Printer", "Tray 2."))
    desk.deliver(mail("big@example.org", "Screenshot", "See attached.\n" + "x" * 30_000))
    desk.deliver(mail("joe@example.org", "Mouse", "Left button."))
    with caplog.at_level("INFO", logger="maildesk.pipeline"):
        desk.run()
    assert not [r for r in caplog.records if "undone" in r.getMessage()]
    (failed,) = desk.inbound(failed=True)
    assert "over limits.max_message_bytes" in failed["error"]
    assert sorted(t["requester"] for t in desk.tickets()) == ["jane@example.org", "joe@example.org"]
    assert len(desk.sent(to="big@example.org")) == 1  # told once


def test_too_many_parts_is_quarantined_with_the_reason(desk):
    parts = "".join(f"--X\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(600))
    raw = (f"From: parts@example.org\r\nTo: helpdesk@example.test\r\nSubject: parts\r\nMessage-ID: <parts@x>\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n{parts}--X--\r\n").encode()
    desk.deliver(raw)
    desk.deliver(mail("fine@example.org", "Fine", "Fine."))
    desk.run()
    (failed,) = desk.inbound(failed=True)
    assert "500 MIME parts" in failed["error"]
    assert [t["requester"] for t in desk.tickets()] == ["fine@example.org"]


# --- attachments -------------------------------------------------------------------------


def _with_attachments(frm: str, files: list[tuple[str, bytes]]) -> bytes:
    import base64

    parts = "".join(
        f'--A\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(data).decode()}\r\n"
        for name, data in files)
    return (f"From: {frm}\r\nTo: helpdesk@example.test\r\nSubject: files\r\nMessage-ID: <files-{frm}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n"
            f"--A\r\nContent-Type: text/plain\r\n\r\nSee the files.\r\n{parts}--A--\r\n").encode()


def test_attachments_are_stored_once_by_hash_with_safe_names(desk):
    blob = b"%PDF-1.4 the same report" * 100
    desk.deliver(_with_attachments("a@example.org", [("../../etc/passwd", b"root:x:0:0"), ("report.pdf", blob)]))
    desk.deliver(_with_attachments("b@example.org", [("Report copy.pdf", blob), ("evil\x07name\r\n.exe", b"MZ")]))
    desk.run()
    names = [a["filename"] for t in desk.tickets() for m in desk.ticket(t["ref"])["messages"] for a in m["attachments"]]
    assert "report.pdf" in names and "Report copy.pdf" in names
    assert all("/" not in n and "\\" not in n and not any(ord(c) < 32 for c in n) for n in names)
    assert not any(n.startswith(".") for n in names)
    store = Path(desk.config["desk"]["state_dir"]) / "attachments"
    digest = hashlib.sha256(blob).hexdigest()
    assert (store / digest[:2] / digest).read_bytes() == blob
    assert len([p for p in store.rglob("*") if p.is_file()]) == 3  # the shared report is stored once


def test_an_attachment_file_is_written_whole_even_after_its_directory_was_removed_meanwhile(tmp_path):
    import shutil

    from maildesk.store import attachments

    first, second = tmp_path / "ab" / "ab01", tmp_path / "ab" / "ab02"
    attachments._write_file(first, b"one")
    shutil.rmtree(tmp_path / "ab")  # an admin's cleaning, while the process remembers the directory
    attachments._write_file(second, b"two")
    attachments._write_file(second, b"two")  # there: left as it is
    assert second.read_bytes() == b"two" and [p.name for p in (tmp_path / "ab").iterdir()] == ["ab02"]


@pytest.mark.skipif(not (CORPUS / "tnefparse").exists(), reason="the corpus is not here")
def test_a_winmail_dat_is_unpacked_into_its_files(desk):
    tnef = next((p for p in (CORPUS / "tnefparse").rglob("*.tnef") if p.stat().st_size < 200_000), None)
    if tnef is None:
        pytest.skip("no TNEF sample in the corpus")
    desk.deliver(mail("outlook@example.org", "from Outlook", "Attached.",
                      attachments=[("winmail.dat", tnef.read_bytes(), "application/ms-tnef")]))
    desk.run()
    names = [a["filename"] for m in desk.ticket("INC-1")["messages"] for a in m["attachments"]]
    assert names and names != ["winmail.dat"]


# --- injection and identity -------------------------------------------------------------------


def test_crlf_in_a_subject_never_becomes_a_header_of_ours(desk):
    raw = (b"From: =?utf-8?q?Eve=0D=0ABcc=3A_victim=40example=2Eorg?= <eve@example.org>\r\nTo: helpdesk@example.test\r\n"
           b"Subject: =?utf-8?q?Hello=0D=0ABcc=3A_victim=40example=2Eorg=00?=\r\nMessage-ID: <inject@x>\r\n\r\nHi\r\n")
    desk.deliver(raw)
    desk.run()
    (ack,) = desk.sent(to="eve@example.org")
    head = ack.data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in head and b"\x00" not in head
    assert ack.rcpts == ["eve@example.org"]
    assert "\n" not in desk.tickets()[0]["subject"] and "\x00" not in desk.tickets()[0]["subject"]


def test_hostile_html_is_stored_sanitized(desk):
    desk.deliver(mail("jane@example.org", "HTML", "plain part",
                      html='<p onclick="steal()">Hi<script>alert(1)</script><a href="javascript:x()">link</a></p>'))
    desk.run()
    from maildesk import store
    from maildesk.config import load_config

    store.open_database(load_config(desk.config_path).database.url)
    html = store.Message.select().first().html
    assert "script" not in html and "onclick" not in html and "javascript:" not in html and "Hi" in html


def test_two_from_headers_are_an_unknown_sender(desk):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()
    raw = (b"From: jane@example.org\r\nFrom: mallory@evil.example\r\nTo: helpdesk@example.test\r\n"
           b"Subject: Re: [INC-1] Printer jam\r\nMessage-ID: <twofrom@x>\r\n\r\n#close\r\n")
    desk.deliver(raw)
    desk.run()
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert tickets["INC-1"]["status"] == "open" and tickets["INC-1"]["message_count"] == 1
    assert "INC-2" in tickets  # stored, as a ticket of its own
    assert not desk.sent(to="mallory@evil.example")
    code, out, _ = desk.cli("why", "twofrom@x")
    assert "ambiguous" in out


# --- operators --------------------------------------------------------------------------------


def test_why_tells_how_a_message_was_threaded_what_it_changed_and_sent(desk):
    desk.deliver(mail("jane@example.org", "VPN broken", "The vpn drops.", msgid="<why-1@client.example>"))
    desk.run()
    code, out, err = desk.cli("why", "<why-1@client.example>")
    assert code == 0
    assert "no thread matched: a new ticket" in out
    assert "category Network/VPN" in out and "priority" in out
    assert "queued ack to jane@example.org" in out and "queued assigned to carol@example.test" in out
    code, out, err = desk.cli("why", "<nothing@x>")
    assert code == 1 and "no stored message" in err and "Traceback" not in err


def test_a_stalled_fetch_tells_the_incident_managers_once(desk):
    desk.write_config(alerts={"fetch_stalled_after": "10m"})
    desk.run(now="2026-11-30T09:00:00+01:00")
    desk.write_config(imap={"port": free_port()})  # the server is gone
    assert desk.run(now="2026-11-30T09:05:00+01:00", check=False) == 1
    assert not desk.sent(to="im@example.test")
    desk.run(now="2026-11-30T09:20:00+01:00", check=False)
    desk.run(now="2026-11-30T09:40:00+01:00", check=False)
    (alert,) = desk.sent(to="im@example.test")
    assert "stalled" in alert.subject and "refused" in alert.text.lower()


def test_cli_errors_are_one_sentence_without_a_traceback(desk):
    code, out, err = desk.cli("tickets", "show", "INC-999")
    assert code == 1 and err.strip() == "maildesk: no ticket INC-999"
    code, out, err = desk.cli("inbound", "retry", "12345")
    assert code == 1 and "no inbound message" in err
    desk.config_path.write_text(desk.config_path.read_text().replace('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"'))
    code, out, err = desk.cli("tickets", "list")
    assert code == 2 and 'desk.timezone: unknown time zone "Mars/Olympus"' in err and "Traceback" not in err
