"""sla_mark.group: the ticket's group when a mark fired, so that a hierarchical
escalation goes to the manager of the group that missed the target."""
from peewee import CharField
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(migrator.add_column("sla_mark", "group", CharField(null=True)))
