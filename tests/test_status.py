"""What an operator sees: `maildesk status`, times in the CLI tables, and a second
`maildesk run` on a SQLite database that one already serves."""

from __future__ import annotations

import json
import signal

from tests.conftest import mail, only_sqlite, wait_until

MONDAY_10 = "2026-11-30T10:00:00+01:00"


def _status(desk, now: str) -> dict:
    code, out, err = desk.cli("status", "--json", "--now", now)
    assert code == 0, err
    return json.loads(out)


def test_status_shows_the_last_fetch_inbound_outbox_and_the_next_deadlines(desk):
    desk.write_config(limits={"max_message_bytes": 20000})
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2 is stuck."))
    desk.deliver(mail("bob@example.org", "VPN down, urgent", "I cannot work."))
    # an attacker's oversized mail: quarantined, counted, not in anyone's way
    desk.deliver(mail("mallory@example.net", "x" * 50, "A" * 40000))
    desk.smtp.fail_always(451)
    desk.run(now=MONDAY_10)
    s = _status(desk, "2026-11-30T10:30:00+01:00")
    # SQLite: the one desk process, not running; PostgreSQL lists its workers instead
    assert s["desk"] == {"running": False if desk.db_url.startswith("sqlite") else None, "pid": None}
    [box] = s["mailboxes"]
    assert box["mailbox"] == "INBOX" and box["last_fetch_at"] == MONDAY_10
    assert box["last_fetch_age_seconds"] == 1800 and box["stalled"] is False
    assert (s["inbound"]["pending"], s["inbound"]["quarantined"]) == (0, 1)
    deferred = s["outbox"]["deferred"]
    assert deferred["count"] >= 2 and deferred["oldest_age_seconds"] == 1800
    assert s["outbox"]["queued"]["count"] == 0 and s["outbox"]["failed"]["count"] == 0
    due = s["next_deadlines"]
    assert [d["target"] for d in due[:2]] == ["response", "response"]
    assert due == sorted(due, key=lambda d: d["due_in_seconds"])
    assert {d["ticket"] for d in due} == {"INC-1", "INC-2"}
    assert s["workers"] == []
    code, text, err = desk.cli("status", "--now", "2026-11-30T10:30:00+01:00")
    assert code == 0 and "last fetch 30 min ago (ok)" in text and "1 quarantined" in text
    assert "INC-2" in text and "response" in text


def test_status_says_fetching_stalled_when_it_never_fetched(desk):
    s = _status(desk, MONDAY_10)
    assert s["mailboxes"] == [{"mailbox": "INBOX", "address": "helpdesk@example.test", "fetched_by": None,
                               "last_fetch_at": None, "last_fetch_age_seconds": None, "stalled": True, "last_uid": None}]
    assert s["next_deadlines"] == []


def test_the_tables_show_when_things_happened(desk):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2 is stuck."))
    desk.run(now=MONDAY_10)
    code, out, err = desk.cli("tickets", "list")
    header, row = out.splitlines()[:2]
    assert "CREATED" in header and "DUE" in header
    assert "2026-11-30 10:00" in row and "2026-11-30 14:00" in row  # medium: a response within 4 business hours
    code, out, err = desk.cli("inbound", "list")
    assert "RECEIVED" in out.splitlines()[0] and "2026-11-30 10:00" in out.splitlines()[1]
    code, out, err = desk.cli("outbox", "list")
    assert "QUEUED" in out.splitlines()[0] and "SENT" in out.splitlines()[0]
    assert out.splitlines()[1].count("2026-11-30 10:00") == 2  # queued and sent in the same cycle
    # the JSON keeps every field it had
    assert {"received_at", "status", "error", "ticket"} <= set(desk.inbound()[0])


@only_sqlite
def test_a_second_desk_on_the_same_sqlite_database_is_refused(desk):
    proc = desk.spawn("run")
    try:
        wait_until(lambda: _status(desk, MONDAY_10)["desk"]["running"], 20, what="the first desk")
        assert _status(desk, MONDAY_10)["desk"]["pid"] == proc.pid
        code, out, err = desk.cli("run", "--once")
        assert code == 1
        assert err.startswith(f"maildesk: another maildesk run (process {proc.pid}) already serves this database")
        assert "Traceback" not in err
        proc.send_signal(signal.SIGKILL)  # a crash leaves no stale lock behind
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2 is stuck."))
    desk.run()
    assert len(desk.tickets()) == 1


def test_the_log_says_each_mail_sent_and_what_the_mail_processes_did(desk):
    desk.write_config(imap={"processed_mailbox": "Processed"})
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2 is stuck."))
    proc = desk.spawn("run", "--once")
    out, err = proc.communicate(timeout=60)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "fetched mailbox=INBOX: stored 1 new message(s); moved 1 to Processed" in log
    assert "sent outbox=1 kind=ack rcpt=jane@example.org ticket=INC-1 msgid=<" in log
    assert "connected to IMAP" in log and "connected to SMTP" in log
    assert "fetch process started" in log and "send process stopped" in log
    assert "flagged=" not in log and "secret" not in log  # the IMAP password of the test config


def test_the_next_deadlines_are_the_earliest_running_targets_of_both_kinds_overdue_first(runtime):
    import datetime as dt

    from maildesk.ops.status import next_deadlines
    from tests.builders import ticket_row

    rt, t0 = runtime(), dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)

    def ticket(status="open", response=None, resolution=None, answered=False):
        t = ticket_row(rt, t0, status=status)
        t.response_due, t.resolution_due = response, resolution
        t.first_response_at = t0 if answered else None
        t.save()
        return rt.ref(t.id)

    late = ticket(response=t0 - hour, resolution=t0 + 9 * hour)
    answered = ticket(response=t0 - 2 * hour, resolution=t0 + 3 * hour, answered=True)
    ticket(status="on-hold", response=t0 - 5 * hour, resolution=t0 - 5 * hour)  # its clock stands
    ticket(status="resolved", response=t0 - 6 * hour, resolution=t0 - 6 * hour)
    soon = [ticket(status="new", response=t0 + n * hour, resolution=t0 + (20 + n) * hour) for n in range(1, 5)]
    due = next_deadlines(rt, t0, limit=5)
    assert [(d["ticket"], d["target"], d["due_in_seconds"] // 3600) for d in due] == [
        (late, "response", -1), (soon[0], "response", 1), (soon[1], "response", 2),
        (soon[2], "response", 3), (answered, "resolution", 3)]  # at the same time, the response first
    assert next_deadlines(rt, t0, limit=1)[0]["ticket"] == late
