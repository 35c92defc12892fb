"""Scale-out: each ticket remembers the mailbox it came in by, each inbound row the
desk process that processed it, each outbox row the send process that claimed it;
the worker and lease tables of several desk processes on one PostgreSQL database."""
from peewee import *
from playhouse.migrate import migrate

from maildesk.models import UtcDateTimeField


def up(migrator, db):
    migrate(migrator.add_column("ticket", "mailbox", CharField(null=True)),
            migrator.add_column("inbound", "worker", CharField(null=True)),
            migrator.add_column("outbox", "claimed_by", BigIntegerField(null=True)))

    class Worker(Model):
        id = CharField(primary_key=True)
        host = CharField()
        pid = IntegerField()
        started_at = UtcDateTimeField()
        heartbeat_at = UtcDateTimeField()
        stopped_at = UtcDateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'worker'

    class Lease(Model):
        name = CharField(primary_key=True)
        worker = CharField()
        since = UtcDateTimeField()
        class Meta:
            database = db
            table_name = 'lease'
    db.create_tables([Worker, Lease])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('lease'))
    migrator.migrate(migrator.drop_table('worker'))
    migrate(migrator.drop_column("outbox", "claimed_by"), migrator.drop_column("inbound", "worker"),
            migrator.drop_column("ticket", "mailbox"))
