"""The test servers themselves: a real Dovecot and a real aiosmtpd sink behave as the rest
of the suite relies on (round trips, IDLE on and off, TLS, restarts, injected SMTP faults)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import aiosmtplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.builders import mail
from tests.sandbox import Captured, Dovecot, SmtpSink, free_port


def make_mail(subject: str = "Printer on fire", body: str = "Hello,\nit smokes.\n",
              sender: str = "alice@example.org", to: str = "desk@example.net",
              msgid: str = "<m1@example.org>") -> bytes:
    """A mail as it travels over IMAP and SMTP: CRLF line ends."""
    return mail(sender, subject, body, to=to, msgid=msgid, linesep="\r\n")


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot() as server:
        server.add_user("desk")
        yield server


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# -- Dovecot --------------------------------------------------------------------------


def test_dovecot_starts_and_a_user_logs_in_with_imapclient(dovecot):
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5) as client:
        assert client.welcome.startswith(b"* OK")
        client.login("desk", "secret")
        assert client.select_folder("INBOX")[b"EXISTS"] >= 0


def test_wrong_password_is_refused_at_once(dovecot):
    client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5)
    started = time.monotonic()
    with pytest.raises(LoginError):
        client.login("desk", "wrong")
    assert time.monotonic() - started < 1.0  # auth_failure_delay = 0
    client.shutdown()


def test_append_then_fetch_gives_identical_bytes_uid_and_flags(dovecot):
    raw = make_mail(subject="Grüße aus dem Keller", body="Zeile 1\nÜmlaut\n",
                    msgid="<roundtrip@example.org>")
    uid = dovecot.append("desk", raw, mailbox="Roundtrip", flags=("\\Seen", "\\Flagged"))
    [(fetched_uid, flags, fetched)] = dovecot.fetch_all("desk", "Roundtrip")
    assert fetched_uid == uid
    assert fetched == raw
    assert "\\Seen" in flags and b"\\Flagged" in flags  # str or bytes, both answer
    assert "\\Answered" not in flags and b"\\Answered" not in flags


def test_bare_lf_mail_comes_back_with_crlf(dovecot):
    # IMAP speaks CRLF; Dovecot stores what it gets and converts on FETCH.
    dovecot.append("desk", b"Subject: lf\n\nline\n", mailbox="Lf")
    [(_uid, _flags, fetched)] = dovecot.fetch_all("desk", "Lf")
    assert fetched == b"Subject: lf\r\n\r\nline\r\n"


def test_append_creates_the_mailbox_and_uids_increase(dovecot):
    first = dovecot.append("desk", make_mail(msgid="<a@x>"), mailbox="Processed")
    second = dovecot.append("desk", make_mail(msgid="<b@x>"), mailbox="Processed")
    assert second == first + 1
    assert "Processed" in dovecot.mailboxes("desk")
    assert "INBOX" in dovecot.mailboxes("desk")


def test_append_many_stores_2000_mails_of_10_kb_in_a_few_seconds(dovecot):
    template = make_mail(subject="bulk NNNN", body=("x" * 76 + "\n") * 128)
    raws = [template.replace(b"NNNN", b"%04d" % i) for i in range(2000)]  # email is slow
    assert 9_000 < len(raws[0]) < 12_000
    started = time.monotonic()
    uids = dovecot.append_many("desk", raws, mailbox="Bulk")
    elapsed = time.monotonic() - started
    assert uids == list(range(1, 2001))
    assert elapsed < 5.0, f"append_many took {elapsed:.2f} s"
    fetched = dovecot.fetch_all("desk", "Bulk")
    assert [raw for _uid, _flags, raw in fetched] == raws


def test_user_added_while_running_logs_in_and_a_new_password_replaces_the_old(dovecot):
    dovecot.add_user("late", "one")
    with dovecot.login("late") as client:
        client.noop()
    dovecot.add_user("late", "two")  # same length, same second: must still be seen
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5) as client:
        client.login("late", "two")
    client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5)
    with pytest.raises(LoginError):
        client.login("late", "one")
    client.shutdown()


def test_idle_is_offered_by_default(dovecot):
    with dovecot.login("desk") as client:
        assert client.has_capability("IDLE")


def test_idle_reports_new_mail_within_a_second(dovecot):
    with dovecot.login("desk") as client:
        client.select_folder("INBOX")
        client.idle()
        try:
            started = time.monotonic()
            dovecot.append("desk", make_mail(msgid="<idle@x>"))
            responses = client.idle_check(timeout=5)
            latency = time.monotonic() - started
        finally:
            client.idle_done()
    assert any(kind == b"EXISTS" for _n, kind in responses), responses
    assert latency < 1.0


def test_idle_is_absent_when_idle_is_false():
    with Dovecot(idle=False) as server:
        server.add_user("poller")
        with IMAPClient(server.host, server.port, ssl=False, timeout=5) as client:
            assert b"IDLE" not in client.capabilities()  # before login
            client.login("poller", "secret")
            assert not client.has_capability("IDLE")  # after login
            assert client.has_capability("UIDPLUS") and client.has_capability("MOVE")


def test_stop_cuts_sessions_and_refuses_connections_and_restart_keeps_mail_and_port():
    with Dovecot() as server:
        server.add_user("desk")
        uid = server.append("desk", make_mail())
        port = server.port
        session = server.login("desk")
        session.select_folder("INBOX")
        started = time.monotonic()
        server.stop()
        stop_took = time.monotonic() - started
        assert refused(server.host, port)
        with pytest.raises((IMAPClient.AbortError, OSError)):
            session.noop()
        session.shutdown()
        server.restart()
        assert server.port == port
        assert [u for u, _f, _r in server.fetch_all("desk")] == [uid]
        assert stop_took < 1.0


def test_start_on_a_taken_port_raises_with_the_log_tail():
    with Dovecot() as server:
        server.stop()
        with socket.socket() as squatter:
            squatter.bind((server.host, server.port))
            squatter.listen()
            with pytest.raises(RuntimeError, match="Address already in use"):
                server.start()
        server.start()  # the port is free again


def test_tls_offers_starttls_and_implicit_tls_trusting_the_cert_file():
    with Dovecot(tls=True) as server:
        server.add_user("desk")
        assert server.cert_path.is_file() and server.ssl_port not in (None, server.port)
        context = ssl.create_default_context(cafile=str(server.cert_path))
        with IMAPClient(server.host, server.port, ssl=False, timeout=5) as client:
            assert client.has_capability("STARTTLS")
            client.starttls(context)
            client.login("desk", "secret")
            assert client.socket().version().startswith("TLSv1.")
        with IMAPClient(server.host, server.ssl_port, ssl=True, ssl_context=context,
                        timeout=5) as client:
            client.login("desk", "secret")
            client.noop()
        untrusting = ssl.create_default_context()  # system CAs only
        with pytest.raises(ssl.SSLCertVerificationError):
            IMAPClient(server.host, server.ssl_port, ssl=True, ssl_context=untrusting,
                       timeout=5)


def test_two_instances_run_at_once_with_their_own_ports_and_mail():
    with Dovecot() as first, Dovecot() as second:
        for server in (first, second):
            server.add_user("desk")
        first.append("desk", make_mail(subject="one"))
        second.append_many("desk", [make_mail(subject="two"), make_mail(subject="three")])
        assert first.port != second.port and first.root != second.root
        assert len(first.fetch_all("desk")) == 1
        assert len(second.fetch_all("desk")) == 2


# -- SmtpSink -------------------------------------------------------------------------


def send(sink: SmtpSink, raw: bytes | None = None, *, rcpts=("desk@example.net",),
         **kwargs):
    message = raw if raw is not None else make_mail()
    return asyncio.run(aiosmtplib.send(
        message, sender="alice@example.org", recipients=list(rcpts),
        hostname=sink.host, port=sink.port, start_tls=False, timeout=5, **kwargs))


@pytest.fixture
def sink():
    with SmtpSink() as server:
        yield server


def test_sink_captures_a_mail_sent_by_aiosmtplib(sink):
    raw = make_mail(subject="Re: [INC-42] Printer", body="Fixed.\n", msgid="<r@desk>")
    send(sink, raw, rcpts=("alice@example.org", "bob@example.org"))
    [captured] = sink.wait_for(1)
    assert isinstance(captured, Captured)
    assert captured.envelope_from == "alice@example.org"
    assert captured.rcpts == ["alice@example.org", "bob@example.org"]
    assert captured.data == raw
    assert captured.subject == "Re: [INC-42] Printer"
    assert captured.message_id == "<r@desk>"
    assert captured.header("To") == "desk@example.net"
    assert captured.header("X-Missing") is None
    assert captured.text == "Fixed.\n"
    assert captured.auth_login is None


def test_sink_accepts_any_credentials_and_records_the_login(sink):
    send(sink, username="maildesk", password="anything")
    assert sink.wait_for(1)[0].auth_login == "maildesk"


def test_fail_next_makes_the_first_send_fail_with_451_and_the_second_succeed(sink):
    sink.fail_next(1, 451)
    with pytest.raises(aiosmtplib.SMTPDataError) as failure:
        send(sink)
    assert failure.value.code == 451
    assert sink.messages == []
    send(sink)
    assert len(sink.wait_for(1)) == 1


def test_fail_next_at_rcpt_refuses_the_recipient_once(sink):
    sink.fail_next(1, 452, "4.2.2 mailbox full", at="RCPT")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as failure:
        send(sink)
    assert failure.value.recipients[0].code == 452
    send(sink)
    sink.wait_for(1)


def test_fail_always_answers_every_mail_until_cleared(sink):
    sink.fail_always(554, "5.7.1 rejected")
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as failure:
            send(sink)
        assert failure.value.code == 554
    sink.fail_always(None)
    send(sink)
    assert len(sink.wait_for(1)) == 1


def test_reject_recipient_gives_550_and_other_recipients_still_receive(sink):
    sink.reject_recipient("Ghost@Example.org")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as failure:
        send(sink, rcpts=("ghost@example.org",))
    assert failure.value.recipients[0].code == 550
    errors, _response = send(sink, rcpts=("ghost@example.org", "real@example.org"))
    assert errors["ghost@example.org"].code == 550
    assert sink.wait_for(1)[0].rcpts == ["real@example.org"]


def test_stop_makes_connections_refused_and_restart_listens_on_the_same_port(sink):
    port = sink.port
    sink.stop()
    assert refused(sink.host, port)
    with pytest.raises(aiosmtplib.SMTPConnectError):
        send(sink)
    sink.restart()
    assert sink.port == port
    send(sink)
    assert len(sink.wait_for(1)) == 1


def test_wait_for_blocks_until_mail_from_another_thread_arrives(sink):
    sender = threading.Timer(0.2, send, args=(sink,))
    sender.start()
    assert len(sink.wait_for(1, timeout=5)) == 1
    sender.join()
    with pytest.raises(TimeoutError, match="1 of 2"):
        sink.wait_for(2, timeout=0.2)


def test_clear_and_reset_forget_messages_and_faults(sink):
    send(sink)
    sink.wait_for(1)
    sink.clear()
    assert sink.messages == []
    sink.fail_always(451)
    sink.reject_recipient("desk@example.net")
    sink.reset()
    send(sink)
    assert len(sink.wait_for(1)) == 1


def test_free_port_can_be_bound_on_loopback():
    port = free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
