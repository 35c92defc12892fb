"""What a command does before it opens the database: each is to answer in about a
tenth of a second as a process (docs/operations.md), of which Python's start and the
imports are most."""

from __future__ import annotations

import sys
import types


def _isclass(obj: object) -> bool:
    return isinstance(obj, type)  # inspect.isclass, word for word


def load_peewee(url: str) -> None:
    """peewee imports the PostgreSQL driver whenever it is installed, which is a fifth
    of a command's start (about 20 ms); a command on SQLite does without it. A command
    on PostgreSQL loads the driver without Python's `ssl` (10 ms more): psycopg2
    imports `ssl` only so that libpq leaves OpenSSL's thread locks to Python's setup,
    which OpenSSL 1.1 and later (all that Python 3.10 and later build with) no longer
    need, and without it psycopg2 lets libpq set up OpenSSL itself, which works with a
    later `import ssl` too (psycopg2's psycopgmodule.c, libcrypto_threads_init). TLS to
    the server is libpq's own either way. Nor does it load SQLite's driver, which peewee
    imports whatever the database (about 1.5 ms: the module and its library).

    Nor does it load `inspect` (with `ast` and `dis`, about 6 ms), of which peewee takes
    one function, `isclass`: while peewee loads, `inspect` is a module holding that
    function alone, the same one-line test.

    Only where this process has not loaded peewee yet (a test run has), and only while
    peewee loads: what is kept out stays importable for anyone else."""
    if "peewee" in sys.modules:
        return
    kept_out = [name for name in (("psycopg2", "psycopg") if url.startswith("sqlite:") else ("ssl", "sqlite3"))
                if name not in sys.modules]
    for name in kept_out:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it fails: peewee, psycopg2 go on without
    if "inspect" not in sys.modules:
        stand_in = types.ModuleType("inspect", "inspect.isclass alone, while peewee loads (ops/startup.py)")
        stand_in.isclass = _isclass  # type: ignore[attr-defined]
        sys.modules["inspect"] = stand_in
        kept_out.append("inspect")
    try:
        import peewee  # noqa: F401
    finally:
        for name in kept_out:
            sys.modules.pop(name, None)
