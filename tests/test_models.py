"""The database helpers the pipeline leans on: events written once per transaction,
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
