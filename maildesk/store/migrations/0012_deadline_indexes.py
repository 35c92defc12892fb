"""The next SLA deadlines of `maildesk status` (ops/status.py, next_deadlines), read from
two partial indexes instead of every running ticket (issue 15: every command under
100 ms on a big database).

Each holds only the tickets whose clock runs (new, open, in progress: on-hold pauses
it) and whose target is still ahead of them: a response not given yet, a resolution
not reached yet. A few thousand rows at a million tickets, in the order of their due
time; `status` reads the first five of each. Reading the running tickets themselves
instead touched a page of the table for each (about a thousand pages, 5 ms on
PostgreSQL in the fresh server process each command gets).

A database uses a partial index only for a query whose WHERE holds the index's own
WHERE: ops/status.py writes the same terms, and tests/test_paging.py reads the plan."""

RUNNING = "\"status\" IN ('new', 'open', 'in-progress')"  # vocab.ACTIVE less on-hold, as of this migration
INDEXES = {
    "ticket_response_due_running": ("response_due", f'{RUNNING} AND "first_response_at" IS NULL AND "response_due" IS NOT NULL'),
    "ticket_resolution_due_running": ("resolution_due", f'{RUNNING} AND "resolution_due" IS NOT NULL'),
}


def up(migrator, db):
    for name, (column, where) in INDEXES.items():
        db.execute_sql(f'CREATE INDEX IF NOT EXISTS "{name}" ON "ticket" ("{column}") WHERE {where}')


def down(migrator, db):
    for name in INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
