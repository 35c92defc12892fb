"""Fixtures: one real Dovecot and one aiosmtpd sink per test process; each test gets
a fresh IMAP user (its own mailbox), a fresh database and a config file.

    from tests.builders import mail

    def test_something(desk):
        desk.deliver(mail("jane@example.org", "Printer down", "It is broken."))
        desk.run()                      # maildesk run --once, in this process
        assert desk.tickets()[0]["subject"] == "Printer down"
        assert desk.sent(to="jane@example.org")

`desk` runs on SQLite; `@both_databases` runs a test on PostgreSQL too (a fresh
database per test on the server of MAILDESK_TEST_POSTGRES, by default the local
one; skipped when there is none). `MAILDESK_TEST_DATABASE=postgresql` (`make
test-postgresql`) runs every other `desk` test on PostgreSQL as well; a test about
SQLite itself says so (`only_sqlite`). `runtime` is the desk without servers, for the
unit tests of its rules: a migrated SQLite store in a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

# peewee with its PostgreSQL driver: were a command on SQLite run in this process first,
# it would load peewee without it (ops.startup.load_peewee), for every later test too
import peewee  # noqa: F401
import pytest
import tomli_w

# mail, reply_to and merge lived here before tests/builders.py: new tests import them from there
from tests.builders import DESK, desk_config, mail, merge, reply_to  # noqa: F401
from tests.sandbox import Dovecot, SmtpSink

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("MAILDESK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def find_corpus() -> Path:
    """The real-world corpus: $MAILDESK_CORPUS, else ../shared/corpus beside this
    checkout, else the workplace's shared folder. Tests that need it skip without it."""
    for candidate in (os.environ.get("MAILDESK_CORPUS"), ROOT.parent / "shared" / "corpus", "/work/shared/corpus"):
        if candidate and (Path(candidate) / "manifest.csv").exists():
            return Path(candidate)
    return ROOT.parent / "shared" / "corpus"


CORPUS = find_corpus()

both_databases = pytest.mark.parametrize("desk", ["sqlite", "postgresql"], indirect=True)
only_sqlite = pytest.mark.parametrize("desk", ["sqlite"], indirect=True)
DEFAULT_DATABASE = os.environ.get("MAILDESK_TEST_DATABASE", "sqlite")


@pytest.fixture(scope="session")
def dovecot():
    with Dovecot() as server:
        yield server


@pytest.fixture(scope="session")
def smtp():
    with SmtpSink() as sink:
        yield sink


def base_config(tmp: Path, dovecot, smtp, user: str, db_url: str) -> dict:
    return desk_config(state_dir=tmp / "state", db_url=db_url,
                       imap={"host": dovecot.host, "port": dovecot.port, "security": "none", "username": user,
                             "password": "secret", "poll_seconds": 1},
                       smtp={"host": smtp.host, "port": smtp.port, "security": "none", "retry_first": "1m"})


class Desk:
    """One test's desk: its mailbox, database and config, and ways to drive it."""

    def __init__(self, tmp: Path, dovecot: Dovecot, smtp: SmtpSink, db_url: str):
        self.tmp, self.dovecot, self.smtp, self.db_url = tmp, dovecot, smtp, db_url
        self.user = "desk" + uuid.uuid4().hex[:10]
        dovecot.add_user(self.user, "secret")
        self.config_path = tmp / "maildesk.toml"
        self.config = base_config(tmp, dovecot, smtp, self.user, db_url)
        self.write_config()
        smtp.reset()

    def write_config(self, **overrides) -> Path:
        self.config = merge(self.config, overrides)
        self.config_path.write_text(tomli_w.dumps(self.config))
        return self.config_path

    # --- driving it ---------------------------------------------------------------

    def deliver(self, raw: bytes, mailbox: str = "INBOX") -> int:
        return self.dovecot.append(self.user, raw, mailbox)

    def cli(self, *args: str) -> tuple[int, str, str]:
        """`maildesk --config ... ARGS` in this process: (status, stdout, stderr)."""
        from maildesk.ops.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(self.config_path), *args])
        return code, out.getvalue(), err.getvalue()

    def run(self, now: str | None = None, check: bool = True) -> int:
        args = ["run", "--once"] + (["--now", now] if now else [])
        code, out, err = self.cli(*args)
        if check:
            assert code == 0, f"run --once failed ({code}): {err}"
        return code

    def tickets(self, status: str | None = None) -> list[dict]:
        # every ticket: `tickets list` gives a page at a time
        code, out, err = self.cli("tickets", "list", "--json", "--limit", "1000000",
                                  *(["--status", status] if status else []))
        assert code == 0, err
        return json.loads(out)

    def ticket(self, ref: str) -> dict:
        code, out, err = self.cli("tickets", "show", ref, "--json")
        assert code == 0, err
        return json.loads(out)

    def inbound(self, failed: bool = False) -> list[dict]:
        code, out, err = self.cli("inbound", "list", "--json", *(["--failed"] if failed else []))
        assert code == 0, err
        return json.loads(out)

    def outbox(self) -> list[dict]:
        code, out, err = self.cli("outbox", "list", "--json")
        assert code == 0, err
        return json.loads(out)

    def sent(self, to: str | None = None, subject_has: str | None = None) -> list:
        return [m for m in list(self.smtp.messages)
                if (to is None or to in m.rcpts) and (subject_has is None or subject_has in (m.subject or ""))]

    def imap_messages(self, mailbox: str = "INBOX"):
        return self.dovecot.fetch_all(self.user, mailbox)

    # --- the daemon as a process --------------------------------------------------

    def spawn(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "maildesk", "--config", str(self.config_path), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(env), cwd=str(ROOT))


    def spawn_ready(self, *args: str, timeout: float = 30.0) -> subprocess.Popen:
        """`spawn`, returned once the daemon has told systemd READY=1: its signal handlers
        are in place then, however long a busy machine took to start it."""
        path = str(self.tmp / f"notify-{uuid.uuid4().hex[:8]}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(timeout)
        proc = self.spawn(*args, env={"NOTIFY_SOCKET": path})
        try:
            while "READY=1" not in sock.recv(4096).decode():
                pass
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"the daemon sent no READY=1 within {timeout}s: {proc.communicate()[1].decode()}") from None
        finally:
            sock.close()  # later notifications go nowhere; the daemon ignores that, as sd_notify does
        return proc


def child_env(env: dict | None = None) -> dict:
    """The environment of a maildesk process a test starts: ours, with this checkout first
    on PYTHONPATH and `env` on top. A PYTHONPATH we were given is kept: `make test-future`
    puts its sitecustomize there, and the desk processes need it as much as pytest does."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **(env or {}))


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _pg_database():
    import psycopg2

    try:
        conn = psycopg2.connect(PG_URL, connect_timeout=3)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL at {PG_URL}: {e}".strip())
    conn.autocommit = True
    name = "md_" + uuid.uuid4().hex[:12]
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    base = PG_URL.rsplit("/", 1)[0]
    return conn, name, f"{base}/{name}"


@contextlib.contextmanager
def scratch_database(backend: str, sqlite_file: Path):
    """A database of one test's own, its URL: a new PostgreSQL database, or the SQLite
    file `sqlite_file`. Afterwards, even when the test failed, the store's connection is
    closed and the PostgreSQL database dropped."""
    conn = name = None
    if backend == "postgresql":
        conn, name, url = _pg_database()
    else:
        url = f"sqlite:///{sqlite_file}"
    try:
        yield url
    finally:
        from maildesk import store

        if store.db.obj is not None:
            store.db.obj.close()
        if conn is not None:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.close()


@pytest.fixture
def desk(request, tmp_path, dovecot, smtp):
    with scratch_database(getattr(request, "param", DEFAULT_DATABASE), tmp_path / "state" / "maildesk.db") as url:
        d = Desk(tmp_path, dovecot, smtp, url)  # the database goes even when the setup fails
        code, out, err = d.cli("init")
        assert code == 0, err
        yield d


@pytest.fixture
def runtime(tmp_path):
    """`runtime(**config)`: the test desk's `Runtime` (tests.builders.desk_config with
    `config` laid over it) on a fresh, migrated SQLite store in tmp_path, no servers."""
    from maildesk import store
    from maildesk.config import parse_config
    from maildesk.service.runtime import Runtime

    def start(**config) -> Runtime:
        data = merge(desk_config(state_dir=tmp_path / "state", db_url=f"sqlite:///{tmp_path / 'unit.db'}"), config)
        cfg = parse_config(data)
        store.open_database(cfg.database.url)
        store.migrate()
        return Runtime.start(cfg)

    yield start
    if store.db.obj is not None:
        store.db.obj.close()
