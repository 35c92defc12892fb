"""PostgreSQL: md_stored_copy(message_id, sender), the ticket on which an incoming mail
of that Message-ID from that sender is stored, read with a snapshot of its own.

A desk process claims a message (store/claims.py, claim_message) with a transaction
advisory lock on its Message-ID and looks for an earlier copy in the same statement,
one round trip. A statement reads with the snapshot taken when it began, and the lock
may be granted later within it: when the process that held it has just committed the
other copy and let go. Read in that old snapshot, the copy it stored is not there, and
the second copy would open a ticket of its own. A VOLATILE function's query takes a
snapshot of its own, at the moment it runs (READ COMMITTED), which is after the lock.
SQLite has one desk process and needs none of this."""
from peewee import PostgresqlDatabase

FUNCTION = '''CREATE OR REPLACE FUNCTION "md_stored_copy"(mid text, sender text) RETURNS integer
LANGUAGE sql VOLATILE AS $$
  SELECT "ticket_id" FROM "message" WHERE "message_id" = mid AND "direction" = 'in' AND "from_addr" = sender LIMIT 1
$$'''


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql(FUNCTION)


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql('DROP FUNCTION IF EXISTS "md_stored_copy"(text, text)')
