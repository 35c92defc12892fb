"""The outbox: every outgoing mail is a row, written in the same transaction as the
change that caused it, then sent by `deliver_due` over a few reused SMTP connections.

`queue_mail` renders the template, signs the Message-ID, threads the mail, and
applies the rules that keep the desk from writing where it must not: addresses
that bounced or complained, and the limits on automatic replies (per recipient,
per ticket, and desk-wide). A mail those rules stop is still a row, with status
`suppressed` and the reason, so that `maildesk outbox list` shows it.

Delivery retries temporary failures (4xx, refused connections) with capped
exponential backoff and records permanent ones (5xx) with the server's answer.
A row is marked sent only after the server accepted it; a crash in between may
send it again, with the same Message-ID (DESIGN guarantee 3).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib
import jinja2

from . import faults, models, signing
from .automatic import verp_address
from .models import Outbox, Suppression, Ticket
from .render import TemplateMissing, build_mail, snapshot

log = logging.getLogger(__name__)

# kind -> Auto-Submitted value (None: written by a person); `AUTO_REPLIES` are the
# replies to an inbound mail that count against the per-sender limits (DESIGN 3 [limits]).
AUTO_SUBMITTED = {
    "ack": "auto-replied", "refused": "auto-replied", "help": "auto-replied",
    "too_large": "auto-replied", "survey_thanks": "auto-replied", "unauthenticated": "auto-replied",
    "relay": None, "resolution": None, "reply_to_requester": None,
}
AUTO_REPLIES = {"ack", "refused", "help", "too_large", "survey_thanks", "unauthenticated"}
LOOP_HEADER = "X-Maildesk-Loop"
# an addr-spec we put on the SMTP wire as it is: printable ASCII, no spaces, brackets or quotes
SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass
class Thread:
    """Where a mail sits in its recipient's conversation."""

    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)

    @classmethod
    def after(cls, message_id: str | None, references=()) -> "Thread":
        refs = [r for r in references if r]
        if message_id:
            refs.append(message_id)
        return cls(message_id, refs)


def thread_for(ticket: Ticket, rcpt: str) -> Thread:
    """The ids this recipient has seen on this ticket, oldest first: the requester's own
    mails and every mail the desk sent them."""
    # at the same time, their mail comes before the desk's answer to it
    ids = models.execute(
        'SELECT "created_at", 1, "id", "message_id" FROM "outbox" WHERE "ticket_id" = ? AND "rcpt" = ? AND "status" != ? '
        'UNION ALL SELECT "created_at", 0, "id", "message_id" FROM "message" WHERE "ticket_id" = ? AND "direction" = ? '
        'AND "from_addr" = ? AND "message_id" IS NOT NULL',
        (ticket.id, rcpt, "suppressed", ticket.id, "in", rcpt)).fetchall()
    ids = sorted((str(at), rank, rid, mid) for at, rank, rid, mid in ids)
    refs = list(dict.fromkeys(mid for *_, mid in ids))
    if ticket.thread_root and rcpt == ticket.requester and ticket.thread_root not in refs:
        refs.insert(0, ticket.thread_root)
    return Thread(refs[-1] if refs else None, refs)


def _suppressions(rt, now: dt.datetime) -> dict:
    if "suppressions" not in rt.memo:
        rt.memo["suppressions"] = {
            s.email: s for s in Suppression.select().where(Suppression.until > now)
        }
    return rt.memo["suppressions"]


def forget_suppressions(rt) -> None:
    """After a bounce or a complaint changed who may get mail."""
    rt.memo.pop("suppressions", None)


def suppression_reason(rt, rcpt: str, now: dt.datetime, automatic: bool) -> str | None:
    row = _suppressions(rt, now).get(rcpt)
    if row is None or row.until <= now:
        return None
    if row.reason == "bounce":
        return f"address bounced ({row.detail}); no mail until {row.until:%Y-%m-%d}"
    if row.reason == "complaint" and automatic:
        return f"recipient complained (feedback report); no automatic mail until {row.until:%Y-%m-%d}"
    return None


def _count(rt, key: tuple, sql: str, params, known: int | None = None) -> int:
    """A count of automatic mail, read once per cycle (unless `known`) and then kept
    up to date."""
    counts = rt.memo.setdefault("auto_counts", {})
    if key not in counts:
        counts[key] = known if known is not None else models.scalar(sql, params) or 0
    return counts[key]


_COUNTED = '"automatic" = ? AND "status" != ? AND "created_at" > ?'


def auto_reply_limit(rt, rcpt: str, ticket: Ticket | None, now: dt.datetime) -> str | None:
    """Sliding 24-hour windows per recipient and per ticket, and the desk-wide hourly cap."""
    lim = rt.cfg.limits
    day = Outbox.created_at.db_value(now - dt.timedelta(days=1))
    n = _count(rt, ("rcpt", rcpt), f'SELECT COUNT(*) FROM "outbox" WHERE "rcpt" = ? AND {_COUNTED}',
               (rcpt, True, "suppressed", day))
    if n >= lim.auto_replies_per_sender_per_day:
        return f"{rcpt} already got {n} automatic replies in 24 hours (limits.auto_replies_per_sender_per_day)"
    if ticket is not None:
        n = _count(rt, ("ticket", ticket.id), f'SELECT COUNT(*) FROM "outbox" WHERE "ticket_id" = ? AND {_COUNTED}',
                   (ticket.id, True, "suppressed", day),
                   known=0 if getattr(ticket, "is_new", False) else None)  # opened by this message: none yet
        if n >= lim.auto_replies_per_ticket_per_day:
            return f"ticket already sent {n} automatic replies in 24 hours (limits.auto_replies_per_ticket_per_day)"
    hour = Outbox.created_at.db_value(now - dt.timedelta(hours=1))
    n = _count(rt, ("desk",), f'SELECT COUNT(*) FROM "outbox" WHERE {_COUNTED}', (True, "suppressed", hour))
    if n >= lim.auto_replies_per_hour:
        _alert_pause_once(rt, now, n)
        return f"automatic replies paused: {n} in the last hour (limits.auto_replies_per_hour)"
    return None


def _counted(rt, rcpt: str, ticket: Ticket | None) -> None:
    counts = rt.memo.setdefault("auto_counts", {})
    for key in (("rcpt", rcpt), ("ticket", ticket.id if ticket else None), ("desk",)):
        if key in counts:
            counts[key] += 1


def _alert_pause_once(rt, now, n):
    last = models.get_setting("autopause_alerted_at")
    if last and dt.datetime.fromisoformat(last) > now - dt.timedelta(hours=1):
        return
    models.put_setting("autopause_alerted_at", now.isoformat())
    log.warning("automatic replies paused: %d in the last hour", n)
    for im in rt.cfg.roles.incident_managers:
        queue_mail(rt, now, "autopause", rcpt=im, automatic=False, context={"count": n})


def is_desk_address(rt, addr: str) -> bool:
    local, _, domain = addr.partition("@")
    desk = rt.cfg.desk
    return domain == desk.domain and (local == desk.local_part or local.startswith(desk.local_part + "+"))


def queue_mail(
    rt,
    now: dt.datetime,
    kind: str,
    *,
    rcpt: str,
    rcpt_name: str = "",
    ticket: Ticket | None = None,
    context: dict | None = None,
    automatic: bool | None = None,
    from_name: str | None = None,
    thread: Thread | None = None,
    inbound=None,
) -> Outbox | None:
    """Render `kind` for `rcpt` and write it to the outbox. Returns the row (which may
    be `suppressed`), or None when the recipient is the desk itself."""
    cfg = rt.cfg
    rcpt = rcpt.strip().lower()
    if not SAFE_ADDRESS.match(rcpt) or is_desk_address(rt, rcpt):
        return None  # never write to ourselves (that is how loops start), nor to a malformed address
    if automatic is None:
        automatic = kind in AUTO_REPLIES
    reason = suppression_reason(rt, rcpt, now, automatic)
    if reason is None and automatic:
        reason = auto_reply_limit(rt, rcpt, ticket, now)

    values = {
        "rcpt": rcpt, "rcpt_name": rcpt_name, "ticket": ticket, "now": now,
        "ref": rt.ref(ticket) if ticket else "", "tag": rt.tag(ticket) if ticket else "",
    }
    values.update(context or {})
    frozen = snapshot(values)
    try:
        subject = rt.templates.subject(kind, **_render_context(rt, frozen))
    except (jinja2.TemplateError, TemplateMissing) as e:
        # a broken template (an admin's override, say) fails its own mail, not the message that caused it
        log.error("template %s: %s", kind, e)
        subject, reason = f"({kind})", f"template {kind} failed: {type(e).__name__}: {e}"[:1000]
    if ticket is not None and frozen["tag"] not in subject:
        subject = f"{frozen['tag']} {subject}"
    if thread is None:
        thread = thread_for(ticket, rcpt) if ticket is not None else Thread()
    frozen["_thread"] = [thread.in_reply_to, thread.references]
    row = Outbox.create(
        ticket=ticket, kind=kind, automatic=automatic, rcpt=rcpt, rcpt_name=rcpt_name, from_name=from_name or "",
        message_id=signing.new_message_id(rt.key, ticket.id if ticket else None, rcpt, cfg.desk.domain),
        subject=subject, context=json.dumps(frozen, ensure_ascii=False, separators=(",", ":")),
        created_at=now, next_attempt_at=now,
        status="failed" if reason and reason.startswith("template") else "suppressed" if reason else "queued",
        last_error=reason, inbound=inbound,
    )
    if reason:
        log.info("suppressed kind=%s rcpt=%s ticket=%s: %s", kind, rcpt, frozen["ref"] or "-", reason)
    elif automatic:
        _counted(rt, rcpt, ticket)
    return row


def _render_context(rt, frozen: dict) -> dict:
    cfg = rt.cfg
    return {**frozen, "desk": cfg.desk, "cfg": cfg, "tz": cfg.desk.timezone}


def render_row(rt, row) -> bytes:
    """The bytes of an outbox row: the same Message-ID, Date and MIME boundary every
    time, so that a mail sent again after a crash is the same mail (guarantee 3)."""
    cfg = rt.cfg
    frozen = json.loads(row.context)
    in_reply_to, references = frozen.pop("_thread", [None, []])
    rendered = rt.templates.render(row.kind, **_render_context(rt, frozen))
    display = f"{row.from_name} via {cfg.desk.name}" if row.from_name else cfg.desk.name
    return build_mail(
        from_addr=cfg.desk.address, from_name=display, to_addr=row.rcpt, to_name=row.rcpt_name,
        subject=row.subject, message_id=row.message_id, date=row.created_at, text=rendered.text,
        html=rendered.html, in_reply_to=in_reply_to, references=references, reply_to=cfg.desk.address,
        auto_submitted=AUTO_SUBMITTED.get(row.kind, "auto-generated"), extra={LOOP_HEADER: cfg.desk.address},
    )


# --- delivery -------------------------------------------------------------------------


@dataclass
class Delivered:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0

    def __str__(self):
        return f"sent={self.sent} deferred={self.deferred} failed={self.failed}"

    def add(self, other: "Delivered") -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.failed += other.failed


class _Temporary(Exception):
    pass


class _Permanent(Exception):
    pass


def _classify_smtp_error(e: Exception) -> Exception:
    if isinstance(e, aiosmtplib.SMTPRecipientsRefused) and e.recipients:
        r = e.recipients[0]
        e = aiosmtplib.SMTPResponseException(r.code, r.message)
    if isinstance(e, aiosmtplib.SMTPAuthenticationError):
        return _Temporary(f"SMTP login refused: {e.code} {e.message} (check smtp.username and the password)")
    if isinstance(e, aiosmtplib.SMTPResponseException):
        text = f"{e.code} {e.message}".strip()
        return _Permanent(text) if 500 <= e.code < 600 else _Temporary(text)
    return _Temporary(f"{type(e).__name__}: {e}".strip().rstrip(":"))


def _tls_context(smtp_cfg) -> ssl.SSLContext | None:
    if smtp_cfg.security == "none":
        return None
    ctx = ssl.create_default_context(cafile=str(smtp_cfg.ca_file) if smtp_cfg.ca_file else None)
    if not smtp_cfg.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.cache
def _ehlo_name() -> str:
    """This host's name for EHLO, looked up once (aiosmtplib would look it up, in
    DNS, for every connection)."""
    return socket.getfqdn()


async def _connect(smtp_cfg) -> aiosmtplib.SMTP:
    kwargs = dict(
        hostname=smtp_cfg.host, port=smtp_cfg.effective_port, timeout=smtp_cfg.timeout_seconds,
        local_hostname=_ehlo_name(),
        use_tls=smtp_cfg.security == "ssl", start_tls=smtp_cfg.security == "starttls",
        tls_context=_tls_context(smtp_cfg),
    )
    client = aiosmtplib.SMTP(**kwargs)
    await client.connect()
    if client.last_ehlo_response is None:
        await client.ehlo()
    if smtp_cfg.username:
        if smtp_cfg.auth == "oauth2":
            await client.auth_xoauth2(smtp_cfg.username, smtp_cfg.oauth2_token)
        else:
            await client.login(smtp_cfg.username, smtp_cfg.password or "")
    return client


async def _send(client: aiosmtplib.SMTP, sender: str, rcpt: str, raw: bytes) -> None:
    """One mail, one recipient. aiosmtplib's sendmail parses both addresses again with
    email.utils on every mail; ours are plain addr-specs checked when queued
    (SAFE_ADDRESS), so MAIL and RCPT go out as they are (RFC 5321 3.3)."""
    for verb, arg, accepted in ((b"MAIL", f"FROM:<{sender}>", (250,)), (b"RCPT", f"TO:<{rcpt}>", (250, 251))):
        response = await client.execute_command(verb, arg.encode("ascii"))
        if response.code not in accepted:
            raise aiosmtplib.SMTPResponseException(response.code, response.message)
    await client.data(raw)


def _backoff(rt, attempts: int) -> dt.timedelta:
    first, cap = rt.cfg.smtp.retry_first.total, rt.cfg.smtp.retry_max.total
    return min(first * (2 ** max(0, attempts - 1)), cap)


class Connections:
    """The send process's SMTP connections and event loop, kept from one delivery
    round to the next: a round does not pay again for TCP, TLS, EHLO and login.
    A connection idle for `idle` seconds is closed (servers drop idle clients, RFC
    5321 4.5.3.2.7, and a reused one that was dropped gets one fresh try anyway)."""

    def __init__(self, smtp_cfg, idle: float = 30.0):
        self.cfg, self.idle = smtp_cfg, idle
        self.loop = asyncio.new_event_loop()
        self._free: list[tuple[aiosmtplib.SMTP, float]] = []

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    async def take(self) -> aiosmtplib.SMTP:
        while self._free:
            client, _ = self._free.pop()
            if client.is_connected:
                return client
        return await _connect(self.cfg)

    def give_back(self, client: aiosmtplib.SMTP) -> None:
        self._free.append((client, time.monotonic()))

    def expire(self, older_than: float | None = None) -> None:
        """Close the connections idle longer than `older_than` seconds (default
        `idle`; 0: all of them)."""
        limit = time.monotonic() - (self.idle if older_than is None else older_than)
        stale = [c for c, since in self._free if since <= limit]
        self._free = [(c, since) for c, since in self._free if since > limit]
        if stale:
            self.run(_quit_all(stale))

    def close(self) -> None:
        self.expire(0)
        self.loop.close()


async def _quit_all(clients: list[aiosmtplib.SMTP]) -> None:
    await asyncio.gather(*(_quit(c) for c in clients))


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def deliver_due(rt, now: dt.datetime, on_results, should_stop=lambda: False, skip=frozenset(),
                connections: Connections | None = None, limit: int = 5000) -> int:
    """Send every queued or deferred row whose time has come, except `skip` (sent but
    not yet recorded). Results go to `on_results([(id, status, error), ...])` in
    batches; the desk process records them (`record_results`), so that one process
    writes the database. Returns how many rows were tried, at most `limit`. Without
    `connections`, the connections last this one call."""
    due = [i for (i,) in Outbox.select(Outbox.id)
           .where(Outbox.status.in_(("queued", "deferred")) & (Outbox.next_attempt_at <= now))
           .order_by(Outbox.id).limit(limit + len(skip)).tuples() if i not in skip][:limit]
    if not due:
        return 0
    rows = list(Outbox.select().where(Outbox.id.in_(due) & Outbox.status.in_(("queued", "deferred")))
                .order_by(Outbox.id))
    own = connections is None
    connections = connections or Connections(rt.cfg.smtp)
    try:
        connections.expire()
        connections.run(_deliver(rt, rows, on_results, should_stop, connections))
    finally:
        if own:
            connections.close()
    return len(rows)


async def _deliver(rt, rows, on_results, should_stop, connections: Connections) -> None:
    results: list[tuple] = []  # (id, status, error)
    queue: asyncio.Queue = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)
    down: list[str] = []  # set when the server cannot be reached: stop trying this round

    def flush():
        if results:
            on_results(list(results))
            results.clear()

    async def worker():
        client = None
        try:
            while not queue.empty() and not should_stop():
                row = queue.get_nowait()
                if down:
                    results.append((row.id, "deferred", down[0]))
                    continue
                envelope = verp_address(rt.cfg.desk.bounce_address, rt.cfg.desk.local_part, rt.cfg.desk.domain, row.id)
                try:
                    raw = render_row(rt, row)
                except Exception as e:  # noqa: BLE001 - a broken template fails its mail, not the run
                    log.error("cannot render outbox=%s kind=%s: %s", row.id, row.kind, e)
                    results.append((row.id, "failed", f"template {row.kind} failed: {type(e).__name__}: {e}"[:1000]))
                    continue
                for attempt in (1, 2):  # a reused connection the server dropped gets one fresh try
                    if client is None:
                        try:
                            client = await (connections.take() if attempt == 1 else _connect(rt.cfg.smtp))
                        except (aiosmtplib.SMTPException, OSError) as e:
                            down.append(str(_classify_smtp_error(e)))
                            results.append((row.id, "deferred", down[0]))
                            break
                    try:
                        await _send(client, envelope, row.rcpt, raw)
                        faults.point("after-send")
                        results.append((row.id, "sent", None))
                        break
                    except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as e:
                        client = None
                        if attempt == 2:
                            results.append((row.id, "deferred", str(_classify_smtp_error(e))))
                    except (aiosmtplib.SMTPException, OSError) as e:
                        err = _classify_smtp_error(e)
                        results.append((row.id, "failed" if isinstance(err, _Permanent) else "deferred", str(err)))
                        try:
                            await client.rset()
                        except (aiosmtplib.SMTPException, OSError):
                            client = None
                        break
                if len(results) >= 20:  # the fewer unreported, the fewer resent after a crash
                    flush()
        finally:
            if client is not None:
                if down or should_stop():
                    await _quit(client)
                else:
                    connections.give_back(client)

    await asyncio.gather(*(worker() for _ in range(min(rt.cfg.smtp.connections, len(rows)))))
    flush()
    if down:
        log.warning("SMTP server %s:%s unreachable: %s", rt.cfg.smtp.host, rt.cfg.smtp.effective_port, down[0])


def record_results(rt, results: list[tuple], now: dt.datetime) -> Delivered:
    """Write what delivery reported: sent, deferred with its next try, or failed."""
    report = Delivered()
    if not results:
        return report
    with models.write_transaction():
        sent_ids = [rid for rid, status, _ in results if status == "sent"]
        if sent_ids:
            Outbox.update(status="sent", sent_at=now, last_error=None, attempts=Outbox.attempts + 1).where(
                Outbox.id.in_(sent_ids) & Outbox.status.in_(("queued", "deferred"))
            ).execute()
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
                Outbox.update(status="deferred", attempts=attempts, last_error=error,
                              next_attempt_at=now + _backoff(rt, attempts)).where(Outbox.id == row.id).execute()
            else:
                report.failed += 1
                Outbox.update(status="failed", attempts=attempts, last_error=error).where(Outbox.id == row.id).execute()
                if row.ticket_id:
                    models.add_event(row.ticket_id, now, "desk", "delivery-failed",
                                     f"{row.kind} mail to {row.rcpt} failed: {error}")
                log.warning("delivery failed outbox=%s rcpt=%s: %s", row.id, row.rcpt, error)
    return report
