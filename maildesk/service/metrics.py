"""Prometheus metrics of a running desk, served by the desk process on
`[metrics] listen` (http://127.0.0.1:9464/metrics) with prometheus-client.

Two kinds, by where the number lives:

- counters of what this desk process has seen since it started; what the fetch and
  send processes do reaches it over the pipes they already use (a committed batch,
  a delivery result): `maildesk_mail_fetched_total`, `_processed_total`,
  `_quarantined_total`, `maildesk_outbox_sent_total`, `_deferred_total`,
  `_failed_total`;
- numbers read from the database at scrape time, so they are right after a restart
  and whichever process wrote them: inbound mail pending, quarantined and held,
  outgoing mail by state and queued in all, the age of each mailbox's last
  successful fetch, open tickets by priority, SLA targets missed. Two of them count
  every row a desk ever wrote (outgoing mail by state, SLA targets missed): on a
  database of years, where reading them takes longer than `SLOW`, they are read again
  only every `REREAD` (`_Slow`), the others at every scrape.

    metrics = DeskMetrics(rt)
    metrics.serve("127.0.0.1:9464")      # a thread of the desk process
    metrics.fetched(3); metrics.processed(report); metrics.delivered(delivered)
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterable
from typing import Any, cast

from peewee import SQL, fn
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server

from .. import store
from ..store import Inbound, MailboxState, Outbox, SlaMark, Ticket
from ..vocab import ACTIVE, PRIORITIES, MarkLevel

log = logging.getLogger(__name__)

INBOUND_STATES = ("pending", "quarantined")
OUTBOX_STATES = ("queued", "deferred", "sent", "failed", "suppressed", "bounced")
# docs/configuration.md, limits.new_tickets_per_sender_per_hour: held = quarantined as rate-limited
HELD = "%rate-limited%"


class DeskMetrics:
    def __init__(self, rt):
        self.rt = rt
        self.registry = CollectorRegistry()
        r = self.registry
        self._fetched = Counter("maildesk_mail_fetched", "Messages fetched from IMAP and stored", registry=r)
        self._processed = Counter("maildesk_mail_processed", "Inbound messages processed", registry=r)
        self._quarantined = Counter("maildesk_mail_quarantined", "Inbound messages quarantined", registry=r)
        self._sent = Counter("maildesk_outbox_sent", "Outgoing mails accepted by the SMTP server", registry=r)
        self._deferred = Counter("maildesk_outbox_deferred", "Delivery attempts deferred for a retry", registry=r)
        self._failed = Counter("maildesk_outbox_failed", "Outgoing mails given up on", registry=r)
        self.registry.register(_FromTheDatabase(rt))
        self.server = None

    # --- what the desk process records ---------------------------------------------

    def fetched(self, stored: int | None) -> None:
        if stored:
            self._fetched.inc(stored)

    def processed(self, report) -> None:
        self._processed.inc(report.done)
        self._quarantined.inc(report.quarantined)

    def delivered(self, report) -> None:
        self._sent.inc(report.sent)
        self._deferred.inc(report.deferred)
        self._failed.inc(report.failed)

    # --- the HTTP server ----------------------------------------------------------------

    def serve(self, listen: str) -> None:
        """Serve /metrics on `listen` ("HOST:PORT") from a thread of this process."""
        host, _, port = listen.rpartition(":")
        self.server, _thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        # the fetch and send processes forked later must not hold the port
        os.register_at_fork(after_in_child=self._close_in_child)
        log.info("metrics at http://%s/metrics", listen)

    def _close_in_child(self) -> None:
        if self.server is not None:
            self.server.socket.close()
            self.server = None

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


SLOW = 0.05  # seconds: a count that took longer is read again only every REREAD
REREAD = 300.0


class _Slow:
    """A count over a whole table, read again at once while it is quick to read, else
    kept for REREAD seconds (a million tickets' outbox took a third of a second)."""

    def __init__(self, read):
        self.read = read
        self.value: dict = {}
        self.until = 0.0

    def __call__(self) -> dict:
        now = time.monotonic()
        if now >= self.until:
            self.value = self.read()
            took = time.monotonic() - now
            self.until = now + REREAD if took > SLOW else 0.0
        return self.value


class _FromTheDatabase:
    """The numbers read at each scrape, in the scraping thread's own connection."""

    def __init__(self, rt):
        self.rt = rt
        self.outbox_states = _Slow(lambda: dict(_pairs(
            Outbox.select(Outbox.status, fn.COUNT(Outbox.id)).group_by(Outbox.status).tuples())))
        self.missed_targets = _Slow(lambda: dict(_pairs(
            SlaMark.select(SlaMark.target, fn.COUNT(SQL('*'))).where(SlaMark.level == MarkLevel.BREACH.value)
            .group_by(SlaMark.target).tuples())))

    def collect(self):
        try:
            yield from self._collect(dt.datetime.now(dt.UTC))
        finally:
            store.db.close()  # this thread's connection; the next scrape is another thread

    def _collect(self, now: dt.datetime):
        inbound = GaugeMetricFamily("maildesk_inbound_messages", "Stored inbound messages by state",
                                    labels=["status"])
        counts: dict[str, int] = dict(_pairs(Inbound.select(Inbound.status, fn.COUNT(Inbound.id))
                                             .where(Inbound.status.in_(INBOUND_STATES))
                      .group_by(Inbound.status).tuples()))
        for status in INBOUND_STATES:
            inbound.add_metric([status], counts.get(status, 0))
        held = Inbound.select().where((Inbound.status == "quarantined") & (Inbound.error ** HELD)).count()
        inbound.add_metric(["held"], held)
        yield inbound

        outbox = GaugeMetricFamily("maildesk_outbox_messages", "Outgoing mails by state", labels=["status"])
        counts = self.outbox_states()
        for status in sorted(set(OUTBOX_STATES) | set(counts)):
            outbox.add_metric([status], counts.get(status, 0))
        yield outbox
        queued = CounterMetricFamily("maildesk_outbox_queued", "Outgoing mails queued, in all")
        queued.add_metric([], sum(counts.values()))
        yield queued

        lag = GaugeMetricFamily("maildesk_fetch_lag_seconds", "Seconds since the last successful fetch",
                                labels=["mailbox"])
        for mailbox, last in _pairs(MailboxState.select(MailboxState.mailbox, MailboxState.last_success_at).tuples()):
            if last is not None:
                last = MailboxState.last_success_at.python_value(last)
                lag.add_metric([mailbox], max(0.0, (now - last).total_seconds()))
        yield lag

        open_tickets = GaugeMetricFamily("maildesk_open_tickets", "Tickets still worked on, by priority",
                                         labels=["priority"])
        counts = dict(_pairs(Ticket.select(Ticket.priority, fn.COUNT(Ticket.id))
                      .where(Ticket.status.in_([s.value for s in ACTIVE])).group_by(Ticket.priority).tuples()))
        for priority in PRIORITIES:
            open_tickets.add_metric([priority.value], counts.get(priority.value, 0))
        yield open_tickets

        missed = CounterMetricFamily("maildesk_sla_targets_missed", "SLA targets breached, by target",
                                     labels=["target"])
        counts = self.missed_targets()
        for target in ("response", "resolution"):
            missed.add_metric([target], counts.get(target, 0))
        yield missed


def _pairs(rows) -> Iterable[tuple[Any, Any]]:
    """The (key, value) rows of a two-column `.tuples()` query (peewee types them as models)."""
    return cast("Iterable[tuple[Any, Any]]", rows)
