"""Schedules as values: validation with clear errors, and the times they fire (pure, no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from overcast.core.schedules import (
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
    Schedule,
    describe,
    next_occurrences,
    occurrences,
)

SCHEDULE: TypeAdapter[Any] = TypeAdapter(Schedule)
NEW_YORK = ZoneInfo("America/New_York")


def parse(data: dict[str, Any]) -> Any:
    return SCHEDULE.validate_python(data)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(times: list[datetime], tz: ZoneInfo = NEW_YORK) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M %Z") for t in times]


# -- which kind, and bad input ------------------------------------------------------------------


def test_the_kind_is_told_by_its_field() -> None:
    assert isinstance(parse({"cron": "0 9 * * *"}), CronSchedule)
    assert isinstance(parse({"interval": 3600}), IntervalSchedule)
    assert isinstance(parse({"rrule": "FREQ=DAILY"}), RRuleSchedule)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cron": "61 * * * *"}, "cron '61 * * * *' is invalid"),
        ({"cron": "0 9 * *"}, "must have 5 fields"),
        ({"cron": "0 0 9 * * *"}, "seconds and years are not supported"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'"),
        ({"cron": "0 9 * * *", "timezone": "../../etc/passwd"}, "should match pattern"),
        ({"interval": 0}, "between 1 second and 3660 days"),
        ({"interval": True}, "number of seconds"),
        ({"rrule": "FREQ=DAILY;BYHOUR=25"}, "rrule 'FREQ=DAILY;BYHOUR=25' is invalid"),
        ({"rrule": "DTSTART;TZID=Nowhere/Land:20260101T090000\nRRULE:FREQ=DAILY"}, "unknown time zone"),
        ({"every": 5}, "a schedule needs one of cron, interval or rrule"),
        ({"cron": "0 9 * * *", "bogus": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_schedules_are_refused_with_a_clear_message(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse(data)


def test_describe_reads_like_the_schedule() -> None:
    assert (
        describe(parse({"cron": "0 9 * * *", "timezone": "Europe/Paris"}))
        == "cron '0 9 * * *' (Europe/Paris)"
    )
    assert describe(parse({"interval": 90})) == "every 1m 30s"
    assert describe(parse({"interval": 86400 + 6 * 3600, "timezone": "UTC"})) == "every 1d 6h (UTC)"


# -- cron ----------------------------------------------------------------------------------------


def test_a_cron_fires_on_the_wall_clock_of_its_zone() -> None:
    nine = parse({"cron": "0 9 * * MON-FRI", "timezone": "America/New_York"})
    times = occurrences(nine, utc(2026, 1, 2), utc(2026, 1, 10))
    assert local(times) == [f"01-{d:02d} 09:00 EST" for d in (2, 5, 6, 7, 8, 9)]
    assert times[0] == utc(2026, 1, 2, 14)


def test_occurrences_are_a_half_open_window_and_honour_the_limit() -> None:
    hourly = parse({"cron": "@hourly"})
    assert occurrences(hourly, utc(2026, 5, 1, 1), utc(2026, 5, 1, 4)) == [
        utc(2026, 5, 1, 1),
        utc(2026, 5, 1, 2),
        utc(2026, 5, 1, 3),
    ]
    assert occurrences(hourly, utc(2026, 5, 1, 1), utc(2026, 5, 2), limit=2) == [
        utc(2026, 5, 1, 1),
        utc(2026, 5, 1, 2),
    ]
    assert next_occurrences(hourly, utc(2026, 5, 1, 1, 30), 1) == [utc(2026, 5, 1, 2)]


def test_day_or_chooses_between_either_day_field_and_both() -> None:
    either = parse({"cron": "0 0 13 * FRI"})
    both = parse({"cron": "0 0 13 * FRI", "day_or": False})
    start, end = utc(2026, 1, 1), utc(2027, 1, 1)
    assert len(occurrences(either, start, end, 1000)) == 52 + 12 - 3  # 52 Fridays, 12 13ths, 3 of them both
    assert [t.date().isoformat() for t in occurrences(both, start, end)] == [
        "2026-02-13",
        "2026-03-13",
        "2026-11-13",
    ]


def test_spring_forward_neither_skips_nor_doubles_a_daily_run() -> None:
    # 2026-03-08: New York's clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist.
    at_0230 = parse({"cron": "30 2 * * *", "timezone": "America/New_York"})
    times = occurrences(at_0230, utc(2026, 3, 7), utc(2026, 3, 10))
    assert local(times) == ["03-07 02:30 EST", "03-08 03:30 EDT", "03-09 02:30 EDT"]  # moved by the jump


def test_every_half_hour_on_the_spring_forward_day() -> None:
    half_hourly = parse({"cron": "*/30 * * * *", "timezone": "America/New_York"})
    times = occurrences(half_hourly, utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))  # 00:00 to 05:00 local
    assert local(times) == [
        "03-08 00:00 EST",
        "03-08 00:30 EST",
        "03-08 01:00 EST",
        "03-08 01:30 EST",
        "03-08 03:00 EDT",  # 02:00 and 02:30 do not exist: they land on 03:00 and 03:30, once each
        "03-08 03:30 EDT",
        "03-08 04:00 EDT",
        "03-08 04:30 EDT",
    ]
    assert len(set(times)) == len(times) and times == sorted(times)


def test_fall_back_fires_an_ambiguous_wall_time_once() -> None:
    # 2026-11-01: 01:00-02:00 happens twice in New York; a 01:30 run fires at the first one.
    at_0130 = parse({"cron": "30 1 * * *", "timezone": "America/New_York"})
    times = occurrences(at_0130, utc(2026, 10, 31), utc(2026, 11, 3))
    assert local(times) == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]


def test_a_cron_produces_exactly_the_expected_runs_over_a_day() -> None:
    every_quarter_in_office_hours = parse({"cron": "*/15 9-17 * * *", "timezone": "Europe/London"})
    day = occurrences(every_quarter_in_office_hours, utc(2026, 7, 1), utc(2026, 7, 2), limit=1000)
    assert len(day) == 9 * 4
    assert day[0] == utc(2026, 7, 1, 8) and day[-1] == utc(2026, 7, 1, 16, 45)  # BST is UTC+1


# -- interval ------------------------------------------------------------------------------------


def test_an_interval_counts_from_its_anchor() -> None:
    every_90_min = parse({"interval": 5400, "anchor_date": "2026-01-01T00:10:00Z"})
    assert occurrences(every_90_min, utc(2026, 1, 1, 2), utc(2026, 1, 1, 6)) == [
        utc(2026, 1, 1, 3, 10),
        utc(2026, 1, 1, 4, 40),
    ]
    # the anchor sets the phase, not a start: times before it exist too
    assert occurrences(every_90_min, utc(2025, 12, 31, 22), utc(2026, 1, 1)) == [utc(2025, 12, 31, 22, 40)]


def test_an_interval_sends_seconds_back_and_reads_iso_durations() -> None:
    hourly = parse({"interval": "PT1H"})
    assert hourly.interval == timedelta(hours=1)
    assert hourly.model_dump(mode="json")["interval"] == 3600.0
    assert occurrences(hourly, utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 2)) == [
        utc(2026, 1, 1, 1)
    ]  # default anchor


def test_a_naive_anchor_is_read_in_the_schedules_zone() -> None:
    daily = parse({"interval": 86400, "anchor_date": "2026-03-01T09:00:00", "timezone": "America/New_York"})
    assert daily.anchor_date == utc(2026, 3, 1, 14)
    times = occurrences(daily, utc(2026, 3, 6), utc(2026, 3, 11))
    assert local(times) == [f"03-{d:02d} 09:00 {'EST' if d < 8 else 'EDT'}" for d in range(6, 11)]


def test_short_intervals_are_elapsed_time_across_dst() -> None:
    hourly = parse({"interval": 3600, "timezone": "America/New_York"})
    times = occurrences(hourly, utc(2026, 11, 1, 4), utc(2026, 11, 1, 8))
    assert [t - times[0] for t in times] == [timedelta(hours=h) for h in range(4)]
    assert local(times) == ["11-01 00:00 EDT", "11-01 01:00 EDT", "11-01 01:00 EST", "11-01 02:00 EST"]


# -- rrule ---------------------------------------------------------------------------------------


def test_an_rrule_with_a_zoned_start() -> None:
    mwf = parse(
        {
            "rrule": "DTSTART;TZID=Europe/Paris:20260105T090000\n"
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR\n"
            "EXDATE;TZID=Europe/Paris:20260401T090000"
        }
    )
    assert mwf.timezone == "Europe/Paris"  # taken from DTSTART
    times = occurrences(mwf, utc(2026, 3, 27), utc(2026, 4, 7))
    assert local(times, ZoneInfo("Europe/Paris")) == [
        "03-27 09:00 CET",
        "03-30 09:00 CEST",  # Paris moved to summer time on the 29th: still 09:00 on the wall
        "04-03 09:00 CEST",  # the 1st is an EXDATE
        "04-06 09:00 CEST",
    ]


def test_an_rrule_without_dtstart_takes_its_times_from_by_fields() -> None:
    rule = parse({"rrule": "RRULE:FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18;BYMINUTE=0", "timezone": "UTC"})
    assert occurrences(rule, utc(2026, 1, 1), utc(2026, 4, 1)) == [
        utc(2026, 1, 30, 18),
        utc(2026, 2, 27, 18),
        utc(2026, 3, 27, 18),
    ]


def test_a_dense_rrule_started_long_ago_is_fast_and_in_phase() -> None:
    every_7_minutes = parse({"rrule": "DTSTART:20000101T000000\nRRULE:FREQ=MINUTELY;INTERVAL=7"})
    times = occurrences(every_7_minutes, utc(2026, 3, 27), utc(2026, 3, 28), limit=3)
    minutes = (times[0] - utc(2000, 1, 1)).total_seconds() / 60
    assert minutes % 7 == 0 and times[1] - times[0] == timedelta(minutes=7)
