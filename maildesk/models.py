"""The database: peewee models, the connection, and migrations.

One `DatabaseProxy` is bound at start-up by `open_database(url)`; SQLite runs in
WAL mode with `synchronous=NORMAL`, PostgreSQL from a `postgresql://` URL runs the
same code. The schema is created and changed only by the numbered scripts in
`maildesk/migrations/` (`migrate()`), never by `create_tables` at run time.

Times are stored as UTC and handed back as aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from peewee import (
    SQL,
    AutoField,
    BlobField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    Field,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    SqliteDatabase,
    TextField,
)
from playhouse.db_url import connect as url_connect

log = logging.getLogger(__name__)

db = DatabaseProxy()
MIGRATIONS = Path(__file__).parent / "migrations"

UTC = dt.timezone.utc


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class UtcDateTimeField(Field):
    """An aware datetime, stored as naive UTC text (SQLite) or timestamp (PostgreSQL)."""

    field_type = "DATETIME"

    def db_value(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if is_sqlite():  # text that sorts in time order
            return value.isoformat(sep=" ", timespec="microseconds")
        return value

    def python_value(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Ticket(BaseModel):
    id = AutoField()
    subject = TextField()
    requester = CharField()  # address, lower case
    requester_name = TextField(default="")
    status = CharField(default="new")
    category = CharField(null=True)
    impact = CharField(default="medium")
    urgency = CharField(default="medium")
    priority = CharField(default="medium")
    priority_set = BooleanField(default=False)  # set by #priority: the matrix no longer applies
    group = CharField(null=True)
    assignee = CharField(null=True)
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()
    # SLA (sla.py keeps these consistent)
    sla_policy = CharField(null=True)
    response_due = UtcDateTimeField(null=True)
    resolution_due = UtcDateTimeField(null=True)
    first_response_at = UtcDateTimeField(null=True)
    paused_at = UtcDateTimeField(null=True)
    paused_minutes = FloatField(default=0)
    sla_next_at = UtcDateTimeField(null=True)  # the next reminder or breach; null when none pending
    # resolution and closure
    resolved_at = UtcDateTimeField(null=True)
    closed_at = UtcDateTimeField(null=True)
    closure_code = CharField(null=True)
    resolution = TextField(null=True)
    reopen_count = IntegerField(default=0)
    escalation_count = IntegerField(default=0)
    # major incidents
    is_major = BooleanField(default=False)
    parent = ForeignKeyField("self", null=True, backref="children", on_delete="SET NULL")
    follows = ForeignKeyField("self", null=True, backref="followers", on_delete="SET NULL")
    # threading of the requester's conversation: their first Message-ID
    thread_root = TextField(null=True)

    class Meta:
        indexes = ((("sla_next_at",), False), (("status", "created_at"), False))

    def ref(self, prefix: str) -> str:
        return f"{prefix}-{self.id}"


class Participant(BaseModel):
    """Who may reach a ticket by its subject tag: requester, Cc'd people, staff."""

    ticket = ForeignKeyField(Ticket, backref="participants", on_delete="CASCADE")
    email = CharField()
    role = CharField()  # requester | cc | staff

    class Meta:
        indexes = ((("ticket", "email"), True),)


class Inbound(BaseModel):
    """A fetched message, raw and durable, with what became of it."""

    id = AutoField()
    mailbox = CharField(default="INBOX")
    uidvalidity = IntegerField(null=True)
    uid = IntegerField(null=True)
    sha256 = CharField(unique=True)
    raw = BlobField(null=True)
    size = IntegerField(default=0)
    message_id = TextField(null=True, index=True)
    from_addr = TextField(default="")
    subject = TextField(default="")
    received_at = UtcDateTimeField()
    status = CharField(default="pending", index=True)  # pending | processed | quarantined
    outcome = CharField(null=True)  # new-ticket | reply | automatic | bounce | duplicate | ...
    error = TextField(null=True)
    ticket = ForeignKeyField(Ticket, null=True, backref="inbound", on_delete="SET NULL")
    decisions = TextField(default="")  # the `maildesk why` log, one line per decision
    processed_at = UtcDateTimeField(null=True)
    server_done = BooleanField(default=False)  # flagged \Seen or moved on the IMAP server

    class Meta:
        indexes = ((("server_done", "mailbox"), False),)


class Message(BaseModel):
    """One mail of a ticket's conversation, in or out, or an internal note."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, backref="messages", on_delete="CASCADE")
    inbound = ForeignKeyField(Inbound, null=True, backref="messages", on_delete="SET NULL")
    direction = CharField()  # in | out
    message_id = TextField(null=True, index=True)
    from_addr = TextField(default="")
    from_name = TextField(default="")
    to = TextField(default="")
    cc = TextField(default="")
    subject = TextField(default="")
    body = TextField(default="")
    html = TextField(null=True)  # sanitized
    internal = BooleanField(default=False)
    kind = CharField(default="mail")  # mail | reply | note | automatic | bounce | resolution | ...
    created_at = UtcDateTimeField()


class Attachment(BaseModel):
    message = ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    filename = TextField()
    content_type = CharField()
    size = IntegerField()
    sha256 = CharField(index=True)


class Blob(BaseModel):
    """Attachment contents when `attachments.store = "database"`."""

    sha256 = CharField(primary_key=True)
    data = BlobField()


class Event(BaseModel):
    """The history of a ticket: every change, with who did it and when."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, backref="events", on_delete="CASCADE")
    at = UtcDateTimeField()
    actor = CharField()
    kind = CharField()
    detail = TextField(default="")
    inbound = ForeignKeyField(Inbound, null=True, backref="events", on_delete="SET NULL")

    class Meta:
        indexes = ((("ticket", "kind"), False),)


class Task(BaseModel):
    ticket = ForeignKeyField(Ticket, backref="tasks", on_delete="CASCADE")
    number = IntegerField()
    title = TextField()
    assignee = CharField(null=True)
    done = BooleanField(default=False)
    created_at = UtcDateTimeField()
    done_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("ticket", "number"), True),)


class Outbox(BaseModel):
    """One outgoing mail to one recipient, rendered and signed when queued."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, null=True, backref="outbox", on_delete="SET NULL")
    kind = CharField()  # the template: ack, assigned, relay, reminder, ...
    automatic = BooleanField(default=False)  # counted against the automatic-reply limits
    rcpt = CharField(index=True)
    envelope_from = TextField()
    message_id = TextField(index=True)
    subject = TextField(default="")
    raw = BlobField()
    status = CharField(default="queued")  # queued | deferred | sent | failed | suppressed | bounced
    attempts = IntegerField(default=0)
    next_attempt_at = UtcDateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)
    inbound = ForeignKeyField(Inbound, null=True, backref="outbox", on_delete="SET NULL")

    class Meta:
        indexes = (
            (("status", "next_attempt_at"), False),
            (("rcpt", "created_at"), False),
        )


class MailboxState(BaseModel):
    """The fetch checkpoint of one IMAP mailbox."""

    mailbox = CharField(primary_key=True)
    uidvalidity = IntegerField(null=True)
    last_uid = IntegerField(default=0)
    last_success_at = UtcDateTimeField(null=True)
    stall_alerted = BooleanField(default=False)


class Setting(BaseModel):
    """Small durable state: the generated secret, round-robin pointers, alert flags."""

    key = CharField(primary_key=True)
    value = TextField()


class StaffState(BaseModel):
    email = CharField(primary_key=True)
    away_until = UtcDateTimeField(null=True)  # from their own out-of-office reply
    last_assigned_at = UtcDateTimeField(null=True)


class SlaMark(BaseModel):
    """A reminder or escalation that fired: the unique key makes it fire once."""

    ticket = ForeignKeyField(Ticket, backref="sla_marks", on_delete="CASCADE")
    target = CharField()  # response | resolution
    level = CharField()  # warn | breach | level2
    fired_at = UtcDateTimeField()

    class Meta:
        indexes = ((("ticket", "target", "level"), True),)


class Survey(BaseModel):
    ticket = ForeignKeyField(Ticket, backref="surveys", on_delete="CASCADE", unique=True)
    requester = CharField(index=True)
    sent_at = UtcDateTimeField()
    rating = IntegerField(null=True)
    comment = TextField(null=True)
    answered_at = UtcDateTimeField(null=True)


class Suppression(BaseModel):
    """An address the desk must not write to: it bounced, or it complained."""

    email = CharField(primary_key=True)
    reason = CharField()  # bounce | complaint
    detail = TextField(default="")
    until = UtcDateTimeField()
    created_at = UtcDateTimeField()
    outbox = ForeignKeyField(Outbox, null=True, on_delete="SET NULL")


MODELS = (
    Ticket, Participant, Inbound, Message, Attachment, Blob, Event, Task, Outbox,
    MailboxState, Setting, StaffState, SlaMark, Survey, Suppression,
)


# --- connection --------------------------------------------------------------------


class DatabaseUnavailable(Exception):
    pass


def open_database(url: str):
    """Bind the proxy to the database at `url` and return it."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        database = SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": 30000,
                "cache_size": -32000,
            },
            timeout=30,
        )
    else:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        database = url_connect(url, autorollback=False)
        if not isinstance(database, PostgresqlDatabase):
            raise DatabaseUnavailable(f"database.url: unsupported database {url.split(':', 1)[0]}")
    db.initialize(database)
    try:
        database.connect(reuse_if_open=True)
    except Exception as e:  # the driver's own error type varies
        raise DatabaseUnavailable(f"cannot open the database at {redact(url)}: {e}".strip()) from e
    return database


def redact(url: str) -> str:
    """A URL for logs: the password replaced."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def is_sqlite() -> bool:
    return isinstance(db.obj, SqliteDatabase)


def write_transaction():
    """Begin a write transaction. On SQLite, IMMEDIATE: a deferred transaction that
    reads then writes fails at once if another writer committed in between."""
    if is_sqlite():
        return db.obj.atomic("IMMEDIATE")
    return db.obj.atomic()


def migrate() -> list[str]:
    """Create or bring the schema up to date; returns the names applied."""
    from playhouse.migrations import Runner

    return Runner(db.obj, str(MIGRATIONS)).up()


def pending_migrations() -> list[str]:
    from playhouse.migrations import Runner

    return [m.name for m in Runner(db.obj, str(MIGRATIONS)).status() if not m.applied and m.path]


# --- small durable settings -------------------------------------------------------


def get_setting(key: str, default: str | None = None) -> str | None:
    row = Setting.get_or_none(Setting.key == key)
    return row.value if row else default


def put_setting(key: str, value: str) -> None:
    Setting.insert(key=key, value=value).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: value}
    ).execute()
