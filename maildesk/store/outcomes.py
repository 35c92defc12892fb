"""The outcomes of processed mail (each inbound row's status, ticket and decisions),
written on PostgreSQL in one UPDATE for a transaction's messages, as the events are
(sql.add_event): an UPDATE a message was a fifth of the statements the server ran for
ingest, and the server spends more on a statement than on the row it changes
(bench/ingest.py: the desk's server process 1.27 -> 1.19 CPU-seconds for 2000 mails).

They are written when the pipeline's batch (or message) is done, inside its savepoint,
so that a write that fails undoes only that; else before a savepoint begins (so that
its undoing undoes only its own) or as the transaction commits; and they are dropped
with the savepoint or transaction they were added in (sql.write_transaction,
sql.savepoint). Nothing reads
these columns within the transaction but a claim that looks whether the mail it cites
is still pending before it (claims._claim), which writes them first (`flush`)."""

from __future__ import annotations

from .connection import db

# Inbound's fields, then their columns, and the types of the VALUES rows (the id first)
# where a NULL needs one
FIELDS = ("status", "outcome", "error", "ticket", "decisions", "processed_at", "worker", "message_id", "subject",
          "from_addr")
_COLUMNS = ('"status", "outcome", "error", "ticket_id", "decisions", "processed_at", "worker", "message_id", '
            '"subject", "from_addr"')
_ROW = "(%s::integer, %s, %s, %s, %s::integer, %s, %s::timestamp, %s, %s, %s, %s)"
_SETS = ", ".join(f'{c} = "v".{c}' for c in _COLUMNS.split(", "))
CHUNK = 500  # rows to a statement

_rows: list[tuple] = []


def add(inbound) -> None:
    """Keep a processed message's outcome (an Inbound row's FIELDS) for `flush`."""
    fields = inbound._meta.fields
    _rows.append((inbound.id, *(fields[name].db_value(getattr(inbound, name)) for name in FIELDS)))
    inbound._dirty.clear()


def flush() -> None:
    """Write the outcomes kept so far, with the next statement (PostgreSQL's
    Pipelined.defer)."""
    if not _rows:
        return
    rows, _rows[:] = list(_rows), []
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i:i + CHUNK]
        db.obj.defer(f'UPDATE "inbound" SET {_SETS} FROM (VALUES {", ".join([_ROW] * len(chunk))}) '
                     f'AS "v"("id", {_COLUMNS}) WHERE "inbound"."id" = "v"."id"', [v for row in chunk for v in row])


def mark() -> int:
    return len(_rows)


def undo(mark: int) -> None:
    """Drop what was kept since `mark` (its savepoint or transaction is undone)."""
    del _rows[mark:]
