"""The mail pipeline end to end through real Dovecot and aiosmtpd: fetch, store,
thread, acknowledge, deliver (issue 2; DESIGN sections 1, 4 and guarantees 1-4)."""

from __future__ import annotations

import signal
import time

from tests.builders import answer, mail
from tests.conftest import both_databases, wait_until

pytestmark = both_databases  # every test here runs on SQLite and on PostgreSQL


def _only(lst):
    assert len(lst) == 1, lst
    return lst[0]


def test_new_mail_opens_a_ticket_and_is_acknowledged(desk):
    desk.deliver(mail("Jane Doe <jane@example.org>", "Printer on floor 2 is broken", "It prints blank pages.",
                      msgid="<first@client.example>"))
    desk.run()
    t = _only(desk.tickets())
    assert t["ref"] == "INC-1" and t["status"] in ("new", "open")
    assert t["requester"] == "jane@example.org" and t["subject"] == "Printer on floor 2 is broken"
    assert t["message_count"] == 1 and t["parent"] is None
    ack = _only(desk.sent(to="jane@example.org"))
    assert "[INC-1]" in ack.subject
    assert ack.header("Auto-Submitted") == "auto-replied"
    assert ack.header("X-Auto-Response-Suppress") == "All"
    assert ack.header("In-Reply-To") == "<first@client.example>"
    assert "<first@client.example>" in ack.header("References")
    assert ack.envelope_from.startswith("helpdesk+bounce-") and ack.envelope_from.endswith("@example.test")
    assert "Hardware" in ack.text and "medium" in ack.text  # category and priority are stated
    stored = _only(desk.outbox() and [o for o in desk.outbox() if o["to"] == "jane@example.org"])
    assert stored["status"] == "sent" and f"<{stored['message_id']}>" == ack.header("Message-ID")
    # the message is flagged on the server only after it was stored
    (uid, flags, raw), = desk.imap_messages()
    assert b"\\Seen" in flags


def test_reply_threads_onto_the_ticket_without_second_acknowledgement(desk):
    desk.deliver(mail("jane@example.org", "VPN drops every hour", "The VPN disconnects."))
    desk.run()
    ack = _only(desk.sent(to="jane@example.org"))
    answer(desk, ack, "It happened again at 11:00.", frm="jane@example.org")
    t = _only(desk.tickets())
    assert t["message_count"] == 2
    incoming = [m for m in desk.ticket("INC-1")["messages"] if m["direction"] == "in"]
    assert incoming[1]["body"].strip() == "It happened again at 11:00."  # quoted history stripped
    assert len(desk.sent(to="jane@example.org")) == 1  # no second acknowledgement


def test_subject_tag_threads_a_participant_but_not_a_stranger(desk):
    desk.deliver(mail("jane@example.org", "Laptop will not boot", "Black screen."))
    desk.run()
    desk.deliver(mail("jane@example.org", "Re: [INC-1] Laptop will not boot", "Still black.", msgid="<tagged@client.example>"))
    desk.deliver(mail("mallory@evil.example", "[INC-1] give me the data", "I guessed the tag."))
    desk.run()
    tickets = {t["ref"]: t for t in desk.tickets()}
    assert tickets["INC-1"]["message_count"] == 2
    assert tickets["INC-2"]["requester"] == "mallory@evil.example"
    code, out, _ = desk.cli("why", "tagged@client.example")
    assert code == 0 and "subject tag [INC-1]" in out


def test_the_same_message_appended_twice_makes_one_ticket(desk):
    raw = mail("jane@example.org", "Monitor flickers", "Since this morning.")
    desk.deliver(raw)
    desk.deliver(raw)
    desk.run()
    desk.run()
    assert len(desk.tickets()) == 1
    assert len(desk.sent(to="jane@example.org")) == 1
    assert all(b"\\Seen" in flags for _, flags, _ in desk.imap_messages())


def test_a_crash_after_storing_before_flagging_makes_no_duplicate(desk):
    desk.deliver(mail("jane@example.org", "Keyboard missing keys", "The E key is gone."))
    proc = desk.spawn("run", "--once", env={"MAILDESK_FAULT": "after-store"})
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (uid, flags, raw), = desk.imap_messages()
    assert b"\\Seen" not in flags  # stored, but the crash came before the flag
    desk.run()
    desk.run()
    assert len(desk.tickets()) == 1
    assert len(desk.sent(to="jane@example.org")) == 1
    assert all(b"\\Seen" in f for _, f, _ in desk.imap_messages())
    assert len(desk.inbound()) == 1


def test_a_crash_after_sending_resends_with_the_same_message_id(desk):
    desk.deliver(mail("jane@example.org", "Mouse broken", "Left button dead."))
    proc = desk.spawn("run", "--once", env={"MAILDESK_FAULT": "after-send"})
    proc.wait(timeout=30)
    desk.run()
    acks = desk.sent(to="jane@example.org")
    assert 1 <= len(acks) <= 2
    assert len({a.header("Message-ID") for a in acks}) == 1
    assert len(desk.tickets()) == 1


def test_a_temporary_smtp_failure_is_retried_and_sent_exactly_once(desk):
    desk.smtp.fail_next(5, 451, "4.3.0 try again later")
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run(now="2026-11-27T10:00:00+01:00")
    assert not desk.sent(to="jane@example.org")
    row = next(o for o in desk.outbox() if o["to"] == "jane@example.org")
    assert row["status"] == "deferred" and "451" in row["last_error"]
    desk.smtp.reset()
    desk.run(now="2026-11-27T10:00:30+01:00")  # before its retry time: nothing
    assert not desk.sent(to="jane@example.org")
    desk.run(now="2026-11-27T10:05:00+01:00")
    desk.run(now="2026-11-27T10:10:00+01:00")
    assert len(desk.sent(to="jane@example.org")) == 1
    assert next(o for o in desk.outbox() if o["to"] == "jane@example.org")["status"] == "sent"


def test_a_permanent_smtp_failure_is_recorded_with_the_answer(desk):
    desk.smtp.reject_recipient("ghost@example.org", 550, "5.1.1 user unknown")
    desk.deliver(mail("ghost@example.org", "Help", "Please."))
    desk.run()
    row = next(o for o in desk.outbox() if o["to"] == "ghost@example.org")
    assert row["status"] == "failed" and "550" in row["last_error"] and "user unknown" in row["last_error"]
    events = desk.ticket("INC-1")["events"]
    assert any(e["kind"] == "delivery-failed" for e in events)


def test_a_malformed_message_is_quarantined_while_the_others_go_through(desk):
    huge_header = b"X-Junk: " + b"a" * 400_000 + b"\r\n"
    bad = b"From: broken@example.org\r\nSubject: broken\r\n" + huge_header + b"\r\nbody\r\n"
    desk.deliver(mail("one@example.org", "First", "One."))
    desk.deliver(bad)
    desk.deliver(mail("two@example.org", "Second", "Two."))
    desk.run()
    assert sorted(t["requester"] for t in desk.tickets()) == ["one@example.org", "two@example.org"]
    failed = _only(desk.inbound(failed=True))
    assert failed["status"] == "quarantined" and "header" in failed["error"]
    assert failed["from"] == "broken@example.org"


def test_auto_submitted_mail_is_not_answered(desk):
    desk.deliver(mail("robot@example.org", "Nightly job report", "All good.", headers={"Auto-Submitted": "auto-generated"}))
    desk.deliver(mail("jane@example.org", "Out of Office: back Monday", "I am away.", headers={"Auto-Submitted": "auto-replied"}))
    desk.run()
    assert not desk.sent(to="robot@example.org") and not desk.sent(to="jane@example.org")
    assert {i["outcome"] for i in desk.inbound()} <= {"new-ticket", "automatic"}


def test_a_sender_gets_no_more_automatic_replies_than_the_daily_limit(desk):
    desk.write_config(limits={"auto_replies_per_sender_per_day": 2})
    for i in range(4):
        desk.deliver(mail("chatty@example.org", f"Problem {i}", "Broken."))
    desk.run()
    assert len(desk.tickets()) == 4
    assert len(desk.sent(to="chatty@example.org")) == 2
    suppressed = [o for o in desk.outbox() if o["to"] == "chatty@example.org" and o["status"] == "suppressed"]
    assert len(suppressed) == 2 and "auto_replies_per_sender_per_day" in suppressed[0]["last_error"]


def test_html_only_mail_is_stored_as_readable_text(desk):
    desk.deliver(mail("jane@example.org", "HTML only", None,
                      html="<html><body><p>The <b>scanner</b> is <i>offline</i>.</p><script>alert(1)</script></body></html>"))
    desk.run()
    body = desk.ticket("INC-1")["messages"][0]["body"]
    assert "scanner" in body and "offline" in body and "<b>" not in body and "alert" not in body


def test_processed_mailbox_receives_the_stored_mail(desk):
    desk.write_config(imap={"processed_mailbox": "Processed"})
    desk.deliver(mail("jane@example.org", "Move me", "Please."))
    desk.run()
    assert desk.imap_messages("INBOX") == []
    assert len(desk.imap_messages("Processed")) == 1
    assert len(desk.tickets()) == 1


def test_the_daemon_survives_an_imap_restart_and_stops_on_sigterm(desk):
    proc = desk.spawn("run")
    try:
        desk.deliver(mail("jane@example.org", "Before restart", "One."))
        wait_until(lambda: desk.sent(to="jane@example.org"), 20, what="the first acknowledgement")
        desk.dovecot.restart()
        desk.deliver(mail("joe@example.org", "After restart", "Two."))
        wait_until(lambda: desk.sent(to="joe@example.org"), 40, what="the acknowledgement after the restart")
        assert proc.poll() is None
    finally:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
    assert time.monotonic() - start < 10
    assert len(desk.tickets()) == 2


def test_sigterm_during_idle_stops_the_daemon_within_seconds(desk):
    proc = desk.spawn_ready("run")
    time.sleep(1)  # into its IDLE wait
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 5
    assert "stopped" in err


# --- the fetch process hands its batches to the desk -------------------------------------


class _DroppingStore:
    """fetch_new's store with the first batch lost on its way to the desk."""

    def __init__(self):
        from maildesk.mailin.mailbox import StoreHere

        self.here, self.sends = StoreHere(), 0

    def send(self, *args):
        self.sends += 1
        return None if self.sends == 1 else self.here.send(*args)

    def wait(self, receipt):
        return self.here.wait(receipt)

    def flagged(self, *args):
        self.here.flagged(*args)


def test_a_batch_the_desk_did_not_commit_is_not_flagged_and_the_next_batch_does_not_skip_it(desk):
    import pytest

    from maildesk import store
    from maildesk.config import load_config
    from maildesk.mailin.mailbox import MailboxSession, StoreFailed, fetch_new
    from maildesk.store import Inbound, utcnow

    for i in range(5):
        desk.deliver(mail(f"user{i}@example.org", f"Problem {i}", "Please help."))
    cfg = load_config(desk.config_path)
    store.open_database(cfg.database.url)
    session = MailboxSession(cfg.imap).connect()
    store = _DroppingStore()
    try:
        with pytest.raises(StoreFailed):
            fetch_new(session, utcnow(), batch_size=2, intake=store)
    finally:
        session.close()
    # the second batch went out before the first was answered; stored, it would move
    # the checkpoint past the lost one, so it was refused too
    assert store.sends == 2
    assert Inbound.select().count() == 0
    assert not any(b"\\Seen" in f for _, f, _ in desk.imap_messages())
    desk.run()
    assert len(desk.tickets()) == 5 and len(desk.inbound()) == 5
    assert all(b"\\Seen" in f for _, f, _ in desk.imap_messages())


def test_a_desk_that_fails_takes_its_mail_processes_with_it(desk, monkeypatch):
    import multiprocessing

    import pytest

    from maildesk.service import daemon

    desk.dovecot.append_many(desk.user, [mail(f"u{i}@example.org", f"Issue {i}", "x" * 3000) for i in range(400)])
    desk.write_config(imap={"batch_size": 20})

    def failing(rt, now, should_stop, between, intake):
        intake()  # something arrived; the fetch process has more batches on the way
        raise RuntimeError("a bug in the desk")

    monkeypatch.setattr(daemon, "process_pending", failing)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError):
        desk.cli("run", "--once")
    assert time.monotonic() - t0 < 20
    assert not multiprocessing.active_children()
    monkeypatch.undo()
    desk.run()  # and the next run does everything once
    acks = [m for m in desk.sent() if m.rcpts[0].endswith("@example.org")]
    assert len(desk.tickets()) == 400 and len(acks) == 400 and len({m.rcpts[0] for m in acks}) == 400


# --- the send process keeps its SMTP connections ------------------------------------------


def test_the_send_process_keeps_its_smtp_connection_between_rounds_and_replaces_a_dropped_one(desk):
    desk.write_config(smtp={"connections": 1})
    proc = desk.spawn("run")
    try:
        for i in range(3):  # three rounds of delivery, a second or so apart
            desk.deliver(mail(f"user{i}@example.org", f"Problem {i}", "Help."))
            wait_until(lambda i=i: desk.sent(to=f"user{i}@example.org"), 20, what=f"acknowledgement {i}")
        assert len({m.peer for m in desk.sent()}) == 1, "one connection for all three rounds"
        desk.smtp.restart()  # the server drops the idle connection
        desk.deliver(mail("late@example.org", "After the drop", "Help."))
        wait_until(lambda: desk.sent(to="late@example.org"), 20, what="the acknowledgement after the drop")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
    assert len(desk.sent(to="late@example.org")) == 1
    outbox = desk.outbox()
    assert all(row["status"] == "sent" for row in outbox), outbox


def test_an_smtp_connection_idle_too_long_is_closed(desk):
    from maildesk.config import load_config
    from maildesk.mailout.smtp import Connections

    connections = Connections(load_config(desk.config_path).smtp, idle=2.0)  # ample for a busy machine
    try:
        client = connections.run(connections.take())
        connections.give_back(client)
        connections.expire()
        assert connections.run(connections.take()) is client  # not idle long enough yet
        connections.give_back(client)
        time.sleep(2.1)
        connections.expire()
        assert not client.is_connected
        fresh = connections.run(connections.take())
        assert fresh is not client and fresh.is_connected
        connections.give_back(fresh)
    finally:
        connections.close()


def test_a_batch_is_cut_where_its_messages_add_up_to_more_than_the_byte_limit(desk, monkeypatch):
    from maildesk.mailin import mailbox
    from maildesk.store import Inbound

    for i in range(5):
        desk.deliver(mail(f"user{i}@example.org", f"Log file {i}", "x" * 4000))
    monkeypatch.setattr(mailbox, "MAX_BATCH_BYTES", 10_000)
    sent, report = _fetch_counting_batches(desk, batch_size=100)
    assert sent == [2, 2, 1] and report.stored == 5 and Inbound.select().count() == 5


def test_a_round_of_fetching_begins_with_a_small_batch_and_doubles_it_up_to_the_batch_size(desk):
    """The first mail of a burst is committed, and the desk begins on it, while the
    rest is still fetched (mailbox.FIRST_BATCH)."""
    from maildesk.mailin import mailbox
    from maildesk.store import Inbound

    desk.dovecot.append_many(desk.user, [mail(f"user{i}@example.org", f"Problem {i}", "Help.") for i in range(75)])
    sent, report = _fetch_counting_batches(desk, batch_size=25)
    assert mailbox.FIRST_BATCH == 10
    assert sent == [10, 20, 25, 20] and report.stored == 75 and Inbound.select().count() == 75


def _fetch_counting_batches(desk, batch_size: int):
    """One fetch_new of the desk's mailbox into its database; returns the size of each
    batch it handed over, and its report."""
    from maildesk import store
    from maildesk.config import load_config
    from maildesk.mailin.mailbox import MailboxSession, StoreHere, fetch_new
    from maildesk.store import utcnow

    sent: list[int] = []

    class Counting(StoreHere):
        def send(self, mailbox_name, uidvalidity, after_uid, last_uid, items, now):
            sent.append(len(items))
            return super().send(mailbox_name, uidvalidity, after_uid, last_uid, items, now)

    cfg = load_config(desk.config_path)
    store.open_database(cfg.database.url)
    session = MailboxSession(cfg.imap).connect()
    try:
        report = fetch_new(session, utcnow(), batch_size=batch_size, intake=Counting())
    finally:
        session.close()
    return sent, report


def test_the_send_process_lets_no_more_than_a_window_of_sent_mail_wait_for_its_record(desk):
    """What a crash can resend is bounded: past mailprocess.MAX_UNRECORDED sent but not yet
    recorded mails, the send process waits for the desk."""
    import multiprocessing

    from maildesk import store
    from maildesk.config import load_config
    from maildesk.mailout.results import record_results
    from maildesk.service import mailprocess
    from maildesk.service.runtime import Runtime
    from maildesk.store import Outbox, utcnow

    desk.write_config(technicians=[], limits={"auto_replies_per_hour": 10_000})
    desk.dovecot.append_many(desk.user, [mail(f"u{i}@example.org", f"Issue {i}", "Help.") for i in range(150)])
    desk.smtp.fail_always(451)  # queued, tried, deferred
    desk.run()
    desk.smtp.fail_always(None)
    cfg = load_config(desk.config_path)
    store.open_database(cfg.database.url)
    with store.write_transaction():
        Outbox.update(next_attempt_at=utcnow()).execute()
    desk.smtp.reset()
    desk_end, our_end = multiprocessing.Pipe()
    sender = mailprocess.Mover(Runtime.start(cfg), our_end, "send")
    try:
        assert sender.deliver() == mailprocess.MAX_UNRECORDED == len(desk.smtp.wait_for(mailprocess.MAX_UNRECORDED))
        assert sender.deliver() == 0  # the window is full: nothing more until the desk records
        results = []
        while desk_end.poll():
            results += desk_end.recv()[1]
        record_results(sender.rt, results, utcnow())
        assert sender.deliver() == 50
        assert len(desk.smtp.wait_for(150)) == 150
    finally:
        sender.close()
    assert len({m.rcpts[0] for m in desk.sent()}) == 150
