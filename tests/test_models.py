"""The database helpers the pipeline leans on: events written once per transaction,
and undone with the savepoint or transaction they were added in."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import both_databases

pytestmark = both_databases

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def db(desk):
    from maildesk import models

    models.open_database(desk.db_url)
    with models.write_transaction():
        ticket = models.Ticket.create(subject="s", requester="r@example.org", status="new",
                                      created_at=NOW, updated_at=NOW)
    return models, ticket


def _kinds(models, ticket) -> list[str]:
    return [e.kind for e in models.Event.select().where(models.Event.ticket == ticket).order_by(models.Event.id)]


def test_events_are_written_when_their_transaction_commits_in_the_order_added(db):
    models, ticket = db
    with models.write_transaction():
        for kind in ("a", "b", "c"):
            models.add_event(ticket, NOW, "desk", kind, "detail")
    assert _kinds(models, ticket) == ["a", "b", "c"]


def test_a_failed_savepoint_takes_its_events_along_and_keeps_the_others(db):
    models, ticket = db
    with models.write_transaction():
        models.add_event(ticket, NOW, "desk", "kept", "")
        with pytest.raises(RuntimeError):
            with models.savepoint():
                models.add_event(ticket, NOW, "desk", "undone", "")
                raise RuntimeError("a failing message")
        models.add_event(ticket.id, NOW, "desk", "kept too", "")
    assert _kinds(models, ticket) == ["kept", "kept too"]


def test_a_failed_transaction_writes_none_of_its_events(db):
    models, ticket = db
    with pytest.raises(RuntimeError):
        with models.write_transaction():
            models.add_event(ticket, NOW, "desk", "undone", "")
            raise RuntimeError("a database error, say")
    with models.write_transaction():
        pass
    assert _kinds(models, ticket) == []


def test_an_event_outside_a_transaction_is_written_at_once(db):
    models, ticket = db
    models.add_event(ticket, NOW, "desk", "now", "")
    assert _kinds(models, ticket) == ["now"]
