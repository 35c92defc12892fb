"""The benchmarks' own helpers, where a mistake would make a figure wrong rather than
fail: bench/prefill.py's kept SQLite files (how their indexes were made) and the copy
each run takes of one."""

from __future__ import annotations

import sqlite3


def _mark_and_tickets(path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0], conn.execute('SELECT COUNT(*) FROM "ticket"').fetchone()[0]
    finally:
        conn.close()


def test_a_kept_prefill_file_says_how_its_indexes_were_made_and_is_filled_again_when_asked_the_other_way(tmp_path):
    from bench import prefill

    path = tmp_path / "kept.db"
    assert prefill.ensure("sqlite", 120, str(path), requesters=10) == str(path)
    assert _mark_and_tickets(path) == (prefill.GROWN, 120)
    prefill.ensure("sqlite", 120, str(path), requesters=10, indexes_after=True)
    assert _mark_and_tickets(path) == (prefill.PACKED, 120)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")  # a file of the fill before the mark: filled again
    conn.close()
    prefill.ensure("sqlite", 120, str(path), requesters=10)
    assert _mark_and_tickets(path) == (prefill.GROWN, 120)


def test_a_runs_copy_of_the_kept_file_holds_the_same_database(tmp_path):
    from bench import prefill

    kept, copy = tmp_path / "kept.db", tmp_path / "run.db"
    prefill.ensure("sqlite", 60, str(kept), requesters=5)
    prefill.copy_sqlite(str(kept), copy)
    assert _mark_and_tickets(copy) == _mark_and_tickets(kept) == (prefill.GROWN, 60)
