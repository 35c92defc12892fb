"""Writes held back on PostgreSQL, to be made by one statement for a batch of mail:
what a processed message leaves that nothing reads within its transaction, its
inbound row's outcome (status, ticket, decisions) and the articles its acknowledgement
offers, as the events are (sql.add_event). Each was a statement a message; the
server spends more on a statement than on the row it writes (bench/ingest.py: the
desk's server process 1.27 -> 1.19 CPU-seconds for 2000 mails with the outcomes alone).

They are written when the pipeline's batch (or message) is done, inside its savepoint,
so that a write that fails undoes only that (sql.flush_held); else before a
savepoint begins (so that its undoing undoes only its own) or as the transaction
commits; and they are dropped with the savepoint or transaction they were added in
(sql.write_transaction, sql.savepoint). What reads them within a transaction writes
them first (`flush`): a claim that looks whether the mail it cites is still pending
(claims._claim), and a "this solved it" click, which reads its offer (desk/kb.take)."""

from __future__ import annotations

from .connection import db, is_sqlite

# Inbound's fields, then their columns, and the types of the VALUES rows (the id first)
# where a NULL needs one
OUTCOME = ("status", "outcome", "error", "ticket", "decisions", "processed_at", "worker", "message_id", "subject",
           "from_addr")
_COLUMNS = ('"status", "outcome", "error", "ticket_id", "decisions", "processed_at", "worker", "message_id", '
            '"subject", "from_addr"')
_ROW = "(%s::integer, %s, %s, %s, %s::integer, %s, %s::timestamp, %s, %s, %s, %s)"
_SETS = ", ".join(f'{c} = "v".{c}' for c in _COLUMNS.split(", "))
CHUNK = 500  # rows to a statement

_outcomes: list[tuple] = []
_offers: list[tuple] = []


def holding() -> bool:
    """Whether writes are held back here: on PostgreSQL, in a transaction. (On SQLite a
    statement is a call in this process, and there is nothing to save.)"""
    return not is_sqlite() and db.obj.in_transaction()


def outcome(inbound) -> None:
    """Hold back a processed message's outcome (an Inbound row's OUTCOME fields);
    sql.save_outcome writes it at once where nothing is held."""
    fields = inbound._meta.fields
    _outcomes.append((inbound.id, *(fields[name].db_value(getattr(inbound, name)) for name in OUTCOME)))
    inbound._dirty.clear()


def offers(rows: list[tuple]) -> None:
    """Write kb_offer rows (ticket, article, recipient, score, when, as stored): held
    back, or at once where nothing is held."""
    if holding():
        _offers.extend(rows)
    elif rows:
        db.obj.execute_sql(*_insert_offers(rows, "?" if is_sqlite() else "%s"))


def _insert_offers(rows: list[tuple], placeholder: str) -> tuple[str, list]:
    row = f"({', '.join([placeholder] * 5)})"
    return (f'INSERT INTO "kb_offer" ("ticket_id", "article_id", "rcpt", "score", "offered_at") '
            f'VALUES {", ".join([row] * len(rows))}', [v for r in rows for v in r])


def _chunks(rows: list[tuple]):
    for i in range(0, len(rows), CHUNK):
        yield rows[i:i + CHUNK]


def flush() -> None:
    """Write what is held back, with the next statement (PostgreSQL's Pipelined.defer)."""
    outcomes, offered = list(_outcomes), list(_offers)
    _outcomes.clear()
    _offers.clear()
    for chunk in _chunks(outcomes):
        db.obj.defer(f'UPDATE "inbound" SET {_SETS} FROM (VALUES {", ".join([_ROW] * len(chunk))}) '
                     f'AS "v"("id", {_COLUMNS}) WHERE "inbound"."id" = "v"."id"', [v for row in chunk for v in row])
    for chunk in _chunks(offered):
        db.obj.defer(*_insert_offers(chunk, "%s"))


def mark() -> tuple[int, int]:
    return len(_outcomes), len(_offers)


def undo(mark: tuple[int, int]) -> None:
    """Drop what was held back since `mark` (its savepoint or transaction is undone)."""
    del _outcomes[mark[0]:], _offers[mark[1]:]
