"""Floods cost only the flooder (issue 12): each outgoing row keeps the lane of the mail
that caused it (staff, auth, unauth) so that the limits count each apart; each ticket
keeps the lane of the mail that opened it, and tickets are found by requester and time
for the per-sender cap on new tickets."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('outbox', 'lane', CharField(null=True)),
        migrator.add_column('ticket', 'opened_lane', CharField(null=True)),
        migrator.add_index('ticket', ('requester', 'created_at'), False),
    )

    class Outbox(Model):
        automatic = BooleanField(default=False)
        lane = CharField(null=True)
        class Meta:
            database = db
            table_name = 'outbox'
    # what was counted before counts on, as mail of unknown standing
    Outbox.update(lane='unauth').where(Outbox.automatic == True).execute()  # noqa: E712


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index('ticket', 'ticket_requester_created_at'),
        migrator.drop_column('ticket', 'opened_lane'),
        migrator.drop_column('outbox', 'lane'),
    )
