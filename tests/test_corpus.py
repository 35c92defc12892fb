"""The real-world corpus end to end (issue 7, item 1; DESIGN sections 4 and 6,
../shared/corpus/README.md "What the desk must do with them").

Every `message` row of the corpus manifest is appended to one desk's mailbox through
Dovecot and processed by `maildesk run --once`. Then:

- every file ends as exactly one inbound row, processed with an allowed outcome or
  quarantined with a reason; none is left pending;
- nothing automatic (list/bulk, Auto-Submitted, null Return-Path, reports, mail from a
  mailer-daemon or postmaster) is answered;
- every stored text (bodies, subjects, names, filenames) is valid Unicode without
  surrogates or NUL, header text is one line, and none has U+FFFD where the source
  decodes cleanly or UTF-8 misread as Windows-1252;
- nothing in either process logs an exception;
- the daemon (`maildesk run`, a real subprocess) on a second desk lives through the
  whole corpus and stops cleanly on SIGTERM.

A table of outcomes by category is printed and written to `corpus-outcomes.txt` in the
test's temporary directory. The corpus is read where it lies (conftest.find_corpus); the tests
are skipped when it is absent.

How files map to inbound rows: Dovecot hands messages back with CRLF line ends, and the
desk stores a message once per SHA-256 of the bytes it fetched (guarantee 2). So each
file is followed through its UID to the bytes Dovecot serves, and from their digest to
the one inbound row; files whose served bytes equal an earlier file's ("same bytes",
whether the manifest lists them in `duplicate_of` or they differ only in line ends)
share that row and are counted as such.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import email.parser
import email.policy
import hashlib
import logging
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from maildesk.mailin.mime.headers import getaddresses
from tests.conftest import Desk, wait_until

pytestmark = pytest.mark.slow

from tests.conftest import CORPUS  # noqa: E402

# What a corpus message may become (README: a new ticket, a reply on a ticket, a
# recorded bounce or automatic mail, or a quarantined message with a reason).
# "duplicate" is a message whose Message-ID an earlier message already brought
# (guarantee 2: no message counts twice); it is checked against that earlier one.
ALLOWED_OUTCOMES = {"new-ticket", "reply", "bounce", "automatic", "complaint", "duplicate"}

# The manifest's tags for mail that must never be answered (README).
NO_ACK_TAGS = {"no-ack:list/bulk", "null-return-path", "from-mailer-daemon"}
NO_ACK_PREFIXES = ("auto-submitted:", "report:")
ROBOT_LOCAL_PARTS = ("mailer-daemon", "postmaster")

_SURROGATES = re.compile("[\ud800-\udfff]")
_FFFD = "\ufffd".encode()  # a source that holds U+FFFD itself may pass it on
# Runs of characters that Windows-1252 makes of 8-bit bytes; such a run that is valid
# UTF-8 once turned back into bytes is UTF-8 read as Windows-1252 ("Ã¼" for "ü").
_CP1252_RUN = re.compile("[\u0080-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
                         "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]{2,}")


def _mojibake(text: str) -> list[str]:
    found = []
    for run in _CP1252_RUN.findall(text):
        try:
            if not run.encode("cp1252").decode("utf-8").isascii():
                found.append(run)
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
    return found


# Files whose header text (subject, names, filenames) cannot be decoded whole, so that
# a U+FFFD in what the desk stored of it is honest. Each with the reason.
UNDECODABLE_HEADERS = {
    # Yahoo cut the UTF-8 attachment name inside its last character
    "flanker/files/tests/fixtures/messages/russian-attachment-yahoo.eml",
    # a Cyrillic UTF-8 display name ending in a stray byte 0xF1
    "flanker/files/tests/fixtures/messages/mailformed-headers.eml",
}


# --- the corpus -----------------------------------------------------------------------------


@dataclass
class CorpusMail:
    file: str
    source: str
    category: str
    tags: set[str]
    duplicate_of: str
    raw: bytes
    automatic: str | None = None  # why it must not be answered, or None
    senders: set[str] = field(default_factory=set)  # From addresses, lower case
    uid: int | None = None
    served: bytes = b""  # the bytes Dovecot hands out for it
    sha256: str = ""


def _load_corpus() -> list[CorpusMail]:
    manifest = CORPUS / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"no corpus at {CORPUS} (set MAILDESK_CORPUS)")
    mails = []
    with manifest.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["kind"] != "message":
                continue
            raw = (CORPUS / row["file"]).read_bytes()
            tags = {t for t in row["tags"].split(";") if t}
            mail = CorpusMail(row["file"], row["source"], row["category"], tags, row["duplicate_of"], raw)
            head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
            try:
                froms = [str(v) for v in head.get_all("From", [])]
                mail.senders = {a.lower() for _, a in getaddresses(froms) if "@" in a}
            except Exception:  # noqa: BLE001 - an unreadable From: nothing to compare with
                mail.senders = set()
            mail.automatic = _why_automatic(tags, mail.senders)
            mails.append(mail)
    assert mails, f"{manifest} lists no message"
    return mails


def _why_automatic(tags: set[str], senders: set[str]) -> str | None:
    for tag in sorted(tags):
        if tag in NO_ACK_TAGS or (tag.startswith(NO_ACK_PREFIXES) and tag != "auto-submitted:no"):
            return tag
    for addr in senders:
        if addr.split("@", 1)[0] in ROBOT_LOCAL_PARTS:
            return f"from {addr}"
    return None


def _decodable(raw: bytes) -> bool:
    """True when every text part of the message can be read without guessing: it
    decodes with the charset it declares (us-ascii when it declares none) under a name
    Python knows, or it is labelled UTF-8 but holds not one UTF-8 sequence, only
    Latin-1 bytes (a common mislabel). Then the desk has no excuse for a U+FFFD."""
    try:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
        for part in msg.walk():
            if part.get_content_maintype() != "text":
                continue
            data = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "us-ascii"
            try:
                if "\ufffd" in data.decode(charset, "strict"):
                    return False
            except UnicodeDecodeError:
                as_utf8 = data.decode("utf-8", "replace")
                if codecs.lookup(charset).name not in ("utf-8", "ascii") or any(
                        "\x7f" < c != "\ufffd" for c in as_utf8):
                    return False
    except Exception:  # noqa: BLE001 - unknown charset, broken MIME
        return False
    return True


# --- one desk, the whole corpus, one run ------------------------------------------------------


def _log_file(path: Path) -> logging.Handler:
    """INFO and above, from this process and from the mail process it forks (which
    inherits the handler), appended to one file."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))
    return handler


@dataclass
class CorpusRun:
    desk: Desk
    mails: list[CorpusMail]
    inbound: dict[int, dict]  # id -> `inbound list --json` row, with uid and sha256 added
    by_sha: dict[str, dict]
    messages: dict[int, list[dict]]  # inbound id -> stored ticket messages
    attachments: dict[int, list[str]]  # inbound id -> stored attachment filenames
    outbox: dict[int, list[dict]]  # inbound id -> outbox rows it queued
    outbox_by_msgid: dict[str, dict]
    captured: list  # what the SMTP sink received
    staff: set[str]
    log: str
    seconds: dict[str, float]
    inbound_after_second_run: int


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, dovecot, smtp):
    mails = _load_corpus()
    tmp = tmp_path_factory.mktemp("corpus")
    desk = Desk(tmp, dovecot, smtp, f"sqlite:///{tmp / 'state' / 'maildesk.db'}")
    code, _, err = desk.cli("init")
    assert code == 0, err
    seconds = {}

    started = time.monotonic()
    uids = dovecot.append_many(desk.user, [m.raw for m in mails])
    assert len(uids) == len(mails), f"Dovecot took {len(uids)} of {len(mails)} corpus messages"
    served = {uid: raw for uid, _flags, raw in desk.imap_messages()}
    for m, uid in zip(mails, uids, strict=True):
        m.uid, m.served = uid, served[uid]
        m.sha256 = hashlib.sha256(m.served).hexdigest()
    seconds["append"] = time.monotonic() - started

    log_path = tmp / "maildesk.log"
    handler = _log_file(log_path)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # setLevel, not .level =: it clears the loggers' isEnabledFor cache
    try:
        started = time.monotonic()
        desk.run()
        seconds["run --once"] = time.monotonic() - started
        captured = list(smtp.messages)
        count_after_first = len(desk.inbound())
        started = time.monotonic()
        desk.run()  # the mailbox is done: nothing is fetched or processed again
        seconds["second run --once"] = time.monotonic() - started
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()

    from maildesk import store
    from maildesk.store import Attachment, Inbound, Message, Outbox

    rows = {r["id"]: r for r in desk.inbound()}  # binds the models to this desk's database
    for ib_id, uid, sha in Inbound.select(Inbound.id, Inbound.uid, Inbound.sha256).tuples():
        rows[ib_id].update(uid=uid, sha256=sha)
    messages = collections.defaultdict(list)
    for m in Message.select().where(Message.inbound.is_null(False)).dicts():
        messages[m["inbound"]].append(m)
    attachments = collections.defaultdict(list)
    for inbound_id, filename in (Attachment.select(Message.inbound, Attachment.filename).join(Message)
                                 .where(Message.inbound.is_null(False)).tuples()):
        attachments[inbound_id].append(filename)
    outbox = collections.defaultdict(list)
    outbox_by_msgid = {}
    for o in Outbox.select().dicts():
        outbox[o["inbound"]].append(o)
        outbox_by_msgid[o["message_id"]] = o
    cfg = desk.config
    staff = {t["email"] for t in cfg["technicians"]} | {g["manager"] for g in cfg["groups"] if "manager" in g}
    staff |= set(cfg["roles"]["incident_managers"])
    run = CorpusRun(
        desk=desk, mails=mails, inbound=rows, by_sha={r["sha256"]: r for r in rows.values()}, messages=messages,
        attachments=attachments,
        outbox=outbox, outbox_by_msgid=outbox_by_msgid, captured=captured, staff=staff,
        log=log_path.read_text(encoding="utf-8", errors="replace"), seconds=seconds,
        inbound_after_second_run=len(rows) - count_after_first,
    )
    yield run
    if store.db.obj is not None:
        store.db.obj.close()


def _row(run: CorpusRun, m: CorpusMail) -> dict | None:
    return run.by_sha.get(m.sha256)


def _first_with_bytes(run: CorpusRun) -> dict[str, CorpusMail]:
    first: dict[str, CorpusMail] = {}
    for m in run.mails:
        first.setdefault(m.sha256, m)
    return first


def _outcome(run: CorpusRun, m: CorpusMail, first: dict[str, CorpusMail]) -> str:
    if first[m.sha256] is not m:
        return "same-bytes"
    row = _row(run, m)
    if row is None:
        return "missing"
    return row["outcome"] if row["status"] == "processed" else row["status"]


# --- the checks -------------------------------------------------------------------------------


def test_every_corpus_message_ends_as_exactly_one_outcome(corpus_run):
    run = corpus_run
    first = _first_with_bytes(run)
    problems = []
    # one row per distinct message, and no row that is not a corpus message
    assert set(run.by_sha) == set(first), (
        f"{len(set(first) - set(run.by_sha))} corpus message(s) never stored, "
        f"{len(set(run.by_sha) - set(first))} stored row(s) from nowhere")
    assert len(run.inbound) == len(first)
    by_file = {m.file: m for m in run.mails}
    for m in run.mails:  # what the manifest calls a duplicate is the same message, stored once
        if m.duplicate_of in by_file:
            assert m.sha256 == by_file[m.duplicate_of].sha256, f"{m.file} is no copy of {m.duplicate_of}"
    assert run.inbound_after_second_run == 0, "the second run stored messages again"
    for m in run.mails:
        row = _row(run, m)
        if first[m.sha256] is not m:
            continue  # same bytes as an earlier file: one row for both, checked there
        assert row["uid"] == m.uid, f"{m.file}: stored from UID {row['uid']}, appended as {m.uid}"
        if row["status"] == "pending":
            problems.append(f"{m.file}: left pending")
        elif row["status"] == "quarantined":
            if not (row["error"] or "").strip():
                problems.append(f"{m.file}: quarantined without a reason")
            if row["outcome"] != "quarantined" or row["ticket"] is not None:
                problems.append(f"{m.file}: quarantined with outcome {row['outcome']}, ticket {row['ticket']}")
        elif row["status"] != "processed":
            problems.append(f"{m.file}: status {row['status']!r}")
        elif row["outcome"] not in ALLOWED_OUTCOMES:
            problems.append(f"{m.file}: outcome {row['outcome']!r} ({row['error']})")
        elif row["outcome"] in ("new-ticket", "reply"):
            stored = run.messages.get(row["id"], [])
            if row["ticket"] is None or len(stored) != 1:
                problems.append(f"{m.file}: {row['outcome']} on {row['ticket']} with {len(stored)} stored message(s)")
        elif row["outcome"] == "duplicate":
            # guarantee 2: a message that counts once already changes nothing and is not answered
            earlier = [r for r in run.inbound.values()
                       if r["message_id"] == row["message_id"] and r["id"] < row["id"] and r["ticket"]]
            if not row["message_id"] or not earlier:
                problems.append(f"{m.file}: duplicate of no earlier message with <{row['message_id']}>")
            if run.messages.get(row["id"]) or run.outbox.get(row["id"]):
                problems.append(f"{m.file}: a duplicate, yet stored or answered")
        else:  # recorded automatic mail: at most one internal note on the ticket it concerns
            stored = run.messages.get(row["id"], [])
            if len(stored) > 1 or (stored and (row["ticket"] is None or not stored[0]["internal"])):
                problems.append(f"{m.file}: {row['outcome']} stored as {len(stored)} message(s) on {row['ticket']}")
        if row["status"] == "processed" and row["error"]:
            problems.append(f"{m.file}: processed, yet with error {row['error']!r}")
    assert not problems, f"{len(problems)} corpus message(s) misbehaved:\n" + "\n".join(problems)


def test_quarantine_reasons_are_limits_not_crashes(corpus_run):
    """A quarantine must be the desk refusing what breaks a limit, in words; an
    exception's type name in the reason means a stage or the parser crashed on it."""
    run = corpus_run
    first = _first_with_bytes(run)
    crashes = []
    for m in run.mails:
        row = _row(run, m)
        if first[m.sha256] is m and row["status"] == "quarantined":
            if re.match(r"(cannot parse: )?[A-Z]\w*(Error|Exception|Defect)\b", row["error"] or ""):
                crashes.append(f"{m.file}: {row['error']}")
    assert not crashes, "quarantined by a crash, not a limit:\n" + "\n".join(crashes)


def test_no_exception_is_logged_by_either_process(corpus_run):
    # both processes are heard: the mail process fetches, this one processes
    assert "fetched mailbox=INBOX" in corpus_run.log and "processed inbound=" in corpus_run.log
    records = re.split(r"(?m)^(?=\d+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) )", corpus_run.log)
    errors = [r for r in records if "Traceback (most recent call last)" in r or re.match(r"\d+ (ERROR|CRITICAL) ", r)]
    assert not errors, f"{len(errors)} error(s) in the log:\n" + "\n".join(r[:3000] for r in errors[:10])


def test_nothing_automatic_is_answered(corpus_run):
    """DESIGN 4: the desk never answers automatic mail. Whatever an automatic message
    made the desk queue (acknowledgement or any other mail) may only go to staff:
    a list or bulk message may open a ticket, whose assignment tells a technician."""
    run = corpus_run
    first = _first_with_bytes(run)
    answered = []
    for m in run.mails:
        if m.automatic is None or first[m.sha256] is not m:
            continue
        row = _row(run, m)
        for o in run.outbox.get(row["id"], []):
            if o["kind"] == "ack" or o["rcpt"] not in run.staff:
                answered.append(f"{m.file} ({m.automatic}; outcome {row['outcome']}): "
                                f"{o['kind']} to {o['rcpt']}, {o['status']}")
    assert not answered, f"{len(answered)} answer(s) to automatic mail:\n" + "\n".join(answered)


def test_no_captured_acknowledgement_went_to_an_automatic_message(corpus_run):
    """The same, from the wire: each acknowledgement the SMTP sink received is traced
    through its Message-ID to the inbound message that caused it."""
    run = corpus_run
    first = _first_with_bytes(run)
    by_inbound = {}
    for m in run.mails:
        by_inbound.setdefault(run.by_sha[m.sha256]["id"], []).append(m)
    acks = [c for c in run.captured if c.header("Auto-Submitted") == "auto-replied"]
    wrong = []
    for c in acks:
        o = run.outbox_by_msgid.get((c.message_id or "").strip("<>"))
        assert o is not None, f"captured mail {c.message_id} to {c.rcpts} is in no outbox row"
        if o["kind"] != "ack":
            continue
        caused_by = by_inbound.get(o["inbound"], [])
        assert caused_by, f"ack {c.message_id} to {c.rcpts} caused by no corpus message"
        for m in caused_by:
            if m.automatic and first[m.sha256] is m:
                wrong.append(f"{m.file} ({m.automatic}): ack to {c.rcpts}")
    assert not wrong, "acknowledged automatic mail:\n" + "\n".join(wrong)
    print(f"\n{len(acks)} acknowledgement(s) sent for {len(run.mails)} corpus messages")


def test_stored_text_is_readable_unicode(corpus_run):
    """DESIGN 6.4 and the corpus README: whatever the charset, declared or not, what
    the desk stores is text: valid Unicode without surrogates or NUL, header-derived
    text on one line, no U+FFFD where the source decodes cleanly, and no UTF-8 read
    as Windows-1252 ("Ã¼" for "ü") unless the source itself holds it so."""
    run = corpus_run
    first = _first_with_bytes(run)
    broken, replaced, mojibake = [], [], []
    by_charset = collections.Counter()
    replaced_by_charset = collections.Counter()
    for m in run.mails:
        if first[m.sha256] is not m:
            continue
        row = _row(run, m)
        stored = run.messages.get(row["id"], [])
        lines = {"inbound subject": row["subject"] or "", "inbound from": row["from"] or ""}
        for i, msg in enumerate(stored):
            lines[f"message {i} subject"] = msg["subject"]
            lines[f"message {i} from name"] = msg["from_name"]
        for i, name in enumerate(run.attachments.get(row["id"], [])):
            lines[f"attachment {i} filename"] = name
        texts = dict(lines, **{f"message {i} body": msg["body"] for i, msg in enumerate(stored)})
        for what, text in texts.items():
            if not isinstance(text, str) or _SURROGATES.search(text) or "\x00" in text:
                broken.append(f"{m.file}: {what} is not clean Unicode: {text!r:.200}")
            elif what in lines and ("\n" in text or "\r" in text):
                broken.append(f"{m.file}: {what} is not one line: {text!r:.200}")
            elif what in lines and "\ufffd" in text and _FFFD not in m.served and m.file not in UNDECODABLE_HEADERS:
                replaced.append(f"{m.file}: U+FFFD in the {what}: {text!r:.200}")
            for garbled in _mojibake(text) if isinstance(text, str) else ():
                if garbled.encode("utf-8") not in m.served:  # else the source holds it so
                    mojibake.append(f"{m.file}: {what} holds {garbled!r}, UTF-8 read as Windows-1252: "
                                    f"{text!r:.120}")
                    break
        bodies = [msg["body"] for msg in stored]
        fffd = any("\ufffd" in b for b in bodies)
        for c in sorted(t for t in m.tags if t.startswith("charset:")):
            by_charset[c] += 1
            replaced_by_charset[c] += fffd
        if fffd and _FFFD not in m.served and _decodable(m.served):
            replaced.append(f"{m.file}: U+FFFD in the stored body, though every text part can be decoded")
    print("\nstored bodies with U+FFFD, by declared charset tag:")
    for c, n in sorted(by_charset.items()):
        print(f"  {c:<40} {replaced_by_charset[c]:>3} of {n}")
    assert not broken, "\n".join(broken)
    assert not replaced, "\n".join(replaced)
    assert not mojibake, "\n".join(mojibake)


def test_outcome_table_by_category(corpus_run, request):
    run = corpus_run
    first = _first_with_bytes(run)
    counts = collections.defaultdict(collections.Counter)
    for m in run.mails:
        counts[m.category][_outcome(run, m, first)] += 1
    columns = sorted({o for c in counts.values() for o in c}, key=lambda o: (o in ("same-bytes", "quarantined"), o))
    width = max(len(c) for c in counts) + 2
    lines = [f"{'category':<{width}}" + "".join(f"{o:>13}" for o in columns) + f"{'total':>8}"]
    for category in sorted(counts):
        row = counts[category]
        cells = "".join(f"{row[o] or '':>13}" for o in columns)
        lines.append(f"{category:<{width}}{cells}{sum(row.values()):>8}")
    total = collections.Counter()
    for row in counts.values():
        total.update(row)
    lines.append(f"{'total':<{width}}" + "".join(f"{total[o]:>13}" for o in columns) + f"{sum(total.values()):>8}")
    quarantined = [f"  {m.file}: {_row(run, m)['error']}" for m in run.mails
                   if first[m.sha256] is m and _row(run, m)["status"] == "quarantined"]
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
    text = "\n".join([f"corpus outcomes ({len(run.mails)} messages from {CORPUS}; {timing})", *lines, "",
                      f"quarantined ({len(quarantined)}):", *quarantined]) + "\n"
    (run.desk.tmp / "corpus-outcomes.txt").write_text(text, encoding="utf-8")
    capman = request.config.pluginmanager.getplugin("capturemanager")  # shown without -s too
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print("\n" + text + f"(also in {run.desk.tmp / 'corpus-outcomes.txt'})")
    assert sum(total.values()) == len(run.mails)
    assert total["missing"] == 0 and total["pending"] == 0


# --- the daemon lives through it --------------------------------------------------------------


def test_the_daemon_lives_through_the_whole_corpus_and_stops_on_sigterm(desk):
    mails = _load_corpus()
    proc = desk.spawn("run")
    err_lines: list[bytes] = []
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    drain.start()  # the daemon logs a line per message: a full pipe would block it
    try:
        started = time.monotonic()
        desk.dovecot.append_many(desk.user, [m.raw for m in mails])
        # one row per distinct message as Dovecot serves it (CRLF line ends)
        distinct = len({hashlib.sha256(raw).digest() for _uid, _flags, raw in desk.imap_messages()})

        def settled():
            if proc.poll() is not None:
                raise AssertionError("the daemon died on the corpus:\n"
                                     + b"".join(err_lines).decode(errors="replace")[-5000:])
            rows = desk.inbound()
            return len(rows) >= distinct and not any(r["status"] == "pending" for r in rows) and rows

        rows = wait_until(settled, timeout=90, interval=1.0, what="the daemon to store and process the corpus")
        elapsed = time.monotonic() - started
        assert proc.poll() is None, ("the daemon died on the corpus:\n"
                                     + b"".join(err_lines).decode(errors="replace")[-5000:])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # the assertion on the exit status below reports it
            proc.wait()
        drain.join(timeout=5)
    err = b"".join(err_lines).decode(errors="replace")
    assert proc.returncode == 0, err[-5000:]
    assert "maildesk stopped" in err
    assert len(rows) == distinct
    assert "Traceback" not in err, err[err.index("Traceback") - 500:][:5000]
    errors = [line for line in err.splitlines() if re.search(r" (ERROR|CRITICAL) ", line)]
    assert not errors, "\n".join(errors[:20])
    print(f"\nthe daemon processed {len(rows)} corpus messages in {elapsed:.1f} s")
