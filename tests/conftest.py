"""Fixtures: one real Dovecot and one aiosmtpd sink per test process; each test gets
a fresh IMAP user (its own mailbox), a fresh database and a config file.

    def test_something(desk):
        desk.deliver(mail("jane@example.org", "Printer down", "It is broken."))
        desk.run()                      # maildesk run --once, in this process
        assert desk.tickets()[0]["subject"] == "Printer down"
        assert desk.sent(kind="ack")

`desk` runs on SQLite; `@both_databases` runs a test on PostgreSQL too (a fresh
database per test on the server of MAILDESK_TEST_POSTGRES, by default the local
one; skipped when there is none).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
import tomli_w

from tests.sandbox import Dovecot, SmtpSink

ROOT = Path(__file__).resolve().parent.parent
DESK = "helpdesk@example.test"
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


def mail(
    frm: str,
    subject: str,
    body: str = "Hello,\nsomething is broken.\n",
    *,
    to: str = DESK,
    cc: str | None = None,
    msgid: str | None = None,
    in_reply_to: str | None = None,
    references: str | list | None = None,
    headers: dict | None = None,
    html: str | None = None,
    date=None,
) -> bytes:
    """An RFC 5322 message as a mail client would write it."""
    m = EmailMessage()
    m["From"] = frm
    m["To"] = to
    if cc:
        m["Cc"] = cc
    m["Subject"] = subject
    m["Message-ID"] = msgid if msgid is not None else make_msgid(domain="client.example")
    m["Date"] = format_datetime(date) if date else "Fri, 27 Nov 2026 10:00:00 +0100"
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to if in_reply_to.startswith("<") else f"<{in_reply_to}>"
    if references:
        refs = references if isinstance(references, list) else [references]
        m["References"] = " ".join(r if r.startswith("<") else f"<{r}>" for r in refs)
    for k, v in (headers or {}).items():
        m[k] = v
    if html is not None and body is None:
        m.set_content(html, subtype="html")
    else:
        m.set_content(body)
        if html is not None:
            m.add_alternative(html, subtype="html")
    return m.as_bytes()


def reply_to(captured, frm: str, body: str, *, subject: str | None = None, headers: dict | None = None, quote=True) -> bytes:
    """A reply to a mail the desk sent, with the quoted history a client adds."""
    original = captured.text
    text = body
    if quote:
        text += "\n\nOn Fri, 27 Nov 2026 at 10:05, Example IT Service Desk <helpdesk@example.test> wrote:\n"
        text += "".join("> " + line + "\n" for line in original.splitlines())
    refs = (captured.header("References") or "").split() + [captured.header("Message-ID")]
    return mail(frm, subject or f"Re: {captured.subject}", text, in_reply_to=captured.header("Message-ID"),
                references=[r for r in refs if r], headers=headers)


@pytest.fixture(scope="session")
def dovecot():
    with Dovecot() as server:
        yield server


@pytest.fixture(scope="session")
def smtp():
    with SmtpSink() as sink:
        yield sink


def base_config(tmp: Path, dovecot, smtp, user: str, db_url: str) -> dict:
    return {
        "desk": {"name": "Example IT Service Desk", "address": DESK, "timezone": "Europe/Berlin",
                 "state_dir": str(tmp / "state")},
        "database": {"url": db_url},
        "imap": {"host": dovecot.host, "port": dovecot.port, "security": "none", "username": user,
                 "password": "secret", "poll_seconds": 1},
        "smtp": {"host": smtp.host, "port": smtp.port, "security": "none", "retry_first": "1m"},
        "groups": [
            {"name": "service-desk", "tier": 1, "escalates_to": "network", "manager": "lead@example.test"},
            {"name": "network", "tier": 2, "manager": "netlead@example.test"},
        ],
        "technicians": [
            {"email": "alice@example.test", "name": "Alice", "groups": ["service-desk"]},
            {"email": "bob@example.test", "name": "Bob", "groups": ["service-desk"]},
            {"email": "carol@example.test", "name": "Carol", "groups": ["network"]},
        ],
        "roles": {"incident_managers": ["im@example.test"]},
        "categories": [
            {"name": "Network", "keywords": ["network", "wifi"], "group": "network"},
            {"name": "Network/VPN", "keywords": ["vpn"]},
            {"name": "Hardware", "keywords": ["printer", "laptop"], "group": "service-desk"},
        ],
        "priority": {
            "vip": ["ceo@example.test"],
            "impact_keywords": {"high": ["everyone", "all users", "outage"], "medium": ["our team"]},
            "urgency_keywords": {"high": ["urgent", "down", "cannot work"], "low": ["when you can"]},
        },
        "security": {"trust_sender_address": True, "secret": "test-secret"},
        "business_hours": {"holidays_country": "DE"},
    }


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


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
        code, out, err = self.cli("tickets", "list", "--json", *(["--status", status] if status else []))
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


@pytest.fixture
def desk(request, tmp_path, dovecot, smtp):
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        conn, name, url = _pg_database()
    else:
        url = f"sqlite:///{tmp_path / 'state' / 'maildesk.db'}"
    d = Desk(tmp_path, dovecot, smtp, url)
    code, out, err = d.cli("init")
    assert code == 0, err
    yield d
    from maildesk import store

    if store.db.obj is not None:
        store.db.obj.close()
    if backend == "postgresql":
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()
