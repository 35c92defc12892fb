"""End-to-end ingest speed: IMAP to tickets to mail on the wire.

Generates N help-desk mails (new incidents and replies in threads, some HTML, some
HTML only, some with attachments, some Latin-1 and RFC 2047 subjects), appends
them to a real Dovecot, and times one `maildesk run --once` as a separate process
until every message is stored, threaded, and acknowledged (or relayed) over SMTP
to an aiosmtpd sink. Prints messages per second and the peak RSS of each of its
processes (desk, fetch, send; class PeakRss says why not getrusage).

    python bench/ingest.py [--messages 2000] [--database sqlite|postgresql [--workers N]] [--desk ack|full]
                           [--kb on|off|both [--kb-articles 1000]] [--prefill N [--keep PATH|NAME] [--indexes grown|after]]
                           [--vs-roundup [--roundup-rounds 1000]] [--repeat 5] [--profile DIR]

The default desk (`ack`) is issue 2's workload: triage, SLA and an acknowledgement
for each new incident, as Roundup's gateway stores, threads and answers the same
mail; `full` adds technicians, so assignment notices and relayed replies as well.
`--kb on` (the default) publishes `--kb-articles` knowledge-base articles first, fixes
for the very problems the mail reports among them, so that acknowledgements offer
articles and notices list known fixes; `--kb off` sets `[kb] enabled = false`; `--kb
both` runs each in turn and prints the cost of the knowledge base (issue 16: within 10%).
`--workers N` (PostgreSQL) runs N desk processes as a service runs them (`maildesk run`),
all started at once on the same database (one fetches the mailbox, under its lease;
all process and send), until every message is processed and every mail sent, and
prints each one's peak RSS and CPU. `--vs-roundup` also feeds the same mail to Roundup's mail gateway (bench/roundup_side.py)
and prints both rates and their ratio; `--repeat` runs both in turn and prints medians.
`BENCH_PYTHONPATH=DIR` puts DIR on the maildesk processes' path (a sitecustomize.py there
that counts each process's statements, say).
`--prefill N` runs each time on an empty database and on one that already holds N
tickets of some years (bench/prefill.py, filled once and kept), and prints both rates
and their ratio (issue 15: within 15%). The mail here never meets the prefilled
Message-IDs, addresses or ticket numbers. `--indexes after` (SQLite) runs on a file whose
indexes were made after the fill, packed as VACUUM leaves them (bench/prefill.py says
why that costs more, for a while). `BENCH_KEEP_DB=1` keeps each prefilled run's
PostgreSQL database (md_bench_...) to look into; drop it afterwards, it is gigabytes.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tomli_w  # noqa: E402

from tests.builders import mail  # noqa: E402
from tests.sandbox import Dovecot, SmtpSink  # noqa: E402

PROBLEMS = [
    ("Printer on floor {n} prints blank pages", "The printer next to the kitchen prints blank pages since this morning."),
    ("VPN disconnects every hour", "My VPN tunnel drops every hour and I have to log in again."),
    ("Cannot log in to my laptop", "My password expired and now the laptop says my account is locked."),
    ("Outlook keeps asking for the password", "Outlook asks for my password again and again, urgent please."),
    ("Wifi in meeting room {n} is down", "Nobody in meeting room {n} can connect to the wifi network."),
    ("New monitor for the team", "Our team needs two more monitors, when you can."),
    ("Shared drive is read-only", "Since the update I cannot save to the shared drive."),
]
NAMES = ["Jürgen Müller", "Zoë Dupont", "Ana García", "Łukasz Nowak", "Sam Lee", "Priya Patel", "Björn Ødegaard"]
CET = dt.timezone(dt.timedelta(hours=1))
FILLER = ("Here is some more detail about what I tried. I restarted the computer twice, "
          "checked the cables, and asked my colleague, who has the same problem.\n") * 6


def generate(n: int, seed: int = 42) -> tuple[list[bytes], int]:
    """N mails in about 0.4 N threads, as tests/builders.py writes them; returns them and
    how many start a thread."""
    rnd = random.Random(seed)
    mails, threads = [], []
    for i in range(n):
        reply = threads and rnd.random() < 0.4
        if reply:
            t = rnd.choice(threads)
            sender, name, subject, root = t
            subject = "Re: " + subject
            body = f"Hello again,\n\nit happened again at {rnd.randint(8, 17)}:{rnd.randint(10, 59)}.\n\n"
            body += ("On Mon, 30 Nov 2026 at 09:00, IT Service Desk <helpdesk@example.test> wrote:\n"
                     "> We have your message.\n> It is logged.\n")
            thread = {"in_reply_to": root, "references": root}
        else:
            title, text = rnd.choice(PROBLEMS)
            subject = title.format(n=rnd.randint(1, 9))
            name = rnd.choice(NAMES)
            sender = f"user{i}@corp.example"
            body = f"Hello,\n\n{text.format(n=rnd.randint(1, 9))}\n\n{FILLER}\nThanks,\n{name}\n"
            thread = {}
        mid = f"{uuid.UUID(int=rnd.getrandbits(128)).hex}@corp.example"
        if not reply:
            threads.append((sender, name, subject, mid))
        latin1 = rnd.random() < 0.15
        kind = rnd.random()
        html = "<html><body>" + "".join(f"<p>{line}</p>" for line in body.splitlines() if line) + "</body></html>"
        attachments = []
        if kind >= 0.1 and rnd.random() < 0.1:  # HTML-only mail (kind < 0.1) comes without
            attachments = [("screenshot.pdf", rnd.randbytes(rnd.randint(20_000, 60_000)), "application/pdf")]
        mails.append(mail(
            f"{name} <{sender}>", subject, None if kind < 0.1 else body, html=html if kind < 0.3 else None,
            msgid=f"<{mid}>", date=dt.datetime(2026, 11, 30, 9, i % 60, tzinfo=CET), attachments=attachments,
            charset="iso-8859-1" if latin1 else "utf-8", cte="8bit", **thread))
    return mails, len(threads)


FIXES = [
    "Clean the print head from the printer's maintenance menu, then print a test page.",
    "VPN client 5.1.2 drops idle tunnels; install 5.3 from the software centre and restart.",
    "The account locks after a password change when an old password is still saved on a phone: unlock it in "
    "the directory and remove the old password from the phone's mail app.",
    "Outlook keeps an old password in the credential manager: remove the entries for outlook.office365.com.",
    "The access point of the meeting room restarted with a wrong channel: restart it from the controller.",
    "Order monitors through the hardware catalogue; the team's manager approves.",
    "The update reset the share's permissions: re-apply the group's write permission on the shared drive.",
]


def preload_articles(url: str, n: int) -> None:
    """`n` published articles: the fixes of PROBLEMS, then articles about other things
    (products and codes the mail never names, in the common words every article uses),
    so that each new incident is offered its known fix from a base of `n`."""
    from bench.kb import COMMON, NOW
    from maildesk import store
    from maildesk.config import parse_config
    from maildesk.desk import kbsearch, kbterms
    from maildesk.service.runtime import Runtime

    cfg = parse_config({"desk": {"address": "helpdesk@example.test", "state_dir": "/tmp"}, "database": {"url": url},
                        "imap": {"host": "localhost", "username": "u", "password": "p"}, "smtp": {"host": "localhost"},
                        "security": {"secret": "bench: a signing secret of 32 bytes or more"}})
    store.open_database(url)
    rt = Runtime.start(cfg)
    rnd = random.Random(7)
    articles = [(title.format(n="").replace("  ", " ").strip(), fix) for (title, _), fix in zip(PROBLEMS, FIXES, strict=False)]
    while len(articles) < n:
        topic = [f"{rnd.choice(['app', 'srv', 'lic', 'mod', 'erp'])}{rnd.randint(100, 9999)}" for _ in range(rnd.randint(2, 4))]
        words = [rnd.choice(topic) if rnd.random() < 0.4 else rnd.choice(COMMON) for _ in range(rnd.randint(40, 120))]
        articles.append((" ".join(topic).capitalize() + " stops responding", " ".join(words)))
    with store.write_transaction():
        for title, text in articles[:n]:
            a = store.KbArticle.create(title=title, text=text, version=1, key_terms=kbterms.key_string(title, text, None),
                                       created_at=NOW, updated_at=NOW, created_by="bench", updated_by="bench")
            kbsearch.index_article(rt, a)
    store.db.obj.close()


def run_maildesk(mails: list[bytes], new_tickets: int, database: str, desk: str = "ack", kb: str = "on",
                 kb_articles: int = 1000, workers: int | None = None, prefilled: str | None = None) -> dict:
    """One timed run; `workers`: that many `maildesk run` desk processes (PostgreSQL);
    `prefilled`: the kept database of bench/prefill.py to start from (a copy of it: the
    kept one stays as it is)."""
    from bench import prefill

    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-"))
    name = None
    keep = False  # a failed run's database is kept to look into; one cut short (^C, a closed pipe) is not
    try:
        with Dovecot() as dovecot, SmtpSink() as smtp:
            dovecot.add_user("helpdesk", "secret")
            if database == "postgresql":
                name = "md_bench_" + uuid.uuid4().hex[:8]
                if prefilled:
                    url = prefill.clone_postgres(prefilled, name)
                else:
                    prefill._pg_admin(f"CREATE DATABASE {name}")
                    url = f"{prefill.PG_SERVER}/{name}"
            else:
                url = f"sqlite:///{tmp / 'maildesk.db'}"
                if prefilled:
                    prefill.copy_sqlite(prefilled, tmp / "maildesk.db")
            config = {
                "desk": {"name": "IT Service Desk", "address": "helpdesk@example.test", "timezone": "Europe/Berlin",
                         "state_dir": str(tmp / "state")},
                "database": {"url": url},
                "imap": {"host": dovecot.host, "port": dovecot.port, "security": "none", "username": "helpdesk",
                         "password": "secret"},
                "smtp": {"host": smtp.host, "port": smtp.port, "security": "none", "connections": 6},
                "groups": [{"name": "service-desk"}, {"name": "network"}],
                "technicians": [{"email": f"tech{i}@example.test", "name": f"Tech {i}", "groups": ["service-desk"]}
                                for i in range(4)]
                + [{"email": "net@example.test", "name": "Net", "groups": ["network"]}] if desk == "full" else [],
                "categories": [{"name": "Network", "keywords": ["vpn", "wifi", "network"], "group": "network"},
                               {"name": "Hardware", "keywords": ["printer", "monitor", "laptop"]},
                               {"name": "Accounts", "keywords": ["password", "locked", "account"]}],
                "priority": {"impact_keywords": {"high": ["nobody"], "medium": ["our team"]},
                             "urgency_keywords": {"high": ["urgent"], "low": ["when you can"]}},
                "security": {"secret": "bench: a signing secret of 32 bytes or more"},
                "limits": {"auto_replies_per_sender_per_day": 1000, "auto_replies_per_ticket_per_day": 1000,
                           "auto_replies_per_hour": 1_000_000},
                "kb": {"enabled": kb == "on"},
            }
            cfg_path = tmp / "maildesk.toml"
            cfg_path.write_text(tomli_w.dumps(config))
            env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("BENCH_PYTHONPATH", ""))
            cmd = [sys.executable, "-m", "maildesk", "--config", str(cfg_path)]
            subprocess.run(cmd + ["init"], check=True, env=env, capture_output=True)
            if kb == "on" and kb_articles:
                preload_articles(url, kb_articles)
            before = _count(url, 'SELECT COALESCE(MAX("id"), 0) FROM "ticket"')
            t0 = time.perf_counter()
            dovecot.append_many("helpdesk", mails)
            appended = time.perf_counter() - t0
            import resource

            sink_before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            if workers is None:
                with open(tmp / "run.log", "wb") as log:
                    proc = subprocess.Popen(cmd + ["run", "--once"], env=env, stderr=log, stdout=subprocess.DEVNULL)
                    peaks = PeakRss([proc.pid])
                    _, status, usage = os.wait4(proc.pid, 0)
                seconds = time.perf_counter() - start
                each = [(peaks.stop()[0], usage.ru_utime + usage.ru_stime)]
            else:
                seconds, each, status = _run_workers(cmd, env, tmp, url, len(mails), workers)
            sink_after = resource.getrusage(resource.RUSAGE_SELF)
            sink_cpu = (sink_after.ru_utime + sink_after.ru_stime) - (sink_before.ru_utime + sink_before.ru_stime)
            err = "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("run*.log")))
            if status != 0:
                keep = True
                raise SystemExit(f"maildesk run failed (its logs and state are kept in {tmp}"
                                 + (f", its database as {name}" if name else "") + f"):\n{err[-3000:]}")
            tickets = _count(url, 'SELECT COUNT(*) FROM "ticket" WHERE "id" > ?', (before,))
            failed = _count(url, 'SELECT COUNT(*) FROM "inbound" WHERE "status" = ?', ("quarantined",))
            if tickets != new_tickets:  # a reply that opened a ticket, or a thread opened twice: say why
                _explain_extra(url, before)
            sent = len(smtp.messages)
            acks = sum(1 for m in smtp.messages if m.header("Auto-Submitted") == "auto-replied")
            offers = sum(1 for m in smtp.messages if m.header("Auto-Submitted") == "auto-replied"
                         and b"kbsolved" in m.data)
            offered = sum(m.text.count("kbsolved") for m in smtp.messages if m.header("Auto-Submitted") == "auto-replied")
    finally:
        if name and not keep and not (os.environ.get("BENCH_KEEP_DB") and prefilled):
            prefill._pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    shutil.rmtree(tmp, ignore_errors=True)  # (a failed run keeps it: its logs, and the SQLite file, to look into)
    return {
        "messages": len(mails), "seconds": seconds, "rate": len(mails) / seconds,
        "peak_rss_mb": max(max(r.values(), default=0) for r, _ in each),
        "each": each,
        "tickets": tickets, "expected_tickets": new_tickets, "quarantined": failed, "smtp_sent": sent,
        "acknowledgements": acks, "offers": offers, "offered": offered, "append_seconds": appended,
        "maildesk_cpu": sum(c for _, c in each), "sink_cpu": sink_cpu,
        "laps": next((line.split("; ")[-1] for line in err.splitlines() if " cycle: " in line), ""),
    }


def _rss(peaks: dict[str, float]) -> str:
    """"desk 48 MB, fetch 41 MB, send 39 MB": each process's own peak."""
    return ", ".join(f"{name} {mb:.0f} MB" for name, mb in sorted(peaks.items(), key=lambda kv: kv[0] != "desk"))


class PeakRss:
    """Each maildesk process's own peak RSS (VmHWM in /proc/PID/status), read every 20 ms
    while the run goes, for the processes started (`roots`) and their children (fetch
    and send). getrusage's ru_maxrss will not do: Linux keeps it across exec, so that a
    process this bench starts begins with the bench's own RSS (the mail it generated,
    what the SMTP sink took in), which was then printed as maildesk's."""

    def __init__(self, roots: list[int]):
        import threading

        self.roots = roots
        self.peak: dict[int, tuple[int, str, float]] = {}  # pid -> (root's index, name, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.02)

    def _sample(self) -> None:
        todo = [(i, pid) for i, pid in enumerate(self.roots)]
        while todo:
            i, pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                todo += [(i, int(c)) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except (OSError, ValueError):
                continue  # gone meanwhile
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            mb = int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
            name = "desk" if pid == self.roots[i] else fields["Name"].strip().removeprefix("maildesk-")
            self.peak[pid] = (i, name, max(mb, self.peak.get(pid, (0, "", 0.0))[2]))

    def stop(self) -> list[dict[str, float]]:
        """For each root, {process name: peak RSS in MB}."""
        self._stop.set()
        self._thread.join()
        out: list[dict[str, float]] = [{} for _ in self.roots]
        for i, name, mb in self.peak.values():
            out[i][name] = max(out[i].get(name, 0.0), mb)
        return out


def _run_workers(cmd: list[str], env: dict, tmp: Path, url: str, n: int, workers: int) -> tuple[float, list, int]:
    """`workers` desk processes (`maildesk run`, as a service runs) on one PostgreSQL
    database, started at once: one fetches the mailbox under its lease, all of them
    process and send. Done when all `n` mails are stored and processed and no mail is
    waiting to be sent (polled every 20 ms); then each is stopped with SIGTERM.
    Returns the seconds, each process's ({desk, fetch, send: peak RSS in MB}, CPU
    seconds, its fetch and send processes included) and the worst exit status."""
    import signal

    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:  # a prefilled database holds inbound rows already
        cur.execute("SELECT COALESCE(MAX(id), 0) FROM inbound")
        first = cur.fetchone()[0]
    procs = []
    for i in range(workers):
        with open(tmp / f"run{i}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd + ["run"], env=env, stderr=log, stdout=subprocess.DEVNULL))
    peaks = PeakRss([p.pid for p in procs])
    start = time.perf_counter()
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(f"SELECT (SELECT count(*) FROM inbound WHERE id > {int(first)}), "
                            "(SELECT count(*) FROM inbound WHERE status = 'pending'), "
                            "(SELECT count(*) FROM outbox WHERE status IN ('queued', 'deferred'))")
                stored, pending, unsent = cur.fetchone()
                if stored >= n and not pending and not unsent:
                    break
                if any(p.poll() is not None for p in procs):
                    break  # one died: its log says why
                time.sleep(0.02)
    finally:
        conn.close()
    seconds = time.perf_counter() - start
    each, worst = [], 0
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    rss = peaks.stop()
    for p, own in zip(procs, rss, strict=True):
        _, status, usage = os.wait4(p.pid, 0)
        each.append((own, usage.ru_utime + usage.ru_stime))
        worst = worst or status
    return seconds, each, worst
def _explain_extra(url: str, before: int) -> None:
    """The decision log of each ticket of this run opened by a reply ("Re:"), to see why
    it did not thread."""
    from maildesk import store

    store.open_database(url)
    try:
        rows = store.execute('SELECT "t"."id", "i"."id", "i"."message_id", "i"."decisions" FROM "ticket" AS "t" '
                             'JOIN "inbound" AS "i" ON "i"."ticket_id" = "t"."id" AND "i"."outcome" = ? '
                             'WHERE "t"."id" > ? AND "t"."subject" LIKE ?', ("new-ticket", before, "Re:%")).fetchall()
        for ticket, inbound, mid, decisions in rows[:10]:
            print(f"  ! ticket {ticket} opened by a reply, inbound {inbound} <{mid}>:\n    "
                  + (decisions or "").replace("\n", "\n    "))
    finally:
        store.db.obj.close()


def _count(url: str, sql: str, params=()) -> int:
    from maildesk import store

    store.open_database(url)
    try:
        return int(store.scalar(sql, params) or 0)
    finally:
        store.db.obj.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--desk", choices=("ack", "full"), default="ack",
                    help="ack: triage, SLA and acknowledgements, no technicians (issue 2's workload); "
                         "full: five technicians, so assignment notices and relayed replies too")
    ap.add_argument("--kb", choices=("on", "off", "both"), default="on",
                    help="on: knowledge-base articles published first (--kb-articles); off: [kb] enabled = false; "
                         "both: each in turn, and the difference")
    ap.add_argument("--kb-articles", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None, metavar="N",
                    help="PostgreSQL: N desk processes (`maildesk run`) share the database, timed until all mail is "
                         "processed and sent; without it, one `maildesk run --once`")
    ap.add_argument("--repeat", type=int, default=1, help="run it this many times (Roundup too) and print the medians")
    ap.add_argument("--profile", metavar="DIR", help="write a cProfile of each maildesk process to DIR/kb-K-SIZE/ROLE.prof")
    ap.add_argument("--vs-roundup", action="store_true", help="also time Roundup's mail gateway on the same mail")
    ap.add_argument("--roundup-rounds", type=int, default=None,
                    help="PBKDF2 rounds for the users Roundup creates (default: Roundup's own, which dominates its time "
                         "on mail from many new senders; 1000 is its minimum)")
    ap.add_argument("--prefill", type=int, metavar="N", help="also run on a database prefilled with N tickets "
                    "(bench/prefill.py) and print the rate next to the empty database's")
    ap.add_argument("--keep", metavar="PATH|NAME", help="with --prefill: the kept prefilled SQLite file or PostgreSQL "
                    "database (default /tmp/maildesk-prefill-N.db or md_prefill_N)")
    ap.add_argument("--indexes", choices=("grown", "after"), default="grown",
                    help="with --prefill, SQLite: the kept file's indexes grown during the fill, as years of use leave "
                         "them, or made after it, packed, as VACUUM leaves them (bench/prefill.py)")
    args = ap.parse_args()
    if args.workers is not None and (args.workers < 1 or args.database != "postgresql"):
        ap.error("--workers needs --database postgresql and N >= 1 (SQLite serves one desk process)")
    kept = None
    if args.prefill:
        from bench import prefill

        kept = prefill.ensure(args.database, args.prefill, args.keep, indexes_after=args.indexes == "after")
    by_size: dict[str, list[float]] = {"empty": [], "prefilled": []}
    if args.profile:
        os.environ["MAILDESK_PROFILE"] = os.path.abspath(args.profile)
    # the bytecode an installed package has (under PYTHONDONTWRITEBYTECODE an editable
    # checkout would be compiled again by every maildesk process)
    compileall.compile_dir(str(ROOT / "maildesk"), quiet=1)
    mails, new = generate(args.messages)
    size = sum(map(len, mails)) / 1e6
    print(f"generated {len(mails)} mails ({size:.1f} MB), {new} threads, {len(mails) - new} replies")
    rates, ratios = [], []
    roundup_dir = Path(tempfile.mkdtemp(prefix="roundup-bench-")) if args.vs_roundup else None
    by_kb: dict[str, list[float]] = {"on": [], "off": []}
    cpu_kb: dict[str, list[float]] = {"on": [], "off": []}  # ms of maildesk CPU a message: steadier on a shared machine
    runs = [(kb, size) for _ in range(args.repeat) for kb in (("on", "off") if args.kb == "both" else (args.kb,))
            for size in (("empty", "prefilled") if kept else ("empty",))]
    for kb, size in runs:
        if args.profile:  # each run's profiles in a folder of their own
            os.environ["MAILDESK_PROFILE"] = os.path.join(os.path.abspath(args.profile), f"kb-{kb}-{size}")
        r = run_maildesk(mails, new, args.database, args.desk, kb, args.kb_articles, args.workers,
                         prefilled=kept if size == "prefilled" else None)
        by_size[size].append(r["rate"])
        if size == "prefilled":
            print(f"maildesk on {args.prefill:,} prefilled tickets ({args.database}, desk={args.desk}, kb {kb}): "
                  f"{r['messages']} messages in {r['seconds']:.2f} s = {r['rate']:.0f} msg/s; "
                  f"empty database {by_size['empty'][-1]:.0f} msg/s: "
                  f"ratio {r['rate'] / by_size['empty'][-1]:.2f}; "
                  f"tickets {r['tickets']} (expected {r['expected_tickets']}), quarantined {r['quarantined']}, "
                  f"CPU {r['maildesk_cpu']:.1f} s, peak RSS {_rss(r['each'][0][0])}", flush=True)
            continue
        rates.append(r["rate"])
        by_kb[kb].append(r["rate"])
        cpu_kb[kb].append(r["maildesk_cpu"] * 1000 / r["messages"])
        print(f"maildesk ({args.database}, desk={args.desk}, kb {kb}): {r['messages']} messages in {r['seconds']:.2f} s = "
              f"{r['rate']:.0f} msg/s end to end; peak RSS {_rss(r['each'][0][0])}"
              + (f"; {r['offers']} acknowledgements offered {r['offered']} articles" if kb == "on" else ""))
        print(f"  CPU: maildesk (all its processes) {r['maildesk_cpu']:.1f} s, the SMTP sink {r['sink_cpu']:.1f} s; "
              f"this machine has {os.cpu_count()} cores")
        if r["laps"]:
            print(f"  the desk process's phases (wall/CPU): {r['laps']}")
        if args.workers is not None:
            print(f"  {args.workers} desk process(es), `maildesk run` until all is sent: "
                  + "; ".join(f"#{i + 1} peak RSS {_rss(rss)}, CPU {cpu:.1f} s" for i, (rss, cpu) in enumerate(r["each"])))
        print(f"  tickets {r['tickets']} (expected {r['expected_tickets']}), quarantined {r['quarantined']}, "
              f"mails sent {r['smtp_sent']} ({r['acknowledgements']} acknowledgements); "
              f"append to Dovecot took {r['append_seconds']:.2f} s (not counted)")
        if args.vs_roundup:
            from bench.roundup_side import run_roundup

            ru = run_roundup(mails, roundup_dir, pbkdf2_rounds=args.roundup_rounds)
            rounds = f", pbkdf2 rounds {args.roundup_rounds}" if args.roundup_rounds else ", its default settings"
            print(f"roundup-mailgw {ru['version']}{rounds}: {ru['messages']} messages in {ru['seconds']:.2f} s "
                  f"= {ru['rate']:.1f} msg/s ({ru['issues']} issues{'; ' + ru['errors'] if ru.get('errors') else ''})")
            ratios.append(r["rate"] / ru["rate"])
            print(f"maildesk / roundup = {ratios[-1]:.1f}x")
    if args.repeat > 1:
        print(f"median of {args.repeat} runs: maildesk {statistics.median(rates):.0f} msg/s "
              f"(min {min(rates):.0f}, max {max(rates):.0f})"
              + (f"; maildesk / roundup {statistics.median(ratios):.1f}x (min {min(ratios):.1f}x, max {max(ratios):.1f}x)"
                 if ratios else ""))
    if args.kb == "both":
        on, off = statistics.median(by_kb["on"]), statistics.median(by_kb["off"])
        print(f"knowledge base on: {on:.0f} msg/s, off: {off:.0f} msg/s (medians of {args.repeat}): "
              f"{(on - off) / off:+.1%} with it on ({args.kb_articles} articles)")
        con, coff = statistics.median(cpu_kb["on"]), statistics.median(cpu_kb["off"])
        print(f"maildesk CPU a message: on {con:.2f} ms, off {coff:.2f} ms: {(con - coff) / coff:+.1%} with it on")
    if kept:
        empty, full = statistics.median(by_size["empty"]), statistics.median(by_size["prefilled"])
        print(f"empty database: {empty:.0f} msg/s, {args.prefill:,} tickets prefilled: {full:.0f} msg/s "
              f"(medians of {len(by_size['empty'])}): {(full - empty) / empty:+.1%} on the big database "
              f"(issue 15: within 15%)")
    if roundup_dir:
        shutil.rmtree(roundup_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
