"""Schedule time math: when interval, crontab and clocked schedules are due (pure, no I/O).

Time-zone rule for crontab schedules: cron fields are matched against LOCAL wall-clock time in the
schedule's time zone, and each matching local wall-clock minute fires at most once.

- When the clock goes back and a local hour repeats (Europe/Berlin, 2026-10-25: 03:00 CEST becomes
  02:00 CET, so 02:00-02:59 occurs twice), a matching local time fires once, at its first
  occurrence; minutes of the repeated hour do not fire again in the second pass.
  "30 2 * * *" fires once that night, at 02:30 CEST = 00:30 UTC.
- When the clock goes forward and local times do not exist (Europe/Berlin, 2026-03-29: 02:00 CET
  becomes 03:00 CEST, so 02:00-02:59 never happens), a matching nonexistent local time fires at the
  first existing local minute after the gap; several matches in the gap and a match at the end of
  the gap collapse into one slot. "30 2 * * *" fires at 03:00 CEST = 01:00 UTC, it is not skipped.

Interval slots are anchor + k * every (anchor = start_at, else the Unix epoch), computed in integer
microseconds. All returned instants are aware UTC datetimes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
KINDS = ("interval", "crontab", "clocked")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_S = 1_000_000
_ONE_US = timedelta(microseconds=1)
#: Seconds per interval unit ("ms" is divided instead, so "250ms" is exactly 0.25).
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY_RE = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(ms|s|m|h|d)?\s*", re.I)
#: next_slot gives up on a crontab that has no match this far ahead ("0 0 30 2 *").
_CRON_HORIZON_DAYS = 5 * 366
#: count_between stops counting crontab and clocked slots here.
COUNT_CAP = 1_000_000
#: Longest forward clock jump looked across (Samoa skipped a whole day in 2011).
_MAX_GAP_MIN = 48 * 60

_MONTHS = {n: i for i, n in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_WEEKDAYS = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
#: (name, lowest, highest, names); day-of-week allows 7 as a second Sunday.
_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day-of-month", 1, 31, None),
           ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _WEEKDAYS))
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}


class ScheduleError(ValueError):
    """A schedule definition that cannot be used; str(exc) is a clear message for the user."""


# --- intervals -------------------------------------------------------------------------------

def parse_every(value: str | int | float) -> float:
    """Seconds of an interval such as "10s", "5m", "2h", "1d", "250ms", "90" or a number."""
    seconds: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _EVERY_RE.fullmatch(value)):
            unit = (m[2] or "s").lower()
            seconds = float(m[1]) / 1000 if unit == "ms" else float(m[1]) * _UNIT_S[unit]
    except OverflowError:  # an int too big for a float
        seconds = math.inf
    if seconds is None:
        raise ScheduleError(
            f"cannot read interval '{value}': use a number with s, m, h or d, e.g. 10s")
    if not math.isfinite(seconds):
        raise ScheduleError(f"interval must be a finite number: '{value}'")
    if seconds <= 0:
        raise ScheduleError(f"interval must be positive: '{value}'")
    # Slots are computed in whole microseconds; a smaller interval would round to zero.
    if round(seconds * US_PER_S) < 1:
        raise ScheduleError(f"interval must be at least 1 microsecond: '{value}'")
    return seconds


def format_every(seconds: float) -> str:
    """Shortest exact text for an interval: 300 -> "5m", 90 -> "90s", 1.5 -> "1.5s"."""
    us = round(parse_every(seconds) * US_PER_S)
    for unit in ("d", "h", "m", "s"):
        if us % (_UNIT_S[unit] * US_PER_S) == 0:
            return f"{us // (_UNIT_S[unit] * US_PER_S)}{unit}"
    return f"{us / US_PER_S!r}s"


# --- crontab ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression; weekdays use Sunday = 0."""
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    expr: str
    dom_restricted: bool
    dow_restricted: bool

    def matches_day(self, d: date) -> bool:
        """Whether the date matches month, day-of-month and day-of-week (Vixie OR rule)."""
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.weekday() + 1) % 7 in self.weekdays
        # Vixie cron: when both day fields are restricted, either one matching is enough.
        if self.dom_restricted and self.dow_restricted:
            return dom or dow
        return dom and dow


def _field_value(text: str, name: str, lo: int, hi: int, names: dict[str, int] | None) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
        if not lo <= value <= hi:
            raise ScheduleError(f"{name} {value} is out of range {lo}-{hi}")
        return value
    if names is not None and text.isalpha():
        if text.lower() in names:
            return names[text.lower()]
        raise ScheduleError(f"unknown {name} name '{text}'")
    raise ScheduleError(f"cannot read {name} '{text}'")


def _parse_field(text: str, name: str, lo: int, hi: int,
                 names: dict[str, int] | None) -> frozenset[int]:
    # "*" and "N/S" run to 6 for day-of-week; 7 is only an alias for Sunday.
    top = 6 if name == "day-of-week" else hi
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise ScheduleError(f"{name} step '{step_text}' is not a whole number")
            step = int(step_text)
            if step == 0:
                raise ScheduleError(f"{name} step must be at least 1")
        if base == "*":
            first, last = lo, top
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = (_field_value(a, name, lo, hi, names),
                           _field_value(b, name, lo, hi, names))
            if first > last:
                raise ScheduleError(f"{name} range {base} is backwards ({first} > {last})")
        else:
            first = _field_value(base, name, lo, hi, names)
            last = max(first, top) if slash else first
        values.update(range(first, last + 1, step))
    if name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse_cron(expr: str) -> Cron:
    """Parse a five-field cron expression or an @macro; ScheduleError names the bad field."""
    if not isinstance(expr, str):
        raise ScheduleError(f"cron expression must be text, not {type(expr).__name__}")
    return _parse_cron(expr)


@lru_cache(maxsize=1024)  # next_slot validates on every call
def _parse_cron(expr: str) -> Cron:
    text = expr.strip()
    try:
        if text.startswith("@"):
            if text.lower() not in _MACROS:
                raise ScheduleError(f"unknown macro '{text}' (use one of {', '.join(_MACROS)})")
            text = _MACROS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise ScheduleError("expected 5 fields (minute hour day-of-month month day-of-week),"
                                f" got {len(parts)}")
        sets = [_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
    except ScheduleError as exc:
        raise ScheduleError(f"invalid cron expression '{expr}': {exc}") from None
    # As in Vixie cron, a field starting with "*" (also "*/2") does not restrict the day.
    return Cron(*sets, expr=expr, dom_restricted=not parts[2].startswith("*"),
                dow_restricted=not parts[4].startswith("*"))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        # OSError: names of directories such as "Europe"; ValueError: paths such as "../x".
        raise ScheduleError(f"unknown time zone '{name}'") from None


def _local_to_utc(local: datetime, z: ZoneInfo) -> datetime:
    """UTC instant of a naive local time: its first occurrence, or for a time skipped by a forward
    jump, the first existing local minute after the gap."""
    for _ in range(_MAX_GAP_MIN):
        instant = local.replace(tzinfo=z, fold=0).astimezone(UTC)
        # A nonexistent time does not survive the round trip through UTC.
        if instant.astimezone(z).replace(tzinfo=None) == local:
            return instant
        local += timedelta(minutes=1)
    raise ScheduleError(f"no existing local time near {local:%Y-%m-%d %H:%M} in {z.key}")


def _cron_instants(cron: Cron, z: ZoneInfo, after: datetime, last_day: date) -> Iterator[datetime]:
    """Distinct matching instants after `after`, ascending, for local dates up to last_day."""
    start = after.astimezone(z).replace(tzinfo=None, second=0, microsecond=0)
    hours, minutes = sorted(cron.hours), sorted(cron.minutes)
    last, day = after, start.date()
    while day <= last_day:
        if day.month not in cron.months:  # jump to the 1st of next month
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
            continue
        if cron.matches_day(day):
            for h in hours:
                if day == start.date() and h < start.hour:
                    continue
                for m in minutes:
                    local = datetime.combine(day, time(h, m))
                    if local < start:
                        continue
                    # Local times map to non-decreasing instants, so this skips repeats: the
                    # second pass of a repeated hour and the collapsed matches of a gap.
                    instant = _local_to_utc(local, z)
                    if instant > last:
                        last = instant
                        yield instant
        day += timedelta(days=1)


# --- timings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    kind: str                      # "interval" | "crontab" | "clocked"
    every_s: float | None = None   # interval
    cron: str | None = None        # crontab expression (5 fields or macro)
    tz: str = "UTC"                # crontab time zone (IANA)
    at: datetime | None = None     # clocked: the one moment (aware)
    start_at: datetime | None = None   # no slot before this (aware), optional
    end_at: datetime | None = None     # no slot after this (aware), optional


def _aware(dt: datetime, what: str) -> None:
    if not isinstance(dt, datetime):
        raise ScheduleError(f"{what} must be a datetime, not {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ScheduleError(f"{what} must include a time zone: {dt.isoformat()}")


def validate(timing: Timing) -> None:
    """Raise ScheduleError if the timing cannot be used."""
    if timing.kind not in KINDS:
        raise ScheduleError(f"unknown schedule kind '{timing.kind}' (use {', '.join(KINDS)})")
    if timing.kind == "interval":
        if isinstance(timing.every_s, bool) or not isinstance(timing.every_s, (int, float)):
            raise ScheduleError("an interval schedule needs an interval in seconds (every_s)")
        parse_every(timing.every_s)
    elif timing.kind == "crontab":
        if not timing.cron:
            raise ScheduleError("a crontab schedule needs a cron expression")
        parse_cron(timing.cron)
        zone(timing.tz)
    elif timing.at is None:
        raise ScheduleError("a clocked schedule needs a time (at)")
    for what in ("at", "start_at", "end_at"):
        if getattr(timing, what) is not None:
            _aware(getattr(timing, what), what)
    if timing.start_at and timing.end_at and timing.end_at <= timing.start_at:
        raise ScheduleError(f"end_at ({format_moment(timing.end_at)}) must be after"
                            f" start_at ({format_moment(timing.start_at)})")


def _to_us(dt: datetime) -> int:
    return (dt - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime | None:
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:  # beyond year 9999: no such slot
        return None


def _interval_ks(timing: Timing, after: datetime,
                 until: datetime | None) -> tuple[int, int, int, int | None]:
    """(anchor_us, every_us, first k, last k or None) of the slots in (after, until]."""
    every = round(timing.every_s * US_PER_S)
    anchor = _to_us(timing.start_at) if timing.start_at else 0
    lo = max(_to_us(after) + 1, anchor) if timing.start_at else _to_us(after) + 1
    highs = [_to_us(t) for t in (until, timing.end_at) if t is not None]
    k_first = -((anchor - lo) // every)  # ceil((lo - anchor) / every)
    return anchor, every, k_first, (min(highs) - anchor) // every if highs else None


def _iter_slots(timing: Timing, after: datetime, until: datetime | None) -> Iterator[datetime]:
    """Crontab and clocked slots in (after, until] within the bounds, ascending."""
    if timing.start_at and timing.start_at - _ONE_US > after:
        after = timing.start_at - _ONE_US  # start_at itself may be a slot
    bounds = [t for t in (until, timing.end_at) if t is not None]
    until = min(bounds) if bounds else None
    if timing.kind == "clocked":
        if timing.at > after and (until is None or timing.at <= until):
            yield timing.at.astimezone(UTC)
        return
    z = zone(timing.tz)
    if until is None:
        last_day = after.astimezone(z).date() + timedelta(days=_CRON_HORIZON_DAYS)
    else:  # a gap can push a match of the last day past midnight
        last_day = until.astimezone(z).date() + timedelta(days=1)
    for instant in _cron_instants(parse_cron(timing.cron), z, after, last_day):
        if until is not None and instant > until:
            return
        yield instant


def _check(timing: Timing, *moments: datetime) -> None:
    validate(timing)
    for dt in moments:
        _aware(dt, "time")


def next_slot(timing: Timing, after: datetime) -> datetime | None:
    """The first slot strictly after `after` within the bounds, as UTC; None if there is none."""
    _check(timing, after)
    if timing.kind == "interval":
        anchor, every, k, k_last = _interval_ks(timing, after, None)
        return None if k_last is not None and k > k_last else _from_us(anchor + k * every)
    return next(_iter_slots(timing, after, None), None)


def slots_between(timing: Timing, after: datetime, until: datetime,
                  limit: int = 100_000) -> list[datetime]:
    """The slots s with after < s <= until, ascending, at most `limit` of them."""
    _check(timing, after, until)
    if timing.kind == "interval":
        anchor, every, k_first, k_last = _interval_ks(timing, after, until)
        k_stop = min(k_last + 1, k_first + max(limit, 0))
        found = (_from_us(anchor + k * every) for k in range(k_first, k_stop))
        return [s for s in found if s is not None]
    slots: list[datetime] = []
    for slot in _iter_slots(timing, after, until):
        if len(slots) >= limit:
            break
        slots.append(slot)
    return slots


def count_between(timing: Timing, after: datetime, until: datetime) -> int:
    """How many slots lie in (after, until]; crontab and clocked counts stop at COUNT_CAP."""
    _check(timing, after, until)
    if timing.kind == "interval":
        _, _, k_first, k_last = _interval_ks(timing, after, until)
        return max(0, k_last - k_first + 1)
    count = 0
    for _ in _iter_slots(timing, after, until):
        count += 1
        if count >= COUNT_CAP:
            break
    return count


def format_moment(dt: datetime) -> str:
    """A moment in UTC, seconds shown only when present: "2026-12-24 17:00 UTC"."""
    u = dt.astimezone(UTC)
    text = u.strftime("%Y-%m-%d %H:%M:%S.%f" if u.microsecond else
                      "%Y-%m-%d %H:%M:%S" if u.second else "%Y-%m-%d %H:%M")
    return f"{text} UTC"
