"""The database helpers the pipeline leans on: events written once per transaction,
writes whose result nobody reads sent with the next statement (PostgreSQL),
and undone with the savepoint or transaction they were added in; rows inserted
that way with ids drawn in advance; the hot path's statements prepared once."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import both_databases

pytestmark = both_databases

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(desk):
    from maildesk import store

    store.open_database(desk.db_url)
    with store.write_transaction():
        ticket = store.Ticket.create(subject="s", requester="r@example.org", status="new",
                                      created_at=NOW, updated_at=NOW)
    return store, ticket


def _kinds(store, ticket) -> list[str]:
    return [e.kind for e in store.Event.select().where(store.Event.ticket == ticket).order_by(store.Event.id)]


def test_events_are_written_when_their_transaction_commits_in_the_order_added(db):
    store, ticket = db
    with store.write_transaction():
        for kind in ("a", "b", "c"):
            store.add_event(ticket, NOW, "desk", kind, "detail")
    assert _kinds(store, ticket) == ["a", "b", "c"]


def test_a_failed_savepoint_takes_its_events_along_and_keeps_the_others(db):
    store, ticket = db
    with store.write_transaction():
        store.add_event(ticket, NOW, "desk", "kept", "")
        with pytest.raises(RuntimeError):
            with store.savepoint():
                store.add_event(ticket, NOW, "desk", "undone", "")
                raise RuntimeError("a failing message")
        store.add_event(ticket.id, NOW, "desk", "kept too", "")
    assert _kinds(store, ticket) == ["kept", "kept too"]


def test_a_failed_transaction_writes_none_of_its_events(db):
    store, ticket = db
    with pytest.raises(RuntimeError):
        with store.write_transaction():
            store.add_event(ticket, NOW, "desk", "undone", "")
            raise RuntimeError("a database error, say")
    with store.write_transaction():
        pass
    assert _kinds(store, ticket) == []


def test_a_failed_savepoint_takes_along_the_events_it_added_after_a_flush_within_it(db):
    """Events flushed within a savepoint are undone by the database with it; those added
    after the flush are still waiting, and must be dropped too, not left to the commit."""
    store, ticket = db
    with store.write_transaction():
        store.add_event(ticket, NOW, "desk", "kept", "")  # an earlier message's, written before the savepoint
        with pytest.raises(RuntimeError):
            with store.savepoint():
                store.add_event(ticket, NOW, "desk", "flushed", "")
                store.flush_events()  # resolution.py does, before it reads the history
                store.add_event(ticket, NOW, "desk", "after the flush", "")
                raise RuntimeError("a failing message")
    assert _kinds(store, ticket) == ["kept"]


def test_an_event_outside_a_transaction_is_written_at_once(db):
    store, ticket = db
    store.add_event(ticket, NOW, "desk", "now", "")
    assert _kinds(store, ticket) == ["now"]


# --- writes whose result nobody reads (store.write): on PostgreSQL they go with the next statement


def _participants(store, ticket) -> list[str]:
    return [p.email for p in store.Participant.select().where(store.Participant.ticket == ticket)
            .order_by(store.Participant.email)]


def _add(store, ticket, email: str) -> None:
    store.write('INSERT INTO "participant" ("ticket_id", "email", "role") VALUES (?, ?, ?)', (ticket.id, email, "cc"))


def test_a_write_is_seen_by_the_next_statement_and_committed_with_the_transaction(db):
    store, ticket = db
    with store.write_transaction():
        _add(store, ticket, "a@example.org")
        assert _participants(store, ticket) == ["a@example.org"]  # the read went with it, after it
        _add(store, ticket, "b@example.org")  # nothing else follows: it goes with the COMMIT
    assert _participants(store, ticket) == ["a@example.org", "b@example.org"]


def test_a_write_outside_a_transaction_is_made_at_once(db):
    store, ticket = db
    _add(store, ticket, "now@example.org")
    store.db.obj.close()  # a write still waiting would go with the connection
    store.db.obj.connect()
    assert _participants(store, ticket) == ["now@example.org"]


def test_a_failing_write_fails_its_own_savepoint_only_and_a_rolled_back_one_is_never_sent(db):
    from peewee import IntegrityError

    store, ticket = db
    with store.write_transaction():
        _add(store, ticket, "kept@example.org")
        with pytest.raises(IntegrityError):
            with store.savepoint():  # a message whose write breaks a constraint
                _add(store, ticket, "kept@example.org")
                store.scalar('SELECT COUNT(*) FROM "ticket"')  # raised here on PostgreSQL, at the write on SQLite
        with pytest.raises(RuntimeError):
            with store.savepoint():  # a message that fails after a write: the write is undone, or never made
                _add(store, ticket, "undone@example.org")
                store.add_event(ticket, NOW, "desk", "undone", "")
                raise RuntimeError("a failing message")
        with pytest.raises((RuntimeError, IntegrityError)):
            with store.savepoint():  # a write that would fail, then a failure of another kind: it is dropped
                _add(store, ticket, "kept@example.org")
                raise RuntimeError("a failing message")
        _add(store, ticket, "kept too@example.org")
        store.add_event(ticket, NOW, "desk", "kept", "")
    assert _participants(store, ticket) == ["kept too@example.org", "kept@example.org"]
    assert _kinds(store, ticket) == ["kept"]


def test_a_rolled_back_transaction_sends_none_of_its_writes(db):
    store, ticket = db
    with pytest.raises(RuntimeError):
        with store.write_transaction():
            _add(store, ticket, "undone@example.org")
            raise RuntimeError("a database error, say")
    with store.write_transaction():
        store.scalar('SELECT 1')  # a write left waiting would go with this
    assert _participants(store, ticket) == []


# --- the outcomes of processed mail, written together (PostgreSQL) ----------------------


def _inbound(store, n: int):
    return store.Inbound.create(sha256=f"digest-{n}", message_id=f"in{n}@example.org", received_at=NOW)


def _three_pending(store) -> list:
    with store.write_transaction():
        return [_inbound(store, n) for n in range(3)]


def _processed(inbound, ticket, n: int):
    inbound.status, inbound.outcome, inbound.ticket = "processed", "new-ticket", ticket
    inbound.decisions, inbound.processed_at, inbound.worker = f"decision {n}", NOW, "host:1"
    inbound.subject = f"Subject {n}"
    return inbound


def _outcomes(store) -> list[tuple]:
    return [(i.status, i.outcome, i.ticket_id, i.decisions, i.processed_at, i.worker, i.subject, i.message_id)
            for i in store.Inbound.select().order_by(store.Inbound.id)]


def test_the_outcomes_of_a_transactions_mail_are_written_by_one_statement_when_it_commits(db, monkeypatch):
    store, ticket = db
    rows = _three_pending(store)
    updates: list[str] = []
    if not store.is_sqlite():
        defer = type(store.db.obj).defer
        monkeypatch.setattr(type(store.db.obj), "defer", lambda self, sql, *a, **k: (
            updates.append(sql) if sql.startswith('UPDATE "inbound"') else None, defer(self, sql, *a, **k))[1])
    with store.write_transaction():
        for n, row in enumerate(rows):
            store.save_outcome(_processed(row, ticket, n))
        if not store.is_sqlite():
            assert store.scalar('SELECT COUNT(*) FROM "inbound" WHERE "status" = ?', ("pending",)) == 3  # not yet
    assert _outcomes(store) == [("processed", "new-ticket", ticket.id, f"decision {n}", NOW, "host:1", f"Subject {n}",
                                 f"in{n}@example.org") for n in range(3)]
    assert len(updates) == (0 if store.is_sqlite() else 1)


def test_a_failed_savepoint_takes_its_mails_outcome_along_and_keeps_the_others(db):
    store, ticket = db
    rows = _three_pending(store)
    with store.write_transaction():
        store.save_outcome(_processed(rows[0], ticket, 0))
        with pytest.raises(RuntimeError):
            with store.savepoint():
                store.save_outcome(_processed(rows[1], ticket, 1))
                raise RuntimeError("a failing message")
        store.save_outcome(_processed(rows[2], ticket, 2))
    assert [status for status, *_ in _outcomes(store)] == ["processed", "pending", "processed"]
    with pytest.raises(RuntimeError):
        with store.write_transaction():
            store.save_outcome(_processed(rows[1], ticket, 1))
            raise RuntimeError("a database error, say")
    with store.write_transaction():
        store.scalar('SELECT 1')  # an outcome left waiting would go with this
    assert [status for status, *_ in _outcomes(store)] == ["processed", "pending", "processed"]


def test_a_failed_savepoint_takes_along_the_outcome_it_saved_after_a_claim_wrote_the_earlier_ones(db):
    store, ticket = db
    rows = _three_pending(store)
    with store.write_transaction():
        store.save_outcome(_processed(rows[0], ticket, 0))
        with pytest.raises(RuntimeError):
            with store.savepoint():  # a message that claims at its turn (outcomes written), then fails
                store.heldback.flush()
                store.save_outcome(_processed(rows[1], ticket, 1))
                raise RuntimeError("a failing message")
    assert [status for status, *_ in _outcomes(store)] == ["processed", "pending", "pending"]
    # (rows[0]'s outcome, saved before the savepoint, is written before it: a claim's flush
    # within it would otherwise have sent it inside, and the rollback undone it)


def test_the_articles_offered_in_a_batch_are_written_by_one_statement_and_a_click_in_it_finds_its_offer(db, desk):
    """Offers are held back like outcomes (store/heldback.py); a "this solved it" click
    in the same transaction (one cannot come sooner, but nothing may depend on that)
    writes them before it reads its offer."""
    from maildesk.config import parse_config
    from maildesk.desk import kb
    from maildesk.desk.kbsearch import Match
    from maildesk.service.runtime import Runtime

    store, ticket = db
    rt = Runtime.start(parse_config(desk.config))
    with store.write_transaction():
        articles = [store.KbArticle.create(title=f"Fix {n}", text="Restart it.", created_at=NOW, updated_at=NOW)
                    for n in range(2)]
        other = store.Ticket.create(subject="s", requester="r@example.org", status="new", created_at=NOW,
                                    updated_at=NOW)
    matches = [Match("article", a.id, a.title, a.text, None, 0.9, ("fix",), 1, 1.0) for a in articles]
    with store.write_transaction():
        kb.offers(rt, ticket, matches, "r@example.org", NOW)
        kb.offers(rt, other, matches[:1], "r@example.org", NOW)
        if not store.is_sqlite():
            assert store.KbOffer.select().count() == 0  # held back
    assert sorted((o.ticket_id, o.article_id) for o in store.KbOffer.select()) == sorted(
        [(ticket.id, a.id) for a in articles][:rt.cfg.kb.suggest_in_ack] + [(other.id, articles[0].id)])
    with store.write_transaction():
        third = store.Ticket.create(subject="s", requester="r@example.org", status="open", created_at=NOW,
                                    updated_at=NOW)
        kb.offers(rt, third, matches[:1], "r@example.org", NOW)
        assert kb.take(rt, third, articles[0].id, "r@example.org", NOW).id == articles[0].id


def test_a_claim_that_looks_whether_the_mail_it_cites_is_pending_sees_an_outcome_saved_before_it(db):
    store, ticket = db
    with store.write_transaction():
        cited, reply = _inbound(store, 0), _inbound(store, 1)
    with store.write_transaction():
        store.save_outcome(_processed(cited, ticket, 0))
        got, _ = store.claims.claim_message("in1@example.org", ["in0@example.org"], "r@example.org", reply.id)
    assert got  # the mail it answers was processed, not pending before it: no waiting


# --- rows inserted with the next statement, their ids drawn in advance (PostgreSQL)


def _message(store, ticket, n: int):
    return store.Message.create(ticket=ticket, direction="in", message_id=f"m{n}@example.org", created_at=NOW)


def test_messages_inserted_in_a_transaction_have_their_ids_at_once_and_are_seen_by_the_next_statement(db):
    store, ticket = db
    with store.write_transaction():
        made = [_message(store, ticket, n) for n in range(10)]
        assert all(m.id is not None for m in made)
        assert len({m.id for m in made}) == 10
        assert [m.id for m in made] == sorted(m.id for m in made)  # in the order made
        found = store.Message.select(store.Message.id).where(store.Message.ticket == ticket).order_by(store.Message.id)
        assert [m.id for m in found] == [m.id for m in made]
    with store.write_transaction():
        one = _message(store, ticket, 10)
    with store.write_transaction():
        two = _message(store, ticket, 11)
    assert two.id == one.id + 1  # a transaction of one row wastes no id


def test_a_transaction_that_expects_a_batch_of_rows_draws_their_ids_in_one_round_trip_a_table(db, monkeypatch):
    store, ticket = db
    if store.is_sqlite():
        pytest.skip("SQLite gives a row its id as it inserts it")
    sent = _sent(store, monkeypatch)
    with store.write_transaction():
        store.expect_rows(40)
        made = [_message(store, ticket, n) for n in range(40)]
        assert len([s for s in sent if "nextval" in s]) == 1
        made.append(_message(store, ticket, 40))  # one more than it expected: drawn again
        assert len([s for s in sent if "nextval" in s]) == 2
    assert len({m.id for m in made}) == 41 and [m.id for m in made] == sorted(m.id for m in made)
    sent.clear()
    with store.write_transaction():  # the next transaction expects nothing: one, then 2, 4, ...
        one = _message(store, ticket, 41)
    assert len([s for s in sent if "nextval" in s]) == 1
    with store.write_transaction():
        two = _message(store, ticket, 42)
    assert two.id == one.id + 1


def test_a_message_undone_with_its_savepoint_is_never_written(db):
    store, ticket = db
    with store.write_transaction():
        with pytest.raises(RuntimeError):
            with store.savepoint():
                _message(store, ticket, 1)
                raise RuntimeError("a failing message")
        _message(store, ticket, 2)
    assert [m.message_id for m in store.Message.select().where(store.Message.ticket == ticket)] == ["m2@example.org"]


# --- prepared statements (PostgreSQL): the hot path's statements are parsed and planned once


def _sent(store, monkeypatch) -> list[str]:
    """The SQL texts sent to the server from now on."""
    from peewee import PostgresqlDatabase

    sent: list[str] = []
    original = PostgresqlDatabase.execute_sql

    def spy(self, sql, params=None, *args, **kwargs):
        sent.append(sql)
        return original(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(PostgresqlDatabase, "execute_sql", spy)
    return sent


def test_a_hot_statement_is_prepared_the_second_time_and_then_only_executed(db, monkeypatch):
    store, ticket = db
    if store.is_sqlite():
        pytest.skip("SQLite keeps its own statement cache")
    sent = _sent(store, monkeypatch)
    for _ in range(4):
        assert store.Ticket.get_by_id(ticket.id).subject == "s"
    assert [s.split()[0] for s in sent] == ["SELECT", "PREPARE", "EXECUTE", "EXECUTE"]
    store.db.obj.close()  # a new connection knows none of them
    store.db.obj.connect()
    sent.clear()
    for _ in range(3):
        assert store.Ticket.get_by_id(ticket.id).subject == "s"
    assert [s.split()[0] for s in sent] == ["SELECT", "PREPARE", "EXECUTE"]


def test_a_prepared_statement_outlives_a_rollback_and_one_prepared_by_a_failing_query_is_never_named_again(db, monkeypatch):
    from peewee import IntegrityError

    store, ticket = db
    if store.is_sqlite():
        pytest.skip("SQLite keeps its own statement cache")
    with pytest.raises(RuntimeError):
        with store.write_transaction():
            for _ in range(2):  # prepared in a transaction that is undone
                store.Ticket.get_by_id(ticket.id)
            raise RuntimeError("undone")
    assert store.Ticket.get_by_id(ticket.id).subject == "s"  # EXECUTE of it, after the rollback
    with store.write_transaction():
        _add(store, ticket, "dup@example.org")
    with store.write_transaction():
        with pytest.raises(IntegrityError):
            with store.savepoint():  # the write that fails goes with the PREPARE of a statement seen a second time
                store.Ticket.get_by_id(ticket.id)
                _add(store, ticket, "dup@example.org")
                store.Ticket.get_by_id(ticket.id)
        assert store.Ticket.get_by_id(ticket.id).subject == "s"
        assert store.Ticket.get_by_id(ticket.id).subject == "s"


# --- SQLite: the WAL checkpointed by a thread of the desk process, not by its commits


def test_the_desks_commits_leave_the_wal_to_a_checkpoint_thread_that_stops_for_a_fork_and_starts_again(db):
    import multiprocessing
    import os

    from maildesk.store import connection

    store, ticket = db
    if not store.is_sqlite():
        pytest.skip("PostgreSQL checkpoints on its own")
    store.checkpoint_in_background()
    try:
        assert store.scalar("PRAGMA wal_autocheckpoint") == connection.Checkpointer.FALLBACK
        with store.write_transaction():
            for n in range(300):
                _add(store, ticket, f"p{n}@example.org")
        assert os.path.getsize(store.db.obj.database + "-wal") > 0  # the commit left it there
        checkpointer = connection._checkpointer[0]

        def child():
            store.open_database(f"sqlite:///{store.db.obj.database}")  # a connection of its own, as a mail process's
            os._exit(0 if store.scalar('SELECT COUNT(*) FROM "participant"') == 300 else 1)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        assert checkpointer.thread is not None and checkpointer.thread.is_alive()  # again, after the fork
        process.join(30)
        assert process.exitcode == 0
    finally:
        store.stop_checkpointing()
    assert connection._checkpointer == []


def test_a_sqlite_commit_is_on_disk_when_it_returns_not_at_the_next_checkpoint(db):
    """Mail is flagged on the IMAP server after its commit (guarantee 1): that commit
    must survive a power cut, so the WAL is synced at each commit (connection.py)."""
    store, _ = db
    if not store.is_sqlite():
        pytest.skip("a PostgreSQL commit is synced by the server (synchronous_commit)")
    assert store.scalar("PRAGMA journal_mode") == "wal"
    assert store.scalar("PRAGMA synchronous") == 2  # FULL


def test_a_postgresql_url_reaches_libpq_as_written_with_its_escapes_and_parameters(db):
    from urllib.parse import urlsplit

    import psycopg2.extensions

    store, _ = db
    if store.is_sqlite():
        pytest.skip("a PostgreSQL URL")
    name = store.scalar("SELECT current_database()")
    server = urlsplit(store.db.obj.connect_params["dsn"])
    escaped = "".join(f"%{b:02X}" for b in name.encode())  # every letter of the name escaped
    store.open_database(f"postgresql://{server.username}:p%40ss%2Fword@{server.hostname}:{server.port}/{escaped}"
                        "?connect_timeout=7")
    assert store.scalar("SELECT current_database()") == name
    target = psycopg2.extensions.parse_dsn(store.db.obj.connect_params["dsn"])
    assert (target["password"], target["connect_timeout"]) == ("p@ss/word", "7")  # trust auth: not checked here


def test_a_postgresql_session_of_the_desk_compiles_no_statement_with_jit(db):
    """The batch claim on a million tickets was estimated dear enough for JIT, which
    then spent half a second compiling a statement that ran in 20 ms (connection._PG_SESSION)."""
    store, _ = db
    if store.is_sqlite():
        pytest.skip("PostgreSQL's JIT")
    assert store.scalar("SHOW jit") == "off"
    assert store.scalar("SHOW lock_timeout") == "10s"
