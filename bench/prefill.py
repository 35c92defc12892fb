"""A big database, as the desk itself would have written it over some years.

Fills a fresh database, made by the real migrations, with N tickets (default
1,000,000) created over four years before a fixed date, and about 3 N messages,
each with the inbound row it came in as, the participants, the events of each
ticket's history, SLA marks, surveys and the outbox rows the desk sent: realistic
Message-IDs (`<uuid@host>`), a few thousand requesters (a few of them write very
often), forty technicians in six groups; most tickets closed, a few thousand open,
in progress or on hold.

    python bench/prefill.py [--tickets 1000000] [--database sqlite|postgresql]
                            [--keep PATH|NAME]

SQLite: `--keep PATH` fills (or reuses, when it is there and holds N tickets) the
file at PATH; copy it for each run (`copy_sqlite`). PostgreSQL: `--keep NAME` fills
the database NAME on the test server once; each run makes a new database from it as a
template (`clone_postgres`). Other modules call `ensure(...)`.

The data is settled as of any later clock: every SLA mark that fell due has fired
(no ticket has a `sla_next_at`), resolved tickets are all closed (auto-close would
otherwise close them during a benchmark), and no IMAP mailbox state is written, so
that a `maildesk run --once` on it does the work of its mail and nothing else. The
full-text index of resolved tickets is built as `maildesk init` builds it (English).
The raw bytes of old inbound mail (`inbound_raw`) are not filled: they are only read
by id, for pending mail.

Fast: rows go in by `executemany` in large transactions (SQLite) or `COPY`
(PostgreSQL, psycopg2). The indexes are there as years of inserts leave them:

- SQLite: every index is there during the fill, and grows as the desk grows it, row
  by row in the order the rows were written. An index made afresh by CREATE INDEX (or
  VACUUM, or REINDEX) packs each leaf page full; every random key inserted after it (a
  Message-ID, a digest) then splits a page and rewrites its neighbours, until each leaf
  has split once. That is the state of a database just after VACUUM, not of one that
  grew for years (its leaves of random keys about 89% full, read with SQLite's dbstat);
  a file filled the other way (`--indexes after`) measures it. (Kept files record which: `PRAGMA user_version`.)
- PostgreSQL: the secondary indexes are dropped and made again after the fill, which is
  fast with COPY. CREATE INDEX leaves a tenth of each leaf free (fillfactor 90), so
  inserts do not split pages until that is used.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maildesk import store  # noqa: E402

PG_SERVER = os.environ.get("MAILDESK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
END = dt.datetime(2026, 11, 1)  # naive UTC: the last prefilled ticket is created just before it
YEARS = 4
CHUNK = 20_000  # tickets per batch of inserts
# Message-IDs and addresses of the prefill never meet the mail of bench/ingest.py
# (`@corp.example`): its hosts and domains are these.
MID_HOSTS = ["mail.gmail.com", "EUR03.prod.outlook.com", "mx.example.org", "smtp.acme-corp.example",
             "exch01.acme-corp.example", "mail.partner.example.net"]
DOMAINS = ["acme-corp.example", "acme-labs.example", "partner.example.net", "example.org"]
GROUPS = ["service-desk", "network", "workplace", "accounts", "applications", "datacenter"]
CATEGORIES = [("Hardware", "workplace"), ("Network", "network"), ("Accounts", "accounts"), ("Software", "applications"),
              ("Printing", "workplace"), ("Email", "applications"), ("Servers", "datacenter"), (None, "service-desk")]
SUBJECTS = ["Printer on floor {n} prints blank pages", "VPN disconnects every hour", "Cannot log in to my laptop",
            "Outlook keeps asking for the password", "Wifi in meeting room {n} is down", "New monitor for the team",
            "Shared drive is read-only", "Teams calls drop after {n} minutes", "Laptop fan is very loud",
            "Access to the finance share for a new colleague", "ERP module {n} stops responding",
            "Phone does not sync mail", "Badge reader at door {n} refuses my badge", "Software request: diagram tool"]
FIRST = ["anna", "ben", "chloe", "david", "eva", "felix", "greta", "hugo", "ines", "jonas", "karin", "lars", "mia",
         "nils", "olga", "paul", "rosa", "sven", "tina", "uwe", "vera", "wim", "yara", "zeno"]
LAST = ["muller", "schmidt", "dupont", "garcia", "nowak", "lee", "patel", "odegaard", "rossi", "jensen", "kowalski",
        "novak", "silva", "berg", "fischer", "weber", "meyer", "wagner"]
PRIORITY = [("low", "low", "medium"), ("medium", "medium", "medium"), ("medium", "medium", "medium"),
            ("medium", "medium", "medium"), ("high", "medium", "high"), ("high", "high", "medium"),
            ("critical", "high", "high")]  # (priority, impact, urgency)
RESPONSE_H = {"critical": 0.5, "high": 2, "medium": 8, "low": 24}
RESOLUTION_H = {"critical": 4, "high": 16, "medium": 48, "low": 120}
BODY = ("Hello,\n\n{problem} It started {when}. I restarted the computer and checked the cables.\n\n"
        "Thanks,\n{name}\n")
TECH_BODY = "Hello {name},\n\nplease try again now: I have {fix}.\n\nRegards,\n{tech}\n"
FIXES = ["restarted the print spooler", "reset your VPN profile", "unlocked your account", "cleared the saved password",
         "restarted the access point", "ordered the monitors", "re-applied the share's permissions"]


# --- the rows -----------------------------------------------------------------------------

COLUMNS = {
    "ticket": ("id", "subject", "requester", "requester_name", "status", "category", "impact", "urgency", "priority",
               "priority_set", "group", "assignee", "created_at", "updated_at", "sla_policy", "response_due",
               "resolution_due", "first_response_at", "paused_at", "paused_minutes", "sla_next_at", "resolved_at",
               "closed_at", "closure_code", "resolution", "reopen_count", "escalation_count", "is_major", "parent_id",
               "follows_id", "thread_root", "opened_lane"),
    "participant": ("id", "ticket_id", "email", "role"),
    "inbound": ("id", "mailbox", "uidvalidity", "uid", "sha256", "size", "message_id", "from_addr", "subject",
                "received_at", "status", "outcome", "error", "ticket_id", "decisions", "processed_at", "server_done"),
    "message": ("id", "ticket_id", "inbound_id", "direction", "message_id", "from_addr", "from_name", "to", "cc",
                "subject", "body", "html", "internal", "kind", "created_at"),
    "event": ("id", "ticket_id", "at", "actor", "kind", "detail", "inbound_id"),
    "outbox": ("id", "ticket_id", "kind", "automatic", "rcpt", "message_id", "subject", "rcpt_name", "from_name",
               "context", "status", "attempts", "next_attempt_at", "last_error", "created_at", "sent_at", "inbound_id",
               "lane"),
    "sla_mark": ("id", "ticket_id", "target", "level", "fired_at", "group", "assignee"),
    "survey": ("id", "ticket_id", "requester", "sent_at", "rating", "comment", "answered_at"),
}
EPOCH = dt.datetime(1970, 1, 1)


def _t(seconds: float) -> str:
    """A stored time (naive UTC text that PostgreSQL reads as a timestamp too)."""
    return (EPOCH + dt.timedelta(seconds=seconds)).isoformat(sep=" ", timespec="microseconds")


class Filler:
    """Generates the rows of the tickets, a batch at a time, with ids counted across batches."""

    def __init__(self, n: int, requesters: int, seed: int = 15):
        self.n = n
        self.rnd = random.Random(seed)
        rnd = self.rnd
        self.people = []
        for i in range(requesters):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            self.people.append((f"{first}.{last}{i}@{rnd.choice(DOMAINS)}", f"{first.title()} {last.title()}"))
        self.techs = [(f"tech{i}@acme-corp.example", f"Tech {i}", GROUPS[i % len(GROUPS)]) for i in range(40)]
        self.by_group = {g: [t for t in self.techs if t[2] == g] for g in GROUPS}
        self.end = (END - EPOCH).total_seconds()
        self.start = self.end - YEARS * 365.25 * 86400
        self.step = (self.end - self.start) / n
        self.ids = dict.fromkeys(COLUMNS, 0)
        self.uid = 0

    def _id(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def _mid(self) -> str:
        r = self.rnd.getrandbits(128)
        h = f"{r:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}@{MID_HOSTS[r % len(MID_HOSTS)]}"

    def _requester(self) -> tuple[str, str]:
        # skewed: the first few requesters (a monitoring system, a busy assistant) write very often
        return self.people[int(len(self.people) * self.rnd.random() ** 2)]

    def batches(self) -> Iterator[dict[str, list[tuple]]]:
        for first in range(1, self.n + 1, CHUNK):
            rows: dict[str, list[tuple]] = {t: [] for t in COLUMNS}
            for tid in range(first, min(first + CHUNK, self.n + 1)):
                self._ticket(tid, rows)
            yield rows

    def _ticket(self, tid: int, rows: dict[str, list[tuple]]) -> None:  # noqa: C901 - one ticket's life, in order
        rnd = self.rnd
        created = self.start + (tid - 1 + rnd.random()) * self.step
        age_days = (self.end - created) / 86400
        email, name = self._requester()
        priority, impact, urgency = rnd.choice(PRIORITY)
        category, group = rnd.choice(CATEGORIES)
        tech, tech_name, _ = rnd.choice(self.by_group[group])
        subject = rnd.choice(SUBJECTS).format(n=rnd.randint(1, 9))
        r = rnd.random()
        if age_days < 10:  # the last days: much still being worked
            status = "new" if r < 0.1 else "open" if r < 0.25 else "in-progress" if r < 0.45 \
                else "on-hold" if r < 0.5 else "closed"
        else:  # older: closed, a few cancelled, a few left behind
            status = "cancelled" if r < 0.015 else "on-hold" if r < 0.0025 + 0.015 else "closed"
        assigned = status != "new"
        response_due = created + RESPONSE_H[priority] * 3600
        resolution_due = created + RESOLUTION_H[priority] * 3600
        first_response = created + rnd.uniform(0.05, 1.3) * RESPONSE_H[priority] * 3600 if assigned else None
        resolved = closed = None
        code = resolution = None
        if status == "closed":
            resolved = created + rnd.uniform(0.1, 1.4) * RESOLUTION_H[priority] * 3600
            closed = resolved + 5 * 86400
            code = "self-service" if rnd.random() < 0.03 else "fixed"
            resolution = f"I have {rnd.choice(FIXES)}."
        elif status == "cancelled":
            closed = created + rnd.uniform(600, 86400)
            code = "cancelled"
        updated = closed or first_response or created
        root = self._mid()
        lane = "auth" if rnd.random() < 0.7 else "unauth"
        rows["ticket"].append((
            tid, subject, email, name, status, category, impact, urgency, priority, 0, group,
            tech if assigned else None, _t(created), _t(updated), priority, _t(response_due), _t(resolution_due),
            _t(first_response) if first_response else None, _t(updated) if status == "on-hold" else None, 0.0, None,
            _t(resolved) if resolved else None, _t(closed) if closed else None, code, resolution,
            1 if rnd.random() < 0.02 else 0, 0, 0, None, None, root, lane))
        rows["participant"].append((self._id("participant"), tid, email, "requester"))
        if rnd.random() < 0.2:
            cc = self._requester()[0]
            if cc != email:
                rows["participant"].append((self._id("participant"), tid, cc, "cc"))
        if assigned:
            rows["participant"].append((self._id("participant"), tid, tech, "staff"))

        ref = f"INC-{tid}"
        events = rows["event"]

        def event(at: float, actor: str, kind: str, detail: str, inbound: int | None = None) -> None:
            events.append((self._id("event"), tid, _t(at), actor, kind, detail, inbound))

        def outbox(at: float, kind: str, rcpt: str, rcpt_name: str, subj: str, inbound: int | None,
                   automatic: int = 0) -> None:
            oid = self._id("outbox")
            context = json.dumps({"rcpt": rcpt, "rcpt_name": rcpt_name, "ref": ref, "tag": f"[{ref}]", "now": _t(at),
                                  "ticket": {"id": tid, "subject": subject, "requester": email, "requester_name": name,
                                             "status": status, "priority": priority, "category": category,
                                             "group": group, "assignee": tech if assigned else None}},
                                 separators=(",", ":"))
            rows["outbox"].append((
                oid, tid, kind, automatic, rcpt, f"md-{tid}-{rnd.getrandbits(32):08x}-{rnd.getrandbits(80):020x}@"
                "acme-corp.example", f"[{ref}] {subj}", rcpt_name, "", context, "sent", 1, _t(at), None, _t(at),
                _t(at + rnd.uniform(0.2, 5)), inbound, lane))

        # the conversation: the requester's first mail, then replies both ways
        replies = rnd.choice((0, 1, 1, 2, 2, 2, 3, 3, 4, 2))
        at = created
        when = rnd.choice(("this morning", "yesterday", "after the update", "on Monday"))
        for k in range(replies + 1):
            from_tech = k % 2 == 1 and assigned
            if k:
                at += rnd.uniform(300, 6 * 3600)
            mid = root if k == 0 else self._mid()
            sender, sender_name = (tech, tech_name) if from_tech else (email, name)
            body = (TECH_BODY.format(name=name, fix=rnd.choice(FIXES), tech=tech_name) if from_tech
                    else BODY.format(problem=subject + ".", when=when, name=name))
            self.uid += 1
            iid = self._id("inbound")
            msgid = self._id("message")
            subj = subject if k == 0 else f"Re: [{ref}] {subject}"
            outcome = "new-ticket" if k == 0 else "reply"
            decisions = (f"parsed: from {sender}, subject {subj!r}, 0 attachment(s), {len(body) + 900:,} bytes\n"
                         + ("no thread matched: a new ticket\n" if k == 0 else
                            f"threaded by <{root}> (message) onto {ref}: {sender} is a participant\n")
                         + f"{ref}: {'created' if k == 0 else 'reply'}: from {sender}")
            rows["inbound"].append((
                iid, "INBOX", 1, self.uid, f"{rnd.getrandbits(256):064x}", len(body) + 900, mid, sender, subj,
                _t(at - 2), "processed", outcome, None, tid, decisions, _t(at), 1))
            rows["message"].append((
                msgid, tid, iid, "in", mid, sender, sender_name, "helpdesk@acme-corp.example", "", subj, body, None, 0,
                "mail" if k == 0 else "reply", _t(at)))
            if k == 0:
                event(at, email, "created", f"from {email}", iid)
                event(at, "desk", "category", f"category {category} (keyword)" if category else "no category", iid)
                event(at, "desk", "priority", f"priority {priority}: impact {impact}, urgency {urgency}", iid)
                event(at, "desk", "group", f"routed to {group}", iid)
                event(at, "desk", "sla", f"policy {priority}: response due {_t(response_due)[:16]} UTC", iid)
                if assigned:
                    event(at, "desk", "assigned", f"assigned: nobody -> {tech} (round robin)", iid)
                outbox(at, "ack", email, name, subject, iid, automatic=1)
                if assigned:
                    outbox(at, "assigned", tech, tech_name, subject, iid)
            else:
                event(at, sender, "reply", f"reply from {sender}", iid)
                if from_tech:
                    outbox(at, "relay", email, name, subj, iid)
        if status == "closed" and resolved:
            event(resolved, tech, "status", "in-progress -> resolved")
            event(resolved, tech, "resolved", f"resolved with code {code}")
            outbox(resolved, "resolution", email, name, subject, None)
            event(closed or resolved, "desk", "status", "resolved -> closed")
            event(closed or resolved, "desk", "closed", "closed automatically: no objection within 5 days of the resolution")
            if rnd.random() < 0.25:
                answered = rnd.random() < 0.4
                rows["survey"].append((self._id("survey"), tid, email, _t(closed or resolved),
                                       rnd.choice((3, 4, 5, 5, 5, 2)) if answered else None, None,
                                       _t((closed or resolved) + 3600) if answered else None))
                outbox(closed or resolved, "survey", email, name, subject, None)
        elif status == "cancelled":
            event(closed or created, email, "status", "new -> cancelled")
        elif status in ("in-progress", "on-hold"):
            event(first_response or created, tech, "status", f"open -> {status}")
        # SLA marks: every target missed has its marks (the desk swept them); the rest met theirs
        done_resolution = resolved or closed
        now = self.end
        for target, due, done in (("response", response_due, first_response),
                                  ("resolution", resolution_due, done_resolution)):
            missed = (done is None and due < now and status not in ("cancelled",)) or (done is not None and done > due)
            if not missed:
                continue
            for level, at in (("warn", due - 0.25 * (due - created)), ("breach", due)):
                rows["sla_mark"].append((self._id("sla_mark"), tid, target, level, _t(at), group,
                                         tech if assigned else None))


# --- writing them -------------------------------------------------------------------------


def _secondary_indexes() -> list[tuple[str, str]]:
    """(name, CREATE statement) of every index the fill may drop and make again."""
    db = store.db.obj
    tables = ", ".join(f"'{t}'" for t in COLUMNS)
    if store.is_sqlite():
        return list(db.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                   f"AND tbl_name IN ({tables})").fetchall())
    return list(db.execute_sql(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid WHERE t.relnamespace = current_schema()::regnamespace "
        f"AND t.relname IN ({tables}) AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
    ).fetchall())


def _quote(name: str) -> str:
    return f'"{name}"'


# SQLite's `PRAGMA user_version` of a kept file: how its indexes were made (the
# desk itself never sets it). A file without the mark is filled again.
GROWN, PACKED = 1, 2


def fill(n: int, requesters: int = 5000, quiet: bool = False, indexes_after: bool | None = None) -> dict[str, int]:
    """Fill the open database (made by the migrations, holding no ticket) with `n` tickets
    and their rows; returns the row count of each table. `indexes_after`: the secondary
    indexes are dropped for the fill and made again after it (the default on
    PostgreSQL; on SQLite they are kept and grow as the rows go in; module docstring)."""
    db = store.db.obj
    sqlite = store.is_sqlite()
    if indexes_after is None:
        indexes_after = not sqlite
    if store.scalar('SELECT COUNT(*) FROM "ticket"'):
        raise SystemExit("prefill: the database already holds tickets; give it a fresh one")
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    t0 = time.perf_counter()
    indexes = _secondary_indexes() if indexes_after else []
    for name, _ in indexes:
        db.execute_sql(f'DROP INDEX "{name}"')
    if sqlite:
        db.execute_sql("PRAGMA journal_mode = OFF")
        db.execute_sql("PRAGMA synchronous = OFF")
        db.execute_sql("PRAGMA cache_size = -1000000")
        db.execute_sql("PRAGMA foreign_keys = OFF")
        statements = {t: f'INSERT INTO "{t}" ({", ".join(map(_quote, c))}) VALUES ({", ".join("?" * len(c))})'
                      for t, c in COLUMNS.items()}
    else:
        raw = db.connection()
        try:
            db.execute_sql("SET session_replication_role = replica")  # no foreign-key triggers while filling
        except Exception:  # noqa: BLE001 - not a superuser: the checks run, slower
            pass
    filler = Filler(n, requesters)
    counts = dict.fromkeys(COLUMNS, 0)
    done = 0
    for rows in filler.batches():
        with db.atomic():
            for table, batch in rows.items():
                if not batch:
                    continue
                counts[table] += len(batch)
                if sqlite:
                    db.cursor().executemany(statements[table], batch)
                else:
                    buf = io.StringIO()
                    w = csv.writer(buf)
                    w.writerows([["\\N" if v is None else v for v in row] for row in batch])
                    buf.seek(0)
                    raw.cursor().copy_expert(
                        f'COPY "{table}" ({", ".join(map(_quote, COLUMNS[table]))}) FROM STDIN '
                        "WITH (FORMAT csv, NULL '\\N')", buf)
        done += len(rows["ticket"])
        if done % 100_000 < CHUNK:
            say(f"  {done:,} tickets, {counts['message']:,} messages, {counts['event']:,} events "
                f"({time.perf_counter() - t0:.0f} s)")
    rows_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _name, sql in indexes:
        db.execute_sql(sql)
    if indexes:
        say(f"  indexes made again in {time.perf_counter() - t1:.0f} s")
    if sqlite:
        db.execute_sql(f"PRAGMA user_version = {PACKED if indexes_after else GROWN}")
        db.execute_sql("PRAGMA foreign_keys = ON")
        db.execute_sql("PRAGMA journal_mode = WAL")
    else:
        db.execute_sql("SET session_replication_role = DEFAULT")
        for table in COLUMNS:
            db.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                           f'(SELECT COALESCE(MAX("id"), 0) + 1 FROM "{table}"), false)')
        db.execute_sql("ANALYZE")  # what autovacuum would have done on a desk that ran for years
    say(f"  rows in {rows_s:.0f} s, total {time.perf_counter() - t0:.0f} s")
    return counts


# --- kept databases ------------------------------------------------------------------------


def _tickets_in(url: str, indexes_after: bool = False) -> int | None:
    """The tickets of a kept database; None when it is not there, not filled, or (SQLite)
    filled with its indexes made the other way."""
    try:
        store.open_database(url)
        if store.is_sqlite() and store.scalar("PRAGMA user_version") != (PACKED if indexes_after else GROWN):
            return None
        return int(store.scalar('SELECT COUNT(*) FROM "ticket"') or 0)
    except Exception:  # noqa: BLE001 - no such database, no such table: not filled
        return None
    finally:
        if store.db.obj is not None:
            store.db.obj.close()


def make(url: str, n: int, requesters: int = 5000, quiet: bool = False,
         indexes_after: bool | None = None) -> dict[str, int]:
    """Migrate the database at `url` and fill it."""
    store.open_database(url)
    store.migrate()
    t0 = time.perf_counter()
    counts = fill(n, requesters, quiet, indexes_after)
    if not quiet:
        print(f"prefilled {url}: " + ", ".join(f"{t} {c:,}" for t, c in counts.items())
              + f" in {time.perf_counter() - t0:.0f} s", flush=True)
    store.db.obj.close()
    _migrate(url)
    return counts


def kept_sqlite(n: int, indexes_after: bool = False, keep: str | None = None) -> Path:
    """Where the kept SQLite file of `n` tickets is: `keep` (`--keep`), else the default."""
    return Path(keep) if keep else Path(f"/tmp/maildesk-prefill-{n}{'-packed' if indexes_after else ''}.db")


def kept_postgres(n: int, keep: str | None = None) -> str:
    """The name of the kept PostgreSQL database of `n` tickets: `keep`, else the default."""
    return keep or f"md_prefill_{n}"


def ensure(database: str, n: int, keep: str | None = None, requesters: int = 5000,
           indexes_after: bool = False) -> str:
    """The kept prefilled database for `n` tickets, made when missing: a SQLite path
    or a PostgreSQL database name. `indexes_after` (SQLite): a file whose indexes were
    made after the fill, packed (module docstring)."""
    if database == "sqlite":
        path = kept_sqlite(n, indexes_after, keep)
        if path.exists() and _tickets_in(f"sqlite:///{path}", indexes_after) == n:
            _migrate(f"sqlite:///{path}")
            return str(path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        make(f"sqlite:///{path}", n, requesters, indexes_after=indexes_after)
        return str(path)
    name = kept_postgres(n, keep)
    if _tickets_in(f"{PG_SERVER}/{name}") == n:
        _migrate(f"{PG_SERVER}/{name}")
        return name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    make(f"{PG_SERVER}/{name}", n, requesters)
    return name


def _migrate(url: str) -> None:
    """Bring a kept database up to date (a new migration since it was filled) and build
    its full-text indexes as `maildesk init` would, once."""
    from maildesk.desk.kbsearch import reindex

    store.open_database(url)
    t0 = time.perf_counter()
    applied = store.migrate()
    if applied:
        print(f"migrated the kept database: {', '.join(applied)} in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    if reindex("english"):
        print(f"full-text index of the resolved tickets built in {time.perf_counter() - t0:.0f} s", flush=True)
    store.db.obj.close()


def copy_sqlite(kept: str, to: Path) -> None:
    """A copy of the kept file for one run (the kept one is closed, with no WAL), on disk
    and in the OS's cache before the run starts, as the file of a desk that has been
    running is:

    - on disk: else the desk's first checkpoint would wait for gigabytes of the copy to
      be written back (its fsync), and the run would time the copy;
    - in the cache: copying reads one file of some 11 GB and writes another, more than
      a machine of 24 GB caches, and pushes out pages of the copy; the run then read
      them from the disk again (about 25 MB in a run, and most of the difference to the
      empty database: -30% without this, medians of 3 pairs -8% to -17% with it). So
      the kept file leaves the cache (it is read only by the next copy), and the copy
      is read through once."""
    shutil.copyfile(kept, to)
    fd = os.open(to, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(kept, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    with open(to, "rb") as f:
        while f.read(1 << 24):
            pass


def clone_postgres(kept: str, name: str) -> str:
    """A new database `name` made from the kept one; returns its URL. The files are
    copied (STRATEGY FILE_COPY, with a checkpoint) rather than written through the WAL,
    PostgreSQL 15's default, which would leave gigabytes of WAL to the run's checkpoints."""
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{kept}" STRATEGY FILE_COPY')
    return f"{PG_SERVER}/{name}"


def _pg_admin(*statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG_SERVER}/postgres")
    conn.autocommit = True
    try:
        for s in statements:
            conn.cursor().execute(s)
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--requesters", type=int, default=5000)
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--keep", metavar="PATH|NAME", help="the SQLite file or the PostgreSQL database to fill "
                    "(default /tmp/maildesk-prefill-N.db or md_prefill_N); reused when it holds N tickets")
    ap.add_argument("--force", action="store_true", help="fill anew even when the kept one is there")
    ap.add_argument("--indexes", choices=("grown", "after"), default="grown",
                    help="SQLite: indexes grown row by row during the fill (as years of use leave them), or "
                         "made after it, packed (as VACUUM leaves them; default file /tmp/maildesk-prefill-N-packed.db)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    after = args.indexes == "after"
    if args.force:
        if args.database == "sqlite":
            kept_sqlite(args.tickets, after, args.keep).unlink(missing_ok=True)
        else:
            _pg_admin(f'DROP DATABASE IF EXISTS "{kept_postgres(args.tickets, args.keep)}"')
    where = ensure(args.database, args.tickets, args.keep, args.requesters, indexes_after=after)
    print(f"{args.database} database with {args.tickets:,} tickets ready at {where} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
