"""Business-minute arithmetic: when is a target due, and how much working time
lies between two instants. Pure functions of the calendar and the times given;
no clock, no database.

    cal = calendar_for(cfg, "business")           # or "24x7"
    due = cal.add(opened_at, policy.response.minutes(cal.day_minutes))
    used = cal.between(opened_at, now)             # business minutes, a float
    cal.is_open(now)

A working window is a local wall-clock interval (09:00-17:00 in the desk's time
zone) turned into UTC day by day, so a 09:00-17:00 day is 8 hours even on a
daylight-saving day, while a 00:00-24:00 day has 23 or 25. `AlwaysOpen` ("24x7")
counts real elapsed time. Results are aware UTC datetimes.

Rules every caller can rely on:

- a start outside working time counts from the next opening, so `add(t, 0)` is
  `t` when open and the next opening when closed;
- a result that uses up exactly the rest of a window is that window's end
  (17:00 Friday), not the next opening (09:00 Monday);
- `between(a, b)` counts working time in [a, b) and is 0 when b <= a;
- minutes are floats and are kept to the microsecond.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from zoneinfo import ZoneInfo

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = dt.timedelta(microseconds=1)
MICROS_PER_MINUTE = 60_000_000
MIDNIGHT = dt.time(0, 0)
# A calendar with no working window for this many days in a row is broken
# (every day a holiday); stop rather than loop for ever.
MAX_CLOSED_DAYS = 3660


# --- instants as integer microseconds -------------------------------------------
# All arithmetic runs on integer microseconds since the epoch: exact, and faster
# than timedelta. It also sidesteps a trap: Python subtracts two datetimes that
# share a tzinfo by wall clock, ignoring a DST change between them.


def _micros(t: dt.datetime) -> int:
    try:
        return (t - EPOCH) // MICROSECOND
    except TypeError:  # naive minus aware; checked here, not before, as this runs per window
        raise ValueError(f"expected an aware datetime, got {t!r}") from None


def _instant(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


def _minutes_to_micros(minutes: float) -> int:
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(f"expected a finite, non-negative number of minutes, got {minutes!r}")
    return round(minutes * MICROS_PER_MINUTE)


# --- calendars ----------------------------------------------------------------------


class Calendar:
    """What SLA code needs from a calendar. `day_minutes` is the length of one
    working day, so that a "3d" target means three working days."""

    day_minutes: float

    def add(self, start: dt.datetime, minutes: float) -> dt.datetime:
        """The instant when `minutes` business minutes have passed after `start`."""
        raise NotImplementedError

    def between(self, a: dt.datetime, b: dt.datetime) -> float:
        """Business minutes in [a, b); 0 when b <= a."""
        raise NotImplementedError

    def is_open(self, t: dt.datetime) -> bool:
        """Whether `t` is working time (a window's start counts, its end does not)."""
        raise NotImplementedError


class AlwaysOpen(Calendar):
    """24x7: every minute counts, and a DST change is real time gained or lost."""

    day_minutes = 24 * 60

    def add(self, start: dt.datetime, minutes: float) -> dt.datetime:
        return _instant(_micros(start) + _minutes_to_micros(minutes))

    def between(self, a: dt.datetime, b: dt.datetime) -> float:
        return max(0, _micros(b) - _micros(a)) / MICROS_PER_MINUTE

    def is_open(self, t: dt.datetime) -> bool:
        _micros(t)  # still refuse a naive time, as the other methods do
        return True

    def __repr__(self) -> str:
        return "AlwaysOpen()"


class BusinessCalendar(Calendar):
    """Working days and hours in one time zone, less public and listed holidays.

    Each local date has at most one window, (start, end) in UTC microseconds,
    computed once and cached. Wall-clock times in a DST gap or fold follow
    zoneinfo's fold=0 rule (PEP 495); a window that the gap swallows whole
    (end not after start) is treated as closed.
    """

    def __init__(
        self,
        tz: ZoneInfo,
        days: Iterable[int],
        start: dt.time,
        end: dt.time,
        country: str | None = None,
        subdivision: str | None = None,
        extra_holidays: Iterable[dt.date] = (),
    ):
        days = frozenset(days)
        if not days or not days <= set(range(7)):
            raise ValueError(f"days must be a non-empty set of weekdays 0..6, got {sorted(days)}")
        if end != MIDNIGHT and end <= start:
            raise ValueError(f"end {end} must be later than start {start} (00:00 means 24:00)")
        if subdivision and not country:
            raise ValueError("a holiday subdivision needs a country")
        self.tz = tz
        self.days = days
        self.start = start
        self.end = end
        self.country = country
        self.subdivision = subdivision
        self.extra_holidays = frozenset(extra_holidays)
        self.day_minutes = _clock_minutes(end if end != MIDNIGHT else None) - _clock_minutes(start)
        self._windows: dict[int, tuple[int, int] | None] = {}
        self._holidays: dict[int, frozenset[dt.date]] = {}

    def __repr__(self) -> str:
        return (
            f"BusinessCalendar({self.tz.key!r}, days={sorted(self.days)}, "
            f"{self.start:%H:%M}-{'24:00' if self.end == MIDNIGHT else format(self.end, '%H:%M')}, "
            f"country={self.country!r}, subdivision={self.subdivision!r}, "
            f"extra_holidays={len(self.extra_holidays)})"
        )

    # --- the three questions ---

    def add(self, start: dt.datetime, minutes: float) -> dt.datetime:
        remaining = _minutes_to_micros(minutes)
        cursor = _micros(start)
        # Start a day early: cheap insurance that a window still running across
        # local midnight (24:00 ends, folds at midnight) is never missed.
        day = self._local_day(start) - 1
        closed_run = 0
        while True:
            window = self._window(day)
            day += 1
            if window is None:
                closed_run += 1
                if closed_run > MAX_CLOSED_DAYS:
                    raise ValueError(f"{self!r} has no working time in {MAX_CLOSED_DAYS} days")
                continue
            closed_run = 0
            opens, closes = max(window[0], cursor), window[1]
            if closes <= opens:
                continue  # already past this window
            # `<=`: ending exactly at the close is the close, not the next opening.
            if remaining <= closes - opens:
                return _instant(opens + remaining)
            remaining -= closes - opens
            cursor = closes

    def between(self, a: dt.datetime, b: dt.datetime) -> float:
        cursor, stop = _micros(a), _micros(b)
        if stop <= cursor:
            return 0.0
        total = 0
        for day in range(self._local_day(a) - 1, self._local_day(b) + 2):
            window = self._window(day)
            if window is None:
                continue
            opens, closes = max(window[0], cursor), min(window[1], stop)
            if closes > opens:
                total += closes - opens
                cursor = closes  # never count a stretch twice, even if windows overlap
        return total / MICROS_PER_MINUTE

    def is_open(self, t: dt.datetime) -> bool:
        x = _micros(t)
        day = self._local_day(t)
        for d in (day - 1, day, day + 1):
            window = self._window(d)
            if window is not None and window[0] <= x < window[1]:
                return True
        return False

    # --- windows ---

    def _local_day(self, t: dt.datetime) -> int:
        return t.astimezone(self.tz).toordinal()

    def _window(self, day: int) -> tuple[int, int] | None:
        """The working window of local date `day` (a proleptic ordinal), cached."""
        try:
            return self._windows[day]
        except KeyError:
            window = self._windows[day] = self._compute_window(dt.date.fromordinal(day))
            return window

    def _compute_window(self, date: dt.date) -> tuple[int, int] | None:
        if not self.is_working_day(date):
            return None
        opens = dt.datetime.combine(date, self.start, tzinfo=self.tz)
        if self.end == MIDNIGHT:
            closes = dt.datetime.combine(date + dt.timedelta(days=1), MIDNIGHT, tzinfo=self.tz)
        else:
            closes = dt.datetime.combine(date, self.end, tzinfo=self.tz)
        # Comparing through _micros is in UTC; a gap can make a tiny window empty.
        opens_at, closes_at = _micros(opens), _micros(closes)
        return (opens_at, closes_at) if closes_at > opens_at else None

    def is_working_day(self, date: dt.date) -> bool:
        """A listed weekday that is neither a public nor a listed holiday."""
        return (
            date.weekday() in self.days
            and date not in self.extra_holidays
            and date not in self._public_holidays(date.year)
        )

    def _public_holidays(self, year: int) -> frozenset[dt.date]:
        if not self.country:
            return frozenset()
        try:
            return self._holidays[year]
        except KeyError:
            dates = self._holidays[year] = _load_holidays(self.country, self.subdivision, year)
            return dates


def _clock_minutes(t: dt.time | None) -> float:
    """Minutes since midnight; None is 24:00."""
    if t is None:
        return 24 * 60
    return t.hour * 60 + t.minute + t.second / 60 + t.microsecond / MICROS_PER_MINUTE


def _load_holidays(country: str, subdivision: str | None, year: int) -> frozenset[dt.date]:
    # Imported here: the package takes ~70 ms to import and only business
    # calendars with a country need it.
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())


# --- from the configuration -------------------------------------------------------

_calendars: dict[tuple[int, str], tuple[object, Calendar]] = {}


def calendar_for(cfg, name: str) -> Calendar:
    """The calendar named by an SLA policy ("24x7" or "business") for `cfg`,
    built once per config object."""
    key = (id(cfg), name)
    if key not in _calendars:
        # The entry holds `cfg` itself so that its id cannot be reused by a later
        # config while the entry exists; a process loads only a few configs.
        _calendars[key] = (cfg, _build_calendar(cfg, name))
    return _calendars[key][1]


def _build_calendar(cfg, name: str) -> Calendar:
    if name == "24x7":
        return AlwaysOpen()
    if name == "business":
        bh = cfg.business_hours
        return BusinessCalendar(
            cfg.desk.timezone,
            bh.days,
            bh.start,
            bh.end,
            country=bh.holidays_country,
            subdivision=bh.holidays_subdivision,
            extra_holidays=bh.holidays,
        )
    raise ValueError(f'unknown calendar "{name}" (use "24x7" or "business")')
