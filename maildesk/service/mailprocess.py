"""The mail processes: everything that waits on a mail server.

`maildesk run` is three processes or more. The desk process (daemon.py) makes the
decisions; forked children move the mail, each an instance of `Mover`:

- a **fetch** process for each mailbox keeps its IMAP session (IDLE where offered, polling
  otherwise), fetches new messages in batches and parses each one once
  (pipeline/parse.py summarize), then hands the batch to the desk, which commits
  it; only then does it flag the batch on the server (mailbox.fetch_new);
- the **send** process sends the outbox (mailout.smtp.deliver_due) over a few SMTP
  connections, kept open from one round to the next (mailout.smtp.Connections), and
  reports each result to the desk.

They share nothing but the database and a pipe each to the desk, carrying notes:

    fetch   -> desk   ("batch", seq, ...)  fetched and parsed mail to commit
                      ("flagged", ...)     a committed batch is flagged on the server
                      ("stored", n)        PostgreSQL: n new messages committed by the fetch
                                           process itself (OwnStore)
                      ("fetched", ok)      --once: the fetch is over
    desk -> fetch     ("committed", seq, n)  the batch is committed (n new; None: not)
    deliver -> desk   ("delivered", rows)  [(outbox id, sent|deferred|failed, error)]
    desk -> deliver   ("queued",)          new outbox rows are committed
    desk -> both      ("done",)            --once: nothing more will be queued
                      ("stop",)            shut down

SQLite has one writer at a time, and a writer that waits behind a busy one starves
(it sleeps in SQLite's busy handler while the busy one begins again); so the desk
writes what the other two hand it, and they write only small notes now and then
(the fetch checkpoint of a new mailbox, the time of an empty poll, an error). While
the desk commits one batch the fetch process fetches and parses the next. Until the
desk has recorded a delivery, the send process skips that mail. Three processes
let the scheduler spread the work over the machine's cores, and a slow SMTP relay
never holds up new tickets.

Several desk processes on one PostgreSQL database (docs/operations.md) each start a
fetch process for every mailbox, but a mailbox is fetched only under its lease
(store.claims): the others look every LEASE_RETRY seconds whether its holder is
gone. Their send processes claim the outbox rows they send (mailout.queue.claim_due).

Around one IMAP session is one of the codebase's broad catches (reconnect with
capped backoff); nothing is lost on a failure, because mail is flagged on the
server only after it is committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import imaplib
import json
import logging
import multiprocessing
import os
import queue
import signal
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, cast

from imapclient.exceptions import IMAPClientError
from peewee import DatabaseError, InterfaceError

from .. import faults, store
from ..mailin.mailbox import MailboxError, MailboxSession, StoreFailed, fetch_new, store_fetched
from ..mailout.results import mark_sent
from ..oauth2 import AccessTokens
from ..store import Outbox, claims, utcnow, workers
from .profiling import profiled

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..mailout.smtp import Connections
    from .runtime import Runtime

# The desk process forks the fetch process as soon as the database is open, before
# it imports the rest of maildesk: what only the pipeline, the outbox and the
# templates need is imported where it is used, by the process that uses it.

log = logging.getLogger(__name__)

IMAP_ERRORS = (IMAPClientError, imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError, ssl.SSLError, socket.timeout, EOFError)
MAX_BACKOFF = 60.0
# Sent mails the desk has not recorded yet: after a crash these are sent again (with
# their Message-ID), so the send process lets no more than this many pile up.
MAX_UNRECORDED = 100
# How often a fetch process whose mailbox another desk process fetches looks whether
# that one is gone (its lease passes at once when it dies: well within a minute).
LEASE_RETRY = 5.0


class MailProcess:
    """A forked mail process (role "fetch" or "send") and our end of its pipe."""

    def __init__(self, cfg, role: str, once: bool, now: dt.datetime | None, mailbox=None):
        ctx = multiprocessing.get_context("fork")
        self.role = role
        self.mailbox = mailbox  # a fetch process's config.Mailbox
        self.pipe, child_end = ctx.Pipe()
        # SQLite: no open connection may cross a fork; both sides reconnect
        store.db.obj.close()
        self.process = ctx.Process(target=main, args=(cfg, child_end, self.pipe, role, once, now, mailbox),
                                   name=f"maildesk-{role}", daemon=True)
        self.process.start()
        child_end.close()
        faults.partner(self.process.pid, role if mailbox is None else f"{role}:{mailbox.name}")
        self.fetched: bool | None = None
        self.stored = False  # a batch came in
        self.intake: list[tuple] = []  # "batch" and "flagged" notes, for the desk to write
        self.results: list[tuple] = []

    def tell(self, *note) -> None:
        try:
            self.pipe.send(note)
        except (BrokenPipeError, OSError):
            pass  # it died; the supervisor notices

    def listen(self, timeout: float = 0.0) -> None:
        try:
            while self.pipe.poll(timeout):
                timeout = 0.0
                note = self.pipe.recv()
                if note[0] in ("batch", "flagged", "stored"):
                    self.intake.append(note)
                    self.stored = True
                elif note[0] == "fetched":
                    self.fetched = note[1]
                elif note[0] == "delivered":
                    self.results.extend(note[1])
        except (EOFError, OSError):
            pass

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to stop, reading its notes meanwhile (a batch it is still writing to
        the pipe must not block it; uncommitted, that batch is fetched again next
        time); after `timeout`, SIGTERM, then SIGKILL."""
        self.tell("stop")
        deadline = time.monotonic() + timeout
        while self.process.is_alive() and time.monotonic() < deadline:
            self.listen(timeout=0.05)
            self.process.join(0.01)
        for end in (self.process.terminate, self.process.kill):
            if not self.process.is_alive():
                break
            end()
            self.process.join(2)


class Mover:
    def __init__(self, rt: Runtime, pipe, role: str, now: dt.datetime | None = None, mailbox=None):
        self.rt, self.cfg, self.pipe, self.role = rt, rt.cfg, pipe, role
        self.box = mailbox or rt.cfg.imap  # the fetch process's mailbox
        self.fixed_now = now
        self.session: MailboxSession | None = None
        where = f"mailboxes[{self.cfg.mailboxes.index(self.box)}]" if self.cfg.mailboxes_listed else "imap"
        self.imap_tokens = access_tokens(self.box, where) if role == "fetch" else None
        self.backoff = 1.0
        self.stopping = False
        self.desk_done = False  # --once: the desk will queue nothing more
        self.in_flight: dict[int, int] = {}  # outbox id -> attempts, sent but not yet recorded
        self.accepted: set[int] = set()  # of those, the ones the server accepted
        self.desk_pid = os.getppid()
        self.leased = False  # this process holds its mailbox's lease
        # PostgreSQL: the send process claims outbox rows under a lease of its own, so that
        # the rows of a send process that died pass to the others at once (mailout.queue.claim_due)
        self.send_lease = f"sender:{workers.worker_id(os.getpid())}"
        self.intake = DeskStore(self) if store.is_sqlite() else OwnStore(self)
        self.connections: Connections | None = None  # the send process's SMTP connections
        self._posting: queue.SimpleQueue = queue.SimpleQueue()  # notes for the desk, sent by _poster
        self._poster: threading.Thread | None = None

    def now(self) -> dt.datetime:
        return self.fixed_now or utcnow()

    # --- IMAP ------------------------------------------------------------------------

    def fetch(self) -> bool:
        if not self.hold_mailbox():
            return True  # another desk process fetches it
        try:
            if self.session is not None and self.session.should_log_in_again():
                log.info("imap: logging in again before the OAuth2 token of the session expires")
                self.session.close()
                self.session = None
            if self.session is None:
                self.session = MailboxSession(self.box, self.imap_tokens).connect()
            report = fetch_new(self.session, self.now(), self.box.batch_size, self.should_stop,
                               intake=self.intake, summarize=self._summarize)
            self.backoff = 1.0
            return report is not None
        except MailboxError as e:
            self._lost_session(str(e), error=True)
        except IMAP_ERRORS as e:
            self._lost_session(f"IMAP {self.box.host}:{self.box.effective_port}: {type(e).__name__}: {e}")
        except (DatabaseError, InterfaceError, StoreFailed) as e:
            # nothing uncommitted was flagged: the next fetch takes it again
            if self.stopping:
                log.info("fetch stopped before the desk committed the last batch; it is fetched again next time")
                return False
            log.error("fetch: could not store the mail (%s); trying again", e)
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            self._sleep(self.backoff)
        return False

    def hold_mailbox(self) -> bool:
        """Whether this process is to fetch its mailbox: on PostgreSQL, while it holds the
        mailbox's lease (taken now if its holder is gone); SQLite has one desk process."""
        if store.is_sqlite():
            return True
        name = f"mailbox:{self.box.name}"
        had = self.leased
        try:
            self.leased = (had and claims.holds_lease(name)) or claims.try_lease(name)
            if self.leased and not had:
                workers.took_lease(name, workers.worker_id(self.desk_pid))
        except (DatabaseError, InterfaceError) as e:
            log.error("fetch mailbox=%s: the database is unavailable (%s); its lease is given up", self.box.name, e)
            store.db.obj.close()  # the lease went with the connection; a new one is opened next time
            self.leased = False
        if had and not self.leased:
            log.warning("mailbox=%s: lost its lease; another desk process fetches it now", self.box.name)
        elif self.leased and not had:
            log.info("mailbox=%s: took its lease; this desk process fetches it", self.box.name)
        if not self.leased and self.session is not None:
            self.session.close()
            self.session = None
        return self.leased

    def _summarize(self, raws: dict[int, bytes]) -> dict[int, tuple[str | None, str | None]]:
        """Parse the fetched batch here, where it costs the desk nothing."""
        from ..pipeline.parse import summarize

        return {uid: summarize(self.rt, raw) for uid, raw in raws.items()}

    def _lost_session(self, why: str, error: bool = False) -> None:
        (log.error if error else log.warning)("mailbox %s: IMAP session lost, connecting again: %s" if self.session is not None
                                              else "mailbox %s: cannot fetch: %s", self.box.name, why)
        if self.cfg.mailboxes_listed:
            why = f"mailbox {self.box.name}: {why}"
        try:
            store.put_setting("last_fetch_error", why[:500])
        except (DatabaseError, InterfaceError):
            pass
        if self.session is not None:
            self.session.close()
        self.session = None

    # --- notes to and from the desk ------------------------------------------------------

    def post(self, note: tuple) -> None:
        """Send a note to the desk from a thread of its own, in order: a batch of mail
        waits in the pipe until the desk is between two transactions, and meanwhile
        this process goes on fetching and parsing the next one."""
        if self._poster is None:
            self._poster = threading.Thread(target=self._post_notes, name="post", daemon=True)
            self._poster.start()
        self._posting.put(note)

    def _post_notes(self) -> None:
        while (note := self._posting.get()) is not None:
            try:
                self.pipe.send(note)
            except OSError:  # the desk is gone: nothing it did not answer is flagged
                self.stopping = True
                return

    def flush_notes(self, timeout: float = 10.0) -> None:
        if self._poster is not None:
            self._posting.put(None)
            self._poster.join(timeout)

    def read_notes(self, timeout: float = 0.0) -> bool:
        """Read what the desk sent; True if it queued mail."""
        queued = False
        try:
            while self.pipe.poll(timeout):
                timeout = 0.0
                note = self.pipe.recv()
                if note[0] == "queued":
                    queued = True
                elif note[0] == "committed":
                    self.intake.committed[note[1]] = note[2]
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
                log.error("the desk process is gone; the %s process stops", self.role)
                self.stopping = True
        return self.stopping

    def deliver(self) -> int:
        """One round of delivery; returns how many mails were tried."""
        try:
            self._forget_recorded()
            from ..mailout.smtp import Connections, deliver_due

            if self.connections is None:
                self.connections = Connections(self.cfg.smtp, tokens=access_tokens(self.cfg.smtp, "smtp"))
            room = MAX_UNRECORDED - len(self.in_flight)
            if room <= 0:
                return 0  # until the desk records what was sent: a crash resends at most that many
            claimer = None
            if not store.is_sqlite():
                claims.try_lease(self.send_lease)  # kept, or taken again on a new connection
                claimer = claims.lease_mark(self.send_lease)
            tried = deliver_due(self.rt, self.now(), self._report, self.should_stop, skip=self.in_flight,
                                connections=self.connections, limit=room, claimer=claimer)
            log.debug("delivery round: %d tried, %d awaiting their record", tried, len(self.in_flight))
            return tried
        except (DatabaseError, InterfaceError) as e:
            log.error("delivery: database unavailable: %s", e)
            return 0

    def _report(self, results: list[tuple]) -> None:
        rows = Outbox.select(Outbox.id, Outbox.attempts).where(Outbox.id.in_([r[0] for r in results])).tuples()
        attempts = dict(cast("Iterable[tuple[int, int]]", rows))
        for rid, status, _ in results:
            self.in_flight[rid] = attempts.get(rid, 0)
            if status == "sent":
                self.accepted.add(rid)
        try:
            self.pipe.send(("delivered", results))
        except OSError:  # the desk is gone; what it did not record is sent again after a restart
            self.stopping = True

    def _forget_recorded(self) -> None:
        if not self.in_flight:
            return
        rows = cast("Iterable[tuple[int, int]]",
                    Outbox.select(Outbox.id, Outbox.attempts).where(Outbox.id.in_(list(self.in_flight))).tuples())
        for rid, attempts in rows:
            if attempts > self.in_flight[rid]:
                del self.in_flight[rid]
                self.accepted.discard(rid)

    # --- the two roles, once or for ever ---------------------------------------------------

    def run_once(self) -> None:
        if self.role == "fetch":
            self.post(("fetched", self.fetch()))
            return
        while not self.stopping:
            self.rt.begin_cycle()
            tried = self.deliver()
            if self.desk_done and not tried and len(self.in_flight) < MAX_UNRECORDED:
                return
            if not tried:
                self.read_notes(timeout=0.05)

    def run_forever(self) -> None:
        while not self.stopping:
            self.rt.begin_cycle()
            if self.role == "fetch":
                self.fetch()
                self.wait_for_mail()
            else:
                self.deliver()
                self.wait_for_work()

    def wait_for_mail(self) -> None:
        """Until new mail on the server or `imap.poll_seconds`; IDLE where the server
        offers it (RFC 2177). Without the mailbox's lease, LEASE_RETRY seconds."""
        if not self.leased and not store.is_sqlite():
            self._sleep(LEASE_RETRY)
            return
        if self.session is None:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            self._sleep(self.backoff / 2)
            return
        seconds = float(self.box.poll_seconds)
        if self.session.log_in_again_at is not None:  # wake up to log in with a new token in time
            seconds = min(seconds, max(0.05, self.session.log_in_again_at - time.time()))
        try:
            self.session.wait(seconds, self.should_stop)
        except IMAP_ERRORS as e:
            self._lost_session(f"IMAP connection lost while waiting: {type(e).__name__}: {e}")

    def wait_for_work(self) -> None:
        """Until the desk queues mail, or the next retry is due."""
        timeout = float(self.cfg.imap.poll_seconds)
        retry = Outbox.select(Outbox.next_attempt_at).where(Outbox.status.in_(("queued", "deferred"))).order_by(
            Outbox.next_attempt_at).limit(1).scalar()
        if retry is not None:
            timeout = min(timeout, max(0.2, (retry - self.now()).total_seconds()))
        if len(self.in_flight) >= MAX_UNRECORDED:
            timeout = min(timeout, 0.2)  # the desk says "queued" when it has recorded them; this is in case
        self._sleep(timeout)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.should_stop() and time.monotonic() < deadline:
            if self.read_notes(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
                return
            if self.connections is not None:
                self.connections.expire()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.connections is not None:
            self.connections.close()
        self.hand_over()

    def hand_over(self) -> None:
        """PostgreSQL: before this send process exits, and its lease with it, the mails the
        server accepted that the desk has not recorded yet are marked sent here, so that
        no other desk process's send process takes them over and sends them again (the
        desk's own record of them changes nothing then: results.record_results). Only
        a process that is killed leaves such rows to be sent again (guarantee 3)."""
        if self.role != "send" or store.is_sqlite() or not self.accepted:
            return
        ids = sorted(self.accepted)
        try:
            mark_sent(ids, self.now())
        except (DatabaseError, InterfaceError) as e:
            log.error("could not mark %d sent mail(s) as sent before stopping: %s; another desk process may send "
                      "them again, with the same Message-ID", len(ids), e)
            return
        self.accepted.clear()


def access_tokens(conf, where: str) -> AccessTokens | None:
    """The OAuth2 tokens of one account (`where`: "imap" or "smtp") for a mail process.
    A refresh token the endpoint rotated is kept in the database, with a digest of the
    one in the credential file it replaced: the next process renews with it, unless
    the admin has put a new refresh token in the file since."""
    tokens = AccessTokens.for_config(conf, where)
    if tokens is None or not tokens.renews_itself or not conf.oauth2_refresh_token:
        return tokens
    key = f"oauth2_refresh_token:{where}"
    origin = hashlib.sha256(conf.oauth2_refresh_token.encode()).hexdigest()
    try:
        saved = json.loads(store.get_setting(key) or "{}")
    except (DatabaseError, InterfaceError, ValueError):
        saved = {}
    if saved.get("from") == origin and saved.get("token"):
        tokens.use_refresh_token(saved["token"])

    def keep(refresh_token: str) -> None:
        try:
            with store.write_transaction():
                store.put_setting(key, json.dumps({"from": origin, "token": refresh_token}))
        except (DatabaseError, InterfaceError) as e:
            log.warning("%s: could not keep the rotated OAuth2 refresh token: %s", where, e)
        else:
            log.info("%s: the token endpoint rotated the OAuth2 refresh token; the new one is kept in the database", where)

    tokens.on_rotate = keep
    return tokens


class DeskStore:
    """fetch_new's store in the fetch process: each batch goes to the desk process,
    which commits it (the desk is the database's only writer) and answers
    ("committed", seq, how many were new), or None if it could not."""

    def __init__(self, mover: Mover):
        self.mover = mover
        self.seq = 0
        self.committed: dict[int, int | None] = {}

    def send(self, mailbox: str, uidvalidity: int, after_uid: int, last_uid: int, items: list[tuple],
             now: dt.datetime) -> int:
        self.seq += 1
        self.mover.post(("batch", self.seq, mailbox, uidvalidity, after_uid, last_uid, items, now))
        return self.seq

    def wait(self, seq: int) -> int:
        while seq not in self.committed:
            if self.mover.should_stop():
                raise StoreFailed("stopping before the desk committed the batch")
            self.mover.read_notes(timeout=0.2)
        stored = self.committed.pop(seq)
        if stored is None:
            raise StoreFailed("the batch could not be committed")
        return stored

    def flagged(self, mailbox: str, uidvalidity: int, uids: list[int]) -> None:
        # lost, if the desk is gone: the next fetch flags them again (mailbox._finish_pending_flags)
        self.mover.post(("flagged", mailbox, uidvalidity, uids))


class OwnStore(DeskStore):
    """fetch_new's store in the fetch process on PostgreSQL, where every process may
    write: the fetch process commits each batch itself, on its own connection, which
    spares the desk process a fifth of its work (bench/ingest.py --database postgresql),
    and tells the desk ("stored", n) that there is mail to process."""

    def send(self, mailbox: str, uidvalidity: int, after_uid: int, last_uid: int, items: list[tuple],
             now: dt.datetime) -> int:
        self.seq += 1
        stored = self.committed[self.seq] = store_fetched(mailbox, uidvalidity, after_uid, last_uid, items, now)
        if stored:
            self.mover.post(("stored", stored))
            with contextlib.suppress(DatabaseError, InterfaceError):  # a wake-up call only: they look anyway
                claims.announce_new_mail()
        return self.seq  # committed already: DeskStore.wait finds it at once

    # `flagged` stays DeskStore's: the desk records it. Here it would wait for the desk,
    # which is by then working on those very rows (bench/ingest.py: a fifth of a second
    # a batch, with the next fetch held up behind it).


def main(cfg, pipe, desk_end, role: str, once: bool, now: dt.datetime | None, mailbox=None) -> None:
    """A mail process's entry point (a forked child of the desk process); `role` is
    "fetch" (of `mailbox`) or "send"."""
    mover = None

    def on_signal(signum, frame):
        if mover is not None:
            mover.stopping = True

    # The desk's end of the pipe came along in the fork: close it, or the pipe never
    # reports the desk gone. And ask the kernel for SIGTERM when the desk dies.
    desk_end.close()
    faults.partner(None)
    _linux_prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _linux_prctl(PR_SET_NAME, f"maildesk-{role}".encode())  # for ps and top
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the desk, which tells us
    with profiled(role):
        from .runtime import Runtime

        store.open_database(cfg.database.url)
        mover = Mover(Runtime.start(cfg), pipe, role, now, mailbox)
        log.info("%s process started (pid %d)%s", role, os.getpid(), f" for mailbox {mailbox.name}" if mailbox else "")
        try:
            mover.run_once() if once else mover.run_forever()
        finally:
            mover.flush_notes()
            mover.close()
            store.db.obj.close()
    log.info("%s process stopped after %.2f s of CPU", role, time.process_time())


PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15


def _linux_prctl(option: int, arg) -> None:
    """prctl(2) on Linux; elsewhere nothing (the parent-pid check stands in for
    PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, arg)
    except (OSError, AttributeError):
        pass
