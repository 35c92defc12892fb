"""The schema: one peewee model per table. Writes go through the statements of
`store.sql` (`insert`, `save_changes`), whose text is built once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from peewee import (
    AutoField,
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    Field,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from .connection import UtcDateTimeField, db
from .sql import fetch_row, insert, save_changes

if TYPE_CHECKING:
    from peewee import DoesNotExist, ModelSelect


class BaseModel(Model):
    """Writes go through statements whose text is built once (`insert`,
    `save_changes` below): peewee's own save builds the SQL anew on every call."""

    class Meta:
        database = db
        legacy_table_names = False

    # read by get_by_id in a PostgreSQL transaction: locked for it (sql.fetch_row)
    LOCKED_IN_TRANSACTION: ClassVar[bool] = False
    # inserted in a PostgreSQL transaction with the next statement, its id drawn in
    # advance (sql.insert): nothing reads such a row back at once
    DEFERRED_INSERT: ClassVar[bool] = False
    # read by get_by_id on PostgreSQL with the row, in the same round trip (sql.fetch_row):
    # (SQL of one more column, the attribute it is kept in as a frozenset)
    FETCHED_WITH: ClassVar[tuple[str, str] | None] = None

    if TYPE_CHECKING:  # what peewee's metaclass gives every model, unknown to its stubs
        DoesNotExist: ClassVar[type[DoesNotExist]]
        _pk: Any
        _dirty: set[str]

    def save(self, force_insert=False, only=None):
        pk_field = cast(Field, self._meta.primary_key)  # never False: every table here has a primary key
        if force_insert or self._pk is None:
            values = {k: v for k, v in self.__data__.items() if not (k == pk_field.name and v is None)}
            new = insert(type(self), **values)
            if isinstance(pk_field, AutoField):
                self._pk = new
            self._dirty.clear()
            return 1
        names = [f.name if isinstance(f, Field) else f for f in only] if only else None
        save_changes(self, names)
        return 1

    @classmethod
    def get_by_id(cls, pk) -> Self:
        row = fetch_row(cls, pk)
        if row is None:
            raise cls.DoesNotExist(f"{cls.__name__} {pk} does not exist")
        return row

    @classmethod
    def get_or_none_by_id(cls, pk) -> Self | None:
        return fetch_row(cls, pk)


class Ticket(BaseModel):
    LOCKED_IN_TRANSACTION = True  # several desk processes: one changes a ticket at a time
    # what a reply asks next (lifecycle.is_participant): the addresses taking part when it was read
    FETCHED_WITH = ('ARRAY(SELECT "email" FROM "participant" WHERE "ticket_id" = "ticket"."id")', "participants_read")

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
    # the standing of the mail that opened it (mailout/queue.py LANES, or "staff"): the
    # per-sender cap on new tickets counts each apart (limits.new_tickets_per_sender_per_hour)
    opened_lane = CharField(null=True)
    # the [[mailboxes]] name it came in by: its mail goes out From that mailbox's address
    mailbox = CharField(null=True)

    # the fields mail templates see (render.snapshot)
    SNAPSHOT = ("id", "subject", "requester", "requester_name", "status", "category", "impact", "urgency",
                "priority", "group", "assignee", "created_at", "sla_policy", "response_due", "resolution_due",
                "first_response_at", "resolved_at", "closed_at", "closure_code", "resolution", "is_major",
                "reopen_count", "parent")

    class Meta:
        # the last three: migration 0008 (a big database costs nothing); 0010 dropped (requester, status);
        # 0012 added two partial ones, of the running tickets by due time (ops/status.py, next_deadlines)
        indexes = ((("sla_next_at",), False), (("status", "created_at"), False), (("requester", "created_at"), False),
                   (("created_at",), False), (("status", "id"), False), (("assignee", "status"), False))

    if TYPE_CHECKING:
        # what peewee adds for the foreign keys: their raw ids, and the backrefs
        parent_id: int | None
        follows_id: int | None
        children: ModelSelect[Ticket]
        participants: ModelSelect[Participant]
        events: ModelSelect[Event]
        tasks: ModelSelect[Task]
        # kept on the object in memory, never stored: opened by the message being
        # processed (triage), and the key of the SLA marks computed for it (sla)
        is_new: bool
        marks_key: tuple

    def ref(self, prefix: str) -> str:
        return f"{prefix}-{self.id}"


class Participant(BaseModel):
    """Who may reach a ticket by its subject tag: requester, Cc'd people, staff."""

    ticket = ForeignKeyField(Ticket, backref="participants", on_delete="CASCADE", index=False)  # (ticket, email) serves
    email = CharField()
    role = CharField()  # requester | cc | staff

    class Meta:
        indexes = ((("ticket", "email"), True),)


class Inbound(BaseModel):
    """A fetched message, raw and durable, with what became of it."""

    id = AutoField()
    mailbox = CharField(default="INBOX")  # the [[mailboxes]] name (with [imap]: its folder)
    uidvalidity = IntegerField(null=True)
    uid = IntegerField(null=True)
    sha256 = CharField(unique=True)
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
    worker = CharField(null=True)  # the desk process that processed it, host:pid

    class Meta:
        indexes = ((("server_done", "mailbox", "uidvalidity", "uid"), False),)  # 0008; 0010 dropped its first two alone

    if TYPE_CHECKING:
        ticket_id: int | None


class InboundRaw(BaseModel):
    """The bytes of an inbound message, apart from the row whose status changes:
    SQLite rewrites a whole record on UPDATE, blob included."""

    inbound = ForeignKeyField(Inbound, primary_key=True, backref="raw_row", on_delete="CASCADE")
    data = BlobField()
    # what the fetch process read of it (pipeline/parse.py summarize): JSON, or null
    # when the desk process must parse the bytes itself
    summary = TextField(null=True)


class Message(BaseModel):
    """One mail of a ticket's conversation, in or out, or an internal note."""

    DEFERRED_INSERT = True

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

    SNAPSHOT = ("id", "direction", "from_addr", "from_name", "subject", "body", "internal", "kind", "created_at")


class Attachment(BaseModel):
    message = ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    filename = TextField()
    content_type = CharField()
    size = IntegerField()
    sha256 = CharField(index=True)

    if TYPE_CHECKING:
        message_id: int


class Blob(BaseModel):
    """Attachment contents when `attachments.store = "database"`."""

    sha256 = CharField(primary_key=True)
    data = BlobField()


class Event(BaseModel):
    """The history of a ticket: every change, with who did it and when."""

    id = AutoField()
    ticket = ForeignKeyField(Ticket, backref="events", on_delete="CASCADE", index=False)  # (ticket, kind) serves
    at = UtcDateTimeField()
    actor = CharField()
    kind = CharField()
    detail = TextField(default="")
    inbound = ForeignKeyField(Inbound, null=True, backref="events", on_delete="SET NULL")

    class Meta:
        indexes = ((("ticket", "kind"), False),)

    if TYPE_CHECKING:
        ticket_id: int


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
    """One outgoing mail to one recipient: signed and threaded when queued, its
    template rendered from `context` when it is sent."""

    DEFERRED_INSERT = True

    id = AutoField()
    ticket = ForeignKeyField(Ticket, null=True, backref="outbox", on_delete="SET NULL")
    kind = CharField()  # the template: ack, assigned, relay, reminder, ...
    automatic = BooleanField(default=False)  # counted against the automatic-reply limits
    rcpt = CharField()
    message_id = TextField(index=True)
    subject = TextField(default="")
    rcpt_name = TextField(default="")
    from_name = TextField(default="")  # "Alice" makes "Alice via <desk name>"
    context = TextField(default="{}")  # the template's context as JSON; rendered when sent
    status = CharField(default="queued")  # queued | deferred | sent | failed | suppressed | bounced
    attempts = IntegerField(default=0)
    next_attempt_at = UtcDateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)
    inbound = ForeignKeyField(Inbound, null=True, backref="outbox", on_delete="SET NULL")
    # the counters it counts in (mailout/queue.py LANES): the standing of the mail that caused it
    lane = CharField(null=True)
    # PostgreSQL: the lease key of the send process that claimed it (mailout.queue.claim_due)
    claimed_by = BigIntegerField(null=True)

    class Meta:
        indexes = (
            (("status", "next_attempt_at"), False),
            (("rcpt", "created_at"), False),
            (("created_at",), False),  # the desk-wide hourly cap: the last hour's rows only
        )

    def sender(self, desk_address: str) -> str:
        """Its From: the address of its ticket's mailbox (`_from` in the context, put
        there by mailout.queue when the ticket came in by another mailbox), else the
        desk's address."""
        if '"_from":' not in self.context:  # most rows: no need to read the JSON
            return desk_address
        return json.loads(self.context).get("_from") or desk_address

    if TYPE_CHECKING:
        ticket_id: int | None


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
    group = CharField(null=True)  # the ticket's group when it fired: whose manager hears of a miss
    assignee = CharField(null=True)  # who held it then: whom the report charges with a miss

    class Meta:
        indexes = ((("ticket", "target", "level"), True),)


class Survey(BaseModel):
    ticket = ForeignKeyField(Ticket, backref="surveys", on_delete="CASCADE", unique=True)
    requester = CharField(index=True)
    sent_at = UtcDateTimeField()
    rating = IntegerField(null=True)
    comment = TextField(null=True)
    answered_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("requester", "sent_at"), False),)

    if TYPE_CHECKING:
        ticket_id: int


class Suppression(BaseModel):
    """An address the desk must not write to: it bounced, or it complained."""

    email = CharField(primary_key=True)
    reason = CharField()  # bounce | complaint
    detail = TextField(default="")
    until = UtcDateTimeField()
    created_at = UtcDateTimeField()
    outbox = ForeignKeyField(Outbox, null=True, on_delete="SET NULL")


class KbArticle(BaseModel):
    """A knowledge-base article: a resolution published with `#kb` (docs/mail.md, Knowledge base).
    Its id is the article's number (KB-7); its text is searched through the full-text
    index `kb_fts` (desk/kbsearch.py), which holds the articles that are not retired."""

    id = AutoField()
    title = TextField()
    text = TextField()
    category = CharField(null=True)
    ticket = ForeignKeyField(Ticket, null=True, backref="articles", on_delete="SET NULL", index=True)
    version = IntegerField(default=1)
    if TYPE_CHECKING:
        ticket_id: int | None
    retired = BooleanField(default=False)
    retired_at = UtcDateTimeField(null=True)
    use_count = IntegerField(default=0)  # incidents its requester resolved with it ("this solved it")
    key_terms = TextField(default="")  # the stems its relevance is measured by, space-separated
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()
    created_by = CharField(default="")
    updated_by = CharField(default="")

    SNAPSHOT = ("id", "title", "text", "category", "version", "retired", "use_count", "created_at", "updated_at")


class KbVersion(BaseModel):
    """Every version of an article, the present one included."""

    article = ForeignKeyField(KbArticle, backref="versions", on_delete="CASCADE")
    version = IntegerField()
    title = TextField()
    text = TextField()
    category = CharField(null=True)
    created_at = UtcDateTimeField()
    created_by = CharField(default="")

    class Meta:
        indexes = ((("article", "version"), True),)


class KbOffer(BaseModel):
    """An article offered in a ticket's acknowledgement, and whether its one-click
    "this solved it" link was taken."""

    ticket = ForeignKeyField(Ticket, backref="kb_offers", on_delete="CASCADE")
    article = ForeignKeyField(KbArticle, backref="offers", on_delete="CASCADE", index=True)
    rcpt = CharField()
    score = FloatField(default=0)
    offered_at = UtcDateTimeField()
    taken_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("ticket", "article"), True),)


class KbTerm(BaseModel):
    """How many indexed articles hold a term (a stem, desk/kbterms.py); the term ""
    counts the articles. A look-up leaves out the words that most articles hold."""

    term = CharField(primary_key=True)
    docs = IntegerField(default=0)


class TicketTerm(BaseModel):
    """The same for the index of resolved tickets."""

    term = CharField(primary_key=True)
    docs = IntegerField(default=0)


class Worker(BaseModel):
    """A desk process (`maildesk run`), as `maildesk status` lists it: alive while its
    heartbeat is recent."""

    id = CharField(primary_key=True)  # host:pid
    host = CharField()
    pid = IntegerField()
    started_at = UtcDateTimeField()
    heartbeat_at = UtcDateTimeField()
    stopped_at = UtcDateTimeField(null=True)  # a clean stop; a killed process leaves it null


class Lease(BaseModel):
    """Who holds a lease (`mailbox:NAME`: fetching that mailbox), for `maildesk status`.
    The lease itself is a PostgreSQL advisory lock (store.leases); this row only says
    which worker took it last."""

    name = CharField(primary_key=True)
    worker = CharField()
    since = UtcDateTimeField()


MODELS = (
    Ticket, Participant, Inbound, InboundRaw, Message, Attachment, Blob, Event, Task, Outbox,
    MailboxState, Setting, StaffState, SlaMark, Survey, Suppression, KbArticle, KbVersion, KbOffer, KbTerm, TicketTerm,
    Worker, Lease,
)

