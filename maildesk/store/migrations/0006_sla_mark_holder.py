"""sla_mark.group and sla_mark.assignee: who held the ticket when a mark fired, so that a
hierarchical escalation goes to the manager of the group that missed the target, and
the report charges the technician who held it."""
from peewee import CharField
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(migrator.add_column("sla_mark", "group", CharField(null=True)),
            migrator.add_column("sla_mark", "assignee", CharField(null=True)))
