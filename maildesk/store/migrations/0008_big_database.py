"""A big database costs nothing (issue 15): the indexes that keep every look-up of the
mail's path, and the operator's commands, independent of how many tickets the desk holds.

- ticket (created_at): the report's week; (status, id): a page of `tickets list --status`,
  newest first; (requester, status): a requester's open tickets (#status); (assignee,
  status): each technician's load when assigning;
- inbound (server_done, mailbox, uidvalidity, uid): recording what was flagged on the IMAP
  server, and finding what is not yet, among the rows not yet flagged only;
- outbox (created_at): the desk-wide hourly cap of automatic mail;
- survey (requester, sent_at): when the requester was last asked.

Timestamps alone are indexed only where the look-up asks for a short recent range
(the last hour, one week), never "before now", which every old row matches.

Numbered 0008 after another branch's 0007; the runner applies by number whatever is
not yet recorded, so either may land first."""
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(migrator.add_index("ticket", ("created_at",), False),
            migrator.add_index("ticket", ("status", "id"), False),
            migrator.add_index("ticket", ("requester", "status"), False),
            migrator.add_index("ticket", ("assignee", "status"), False),
            migrator.add_index("inbound", ("server_done", "mailbox", "uidvalidity", "uid"), False),
            migrator.add_index("outbox", ("created_at",), False),
            migrator.add_index("survey", ("requester", "sent_at"), False))


def down(migrator, db):
    migrate(*(migrator.drop_index(table, name) for table, name in (
        ("ticket", "ticket_created_at"), ("ticket", "ticket_status_id"), ("ticket", "ticket_requester_status"),
        ("ticket", "ticket_assignee_status"), ("inbound", "inbound_server_done_mailbox_uidvalidity_uid"),
        ("outbox", "outbox_created_at"), ("survey", "survey_requester_sent_at"))))
