"""Unit tests of scheduler.slots: intervals, cron parsing, time zones and daylight-saving nights."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from scheduler.beat.slots import (
    ScheduleError, Timing, count_between, format_every, next_slot, parse_cron,
    parse_every, slots_between, validate, zone,
)
from tests.factories import cron, every, utc

UTC = timezone.utc


# --- intervals -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    ("10s", 10), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1.5s", 1.5), ("250ms", 0.25),
    ("90", 90), (" 10 s ", 10), ("10S", 10), (".5s", 0.5), (45, 45), (0.1, 0.1),
])
def test_parse_every_good(value, seconds):
    assert parse_every(value) == seconds


@pytest.mark.parametrize("value, message", [
    ("0s", "interval must be positive: '0s'"),
    (0, "interval must be positive"),
    ("-5m", "interval must be positive"),
    (-1.0, "interval must be positive"),
    ("5x", "cannot read interval '5x': use a number with s, m, h or d, e.g. 10s"),
    ("", "cannot read interval"),
    ("ten seconds", "cannot read interval"),
    ("nan", "cannot read interval"),
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    ("1e999s", "finite"),
    (True, "cannot read interval"),
    (None, "cannot read interval"),
    ("0.0000001s", "at least 1 microsecond"),
])
def test_parse_every_bad(value, message):
    with pytest.raises(ScheduleError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_every(value)


@pytest.mark.parametrize("seconds, text", [
    (10, "10s"), (300, "5m"), (7200, "2h"), (86400, "1d"), (1.5, "1.5s"), (90, "90s"),
    (0.1, "0.1s"), (172800, "2d"), (3600 * 25, "25h"),
])
def test_format_every(seconds, text):
    assert format_every(seconds) == text
    assert parse_every(text) == seconds


def test_interval_aligned_to_epoch():
    t = every(300)
    assert next_slot(t, utc(2026, 5, 1, 10, 2, 13)) == utc(2026, 5, 1, 10, 5)
    # Strictly after: a slot exactly at `after` is not returned.
    assert next_slot(t, utc(2026, 5, 1, 10, 5)) == utc(2026, 5, 1, 10, 10)
    assert next_slot(t, utc(2026, 5, 1, 10, 5)).tzinfo == UTC
    # An aware `after` in another zone means the same instant.
    berlin = utc(2026, 5, 1, 10, 2).astimezone(zone("Europe/Berlin"))
    assert next_slot(t, berlin) == utc(2026, 5, 1, 10, 5)
    assert slots_between(t, utc(2026, 5, 1, 10, 0), utc(2026, 5, 1, 10, 20)) == [
        utc(2026, 5, 1, 10, 5), utc(2026, 5, 1, 10, 10), utc(2026, 5, 1, 10, 15),
        utc(2026, 5, 1, 10, 20)]


def test_interval_aligned_to_start_at():
    start = utc(2026, 5, 1, 10, 0, 7)
    t = every(60, start_at=start)
    # Before start_at, the first slot is start_at itself.
    assert next_slot(t, utc(2020, 1, 1)) == start
    assert next_slot(t, start) == start + timedelta(minutes=1)
    assert next_slot(t, utc(2026, 5, 1, 12, 30)) == utc(2026, 5, 1, 12, 30, 7)
    assert count_between(t, utc(2026, 5, 1), utc(2026, 5, 1, 11, 0, 7)) == 61


def test_interval_end_at_bound():
    t = every(3600, start_at=utc(2026, 1, 1), end_at=utc(2026, 1, 1, 3))
    assert slots_between(t, utc(2025, 1, 1), utc(2027, 1, 1)) == [
        utc(2026, 1, 1, 0), utc(2026, 1, 1, 1), utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)]
    assert next_slot(t, utc(2026, 1, 1, 2, 30)) == utc(2026, 1, 1, 3)
    assert next_slot(t, utc(2026, 1, 1, 3)) is None
    assert count_between(t, utc(2025, 1, 1), utc(2027, 1, 1)) == 4


def test_interval_tenth_of_a_second_stays_exact_over_a_year():
    t = every(0.1)
    year = (utc(2025, 1, 1), utc(2026, 1, 1))
    assert count_between(t, *year) == 365 * 24 * 3600 * 10 == 315_360_000
    assert count_between(t, utc(2024, 1, 1), utc(2025, 1, 1)) == 366 * 24 * 3600 * 10
    assert next_slot(t, utc(2025, 12, 31, 23, 59, 59, 950_000)) == utc(2026, 1, 1)
    assert next_slot(t, utc(2025, 12, 31, 23, 59, 59, 900_000)) == utc(2026, 1, 1)
    last = slots_between(t, utc(2025, 12, 31, 23, 59, 59), *year[1:])
    tenths = range(100_000, 1_000_000, 100_000)
    assert last == [utc(2025, 12, 31, 23, 59, 59, us) for us in tenths] + [utc(2026, 1, 1)]


def test_slots_between_limit_and_empty_range():
    t = every(1)
    slots = slots_between(t, utc(2026, 1, 1), utc(2027, 1, 1), limit=3)
    assert slots == [utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 2), utc(2026, 1, 1, 0, 0, 3)]
    assert count_between(t, utc(2026, 1, 1), utc(2027, 1, 1)) == 365 * 86400
    assert slots_between(t, utc(2026, 1, 1), utc(2025, 1, 1)) == []
    assert count_between(t, utc(2026, 1, 1), utc(2025, 1, 1)) == 0
    assert slots_between(cron("* * * * *"), utc(2026, 1, 1), utc(2027, 1, 1), limit=2) == [
        utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2)]


# --- clocked ---------------------------------------------------------------------------------

def test_clocked():
    at = datetime(2026, 12, 24, 18, 0, tzinfo=zone("Europe/Berlin"))
    t = Timing("clocked", at=at)
    assert next_slot(t, utc(2026, 12, 1)) == utc(2026, 12, 24, 17)
    assert next_slot(t, utc(2026, 12, 1)).tzinfo == UTC
    assert next_slot(t, utc(2026, 12, 24, 17)) is None
    assert slots_between(t, utc(2026, 1, 1), utc(2027, 1, 1)) == [utc(2026, 12, 24, 17)]
    assert slots_between(t, utc(2026, 1, 1), utc(2026, 12, 24, 16, 59)) == []
    assert count_between(t, utc(2026, 1, 1), utc(2027, 1, 1)) == 1
    # Outside its bounds it never fires.
    assert next_slot(Timing("clocked", at=at, end_at=utc(2026, 12, 24)), utc(2026, 1, 1)) is None
    assert next_slot(Timing("clocked", at=at, start_at=utc(2026, 12, 25)), utc(2026, 1, 1)) is None


# --- cron parsing ----------------------------------------------------------------------------

def test_parse_cron_forms():
    c = parse_cron("*/15 9-17 1,15 * 1-5")
    assert c.minutes == {0, 15, 30, 45}
    assert c.hours == set(range(9, 18))
    assert c.days == {1, 15}
    assert c.months == set(range(1, 13))
    assert c.weekdays == {1, 2, 3, 4, 5}
    assert (c.expr, c.dom_restricted, c.dow_restricted) == ("*/15 9-17 1,15 * 1-5", True, True)
    assert parse_cron("10-30/10 * * * *").minutes == {10, 20, 30}
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}
    assert parse_cron("0 0 * * 0").weekdays == parse_cron("0 0 * * 7").weekdays == {0}
    assert parse_cron("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert parse_cron("0 0 * * *").weekdays == set(range(7))
    assert parse_cron("0 0 * * */2").weekdays == {0, 2, 4, 6}
    c = parse_cron("0 0 * * *")
    assert (c.dom_restricted, c.dow_restricted) == (False, False)


def test_parse_cron_names():
    assert parse_cron("0 0 1 jan,JUL *").months == {1, 7}
    assert parse_cron("0 0 1 Mar-May *").months == {3, 4, 5}
    assert parse_cron("0 0 * * MON-fri").weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * sun,sat").weekdays == {0, 6}


@pytest.mark.parametrize("macro, same_as", [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"),
])
def test_parse_cron_macros(macro, same_as):
    c, d = parse_cron(macro), parse_cron(same_as)
    assert c.expr == macro
    fields = ("minutes", "hours", "days", "months", "weekdays", "dom_restricted", "dow_restricted")
    assert [getattr(c, f) for f in fields] == [getattr(d, f) for f in fields]


@pytest.mark.parametrize("expr, problem", [
    ("61 * * * *", "minute 61 is out of range 0-59"),
    ("* 24 * * *", "hour 24 is out of range 0-23"),
    ("* * 0 * *", "day-of-month 0 is out of range 1-31"),
    ("* * 32 * *", "day-of-month 32 is out of range 1-31"),
    ("* * * 13 *", "month 13 is out of range 1-12"),
    ("* * * * 8", "day-of-week 8 is out of range 0-7"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * *", "expected 5 fields"),
    ("", "expected 5 fields"),
    ("30-10 * * * *", "minute range 30-10 is backwards"),
    ("*/0 * * * *", "minute step must be at least 1"),
    ("* */x * * *", "hour step 'x' is not a whole number"),
    ("* * * foo *", "unknown month name 'foo'"),
    ("* * * * funday", "unknown day-of-week name 'funday'"),
    ("* * * * jan", "unknown day-of-week name 'jan'"),
    ("mon * * * *", "cannot read minute 'mon'"),
    ("1,,2 * * * *", "cannot read minute ''"),
    ("? * * * *", r"cannot read minute '\?'"),
    ("-5 * * * *", "cannot read minute ''"),
    ("@reboot", "unknown macro '@reboot'"),
])
def test_parse_cron_bad(expr, problem):
    with pytest.raises(ScheduleError, match=problem) as info:
        parse_cron(expr)
    assert str(info.value).startswith(f"invalid cron expression '{expr}': ")


def test_parse_cron_example_message():
    with pytest.raises(ScheduleError) as info:
        parse_cron("61 * * * *")
    assert str(info.value) == "invalid cron expression '61 * * * *': minute 61 is out of range 0-59"


def test_dom_dow_or_rule():
    # Both restricted: the 13th OR any Friday.
    t = cron("0 12 13 * 5")
    assert slots_between(t, utc(2026, 2, 1), utc(2026, 3, 1)) == [
        utc(2026, 2, 6, 12), utc(2026, 2, 13, 12), utc(2026, 2, 20, 12), utc(2026, 2, 27, 12)]
    assert slots_between(t, utc(2026, 3, 1), utc(2026, 3, 14)) == [
        utc(2026, 3, 6, 12), utc(2026, 3, 13, 12)]
    # Only one restricted: that one decides.
    assert count_between(cron("0 12 13 * *"), utc(2026, 1, 1), utc(2027, 1, 1)) == 12
    assert count_between(cron("0 12 * * 5"), utc(2026, 1, 1), utc(2027, 1, 1)) == 52


# --- zones and validation --------------------------------------------------------------------

def test_zone():
    assert zone("Europe/Berlin").key == "Europe/Berlin"
    assert zone("UTC").key == "UTC"
    for bad in ("Mars/Base", "", "Europe", "../etc/passwd", "Europe/Berlin/"):
        with pytest.raises(ScheduleError, match="unknown time zone"):
            zone(bad)
    with pytest.raises(ScheduleError) as info:
        zone("Mars/Base")
    assert str(info.value) == "unknown time zone 'Mars/Base'"


@pytest.mark.parametrize("timing, problem", [
    (Timing("weekly"), "unknown schedule kind 'weekly'"),
    (Timing("interval"), "needs an interval"),
    (Timing("interval", every_s=0), "interval must be positive"),
    (Timing("interval", every_s=-3), "interval must be positive"),
    (Timing("crontab"), "needs a cron expression"),
    (Timing("crontab", cron="61 * * * *"), "minute 61 is out of range"),
    (Timing("crontab", cron="* * * * *", tz="Mars/Base"), "unknown time zone 'Mars/Base'"),
    (Timing("clocked"), "needs a time"),
    (Timing("clocked", at=datetime(2026, 1, 1)), "at must include a time zone"),
    (Timing("interval", every_s=1, start_at=datetime(2026, 1, 1)), "start_at must include"),
    (Timing("interval", every_s=1, end_at=datetime(2026, 1, 1)), "end_at must include"),
    (Timing("interval", every_s=1, start_at=utc(2026, 2, 1), end_at=utc(2026, 1, 1)),
     "end_at .* must be after start_at"),
    (Timing("interval", every_s=1, start_at=utc(2026, 1, 1), end_at=utc(2026, 1, 1)),
     "end_at .* must be after start_at"),
])
def test_validate_errors(timing, problem):
    with pytest.raises(ScheduleError, match=problem):
        validate(timing)
    with pytest.raises(ScheduleError):
        next_slot(timing, utc(2026, 1, 1))


def test_validate_good_and_naive_after():
    validate(every(10, start_at=utc(2026, 1, 1), end_at=utc(2026, 1, 2)))
    validate(cron("@daily", "America/New_York"))
    validate(Timing("clocked", at=utc(2026, 1, 1)))
    with pytest.raises(ScheduleError, match="time zone"):
        next_slot(every(10), datetime(2026, 1, 1))
    with pytest.raises(ScheduleError, match="time zone"):
        slots_between(every(10), utc(2026, 1, 1), datetime(2026, 1, 2))


# --- crontab slots ---------------------------------------------------------------------------

def test_cron_every_five_minutes():
    t = cron("*/5 * * * *")
    assert next_slot(t, utc(2026, 4, 1, 10, 3, 59)) == utc(2026, 4, 1, 10, 5)
    assert next_slot(t, utc(2026, 4, 1, 10, 5)) == utc(2026, 4, 1, 10, 10)
    assert next_slot(t, utc(2026, 12, 31, 23, 57)) == utc(2027, 1, 1)
    assert count_between(t, utc(2026, 4, 1), utc(2026, 4, 2)) == 288


def test_cron_weekdays_skip_weekend():
    t = cron("0 9 * * 1-5")
    # 2026-05-01 is a Friday.
    assert next_slot(t, utc(2026, 5, 1, 9)) == utc(2026, 5, 4, 9)
    assert slots_between(t, utc(2026, 4, 30, 12), utc(2026, 5, 6)) == [
        utc(2026, 5, 1, 9), utc(2026, 5, 4, 9), utc(2026, 5, 5, 9)]


def test_cron_leap_day_and_never():
    assert next_slot(cron("0 0 29 2 *"), utc(2026, 1, 1)) == utc(2028, 2, 29)
    assert next_slot(cron("0 0 30 2 *"), utc(2026, 1, 1)) is None
    assert next_slot(cron("0 0 31 4 *"), utc(2026, 1, 1)) is None
    assert count_between(cron("0 0 30 2 *"), utc(2026, 1, 1), utc(2030, 1, 1)) == 0


def test_cron_bounds_and_zone():
    t = cron("0 0 * * *", "Asia/Tokyo", start_at=utc(2026, 1, 3), end_at=utc(2026, 1, 5))
    # Local midnight in Tokyo is 15:00 UTC the day before; start_at and end_at are inclusive.
    assert slots_between(t, utc(2026, 1, 1), utc(2026, 2, 1)) == [
        utc(2026, 1, 3, 15), utc(2026, 1, 4, 15)]
    assert next_slot(t, utc(2026, 1, 4, 15)) is None
    from_3rd = cron("0 0 * * *", start_at=utc(2026, 1, 3))
    assert next_slot(from_3rd, utc(2020, 1, 1)) == utc(2026, 1, 3)


def test_cron_count_is_capped():
    assert count_between(cron("* * * * *"), utc(2026, 1, 1), utc(2028, 1, 1)) == 1_000_000


# --- daylight-saving nights ------------------------------------------------------------------

def night(t: Timing, day: datetime) -> list[datetime]:
    """The slots of the 24 hours from `day` (UTC), checked to be strictly increasing."""
    slots = slots_between(t, day, day + timedelta(days=1))
    assert all(a < b for a, b in zip(slots, slots[1:]))
    assert all(s.tzinfo == UTC for s in slots)
    return slots


def test_berlin_spring_forward():
    # 2026-03-29: 02:00 CET (01:00 UTC) jumps to 03:00 CEST; 02:00-02:59 never happens.
    day = utc(2026, 3, 28, 12)
    assert night(cron("30 2 * * *", "Europe/Berlin"), day) == [utc(2026, 3, 29, 1, 0)]
    t = cron("*/15 * * * *", "Europe/Berlin")
    assert slots_between(t, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 45)) == [
        utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 0, 45),  # 01:xx CET
        utc(2026, 3, 29, 1, 0),                                   # 02:00-02:45 and 03:00 CEST
        utc(2026, 3, 29, 1, 15), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 1, 45)]
    hourly = night(cron("0 * * * *", "Europe/Berlin"), utc(2026, 3, 28, 22))
    # Every UTC hour has one slot; 01:00 UTC is local 02:00 (missing) and 03:00 CEST at once.
    assert hourly == [utc(2026, 3, 28, 23)] + [utc(2026, 3, 29, h) for h in range(23)]
    assert next_slot(cron("30 2 * * *", "Europe/Berlin"), utc(2026, 3, 29, 1)) == \
        utc(2026, 3, 30, 0, 30)


def test_berlin_fall_back():
    # 2026-10-25: 03:00 CEST (01:00 UTC) goes back to 02:00 CET; 02:00-02:59 happens twice.
    assert night(cron("30 2 * * *", "Europe/Berlin"), utc(2026, 10, 24, 12)) == [
        utc(2026, 10, 25, 0, 30)]
    t = cron("*/15 * * * *", "Europe/Berlin")
    assert slots_between(t, utc(2026, 10, 24, 23, 50), utc(2026, 10, 25, 2, 30)) == [
        utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 15),   # 02:00, 02:15 CEST
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45),  # 02:30, 02:45 CEST
        # 02:00-02:45 CET (01:00-01:45 UTC) do not fire again
        utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 15), utc(2026, 10, 25, 2, 30)]
    hourly = night(cron("0 * * * *", "Europe/Berlin"), utc(2026, 10, 24, 21, 30))
    assert hourly[:4] == [utc(2026, 10, 24, 22), utc(2026, 10, 24, 23), utc(2026, 10, 25, 0),
                          utc(2026, 10, 25, 2)]
    assert len(hourly) == 23  # 24 UTC hours, 02:00 CET (01:00 UTC) does not fire
    # `after` inside the second pass of the repeated hour (02:10 CET).
    assert next_slot(t, utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 2, 0)
    assert next_slot(cron("30 2 * * *", "Europe/Berlin"), utc(2026, 10, 25, 1, 10)) == \
        utc(2026, 10, 26, 1, 30)


def test_new_york_spring_forward():
    # 2026-03-08: 02:00 EST (07:00 UTC) jumps to 03:00 EDT.
    assert night(cron("30 2 * * *", "America/New_York"), utc(2026, 3, 7, 12)) == [
        utc(2026, 3, 8, 7, 0)]
    assert night(cron("0 * * * *", "America/New_York"), utc(2026, 3, 8, 4, 30))[:5] == [
        utc(2026, 3, 8, 5), utc(2026, 3, 8, 6),   # 00:00, 01:00 EST
        utc(2026, 3, 8, 7),                       # 02:00 (missing) and 03:00 EDT, once
        utc(2026, 3, 8, 8), utc(2026, 3, 8, 9)]   # 04:00, 05:00 EDT
    t = cron("*/15 * * * *", "America/New_York")
    assert slots_between(t, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)) == [
        utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 15),
        utc(2026, 3, 8, 7, 30)]


def test_new_york_fall_back():
    # 2026-11-01: 02:00 EDT (06:00 UTC) goes back to 01:00 EST; 01:00-01:59 happens twice.
    assert night(cron("30 2 * * *", "America/New_York"), utc(2026, 10, 31, 12)) == [
        utc(2026, 11, 1, 7, 30)]
    assert night(cron("30 1 * * *", "America/New_York"), utc(2026, 10, 31, 12)) == [
        utc(2026, 11, 1, 5, 30)]  # first occurrence, EDT
    assert night(cron("0 * * * *", "America/New_York"), utc(2026, 11, 1, 3, 30))[:4] == [
        utc(2026, 11, 1, 4), utc(2026, 11, 1, 5),  # 00:00, 01:00 EDT
        utc(2026, 11, 1, 7), utc(2026, 11, 1, 8)]  # 02:00, 03:00 EST; 01:00 EST not again
    t = cron("*/15 * * * *", "America/New_York")
    assert slots_between(t, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7, 15)) == [
        utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 7, 0), utc(2026, 11, 1, 7, 15)]


def test_a_day_field_starting_with_a_star_does_not_restrict_like_vixie_cron():
    # "*/2" in day-of-month is unrestricted: both fields must match (odd days AND Mondays).
    cron = parse_cron("0 0 */2 * 1")
    assert not cron.dom_restricted and cron.dow_restricted
    timing = Timing(kind="crontab", cron="0 0 */2 * 1")
    after = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday, the 1st
    found = slots_between(timing, after, after + timedelta(days=60))
    assert found and all(s.weekday() == 0 and s.day % 2 == 1 for s in found)
