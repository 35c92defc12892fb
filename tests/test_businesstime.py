"""Business-minute arithmetic: nights, weekends, holidays and daylight saving."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.businesstime import AlwaysOpen, BusinessCalendar, Calendar, calendar_for
from maildesk.config import parse_config
from tests.builders import minimal_config

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC
WEEKDAYS = (0, 1, 2, 3, 4)
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)
NINE, FIVE, MIDNIGHT = dt.time(9), dt.time(17), dt.time(0)
ONE_MICROSECOND = dt.timedelta(microseconds=1)


def at(tz, *fields):
    return dt.datetime(*fields, tzinfo=tz)


def office(tz=BERLIN, **kw):
    return BusinessCalendar(tz, WEEKDAYS, NINE, FIVE, **kw)


# --- nights, weekends, holidays -------------------------------------------------------


def test_friday_half_past_four_plus_an_hour_is_monday_half_past_nine():
    due = office().add(at(BERLIN, 2026, 1, 9, 16, 30), 60)
    assert due == at(BERLIN, 2026, 1, 12, 9, 30)
    assert due.tzinfo is UTC


def test_a_listed_holiday_on_that_monday_makes_it_tuesday_half_past_nine():
    cal = office(extra_holidays=[dt.date(2026, 1, 12)])
    assert cal.add(at(BERLIN, 2026, 1, 9, 16, 30), 60) == at(BERLIN, 2026, 1, 13, 9, 30)


def test_easter_public_holidays_are_skipped_with_country_de():
    # 2026-04-03 is Good Friday and 2026-04-06 Easter Monday in Germany.
    cal = office(country="DE")
    assert cal.add(at(BERLIN, 2026, 4, 2, 16, 30), 60) == at(BERLIN, 2026, 4, 7, 9, 30)


def test_christmas_holidays_and_a_listed_christmas_eve_are_skipped():
    cal = office(country="DE", extra_holidays=[dt.date(2026, 12, 24)])
    # Wed 23rd 16:00 + 2h: the 24th is listed, 25th/26th are public, then a Sunday.
    assert cal.add(at(BERLIN, 2026, 12, 23, 16), 120) == at(BERLIN, 2026, 12, 28, 10)
    assert cal.between(at(BERLIN, 2026, 12, 23, 9), at(BERLIN, 2026, 12, 28, 9)) == 480
    assert not cal.is_open(at(BERLIN, 2026, 12, 24, 10))
    assert not cal.is_open(at(BERLIN, 2026, 12, 25, 10))


def test_christmas_eve_is_a_working_day_unless_listed():
    assert office(country="DE").is_open(at(BERLIN, 2026, 12, 24, 10))


def test_subdivision_holidays_apply_only_to_that_subdivision():
    # Epiphany (6 January) is a holiday in Bavaria, not in Berlin.
    epiphany = at(BERLIN, 2026, 1, 6, 10)
    assert office(country="DE").is_open(epiphany)
    assert not office(country="DE", subdivision="BY").is_open(epiphany)


def test_between_over_a_weekend_is_zero():
    assert office().between(at(BERLIN, 2026, 1, 9, 17), at(BERLIN, 2026, 1, 12, 9)) == 0


def test_between_across_a_night_counts_only_window_minutes():
    assert office().between(at(BERLIN, 2026, 1, 13, 16), at(BERLIN, 2026, 1, 14, 10)) == 120


def test_between_is_zero_for_reversed_or_empty_intervals():
    a, b = at(BERLIN, 2026, 1, 13, 10), at(BERLIN, 2026, 1, 13, 12)
    for cal in (office(), AlwaysOpen()):
        assert cal.between(b, a) == 0
        assert cal.between(a, a) == 0


def test_between_accepts_times_in_different_zones():
    a = at(BERLIN, 2026, 1, 13, 10)
    assert office().between(a, at(NEW_YORK, 2026, 1, 13, 6)) == 120  # 12:00 Berlin


# --- where counting starts and stops ----------------------------------------------------


def test_a_result_at_the_close_is_the_close_not_the_next_morning():
    cal = office()
    due = cal.add(at(BERLIN, 2026, 1, 9, 16), 60)
    assert due == at(BERLIN, 2026, 1, 9, 17)
    assert not cal.is_open(due)


def test_adding_nothing_when_open_is_the_start_itself():
    start = at(BERLIN, 2026, 1, 13, 11, 17, 3, 5)
    assert office().add(start, 0) == start


def test_adding_nothing_when_closed_is_the_next_opening():
    cal = office()
    assert cal.add(at(BERLIN, 2026, 1, 10, 12), 0) == at(BERLIN, 2026, 1, 12, 9)  # Saturday
    assert cal.add(at(BERLIN, 2026, 1, 9, 17), 0) == at(BERLIN, 2026, 1, 12, 9)  # Friday close


def test_a_start_before_opening_counts_from_the_opening():
    assert office().add(at(BERLIN, 2026, 1, 13, 7), 30) == at(BERLIN, 2026, 1, 13, 9, 30)


def test_window_start_is_open_and_window_end_is_closed():
    cal = office()
    assert cal.is_open(at(BERLIN, 2026, 1, 13, 9))
    assert not cal.is_open(at(BERLIN, 2026, 1, 13, 17))
    assert cal.is_open(at(BERLIN, 2026, 1, 13, 17) - ONE_MICROSECOND)


def test_three_working_days_from_monday_morning_end_on_thursday_morning():
    cal = office()
    assert cal.day_minutes == 480
    assert cal.add(at(BERLIN, 2026, 1, 12, 10), 3 * cal.day_minutes) == at(BERLIN, 2026, 1, 15, 10)


def test_fractional_minutes_are_kept_to_the_microsecond():
    cal = office()
    start = at(BERLIN, 2026, 1, 13, 10)
    due = cal.add(start, 1.5)
    assert due == at(BERLIN, 2026, 1, 13, 10, 1, 30)
    assert cal.between(start, due + dt.timedelta(microseconds=600)) == pytest.approx(1.50001)


def test_an_end_of_midnight_means_the_end_of_the_day():
    cal = BusinessCalendar(BERLIN, WEEKDAYS, dt.time(18), MIDNIGHT)
    assert cal.day_minutes == 360
    assert cal.add(at(BERLIN, 2026, 1, 13, 23), 60) == at(BERLIN, 2026, 1, 14, 0)
    assert cal.add(at(BERLIN, 2026, 1, 13, 23), 61) == at(BERLIN, 2026, 1, 14, 18, 1)


# --- daylight saving --------------------------------------------------------------------

DST_DAYS = [  # zone, day of the change, real hours in that local day
    (BERLIN, dt.date(2026, 3, 29), 23),
    (BERLIN, dt.date(2026, 10, 25), 25),
    (NEW_YORK, dt.date(2026, 3, 8), 23),
    (NEW_YORK, dt.date(2026, 11, 1), 25),
]


def _midnights(tz, day):
    following = day + dt.timedelta(days=1)
    return at(tz, day.year, day.month, day.day), at(tz, following.year, following.month, following.day)


@pytest.mark.parametrize("tz, day, hours", DST_DAYS)
def test_24x7_adds_real_elapsed_time_across_a_dst_change(tz, day, hours):
    start, next_midnight = _midnights(tz, day)
    cal = AlwaysOpen()
    assert cal.between(start, next_midnight) == hours * 60
    assert cal.add(start, hours * 60) == next_midnight
    assert cal.add(start, 24 * 60) - start.astimezone(UTC) == dt.timedelta(hours=24)


@pytest.mark.parametrize("tz, day, hours", DST_DAYS)
def test_nine_to_five_is_eight_hours_on_a_dst_change_day(tz, day, hours):
    cal = BusinessCalendar(tz, EVERY_DAY, NINE, FIVE)
    start, next_midnight = _midnights(tz, day)
    assert cal.between(start, next_midnight) == 480
    nine = start.replace(hour=9)
    assert cal.add(nine, 480) == start.replace(hour=17)
    assert cal.add(nine, 481) == next_midnight.replace(hour=9, minute=1)


@pytest.mark.parametrize("tz, day, hours", DST_DAYS)
def test_a_weekday_calendar_spanning_a_dst_weekend_keeps_eight_hour_days(tz, day, hours):
    # Changes fall on Sundays; count Friday to Monday evening across one.
    cal = BusinessCalendar(tz, WEEKDAYS, NINE, FIVE)
    friday, monday = day - dt.timedelta(days=2), day + dt.timedelta(days=1)
    friday_nine = at(tz, friday.year, friday.month, friday.day, 9)
    monday_five = at(tz, monday.year, monday.month, monday.day, 17)
    assert cal.between(friday_nine, monday_five) == 960
    assert cal.add(friday_nine, 960) == monday_five


@pytest.mark.parametrize("tz, day, hours", DST_DAYS)
def test_a_midnight_to_midnight_calendar_has_23_or_25_hour_days(tz, day, hours):
    cal = BusinessCalendar(tz, EVERY_DAY, MIDNIGHT, MIDNIGHT)
    start, next_midnight = _midnights(tz, day)
    assert cal.day_minutes == 1440
    assert cal.between(start, next_midnight) == hours * 60
    assert cal.add(start, hours * 60) == next_midnight
    # 24 real hours: 01:00 the next day in spring, 23:00 the same day in autumn.
    assert cal.add(start, 24 * 60) == start.astimezone(UTC) + dt.timedelta(hours=24)


def test_a_window_starting_in_the_spring_gap_opens_when_the_clock_resumes():
    # 02:00 does not exist on 2026-03-29 in Berlin; fold=0 reads it as 03:00 CEST.
    cal = BusinessCalendar(BERLIN, EVERY_DAY, dt.time(2), dt.time(4))
    start, next_midnight = _midnights(BERLIN, dt.date(2026, 3, 29))
    assert cal.between(start, next_midnight) == 60
    assert cal.add(start, 0) == at(BERLIN, 2026, 3, 29, 3)


def test_a_window_across_the_autumn_fold_includes_the_repeated_hour():
    # 02:00 happens twice on 2026-10-25 in Berlin; fold=0 takes the first one.
    cal = BusinessCalendar(BERLIN, EVERY_DAY, dt.time(2), dt.time(3))
    start, next_midnight = _midnights(BERLIN, dt.date(2026, 10, 25))
    assert cal.between(start, next_midnight) == 120


def test_a_window_swallowed_by_the_spring_gap_is_closed_that_day():
    cal = BusinessCalendar(BERLIN, EVERY_DAY, dt.time(2, 30), dt.time(3))
    start, next_midnight = _midnights(BERLIN, dt.date(2026, 3, 29))
    assert cal.between(start, next_midnight) == 0
    assert cal.add(start, 10) == at(BERLIN, 2026, 3, 30, 2, 40)


# --- refusals ---------------------------------------------------------------------------


def test_a_calendar_with_no_working_day_for_ten_years_raises_instead_of_looping():
    mondays = [dt.date(2026, 1, 5) + dt.timedelta(weeks=w) for w in range(52 * 12)]
    cal = BusinessCalendar(BERLIN, (0,), NINE, FIVE, extra_holidays=mondays)
    with pytest.raises(ValueError, match="no working time"):
        cal.add(at(BERLIN, 2026, 1, 1), 1)


def test_an_end_before_the_start_is_refused():
    with pytest.raises(ValueError, match="later than start"):
        BusinessCalendar(BERLIN, WEEKDAYS, FIVE, NINE)


def test_a_calendar_without_days_is_refused():
    with pytest.raises(ValueError, match="days"):
        BusinessCalendar(BERLIN, (), NINE, FIVE)


def test_naive_times_and_negative_minutes_are_refused():
    for cal in (office(), AlwaysOpen()):
        with pytest.raises(ValueError, match="aware"):
            cal.add(dt.datetime(2026, 1, 13, 10), 5)
        with pytest.raises(ValueError, match="non-negative"):
            cal.add(at(BERLIN, 2026, 1, 13, 10), -5)


# --- from the configuration -------------------------------------------------------------


def _config(**business_hours):
    return parse_config(minimal_config(desk={"address": "help@example.org", "timezone": "America/New_York"},
                                       business_hours=business_hours))


def test_calendar_for_24x7_is_always_open():
    assert isinstance(calendar_for(_config(), "24x7"), AlwaysOpen)


def test_calendar_for_business_follows_the_configured_hours_and_holidays():
    cfg = _config(days=["mon", "tue"], start="08:00", end="24:00",
                  holidays_country="US", holidays=["2026-01-13"])
    cal = calendar_for(cfg, "business")
    assert cal is calendar_for(cfg, "business")
    assert cal.day_minutes == 16 * 60
    assert cal.is_open(at(NEW_YORK, 2026, 1, 12, 23, 59))
    assert not cal.is_open(at(NEW_YORK, 2026, 1, 13, 10))  # listed
    assert not cal.is_open(at(NEW_YORK, 2026, 1, 19, 10))  # Martin Luther King Jr. Day


def test_calendar_for_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match="unknown calendar"):
        calendar_for(_config(), "lunar")


# --- properties -------------------------------------------------------------------------

CALENDARS = [
    office(country="DE", extra_holidays=[dt.date(2026, 12, 24)]),
    BusinessCalendar(NEW_YORK, WEEKDAYS, dt.time(8, 30), dt.time(18), country="US", subdivision="NY"),
    BusinessCalendar(ZoneInfo("Asia/Kolkata"), (6, 0, 1, 2, 3), dt.time(10), dt.time(18, 30)),
    BusinessCalendar(BERLIN, EVERY_DAY, MIDNIGHT, MIDNIGHT),
    # Opens inside the spring gap and closes after the autumn fold.
    BusinessCalendar(BERLIN, EVERY_DAY, dt.time(1, 30), dt.time(3, 30)),
    # Lord Howe shifts by half an hour at 02:00, right through this window.
    BusinessCalendar(ZoneInfo("Australia/Lord_Howe"), EVERY_DAY, dt.time(1, 45), dt.time(2, 15)),
    AlwaysOpen(),
]
ZONES = [UTC, BERLIN, NEW_YORK, ZoneInfo("Asia/Kolkata"), ZoneInfo("Australia/Lord_Howe"),
         ZoneInfo("Pacific/Chatham")]



def _offset_changes(tz, year):
    """The UTC hours in `year` after which `tz` changes its offset."""
    hour = dt.timedelta(hours=1)
    t = dt.datetime(year, 1, 1, tzinfo=UTC)
    changes = []
    while t.year == year:
        if t.astimezone(tz).utcoffset() != (t + hour).astimezone(tz).utcoffset():
            changes.append(t)
        t += hour
    return changes


# Random instants rarely fall near a DST change, so half are drawn within two
# days of one, where windows meet the gap and the fold.
DST_CHANGES = [t for tz in (BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"))
               for t in _offset_changes(tz, 2026)]
calendars = st.sampled_from(CALENDARS)
instants = st.one_of(
    st.datetimes(
        min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2034, 12, 31),
        timezones=st.sampled_from(ZONES),
    ),
    st.builds(
        lambda change, seconds, tz: (change + dt.timedelta(seconds=seconds)).astimezone(tz),
        st.sampled_from(DST_CHANGES), st.integers(-2 * 86400, 2 * 86400), st.sampled_from(ZONES),
    ),
)
fractions = st.one_of(st.just(0.0), st.just(1.0), st.floats(min_value=0, max_value=1))
PROPERTY = settings(max_examples=200, deadline=None)


def _is_window_end(cal: Calendar, t: dt.datetime) -> bool:
    return not cal.is_open(t) and cal.is_open(t - ONE_MICROSECOND)


@PROPERTY
@given(cal=calendars, start=instants, share=fractions)
def test_between_the_counted_start_and_add_is_the_minutes_added(cal, start, share):
    minutes = share * 20 * cal.day_minutes
    due = cal.add(start, minutes)
    counted_from = cal.add(start, 0)
    assert cal.between(counted_from, due) == pytest.approx(minutes, abs=1e-6)
    assert cal.between(start, due) == pytest.approx(minutes, abs=1e-6)
    assert due.tzinfo is UTC


@PROPERTY
@given(cal=calendars, start=instants, share=fractions)
def test_add_lands_in_working_time_or_exactly_at_a_window_end(cal, start, share):
    due = cal.add(start, share * 20 * cal.day_minutes)
    assert cal.is_open(due) or _is_window_end(cal, due)
    assert due >= start


@PROPERTY
@given(cal=calendars, start=instants)
def test_adding_nothing_gives_the_start_when_open_else_a_later_opening(cal, start):
    opening = cal.add(start, 0)
    assert cal.is_open(opening)
    if cal.is_open(start):
        # In UTC: PEP 495 makes a time in the fold unequal to any other zone's.
        assert opening == start.astimezone(UTC)
    else:
        assert opening > start
        assert cal.between(start, opening) == 0


@PROPERTY
@given(cal=calendars, a=instants, b=instants, c=instants)
def test_between_adds_up_over_consecutive_intervals(cal, a, b, c):
    # Sorted in UTC: within one zone Python compares wall clocks and ignores fold.
    a, b, c = sorted((a, b, c), key=lambda t: t.astimezone(UTC))
    whole = cal.between(a, c)
    assert cal.between(a, b) + cal.between(b, c) == pytest.approx(whole, abs=1e-6)
    assert whole >= 0
