"""The desk process: the database's writer. It commits the mail the fetch process
hands over, processes it, records what the send process reports, runs the
scheduled jobs, looks after the two mail processes (mailprocess.py), and talks to systemd.

    maildesk run --once [--now T]   one full cycle: the fetch process fetches while
                                    this one processes what arrives and the deliver
                                    process sends what it queues; then every job;
                                    then the last mail
    maildesk run                    the same, until SIGTERM or SIGINT

systemd (Type=notify) hears READY once, STATUS each cycle and WATCHDOG while the
loop is alive. A fetch or send process that dies is started again. The desk process
registers itself in the `worker` table and beats there while it runs (store.workers),
for `maildesk status` and the other desk processes on a shared PostgreSQL database.

Around one cycle is one of the codebase's broad catches: a locked or unreachable
database makes the desk wait and try again; nothing is lost, because mail is
flagged on the IMAP server only after it is committed.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

import schedule
from peewee import DatabaseError, InterfaceError

from .. import faults, store
from ..config import ConfigError
from ..desk import jobs
from ..mailin.mailbox import record_flagged, store_fetched
from ..mailout.results import Delivered, record_results
from ..pipeline import Processed, process_pending
from ..store import Inbound, utcnow, workers
from .mailprocess import MailProcess

if TYPE_CHECKING:
    from .metrics import DeskMetrics
    from .runtime import Runtime

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


class Laps:
    """Wall and CPU seconds per phase, for the log."""

    def __init__(self):
        self.last = (time.perf_counter(), time.process_time())
        self.laps: list[tuple[str, float, float]] = []

    def __call__(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.laps.append((name, now[0] - self.last[0], now[1] - self.last[1]))
        self.last = now

    def __str__(self):
        return " ".join(f"{n}={wall:.2f}s (cpu {cpu:.2f}s)" for n, wall, cpu in self.laps)


class Systemd:
    """sd_notify(3), quiet when not run by systemd."""

    def __init__(self):
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._last_ping = 0.0
        if self.enabled:
            import sdnotify

            self._n = sdnotify.SystemdNotifier()

    def send(self, text: str) -> None:
        if self.enabled:
            self._n.notify(text)

    def watchdog(self) -> None:
        now = time.monotonic()
        if now - self._last_ping >= 5:
            self._last_ping = now
            self.send("WATCHDOG=1")


_frozen = False


def _freeze_startup_objects() -> None:
    """Once a process: what exists when the desk starts (modules, the config, the
    templates, the models) lives as long as the process, and the cycle collector need
    not walk it at every collection (gc.freeze: half its time while mail is processed,
    bench/ingest.py). Done before the fetch and send processes are forked, which then
    share those pages rather than copy them when the collector would have written them."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


class Daemon:
    def __init__(self, rt: Runtime, fetchers: list[MailProcess] | None = None):
        self.rt = rt
        self.cfg = rt.cfg
        self.stop = threading.Event()
        self.systemd = Systemd()
        # one fetch process per mailbox, started early by `maildesk run`, while this process loads the rest
        self.fetchers: list[MailProcess] = fetchers or []
        self.sender: MailProcess | None = None
        self.metrics: DeskMetrics | None = None  # with [metrics] listen
        self._last_beat = 0.0

    def _start(self, once: bool, now=None) -> None:
        _freeze_startup_objects()
        if not self.fetchers:
            self.fetchers = start_fetchers(self.cfg, once, now)
        self.sender = MailProcess(self.cfg, "send", once, now)

    @property
    def children(self) -> tuple[MailProcess, ...]:
        return tuple(c for c in (*self.fetchers, self.sender) if c is not None)

    def _listen(self, timeout: float = 0.0, also=()) -> None:
        """Read both pipes, waiting up to `timeout` for the first note (or for one of
        `also` to be readable)."""
        from multiprocessing.connection import wait

        if timeout:
            wait([c.pipe for c in self.children] + [a for a in also if a is not None], timeout)
        for child in self.children:
            child.listen()

    def should_stop(self) -> bool:
        self.systemd.watchdog()
        return self.stop.is_set()

    def _pending(self) -> bool:
        return any(f.intake for f in self.fetchers) or Inbound.select().where(Inbound.status == "pending").exists()

    def _take_in(self) -> None:
        """Commit what the fetch processes handed over, and tell each so: each batch in a
        transaction of its own, then the notes of batches flagged on the server."""
        self._listen()
        for fetcher in self.fetchers:
            notes, fetcher.intake = fetcher.intake, []
            flagged = [n for n in notes if n[0] == "flagged"]
            for note in (n for n in notes if n[0] == "stored"):  # committed by the fetch process (PostgreSQL)
                if self.metrics is not None:
                    self.metrics.fetched(note[1])
            for _, seq, mailbox, uidvalidity, after_uid, last_uid, items, received in (n for n in notes if n[0] == "batch"):
                stored = store_fetched(mailbox, uidvalidity, after_uid, last_uid, items, received)
                fetcher.tell("committed", seq, stored)
                if self.metrics is not None:
                    self.metrics.fetched(stored)
            if flagged:
                with store.write_transaction():
                    for _, mailbox, uidvalidity, uids in flagged:
                        record_flagged(mailbox, uidvalidity, uids)

    def _process(self, now=None) -> Processed:
        assert self.sender is not None  # _start ran
        processed = process_pending(self.rt, now or utcnow(), self.should_stop, between=lambda: self._committed(now),
                                    intake=self._take_in)
        if self.metrics is not None:
            self.metrics.processed(processed)
        if processed.done or processed.quarantined:
            faults.point("after-process")
            self.sender.tell("queued")
        self._record(now)
        return processed

    def _committed(self, now=None) -> None:
        """After each batch's commit: its mail may go out now, while the next batch is
        processed, rather than when the whole backlog is done."""
        assert self.sender is not None  # _start ran
        self.sender.tell("queued")
        self._record(now)

    def _record(self, now=None) -> None:
        """Write the delivery results the send process reported."""
        assert self.sender is not None  # _start ran
        self._listen()
        if self.sender.results:
            results, self.sender.results = self.sender.results, []
            report = record_results(self.rt, results, now or utcnow())
            self.delivered.add(report)
            if self.metrics is not None:
                self.metrics.delivered(report)
            self.sender.tell("queued")  # recorded: it may send more (mailprocess.MAX_UNRECORDED)

    # --- one cycle --------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> bool:
        """One full cycle; True if the fetch succeeded."""
        self.rt.begin_cycle()
        self._start(once=True, now=now)
        store.checkpoint_in_background()
        try:
            workers.register(self.rt.worker)
            done = self._cycle(now)
            workers.stopped(self.rt.worker)
            return done
        finally:
            self._stop_children(timeout=2)
            store.stop_checkpointing()

    def _stop_children(self, timeout: float) -> None:
        """Stop what is still running: after an error too, they must not outlive us."""
        for child in self.children:
            if child.alive:
                child.stop(timeout)

    def _cycle(self, now: dt.datetime | None) -> bool:
        assert self.sender is not None  # _start ran
        lap = Laps()
        self.rt.warm_up(now or utcnow())  # while the fetch processes fetch
        self.delivered = Delivered()
        done = quarantined = 0
        while True:
            processed = self._process(now)
            done, quarantined = done + processed.done, quarantined + processed.quarantined
            self._listen()
            fetching = [f for f in self.fetchers if f.fetched is None]
            if not fetching and not self._pending():
                break
            ended = [f for f in fetching if not f.alive]
            if ended and len(ended) == len(fetching):
                for f in ended:
                    log.error("the fetch process of mailbox=%s ended early (exit %s)", f.mailbox.name if f.mailbox else "-",
                              f.process.exitcode)
                break
            if not processed.done and not processed.quarantined:
                self._listen(timeout=0.05)
        lap("fetch+process")
        results = [job(self.rt, now or utcnow()) for job in jobs.JOBS]
        lap("jobs")
        self.sender.tell("queued")
        self.sender.tell("done")
        while self.sender.alive:
            self._listen(timeout=0.05)
            self._record(now)
        for child in self.children:
            child.process.join()
        self._record(now)
        lap("send")
        log.info("cycle: processed=%d quarantined=%d; %s; %s; %s", done, quarantined, self.delivered,
                 "; ".join(results), lap)
        return all(f.fetched for f in self.fetchers)

    # --- the loop ---------------------------------------------------------------------

    def run_forever(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        scheduler = schedule.Scheduler()
        scheduler.every(30).seconds.do(self._job, jobs.sla_sweep)
        scheduler.every(5).minutes.do(self._job, jobs.auto_close)
        scheduler.every(1).minutes.do(self._job, jobs.fetch_stalled)
        self._serve_metrics()
        self._start(once=False)
        store.checkpoint_in_background()
        self.rt.warm_up(utcnow())
        self.delivered = Delivered()
        self._beat(register=True)
        self.systemd.send("READY=1")
        log.info("maildesk running: %s as %s", self.cfg.desk.name, self.cfg.desk.address)
        for job in jobs.JOBS:  # a restart catches up on every job at once
            self._job(job)
        try:
            self._loop(scheduler)
        finally:
            self._stop_children(timeout=10)
            store.stop_checkpointing()
        self._record()
        if self.metrics is not None:
            self.metrics.close()
        try:
            workers.stopped(self.rt.worker)
        except (DatabaseError, InterfaceError) as e:
            log.error("could not note this desk process's stop: %s", e)
        self.systemd.send("STOPPING=1")
        log.info("maildesk stopped")

    def _beat(self, register: bool = False) -> None:
        """The worker row: this process is alive (store.workers.HEARTBEAT)."""
        if not register and time.monotonic() - self._last_beat < workers.HEARTBEAT:
            return
        (workers.register if register else workers.beat)(self.rt.worker)
        if register and store.is_sqlite():  # the one desk process fetches every mailbox itself
            for box in self.cfg.mailboxes:
                workers.took_lease(f"mailbox:{box.name}", self.rt.worker)
        self._last_beat = time.monotonic()

    def _loop(self, scheduler) -> None:
        backoff = 1.0
        restarts: list[float] = []
        while not self.stop.is_set():
            try:
                self.rt.begin_cycle()
                self._beat()
                processed = self._process()
                scheduler.run_pending()
                backoff = 1.0
                self.systemd.send(f"STATUS=running; last cycle {processed}")
            except (DatabaseError, InterfaceError) as e:
                log.error("database unavailable (%s); retrying in %.0f s", e, backoff)
                self.systemd.send(f"STATUS=database unavailable: {e}")
                self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            for child in self.children:
                if child.alive or self.stop.is_set():
                    continue
                restarts = [t for t in restarts if t > time.monotonic() - 60] + [time.monotonic()]
                log.error("the %s process died (exit %s); starting it again", child.role, child.process.exitcode)
                self._sleep(min(2.0 ** len(restarts), MAX_BACKOFF))
                if child is self.sender:
                    self.sender = MailProcess(self.cfg, "send", False, None)
                else:
                    self.fetchers[self.fetchers.index(child)] = MailProcess(self.cfg, "fetch", False, None, child.mailbox)
            self._wait(scheduler)
        for child in self.children:
            child.tell("stop")

    def _serve_metrics(self) -> None:
        listen = self.cfg.metrics.listen
        if not listen:
            return
        from .metrics import DeskMetrics

        self.metrics = DeskMetrics(self.rt)
        try:
            self.metrics.serve(listen)
        except OSError as e:
            self._stop_children(timeout=2)  # the fetch process may have started already
            raise ConfigError([f"metrics.listen: cannot listen on {listen}: {e.strerror or e}"]) from None

    def _on_signal(self, signum, frame) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stop.set()

    def _job(self, job) -> None:
        try:
            log.debug("job %s: %s", job.__name__, job(self.rt, utcnow()))
            assert self.sender is not None  # _start ran
            self.sender.tell("queued")
        except (DatabaseError, InterfaceError) as e:
            log.error("job %s: database unavailable: %s", job.__name__, e)

    def _wait(self, scheduler) -> None:
        """Until a fetch process stored new mail (ours, or on PostgreSQL anyone's), the
        next job, or a second."""
        deadline = time.monotonic() + min(1.0, max(0.05, scheduler.idle_seconds or 1.0))
        try:
            listener = store.claims.new_mail_listener()
        except (DatabaseError, InterfaceError):
            listener = None  # the database is away: the loop says so, and looks again
        while not self.should_stop() and time.monotonic() < deadline:
            for fetcher in self.fetchers:
                fetcher.stored = False
            self._listen(timeout=min(0.25, max(0.0, deadline - time.monotonic())), also=(listener,))
            self._record()
            if any(f.stored for f in self.fetchers) or store.claims.heard_new_mail():
                return

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def start_fetchers(cfg, once: bool, now: dt.datetime | None) -> list[MailProcess]:
    """A fetch process for each mailbox."""
    return [MailProcess(cfg, "fetch", once, now, box) for box in cfg.mailboxes]
