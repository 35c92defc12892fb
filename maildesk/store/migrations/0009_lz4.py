"""PostgreSQL: the large columns (the raw mail, the fetch process's summary of it,
message bodies, an outbox row's context) compressed with lz4 rather than the default
pglz, where the server was built with it: storing a fetched batch of a hundred mails
took 23 ms of the server's time with pglz and 13 with lz4 (bench/ingest.py). Values
already stored stay as they are; SQLite has nothing to change."""
from peewee import PostgresqlDatabase

COLUMNS = (("inbound_raw", "data"), ("inbound_raw", "summary"), ("message", "body"), ("message", "html"),
           ("outbox", "context"))


def up(migrator, db):
    if not isinstance(db, PostgresqlDatabase):
        return
    row = db.execute_sql("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'").fetchone()
    if not (row and row[0]):
        return
    for table, column in COLUMNS:
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION lz4')


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        for table, column in COLUMNS:
            db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION pglz')
