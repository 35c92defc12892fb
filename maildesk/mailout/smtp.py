"""SMTP: the send process's connections and `deliver_due`, the only code that imports
aiosmtplib. Results go back to the desk process, which records them (results.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING

import aiosmtplib

from .. import faults, signing
from ..errors import MaildeskError
from ..oauth2 import AccessTokens, TokenError
from ..store import Outbox
from ..verp import verp_address
from .queue import claim_due
from .render import render_row

if TYPE_CHECKING:
    from ..service.runtime import Runtime

log = logging.getLogger(__name__)

class _Temporary(MaildeskError):
    pass


class _Permanent(MaildeskError):
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


async def _connect(smtp_cfg, tokens: AccessTokens | None = None) -> aiosmtplib.SMTP:
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
    client.log_in_again_at = None  # type: ignore[attr-defined]  # time.time() when the OAuth2 token it logged in with expires soon
    if smtp_cfg.username:
        if smtp_cfg.auth == "oauth2":
            tokens = tokens or AccessTokens.for_config(smtp_cfg, "smtp")
            assert tokens is not None  # auth = "oauth2" has tokens
            await _oauth2_login(client, smtp_cfg, tokens)
        else:
            await client.login(smtp_cfg.username, smtp_cfg.password or "")
    log.info("connected to SMTP %s:%s%s", smtp_cfg.host, smtp_cfg.effective_port,
             f" as {smtp_cfg.username}" if smtp_cfg.username else "")
    return client


async def _oauth2_login(client: aiosmtplib.SMTP, smtp_cfg, tokens: AccessTokens) -> None:
    """XOAUTH2 with a token that is not about to expire (asked for in a thread: the
    other connections go on sending meanwhile); a refused token is renewed and tried
    once more."""
    loop = asyncio.get_running_loop()
    for attempt in (1, 2):
        try:
            token = await loop.run_in_executor(None, tokens.current)
        except TokenError as e:
            client.close()
            raise aiosmtplib.SMTPException(str(e)) from None
        try:
            await client.auth_xoauth2(smtp_cfg.username, token)
        except aiosmtplib.SMTPAuthenticationError:
            if attempt == 1 and tokens.refused(token):
                log.warning("smtp: the server refused the OAuth2 token for %s; asking for a new one", smtp_cfg.username)
                continue
            client.close()
            raise
        client.log_in_again_at = tokens.renew_at()  # type: ignore[attr-defined]  # our note on the client
        return


async def _send(client: aiosmtplib.SMTP, sender: str, rcpt: str, raw: bytes) -> None:
    """One mail, one recipient. aiosmtplib's sendmail parses both addresses again with
    email.utils on every mail; ours are plain addr-specs checked when queued
    (SAFE_ADDRESS), so MAIL and RCPT go out as they are (RFC 5321 3.3)."""
    for verb, arg, accepted in ((b"MAIL", f"FROM:<{sender}>", (250,)), (b"RCPT", f"TO:<{rcpt}>", (250, 251))):
        response = await client.execute_command(verb, arg.encode("ascii"))
        if response.code not in accepted:
            raise aiosmtplib.SMTPResponseException(response.code, response.message)
    await client.data(raw)


class Connections:
    """The send process's SMTP connections and event loop, kept from one delivery
    round to the next: a round does not pay again for TCP, TLS, EHLO and login.
    A connection idle for `idle` seconds is closed (servers drop idle clients, RFC
    5321 4.5.3.2.7, and a reused one that was dropped gets one fresh try anyway)."""

    def __init__(self, smtp_cfg, idle: float = 30.0, tokens: AccessTokens | None = None):
        self.cfg, self.idle = smtp_cfg, idle
        self.tokens = tokens or (AccessTokens.for_config(smtp_cfg, "smtp") if smtp_cfg.username else None)
        self.loop = asyncio.new_event_loop()
        self._free: list[tuple[aiosmtplib.SMTP, float]] = []

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    async def take(self) -> aiosmtplib.SMTP:
        while self._free:
            client, _ = self._free.pop()
            renew_at = getattr(client, "log_in_again_at", None)
            if client.is_connected and renew_at is not None and time.time() >= renew_at:
                await _quit(client)  # its token expires soon: a new connection logs in with a new one
                continue
            if client.is_connected:
                return client
        return await self.connect()

    async def connect(self) -> aiosmtplib.SMTP:
        return await _connect(self.cfg, self.tokens)

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


def deliver_due(rt: Runtime, now: dt.datetime, on_results, should_stop=lambda: False, skip=frozenset(),
                connections: Connections | None = None, limit: int = 5000, claimer: int | None = None) -> int:
    """Send every queued or deferred row whose time has come, except `skip` (sent but
    not yet recorded). Results go to `on_results([(id, status, error), ...])` in
    batches; the desk process records them (`record_results`), so that one process
    writes the database. Returns how many rows were tried, at most `limit`. Without
    `connections`, the connections last this one call."""
    due = claim_due(now, limit, skip, claimer)  # on PostgreSQL, claimed for this send process
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


async def _deliver(rt: Runtime, rows, on_results, should_stop, connections: Connections) -> None:
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
                # bounces come back to the mailbox that sent it
                local, _, domain = row.sender(rt.cfg.desk.address).rpartition("@")
                envelope = verp_address(rt.cfg.desk.bounce_address, local, domain, row.id,
                                        signing.verp_signature(rt.key, row.id, row.rcpt))
                try:
                    raw = render_row(rt, row)
                except Exception as e:  # noqa: BLE001 - a broken template fails its mail, not the run
                    log.error("cannot render outbox=%s kind=%s: %s", row.id, row.kind, e)
                    results.append((row.id, "failed", f"template {row.kind} failed: {type(e).__name__}: {e}"[:1000]))
                    continue
                for attempt in (1, 2):  # a reused connection the server dropped gets one fresh try
                    if client is None:
                        try:
                            client = await (connections.take() if attempt == 1 else connections.connect())
                        except (aiosmtplib.SMTPException, OSError) as e:
                            down.append(str(_classify_smtp_error(e)))
                            results.append((row.id, "deferred", down[0]))
                            break
                    try:
                        await _send(client, envelope, row.rcpt, raw)
                        faults.point("after-send")
                        results.append((row.id, "sent", None))
                        log.info("sent outbox=%s kind=%s rcpt=%s ticket=%s msgid=<%s>", row.id, row.kind, row.rcpt,
                                 rt.ref(row.ticket_id) if row.ticket_id else "-", row.message_id)
                        break
                    except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as e:
                        client = None
                        if attempt == 2:
                            results.append((row.id, "deferred", str(_classify_smtp_error(e))))
                    except (aiosmtplib.SMTPException, OSError) as e:
                        err = _classify_smtp_error(e)
                        results.append((row.id, "failed" if isinstance(err, _Permanent) else "deferred", str(err)))
                        log.info("%s outbox=%s kind=%s rcpt=%s: %s", "refused" if isinstance(err, _Permanent) else
                                 "deferred", row.id, row.kind, row.rcpt, err)
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
