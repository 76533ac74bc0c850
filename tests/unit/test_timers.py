"""When timers fire: the next firing of interval, date and cron timers, in time zones and across DST changes."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from st2common.exceptions import ValidationError
from st2rulesengine.cron import CronSchedule
from st2rulesengine.schedules import schedule_of
from st2rulesengine.timers import tick_id

UTC = datetime.timezone.utc
LA = ZoneInfo("America/Los_Angeles")
INTERVAL, DATE, CRON = "core.st2.IntervalTimer", "core.st2.DateTimer", "core.st2.CronTimer"
# The trigger's creation time: interval timers count from it.
ANCHOR = datetime.datetime(2024, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime.datetime:
    """An instant from ISO text; without an offset it is UTC."""
    value = datetime.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def firings(type_ref: str, parameters: dict, after: str, count: int, default_zone=UTC) -> list[str]:
    """The next `count` firings after `after`, as UTC ISO text (None once there are no more)."""
    schedule = schedule_of(type_ref, parameters, ANCHOR, default_zone)
    found, moment = [], at(after)
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        if moment is None:
            break
    return found


@pytest.mark.parametrize("parameters, after, expected", [
    ({"unit": "seconds", "delta": 30}, "2024-01-01T00:00:00", ["2024-01-01T00:00:30", "2024-01-01T00:01:00"]),
    ({"unit": "seconds", "delta": 30}, "2024-01-01T00:00:29.900", ["2024-01-01T00:00:30", "2024-01-01T00:01:00"]),
    ({"unit": "seconds", "delta": 1}, "2024-01-01T10:00:00.500", ["2024-01-01T10:00:01", "2024-01-01T10:00:02"]),
    ({"unit": "minutes", "delta": 5}, "2024-01-01T00:07:00", ["2024-01-01T00:10:00", "2024-01-01T00:15:00"]),
    ({"unit": "hours", "delta": 2}, "2024-01-01T03:00:00", ["2024-01-01T04:00:00", "2024-01-01T06:00:00"]),
    ({"unit": "days", "delta": 1}, "2024-01-01T00:00:00", ["2024-01-02T00:00:00", "2024-01-03T00:00:00"]),
    ({"unit": "weeks", "delta": 1}, "2024-01-09T00:00:00", ["2024-01-15T00:00:00", "2024-01-22T00:00:00"]),
    # A clock behind the trigger's creation waits for the first interval.
    ({"unit": "seconds", "delta": 10}, "2023-12-31T23:00:00", ["2024-01-01T00:00:10", "2024-01-01T00:00:20"]),
    # Intervals are durations: 24 hours across a DST change stay 24 hours, whatever the zone.
    ({"unit": "hours", "delta": 24, "timezone": "America/Los_Angeles"}, "2024-03-09T12:00:00",
     ["2024-03-10T00:00:00", "2024-03-11T00:00:00"]),
])
def test_interval_timers_fire_every_delta_counted_from_the_trigger_creation(parameters, after, expected):
    # Given an IntervalTimer created at ANCHOR; When asked for its next firings; Then they are on its grid
    assert firings(INTERVAL, parameters, after, len(expected)) == expected


@pytest.mark.parametrize("parameters, after, default_zone, expected", [
    ({"date": "2030-01-01 12:00:00", "timezone": "UTC"}, "2029-12-31T00:00:00", UTC, ["2030-01-01T12:00:00", None]),
    # A naive date is read in the timer's time zone, else in [timersengine] local_timezone.
    ({"date": "2030-01-01 12:00:00", "timezone": "America/Los_Angeles"}, "2029-12-31T00:00:00", UTC,
     ["2030-01-01T20:00:00", None]),
    ({"date": "2030-01-01 12:00:00"}, "2029-12-31T00:00:00", ZoneInfo("Asia/Tokyo"), ["2030-01-01T03:00:00", None]),
    ({"date": "2030-07-01 12:00:00"}, "2029-12-31T00:00:00", LA, ["2030-07-01T19:00:00", None]),
    # A date with its own offset keeps it.
    ({"date": "2030-01-01T12:00:00+02:00", "timezone": "America/Los_Angeles"}, "2029-12-31T00:00:00", UTC,
     ["2030-01-01T10:00:00", None]),
    # A date already past is not scheduled.
    ({"date": "2020-01-01 00:00:00", "timezone": "UTC"}, "2024-01-01T00:00:00", UTC, [None]),
])
def test_date_timers_fire_once_at_their_date_in_their_time_zone(parameters, after, default_zone, expected):
    # Given a DateTimer; When asked for its next firings; Then it fires once, at its date, then never
    assert firings(DATE, parameters, after, 2, default_zone) == expected


@pytest.mark.parametrize("parameters, after, expected", [
    # No field: every second, as APScheduler's CronTrigger().
    ({}, "2024-05-01T10:00:00.250", ["2024-05-01T10:00:01", "2024-05-01T10:00:02"]),
    # Fields after the least significant one given start at their minimum; those before are "*".
    ({"minute": 5}, "2024-05-01T10:04:59", ["2024-05-01T10:05:00", "2024-05-01T11:05:00"]),
    ({"hour": 9}, "2024-05-01T09:00:00", ["2024-05-02T09:00:00", "2024-05-03T09:00:00"]),
    ({"second": "*/15"}, "2024-05-01T10:00:50", ["2024-05-01T10:01:00", "2024-05-01T10:01:15"]),
    ({"minute": "5/20"}, "2024-05-01T10:30:00", ["2024-05-01T10:45:00", "2024-05-01T11:05:00"]),
    ({"hour": "9-17/4", "minute": "0"}, "2024-05-01T10:00:00", ["2024-05-01T13:00:00", "2024-05-01T17:00:00",
                                                                  "2024-05-02T09:00:00"]),
    # Weekday 0 is Monday; names work; 2024-05-03 is a Friday.
    ({"day_of_week": "mon-fri", "hour": 9}, "2024-05-03T10:00:00", ["2024-05-06T09:00:00", "2024-05-07T09:00:00"]),
    ({"day_of_week": 6, "hour": "0"}, "2024-05-01T00:00:00", ["2024-05-05T00:00:00", "2024-05-12T00:00:00"]),
    ({"day_of_week": "sat,sun", "hour": "12"}, "2024-05-01T00:00:00", ["2024-05-04T12:00:00",
                                                                       "2024-05-05T12:00:00"]),
    ({"month": "feb", "day": "last"}, "2024-01-10T00:00:00", ["2024-02-29T00:00:00", "2025-02-28T00:00:00"]),
    ({"day": "last fri"}, "2024-05-01T00:00:00", ["2024-05-31T00:00:00", "2024-06-28T00:00:00"]),
    ({"day": "2nd mon,15"}, "2024-05-01T00:00:00", ["2024-05-13T00:00:00", "2024-05-15T00:00:00",
                                                    "2024-06-10T00:00:00"]),
    ({"month": 2, "day": 29}, "2024-03-01T00:00:00", ["2028-02-29T00:00:00"]),
    ({"month": "1-3/2", "day": 1}, "2024-01-01T00:00:00", ["2024-03-01T00:00:00", "2025-01-01T00:00:00"]),
    ({"week": 1, "day_of_week": 0}, "2024-05-01T00:00:00", ["2024-12-30T00:00:00", "2025-12-29T00:00:00"]),
    ({"year": "2026", "month": 6}, "2024-05-01T00:00:00", ["2026-06-01T00:00:00"]),
    ({"year": 2020}, "2024-05-01T00:00:00", [None]),
    ({"month": "feb", "day": 30}, "2024-05-01T00:00:00", [None]),
])
def test_cron_timers_fire_at_the_times_their_fields_match(parameters, after, expected):
    # Given a CronTimer in UTC; When asked for its next firings; Then they are APScheduler's
    assert firings(CRON, {**parameters, "timezone": "UTC"}, after, len(expected)) == expected


@pytest.mark.parametrize("parameters, after, default_zone, expected", [
    ({"hour": 9, "minute": 30, "timezone": "Asia/Kolkata"}, "2024-05-01T00:00:00", UTC,
     ["2024-05-01T04:00:00", "2024-05-02T04:00:00"]),
    ({"hour": 9, "minute": 30, "timezone": "Asia/Kolkata"}, "2024-05-01T00:00:00", LA,
     ["2024-05-01T04:00:00", "2024-05-02T04:00:00"]),
    # Without a timezone parameter, [timersengine] local_timezone (StackStorm: America/Los_Angeles).
    ({"hour": 9}, "2024-05-01T00:00:00", LA, ["2024-05-01T16:00:00", "2024-05-02T16:00:00"]),
    ({"hour": 9}, "2024-12-01T00:00:00", LA, ["2024-12-01T17:00:00", "2024-12-02T17:00:00"]),
    # Midnight on a weekday in Tokyo is the day before in UTC.
    ({"day_of_week": "mon", "hour": 0, "timezone": "Asia/Tokyo"}, "2024-05-01T00:00:00", UTC,
     ["2024-05-05T15:00:00", "2024-05-12T15:00:00"]),
])
def test_cron_fields_are_wall_clock_times_of_the_timer_zone(parameters, after, default_zone, expected):
    # Given a CronTimer in a zone; When asked for its next firings; Then they are that zone's wall-clock times
    assert firings(CRON, parameters, after, len(expected), default_zone) == expected


@pytest.mark.parametrize("parameters, after, expected", [
    # 2024-03-10 02:00 PST -> 03:00 PDT: a skipped 02:30 fires at 03:30 PDT, once; later days at 02:30 PDT.
    ({"hour": 2, "minute": 30}, "2024-03-09T12:00:00-08:00",
     ["2024-03-10T10:30:00", "2024-03-11T09:30:00", "2024-03-12T09:30:00"]),
    ({"hour": 2, "minute": "*/30"}, "2024-03-10T01:10:00-08:00",
     ["2024-03-10T10:00:00", "2024-03-10T10:30:00", "2024-03-11T09:00:00"]),
    # Every 20 minutes goes on at the same pace through the gap, without a double firing.
    ({"minute": "*/20"}, "2024-03-10T01:10:00-08:00",
     ["2024-03-10T09:20:00", "2024-03-10T09:40:00", "2024-03-10T10:00:00", "2024-03-10T10:20:00"]),
    # 2024-11-03 02:00 PDT -> 01:00 PST: the repeated hour fires in both of its passes.
    ({"minute": "*/20"}, "2024-11-03T00:50:00-07:00",
     ["2024-11-03T08:00:00", "2024-11-03T08:20:00", "2024-11-03T08:40:00", "2024-11-03T09:00:00",
      "2024-11-03T09:20:00", "2024-11-03T09:40:00", "2024-11-03T10:00:00"]),
    ({"hour": 1, "minute": 30}, "2024-11-02T12:00:00-07:00",
     ["2024-11-03T08:30:00", "2024-11-03T09:30:00", "2024-11-04T09:30:00"]),
    # Times away from the change keep their wall-clock time: 09:00 PDT, then 09:00 PST.
    ({"hour": 9}, "2024-11-02T10:00:00-07:00", ["2024-11-03T17:00:00", "2024-11-04T17:00:00"]),
    # A yearly time across both changes of the year.
    ({"month": 1, "day": 1}, "2024-02-01T00:00:00", ["2025-01-01T08:00:00"]),
    ({"month": 7, "day": 1}, "2024-01-01T00:00:00", ["2024-07-01T07:00:00", "2025-07-01T07:00:00"]),
])
def test_cron_timers_across_daylight_saving_changes(parameters, after, expected):
    # Given a CronTimer in America/Los_Angeles; When its firings cross a DST change; Then none is lost or doubled
    assert firings(CRON, {**parameters, "timezone": "America/Los_Angeles"}, after, len(expected)) == expected


def test_daylight_saving_in_the_southern_hemisphere():
    # Given a daily 02:30 in Sydney, where 2024-10-06 02:00 AEST jumps to 03:00 AEDT
    # When asked for the firings around that day
    found = firings(CRON, {"hour": 2, "minute": 30, "timezone": "Australia/Sydney"}, "2024-10-04T12:00:00", 3)
    # Then the skipped 02:30 fires at 03:30 AEDT (16:30 UTC the day before), then 02:30 AEDT again
    assert found == ["2024-10-04T16:30:00", "2024-10-05T16:30:00", "2024-10-06T15:30:00"]


@pytest.mark.parametrize("type_ref, parameters, field", [
    (CRON, {"minute": 60}, "parameters.minute"),
    (CRON, {"hour": "1-"}, "parameters.hour"),
    (CRON, {"hour": "5-3"}, "parameters.hour"),
    (CRON, {"second": "*/0"}, "parameters.second"),
    (CRON, {"day_of_week": "funday"}, "parameters.day_of_week"),
    (CRON, {"day_of_week": 7}, "parameters.day_of_week"),
    (CRON, {"month": "jan-foo"}, "parameters.month"),
    (CRON, {"day": "6th mon"}, "parameters.day"),
    (CRON, {"hour": 3, "timezone": "Mars/Olympus_Mons"}, "parameters.timezone"),
    (INTERVAL, {"unit": "fortnights", "delta": 1}, "parameters.unit"),
    (INTERVAL, {"unit": "seconds", "delta": 0}, "parameters.delta"),
    (INTERVAL, {"unit": "seconds", "delta": "5"}, "parameters.delta"),
    (DATE, {"date": "tomorrow at noon"}, "parameters.date"),
])
def test_parameters_that_describe_no_schedule_are_refused_naming_the_field(type_ref, parameters, field):
    # Given timer parameters no schedule can be made of; When parsed; Then the error names the parameter
    with pytest.raises(ValidationError) as caught:
        schedule_of(type_ref, parameters, ANCHOR, UTC)
    assert caught.value.field == field


def test_a_cron_next_wall_time_is_inclusive_and_naive():
    # Given a schedule at minute 30; When asked from exactly a matching wall time; Then that time is the answer
    schedule = CronSchedule.parse({"minute": 30}, UTC)
    start = datetime.datetime(2024, 5, 1, 10, 30)
    assert schedule.next_wall(start) == start
    assert schedule.next_wall(start + datetime.timedelta(seconds=1)) == datetime.datetime(2024, 5, 1, 11, 30)


def test_each_tick_of_each_timer_has_its_own_stable_instance_id():
    # Given two timers and two ticks
    first, second = "65f000000000000000000001", "65f000000000000000000002"
    tick = at("2024-05-01T10:00:01")
    later = tick + datetime.timedelta(seconds=1)
    # When their instance ids are made twice (as two engine copies would)
    # Then they agree, differ between timers and ticks, and carry the tick's time
    assert tick_id(first, tick) == tick_id(first, tick.astimezone(LA))
    assert len({tick_id(first, tick), tick_id(second, tick), tick_id(first, later)}) == 3
    assert tick_id(first, tick).generation_time == tick
