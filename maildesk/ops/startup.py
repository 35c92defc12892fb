"""What a command does before it opens the database: each is to answer in about a
tenth of a second as a process (docs/operations.md), of which Python's start and the
imports are most."""

from __future__ import annotations

import importlib
import sys
import types


def _isclass(obj: object) -> bool:
    return isinstance(obj, type)  # inspect.isclass, word for word


class _OnFirstUse(types.ModuleType):
    """Stands in for a module in peewee's namespace, and imports the real one the first
    time peewee asks it for anything (module `__getattr__`: only for what it lacks)."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):  # the import system's probes (`__path__` of a `from ... import`)
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:  # asked while peewee still loads
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


# What peewee imports and uses only in code a command seldom runs (TimestampField,
# IPField, naming a constraint): about 5 ms of every command's start (OpenSSL's hashes
# alone 2.5). Not uuid and decimal: psycopg2 loads them as peewee loads.
ON_FIRST_USE = ("hashlib", "calendar", "socket")


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
    one function, `isclass`: while peewee loads, `inspect` is a stand-in that holds that
    function, the same one-line test, and imports the real module when anything else is
    asked of it. And the modules of ON_FIRST_USE are, in peewee's namespace, stand-ins
    that import each when peewee first uses it. psycopg 3, where it is installed too, is
    kept out on PostgreSQL as well: peewee imports it whenever it can (and it asks
    `inspect` for more as it loads), but maildesk talks through psycopg2.

    Only where this process has not loaded peewee yet (a test run has), and only while
    peewee loads: what is kept out stays importable for anyone else."""
    if "peewee" in sys.modules:
        return
    placed: dict[str, types.ModuleType | None] = {}  # what stands where a module would be, while peewee loads
    for name in ("psycopg2", "psycopg") if url.startswith("sqlite:") else ("ssl", "sqlite3", "psycopg"):
        placed[name] = None  # an import of it fails: peewee, psycopg2 go on without
    inspect = _OnFirstUse("inspect", "inspect.isclass, and the real module for anything else (ops/startup.py)")
    inspect.isclass = _isclass  # type: ignore[attr-defined]
    placed["inspect"] = inspect
    for name in ON_FIRST_USE:
        placed[name] = _OnFirstUse(name)
    placed = {name: module for name, module in placed.items() if name not in sys.modules}
    sys.modules.update(placed)  # type: ignore[arg-type]
    try:
        import peewee  # noqa: F401
    finally:
        for name, module in placed.items():
            if name in sys.modules and sys.modules[name] is module:  # not the real one, imported meanwhile
                del sys.modules[name]
