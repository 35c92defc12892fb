"""Real mail servers for the tests, the benchmarks and ``make demo``: a Dovecot IMAP server
and an aiosmtpd SMTP sink, each on its own free loopback port. No mocks.

Usage (from pytest or a plain script with the repo root on ``sys.path``)::

    from tests.sandbox import Dovecot, SmtpSink

    with Dovecot() as imap, SmtpSink() as smtp:      # both started, both stopped on exit
        imap.add_user("helpdesk")                    # password "secret"
        uid = imap.append("helpdesk", raw_bytes)     # returns the new UID
        imap.append_many("helpdesk", list_of_raws)   # thousands per second, one connection
        ...                                          # run maildesk against imap.port / smtp.port
        [(uid, flags, raw)] = imap.fetch_all("helpdesk")
        reply = smtp.wait_for(1)[0]
        assert reply.subject.startswith("[INC-1]")

Dovecot (``/usr/sbin/dovecot``, 2.3) runs in the foreground as a child of this process, as
root, from a config written under its own root directory (config, users, mail, logs, sockets),
so several instances can run at once (pytest-xdist). Mail belongs to uid 65534, because
Dovecot refuses to store mail as root; the root directory is therefore 0755.

- ``Dovecot(idle=False)`` does not advertise IDLE, to test the client's polling path.
- ``Dovecot(tls=True)`` makes a self-signed certificate (``.cert_path``) and offers STARTTLS
  on ``.port`` and implicit TLS on ``.ssl_port``; trust it with
  ``ssl.create_default_context(cafile=imap.cert_path)``.
- ``stop()``/``restart()`` keep the mail and the ports, for outage tests; ``stop()`` cuts
  open sessions as an outage would.
- ``login(user)`` gives a logged-in imapclient session; ``fetch_all`` returns flags as str,
  and ``b"\\Seen" in flags`` works too.
- ``Dovecot()`` without a root works in a fresh directory on /dev/shm (maildir on tmpfs is
  several times faster than on disk), removed on ``__exit__`` or at interpreter exit. A root
  you pass is kept; it and its parents must be searchable by others (pytest's ``tmp_path``
  is not: /tmp/pytest-of-root is 0700).

``SmtpSink`` is a threaded aiosmtpd server that accepts any sender, any recipient and any
AUTH PLAIN/LOGIN credentials (AUTH is offered, never required), keeps every message in
``.messages``, and injects faults: ``fail_next``, ``fail_always``, ``reject_recipient``;
``reset()`` forgets messages and faults between tests.

Nothing here imports pytest, so scripts and benchmarks use it too; fixtures wrap it.
"""

from __future__ import annotations

import atexit
import email
import email.message
import email.policy
import errno
import functools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from imapclient import IMAPClient

__all__ = ["Captured", "Dovecot", "Flags", "SmtpSink", "free_port"]

LOOPBACK = "127.0.0.1"
DOVECOT_BIN = "/usr/sbin/dovecot"
MAIL_UID = MAIL_GID = 65534  # nobody:nogroup; Dovecot will not store mail as root
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

# Dovecot 2.3.19's own post-login capability list, minus IDLE. An explicit imap_capability
# replaces the whole list (in imap-login too); STARTTLS and AUTH= are still added by Dovecot.
CAPABILITY_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"
)

# Dovecot 2.3.19's default import_environment (`doveconf -d import_environment`).
DOVECOT_ENVIRONMENT = "TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET"

# Longest socket path Dovecot makes below base_dir is about 30 characters, and a UNIX socket
# path must fit in 108 bytes; a deeper root (pytest's tmp_path) gets its runtime dir in /tmp.
MAX_BASE_DIR_LEN = 70
APPEND_BATCH = 500  # messages per MULTIAPPEND command in append_many
FETCH_BATCH = 500


# ---------------------------------------------------------------------------------------
# Ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _is_free(port: int, host: str = LOOPBACK) -> bool:
    # No SO_REUSEADDR here: a port still in TIME_WAIT counts as taken, which is what we want.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_rng = random.SystemRandom()  # not `random`: pytest-randomly seeds that alike in every worker


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on now.

    Picked at random below the kernel's ephemeral range when there is room, so that the
    outgoing connections of the tests themselves never sit on a port a server is about to
    (re)bind, and so that parallel workers rarely pick the same one.
    """
    low, _high = _ephemeral_range()
    if low > 11000:
        for _ in range(200):
            port = _rng.randint(10000, low - 1)
            if _is_free(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _fast_tmp_dir() -> str | None:
    """/dev/shm when it is a roomy tmpfs, else the default temp dir.

    Maildir makes one file per message; on this machine's ext4 that costs about 1 ms per
    file, on tmpfs 0.05 ms: 2000 APPENDs take 2.5 s on /tmp and well under 1 s on /dev/shm.
    Docker's default /dev/shm is only 64 MB, hence the size check.
    """
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = stats.f_bavail * stats.f_frsize >= 1 << 30
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK | os.X_OK) else None


def _imap_greets(host: str, port: int, timeout: float) -> bool:
    """True once an IMAP server on host:port accepts a connection and sends `* OK`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            greeting = b""
            while not greeting.endswith(b"\n"):
                chunk = conn.recv(1024)
                if not chunk:
                    return False
                greeting += chunk
            if greeting.startswith(b"* OK"):
                conn.sendall(b"probe LOGOUT\r\n")  # a clean goodbye keeps the log quiet
                return True
            return False
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Dovecot


class Flags(tuple):
    """IMAP flags as str (``"\\Seen"``); ``in`` accepts bytes too, since imapclient hands
    out bytes and tests are written both ways (a silent False would hide a bug)."""

    def __contains__(self, flag: object) -> bool:
        if isinstance(flag, bytes):
            flag = flag.decode("ascii", "replace")
        return tuple.__contains__(self, flag)


_running: set[Dovecot] = set()
_temp_dirs: set[Path] = set()


@atexit.register
def _clean_up_at_exit() -> None:
    # A script that forgot stop() must not leave Dovecot holding ports, nor its mail in
    # /dev/shm (memory), after it exits. Roots the caller chose are left alone.
    for server in list(_running):
        server.stop()
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


class Dovecot:
    """One Dovecot 2.3 instance on loopback, everything under `root`."""

    host: str = LOOPBACK

    def __init__(self, root: Path | str | None = None, *, idle: bool = True,
                 tls: bool = False) -> None:
        if os.geteuid() != 0:
            raise PermissionError("tests.sandbox.Dovecot runs Dovecot as root (it switches to "
                                  "uid 65534 for mail): run the tests as root")
        self._owns_root = root is None
        if root is None:
            root = tempfile.mkdtemp(prefix="maildesk-dovecot-", dir=_fast_tmp_dir())
        self.root = Path(root).resolve()
        if self._owns_root:
            _temp_dirs.add(self.root)
        self.idle = idle
        self.tls = tls
        self.port: int | None = None
        self.ssl_port: int | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self._ports_fixed = False  # ports are chosen on the first successful start
        self._proc: subprocess.Popen | None = None
        self._users: dict[str, str] = {}

        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        _check_traversable(self.root)
        self.config_path = self.root / "dovecot.conf"
        self.users_dir = self.root / "users"
        self.home_dir = self.root / "home"
        self.log_path = self.root / "log" / "dovecot.log"
        self.stderr_path = self.root / "log" / "stderr.log"
        self.state_dir = self.root / "state"
        self.base_dir = self.root / "run"
        self._own_base_dir = len(str(self.base_dir)) > MAX_BASE_DIR_LEN
        if self._own_base_dir:
            self.base_dir = Path(tempfile.mkdtemp(prefix="dovecot-run-"))
            _temp_dirs.add(self.base_dir)
        for directory in (self.log_path.parent, self.state_dir, self.base_dir):
            directory.mkdir(exist_ok=True)
            os.chmod(directory, 0o755)
        self.home_dir.mkdir(exist_ok=True)
        os.chown(self.home_dir, MAIL_UID, MAIL_GID)  # Dovecot makes each home as uid 65534
        self._load_users()
        if tls:
            self._make_certificate()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<Dovecot {self.host}:{self.port} {state} root={self.root}>"

    # -- lifecycle --------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        # Not Popen.poll(): that would reap the master, and its pid is our handle on the
        # process group until _kill() has ended the group.
        return self._proc is not None and _process_state(self._proc.pid) not in (None, "Z")

    def start(self) -> Dovecot:
        """Start Dovecot and return once it greets on its port; raises with the log tail."""
        if self.is_running:
            return self
        if not self._ports_fixed:
            self.port = free_port()
            self.ssl_port = free_port() if self.tls else None
        attempts = 1 if self._ports_fixed else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
                break
            except RuntimeError as error:
                # Another process took a port between free_port() and bind(): pick again.
                if attempt == attempts - 1 or "Address already in use" not in str(error):
                    raise
                self.port = free_port()
                self.ssl_port = free_port() if self.tls else None
        self._ports_fixed = True
        _running.add(self)
        return self

    def _spawn_and_wait(self) -> None:
        self.config_path.write_text(self._config())
        # A master.pid left by a killed master names a pid that may since belong to someone
        # else; Dovecot would then refuse to start ("already running").
        (self.base_dir / "master.pid").unlink(missing_ok=True)
        argv = [DOVECOT_BIN, "-F", "-c", str(self.config_path)]
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            # Dovecot dies with us even if we are SIGKILLed. The signal fires when the
            # *thread* that forked exits, so only from the main thread.
            argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.stderr_path, "wb") as stderr:  # startup errors of this run only
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                start_new_session=True,  # own process group: Ctrl-C goes to pytest only
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            # A failing master logs why, then takes a second to exit: don't wait for that.
            fatal = self._fatal_lines(log_offset)
            if fatal or _process_state(self._proc.pid) in (None, "Z"):
                self._kill()
                raise RuntimeError(f"Dovecot failed to start on {self.host}:{self.port}: "
                                   f"{fatal or 'it exited'}\n{self.log_tail(20)}")
            if _imap_greets(self.host, self.port, timeout=1.0):
                return
            time.sleep(0.01)
        self._kill()
        raise RuntimeError(f"Dovecot did not greet on {self.host}:{self.port} within "
                           f"{START_TIMEOUT:.0f} s:\n{self.log_tail(20)}")

    def _fatal_lines(self, log_offset: int) -> str:
        text = ""
        for path, offset in ((self.stderr_path, 0), (self.log_path, log_offset)):
            try:
                with open(path, "rb") as log:
                    log.seek(offset)
                    text += log.read().decode(errors="replace")
            except FileNotFoundError:
                pass
        # Dovecot retries a taken port for a second before its "Fatal:"; the error is enough.
        return "\n".join(line for line in text.splitlines()
                         if "Fatal:" in line or "Address already in use" in line)

    def stop(self) -> None:
        """Stop Dovecot like an outage: open IMAP sessions are cut, the port then refuses
        connections; mail and ports are kept for start()/restart().

        SIGTERM first; once the master has shut down its login, auth and config processes
        (SIGKILL after 5 s), the rest of the process group is killed. Dovecot 2.3.19 would
        otherwise sleep a fixed second for its log process, and leave running sessions
        alive past its own exit: stop takes ~0.04 s instead of 1.1 s.
        """
        _running.discard(self)
        if self._proc is None:
            return
        pid = self._proc.pid
        if _process_state(pid) not in (None, "Z"):
            self._proc.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline:
                if _process_state(pid) in (None, "Z") or _master_has_shut_down(pid):
                    break
                time.sleep(0.01)
            time.sleep(0.02)  # let the log process write what is still in its pipes
        self._kill()

    def _kill(self) -> None:
        # The master's process group holds its children (auth, imap, log, ...): end them
        # too. The master is not reaped before this, so its pid (= group id) is still ours.
        if self._proc is None:
            return
        if self._proc.returncode is None:  # not reaped, so the group id cannot be reused
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        # A root made here is removed with everything in it; a root passed in is kept.
        for path, owned in ((self.base_dir, self._own_base_dir), (self.root, self._owns_root)):
            if owned:
                shutil.rmtree(path, ignore_errors=True)
                _temp_dirs.discard(path)

    # -- configuration ----------------------------------------------------------------

    def _config(self) -> str:
        if self.tls:
            tls = f"""\
# A self-signed certificate for localhost and 127.0.0.1 (see cert_path); STARTTLS on the
# plain port, implicit TLS on the imaps one.
ssl = yes
ssl_cert = <{self.cert_path}
ssl_key = <{self.key_path}
ssl_min_protocol = TLSv1.2
"""
        else:
            tls = """\
# No certificate, so no TLS (the built-in default ssl = yes fails to start without one).
ssl = no
"""
        capability = ""
        if not self.idle:
            capability = f"""\
# idle=False: Dovecot's own list without IDLE, so the client's polling path runs.
imap_capability = {CAPABILITY_WITHOUT_IDLE}
"""
        return f"""\
# Written by tests/sandbox.py for one test server; regenerated on every start.
protocols = imap
{_faketime_environment()}# Loopback only; the ports are in the inet_listener blocks below.
listen = {self.host}

# Everything this instance writes stays under its root, so instances can run side by side.
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
info_log_path = {self.log_path}
auth_verbose = yes

# Debian's package creates these users; Dovecot drops to them for login and internal work.
default_login_user = dovenull
default_internal_user = dovecot

{tls}
# Tests log in with plain passwords over plain TCP.
disable_plaintext_auth = no
auth_mechanisms = plain login
# A failed login is answered after ~0.5 s (Dovecot's timer granularity) instead of 2 s.
auth_failure_delay = 0
# Without this, after one failed login anvil delays *every* later login from 127.0.0.1,
# good ones too, by 2 to 15 s for half a minute: one wrong-password test would slow the
# rest of the suite. Closing the penalty socket is Dovecot's documented off switch.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

# One passwd-file per user, {self.users_dir}/<name>, holding "name:{{PLAIN}}password::::::".
# Not one shared file: Dovecot stats a passwd-file at most once per wall-clock second, so a
# user added to a shared file just after another login would be unknown for up to 1 s.
# A new file is read at its first lookup; a missing one means "unknown user".
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_dir}/%u
}}
# Every user's mail belongs to uid 65534 (Dovecot will not store mail as root; the default
# first_valid_uid = 500 admits 65534).
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={self.home_dir}/%u
}}
mail_location = maildir:~/Maildir
# Test mail need not survive a power cut: no fsync makes APPEND several times faster.
mail_fsync = never
# Default 10 per user and IP; the daemon, the tests and the benchmarks open more.
mail_max_userip_connections = 200
{capability}
# Dovecot 2.3 needs the INBOX namespace declared when the config is written from scratch.
namespace inbox {{
  inbox = yes
}}

# One login process, ready before the first client, serves all connections (instead of a
# fresh one per connection): connect + login + APPEND take ~10 ms instead of ~22 ms, which
# every test that delivers mail pays many times. (Pre-forking imap processes too would save
# 4 ms more, but a pre-forked one can hold up shutdown for 5 s.)
service imap-login {{
  service_count = 0
  process_min_avail = 1
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.ssl_port or 0}
    ssl = yes
  }}
}}
"""

    def _make_certificate(self) -> None:
        tls_dir = self.root / "tls"
        tls_dir.mkdir(exist_ok=True)
        self.cert_path = tls_dir / "cert.pem"
        self.key_path = tls_dir / "key.pem"
        if self.cert_path.exists() and self.key_path.exists():
            return
        # An EC key is made in milliseconds; RSA 2048 takes a noticeable fraction of a second.
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
             "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(self.key_path), "-out", str(self.cert_path)],
            check=True, capture_output=True,
        )

    # -- users ------------------------------------------------------------------------

    def _load_users(self) -> None:
        # A root used before keeps its users (and their mail) for a new Dovecot object.
        self.users_dir.mkdir(exist_ok=True)
        os.chmod(self.users_dir, 0o755)  # read by the auth process as user "dovecot"
        for path in self.users_dir.iterdir():
            name, _, rest = path.read_text().partition(":")
            if name == path.name:
                self._users[name] = rest.split(":", 1)[0].removeprefix("{PLAIN}")

    def add_user(self, name: str, password: str = "secret") -> None:
        """Add a user, or give one a new password; effective at the next login, running
        or not (replacing a password while running waits for the next second, see below)."""
        if not name or name.startswith(".") or any(c in name for c in ":/\r\n\0"):
            raise ValueError(f"not a usable user name: {name!r}")
        if not password or any(c in password for c in ":\r\n\0"):
            raise ValueError("a password may not be empty or hold ':' or line breaks")
        path = self.users_dir / name
        previous_mtime = int(path.stat().st_mtime) if path.exists() else None
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        os.chmod(tmp, 0o644)
        if previous_mtime is not None:
            # Dovecot re-reads the file when its mtime (whole seconds) or size changed.
            mtime = max(int(time.time()), previous_mtime + 1)
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
        self._users[name] = password
        if previous_mtime is not None and self.is_running:
            # ... and stats it at most once per wall-clock second: a login in this second
            # may already have looked, so the new password counts from the next one.
            time.sleep(1.01 - time.time() % 1)

    @property
    def users(self) -> dict[str, str]:
        return dict(self._users)

    # -- IMAP helpers -----------------------------------------------------------------

    def login(self, user: str, *, timeout: float = 10.0) -> IMAPClient:
        """An imapclient session logged in as `user` on the plain port; use it in `with`."""
        if user not in self._users:
            raise KeyError(f"no user {user!r}: call add_user() first")
        client = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        try:
            client.login(user, self._users[user])
        except BaseException:
            client.shutdown()
            raise
        return client

    def append(self, user: str, raw: bytes, mailbox: str = "INBOX",
               flags: tuple = ()) -> int:
        """APPEND one message as `user` (creating `mailbox` if missing); returns its UID."""
        with self.login(user) as client:
            _ensure_mailbox(client, mailbox)
            response = client.append(mailbox, raw, flags=flags)
            uids = _appenduids(response)
            if uids:
                return uids[-1]
            client.select_folder(mailbox, readonly=True)
            return max(client.search("ALL"))

    def append_many(self, user: str, raws: list[bytes], mailbox: str = "INBOX") -> list[int]:
        """APPEND many messages on one connection (MULTIAPPEND, 500 per command, LITERAL+,
        so one round trip per batch); returns their UIDs in order."""
        uids: list[int] = []
        if not raws:
            return uids
        with self.login(user) as client:
            _ensure_mailbox(client, mailbox)
            for start in range(0, len(raws), APPEND_BATCH):
                _typ, data = client.multiappend(mailbox, raws[start:start + APPEND_BATCH])
                uids.extend(_appenduids(data[-1] if data else b""))
        return uids

    def fetch_all(self, user: str, mailbox: str = "INBOX") -> list[tuple[int, Flags, bytes]]:
        """(uid, flags, raw) of every message in `mailbox`, by UID, without setting \\Seen."""
        result = []
        with self.login(user) as client:
            client.select_folder(mailbox, readonly=True)
            uids = sorted(client.search("ALL"))
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start:start + FETCH_BATCH]
                for uid, data in sorted(client.fetch(batch, ["FLAGS", "BODY.PEEK[]"]).items()):
                    flags = Flags(f.decode("ascii", "replace") if isinstance(f, bytes) else f
                                  for f in data[b"FLAGS"])
                    result.append((uid, flags, data[b"BODY[]"]))
        return result

    def mailboxes(self, user: str) -> list[str]:
        with self.login(user) as client:
            return sorted(name for _flags, _sep, name in client.list_folders())

    def log_tail(self, n: int = 50) -> str:
        """The last `n` lines of Dovecot's log, after anything it wrote to stderr."""
        parts = []
        for path in (self.stderr_path, self.log_path):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                continue
            if lines:
                parts.append(f"--- {path.name} ---\n" + "\n".join(lines[-n:]))
        return "\n".join(parts)


def _faketime_environment() -> str:
    """Under libfaketime (`make test-future`), the Dovecot setting that keeps its processes
    on the faked clock; otherwise nothing.

    Dovecot empties the environment of its master and of every process it starts, keeping
    only `import_environment`. Its children would then run on the real clock, and the master
    too once libfaketime looks for FAKETIME again (every 10 s): it logs "Time moved backwards
    by 31535997 seconds" and starts no new login process for 3 minutes.
    """
    if "libfaketime" not in os.environ.get("LD_PRELOAD", ""):
        return ""
    names = sorted(n for n in os.environ if n == "LD_PRELOAD" or n.startswith("FAKETIME"))
    return ("# The faked clock of `make test-future` for every Dovecot process (Dovecot's\n"
            "# default list, then libfaketime's variables).\n"
            f"import_environment = {DOVECOT_ENVIRONMENT} {' '.join(names)}\n")


def _process_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...) or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


# What is left of Dovecot once the master has done its part of a shutdown: the log process
# it keeps for a last second, and sessions (with their stats writer) that outlive it.
_LEFT_AFTER_SHUTDOWN = {b"dovecot/log", b"dovecot/stats", b"dovecot/imap"}


def _master_has_shut_down(master_pid: int) -> bool:
    """True when the Dovecot master's live children are only those it leaves behind."""
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    except OSError:
        return False  # no such file in this kernel: let the master exit by itself
    for child in children:
        if _process_state(int(child)) in (None, "Z"):
            continue
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.split(b"\0")[0].split(b" ")[0] not in _LEFT_AFTER_SHUTDOWN:
            return False
    return True


def _check_traversable(path: Path) -> None:
    # Dovecot's imap process runs as uid 65534 and must reach the home directories.
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & 0o001:
            raise PermissionError(f"{parent} is not searchable by others (mode "
                                  f"{parent.stat().st_mode & 0o777:o}); uid 65534 could not "
                                  f"reach {path}: choose a root under /tmp")


def _ensure_mailbox(client: IMAPClient, mailbox: str) -> None:
    if mailbox.upper() != "INBOX" and not client.folder_exists(mailbox):
        client.create_folder(mailbox)


def _appenduids(response: bytes | str) -> list[int]:
    """UIDs from an RFC 4315 `[APPENDUID validity 4:6,9]` response code."""
    if isinstance(response, bytes):
        response = response.decode("ascii", "replace")
    match = re.search(r"\[APPENDUID \d+ ([\d:,]+)\]", response)
    if not match:
        return []
    uids = []
    for part in match.group(1).split(","):
        first, _, last = part.partition(":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids


# ---------------------------------------------------------------------------------------
# SMTP sink


@dataclass
class Captured:
    """One message as the sink received it."""

    envelope_from: str
    rcpts: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)
    auth_login: str | None = None  # the AUTH user name, if the client authenticated
    peer: tuple | None = None  # the client's (host, port): one per SMTP connection

    @functools.cached_property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)

    @property
    def subject(self) -> str | None:
        return self.header("Subject")

    @property
    def message_id(self) -> str | None:
        return self.header("Message-ID")

    @property
    def text(self) -> str:
        """The text/plain body, decoded, with "\n" line ends ('' if there is none)."""
        body = self.message.get_body(preferencelist=("plain",))
        return "" if body is None else body.get_content().replace("\r\n", "\n")


class _SinkHandler:
    """aiosmtpd hooks; all state lives on the SmtpSink, guarded by its lock."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.sink._refusal("RCPT", address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        refusal = self.sink._refusal("DATA", None)
        if refusal:
            return refusal
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        number = self.sink._capture(Captured(
            envelope_from=envelope.mail_from,
            rcpts=list(envelope.rcpt_tos),
            data=envelope.content,
            mail_options=list(envelope.mail_options),
            auth_login=login.decode("utf-8", "replace") if login is not None else None,
            peer=tuple(session.peer) if session.peer else None,
        ))
        return f"250 2.0.0 OK queued as sink-{number}"


def _accept_any_credentials(server, session, envelope, mechanism, auth_data) -> AuthResult:
    return AuthResult(success=True, auth_data=auth_data)


class SmtpSink:
    """A threaded aiosmtpd server on loopback that keeps what it receives."""

    def __init__(self, *, host: str = LOOPBACK, port: int | None = None) -> None:
        self.host = host
        self._ports_fixed = port is not None
        self.port = port if port is not None else free_port(host)
        self.messages: list[Captured] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None
        self._fail_next: dict[str, list[str]] = {"DATA": [], "RCPT": []}
        self._fail_always: str | None = None
        self._rejected: dict[str, str] = {}
        self._received = 0

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<SmtpSink {self.host}:{self.port} {state} messages={len(self.messages)}>"

    @property
    def is_running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpSink:
        if self._controller is not None:
            return self
        attempts = 1 if self._ports_fixed else 3
        for attempt in range(attempts):
            controller = Controller(
                _SinkHandler(self), hostname=self.host, port=self.port,
                server_hostname="sink.localhost",  # else aiosmtpd asks DNS for our FQDN
                ready_timeout=5.0,
                decode_data=False, enable_SMTPUTF8=True,
                authenticator=_accept_any_credentials, auth_require_tls=False,
            )
            try:
                controller.start()
            except OSError as error:
                # Another process took the port between free_port() and bind(): pick again.
                if attempt == attempts - 1 or error.errno != errno.EADDRINUSE:
                    raise
                self.port = free_port(self.host)
                continue
            break
        self._controller = controller
        self._ports_fixed = True
        return self

    def stop(self) -> None:
        """Stop listening; connections to the port are then refused."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------

    def fail_next(self, n: int, code: int = 451, text: str = "4.3.0 try again later",
                  *, at: str = "DATA") -> None:
        """The next `n` DATA (or, with at="RCPT", RCPT) commands get `code text`."""
        at = at.upper()
        if at not in self._fail_next:
            raise ValueError(f"at must be 'DATA' or 'RCPT', not {at!r}")
        with self._cond:
            self._fail_next[at].extend([f"{code} {text}"] * n)

    def fail_always(self, code: int | None, text: str = "4.3.0 try again later") -> None:
        """Answer every DATA with `code text` until fail_always(None)."""
        with self._cond:
            self._fail_always = None if code is None else f"{code} {text}"

    def reject_recipient(self, addr: str, code: int = 550,
                         text: str = "5.1.1 user unknown") -> None:
        """RCPT TO:<addr> (any case) is answered `code text`; other recipients pass."""
        with self._cond:
            self._rejected[addr.lower()] = f"{code} {text}"

    def reset(self) -> None:
        """Forget captured messages and every fault rule (per-test isolation)."""
        with self._cond:
            self.messages.clear()
            self._fail_next = {"DATA": [], "RCPT": []}
            self._fail_always = None
            self._rejected.clear()

    def _refusal(self, command: str, address: str | None) -> str | None:
        with self._cond:
            if address is not None and address.lower() in self._rejected:
                return self._rejected[address.lower()]
            if self._fail_next[command]:
                return self._fail_next[command].pop(0)
            if command == "DATA":
                return self._fail_always
        return None

    # -- captured mail ----------------------------------------------------------------

    def _capture(self, captured: Captured) -> int:
        with self._cond:
            self.messages.append(captured)
            self._received += 1
            self._cond.notify_all()
            return self._received

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Captured]:
        """Block until at least `count` messages are captured; returns a copy of them all.
        Raises TimeoutError naming how many arrived."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"SmtpSink: {len(self.messages)} of {count} messages "
                                   f"arrived within {timeout} s")
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
