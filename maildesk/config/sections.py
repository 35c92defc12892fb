"""The sections of the configuration file, one frozen `Section` each; every field
names its TOML key, its default and how its value is checked.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ..vocab import PRIORITIES
from .credentials import DEFAULT_CREDENTIALS_DIR
from .record import Section, field, fields
from .values import (
    CALENDARS,
    DEFAULT_MATRIX,
    SECURITY_MODES,
    STRATEGIES,
    Duration,
    _address,
    _address_list,
    _bool,
    _clock,
    _date,
    _date_list,
    _duration,
    _fraction,
    _http_url,
    _KeyedError,
    _level_keywords,
    _listen_address,
    _matrix,
    _non_negative_int,
    _nonempty_str,
    _one_of,
    _path,
    _port,
    _positive_int,
    _str,
    _str_list,
    _text_search_language,
    _timezone,
    _weekdays,
    _weekly,
    parse_duration,
)

# --- schema helpers ------------------------------------------------------------

_REQUIRED = object()


def opt(default=_REQUIRED, conv: Callable[[Any], Any] = _str, key: str | None = None):
    """A config field: its default (or required), its converter, and its TOML key
    when that differs from the attribute name."""
    meta = {"conv": conv, "key": key}
    if default is _REQUIRED:
        return field(metadata=meta | {"required": True})
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def _build(cls, table: Any, path: str, errors: list[str]):
    """Fill section `cls` from a TOML table, appending problems to `errors`."""
    if not isinstance(table, dict):
        errors.append(f"{path}: expected a table")
        table = {}
    values: dict[str, Any] = {}
    known = set()
    for f in fields(cls):
        if "conv" not in f.metadata:
            continue
        key = f.metadata["key"] or f.name
        known.add(key)
        where = f"{path}.{key}" if path else key
        if key not in table:
            if f.metadata.get("required"):
                errors.append(f"{where}: required key is missing")
            continue
        try:
            values[f.name] = f.metadata["conv"](table[key])
        except _KeyedError as e:
            errors.append(f"{where}.{e.subkey}: {e}")
        except ValueError as e:
            errors.append(f"{where}: {e}")
    for key in table:
        if key not in known and not key.startswith("_"):
            errors.append(f"{path}.{key}: unknown key" if path else f"{key}: unknown key")
    try:
        return cls(**values)
    except TypeError:  # a required field failed; the error is already recorded
        return None


# --- sections --------------------------------------------------------------------


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY.
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/maildesk"))


class Desk(Section):
    """`[desk]`: who the desk is, and where it keeps its state."""

    name: str = opt("IT Service Desk", _nonempty_str)
    address: str = opt(conv=_address)
    ticket_prefix: str = opt("INC", _str)
    timezone: ZoneInfo = opt(ZoneInfo("UTC"), _timezone)
    templates_dir: Path | None = opt(None, _path)
    state_dir: Path = opt(None, _path)
    default_group: str | None = opt(None, _str)
    # VERP envelope sender: {local}+bounce-{id}@{domain} by default.
    bounce_address: str = opt("{local}+bounce-{id}@{domain}", _str)
    # where a relative *_file is read from in a shell (inside the service: $CREDENTIALS_DIRECTORY)
    credentials_dir: Path = opt(DEFAULT_CREDENTIALS_DIR, _path)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    @property
    def local_part(self) -> str:
        return self.address.rsplit("@", 1)[0]


class Database(Section):
    """`[database]`: the SQLite file or the PostgreSQL server."""

    url: str = opt(None, _nonempty_str)


class Imap(Section):
    """`[imap]`: the one mailbox the desk reads, when the config lists no `[[mailboxes]]`."""

    host: str = opt(conv=_nonempty_str)
    port: int | None = opt(None, _port)
    security: str = opt("ssl", _one_of(*SECURITY_MODES))
    username: str = opt(conv=_nonempty_str)
    mailbox: str = opt("INBOX", _nonempty_str)
    processed_mailbox: str | None = opt(None, _nonempty_str)
    poll_seconds: int = opt(60, _positive_int)
    idle: bool = opt(True, _bool)
    batch_size: int = opt(100, _positive_int)
    timeout_seconds: int = opt(60, _positive_int)
    ca_file: Path | None = opt(None, _path)  # a private CA for the server's certificate
    verify_tls: bool = opt(True, _bool)
    auth: str = opt("password", _one_of("password", "oauth2"))
    # OAuth2 that renews itself (maildesk/oauth2.py): the token endpoint and the client,
    # with a refresh token (delegated) or a scope (client credentials)
    oauth2_token_url: str | None = opt(None, _http_url)
    oauth2_client_id: str | None = opt(None, _nonempty_str)
    oauth2_scope: str | None = opt(None, _nonempty_str)
    password: str | None = None  # from password / password_file
    oauth2_token: str | None = None  # from oauth2_token / oauth2_token_file: a token renewed by other means
    oauth2_client_secret: str | None = None  # from oauth2_client_secret / oauth2_client_secret_file
    oauth2_refresh_token: str | None = None  # from oauth2_refresh_token / oauth2_refresh_token_file

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


class Mailbox(Imap):
    """One mailbox the desk reads (`[[mailboxes]]`, or `[imap]` as the one-mailbox
    shorthand): an IMAP account or folder, the address the desk answers from on the
    tickets opened in it, and where those tickets start."""

    name: str = opt(conv=_nonempty_str)  # in logs, `inbound list` and `status`; the fetch checkpoint's key
    address: str = opt(conv=_address)
    group: str | None = opt(None, _nonempty_str)
    category: str | None = opt(None, _nonempty_str)


# The keys of the server that a later [[mailboxes]] table takes from the first one when
# it leaves them out; the account (username, secrets, folders) is each table's own.
MAILBOX_SHARED_KEYS = ("host", "port", "security", "poll_seconds", "idle", "batch_size", "timeout_seconds",
                       "ca_file", "verify_tls", "auth", "oauth2_token_url", "oauth2_client_id", "oauth2_scope")


class Smtp(Section):
    """`[smtp]`: the relay the desk sends through."""

    host: str = opt(conv=_nonempty_str)
    port: int | None = opt(None, _port)
    security: str = opt("starttls", _one_of(*SECURITY_MODES))
    username: str | None = opt(None, _nonempty_str)
    connections: int = opt(4, _positive_int)
    timeout_seconds: int = opt(30, _positive_int)
    retry_first: Duration = opt(parse_duration("1m"), _duration)
    retry_max: Duration = opt(parse_duration("1h"), _duration)
    give_up_after: Duration = opt(parse_duration("3d"), _duration)
    ca_file: Path | None = opt(None, _path)  # a private CA for the server's certificate
    verify_tls: bool = opt(True, _bool)
    auth: str = opt("password", _one_of("password", "oauth2"))
    oauth2_token_url: str | None = opt(None, _http_url)  # as in [imap]
    oauth2_client_id: str | None = opt(None, _nonempty_str)
    oauth2_scope: str | None = opt(None, _nonempty_str)
    password: str | None = None
    oauth2_token: str | None = None
    oauth2_client_secret: str | None = None
    oauth2_refresh_token: str | None = None

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.security]


class Group(Section):
    """`[[groups]]`: one group of technicians."""

    name: str = opt(conv=_nonempty_str)
    tier: int = opt(1, _positive_int)
    escalates_to: str | None = opt(None, _nonempty_str)
    manager: str | None = opt(None, _address)
    strategy: str | None = opt(None, _one_of(*STRATEGIES))  # overrides assignment.strategy


class Technician(Section):
    """`[[technicians]]`: one technician, staff who work tickets by mail."""

    email: str = opt(conv=_address)
    name: str = opt(None, _nonempty_str)
    groups: tuple[str, ...] = opt((), _str_list)
    away_until: dt.date | None = opt(None, _date)

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@")[0]


class Roles(Section):
    """`[roles]`: the incident managers and the process owners."""

    incident_managers: tuple[str, ...] = opt((), _address_list)
    process_owners: tuple[str, ...] = opt((), _address_list)  # get the scheduled KPI report


class Category(Section):
    """`[[categories]]`: one category, its keywords and its group."""

    name: str = opt(conv=_nonempty_str)
    keywords: tuple[str, ...] = opt((), _str_list)
    group: str | None = opt(None, _nonempty_str)
    # where its tickets go on a functional escalation, instead of the group chain
    escalates_to: str | None = opt(None, _nonempty_str)

    @property
    def parent(self) -> str | None:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else None


class Priority(Section):
    """`[priority]`: how a new ticket's impact, urgency and priority are chosen."""

    vip: tuple[str, ...] = opt((), _address_list)
    impact_keywords: dict = opt({}, _level_keywords)
    urgency_keywords: dict = opt({}, _level_keywords)
    matrix: dict = opt(DEFAULT_MATRIX, _matrix)


class SlaPolicy(Section):
    """`[[sla]]`: the response and resolution targets of one priority (and category)."""

    priority: str = opt(conv=_one_of(*PRIORITIES))
    response: Duration = opt(conv=_duration)
    resolution: Duration = opt(conv=_duration)
    calendar: str = opt("business", _one_of(*CALENDARS))
    category: str | None = opt(None, _nonempty_str)
    name: str | None = opt(None, _nonempty_str)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.priority + (f"/{self.category}" if self.category else "")


# Used when the config has no [[sla]] at all; a desk without targets is no desk.
DEFAULT_SLA = tuple(
    SlaPolicy(priority=p, response=parse_duration(r), resolution=parse_duration(s), calendar=c)
    for p, r, s, c in (
        ("critical", "15m", "4h", "24x7"),
        ("high", "1h", "8h", "business"),
        ("medium", "4h", "3d", "business"),
        ("low", "1d", "5d", "business"),
    )
)


class BusinessHours(Section):
    """`[business_hours]`: the `business` calendar of SLAs."""

    days: tuple[int, ...] = opt((0, 1, 2, 3, 4), _weekdays)
    start: dt.time = opt(dt.time(9, 0), _clock)
    end: dt.time = opt(dt.time(17, 0), _clock)
    holidays_country: str | None = opt(None, _nonempty_str)
    holidays_subdivision: str | None = opt(None, _nonempty_str)
    holidays: tuple[dt.date, ...] = opt((), _date_list)


class Escalation(Section):
    """`[escalation]`: when an SLA target's reminder goes out."""

    warn_at: float = opt(0.75, _fraction)


class Assignment(Section):
    """`[assignment]`: how a group's new ticket finds a technician."""

    strategy: str = opt("round_robin", _one_of(*STRATEGIES))
    away_after_autoreply: Duration = opt(parse_duration("8h"), _duration)


class Security(Section):
    """`[security]`: whose mail is proven, and the signing secret."""

    trusted_authserv_ids: tuple[str, ...] = opt((), _str_list)
    trust_sender_address: bool = opt(False, _bool)
    microsoft365: bool = opt(False, _bool)  # Exchange Online's own signals count (docs/security.md, Authentication results)
    secret: str | None = None  # from secret / secret_file; else kept in the database
    # the key the secret came from, for the admin's error messages (not a key of the file)
    secret_key: str = field(default="security.secret", metadata={"internal": True})


class Lifecycle(Section):
    """`[lifecycle]`: auto-close, reopening, closure codes, thanks."""

    auto_close_after: Duration = opt(parse_duration("3d"), _duration)
    reopen_window: Duration = opt(parse_duration("7d"), _duration)
    closure_codes: tuple[str, ...] = opt(
        ("fixed", "workaround", "duplicate", "user-error", "no-response"), _str_list
    )
    thanks_phrases: tuple[str, ...] = opt(
        ("thank you", "thanks", "thanks a lot", "thank you very much", "great, thanks",
         "many thanks", "cheers", "thx", "ty", "perfect, thanks", "ok thanks", "ok, thanks",
         "works now, thanks", "thanks!", "danke"),
        _str_list,
    )


class Survey(Section):
    """`[survey]`: the satisfaction survey when a ticket closes."""

    enabled: bool = opt(True, _bool)
    min_days_between: int = opt(30, _non_negative_int)


class Limits(Section):
    """`[limits]`: what one mail, one sender and the whole desk may cost."""

    max_message_bytes: int = opt(25 * 1024 * 1024, _positive_int)
    max_header_bytes: int = opt(256 * 1024, _positive_int)
    max_parts: int = opt(500, _positive_int)
    max_depth: int = opt(20, _positive_int)
    parse_seconds: int = opt(10, _positive_int)
    auto_replies_per_sender_per_day: int = opt(10, _non_negative_int)
    auto_replies_per_ticket_per_day: int = opt(20, _non_negative_int)
    auto_replies_per_hour: int = opt(500, _non_negative_int)  # desk-wide; above it automatic mail pauses
    # past it a sender's new mail is held (quarantined as rate-limited), not ticketed
    new_tickets_per_sender_per_hour: int = opt(20, _non_negative_int)


class Reports(Section):
    """`[reports]`: the weekly KPI report."""

    # "DAY HH:MM" in the desk's time zone: the KPI report of the week before, mailed to
    # roles.process_owners; "" turns it off
    weekly: tuple[int, dt.time] | None = opt((0, dt.time(8, 0)), _weekly)


class Alerts(Section):
    """`[alerts]`: when the incident managers hear that fetching stalled."""

    fetch_stalled_after: Duration = opt(parse_duration("30m"), _duration)


class Metrics(Section):
    """`[metrics]`: where Prometheus metrics are served, if anywhere."""

    listen: str | None = opt(None, _listen_address)  # "127.0.0.1:9464": Prometheus metrics over HTTP


class Bounces(Section):
    """`[bounces]`: how long an address that bounced gets no mail."""

    undeliverable_for: Duration = opt(parse_duration("60d"), _duration)


class Kb(Section):
    """The knowledge base (docs/mail.md, Knowledge base): articles published from resolutions,
    offered in acknowledgements and listed in assignment notices."""

    enabled: bool = opt(True, _bool)
    suggest_in_ack: int = opt(3, _non_negative_int)  # at most this many articles offered in an acknowledgement; 0: none
    min_score: float = opt(0.3, _fraction)  # relevance (0..1) below which nothing is offered
    language: str = opt("english", _text_search_language)  # PostgreSQL's text search configuration
    similar_in_notice: int = opt(3, _non_negative_int)  # resolved tickets and articles listed in an assignment notice


class Attachments(Section):
    """`[attachments]`: where the contents of attachments are kept."""

    store: str = opt("files", _one_of("files", "database", "none"))
    dir: Path | None = opt(None, _path)
