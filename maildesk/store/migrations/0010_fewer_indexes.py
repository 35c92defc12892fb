"""Fewer indexes to keep up on every write (issue 15: a big database costs nothing).

Each index is one more page to change, log and write back per row; on a big database
that page is seldom the one changed just before. These four are not needed:

- participant (ticket_id), event (ticket_id), inbound (server_done, mailbox): each is
  the first column(s) of another index of its table, which answers the same look-ups
  (participant (ticket_id, email), event (ticket_id, kind), inbound (server_done,
  mailbox, uidvalidity, uid));
- ticket (requester, status), for a requester's open tickets (#status): ticket
  (requester, created_at) finds a requester's tickets as well, and is kept for the
  per-sender count of new tickets; (requester, status) moved with every status change."""

DROPPED = ("participant_ticket_id", "event_ticket_id", "inbound_server_done_mailbox", "ticket_requester_status")


def up(migrator, db):
    for name in DROPPED:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


def down(migrator, db):
    for sql in ('CREATE INDEX IF NOT EXISTS "participant_ticket_id" ON "participant" ("ticket_id")',
                'CREATE INDEX IF NOT EXISTS "event_ticket_id" ON "event" ("ticket_id")',
                'CREATE INDEX IF NOT EXISTS "inbound_server_done_mailbox" ON "inbound" ("server_done", "mailbox")',
                'CREATE INDEX IF NOT EXISTS "ticket_requester_status" ON "ticket" ("requester", "status")'):
        db.execute_sql(sql)
