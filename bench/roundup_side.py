"""The Roundup half of `bench/ingest.py --vs-roundup`: time Roundup's mail gateway on given mail.

`run_roundup(mails)` installs Roundup from PyPI into a throwaway venv, makes a fresh
"classic" tracker on SQLite, writes the mails to an mbox file and times one run of

    roundup-mailgw <tracker> mailbox <file>

(Roundup calls its mbox source "mailbox"). Roundup then does its normal work for every
message: it parses it, finds or creates the author's user, threads it to an existing
issue (exact `In-Reply-To` match on a stored message-id, an `[issueN]` subject tag, or a
"Re: <title>" subject) or creates a new issue, stores the message and its attachments
(an HTML alternative becomes an attached file), updates the full-text index and runs the
nosy reactor, which builds notification mail for the nosy list.

Note that Roundup re-opens the tracker (re-reading schema.py and the detectors) for every
message, and gives every new sender a user with a random password hashed with
PBKDF2-SHA512 at 250,000 rounds (its default), which costs about 0.3 s of CPU per new
sender here: on mail where most threads come from a new address that dominates the
time. `pbkdf2_rounds=1000` (Roundup's minimum) takes it out, to see the rest.

What is timed: that one process, wall clock, from exec to exit, so it includes Python
start-up, importing Roundup and opening the tracker (a fixed cost, reported as
"startup_seconds" from an untimed run on an empty mbox, and not subtracted).
What is not timed: pip, tracker installation and initialisation, writing the mbox, the
warm-up run, and counting the results afterwards.

Settings changed from the classic template, each needed to accept all mail:
- schema.py: the Anonymous role gets "Email Access", so mail from unknown senders
  registers them as users (with `new_email_user_roles = User`); without it Roundup bounces
  every message from an unknown address.
- `[mailgw] convert_htmltotext = dehtml` (Roundup's own converter): with the default
  `none`, mail without a text/plain part is bounced.
- `[mailgw] subject_prefix_parsing / subject_suffix_parsing = loose`: with `strict`, a
  subject such as "[URGENT] ..." is taken as a class name and bounced.
- `[tracker] email` is set to the address most of the mail is sent To:, so the desk's own
  address is not registered as a user and put on every nosy list.
- `[mail] debug = outgoing-mail.txt`: outgoing mail (nosy messages, bounces) is written to
  that file instead of going to an SMTP server. Roundup still builds every such mail.
Rejected messages are bounced into that same file; they are counted and reported, as
are messages Roundup drops with only a log line (no From:), and issue counts that differ
from the threads in the mail (Roundup threads on In-Reply-To, not on References alone).
Roundup reads the mbox with Python's `mailbox`, which does not undo the ">From " escaping
of body lines, so those lines are stored with the ">".
"""

from __future__ import annotations

import collections
import configparser
import email.message
import email.utils
import mailbox
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

ROUNDUP_REQUIREMENT = "roundup"  # newest from PyPI; the version used is returned
ADMIN_PASSWORD = "bench-admin-password"
DEBUG_MAIL = "outgoing-mail.txt"
BOUNCE_SUBJECTS = ("Failed issue tracker submission", "Mail Gateway Help")


def _run(cmd: list, quiet: bool, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if not quiet and (proc.stdout or proc.stderr):
        print(proc.stdout + proc.stderr, end="", file=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def _venv(workdir: Path, quiet: bool) -> Path:
    """The venv's bin directory; creates the venv and installs Roundup unless it is already there."""
    venv = workdir / "roundup-venv"
    bin_dir = venv / "bin"
    probe = [bin_dir / "python", "-c", "import roundup.scripts.roundup_mailgw"]
    if (bin_dir / "roundup-mailgw").exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return bin_dir
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", venv], quiet)
    _run([bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", ROUNDUP_REQUIREMENT], quiet)
    return bin_dir


def _headers(raw: bytes) -> email.message.Message:
    return BytesHeaderParser(policy=compat32).parsebytes(raw)


def _desk_address(mails: list[bytes]) -> str:
    """The To: address most of the mails are sent to (the help desk's address)."""
    seen = collections.Counter()
    for raw in mails[:500]:
        head = _headers(raw)
        seen.update(addr.lower() for _, addr in email.utils.getaddresses(head.get_all("To", [])) if "@" in addr)
    return seen.most_common(1)[0][0] if seen else "helpdesk@tracker.example"


def _make_tracker(bin_dir: Path, home: Path, desk: str, quiet: bool, pbkdf2_rounds: int | None = None) -> None:
    domain = desk.rsplit("@", 1)[1]
    options = [  # (section, option, value) in config.ini
        ("tracker", "web", "http://localhost:8917/"),
        ("tracker", "email", desk),
        ("mail", "domain", domain),
        ("mail", "debug", DEBUG_MAIL),
        ("main", "new_email_user_roles", "User"),
        ("mailgw", "convert_htmltotext", "dehtml"),
        ("mailgw", "subject_prefix_parsing", "loose"),
        ("mailgw", "subject_suffix_parsing", "loose"),
    ]
    if pbkdf2_rounds:
        options.append(("main", "password_pbkdf2_default_rounds", str(pbkdf2_rounds)))
    # roundup-admin names an option section_option, except in [main]
    settings = ",".join(f"{opt if sec == 'main' else sec + '_' + opt}={value}" for sec, opt, value in options)
    admin = bin_dir / "roundup-admin"
    _run([admin, "-i", home, "install", "classic", "sqlite", settings], quiet)
    config = configparser.RawConfigParser()
    config.read(home / "config.ini")
    for section, option, value in options:
        if config.get(section, option, fallback=None) != value:
            raise RuntimeError(f"roundup-admin install did not set [{section}] {option} = {value} in config.ini")
    schema = home / "schema.py"
    text = schema.read_text()
    line = "db.security.addPermissionToRole('Anonymous', 'Email Access')"
    if "#" + line not in text:
        raise RuntimeError("classic schema.py changed: cannot grant Anonymous 'Email Access'")
    schema.write_text(text.replace("#" + line, line))
    _run([admin, "-i", home, "initialise", ADMIN_PASSWORD], quiet)


def _write_mbox(mails: list[bytes], path: Path) -> None:
    box = mailbox.mbox(str(path))  # adds a From_ line and escapes body lines starting with "From "
    try:
        for raw in mails:
            box.add(raw.replace(b"\r\n", b"\n"))
    finally:
        box.close()


def _count(home: Path) -> dict:
    with sqlite3.connect(home / "db" / "db") as db:
        n = lambda table: db.execute(f"SELECT count(*) FROM _{table} WHERE __retired__ = 0").fetchone()[0]  # noqa: E731
        return {"issues": n("issue"), "msgs": n("msg"), "users": n("user"), "files": n("file")}


def _expected_issues(mails: list[bytes]) -> int:
    """Mails that start a thread: no In-Reply-To/References naming an earlier mail of the set."""
    seen: set[str] = set()
    new = 0
    for raw in mails:
        head = _headers(raw)
        refs = set(re.findall(r"<[^>]+>", f"{head.get('In-Reply-To', '')} {head.get('References', '')}"))
        new += not (refs & seen)
        seen.add(str(head.get("Message-ID", "")).strip())
    return new


def run_roundup(mails: list[bytes], workdir: Path | None = None, *, quiet: bool = True,
                pbkdf2_rounds: int | None = None) -> dict:
    """Time `roundup-mailgw <tracker> mailbox <mbox>` on `mails` in a fresh classic SQLite tracker.

    The venv is kept in `workdir` (default: a fresh temporary directory, removed afterwards)
    and reused by later calls with the same `workdir`; the tracker is removed unless
    something failed.
    Returns {"messages", "seconds", "rate", "issues", "version", "errors"} plus
    "expected_issues", "msgs", "users", "files", "bounced", "startup_seconds".
    "errors" is "" when every message was stored and threading matched the expectation.
    `pbkdf2_rounds` overrides Roundup's password hashing cost (default 250,000 rounds of
    PBKDF2-SHA512, about 0.3 s per new sender on this machine; Roundup's minimum is 1000).
    """
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="roundup-bench-")) if own_dir else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bin_dir = _venv(workdir, quiet)
    version = _run([bin_dir / "python", "-c", "import roundup; print(roundup.__version__)"], True).stdout.strip()

    home = Path(tempfile.mkdtemp(prefix="tracker-", dir=workdir))
    _make_tracker(bin_dir, home, _desk_address(mails), quiet, pbkdf2_rounds)
    mailgw = [bin_dir / "roundup-mailgw", home, "mailbox"]
    empty = home / "empty.mbox"
    empty.touch()
    t0 = time.perf_counter()  # warm-up: compiles the tracker, fills the OS cache; untimed
    _run(mailgw + [empty], quiet)
    startup = time.perf_counter() - t0
    box = home / "incoming.mbox"
    _write_mbox(mails, box)

    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in mailgw + [box]], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0

    counts = _count(home)
    debug = home / DEBUG_MAIL
    outgoing = debug.read_text(errors="replace") if debug.exists() else ""
    bounced = sum(len(re.findall(rf"^Subject: {s}", outgoing, re.M)) for s in BOUNCE_SUBJECTS)
    expected = _expected_issues(mails)
    errors = []
    if proc.returncode != 0:
        errors.append(f"roundup-mailgw exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}")
    else:  # e.g. a message without From: is logged ("Badly formed message") and dropped
        output = proc.stdout + proc.stderr  # Roundup logs to stdout
        logged = [line for line in output.splitlines() if " ERROR " in line]
        if logged:
            errors.append(f"{len(logged)} errors logged, first: {logged[0][-200:]}")
        if output.strip() and not quiet:
            print(output, file=sys.stderr)
    if bounced:
        errors.append(f"{bounced} of {len(mails)} messages bounced (see {debug})")
    if counts["msgs"] != len(mails):
        errors.append(f"{counts['msgs']} messages stored of {len(mails)}")
    if counts["issues"] != expected:
        errors.append(f"{counts['issues']} issues, expected {expected} (one per thread)")
    if errors:
        errors.append(f"tracker kept in {home}")
    else:
        shutil.rmtree(workdir if own_dir else home, ignore_errors=True)
    return {
        "messages": len(mails), "seconds": seconds, "rate": len(mails) / seconds, "issues": counts["issues"],
        "version": version, "errors": "; ".join(errors), "expected_issues": expected, "msgs": counts["msgs"],
        "users": counts["users"], "files": counts["files"], "bounced": bounced, "startup_seconds": startup,
    }


def _test_mails(n: int = 200) -> list[bytes]:
    """N simple help-desk mails: new incidents from several senders, about a third of them
    replies (In-Reply-To and References to an earlier mail of the thread); one in 200 has an
    HTML alternative and one in 200 is Latin-1 with an RFC 2047 subject."""
    from email.header import Header
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    senders = [f"{name}@corp.example" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace")]
    problems = ["Printer prints blank pages", "VPN drops every hour", "Password expired", "Outlook keeps asking",
                "Wifi down in room", "Need a second monitor", "Shared drive is read-only"]
    threads: list[tuple[str, str, str]] = []  # (subject, requester, last message-id)
    mails = []
    for i in range(n):
        if threads and i % 3 == 2:
            k = (i * 7) % len(threads)
            subject, sender, parent = threads[k]
            sender = sender if i % 2 else senders[i % len(senders)]  # the requester or a colleague
            subject = "Re: " + subject
            body = f"Hello,\n\nstill broken, tried again at 10:{i % 60:02d}.\n\n> earlier message\n"
        else:
            subject = f"{problems[i % len(problems)]} (case {i})"
            sender = senders[i % len(senders)]
            parent = None
            body = f"Hello,\n\n{problems[i % len(problems)].lower()} since this morning.\nFrom now on I cannot work.\n\nThanks\n"
        mid = f"<bench-{i}@corp.example>"
        if i % 200 == 12:  # Latin-1
            body = "Grüße aus Köln,\n\nder Drucker im Büro ist kaputt.\n"
            msg = MIMEText(body, "plain", "iso-8859-1")
            subject += " : Drucker im Büro"
        elif i % 200 == 7:  # HTML alternative
            msg = MIMEMultipart("alternative")
            msg.attach(MIMEText(body, "plain"))
            msg.attach(MIMEText("<html><body>" + "".join(f"<p>{line}</p>" for line in body.splitlines()) +
                                "</body></html>", "html", "utf-8"))
        else:
            msg = MIMEText(body, "plain")  # us-ascii, 7bit: the "From now on" line needs escaping in the mbox
        msg["From"] = sender
        msg["To"] = "helpdesk@example.test"
        msg["Subject"] = subject if subject.isascii() else Header(subject, "iso-8859-1").encode()
        msg["Message-ID"] = mid
        msg["Date"] = email.utils.formatdate(1_795_000_000 + 60 * i)
        if parent:
            msg["In-Reply-To"] = parent
            msg["References"] = parent
            threads[k] = (threads[k][0], threads[k][1], mid)
        else:
            threads.append((subject, sender, mid))
        mails.append(msg.as_bytes())
    return mails


if __name__ == "__main__":
    import json

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    cache = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(json.dumps(run_roundup(_test_mails(count), cache, quiet=False), indent=2))
