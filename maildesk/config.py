"""The configuration: one TOML file read into frozen dataclasses.

Every section of DESIGN.md section 3 is a dataclass below; each field names its
TOML key, its default and how its value is checked. A problem anywhere becomes a
`ConfigError` whose lines each start with the key path (``imap.port: expected an
integer``), so that `maildesk check-config` can tell the admin exactly what to fix.

    cfg = load_config("/etc/maildesk/maildesk.toml")
    cfg.imap.port, cfg.sla_for("high", "Network/VPN").response_minutes
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LEVELS = ("high", "medium", "low")
PRIORITIES = ("critical", "high", "medium", "low")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STRATEGIES = ("round_robin", "least_loaded", "none")
SECURITY_MODES = ("ssl", "starttls", "none")
CALENDARS = ("24x7", "business")

# ITIL's default impact x urgency matrix (DESIGN section 3).
DEFAULT_MATRIX = {
    "high": {"high": "critical", "medium": "high", "low": "medium"},
    "medium": {"high": "high", "medium": "medium", "low": "low"},
    "low": {"high": "medium", "medium": "low", "low": "low"},
}


class ConfigError(Exception):
    """One or more problems, each a line that starts with the key it is about."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- value types -----------------------------------------------------------


@dataclass(frozen=True)
class Duration:
    """`15m`, `4h`, `3d`, `1d4h`, `30s`. Days are kept apart because in a
    business calendar a day means one working day, not 24 hours."""

    text: str
    days: int
    seconds: int  # the part below a day

    @property
    def total(self) -> dt.timedelta:
        return dt.timedelta(days=self.days, seconds=self.seconds)

    def minutes(self, day_minutes: float = 24 * 60) -> float:
        return self.days * day_minutes + self.seconds / 60


_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")


def parse_duration(text: str) -> Duration:
    if not isinstance(text, str) or not re.fullmatch(r"\s*(\d+\s*[smhd]\s*)+", text):
        raise ValueError('expected a duration such as "15m", "4h" or "3d"')
    days = seconds = 0
    for number, unit in _DURATION_PART.findall(text):
        n = int(number)
        if unit == "d":
            days += n
        else:
            seconds += n * {"s": 1, "m": 60, "h": 3600}[unit]
    return Duration(text.strip(), days, seconds)


# --- field converters: value -> checked value, or ValueError(message) ---------


def _str(v):
    if not isinstance(v, str):
        raise ValueError("expected a string")
    return v


def _nonempty_str(v):
    v = _str(v)
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def _int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("expected an integer")
    return v


def _positive_int(v):
    v = _int(v)
    if v <= 0:
        raise ValueError("expected a positive integer")
    return v


def _port(v):
    v = _int(v)
    if not 0 < v < 65536:
        raise ValueError("expected a port number between 1 and 65535")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _fraction(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        raise ValueError("expected a number between 0 and 1")
    return float(v)


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("expected a list of strings")
    return tuple(v)


_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.?[^@\s<>\"(),;:]*$")


def _address(v):
    v = _str(v).strip()
    if not _ADDRESS.match(v):
        raise ValueError(f'"{v}" is not a mail address')
    return v.lower()


def _address_list(v):
    return tuple(_address(x) for x in _str_list(v))


def _one_of(*choices):
    def conv(v):
        if v not in choices:
            raise ValueError("expected one of " + ", ".join(f'"{c}"' for c in choices))
        return v

    return conv


def _duration(v):
    return parse_duration(v)


def _timezone(v):
    try:
        return ZoneInfo(_str(v))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone "{v}"') from None


def _clock(v):
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,2}:\d{2}", v):
        raise ValueError('expected a time of day such as "09:00"')
    h, m = map(int, v.split(":"))
    if h > 24 or m > 59 or (h == 24 and m):
        raise ValueError(f'"{v}" is not a time of day')
    return dt.time(0, 0) if h == 24 else dt.time(h, m)  # 24:00 is kept as end of day below


def _date(v):
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return v
    try:
        return dt.date.fromisoformat(_str(v))
    except ValueError:
        raise ValueError(f'expected a date such as "2026-12-31", got "{v}"') from None


def _date_list(v):
    if not isinstance(v, list):
        raise ValueError("expected a list of dates")
    return tuple(_date(x) for x in v)


def _weekdays(v):
    days = _str_list(v)
    bad = [d for d in days if d.lower()[:3] not in WEEKDAYS]
    if bad:
        raise ValueError(f'unknown day "{bad[0]}" (use mon, tue, wed, thu, fri, sat, sun)')
    return tuple(sorted({WEEKDAYS.index(d.lower()[:3]) for d in days}))


def _path(v):
    return Path(_str(v)).expanduser()


def _level_keywords(v):
    if not isinstance(v, dict):
        raise ValueError("expected a table of level = [keywords]")
    out = {}
    for level, words in v.items():
        if level not in LEVELS:
            raise ValueError(f'unknown level "{level}" (use high, medium, low)')
        out[level] = tuple(w.lower() for w in _str_list(words))
    return out


def _matrix(v):
    if not isinstance(v, dict):
        raise ValueError("expected a table impact = { urgency = priority }")
    for impact in LEVELS:
        row = v.get(impact)
        if not isinstance(row, dict):
            raise _KeyedError(impact, "missing row for this impact")
        for urgency in LEVELS:
            if urgency not in row:
                raise _KeyedError(f"{impact}.{urgency}", "missing cell")
            if row[urgency] not in PRIORITIES:
                raise _KeyedError(f"{impact}.{urgency}", "expected one of " + ", ".join(PRIORITIES))
        extra = set(row) - set(LEVELS)
        if extra:
            raise _KeyedError(f"{impact}.{sorted(extra)[0]}", "unknown urgency level")
    extra = set(v) - set(LEVELS)
    if extra:
        raise _KeyedError(sorted(extra)[0], "unknown impact level")
    return {i: dict(v[i]) for i in LEVELS}


class _KeyedError(ValueError):
    """A converter's error about a key below the one it was given."""

    def __init__(self, subkey: str, message: str):
        self.subkey = subkey
        super().__init__(message)


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
    """Fill dataclass `cls` from a TOML table, appending problems to `errors`."""
    if not isinstance(table, dict):
        errors.append(f"{path}: expected a table")
        table = {}
    values: dict[str, Any] = {}
    known = set()
    for f in dataclasses.fields(cls):
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


def _secret(table: dict, path: str, errors: list[str], key: str = "password") -> str | None:
    """`password = "..."` or `password_file = "/run/credentials/..."` (systemd)."""
    if not isinstance(table, dict):
        return None
    inline, file_key = table.pop(key, None), table.pop(f"{key}_file", None)
    if inline is not None and file_key is not None:
        errors.append(f"{path}.{key}_file: give either {key} or {key}_file, not both")
        return None
    if inline is not None:
        if not isinstance(inline, str):
            errors.append(f"{path}.{key}: expected a string")
            return None
        return inline
    if file_key is not None:
        if not isinstance(file_key, str):
            errors.append(f"{path}.{key}_file: expected a string")
            return None
        file_key = os.path.expandvars(file_key)
        try:
            return Path(file_key).read_text().strip()
        except OSError as e:
            errors.append(f"{path}.{key}_file: cannot read {file_key}: {e.strerror}")
    return None


# --- sections --------------------------------------------------------------------


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY.
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/maildesk"))


@dataclass(frozen=True, kw_only=True)
class Desk:
    name: str = opt("IT Service Desk", _nonempty_str)
    address: str = opt(conv=_address)
    ticket_prefix: str = opt("INC", _str)
    timezone: ZoneInfo = opt(ZoneInfo("UTC"), _timezone)
    templates_dir: Path | None = opt(None, _path)
    state_dir: Path = opt(None, _path)
    default_group: str | None = opt(None, _str)
    # VERP envelope sender: {local}+bounce-{id}@{domain} by default.
    bounce_address: str = opt("{local}+bounce-{id}@{domain}", _str)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    @property
    def local_part(self) -> str:
        return self.address.rsplit("@", 1)[0]


@dataclass(frozen=True, kw_only=True)
class Database:
    url: str = opt(None, _nonempty_str)


@dataclass(frozen=True, kw_only=True)
class Imap:
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
    password: str | None = None  # from password / password_file
    oauth2_token: str | None = None  # from oauth2_token / oauth2_token_file

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


@dataclass(frozen=True, kw_only=True)
class Smtp:
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
    password: str | None = None
    oauth2_token: str | None = None

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.security]


@dataclass(frozen=True, kw_only=True)
class Group:
    name: str = opt(conv=_nonempty_str)
    tier: int = opt(1, _positive_int)
    escalates_to: str | None = opt(None, _nonempty_str)
    manager: str | None = opt(None, _address)
    strategy: str | None = opt(None, _one_of(*STRATEGIES))  # overrides assignment.strategy


@dataclass(frozen=True, kw_only=True)
class Technician:
    email: str = opt(conv=_address)
    name: str = opt(None, _nonempty_str)
    groups: tuple[str, ...] = opt((), _str_list)
    away_until: dt.date | None = opt(None, _date)

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@")[0]


@dataclass(frozen=True, kw_only=True)
class Roles:
    incident_managers: tuple[str, ...] = opt((), _address_list)


@dataclass(frozen=True, kw_only=True)
class Category:
    name: str = opt(conv=_nonempty_str)
    keywords: tuple[str, ...] = opt((), _str_list)
    group: str | None = opt(None, _nonempty_str)

    @property
    def parent(self) -> str | None:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else None


@dataclass(frozen=True, kw_only=True)
class Priority:
    vip: tuple[str, ...] = opt((), _address_list)
    impact_keywords: dict = opt({}, _level_keywords)
    urgency_keywords: dict = opt({}, _level_keywords)
    matrix: dict = opt(DEFAULT_MATRIX, _matrix)


@dataclass(frozen=True, kw_only=True)
class SlaPolicy:
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


@dataclass(frozen=True, kw_only=True)
class BusinessHours:
    days: tuple[int, ...] = opt((0, 1, 2, 3, 4), _weekdays)
    start: dt.time = opt(dt.time(9, 0), _clock)
    end: dt.time = opt(dt.time(17, 0), _clock)
    holidays_country: str | None = opt(None, _nonempty_str)
    holidays_subdivision: str | None = opt(None, _nonempty_str)
    holidays: tuple[dt.date, ...] = opt((), _date_list)


@dataclass(frozen=True, kw_only=True)
class Escalation:
    warn_at: float = opt(0.75, _fraction)


@dataclass(frozen=True, kw_only=True)
class Assignment:
    strategy: str = opt("round_robin", _one_of(*STRATEGIES))
    away_after_autoreply: Duration = opt(parse_duration("8h"), _duration)


@dataclass(frozen=True, kw_only=True)
class Security:
    trusted_authserv_ids: tuple[str, ...] = opt((), _str_list)
    trust_sender_address: bool = opt(False, _bool)
    secret: str | None = None  # from secret / secret_file; else kept in the database


@dataclass(frozen=True, kw_only=True)
class Lifecycle:
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


@dataclass(frozen=True, kw_only=True)
class Survey:
    enabled: bool = opt(True, _bool)
    min_days_between: int = opt(30, _int)


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_message_bytes: int = opt(25 * 1024 * 1024, _positive_int)
    max_header_bytes: int = opt(256 * 1024, _positive_int)
    max_parts: int = opt(500, _positive_int)
    max_depth: int = opt(20, _positive_int)
    parse_seconds: int = opt(10, _positive_int)
    auto_replies_per_sender_per_day: int = opt(10, _int)
    auto_replies_per_ticket_per_day: int = opt(20, _int)
    auto_replies_per_hour: int = opt(500, _int)  # desk-wide; above it automatic mail pauses


@dataclass(frozen=True, kw_only=True)
class Alerts:
    fetch_stalled_after: Duration = opt(parse_duration("30m"), _duration)


@dataclass(frozen=True, kw_only=True)
class Bounces:
    undeliverable_for: Duration = opt(parse_duration("60d"), _duration)


@dataclass(frozen=True, kw_only=True)
class Attachments:
    store: str = opt("files", _one_of("files", "database", "none"))
    dir: Path | None = opt(None, _path)


@dataclass(frozen=True, kw_only=True)
class Config:
    desk: Desk
    database: Database
    imap: Imap
    smtp: Smtp
    groups: tuple[Group, ...] = ()
    technicians: tuple[Technician, ...] = ()
    roles: Roles = Roles()
    categories: tuple[Category, ...] = ()
    priority: Priority = Priority()
    sla: tuple[SlaPolicy, ...] = DEFAULT_SLA
    business_hours: BusinessHours = BusinessHours()
    escalation: Escalation = Escalation()
    assignment: Assignment = Assignment()
    security: Security = Security()
    lifecycle: Lifecycle = Lifecycle()
    survey: Survey = Survey()
    limits: Limits = Limits()
    alerts: Alerts = Alerts()
    bounces: Bounces = Bounces()
    attachments: Attachments = Attachments()
    path: Path | None = None

    # --- lookups the rest of the code asks for ---------------------------------

    def group(self, name: str | None) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    @property
    def default_group(self) -> str | None:
        if self.desk.default_group:
            return self.desk.default_group
        names = [g.name for g in self.groups if g.tier == 1] or [g.name for g in self.groups]
        return names[0] if names else None

    def technician(self, email: str | None) -> Technician | None:
        if not email:
            return None
        email = email.lower()
        return next((t for t in self.technicians if t.email == email), None)

    def members(self, group: str | None) -> list[Technician]:
        return [t for t in self.technicians if group in t.groups]

    def is_staff(self, email: str | None) -> bool:
        """Technicians and incident managers may run technician commands."""
        return bool(email) and (
            self.technician(email) is not None or email.lower() in self.roles.incident_managers
        )

    def find_technician(self, who: str) -> Technician | None:
        """By address, by name, or by the local part of the address."""
        who = who.strip().lower()
        for t in self.technicians:
            if who in (t.email, (t.name or "").lower(), t.email.split("@")[0]):
                return t
        return None

    def category(self, name: str | None) -> Category | None:
        if not name:
            return None
        return next((c for c in self.categories if c.name.lower() == name.lower()), None)

    def category_group(self, name: str | None) -> str | None:
        """A category's group, inherited from its parent category, else the default."""
        while name:
            c = self.category(name)
            if c and c.group:
                return c.group
            name = c.parent if c else None
        return self.default_group

    def sla_for(self, priority: str, category: str | None = None) -> SlaPolicy:
        """The most specific policy: same priority and this category (or a parent
        of it), else the priority's own row."""
        rows = [s for s in self.sla if s.priority == priority]
        cat = category
        while cat:
            for s in rows:
                if s.category and s.category.lower() == cat.lower():
                    return s
            cat = cat.rsplit("/", 1)[0] if "/" in cat else None
        return next(s for s in rows if not s.category)

    @property
    def secret_bytes(self) -> bytes | None:
        return self.security.secret.encode() if self.security.secret else None

    def attachment_dir(self) -> Path:
        return self.attachments.dir or (self.desk.state_dir / "attachments")


_SECTIONS = {
    "desk": Desk, "database": Database, "imap": Imap, "smtp": Smtp, "roles": Roles,
    "priority": Priority, "business_hours": BusinessHours, "escalation": Escalation,
    "assignment": Assignment, "security": Security, "lifecycle": Lifecycle,
    "survey": Survey, "limits": Limits, "alerts": Alerts, "bounces": Bounces,
    "attachments": Attachments,
}
_ARRAYS = {"groups": Group, "technicians": Technician, "categories": Category, "sla": SlaPolicy}


def config_path(explicit: str | None) -> Path:
    path = explicit or os.environ.get("MAILDESK_CONFIG") or "/etc/maildesk/maildesk.toml"
    return Path(path)


def load_config(path: str | os.PathLike, deep: bool = True) -> Config:
    """`deep=False` skips the checks that cost time (the holiday tables): for the
    commands that only read the database."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file (give --config PATH or set MAILDESK_CONFIG)"])
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror}"])
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"])
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not valid UTF-8"])
    return parse_config(data, path, deep)


def parse_config(data: dict, path: Path | None = None, deep: bool = True) -> Config:
    errors: list[str] = []
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    secrets = {
        "imap": _secret(data.get("imap"), "imap", errors),
        "smtp": _secret(data.get("smtp"), "smtp", errors),
        "imap_oauth2": _secret(data.get("imap"), "imap", errors, "oauth2_token"),
        "smtp_oauth2": _secret(data.get("smtp"), "smtp", errors, "oauth2_token"),
        "security": _secret(data.get("security"), "security", errors, "secret"),
    }
    parts: dict[str, Any] = {}
    for key in data:
        if key not in _SECTIONS and key not in _ARRAYS:
            errors.append(f"{key}: unknown section")
    for key, cls in _SECTIONS.items():
        if key in data:
            parts[key] = _build(cls, data[key], key, errors)
        elif key in ("desk", "imap", "smtp"):
            errors.append(f"{key}: required section is missing")
        elif key == "database":
            parts[key] = Database()
    for key, cls in _ARRAYS.items():
        if key not in data:
            continue
        rows = data[key]
        if not isinstance(rows, list):
            errors.append(f"{key}: expected an array of tables ([[{key}]])")
            continue
        parts[key] = tuple(_build(cls, row, f"{key}[{i}]", errors) for i, row in enumerate(rows))
    if errors:
        raise ConfigError(errors)

    desk = parts["desk"]
    state_dir = desk.state_dir or _default_state_dir()
    parts["desk"] = dataclasses.replace(desk, state_dir=state_dir)
    db = parts["database"]
    if not db.url:
        parts["database"] = Database(url=f"sqlite:///{state_dir / 'maildesk.db'}")
    parts["imap"] = dataclasses.replace(
        parts["imap"], password=secrets["imap"], oauth2_token=secrets["imap_oauth2"]
    )
    parts["smtp"] = dataclasses.replace(
        parts["smtp"], password=secrets["smtp"], oauth2_token=secrets["smtp_oauth2"]
    )
    parts["security"] = dataclasses.replace(
        parts.get("security", Security()), secret=secrets["security"]
    )
    cfg = Config(**parts, path=path)
    check_consistency(cfg, deep)
    return cfg


def check_consistency(cfg: Config, deep: bool = True) -> None:
    """Problems that need more than one key to see."""
    errors = []
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", cfg.desk.ticket_prefix):
        errors.append("desk.ticket_prefix: use letters and digits only, such as \"INC\"")
    for key, conf in (("imap", cfg.imap), ("smtp", cfg.smtp)):
        if conf.auth == "oauth2" and not conf.oauth2_token:
            errors.append(f"{key}.oauth2_token_file: required when {key}.auth = \"oauth2\"")
    if cfg.imap.auth == "password" and cfg.imap.password is None:
        errors.append("imap.password_file: required key is missing (or give imap.password)")
    if cfg.smtp.username and cfg.smtp.auth == "password" and cfg.smtp.password is None:
        errors.append("smtp.password_file: required when smtp.username is set (or give smtp.password)")
    if "{id}" not in cfg.desk.bounce_address:
        errors.append('desk.bounce_address: must contain "{id}"')
    if cfg.database.url and not re.match(r"(sqlite|postgres(ql)?|postgresext)://", cfg.database.url):
        errors.append("database.url: expected sqlite:///PATH or postgresql://USER@HOST/DB")

    names = [g.name for g in cfg.groups]
    for i, g in enumerate(cfg.groups):
        if names.count(g.name) > 1 and names.index(g.name) != i:
            errors.append(f'groups[{i}].name: group "{g.name}" is defined twice')
        if g.escalates_to and g.escalates_to not in names:
            errors.append(f'groups[{i}].escalates_to: unknown group "{g.escalates_to}"')
        if g.escalates_to == g.name:
            errors.append(f"groups[{i}].escalates_to: a group cannot escalate to itself")
    if cfg.desk.default_group and cfg.desk.default_group not in names:
        errors.append(f'desk.default_group: unknown group "{cfg.desk.default_group}"')
    emails = [t.email for t in cfg.technicians]
    for i, t in enumerate(cfg.technicians):
        if emails.count(t.email) > 1 and emails.index(t.email) != i:
            errors.append(f"technicians[{i}].email: {t.email} is listed twice")
        for g in t.groups:
            if g not in names:
                errors.append(f'technicians[{i}].groups: unknown group "{g}"')
    cats = [c.name.lower() for c in cfg.categories]
    for i, c in enumerate(cfg.categories):
        if c.group and c.group not in names:
            errors.append(f'categories[{i}].group: unknown group "{c.group}"')
        if cats.count(c.name.lower()) > 1 and cats.index(c.name.lower()) != i:
            errors.append(f'categories[{i}].name: category "{c.name}" is defined twice')
    for i, s in enumerate(cfg.sla):
        if s.category and s.category.lower() not in cats and s.category.lower() != "general":
            errors.append(f'sla[{i}].category: unknown category "{s.category}"')
        if s.resolution.total < s.response.total:
            errors.append(f"sla[{i}].resolution: shorter than the response target")
    for p in PRIORITIES:
        if not any(s.priority == p and not s.category for s in cfg.sla):
            errors.append(f'sla: no policy for priority "{p}" (add [[sla]] priority = "{p}")')
    bh = cfg.business_hours
    if bh.end != dt.time(0, 0) and bh.end <= bh.start:
        errors.append("business_hours.end: must be later than business_hours.start")
    if not bh.days:
        errors.append("business_hours.days: needs at least one working day")
    if bh.holidays_subdivision and not bh.holidays_country:
        errors.append("business_hours.holidays_subdivision: needs business_hours.holidays_country")
    if bh.holidays_country and deep:
        errors.extend(_check_holidays(bh))
    codes = cfg.lifecycle.closure_codes
    if not codes:
        errors.append("lifecycle.closure_codes: needs at least one code")
    if errors:
        raise ConfigError(errors)


def _check_holidays(bh: BusinessHours) -> list[str]:
    import holidays

    try:
        holidays.country_holidays(bh.holidays_country, subdiv=bh.holidays_subdivision, years=2026)
    except NotImplementedError:
        return [f'business_hours.holidays_country: unknown country "{bh.holidays_country}"']
    except Exception:
        return [
            f'business_hours.holidays_subdivision: unknown subdivision "{bh.holidays_subdivision}" '
            f'of "{bh.holidays_country}"'
        ]
    return []
