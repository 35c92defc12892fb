"""Prometheus metrics on `[metrics] listen`: an HTTP GET on a loopback port shows
the counters move as mail flows through a running desk."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import mail, wait_until
from tests.sandbox import free_port


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_counters_move_as_mail_flows(desk):
    port = free_port()
    desk.write_config(metrics={"listen": f"127.0.0.1:{port}"}, limits={"max_message_bytes": 20000})
    proc = desk.spawn("run")
    try:
        before = wait_until(lambda: _try_scrape(port), 20, what="the metrics endpoint")
        assert _value(before, "maildesk_mail_fetched_total") == 0
        assert _value(before, "maildesk_open_tickets", priority="critical") == 0
        desk.smtp.fail_next(1)  # the first mail is deferred once
        desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2 is stuck."))
        desk.deliver(mail("bob@example.org", "Outage: everyone is down, urgent", "Nobody can work."))
        desk.deliver(mail("mallory@example.net", "big", "A" * 40000))  # too large: quarantined
        after = wait_until(lambda: (m := _scrape(port)) and _value(m, "maildesk_mail_processed_total") >= 2
                           and _value(m, "maildesk_outbox_sent_total") >= 1 and m, 30, what="mail to flow")
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0
    assert _value(after, "maildesk_mail_fetched_total") == 3
    assert _value(after, "maildesk_mail_processed_total") == 2
    assert _value(after, "maildesk_mail_quarantined_total") == 1
    assert _value(after, "maildesk_inbound_messages", status="quarantined") == 1
    assert _value(after, "maildesk_inbound_messages", status="pending") == 0
    assert _value(after, "maildesk_outbox_deferred_total") == 1
    assert _value(after, "maildesk_outbox_queued_total") >= 2
    assert _value(after, "maildesk_open_tickets", priority="critical") == 1
    assert sum(_value(after, "maildesk_open_tickets", priority=p) for p in ("critical", "high", "medium", "low")) == 2
    assert 0 <= _value(after, "maildesk_fetch_lag_seconds", mailbox="INBOX") < 30
    assert ("maildesk_sla_targets_missed_total", (("target", "response"),)) in after


def _try_scrape(port: int):
    try:
        return _scrape(port)
    except OSError:
        return None


def test_a_taken_metrics_port_is_a_config_error_that_names_the_key(desk):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        desk.write_config(metrics={"listen": f"127.0.0.1:{taken.getsockname()[1]}"})
        proc = desk.spawn("run")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "maildesk: metrics.listen: cannot listen on 127.0.0.1:" in err.decode()


def test_a_count_over_a_whole_table_is_read_at_every_scrape_while_quick_and_every_five_minutes_once_slow(monkeypatch):
    from maildesk.service import metrics

    clock = [1000.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    reads = []

    def read():
        reads.append(clock[0])
        clock[0] += took[0]  # the time the count takes
        return {"sent": len(reads)}

    took = [0.001]
    count = metrics._Slow(read)
    assert count() == {"sent": 1} and count() == {"sent": 2}  # quick: read at every scrape
    took[0] = 0.4  # the table grew to millions of rows
    assert count() == {"sent": 3}
    clock[0] += 60
    assert count() == {"sent": 3}  # kept
    clock[0] += metrics.REREAD
    assert count() == {"sent": 4}  # read again
    assert len(reads) == 4
