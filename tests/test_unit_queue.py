"""maildesk.mailout.queue: the rules that keep the desk from writing where it must not
(malformed addresses, itself, addresses that bounced or complained, the limits on
automatic replies) and what a queued row carries; no SMTP (DESIGN section 6)."""

from __future__ import annotations

import datetime as dt

import pytest

from maildesk import signing
from maildesk.mailout import queue
from maildesk.mailout.queue import Thread, queue_mail
from maildesk.store import Outbox, Suppression
from tests.builders import ticket_row

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def rt(runtime):
    return runtime()


def suppress(email: str, reason: str, until: dt.datetime, detail: str = "") -> None:
    Suppression.create(email=email, reason=reason, detail=detail, until=until, created_at=NOW)


def statuses(rcpt: str | None = None) -> list[str]:
    q = Outbox.select().order_by(Outbox.id)
    return [o.status for o in (q.where(Outbox.rcpt == rcpt) if rcpt else q)]


# --- who may get mail at all ---------------------------------------------------------------


@pytest.mark.parametrize("rcpt", [
    "helpdesk@example.test", "HelpDesk@Example.test", "helpdesk+bounce-7@example.test",  # the desk itself: loops
    "jane", "jane@", "@example.org", "jane doe@example.org", "<jane@example.org>", "jäne@example.org",
    "jane@example.org\r\nBcc: victim@example.org", "jane@example.org,mallory@evil.example", "jane@-example.org",
])
def test_no_row_is_written_to_the_desk_itself_nor_to_a_malformed_address(rt, rcpt):
    t = ticket_row(rt, NOW)
    assert queue_mail(rt, NOW, "ack", rcpt=rcpt, ticket=t) is None
    assert Outbox.select().count() == 0


@pytest.mark.parametrize("address,is_desk", [
    ("helpdesk@example.test", True), ("helpdesk+anything@example.test", True),
    ("helpdesk@example.test.evil", False), ("helpdesk2@example.test", False), ("helpdesk@sub.example.test", False),
])
def test_the_desk_address_is_its_own_and_any_plus_address_of_it(rt, address, is_desk):
    assert queue.is_desk_address(rt, address) is is_desk


def test_a_row_is_signed_for_its_recipient_tagged_and_marked_automatic_by_its_kind(rt):
    t = ticket_row(rt, NOW)
    ack = queue_mail(rt, NOW, "ack", rcpt=" Jane@Example.ORG ", ticket=t)
    notice = queue_mail(rt, NOW, "assigned", rcpt="alice@example.test", ticket=t)
    assert (ack.rcpt, ack.status, ack.automatic, notice.automatic) == ("jane@example.org", "queued", True, False)
    assert ack.subject.startswith(f"[INC-{t.id}] ")
    assert signing.verify_message_id(rt.key, ack.message_id, "jane@example.org", "example.test") == t.id
    assert signing.verify_message_id(rt.key, ack.message_id, "alice@example.test", "example.test") is None
    assert queue_mail(rt, NOW, "assigned", rcpt="bob@example.test", ticket=t, automatic=True).automatic is True


# --- suppressions ---------------------------------------------------------------------------


def test_an_address_that_bounced_gets_no_mail_of_any_kind_until_the_suppression_ends(rt):
    t = ticket_row(rt, NOW)
    suppress("ghost@example.org", "bounce", NOW + dt.timedelta(days=60), "550 5.1.1 user unknown")
    for kind in ("ack", "relay"):
        row = queue_mail(rt, NOW, kind, rcpt="ghost@example.org", ticket=t)
        assert row.status == "suppressed"
        assert row.last_error == "address bounced (550 5.1.1 user unknown); no mail until 2027-01-29"
    rt.begin_cycle()
    assert queue_mail(rt, NOW + dt.timedelta(days=60), "relay", rcpt="ghost@example.org", ticket=t).status == "queued"


def test_an_address_that_complained_gets_no_automatic_mail_but_a_technicians_words(rt):
    t = ticket_row(rt, NOW)
    suppress("grumpy@example.org", "complaint", NOW + dt.timedelta(days=60))
    ack = queue_mail(rt, NOW, "ack", rcpt="grumpy@example.org", ticket=t)
    assert ack.status == "suppressed" and ack.last_error.startswith("recipient complained (feedback report)")
    assert queue_mail(rt, NOW, "relay", rcpt="grumpy@example.org", ticket=t).status == "queued"


def test_suppressions_are_read_once_a_cycle_and_forgotten_when_they_change(rt):
    t = ticket_row(rt, NOW)
    assert queue_mail(rt, NOW, "relay", rcpt="ghost@example.org", ticket=t).status == "queued"
    suppress("ghost@example.org", "bounce", NOW + dt.timedelta(days=1))
    queue.forget_suppressions(rt)  # what a bounce does after it stored one
    assert queue_mail(rt, NOW, "relay", rcpt="ghost@example.org", ticket=t).status == "suppressed"


# --- limits on automatic replies ---------------------------------------------------------------


def test_a_sender_gets_at_most_the_daily_number_of_automatic_replies_in_any_24_hours(runtime):
    rt = runtime(limits={"auto_replies_per_sender_per_day": 2})
    for i in range(3):
        queue_mail(rt, NOW + dt.timedelta(hours=i), "ack", rcpt="chatty@example.org", ticket=ticket_row(rt, NOW))
    assert statuses("chatty@example.org") == ["queued", "queued", "suppressed"]
    assert Outbox.select().order_by(Outbox.id.desc()).get().last_error == (
        "chatty@example.org already got 2 automatic replies in 24 hours as one of the senders whose mail did not "
        "pass authentication (limits.auto_replies_per_sender_per_day)")
    assert queue_mail(rt, NOW, "ack", rcpt="other@example.org", ticket=ticket_row(rt, NOW)).status == "queued"
    assert queue_mail(rt, NOW, "relay", rcpt="chatty@example.org", ticket=ticket_row(rt, NOW)).status == "queued"
    rt.begin_cycle()  # a later cycle reads the count from the store: the window slides
    at = NOW + dt.timedelta(hours=24, seconds=1)  # the first reply is over a day old
    assert queue_mail(rt, at, "ack", rcpt="chatty@example.org", ticket=ticket_row(rt, at)).status == "queued"
    assert queue_mail(rt, at, "ack", rcpt="chatty@example.org", ticket=ticket_row(rt, at)).status == "suppressed"


def test_a_ticket_sends_at_most_its_daily_number_of_automatic_replies(runtime):
    rt = runtime(limits={"auto_replies_per_ticket_per_day": 2})
    t = ticket_row(rt, NOW)
    for who in ("a", "b", "c"):
        queue_mail(rt, NOW, "ack", rcpt=f"{who}@example.org", ticket=t)
    assert statuses() == ["queued", "queued", "suppressed"]
    assert "(limits.auto_replies_per_ticket_per_day)" in Outbox.select().order_by(Outbox.id.desc()).get().last_error


def test_above_the_hourly_rate_automatic_replies_pause_and_the_incident_managers_hear_once(runtime):
    rt = runtime(limits={"auto_replies_per_hour": 2})
    for i in range(4):
        queue_mail(rt, NOW, "ack", rcpt=f"user{i}@example.org", ticket=ticket_row(rt, NOW))
    rt.begin_cycle()
    queue_mail(rt, NOW + dt.timedelta(minutes=30), "ack", rcpt="late@example.org", ticket=ticket_row(rt, NOW))
    acks = Outbox.select().where(Outbox.kind == "ack").order_by(Outbox.id)
    assert [o.status for o in acks] == ["queued", "queued", "suppressed", "suppressed", "suppressed"]
    assert acks[2].last_error == (
        "automatic replies to senders whose mail did not pass authentication paused: 2 in the last hour "
        "(limits.auto_replies_per_hour); staff and authenticated senders are still answered")
    (alert,) = Outbox.select().where(Outbox.kind == "autopause")
    assert (alert.rcpt, alert.status, alert.automatic) == ("im@example.test", "queued", False)
    rt.begin_cycle()
    later = NOW + dt.timedelta(hours=1, minutes=1)
    assert queue_mail(rt, later, "ack", rcpt="next@example.org", ticket=ticket_row(rt, later)).status == "queued"


# --- threads and templates ------------------------------------------------------------------


def test_a_mail_threads_under_what_its_recipient_has_seen_of_the_ticket(rt):
    t = ticket_row(rt, NOW, thread_root="<first@client.example>")
    ack = queue_mail(rt, NOW, "ack", rcpt="jane@example.org", ticket=t)
    queue_mail(rt, NOW, "relay", rcpt="alice@example.test", ticket=t)  # alice's mail is not jane's thread
    thread = queue.thread_for(t, "jane@example.org")
    assert thread == Thread(ack.message_id, ["<first@client.example>", ack.message_id])
    assert queue.thread_for(t, "boss@example.org") == Thread(None, [])


def test_a_suppressed_mail_is_no_part_of_the_thread(rt):
    t = ticket_row(rt, NOW)
    suppress("jane@example.org", "complaint", NOW + dt.timedelta(days=1))
    queue_mail(rt, NOW, "ack", rcpt="jane@example.org", ticket=t)
    assert queue.thread_for(t, "jane@example.org") == Thread(None, [])


def test_thread_after_answers_a_mail_and_keeps_its_references():
    assert Thread.after("<b@x>", ["<a@x>", ""]) == Thread("<b@x>", ["<a@x>", "<b@x>"])
    assert Thread.after(None) == Thread(None, [])


def test_a_broken_template_fails_its_own_row_and_not_the_caller(runtime, tmp_path):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "ack.txt.j2").write_text("Subject: {{ ticket.subject | no_such_filter }}\n\nHi\n")
    rt = runtime(desk={"templates_dir": str(overrides)})
    t = ticket_row(rt, NOW)
    row = queue_mail(rt, NOW, "ack", rcpt="jane@example.org", ticket=t)
    assert row.status == "failed" and row.last_error.startswith("template ack failed: ")
    assert queue_mail(rt, NOW, "assigned", rcpt="alice@example.test", ticket=t).status == "queued"
