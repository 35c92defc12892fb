"""One IMAP session, and the fetch that copies new mail into the database.

The fetch is the first half of guarantee 1 (nothing is lost): new messages are
found by UID above the checkpoint (UIDVALIDITY + last UID), fetched in batches with
one `UID FETCH BODY.PEEK[]` each (PEEK: the server does not mark them read), stored
raw in one transaction per batch together with the new checkpoint (store_batch; in
`maildesk run` the desk process commits what the fetch process hands it), and only
then flagged `\\Seen` or moved to `imap.processed_mailbox`. A crash between the commit
and the flag leaves rows with `server_done = false`, which the next fetch flags.

Byte-identical copies (the same message appended twice, or fetched again after a
UIDVALIDITY change) are stored once: `Inbound.sha256` is unique.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from peewee import DatabaseError, InterfaceError

from .. import faults, store
from ..errors import MaildeskError
from ..oauth2 import AccessTokens, TokenError
from ..store import Inbound, InboundRaw, MailboxState

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 32 * 1024 * 1024
SEEN = b"\\Seen"


class MailboxError(MaildeskError):
    """A problem the admin must fix (login refused, mailbox missing)."""


@dataclass
class Fetched:
    stored: int = 0
    duplicates: int = 0
    flagged: int = 0

    def __str__(self):
        return f"stored={self.stored} duplicates={self.duplicates} flagged={self.flagged}"

    def describe(self, processed_mailbox: str | None) -> str:
        """What happened, in words: "stored 3 new message(s); moved 3 to Processed"."""
        said = f"stored {self.stored} new message(s)"
        if self.duplicates:
            said += f" ({self.duplicates} already stored)"
        if self.flagged:
            said += f"; moved {self.flagged} to {processed_mailbox}" if processed_mailbox else \
                f"; marked {self.flagged} \\Seen"
        return said


class MailboxSession:
    def __init__(self, imap_cfg, tokens: AccessTokens | None = None):
        self.cfg = imap_cfg
        # auth = "oauth2": kept by the caller from one session to the next
        self.tokens = tokens or AccessTokens.for_config(imap_cfg, "imap")
        self.log_in_again_at: float | None = None  # time.time() when this session's token expires soon
        self.client: IMAPClient | None = None
        self.uidvalidity: int | None = None
        self.can_idle = self.can_move = False

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)
        if not self.cfg.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def connect(self) -> MailboxSession:
        c = self.cfg
        use_ssl = c.security == "ssl"
        self.client = IMAPClient(c.host, port=c.effective_port, ssl=use_ssl,
                                 ssl_context=self._tls() if use_ssl else None, timeout=c.timeout_seconds)
        if c.security == "starttls":
            self.client.starttls(self._tls())
        try:
            if self.tokens is not None:
                self._oauth2_login()
            else:
                self.client.login(c.username, c.password or "")
        except IMAPClientError as e:
            what = "the OAuth2 token" if self.tokens is not None else "the password"
            raise MailboxError(f"IMAP login as {c.username} on {c.host} refused: {_text(e)} "
                               f"(check imap.username and {what})") from e
        caps = self.client.capabilities()
        self.can_idle = c.idle and b"IDLE" in caps
        self.can_move = b"MOVE" in caps
        if c.processed_mailbox and not self.client.folder_exists(c.processed_mailbox):
            self.client.create_folder(c.processed_mailbox)
        try:
            info = self.client.select_folder(c.mailbox)
        except IMAPClientError as e:
            raise MailboxError(f"cannot open IMAP mailbox {c.mailbox!r}: {_text(e)} (check imap.mailbox)") from e
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        log.info("connected to IMAP %s:%s as %s, mailbox %s (folder %s) uidvalidity=%s, %s", c.host, c.effective_port,
                 c.username, c.name, c.mailbox, self.uidvalidity,
                 "waiting with IDLE" if self.can_idle else f"polling every {c.poll_seconds} s")
        return self

    def _oauth2_login(self) -> None:
        """XOAUTH2 with a token that is not about to expire; a refused token is
        renewed and tried once more (it may have been revoked, or the clocks differ)."""
        assert self.tokens is not None and self.client is not None  # auth = "oauth2", connected
        for attempt in (1, 2):
            try:
                token = self.tokens.current()
            except TokenError as e:
                raise MailboxError(str(e)) from None
            try:
                self.client.oauth2_login(self.cfg.username, token)
            except IMAPClientError:
                if attempt == 1 and self.tokens.refused(token):
                    log.warning("imap: the server refused the OAuth2 token for %s; asking for a new one", self.cfg.username)
                    continue
                raise
            self.log_in_again_at = self.tokens.renew_at()
            return

    def should_log_in_again(self) -> bool:
        """True when the token this session logged in with is about to expire."""
        return self.log_in_again_at is not None and time.time() >= self.log_in_again_at

    def close(self) -> None:
        if self.client is None:
            return
        try:
            self.client.logout()
        except Exception:  # noqa: BLE001 - the connection is being thrown away anyway
            try:
                self.client.shutdown()
            except Exception:  # noqa: BLE001
                pass
        self.client = None

    def new_uids(self, last_uid: int) -> list[int]:
        # "N:*" always matches the highest UID, even below N (RFC 3501 6.4.8)
        assert self.client is not None  # connect() ran
        return sorted(u for u in self.client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        assert self.client is not None  # connect() ran
        out = {}
        for i in range(0, len(uids), 1000):
            for uid, data in self.client.fetch(uids[i:i + 1000], ["RFC822.SIZE"]).items():
                out[uid] = int(data.get(b"RFC822.SIZE", 0))
        return out

    def fetch(self, uids: list[int]) -> dict[int, bytes]:
        assert self.client is not None  # connect() ran
        data = self.client.fetch(uids, ["BODY.PEEK[]"])
        return {uid: d[b"BODY[]"] for uid, d in data.items() if b"BODY[]" in d}

    def mark_done(self, uids: list[int]) -> None:
        if not uids:
            return
        assert self.client is not None  # connect() ran
        target = self.cfg.processed_mailbox
        if not target:
            self.client.add_flags(uids, [SEEN], silent=True)
        elif self.can_move:
            self.client.move(uids, target)
        else:
            self.client.copy(uids, target)
            self.client.delete_messages(uids, silent=True)
            self.client.uid_expunge(uids) if self.client.has_capability("UIDPLUS") else self.client.expunge()

    def wait(self, seconds: float, should_stop) -> None:
        """Until new mail, `seconds`, or a stop: IDLE where offered, else sleep."""
        assert self.client is not None  # connect() ran
        deadline = time.monotonic() + seconds
        if not self.can_idle:
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            self.client.noop()
            return
        self.client.idle()
        try:
            while not should_stop() and time.monotonic() < deadline:
                responses = self.client.idle_check(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
                if any(r[1] in (b"EXISTS", b"RECENT") for r in responses if len(r) > 1 and isinstance(r[1], bytes)):
                    break
        finally:
            self.client.idle_done()


def _text(e: Exception) -> str:
    s = str(e)
    return s[2:-1] if s.startswith("b'") else s


class StoreHere:
    """Where fetch_new puts a batch: straight into the database, in this process.
    (The fetch process of `maildesk run` hands its batches to the desk process
    instead, service.mailprocess.DeskStore, so that the desk is the database's only writer.)

    `send` hands a batch over and returns a receipt; `wait(receipt)` returns how
    many were stored once they are committed, or raises StoreFailed; `flagged` says
    the server has marked a batch done."""

    def send(self, mailbox: str, uidvalidity: int, after_uid: int, last_uid: int, items: list[tuple],
             now: dt.datetime):
        return store_batch(mailbox, uidvalidity, after_uid, last_uid, items, now)

    def wait(self, receipt) -> int:
        if receipt is None:
            raise StoreFailed("the checkpoint moved while the batch was on its way")
        return receipt

    def flagged(self, mailbox: str, uidvalidity: int, uids: list[int]) -> None:
        with store.write_transaction():
            record_flagged(mailbox, uidvalidity, uids)


class StoreFailed(MaildeskError):
    """A fetched batch was not committed: nothing of it is flagged, and the next
    fetch starts again from the checkpoint."""


def fetch_new(session: MailboxSession, now: dt.datetime, batch_size: int = 200, should_stop=lambda: False,
              intake=None, summarize=lambda raws: {}) -> Fetched:
    """Copy new messages into `Inbound`, committing before flagging on the server.

    While one batch is being committed, the next is fetched and read (`summarize`:
    uid -> (summary JSON, Message-ID)): the IMAP round trip and the parsing overlap the
    store. A batch is flagged only once `intake` has committed it (guarantee 1)."""
    assert session.uidvalidity is not None  # connected
    intake = intake or StoreHere()
    report = Fetched()
    mailbox = session.cfg.name  # the checkpoint and the inbound rows go by the mailbox's name
    state = _checkpoint(mailbox, session.uidvalidity)
    _finish_pending_flags(session, mailbox, report)
    uids = session.new_uids(state.last_uid)
    after_uid = state.last_uid
    sent = None  # (batch, receipt): handed to the store, not yet flagged
    for batch in _batches(session, uids, batch_size):
        if should_stop():
            break
        raws = session.fetch(batch)
        summaries = summarize(raws)
        items = [(uid, raw, *summaries.get(uid, (None, None))) for uid, raw in sorted(raws.items())]
        # the checkpoint moves past the whole batch, bodies the server no longer had included
        receipt = intake.send(mailbox, session.uidvalidity, after_uid, max(batch), items, now)
        after_uid = max(batch)
        if sent:
            _flag(session, intake, mailbox, *sent, report)
        sent = (batch, receipt)
    if sent:
        _flag(session, intake, mailbox, *sent, report)
    if not uids:
        with store.write_transaction():
            MailboxState.update(last_success_at=now, stall_alerted=False).where(MailboxState.mailbox == mailbox).execute()
    if report.stored or report.duplicates or report.flagged:
        log.info("fetched mailbox=%s: %s", mailbox, report.describe(session.cfg.processed_mailbox))
    return report


def _flag(session: MailboxSession, intake, mailbox: str, batch: list[int], receipt, report: Fetched) -> None:
    stored = intake.wait(receipt)
    report.stored += stored
    report.duplicates += len(batch) - stored
    session.mark_done(batch)  # only now, after the commit (guarantee 1)
    intake.flagged(mailbox, session.uidvalidity, batch)
    report.flagged += len(batch)


def store_batch(mailbox: str, uidvalidity: int, after_uid: int, last_uid: int, items: list[tuple],
                now: dt.datetime) -> int | None:
    """Commit one fetched batch, [(uid, raw bytes, summary or None, Message-ID or None)],
    with the new checkpoint `last_uid`; how many were new, or None if the checkpoint is
    no longer `after_uid` (an earlier batch failed: storing this one would skip it)."""
    with store.write_transaction():
        last = MailboxState.select(MailboxState.last_uid).where(
            (MailboxState.mailbox == mailbox) & (MailboxState.uidvalidity == uidvalidity)).scalar()
        if last != after_uid:
            log.warning("mailbox=%s: batch after UID %s not stored, the checkpoint is at %s", mailbox, after_uid, last)
            return None
        if store.is_sqlite():
            stored = sum(_store(mailbox, uidvalidity, uid, raw, now, summary, mid) for uid, raw, summary, mid in items)
        else:
            stored = _store_many(mailbox, uidvalidity, items, now)
        MailboxState.update(last_uid=last_uid, last_success_at=now,
                            stall_alerted=False).where(MailboxState.mailbox == mailbox).execute()
    faults.point("after-store")
    return stored


def store_fetched(mailbox: str, uidvalidity: int, after_uid: int, last_uid: int, items: list[tuple],
                  now: dt.datetime) -> int | None:
    """store_batch for whichever process commits a fetched batch: None, logged, when the
    database refused it (the fetch takes it again)."""
    try:
        return store_batch(mailbox, uidvalidity, after_uid, last_uid, items, now)
    except (DatabaseError, InterfaceError) as e:
        log.error("could not store %d fetched message(s) of mailbox=%s: %s; the fetch takes them again",
                  len(items), mailbox, e)
        return None


def record_flagged(mailbox: str, uidvalidity: int, uids: list[int]) -> None:
    """Note that the server has these UIDs flagged or moved (`server_done`).

    On PostgreSQL a row that another transaction holds (a desk process working on that
    message) is left as it is rather than waited for: waiting would hold up whoever
    records, for as long as a batch of mail takes, and the row only means that the next
    fetch flags that message again, which changes nothing on the server."""
    # among the rows not yet flagged: the (server_done, mailbox, uidvalidity, uid) index
    # finds them without reading every row the mailbox ever had
    rows = Inbound.select(Inbound.id).where(
        (Inbound.server_done == False) & (Inbound.mailbox == mailbox)  # noqa: E712
        & (Inbound.uidvalidity == uidvalidity) & Inbound.uid.in_(uids))
    if not store.is_sqlite():
        rows = rows.for_update(skip_locked=True)
    Inbound.update(server_done=True).where(Inbound.id.in_(rows)).execute()


def _store(mailbox: str, uidvalidity: int, uid: int, raw: bytes, now: dt.datetime, summary: str | None = None,
           message_id: str | None = None) -> bool:
    """One message into `Inbound`; False when the same bytes are already stored."""
    digest = hashlib.sha256(raw).hexdigest()
    cursor = store.execute(
        f'INSERT INTO "inbound" ({_INBOUND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) '
        'ON CONFLICT ("sha256") DO NOTHING' + ("" if store.is_sqlite() else ' RETURNING "id"'),
        (mailbox, uidvalidity, uid, digest, len(raw), Inbound.received_at.db_value(now), "pending", "", False, "", "",
         message_id))
    if store.is_sqlite():
        new_id = cursor.lastrowid if cursor.rowcount == 1 else None
    else:
        row = cursor.fetchone()
        new_id = row[0] if row else None
    if new_id is None:
        return False
    store.insert(InboundRaw, inbound=new_id, data=raw, summary=summary)
    return True


_INBOUND_COLUMNS = ('"mailbox", "uidvalidity", "uid", "sha256", "size", "received_at", "status", "decisions", '
                    '"server_done", "from_addr", "subject", "message_id"')


def _store_many(mailbox: str, uidvalidity: int, items: list[tuple], now: dt.datetime) -> int:
    """`_store` for a whole batch in two statements (PostgreSQL, where each statement is
    a round trip): the inbound rows in one INSERT, in UID order, so their ids keep it;
    their bytes in another, sent with whatever comes next (store.write)."""
    first: dict[str, tuple] = {}  # one row per content, the first copy's, as one _store at a time keeps
    for uid, raw, summary, mid in items:
        first.setdefault(hashlib.sha256(raw).hexdigest(), (uid, raw, summary, mid))
    if not first:
        return 0
    at = Inbound.received_at.db_value(now)
    rows = store.execute(
        f'INSERT INTO "inbound" ({_INBOUND_COLUMNS}) VALUES ' + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(first))
        + ' ON CONFLICT ("sha256") DO NOTHING RETURNING "sha256", "id"',
        [v for digest, (uid, raw, _, mid) in first.items()
         for v in (mailbox, uidvalidity, uid, digest, len(raw), at, "pending", "", False, "", "", mid)]).fetchall()
    new = dict(rows)
    if new:
        blob = InboundRaw.data.db_value
        store.write('INSERT INTO "inbound_raw" ("inbound_id", "data", "summary") VALUES ' + ", ".join(["(?, ?, ?)"] * len(new)),
                    [v for digest, (_, raw, summary, _) in first.items() if digest in new
                     for v in (new[digest], blob(raw), summary)])
    return len(new)


def _checkpoint(mailbox: str, uidvalidity: int) -> MailboxState:
    state = MailboxState.get_or_none(MailboxState.mailbox == mailbox)
    if state is not None and state.uidvalidity == uidvalidity:
        return state
    with store.write_transaction():
        state = MailboxState.get_or_none(MailboxState.mailbox == mailbox)
        if state is None:
            state = MailboxState.create(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=0)
        elif state.uidvalidity != uidvalidity:
            # RFC 3501 2.3.1.1: old UIDs mean nothing now; copies already stored are
            # recognized by content and not stored twice
            log.warning("mailbox=%s UIDVALIDITY changed %s -> %s: fetching it again", mailbox, state.uidvalidity, uidvalidity)
            state.uidvalidity, state.last_uid = uidvalidity, 0
            state.save()
    return state


def _finish_pending_flags(session: MailboxSession, mailbox: str, report: Fetched) -> None:
    """Flag or move what an earlier run stored but did not get to flag (a crash)."""
    assert session.client is not None and session.uidvalidity is not None  # connected
    rows = Inbound.select(Inbound.uid).where(
        (Inbound.server_done == False) & (Inbound.mailbox == mailbox)  # noqa: E712
        & (Inbound.uidvalidity == session.uidvalidity) & Inbound.uid.is_null(False)).tuples()
    uids = [u for (u,) in cast("Iterable[tuple[int]]", rows)]
    if not uids:
        return
    present = set(session.client.search(["UID", ",".join(map(str, uids))])) if uids else set()
    session.mark_done(sorted(present))
    with store.write_transaction():
        record_flagged(mailbox, session.uidvalidity, uids)
    report.flagged += len(present)
    where = f"moved them to {session.cfg.processed_mailbox}" if session.cfg.processed_mailbox else "marked them \\Seen"
    log.info("mailbox=%s: %d message(s) were stored before a restart but not yet done on the server; %s",
             mailbox, len(present), where)


FIRST_BATCH = 10  # UIDs in a round's first batch; each next one twice as many, up to batch_size


def _batches(session: MailboxSession, uids: list[int], batch_size: int):
    """`batch_size` UIDs at a time, fewer where their sizes add up to more than
    MAX_BATCH_BYTES; the sizes are asked for as the batches come, so the first
    batch is not kept waiting for the sizes of the whole mailbox.

    A round starts small (FIRST_BATCH, then twice as many each time): the first mail
    of a burst is committed, and the desk can begin on it, while the rest is still
    being fetched and read, rather than after a whole batch of it."""
    i, count = 0, min(FIRST_BATCH, batch_size)
    while i < len(uids):
        group = uids[i:i + count]
        i, count = i + count, min(2 * count, batch_size)
        sizes = session.sizes(group)
        batch: list[int] = []
        total = 0
        for uid in group:
            size = sizes.get(uid, 0)
            if batch and total + size > MAX_BATCH_BYTES:
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += size
        if batch:
            yield batch
