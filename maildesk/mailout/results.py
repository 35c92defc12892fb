"""What delivery reported, written down: sent, deferred with its next try, or failed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import store
from ..store import Outbox

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)

# --- delivery -------------------------------------------------------------------------


@dataclass
class Delivered:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0

    def __str__(self):
        return f"sent={self.sent} deferred={self.deferred} failed={self.failed}"

    def add(self, other: Delivered) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.failed += other.failed


def _backoff(rt: Runtime, attempts: int) -> dt.timedelta:
    first, cap = rt.cfg.smtp.retry_first.total, rt.cfg.smtp.retry_max.total
    return min(first * (2 ** max(0, attempts - 1)), cap)


def mark_sent(ids: list[int], now: dt.datetime) -> None:
    """The rows the server accepted are sent; a row already recorded is left as it is
    (the desk and a stopping send process may both record one)."""
    Outbox.update(status="sent", sent_at=now, last_error=None, attempts=Outbox.attempts + 1, claimed_by=None).where(
        Outbox.id.in_(ids) & Outbox.status.in_(("queued", "deferred"))
    ).execute()


def record_results(rt: Runtime, results: list[tuple], now: dt.datetime) -> Delivered:
    """Write what delivery reported: sent, deferred with its next try, or failed."""
    report = Delivered()
    if not results:
        return report
    with store.write_transaction():
        sent_ids = [rid for rid, status, _ in results if status == "sent"]
        if sent_ids:
            mark_sent(sent_ids, now)
            report.sent += len(sent_ids)
        others = {rid: (status, error) for rid, status, error in results if status != "sent"}
        rows = Outbox.select().where(Outbox.id.in_(list(others))) if others else []
        for row in rows:
            status, error = others[row.id]
            attempts = row.attempts + 1
            if status == "deferred" and now - row.created_at > rt.cfg.smtp.give_up_after.total:
                status, error = "failed", f"gave up after {rt.cfg.smtp.give_up_after.text}: {error}"
            if status == "deferred":
                report.deferred += 1
                Outbox.update(status="deferred", attempts=attempts, last_error=error, claimed_by=None,
                              next_attempt_at=now + _backoff(rt, attempts)).where(Outbox.id == row.id).execute()
            else:
                report.failed += 1
                Outbox.update(status="failed", attempts=attempts, last_error=error, claimed_by=None).where(
                    Outbox.id == row.id).execute()
                if row.ticket_id:
                    store.add_event(row.ticket_id, now, "desk", "delivery-failed",
                                     f"{row.kind} mail to {row.rcpt} failed: {error}")
                log.warning("delivery failed outbox=%s rcpt=%s: %s", row.id, row.rcpt, error)
    return report
