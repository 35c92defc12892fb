"""`tickets list`, `inbound list` and `outbox list` a page at a time (`--limit`,
`--before`), and the migrations' indexes on a database that already holds tickets."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from playhouse.migrate import make_index_name
from playhouse.migrations import Runner

from tests.conftest import both_databases, scratch_database

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def _tickets(n: int) -> None:
    """`n` tickets INC-1..INC-n, one a minute; every third closed."""
    from maildesk import store

    with store.write_transaction():
        for i in range(1, n + 1):
            at = T0 + dt.timedelta(minutes=i)
            store.Ticket(subject=f"ticket {i}", requester=f"user{i % 7}@example.test",
                         status="closed" if i % 3 == 0 else "open", created_at=at, updated_at=at).save()


def _refs(desk, *args: str) -> list[str]:
    code, out, err = desk.cli("tickets", "list", "--json", *args)
    assert code == 0, err
    return [t["ref"] for t in json.loads(out)]


@both_databases
def test_tickets_list_gives_fifty_newest_then_the_page_before_a_ref(desk):
    desk.cli("status")  # opens the desk's database in this process
    _tickets(120)
    first = _refs(desk)
    assert first == [f"INC-{i}" for i in range(120, 70, -1)]
    assert _refs(desk, "--limit", "30", "--before", "INC-71") == [f"INC-{i}" for i in range(70, 40, -1)]
    assert _refs(desk, "--before", "INC-11") == [f"INC-{i}" for i in range(10, 0, -1)]
    assert _refs(desk, "--before", "[INC-1]") == []
    assert _refs(desk, "--status", "closed", "--limit", "4", "--before", "INC-100") == ["INC-99", "INC-96", "INC-93",
                                                                                          "INC-90"]
    assert _refs(desk, "--status", "open", "--limit", "2", "--before", "91") == ["INC-89", "INC-88"]


def test_tickets_list_as_a_table_names_the_next_page(desk):
    desk.cli("status")
    _tickets(7)
    code, out, err = desk.cli("tickets", "list", "--limit", "3")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["INC-7", "INC-6", "INC-5"]
    assert out.splitlines()[-1] == "(older tickets: maildesk tickets list --limit 3 --before INC-5)"
    code, out, err = desk.cli("tickets", "list", "--status", "closed", "--limit", "1")
    assert out.splitlines()[-1] == "(older tickets: maildesk tickets list --status closed --limit 1 --before INC-6)"
    code, out, err = desk.cli("tickets", "list", "--before", "INC-2")
    assert code == 0 and "INC-1" in out and "older tickets" not in out  # the last page says no more
    code, out, err = desk.cli("tickets", "list", "--before", "INC-1")
    assert (code, out.strip()) == (0, "no older tickets")


def _mail_rows(n: int) -> None:
    """`n` inbound rows, every other one quarantined, and an outbox row for each."""
    from maildesk import store

    with store.write_transaction():
        for i in range(1, n + 1):
            ib = store.Inbound.create(sha256=f"{i:064x}", message_id=f"m{i}@example.test", received_at=T0,
                                      status="quarantined" if i % 2 else "processed", from_addr=f"u{i}@example.test")
            store.Outbox.create(kind="ack", rcpt=f"u{i}@example.test", message_id=f"o{i}@example.test",
                                created_at=T0, next_attempt_at=T0, inbound=ib)


@both_databases
def test_inbound_and_outbox_lists_show_everything_unless_asked_for_a_page(desk):
    desk.cli("status")
    _mail_rows(9)

    def ids(*args: str) -> list[int]:
        code, out, err = desk.cli(*args, "--json")
        assert code == 0, err
        return [row["id"] for row in json.loads(out)]

    inbound = ids("inbound", "list")
    assert len(inbound) == 9 and inbound == sorted(inbound, reverse=True)
    assert ids("inbound", "list", "--limit", "4") == inbound[:4]
    assert ids("inbound", "list", "--limit", "4", "--before", str(inbound[3])) == inbound[4:8]
    failed = ids("inbound", "list", "--failed")
    assert len(failed) == 5
    assert ids("inbound", "list", "--failed", "--limit", "2", "--before", str(failed[0])) == failed[1:3]
    outbox = ids("outbox", "list")
    assert len(outbox) == 9 and ids("outbox", "list", "--before", str(outbox[6])) == outbox[7:]
    code, out, err = desk.cli("outbox", "list", "--limit", "5")
    assert code == 0, err
    assert out.splitlines()[-1] == f"(older: maildesk outbox list --limit 5 --before {outbox[4]})"
    code, out, err = desk.cli("inbound", "list", "--failed", "--limit", "5")
    assert code == 0 and "(older" not in out  # five quarantined of nine: no older page
    code, out, err = desk.cli("outbox", "list", "--limit", "0")
    assert code == 2 and out == "" and err.startswith("maildesk: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [("--limit", "0"), ("--limit", "ten"), ("--limit", "-5"), ("--before", "KB-3"),
                                  ("--before", "INC-x")])
def test_tickets_list_refuses_a_bad_page_in_one_sentence(desk, args):
    code, out, err = desk.cli("tickets", "list", *args)
    assert code == 2 and out == "" and err.startswith("maildesk: ") and len(err.strip().splitlines()) == 1


# --- migration 0008 ----------------------------------------------------------------------


def _indexes(db) -> set[str]:
    from maildesk import store

    if store.is_sqlite():
        return {name for (name,) in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return {name for (name,) in db.execute_sql("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_this_releases_migrations_index_a_database_that_already_holds_tickets(backend, tmp_path):
    from maildesk import store

    with scratch_database(backend, tmp_path / "old.db") as url:
        db = store.open_database(url)
        Runner(db, str(store.MIGRATIONS)).up(target="0006_sla_mark_holder")  # a desk of before this release
        assert "ticket_status_id" not in _indexes(db)
        _tickets(30)
        applied = store.migrate()
        assert applied == ["0007_scale_out", "0008_big_database", "0009_lz4", "0010_fewer_indexes", "0011_stored_copy",
                           "0012_deadline_indexes"]
        have = _indexes(db)
        assert not {"participant_ticket_id", "event_ticket_id", "inbound_server_done_mailbox",
                    "ticket_requester_status"} & have  # 0010: covered by others
        # every index the models declare exists, with the name the migrations gave it
        for model in store.MODELS:
            for columns, _unique in model._meta.indexes:
                names = [model._meta.fields[c].column_name for c in columns]
                # (0001 named some after the model, as peewee did then: slamark_..., kbversion_...)
                assert {make_index_name(model._meta.table_name, names),
                        make_index_name(model.__name__.lower(), names)} & have, (model.__name__, columns)
        assert store.scalar('SELECT COUNT(*) FROM "ticket"') == 30
        assert store.pending_migrations() == []
        if backend == "postgresql":  # 0009: the raw mail compressed with lz4 (this server has it)
            assert store.scalar("SELECT attcompression FROM pg_attribute WHERE attrelid = 'inbound_raw'::regclass "
                                "AND attname = 'data'") == "l"
            # 0011: the stored-copy look-up of a claim (store/claims.py, claim_message)
            assert store.scalar("SELECT provolatile FROM pg_proc WHERE proname = 'md_stored_copy'") == "v"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_next_deadlines_are_read_from_their_partial_indexes_not_from_every_running_ticket(backend, tmp_path):
    """ops/status.py writes the WHERE of migration 0012's indexes word for word: a database
    uses a partial index only then. Its statuses are the running ones of the vocabulary."""
    from maildesk import store
    from maildesk.ops.status import RUNNING, deadlines_sql
    from maildesk.vocab import ACTIVE, Status

    assert RUNNING == '"status" IN (' + ", ".join(f"'{s}'" for s in ACTIVE if s != Status.ON_HOLD) + ")"
    with scratch_database(backend, tmp_path / "plan.db") as url:
        store.open_database(url)
        store.migrate()
        if backend == "postgresql":
            store.execute("SET enable_seqscan = off")  # an empty table: the plan a big one gets
            plan = "\n".join(row[0] for row in store.execute("EXPLAIN " + deadlines_sql(False), (5, 5)).fetchall())
        else:  # told which index; an error ("no query solution") if its WHERE is not the query's
            plan = "\n".join(row[-1] for row in store.execute("EXPLAIN QUERY PLAN " + deadlines_sql(True), (5, 5)))
        assert "ticket_response_due_running" in plan and "ticket_resolution_due_running" in plan, plan
