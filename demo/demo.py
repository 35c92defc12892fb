"""maildesk at work on real mail servers, in well under a minute: what `make demo` runs.

The demo starts a sandbox Dovecot (IMAP) and an aiosmtpd capture server (SMTP) on
loopback, writes a desk configuration to ``demo-run/maildesk.toml`` and then plays one
Monday morning at the "Example IT Service Desk":

1. Five users write in, as their mail clients would: a plain-text locked account, an
   HTML-only mail about a printer (Outlook style), a monitor problem from a user with a
   non-ASCII name and subject, an urgent outage reported by the CEO (a VIP), and a VPN
   problem. The desk logs, categorizes, prioritizes and assigns each one, and sends an
   acknowledgement to the requester and a notice to the technician.
2. The VPN user answers the acknowledgement with more detail; it threads onto the ticket.
3. Carol, the network technician, answers her notice with ``#status in-progress`` and a
   few words that the desk relays to the user, from the desk's address in her name.
4. Carol resolves it with ``#resolve fixed`` and a resolution text; the user gets it with
   two one-click links.
5. The user "clicks" "Yes, it is fixed": a mail to the desk whose subject is taken from the
   ``mailto:`` link in the resolution mail. The ticket closes and the survey goes out;
   the user rates the service with one more click.
6. Known fixes first: the technician who unlocked Tom's account resolves it with ``#kb``
   as well, which publishes the fix as knowledge-base article KB-1. When Sam writes in
   with the same problem in other words, the acknowledgement offers KB-1; Sam clicks
   "This solved it" and the incident is resolved as ``self-service``, no technician
   bothered.

Nobody answers the CEO's outage within its 15-minute response target, so along the way
the desk also reminds and escalates it, as the SLA says.

After each step the desk runs one cycle, ``maildesk run --once``, exactly as the daemon
would: fetch from IMAP, process, deliver over SMTP, run due jobs. Every ``maildesk``
command runs as a subprocess, so what is printed is what a user of the CLI sees. The
clock is fixed with ``run --once --now`` (Monday 30 November 2026, from 09:05 Berlin
time) so that SLA targets read the same on every run, whatever the time of day.

At the end the demo prints the ticket list, the full history of the VPN ticket, the
decision log of Carol's command mail, every mail the desk sent, the outbox and the KPI
report (with its self-service figures). Everything it wrote stays in ``demo-run/`` for a closer look::

    python -m maildesk --config demo-run/maildesk.toml tickets show INC-5

Needs Dovecot (``apt-get install dovecot-imapd``) and root, because the sandbox runs
Dovecot as root (it stores mail as uid 65534). Exit status 0 when every step worked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "demo-run"
sys.path.insert(0, str(ROOT))

from tests.builders import mail, mailto_links, quoted, thread_after  # noqa: E402  (needs ROOT on sys.path)
from tests.sandbox import Dovecot, SmtpSink  # noqa: E402

DESK = "helpdesk@example.test"
MAILBOX_USER = "helpdesk"
MAILBOX_PASSWORD = "secret"
DAY = "2026-11-30"        # a Monday
OFFSET = "+01:00"         # CET: Europe/Berlin in winter


class DemoFailure(Exception):
    """A step of the demo did not do what it should; the message says which."""


# --- the configuration ----------------------------------------------------------------

CONFIG = """\
# The demo desk: written by demo/demo.py for its sandbox servers on loopback.
# config/maildesk.example.toml explains every key.

[desk]
name = "Example IT Service Desk"
address = {desk}
ticket_prefix = "INC"
timezone = "Europe/Berlin"
state_dir = {run_dir}

[database]
url = {db_url}

[imap]
host = {imap_host}
port = {imap_port}
security = "none"            # the sandbox Dovecot speaks plain IMAP on loopback only
username = {imap_user}
password = {imap_password}
poll_seconds = 1

[smtp]
host = {smtp_host}
port = {smtp_port}
security = "none"            # the capture server on loopback

[[groups]]
name = "service-desk"
tier = 1
escalates_to = "network"
manager = "lead@example.test"

[[groups]]
name = "network"
tier = 2
manager = "netlead@example.test"

[[technicians]]
email = "alice@example.test"
name = "Alice"
groups = ["service-desk"]

[[technicians]]
email = "bob@example.test"
name = "Bob"
groups = ["service-desk"]

[[technicians]]
email = "carol@example.test"
name = "Carol"
groups = ["network"]

[roles]
incident_managers = ["im@example.test"]

[[categories]]
name = "Network"
keywords = ["vpn", "wifi", "network"]
group = "network"

[[categories]]
name = "Hardware"
keywords = ["printer", "laptop", "monitor"]
group = "service-desk"

[[categories]]
name = "Accounts"
keywords = ["password", "locked", "login"]
group = "service-desk"

[priority]
vip = ["ceo@example.test"]
impact_keywords = {{ high = ["everyone", "all users", "outage"], medium = ["our team"] }}
urgency_keywords = {{ high = ["urgent", "down", "cannot work"], low = ["when you can"] }}

[[sla]]
priority = "critical"
response = "15m"
resolution = "4h"
calendar = "24x7"

[[sla]]
priority = "high"
response = "1h"
resolution = "8h"
calendar = "business"

[[sla]]
priority = "medium"
response = "4h"
resolution = "3d"
calendar = "business"

[[sla]]
priority = "low"
response = "1d"
resolution = "5d"
calendar = "business"

[business_hours]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
holidays_country = "DE"

[security]
# FOR THE SANDBOX ONLY: a technician's From address alone authenticates their commands.
# A real desk leaves this false and trusts DMARC/DKIM results from its own mail server
# (trusted_authserv_ids), or sets it true only behind an internal relay that vouches for From.
trust_sender_address = true

[survey]
enabled = true
"""


# --- mail as users' clients write it --------------------------------------------------

def compose(frm: str, subject: str, text: str | None = None, *, html: str | None = None,
            at: str, agent: str = "Thunderbird/128.5.0", reply_to_mail=None) -> bytes:
    """One RFC 5322 message (tests/builders.py): text, HTML-only, or both; a reply when
    `reply_to_mail` (a captured mail of the desk) is given, threaded with In-Reply-To
    and References."""
    thread = thread_after(reply_to_mail) if reply_to_mail is not None else {}
    return mail(frm, subject, text, html=html, to=f"Example IT Service Desk <{DESK}>", date=clock(at),
                headers={"User-Agent": agent}, **thread)


SAID = "On Mon, 30 Nov 2026, Example IT Service Desk wrote:"  # the line above a reply's quoted history


def clock(hhmm: str) -> dt.datetime:
    """A time on the demo's Monday, Berlin time."""
    return dt.datetime.fromisoformat(f"{DAY}T{hhmm}:00{OFFSET}")


INCIDENTS = [
    compose("Tom Baker <tom.baker@example.org>", "Locked out after password change",
            "Hi,\n\nsince I changed my password this morning I get \"account locked\" at\n"
            "every login, on the laptop and in webmail.\n\nTom\n", at="08:41"),
    compose("Priya Shah <priya.shah@example.org>", "Printer on 3rd floor prints blank pages",
            html="<html><head><style>p{font-family:Calibri}</style></head><body>"
                 "<p>Hello,</p><p>the <b>printer</b> next to room 3.12 feeds paper but every page "
                 "comes out <i>blank</i>. Our team needs it for the board pack, so please have a "
                 "look when you can.</p><p>Thanks,<br>Priya</p></body></html>",
            at="08:47", agent="Microsoft Outlook 16.0"),
    compose("Zoë Müller <zoe.mueller@example.org>", "Monitor flackert im Büro 2.07 – flickering monitor",
            "Hallo,\n\nmy second monitor flickers every few seconds since Friday. The cable\n"
            "is new. Grüße, Zoë\n", at="08:52", agent="Apple Mail (2.3774)"),
    compose("Erin Chief <ceo@example.test>", "URGENT: email outage, sales cannot work",
            "Nobody in sales gets any mail since 8:30. This is an outage for everyone\n"
            "on the 4th floor and we cannot work. Please fix this now.\n\nErin\n"
            "Sent from my iPhone\n", at="08:58", agent="iPhone Mail (22B83)"),
    compose("Jane Doe <jane.doe@example.org>", "VPN drops every few minutes",
            "Hello,\n\nworking from home today, the VPN connects but drops every few\n"
            "minutes and I have to log in again.\n\nBest regards,\nJane\n\n-- \n"
            "Jane Doe | Finance | +49 30 1234567\n", at="09:01"),
]


# --- driving the desk ------------------------------------------------------------------

class Demo:
    def __init__(self, imap: Dovecot, smtp: SmtpSink):
        self.imap, self.smtp = imap, smtp
        self.config_path = RUN_DIR / "maildesk.toml"
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    def maildesk(self, *args: str, show: bool = True) -> subprocess.CompletedProcess:
        """`maildesk --config demo-run/maildesk.toml ARGS` as a subprocess, printed with
        its output when `show`."""
        cmd = [sys.executable, "-m", "maildesk", "--config", str(self.config_path), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=120)
        except subprocess.TimeoutExpired:
            raise DemoFailure(f"`maildesk {shlex.join(args)}` did not finish within 120 s") from None
        if done.returncode != 0:
            raise DemoFailure(f"`maildesk {shlex.join(args)}` exited with status {done.returncode}:\n"
                              + (done.stderr or done.stdout).rstrip())
        if show:
            print(f"$ maildesk {shlex.join(args)}")
            print(done.stdout.rstrip() or "(no output)")
            print()
        return done

    def run_once(self, at: str) -> None:
        """One cycle of the desk at `at` (HH:MM on the demo's Monday)."""
        mark = len(self.smtp.messages)
        done = self.maildesk("run", "--once", "--now", clock(at).isoformat(), show=False)
        # The daemon logs one line per cycle on stderr ("cycle: processed=5 ..."); show
        # its counts, and any warning or error, as a user watching the log would see them.
        summary = "(no cycle line in the log)"
        for line in done.stderr.splitlines():
            if " cycle: " in line:
                summary = line.split(" cycle: ", 1)[1].split("; fetch", 1)[0]
            elif " WARNING " in line or " ERROR " in line:
                print(f"           log: {line}")
        print(f"    {at}  maildesk run --once: {summary}")
        for m in in_outbox_order(self.smtp.messages[mark:]):
            print(f"           mail out #{outbox_id(m)} to {', '.join(m.rcpts)}: {m.subject}")

    def deliver(self, raw: bytes, what: str) -> str:
        """Put a mail in the desk's IMAP inbox, as the mail server would; its Message-ID."""
        self.imap.append(MAILBOX_USER, raw)
        print(f"    mail in: {what}")
        return email.message_from_bytes(raw)["Message-ID"]

    def sent_to(self, rcpt: str, subject_has: str = "", since: int = 0):
        """The newest mail the desk sent to `rcpt` whose subject holds `subject_has`."""
        found = [m for m in self.smtp.messages[since:]
                 if rcpt in m.rcpts and subject_has in (m.subject or "")]
        if not found:
            raise DemoFailure(f"the desk sent no mail to {rcpt} with {subject_has!r} in the subject")
        return found[-1]

    # --- the story ---------------------------------------------------------------------

    def setup(self) -> None:
        heading("Setting up: sandbox mail servers and a fresh desk in demo-run/")
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        RUN_DIR.mkdir()
        self.imap.add_user(MAILBOX_USER, MAILBOX_PASSWORD)
        # Written as text rather than with tomli_w, to keep its comments; json.dumps
        # quotes a string the way TOML's basic strings do.
        self.config_path.write_text(CONFIG.format(
            desk=json.dumps(DESK), run_dir=json.dumps(str(RUN_DIR)),
            db_url=json.dumps(f"sqlite:///{RUN_DIR / 'maildesk.db'}"),
            imap_host=json.dumps(self.imap.host), imap_port=self.imap.port,
            imap_user=json.dumps(MAILBOX_USER), imap_password=json.dumps(MAILBOX_PASSWORD),
            smtp_host=json.dumps(self.smtp.host), smtp_port=self.smtp.port))
        print(f"IMAP (Dovecot)   {self.imap.host}:{self.imap.port}, mailbox of user {MAILBOX_USER!r}")
        print(f"SMTP (capture)   {self.smtp.host}:{self.smtp.port}")
        print(f"config           {self.config_path.relative_to(ROOT)}")
        print(f"\nBelow, `maildesk` stands for: python -m maildesk --config {self.config_path.relative_to(ROOT)}\n")
        self.maildesk("check-config")
        self.maildesk("init")

    def story(self) -> str:
        """Play the morning; returns the reference of the VPN ticket."""
        heading("Monday 30 November 2026, Berlin: a morning at the desk")
        jane, carol = "Jane Doe <jane.doe@example.org>", "Carol <carol@example.test>"

        print("09:05  Five users write in.")
        for raw, who in zip(INCIDENTS, ["Tom: locked out (plain text)",
                                        "Priya: printer (HTML only, from Outlook)",
                                        "Zoë Müller: monitor (non-ASCII name and subject)",
                                        "Erin, the CEO: urgent email outage (a VIP)",
                                        "Jane: the VPN drops"], strict=True):
            self.deliver(raw, who)
        self.run_once("09:05")
        acks = [m for m in self.smtp.messages if m.header("Auto-Submitted") == "auto-replied"]
        if len(acks) != len(INCIDENTS):
            raise DemoFailure(f"{len(INCIDENTS)} new incidents should get {len(INCIDENTS)} "
                              f"acknowledgements; the desk sent {len(acks)}")
        ack = self.sent_to("jane.doe@example.org")
        ref = ack.subject.split("]")[0].lstrip("[")
        notice = self.sent_to("carol@example.test", f"[{ref}]")  # Network goes to Carol's group
        print(f"       Jane's VPN problem is {ref}; Carol (network) got it: {notice.subject!r}\n")

        print("09:20  Jane answers the acknowledgement with more detail. Meanwhile nobody has\n"
              "       answered the CEO's outage, whose response target (critical: 15 minutes) is due.")
        self.deliver(compose(jane, f"Re: {ack.subject}",
                             "It happens on the home wifi and on my phone's hotspot, about every\n"
                             "five minutes. The VPN client (version 5.1.2) says \"peer not\n"
                             "responding\".\n\nJane" + quoted(ack, SAID), at="09:19", reply_to_mail=ack),
                     f"Jane: Re: {ack.subject}")
        self.run_once("09:20")
        print()

        print("09:30  Carol answers her notice with a command and a few words for Jane.")
        self.command_mail = self.deliver(compose(
            carol, f"Re: {notice.subject}",
            "#status in-progress\n"
            "Hi Jane,\n\nthanks for the details. I am looking at the VPN gateway logs now;\n"
            "please stay connected until I get back to you.\n\nCarol" + quoted(notice, SAID),
            at="09:29", reply_to_mail=notice), "Carol: #status in-progress, and a text for Jane")
        self.run_once("09:30")
        print()

        print(f"10:10  Carol resolves {ref}: #resolve fixed, and what she did. The CEO's outage is\n"
              "       still unanswered, long past its target: now the managers hear of it.")
        mark = len(self.smtp.messages)
        self.deliver(compose(
            carol, f"Re: {notice.subject}",
            "#resolve fixed\n"
            "Hi Jane,\n\nVPN client 5.1.2 has a known bug with keep-alives behind some home\n"
            "routers. I have pushed version 5.3 to your laptop; after a restart the\n"
            "VPN stays up. Let us know if it drops again.\n\nCarol" + quoted(notice, SAID),
            at="10:09", reply_to_mail=notice), "Carol: #resolve fixed, and the resolution")
        self.run_once("10:10")
        resolution = self.sent_to("jane.doe@example.org", "Resolved", since=mark)
        print()

        print('10:20  Jane clicks "Yes, it is fixed" in the resolution mail and sends what it opens.')
        to, subject, body = follow_mailto(resolution.text, "Yes, it is fixed")
        print(f"       The mailto: link opens a mail to {to}, subject {subject!r}")
        mark = len(self.smtp.messages)
        self.deliver(compose(jane, subject, body, at="10:19"), "Jane: the one-click confirmation")
        self.run_once("10:20")
        survey = self.sent_to("jane.doe@example.org", "", since=mark)
        print()

        print("10:25  Jane answers the survey that came with the closure: one more click.")
        to, subject, body = follow_mailto(survey.text, "Rating 5")
        self.deliver(compose(jane, subject, body, at="10:24"), f"Jane: {subject.split(' (')[0]}")
        self.run_once("10:25")

        final = json.loads(self.maildesk("tickets", "show", ref, "--json", show=False).stdout)
        if (final["status"], final["closure_code"], (final["survey"] or {}).get("rating")) != ("closed", "fixed", 5):
            raise DemoFailure(f"{ref} should be closed, code fixed, rated 5; it is {final['status']}, "
                              f"code {final['closure_code']}, survey {final['survey']}")
        return ref

    def known_fixes(self) -> str:
        """Tom's fix published with #kb, offered to Sam, taken with one click; returns
        the reference of Sam's ticket."""
        heading("Known fixes first: the knowledge base")
        tom_ack = self.sent_to("tom.baker@example.org")
        tom_ref = tom_ack.subject.split("]")[0].lstrip("[")
        notice = next(m for m in self.smtp.messages if f"[{tom_ref}] Assigned to you" in (m.subject or ""))
        tech = notice.rcpts[0]
        print(f"10:40  {tech} resolves Tom's {tom_ref} and publishes the fix: #resolve fixed, #kb.")
        self.deliver(compose(
            tech, f"Re: {notice.subject}",
            "#resolve fixed\n#kb\n"
            "Hi Tom,\n\nyour account was locked because your phone kept signing in with the old password.\n"
            "I unlocked it in the directory; remove the old password from your phone's mail app\n"
            "(Settings > Mail > Accounts) and sign in with the new one.\n\nBest regards\n" + quoted(notice),
            at="10:39", reply_to_mail=notice), f"{tech}: #resolve fixed, #kb")
        self.run_once("10:40")
        self.maildesk("kb", "list")

        print("10:50  Sam writes in with the same problem, in other words.")
        mark = len(self.smtp.messages)
        self.deliver(compose("Sam Lee <sam.lee@example.org>", "Cannot sign in",
                             "Hi,\n\nsince this morning I cannot log in anywhere, it says my account is locked.\n\nSam\n",
                             at="10:49"), "Sam: cannot sign in, account locked")
        self.run_once("10:50")
        ack = self.sent_to("sam.lee@example.org", since=mark)
        sam_ref = ack.subject.split("]")[0].lstrip("[")
        if "KB-1" not in ack.text or "kbsolved" not in ack.text:
            raise DemoFailure(f"Sam's acknowledgement should offer KB-1; it reads:\n{ack.text}")
        print(f"\n       Sam's acknowledgement, as Sam sees it (Subject: {ack.subject}):\n")
        for line in ack.text.rstrip().splitlines():
            print("       | " + line)
        print()

        print('10:55  Sam clicks "This solved it" under KB-1 and sends what it opens.')
        to, subject, body = follow_mailto(ack.text, "This solved it")
        self.deliver(compose("Sam Lee <sam.lee@example.org>", subject, body, at="10:54"), "Sam: this solved it")
        self.run_once("10:55")
        final = json.loads(self.maildesk("tickets", "show", sam_ref, "--json", show=False).stdout)
        if (final["status"], final["closure_code"]) != ("resolved", "self-service"):
            raise DemoFailure(f"{sam_ref} should be resolved as self-service; it is {final['status']}, "
                              f"code {final['closure_code']}")
        print(f"       {sam_ref} is resolved, closure code self-service; its assignee was told.\n")
        self.maildesk("kb", "show", "1")
        return sam_ref

    def show(self, ref: str) -> None:
        heading("The tickets")
        self.maildesk("tickets", "list")

        heading(f"The whole story of {ref}")
        self.maildesk("tickets", "show", ref)

        heading("Why the desk did what it did with Carol's first reply")
        self.maildesk("why", self.command_mail)

        heading(f"The mail the desk sent ({len(self.smtp.messages)} messages)")
        for m in in_outbox_order(self.smtp.messages):
            print(f"--- #{outbox_id(m)}  From: {m.header('From')}")
            print(f"    To: {', '.join(m.rcpts)}")
            print(f"    Subject: {m.subject}")
            lines = [line for line in m.text.splitlines() if line.strip()][:4]
            for line in lines:
                print(f"    | {textwrap.shorten(line, 96, placeholder=' ...')}")
        print()

        heading("The outbox")
        self.maildesk("outbox", "list")

        heading("The KPI report, as of 11:00 that Monday")
        self.maildesk("report", "--now", clock("11:00").isoformat())

        heading("The desk's health at a glance, as of 11:00")  # after the last fetch (10:55), not before it
        self.maildesk("status", "--now", clock("11:00").isoformat())


def outbox_id(captured) -> int:
    """The outbox row of a mail the desk sent, from its VERP envelope sender
    (helpdesk+bounce-ID-SIGNATURE@example.test: so that a bounce names the mail it
    answers, and nobody but its recipient's mail system can bounce it)."""
    match = re.search(r"\+bounce-(\d+)(?:-[0-9a-f]+)?@", captured.envelope_from or "")
    return int(match.group(1)) if match else 0


def in_outbox_order(messages) -> list:
    """The desk sends on several SMTP connections at once, so mail arrives out of order;
    sort it back into the order the desk queued it."""
    return sorted(messages, key=outbox_id)


def follow_mailto(text: str, label: str) -> tuple[str, str, str]:
    """(to, subject, body) of the first mailto: link in `text` whose subject holds
    `label`: what a mail client fills in when the user clicks it."""
    for to, subject, body in mailto_links(text):
        if label in subject:
            return to, subject, body + "\n"
    raise DemoFailure(f"no mailto: link with {label!r} in its subject in the mail:\n{text}")


def heading(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}\n")


def main() -> int:
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as servers:  # stopped on the way out, whatever happens
            try:
                imap = servers.enter_context(Dovecot())
                smtp = servers.enter_context(SmtpSink())
            except (OSError, RuntimeError, TimeoutError) as e:
                raise DemoFailure(f"the sandbox mail servers did not start: {e}") from e
            demo = Demo(imap, smtp)
            demo.setup()
            ref = demo.story()
            demo.known_fixes()
            demo.show(ref)
    except DemoFailure as e:
        sys.stdout.flush()
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - whatever broke, the demo says so and exits 1
        sys.stdout.flush()
        traceback.print_exc()
        print("\ndemo failed: an unexpected error in the demo itself (above)", file=sys.stderr)
        return 1
    print(f"Done in {time.monotonic() - started:.1f} s. The desk's files stay in demo-run/; try\n"
          f"  python -m maildesk --config demo-run/maildesk.toml tickets show {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
