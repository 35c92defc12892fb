"""What a command does before it opens the database: each is to answer in about a
tenth of a second as a process (docs/operations.md), of which Python's start and the
imports are most."""

from __future__ import annotations

import sys


def load_peewee(url: str) -> None:
    """peewee imports the PostgreSQL driver whenever it is installed, which is a fifth
    of a command's start (about 20 ms); a command on SQLite does without it. Only
    where this process has not loaded peewee yet (a test run has), and only while
    peewee loads: the driver stays importable for anyone else."""
    if not url.startswith("sqlite:") or "peewee" in sys.modules:
        return
    drivers = [name for name in ("psycopg2", "psycopg") if name not in sys.modules]
    for name in drivers:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it fails: peewee goes on without
    try:
        import peewee  # noqa: F401
    finally:
        for name in drivers:
            sys.modules.pop(name, None)
