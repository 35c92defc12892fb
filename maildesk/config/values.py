"""Value types and field converters: each takes a TOML value and returns it checked,
or raises ValueError with a message for the admin.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import MaildeskError
from ..vocab import LEVELS, PRIORITIES
from .record import Section

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STRATEGIES = ("round_robin", "least_loaded", "none")
SECURITY_MODES = ("ssl", "starttls", "none")
CALENDARS = ("24x7", "business")

# ITIL's default impact x urgency matrix (docs/configuration.md, [priority] matrix).
DEFAULT_MATRIX = {
    "high": {"high": "critical", "medium": "high", "low": "medium"},
    "medium": {"high": "high", "medium": "medium", "low": "low"},
    "low": {"high": "medium", "medium": "low", "low": "low"},
}


class ConfigError(MaildeskError):
    """One or more problems, each a line that starts with the key it is about."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- value types -----------------------------------------------------------


class Duration(Section):
    """`15m`, `4h`, `3d`, `1d4h`, `30s`. Days are kept apart because in a
    business calendar a day means one working day, not 24 hours. A `Section` (a frozen
    record), not a dataclass: see config/record.py."""

    text: str
    days: int
    seconds: int  # the part below a day

    @property
    def total(self) -> dt.timedelta:
        return dt.timedelta(days=self.days, seconds=self.seconds)

    def minutes(self, day_minutes: float = 24 * 60) -> float:
        return self.days * day_minutes + self.seconds / 60

    @property
    def words(self) -> str:
        """For people: "3 days", "1 hour 30 minutes" (mail text never shows "3d")."""
        h, rest = divmod(self.seconds, 3600)
        m, sec = divmod(rest, 60)
        parts = [(self.days, "day"), (h, "hour"), (m, "minute"), (sec, "second")]
        return " ".join(f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n) or "no time"


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
    return Duration(text=text.strip(), days=days, seconds=seconds)


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


def _non_negative_int(v):
    v = _int(v)
    if v < 0:
        raise ValueError("must not be negative")
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


def _weekly(v):
    """"mon 08:00" -> (0, 08:00); "" -> None (no weekly report)."""
    if v == "":
        return None
    parts = v.split() if isinstance(v, str) else []
    if len(parts) != 2 or parts[0].lower() not in WEEKDAYS:
        raise ValueError('expected a weekday and a time such as "mon 08:00", or "" for none')
    return WEEKDAYS.index(parts[0].lower()), _clock(parts[1])


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


def _text_search_language(v):
    """A text search configuration name (PostgreSQL's `regconfig`): it goes into SQL."""
    v = _str(v).strip().lower()
    if not re.fullmatch(r"[a-z][a-z_]{0,62}", v):
        raise ValueError(f'"{v}" is not a text search language such as "english" or "german"')
    return v


def _path(v):
    return Path(_str(v)).expanduser()


def _http_url(v):
    v = _str(v).strip()
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", v):
        raise ValueError(f'"{v}" is not an http:// or https:// URL')
    return v


def _listen_address(v):
    """`HOST:PORT` (`[::1]:9464` for IPv6); the host must be given."""
    v = _str(v).strip()
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d+)", v)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f'"{v}" is not an address such as "127.0.0.1:9464"')
    return v


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
