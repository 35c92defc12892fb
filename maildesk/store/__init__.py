"""The database: the schema, the connection and its transactions, the hot-path SQL,
and the migrations. Everything above reads and writes through the names below:

    from maildesk import store
    store.open_database(cfg.database.url); store.migrate()
    with store.write_transaction():
        ticket = store.Ticket.get_by_id(42)
        store.add_event(ticket, now, "desk", "status", "open -> resolved")

`connection` binds the one `DatabaseProxy`; `sql` holds the statements whose text is
built once (peewee builds SQL anew on every call); `heldback` what a batch's mail
leaves that nothing reads in it, written together (PostgreSQL); `schema` the tables;
`attachments` the contents of attachments, stored once by hash.
"""

from . import claims, heldback, workers
from .claims import Busy
from .connection import (
    MIGRATIONS,
    UTC,
    DatabaseUnavailable,
    UtcDateTimeField,
    checkpoint_in_background,
    db,
    is_sqlite,
    migrate,
    open_database,
    pending_migrations,
    redact,
    stop_checkpointing,
    utcnow,
)
from .schema import (
    MODELS,
    Attachment,
    BaseModel,
    Blob,
    Event,
    Inbound,
    InboundRaw,
    KbArticle,
    KbOffer,
    KbTerm,
    KbVersion,
    Lease,
    MailboxState,
    Message,
    Outbox,
    Participant,
    Setting,
    SlaMark,
    StaffState,
    Suppression,
    Survey,
    Task,
    Ticket,
    TicketTerm,
    Worker,
)
from .sql import (
    add_event,
    execute,
    expect_rows,
    fetch_row,
    flush_events,
    flush_held,
    get_setting,
    insert,
    put_setting,
    read_ahead,
    save_changes,
    save_outcome,
    savepoint,
    scalar,
    write,
    write_transaction,
)

__all__ = [
    "Busy", "claims", "heldback", "workers",
    "MIGRATIONS", "UTC", "DatabaseUnavailable", "UtcDateTimeField", "checkpoint_in_background", "db", "is_sqlite",
    "migrate", "open_database",
    "pending_migrations", "redact", "stop_checkpointing", "utcnow",
    "MODELS", "Attachment", "BaseModel", "Blob", "Event", "Inbound", "InboundRaw", "MailboxState", "Message", "Outbox",
    "Participant", "Setting", "SlaMark", "StaffState", "Suppression", "Survey", "Task", "Ticket",
    "KbArticle", "KbOffer", "KbTerm", "KbVersion", "TicketTerm", "Worker", "Lease",
    "add_event", "execute", "expect_rows", "fetch_row", "flush_events", "flush_held", "get_setting", "insert",
    "put_setting", "read_ahead", "save_changes", "save_outcome", "savepoint", "scalar", "write", "write_transaction",
]
