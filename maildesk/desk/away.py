"""When a technician who sent an out-of-office reply will be back, read from its text.

Out-of-office replies usually say it: "I am back on 18 May", "returning Monday",
"until 2026-05-18", "bis zum 18.05.". `back_from_text` finds such a date near a
phrase that announces the return and gives the start of that day in the desk's time
zone; when the text names none (or names nonsense: the past, or more than
`MAX_AHEAD` away) the caller falls back to `assignment.away_after_autoreply`. Pure:
no database, no clock but the `now` it is given.
"""

from __future__ import annotations

import datetime as dt
import re

MAX_AHEAD = dt.timedelta(days=120)

_MONTHS = {m: i + 1 for i, names in enumerate((
    ("january", "jan", "januar", "janvier"), ("february", "feb", "februar", "fevrier", "février"),
    ("march", "mar", "märz", "maerz", "mars"), ("april", "apr", "avril"), ("may", "mai"),
    ("june", "jun", "juni", "juin"), ("july", "jul", "juli", "juillet"), ("august", "aug", "août", "aout"),
    ("september", "sep", "sept", "septembre"), ("october", "oct", "oktober", "okt", "octobre"),
    ("november", "nov", "novembre"), ("december", "dec", "dezember", "dez", "décembre", "decembre"),
)) for m in names}
_WEEKDAYS = {d: i for i, names in enumerate((
    ("monday", "mon", "montag"), ("tuesday", "tue", "tues", "dienstag"), ("wednesday", "wed", "mittwoch"),
    ("thursday", "thu", "thur", "thurs", "donnerstag"), ("friday", "fri", "freitag"),
    ("saturday", "sat", "samstag"), ("sunday", "sun", "sonntag"),
)) for d in names}

# a phrase that announces the return, then up to 40 characters before the date
_CUE = re.compile(r"\b(back|return(?:ing)?|returns|in the office|until|till|through|bis|zurück|wieder)\b(.{0,40})",
                  re.IGNORECASE | re.DOTALL)
_MONTH_WORD = "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True))
_DAY_WORD = "|".join(sorted(map(re.escape, _WEEKDAYS), key=len, reverse=True))
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_NUMERIC = re.compile(r"(\d{1,2})[./](\d{1,2})\.?(?:[./](\d{2,4}))?")
_DAY_MONTH = re.compile(rf"(\d{{1,2}})(?:st|nd|rd|th)?\.?\s+({_MONTH_WORD})\.?(?:\s+(\d{{4}}))?", re.IGNORECASE)
_MONTH_DAY = re.compile(rf"({_MONTH_WORD})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?", re.IGNORECASE)
_WEEKDAY = re.compile(rf"\b({_DAY_WORD})\b", re.IGNORECASE)


def back_from_text(text: str, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The start of the day the reply says its sender is back, or None."""
    today = now.astimezone(tz).date()
    for cue in _CUE.finditer(text[:4000]):
        day = _date_in(cue.group(2), today)
        if day is None:
            continue
        if cue.group(1).lower() in ("until", "till", "through", "bis"):
            day += dt.timedelta(days=1)  # "until Friday": back the day after
        back = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
        if now < back <= now + MAX_AHEAD:
            return back
    return None


def _date_in(fragment: str, today: dt.date) -> dt.date | None:
    candidates = []
    if m := _ISO.search(fragment):
        candidates.append((m.start(), _make(int(m.group(1)), int(m.group(2)), int(m.group(3)))))
    if m := _DAY_MONTH.search(fragment):
        candidates.append((m.start(), _with_year(today, _MONTHS[m.group(2).lower()], int(m.group(1)), m.group(3))))
    if m := _MONTH_DAY.search(fragment):
        candidates.append((m.start(), _with_year(today, _MONTHS[m.group(1).lower()], int(m.group(2)), m.group(3))))
    if not candidates and (m := _NUMERIC.search(fragment)):
        # day first, as nearly everyone but the US writes it; a US reply with an
        # impossible day-first reading (05/18) still parses month first
        day, month = int(m.group(1)), int(m.group(2))
        if month > 12 >= day:
            day, month = month, day
        candidates.append((m.start(), _with_year(today, month, day, m.group(3))))
    if not candidates and (m := _WEEKDAY.search(fragment)):
        ahead = (_WEEKDAYS[m.group(1).lower()] - today.weekday()) % 7 or 7
        candidates.append((m.start(), today + dt.timedelta(days=ahead)))
    found = [d for _, d in sorted(candidates, key=lambda c: c[0]) if d is not None]
    return found[0] if found else None


def _make(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _with_year(today: dt.date, month: int, day: int, year: str | None) -> dt.date | None:
    if year:
        y = int(year)
        return _make(y + 2000 if y < 100 else y, month, day)
    date = _make(today.year, month, day)
    if date is not None and date < today:  # "back on 3 January", written in December
        date = _make(today.year + 1, month, day)
    return date
