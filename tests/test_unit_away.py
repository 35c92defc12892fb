"""Reading the return date from an out-of-office reply (desk/away.py): pure, no I/O."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from maildesk.desk.away import back_from_text

BERLIN = ZoneInfo("Europe/Berlin")
NOW = dt.datetime(2026, 5, 12, 9, 0, tzinfo=BERLIN)  # a Tuesday


@pytest.mark.parametrize("text,back", [
    ("I am out of the office and back on 18 May.", dt.date(2026, 5, 18)),
    ("Back on Monday, 18 May 2026", dt.date(2026, 5, 18)),
    ("I will return on May 18th.", dt.date(2026, 5, 18)),
    ("Out of office until 2026-05-17.", dt.date(2026, 5, 18)),
    ("Ich bin bis zum 17.05. nicht im Büro.", dt.date(2026, 5, 18)),
    ("Returning Thursday.", dt.date(2026, 5, 14)),
    ("I'm back on 05/18/2026", dt.date(2026, 5, 18)),
])
def test_an_out_of_office_reply_that_names_a_return_day_is_away_until_that_morning(text, back):
    assert back_from_text(text, NOW, BERLIN) == dt.datetime.combine(back, dt.time(0), tzinfo=BERLIN)


@pytest.mark.parametrize("text", [
    "I am out of the office with limited access to email.",
    "Back on 1 May.",  # already past: not believable, the configured window applies
    "Back on 18 May 2031.",  # too far ahead
    "Back on 31 February.",
])
def test_a_reply_without_a_believable_return_day_leaves_the_configured_window(text):
    assert back_from_text(text, NOW, BERLIN) is None


def test_a_return_day_early_next_year_is_read_in_december():
    december = dt.datetime(2026, 12, 20, 12, 0, tzinfo=BERLIN)
    assert back_from_text("back on 4 January", december, BERLIN) == dt.datetime(2027, 1, 4, tzinfo=BERLIN)
