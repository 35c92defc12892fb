"""The mail process: everything that waits on a mail server.

`maildesk run` is two processes. This one moves mail: it keeps the IMAP session
(IDLE where offered, polling otherwise), copies new messages into the database
(mailbox.fetch_new) and delivers the outbox over SMTP (outbox.deliver_due). The
desk process (daemon.py) makes the decisions. They share nothing but the database
and a pipe of wake-up notes:

    mail -> desk   ("stored",)          new inbound rows are committed
                   ("fetched", ok)      --once: the fetch is over
                   ("delivered", rows)  [(outbox id, sent|deferred|failed, error)]: the
                                        desk records them, so that one process writes
    desk -> mail   ("queued",)          new outbox rows are committed
                   ("done",)            --once: nothing more will be queued
                   ("stop",)            shut down

Apart from "delivered", every note is only a hint to look sooner: both sides also
look on a timer. SQLite has one writer at a time, and a writer that waits for the
lock behind a busy one starves; so the mail process writes only what must be
committed before the IMAP server hears of it (the fetched mail), and leaves the
delivery results to the desk. It skips the mail it sent whose results the desk
has not yet recorded. Waiting on servers apart from deciding lets
the two run on two cores, and a slow SMTP relay never holds up new tickets.

Around one IMAP session is one of the codebase's broad catches (reconnect with
capped backoff); nothing is lost on a failure, because mail is flagged on the
server only after it is committed.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import logging
import os
import signal
import socket
import ssl
import time

from imapclient.exceptions import IMAPClientError
from peewee import DatabaseError, InterfaceError

from . import faults, models
from .mailbox import MailboxError, MailboxSession, fetch_new
from .models import Outbox, utcnow
from .outbox import deliver_due
from .pipeline.parse import summarize
from .runtime import Runtime

log = logging.getLogger(__name__)

IMAP_ERRORS = (IMAPClientError, imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError, ssl.SSLError, socket.timeout, EOFError)
MAX_BACKOFF = 60.0


class Mover:
    def __init__(self, rt: Runtime, pipe, now: dt.datetime | None = None):
        self.rt, self.cfg, self.pipe = rt, rt.cfg, pipe
        self.fixed_now = now
        self.session: MailboxSession | None = None
        self.backoff = 1.0
        self.stopping = False
        self.desk_done = False  # --once: the desk will queue nothing more
        self.in_flight: dict[int, int] = {}  # outbox id -> attempts, sent but not yet recorded
        self.desk_pid = os.getppid()

    def now(self) -> dt.datetime:
        return self.fixed_now or utcnow()

    # --- IMAP ------------------------------------------------------------------------

    def fetch(self) -> bool:
        try:
            if self.session is None:
                self.session = MailboxSession(self.cfg.imap).connect()
            report = fetch_new(self.session, self.now(), self.cfg.imap.batch_size, self.should_stop,
                               on_commit=self._stored,
                               summarize=self._summarize)
            self.backoff = 1.0
            return report is not None
        except MailboxError as e:
            self._lost_session(str(e), error=True)
        except IMAP_ERRORS as e:
            self._lost_session(f"IMAP {self.cfg.imap.host}:{self.cfg.imap.effective_port}: {type(e).__name__}: {e}")
        except (DatabaseError, InterfaceError) as e:
            # nothing was committed, so nothing was flagged: the next fetch takes it again
            log.error("fetch: database unavailable (%s); trying again", e)
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            self._sleep(self.backoff)
        return False

    def _summarize(self, raws: dict[int, bytes]) -> dict[int, str | None]:
        """Parse the fetched batch here, before its transaction (pipeline/parse.py).
        Leaving it to an idle desk was tried: the desk then holds the write lock
        longer, and this process's next fetch waits behind it."""
        return {uid: summarize(self.rt, raw) for uid, raw in raws.items()}

    def _stored(self) -> None:
        """After each fetched batch: tell the desk, and send what it has queued since,
        so that a long fetch and the delivery overlap."""
        self.pipe.send(("stored",))
        self.read_notes()
        self.deliver()

    def _lost_session(self, why: str, error: bool = False) -> None:
        (log.error if error else log.warning)("fetch failed: %s", why)
        try:
            models.put_setting("last_fetch_error", why[:500])
        except (DatabaseError, InterfaceError):
            pass
        if self.session is not None:
            self.session.close()
        self.session = None

    # --- notes from the desk -----------------------------------------------------------

    def read_notes(self, timeout: float = 0.0) -> bool:
        """Read what the desk sent; True if it queued mail."""
        queued = False
        try:
            while self.pipe.poll(timeout):
                timeout = 0.0
                note = self.pipe.recv()
                if note[0] == "queued":
                    queued = True
                elif note[0] == "done":
                    self.desk_done = True
                elif note[0] == "stop":
                    self.stopping = True
        except (EOFError, OSError):
            self.stopping = True  # the desk is gone
        return queued

    def should_stop(self) -> bool:
        if not self.stopping:
            self.read_notes()
            if os.getppid() != self.desk_pid:
                log.error("the desk process is gone; the mail process stops")
                self.stopping = True
        return self.stopping

    def deliver(self) -> int:
        """One round of delivery; returns how many mails were tried."""
        try:
            self._forget_recorded()
            tried = deliver_due(self.rt, self.now(), self._report, self.should_stop, skip=self.in_flight)
            log.debug("delivery round: %d tried, %d awaiting their record", tried, len(self.in_flight))
            return tried
        except (DatabaseError, InterfaceError) as e:
            log.error("delivery: database unavailable: %s", e)
            return 0

    def _report(self, results: list[tuple]) -> None:
        attempts = dict(Outbox.select(Outbox.id, Outbox.attempts).where(
            Outbox.id.in_([r[0] for r in results])).tuples())
        for rid, _, _ in results:
            self.in_flight[rid] = attempts.get(rid, 0)
        self.pipe.send(("delivered", results))

    def _forget_recorded(self) -> None:
        if not self.in_flight:
            return
        rows = Outbox.select(Outbox.id, Outbox.attempts).where(Outbox.id.in_(list(self.in_flight))).tuples()
        for rid, attempts in rows:
            if attempts > self.in_flight[rid]:
                del self.in_flight[rid]

    # --- the two ways to run -------------------------------------------------------------

    def run_once(self) -> None:
        ok = self.fetch()
        self.pipe.send(("fetched", ok))
        while not self.stopping:
            self.rt.begin_cycle()
            tried = self.deliver()
            if self.desk_done and not tried:
                return
            if not tried:
                self.read_notes(timeout=0.05)

    def run_forever(self) -> None:
        while not self.stopping:
            self.rt.begin_cycle()
            self.fetch()
            self.deliver()
            self.wait()

    def wait(self) -> None:
        """Until new mail on the server, mail queued by the desk, the next retry, or
        `imap.poll_seconds`; IDLE where the server offers it (RFC 2177)."""
        timeout = float(self.cfg.imap.poll_seconds)
        retry = Outbox.select(Outbox.next_attempt_at).where(Outbox.status.in_(("queued", "deferred"))).order_by(
            Outbox.next_attempt_at).limit(1).scalar()
        if retry is not None:
            timeout = min(timeout, max(0.2, (retry - utcnow()).total_seconds()))
        if self.session is None:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            self._sleep(min(timeout, self.backoff / 2))
            return
        try:
            self.session.wait(timeout, lambda: self.read_notes() or self.should_stop())
        except IMAP_ERRORS as e:
            self._lost_session(f"IMAP connection lost while waiting: {type(e).__name__}: {e}")

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            if self.read_notes(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
                return

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def main(cfg, pipe, desk_end, once: bool, now: dt.datetime | None) -> None:
    """The mail process's entry point (a forked child of the desk process)."""
    mover = None

    def on_signal(signum, frame):
        if mover is not None:
            mover.stopping = True

    # The desk's end of the pipe came along in the fork: close it, or the pipe never
    # reports the desk gone. And ask the kernel for SIGTERM when the desk dies.
    desk_end.close()
    faults.partner(None)
    _die_with_parent()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the desk, which tells us
    models.open_database(cfg.database.url)
    mover = Mover(Runtime.start(cfg), pipe, now)
    try:
        mover.run_once() if once else mover.run_forever()
    finally:
        mover.close()
        models.db.obj.close()
    log.debug("mail process %s done", os.getpid())


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) on Linux; elsewhere the parent-pid check does it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
