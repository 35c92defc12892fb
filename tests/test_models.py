"""The database helpers the pipeline leans on: events written once per transaction,
writes whose result nobody reads sent with the next statement (PostgreSQL),
and undone with the savepoint or transaction they were added in."""

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
