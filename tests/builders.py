"""What the tests, the demo and the benchmarks build, written once: mail as a client
writes it, a reply to a mail of the desk, a one-click click, a ticket opened and
assigned, a configuration, and a ticket row for the unit tests.

    from tests.builders import mail, open_ticket, answer

    ack, notice = open_ticket(desk, now="2026-11-30T09:00:00+01:00")
    answer(desk, notice, "#status in-progress", now="2026-11-30T09:10:00+01:00")
    desk.deliver(mail("joe@example.org", "Mouse broken", "Left button."))

Plain functions, no fixtures (those live in conftest.py). Those that take `desk` drive
the `Desk` of conftest.py; time is their `now` parameter (left out, `run --once` reads
the machine's clock: pass it wherever a due time matters).
Mail an attacker writes stays spelled out byte by byte in its test: these builders
write what a well-behaved client writes.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import NamedTuple

DESK = "helpdesk@example.test"
REQUESTER = "jane@example.org"
ASSIGNEE = "alice@example.test"  # round robin's first pick in the service-desk group
DATE = "Fri, 27 Nov 2026 10:00:00 +0100"  # the Date of a mail built without one

# --- mail --------------------------------------------------------------------------------


def mail(
    frm: str,
    subject: str,
    body: str | None = "Hello,\nsomething is broken.\n",
    *,
    to: str = DESK,
    cc: str | None = None,
    msgid: str | None = None,
    in_reply_to: str | None = None,
    references: str | list | None = None,
    headers: dict | None = None,
    html: str | None = None,
    date: dt.datetime | None = None,
    charset: str = "utf-8",
    cte: str | None = None,
    attachments: tuple | list = (),
    linesep: str = "\n",
) -> bytes:
    """An RFC 5322 message as a mail client writes it: text, HTML only (`body=None`),
    or both as multipart/alternative; `attachments` are (filename, bytes, "type/subtype")
    and make it multipart/mixed. In a `charset` other than UTF-8 the body is written in
    it (what it lacks as "?") and the subject as an RFC 2047 word in it, as older clients
    do; `cte` forces the Content-Transfer-Encoding of the text parts (say "8bit" for long
    lines). Lines end in `linesep`: LF as in a mail file, or CRLF as on the wire (Dovecot
    hands out CRLF either way)."""
    m = EmailMessage()
    m["From"] = frm
    m["To"] = to
    if cc:
        m["Cc"] = cc
    if charset.lower() == "utf-8":
        m["Subject"] = subject
    else:  # EmailMessage would write the word in UTF-8; keep the client's charset
        m.set_raw("Subject", Header(subject, charset).encode())
    m["Message-ID"] = msgid if msgid is not None else make_msgid(domain="client.example")
    m["Date"] = format_datetime(date) if date else DATE
    if in_reply_to:
        m["In-Reply-To"] = _bracketed(in_reply_to)
    if references:
        refs = references if isinstance(references, list) else [references]
        m["References"] = " ".join(_bracketed(r) for r in refs)
    for k, v in (headers or {}).items():
        m[k] = v
    if charset.lower() != "utf-8":
        body, html = (t.encode(charset, "replace").decode(charset) if t is not None else None for t in (body, html))
    if html is not None and body is None:
        m.set_content(html, subtype="html", charset=charset, cte=cte)
    else:
        m.set_content(body, charset=charset, cte=cte)
        if html is not None:
            m.add_alternative(html, subtype="html", charset=charset, cte=cte)
    for filename, data, ctype in attachments:
        maintype, _, subtype = ctype.partition("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return m.as_bytes(policy=m.policy.clone(linesep=linesep))


def _bracketed(msgid: str) -> str:
    return msgid if msgid.startswith("<") else f"<{msgid}>"


def thread_after(captured) -> dict:
    """The In-Reply-To and References of an answer to `captured` (a mail the desk sent,
    as the SMTP sink caught it): keyword arguments for `mail`."""
    refs = (captured.header("References") or "").split() + [captured.header("Message-ID")]
    return {"in_reply_to": captured.header("Message-ID"), "references": [r for r in refs if r]}


def quoted(captured, said: str = "On Fri, 27 Nov 2026 at 10:05, Example IT Service Desk <helpdesk@example.test> wrote:") -> str:
    """The quoted history a client puts under a reply to `captured`."""
    return f"\n\n{said}\n" + "".join("> " + line + "\n" for line in captured.text.splitlines())


def reply_to(captured, frm: str, body: str, *, subject: str | None = None, headers: dict | None = None,
             quote: bool = True) -> bytes:
    """A reply to a mail the desk sent, threaded, with the quoted history a client adds."""
    text = body + (quoted(captured) if quote else "")
    return mail(frm, subject or f"Re: {captured.subject}", text, headers=headers, **thread_after(captured))


def mailto_links(text: str) -> list[tuple[str, str, str]]:
    """(to, subject, body) of each `mailto:` link in a mail's text: what a client fills
    in when the link is clicked."""
    found = []
    for link in re.findall(r"mailto:[^\s<>\"]+", text):
        address, _, query = link.removeprefix("mailto:").partition("?")
        fields = urllib.parse.parse_qs(query)
        found.append((urllib.parse.unquote(address), fields.get("subject", [""])[0], fields.get("body", [""])[0]))
    return found


def click(desk, captured, label: str, frm: str = REQUESTER, now: str | None = None) -> None:
    """The requester clicks the one-click link of `captured` whose subject holds `label`:
    their client sends the prepared mail, and the desk runs once."""
    subject = next(s for _, s, _ in mailto_links(captured.text) if label in s)
    desk.deliver(mail(frm, subject, "Just send this mail; you can add a comment above this line."))
    desk.run(now=now)


# --- driving a desk ------------------------------------------------------------------------


class Opened(NamedTuple):
    ack: object  # the requester's acknowledgement
    notice: object  # the assignment notice to the technician


def open_ticket(desk, *, now: str | None = None, sender: str = REQUESTER, name: str = "Jane Doe",
                subject: str = "Printer broken", body: str = "It jams.", msgid: str | None = None,
                assignee: str | None = ASSIGNEE) -> Opened:
    """A requester writes in and the desk runs once: a new ticket, assigned (on the test
    desk a printer goes to alice). Returns the acknowledgement and the notice to
    `assignee` (None: no notice looked for)."""
    desk.deliver(mail(f"{name} <{sender}>" if name else sender, subject, body, msgid=msgid))
    desk.run(now=now)
    return Opened(desk.sent(to=sender)[-1], desk.sent(to=assignee)[-1] if assignee else None)


def answer(desk, captured, text: str, *, frm: str = ASSIGNEE, now: str | None = None,
           headers: dict | None = None) -> None:
    """`frm` replies to `captured` with `text` (commands, words for the requester) and
    the desk runs once."""
    desk.deliver(reply_to(captured, frm, text, headers=headers))
    desk.run(now=now)


def events(desk, ref: str = "INC-1", kind: str | None = None) -> list[dict]:
    """A ticket's history as `tickets show --json` gives it, of one kind or all."""
    return [e for e in desk.ticket(ref)["events"] if kind is None or e["kind"] == kind]


# --- configuration ---------------------------------------------------------------------


def minimal_config(**sections) -> dict:
    """The smallest config that parses (the three required sections), with `sections`
    added or replacing them."""
    return {"desk": {"address": DESK}, "imap": {"host": "imap.example.test", "username": "u", "password": "p"},
            "smtp": {"host": "smtp.example.test"}, **sections}


def desk_config(*, state_dir: Path, db_url: str, imap: dict | None = None, smtp: dict | None = None) -> dict:
    """The test desk: two groups (service-desk escalates to network), alice and bob in
    service-desk, carol in network, an incident manager, three categories, keyword
    priorities, business hours in Berlin with German holidays. `imap`/`smtp` are the
    servers (by default hosts nobody listens on: for tests that send nothing)."""
    return {
        "desk": {"name": "Example IT Service Desk", "address": DESK, "timezone": "Europe/Berlin",
                 "state_dir": str(state_dir)},
        "database": {"url": db_url},
        "imap": imap or {"host": "127.0.0.1", "port": 9, "security": "none", "username": "u", "password": "p"},
        "smtp": smtp or {"host": "127.0.0.1", "port": 9, "security": "none"},
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
        "security": {"trust_sender_address": True, "secret": "test-secret, long enough to sign with (32+ bytes)"},
        "business_hours": {"holidays_country": "DE"},
    }


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top, table by table; a None value removes its key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# --- rows for unit tests ---------------------------------------------------------------


def ticket_row(rt, now: dt.datetime, *, subject: str = "Printer broken", requester: str = REQUESTER,
               priority: str = "medium", category: str = "Hardware", group: str | None = "service-desk",
               assignee: str | None = None, status: str = "open", **fields):
    """A saved ticket as the triage stage leaves it (its SLA policy applied at `now`),
    without mail: for the unit tests of the desk's rules on a real store."""
    from maildesk.desk import sla
    from maildesk.store import Ticket

    t = Ticket(subject=subject, requester=requester, status=status, created_at=now, updated_at=now,
               priority=priority, category=category, group=group, assignee=assignee, **fields)
    sla.apply_policy(rt, t, now)
    t.save()
    return t
