"""Schedules in words (scheduler.beat.wording)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scheduler.beat.slots import Timing, zone
from scheduler.beat.wording import describe
from tests.factories import cron, every, utc

UTC = timezone.utc


@pytest.mark.parametrize("timing, text", [
    (every(10), "every 10 seconds"),
    (every(300), "every 5 minutes"),
    (every(7200), "every 2 hours"),
    (every(86400), "every day"),
    (every(1), "every second"),
    (every(90), "every 90 seconds"),
    (every(1.5), "every 1.5 seconds"),
    (cron("0 2 * * *", "Europe/Berlin"), "every day at 02:00 Europe/Berlin"),
    (cron("15 * * * *"), "every hour at minute 15 UTC"),
    (cron("30 9 * * 1"), "every Monday at 09:30 UTC"),
    (cron("*/15 * * * *"), "every 15 minutes UTC"),
    (cron("* * * * *"), "every minute UTC"),
    (cron("@daily"), "every day at 00:00 UTC"),
    (cron("@weekly"), "every Sunday at 00:00 UTC"),
    (cron("*/7 * * * *"), "cron '*/7 * * * *' in UTC"),
    (cron("0 9 * * 1-5", "Europe/Berlin"), "cron '0 9 * * 1-5' in Europe/Berlin"),
    (cron("0 9 1 * 1"), "cron '0 9 1 * 1' in UTC"),
    (cron("@monthly"), "cron '@monthly' in UTC"),
    (Timing("clocked", at=datetime(2026, 12, 24, 18, tzinfo=zone("Europe/Berlin"))),
     "once at 2026-12-24 17:00 UTC"),
    (every(60, start_at=utc(2026, 1, 1), end_at=utc(2026, 2, 1, 8, 30)),
     "every minute from 2026-01-01 00:00 UTC until 2026-02-01 08:30 UTC"),
    (cron("0 2 * * *", "Europe/Berlin", end_at=utc(2026, 6, 1)),
     "every day at 02:00 Europe/Berlin until 2026-06-01 00:00 UTC"),
])
def test_describe(timing, text):
    assert describe(timing) == text
