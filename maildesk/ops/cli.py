"""`maildesk [--config PATH] COMMAND`: what each command does with its arguments (the
grammar is ops/parser.py; the work is elsewhere).

Errors a user can fix (a config key, a bad value, an unknown ticket) are one clear
sentence on stderr and a non-zero exit status, never a traceback: 2 for the config
and the command line, 1 for everything else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import logging
import re
import sys
import textwrap
from typing import TYPE_CHECKING

from .. import __version__
from ..config import ConfigError, config_path, load_config
from ..errors import MaildeskError
from .parser import build_parser
from .startup import load_peewee

if TYPE_CHECKING:
    from ..service.runtime import Runtime


class UserError(MaildeskError):
    """A mistake the user can fix; the message says how."""

    def __init__(self, message: str, status: int = 1):
        self.status = status
        super().__init__(message)


# The commands that only read and print. Each lives about a tenth of a second, and
# Python's cyclic garbage collector, run again and again as the imports fill the heap,
# was about 5 ms of that; the little a read leaves in cycles goes with the process.
READS = frozenset({"tickets_list", "tickets_show", "inbound_list", "why", "outbox_list", "report", "status",
                   "kb_list", "kb_show"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv, __version__).parse_args(argv)
    if args.handler not in READS or not gc.isenabled():
        return _command(args)
    gc.disable()
    try:
        return _command(args)
    finally:
        gc.enable()  # a caller in the same process (the tests) gets it back


def _command(args) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if (args.verbose or args.command == "run") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.command == "run" else "%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with contextlib.suppress(ConfigError, OSError):  # a command that needs the config reports it
            load_peewee(_config(args, deep=False).database.url)
        return HANDLERS[args.handler](args) or 0
    except ConfigError as e:
        for problem in e.problems:
            print(f"maildesk: {problem}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"maildesk: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


# --- helpers ------------------------------------------------------------------------


def _page(args, command: str, rows_after) -> tuple[list[dict], str]:
    """The page of rows `rows_after(limit + 1, before)` asks for, and the command that
    shows the next one ("" when none follows)."""
    limit = _limit(args, "rows", "row")
    before = parse_id(args.before, "an id from the list for --before") if args.before else None
    rows = rows_after(None if limit is None else limit + 1, before)
    if limit is None or len(rows) <= limit:
        return rows, ""
    return rows[:limit], f"(older: maildesk {command} --limit {limit} --before {rows[limit - 1]['id']})"


def _limit(args, many: str, one: str) -> int | None:
    """--limit: how many a page holds, at least one (None when not given)."""
    limit = None if args.limit is None else min(parse_id(args.limit, f"a number of {many} such as 50 for --limit"), ID_MAX - 1)
    if limit is not None and limit < 1:
        raise UserError(f"--limit: a page holds at least 1 {one}", 2)
    return limit


def _config(args, deep: bool = True):
    loaded = vars(args).setdefault("_loaded", {})  # read once a command
    if deep not in loaded:
        loaded[deep] = load_config(config_path(args.config), deep)
    return loaded[deep]


def _open(args, migrate: bool = False):
    """Config, database and runtime, ready to use. Only `run` (migrate=True) checks
    the whole config; the commands that read need not load the holiday tables."""
    from ..service.runtime import Runtime

    return Runtime.start(_open_database(args, migrate))


def _open_database(args, migrate: bool = False, cfg=None):
    """The config, with its database open and up to date (migrated, for `run`)."""
    from .. import store

    cfg = cfg or _config(args, deep=migrate)
    try:
        store.open_database(cfg.database.url)
    except store.DatabaseUnavailable as e:
        raise UserError(f"{e} (check database.url)") from None
    pending = store.pending_migrations()
    if pending:
        if not migrate:
            raise UserError("the database is not set up or not up to date: run `maildesk init` first")
        applied = store.migrate()
        logging.getLogger("maildesk").info("database migrated: %s", ", ".join(applied))
        from ..desk.kbsearch import reindex

        reindex(cfg.kb.language)  # the knowledge base's indexes, when a migration made them anew
    return cfg


NOW_RANGE = (1970, 9000)  # the years --now may name
ID_MAX = 2**63 - 1  # the largest id or ticket number a database holds


def parse_id(text: str, what: str) -> int:
    """A row id or ticket number typed by the user: ASCII digits only ("²" is a digit to
    Python, not to us), and small enough for the database."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > ID_MAX:
        raise UserError(f"{text!r} is not {what}", 2)
    return int(text)


def parse_now(text: str, tz) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=tz)  # a time without offset is the desk's local time
        t = t.astimezone(dt.UTC)
    except ValueError:
        raise UserError(f"--now: {text!r} is not an ISO-8601 time such as 2026-11-27T16:30:00+01:00", 2) from None
    except OverflowError:
        t = None
    if t is None or not NOW_RANGE[0] <= t.year <= NOW_RANGE[1]:
        # the desk computes days and weeks around it: the ends of the calendar would overflow
        raise UserError(f"--now: {text!r} is out of range; give a time between the years {NOW_RANGE[0]} and {NOW_RANGE[1]}", 2)
    return t


def _ref_number(rt: Runtime, ref: str) -> int:
    """The number of a ticket reference typed by the user (`INC-42`, `[INC-42]`, `42`)."""
    m = re.fullmatch(r"\[?\s*(?:([A-Za-z][A-Za-z0-9]*)-)?([0-9]+)\s*\]?", ref.strip(), re.ASCII)
    if (not m or (m.group(1) and m.group(1).lower() != rt.cfg.desk.ticket_prefix.lower())
            or len(m.group(2)) > 19 or int(m.group(2)) > ID_MAX):
        raise UserError(f"{ref!r} is not a ticket reference such as {rt.cfg.desk.ticket_prefix}-42", 2)
    return int(m.group(2))


def _ticket(rt: Runtime, ref: str):
    from ..store import Ticket

    number = _ref_number(rt, ref)
    t = Ticket.get_or_none_by_id(number)
    if t is None:
        raise UserError(f"no ticket {rt.cfg.desk.ticket_prefix}-{number}")
    return t


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# --- commands -------------------------------------------------------------------------


def cmd_init(args) -> int:
    from .. import store
    from ..service.runtime import Runtime

    cfg = _config(args)
    try:
        store.open_database(cfg.database.url)
    except store.DatabaseUnavailable as e:
        raise UserError(f"{e} (check database.url)") from None
    applied = store.migrate()
    Runtime.start(cfg)  # makes the signing secret when there is no secret_file
    from ..desk.kbsearch import reindex

    if reindex(cfg.kb.language):
        print(f"knowledge-base indexes built for kb.language = {cfg.kb.language!r}")
    print(f"database ready at {store.redact(cfg.database.url)}"
          + (f": applied {', '.join(applied)}" if applied else ": already up to date"))
    return 0


def cmd_check_config(args) -> int:
    from ..mailout.render import check_overrides

    cfg = _config(args)
    problems = check_overrides(cfg)
    if problems:
        raise ConfigError(problems)
    print(f"{cfg.path}: OK ({len(cfg.groups)} groups, {len(cfg.technicians)} technicians, "
          f"{len(cfg.categories)} categories, {len(cfg.sla)} SLA policies)")
    return 0


def cmd_run(args) -> int:
    if args.now and not args.once:
        raise UserError("--now needs --once", 2)
    from ..service.lock import AlreadyRunning, DeskLock

    cfg = _config(args)
    lock = DeskLock.for_url(cfg.database.url or "")
    try:
        if lock is not None:
            lock.acquire()  # before the database is touched: one desk per SQLite file
    except AlreadyRunning as e:
        raise UserError(str(e)) from None
    except OSError as e:
        where = lock.path if lock is not None else cfg.database.url
        raise UserError(f"cannot lock {where}: {e.strerror} (check database.url and desk.state_dir)") from None
    try:
        return _run(args, cfg)
    finally:
        if lock is not None:
            lock.release()


def _run(args, cfg) -> int:
    import signal

    from ..service.profiling import profiled

    early: list[int] = []
    if not args.once:
        # a SIGTERM while the desk is still starting (systemd stopping it) is a clean stop too
        signal.signal(signal.SIGTERM, lambda signum, frame: early.append(signum))
    with profiled("desk"):
        cfg = _open_database(args, migrate=True, cfg=cfg)
        now = parse_now(args.now, cfg.desk.timezone) if args.now else None
        # the fetch processes start on the mail while this one loads the rest of maildesk
        from ..service.mailprocess import MailProcess

        fetchers = [MailProcess(cfg, "fetch", args.once, now, box) for box in cfg.mailboxes]
        from ..service.daemon import Daemon
        from ..service.runtime import Runtime

        daemon = Daemon(Runtime.start(cfg), fetchers)
        if args.once:
            return 0 if daemon.run_once(now) else 1
        if early:
            daemon.stop.set()
        daemon.run_forever()
    return 0


def cmd_tickets_list(args) -> int:
    from .views import PAGE, due, short, table, ticket_list

    rt = _open(args)
    limit = _limit(args, "tickets", "ticket") or PAGE
    before = _ref_number(rt, args.before) if args.before else None
    # one more than the page: whether an older page follows
    rows = ticket_list(rt, args.status, limit + 1, before)
    more, rows = len(rows) > limit, rows[:limit]
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no older tickets" if before else "no tickets")
    else:
        table([[r["ref"], r["status"], r["priority"], short(r["created_at"]), short(due(r)), r["category"],
                 r["group"], r["assignee"], r["requester"], r["subject"]] for r in rows],
               ["REF", "STATUS", "PRIORITY", "CREATED", "DUE", "CATEGORY", "GROUP", "ASSIGNEE", "REQUESTER", "SUBJECT"])
        if more:
            print("(older tickets: maildesk tickets list" + (f" --status {args.status}" if args.status else "")
                  + (f" --limit {limit}" if args.limit is not None else "") + f" --before {rows[-1]['ref']})")
    return 0


def cmd_tickets_show(args) -> int:
    from .views import ticket_detail

    rt = _open(args)
    d = ticket_detail(rt, _ticket(rt, args.ref), texts=args.json)  # the text view names the desk's mail by subject
    if args.json:
        _print_json(d)
        return 0
    print(f"{d['ref']}  {d['subject']}")
    for key in ("status", "requester", "category", "impact", "urgency", "priority", "group", "assignee", "sla_policy",
                "created_at", "response_due", "first_response_at", "resolution_due", "resolved_at", "closed_at",
                "closure_code", "parent", "follows"):
        if d.get(key) is not None:
            print(f"  {key.replace('_', ' '):<18} {d[key]}")
    if d["children"]:
        print(f"  {'children':<18} {', '.join(d['children'])}")
    print("\nMessages")
    for m in d["messages"]:
        flag = " [internal]" if m["internal"] else ""
        if m["direction"] == "out":
            who = f"to {m['to']}" + (f" [{m['delivery']}]" if m.get("delivery") not in (None, "sent") else "")
            print(f"  {m['created_at']}  out  {who}  ({m['kind']}){flag}  {m['subject']}")
            continue  # the desk's own mail: its subject says it; `--json` has the text
        print(f"  {m['created_at']}  {m['direction']:>3}  {m['from']}  ({m['kind']}){flag}")
        for line in (m["body"] or "").strip().splitlines()[:40]:
            print("      " + line)
        for a in m["attachments"]:
            print(f"      [attachment] {a['filename']} ({a['content_type']}, {a['size']:,} bytes)")
    if d["tasks"]:
        print("\nTasks")
        for k in d["tasks"]:
            print(f"  {k['number']}. [{'x' if k['done'] else ' '}] {k['title']}"
                  + (f" @{k['assignee']}" if k["assignee"] else ""))
    if d["survey"]:
        s = d["survey"]
        print(f"\nSurvey  sent {s['sent_at']}; rating {s['rating'] or '-'}" + (f"; {s['comment']}" if s["comment"] else ""))
    print("\nHistory")
    for e in d["events"]:
        print(f"  {e['at']}  {e['actor']:<24} {e['kind']:<16} {e['detail']}")
    return 0


def cmd_inbound_list(args) -> int:
    from .views import inbound_list, short, table

    rt = _open(args)
    rows, more = _page(args, "inbound list" + (" --failed" if args.failed else ""),
                       lambda limit, before: inbound_list(rt, args.failed, limit, before))
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no quarantined messages" if args.failed else "no inbound mail")
    else:
        table([[r["id"], short(r["received_at"]), r["status"], r["outcome"], r["ticket"], r["from"], r["subject"],
                 r["error"]] for r in rows],
               ["ID", "RECEIVED", "STATUS", "OUTCOME", "TICKET", "FROM", "SUBJECT", "ERROR"])
        if more:
            print(more)
    return 0


def cmd_inbound_retry(args) -> int:
    from ..pipeline import retry
    from ..store import Inbound, utcnow

    rt = _open(args)
    inbound_id = parse_id(args.id, "an inbound message id such as 42 (see `maildesk inbound list --failed`)")
    if Inbound.get_or_none(Inbound.id == inbound_id) is None:
        raise UserError(f"no inbound message with id {inbound_id} (see `maildesk inbound list --failed`)")
    ib = Inbound.get_by_id(inbound_id)
    if ib.status != "quarantined":
        raise UserError(f"inbound message {ib.id} is {ib.status}, not quarantined: nothing to retry")
    ib = retry(rt, ib.id, utcnow())
    if ib.status == "quarantined":
        print(f"inbound {ib.id} is still quarantined: {ib.error}")
        return 1
    if ib.status == "pending":
        print(f"inbound {ib.id} is pending: a running desk process holds its ticket and processes it next")
        return 0
    print(f"inbound {ib.id} processed: {ib.outcome}" + (f" on {rt.ref(ib.ticket_id)}" if ib.ticket_id else ""))
    return 0


def cmd_why(args) -> int:
    from ..store import Event, Inbound, Outbox

    rt = _open(args)
    mid = args.message_id.strip().strip("<>")
    rows = list(Inbound.select().where(Inbound.message_id == mid).order_by(Inbound.id))
    if not rows:
        out = Outbox.get_or_none(Outbox.message_id == mid)
        if out is not None:
            print(f"<{mid}> is mail the desk sent: {out.kind} to {out.rcpt}, {out.status}"
                  + (f" ({out.last_error})" if out.last_error else "")
                  + (f", on {rt.ref(out.ticket_id)}" if out.ticket_id else ""))
            return 0
        raise UserError(f"no stored message with Message-ID <{mid}>")
    for ib in rows:
        received = ib.received_at.astimezone(rt.cfg.desk.timezone).isoformat(timespec="seconds")
        print(f"<{mid}>  inbound #{ib.id}, received {received}, {ib.status}" + (f" ({ib.outcome})" if ib.outcome else "")
              + (f" -> {rt.ref(ib.ticket_id)}" if ib.ticket_id else ""))
        if ib.error:
            print(f"  error: {ib.error}")
        for line in (ib.decisions or "").splitlines():
            print("  - " + "\n    ".join(textwrap.wrap(line, 110)) if len(line) > 110 else "  - " + line)
        events = list(Event.select().where(Event.inbound == ib).order_by(Event.at, Event.id))
        if events:
            print("  changed:")
            for e in events:
                print(f"    {rt.ref(e.ticket_id)} {e.kind}: {e.detail}")
        queued = list(Outbox.select(Outbox.id, Outbox.kind, Outbox.rcpt, Outbox.status, Outbox.last_error)
                      .where(Outbox.inbound == ib).order_by(Outbox.id))
        if queued:
            print("  queued:")
            for o in queued:
                print(f"    #{o.id} {o.kind} to {o.rcpt}: {o.status}" + (f" ({o.last_error})" if o.last_error else ""))
    return 0


def cmd_outbox_list(args) -> int:
    from .views import outbox_list, short, table

    rt = _open(args)
    rows, more = _page(args, "outbox list", lambda limit, before: outbox_list(rt, limit, before))
    if args.json:
        _print_json(rows)
    elif not rows:
        print("the outbox is empty")
    else:
        table([[r["id"], short(r["created_at"]), r["status"], short(r["sent_at"] or r["next_attempt_at"]), r["kind"],
                 r["ticket"], r["to"], r["attempts"], r["subject"], r["last_error"] or r["rcpt_undeliverable"]]
                for r in rows],
               ["ID", "QUEUED", "STATUS", "SENT/NEXT TRY", "KIND", "TICKET", "TO", "TRIES", "SUBJECT", "NOTE"])
        if more:
            print(more)
    return 0


def _day_start(text: str, option: str, tz, days: int = 0) -> dt.datetime:
    """Midnight at the start of the date `text` (plus `days`), in the desk's zone."""
    try:
        day = dt.date.fromisoformat(text) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        raise UserError(f"{option}: {text!r} is not a date such as 2026-11-01", 2) from None
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


def cmd_report(args) -> int:
    from ..desk import kpis as report

    rt = _open(args)
    tz = rt.cfg.desk.timezone
    since = _day_start(args.since, "--since", tz) if args.since else None
    until = _day_start(args.until, "--until", tz, days=1) if args.until else None
    now = parse_now(args.now, tz) if args.now else None
    data = report.build(rt, since, now, until=until)
    if args.json:
        _print_json(data)
    else:
        print(report.as_text(data))
    return 0


def cmd_status(args) -> int:
    from ..store import utcnow
    from . import status

    rt = _open(args)
    now = parse_now(args.now, rt.cfg.desk.timezone) if args.now else utcnow()
    data = status.build(rt, now)
    if args.json:
        _print_json(data)
    else:
        print(status.as_text(data))
    return 0


def cmd_example_config(args) -> int:
    from . import shipped

    sys.stdout.write(shipped.example_config())
    return 0


def cmd_systemd_unit(args) -> int:
    from . import shipped

    sys.stdout.write(shipped.systemd_unit())
    return 0


def cmd_kb_list(args) -> int:
    from .views import article_list, table

    rt = _open(args)
    rows = article_list(rt)
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no articles: publish one with #kb in a technician's reply (with #resolve, or on a resolved ticket)")
    else:
        table([[r["ref"], "retired" if r["retired"] else "live", r["version"], r["use_count"], r["offered"],
                 r["category"], r["ticket"], r["title"]] for r in rows],
               ["ARTICLE", "STATE", "VERSION", "USED", "OFFERED", "CATEGORY", "TICKET", "TITLE"])
    return 0


def cmd_kb_show(args) -> int:
    from ..desk.kb import parse_number
    from ..store import KbArticle
    from .views import article_detail

    rt = _open(args)
    n = parse_number(args.number)
    if n is None:
        raise UserError(f"{args.number!r} is not an article number such as 7 or KB-7", 2)
    article = KbArticle.get_or_none_by_id(n)
    if article is None:
        raise UserError(f"no article KB-{n} (see `maildesk kb list`)")
    d = article_detail(rt, article)
    if args.json:
        _print_json(d)
        return 0
    print(f"{d['ref']}  {d['title']}" + ("  [retired]" if d["retired"] else ""))
    for key in ("category", "ticket", "version", "use_count", "offered", "created_at", "created_by", "updated_at",
                "updated_by", "retired_at"):
        if d.get(key) is not None:
            print(f"  {key.replace('_', ' '):<12} {d[key]}")
    print("\n" + d["text"])
    if len(d["versions"]) > 1:
        print("\nVersions")
        for v in d["versions"]:
            print(f"  {v['version']}. {v['created_at']}  {v['created_by']:<24} {v['title']}")
    return 0


# what runs each command, by the name ops/parser.py gives it
HANDLERS = {
    "init": cmd_init, "check_config": cmd_check_config, "run": cmd_run,
    "tickets_list": cmd_tickets_list, "tickets_show": cmd_tickets_show,
    "inbound_list": cmd_inbound_list, "inbound_retry": cmd_inbound_retry, "why": cmd_why,
    "outbox_list": cmd_outbox_list, "report": cmd_report, "status": cmd_status,
    "example_config": cmd_example_config, "systemd_unit": cmd_systemd_unit,
    "kb_list": cmd_kb_list, "kb_show": cmd_kb_show,
}


if __name__ == "__main__":
    sys.exit(main())
