"""Cron schedules: CronTimer's fields, parsed as APScheduler 3 reads them, and the next firing time.

Cron fields follow APScheduler's CronTrigger, which StackStorm passes them to:
``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, ``a/n``, comma lists, month and
weekday names, and in ``day`` ``last``, ``last fri``, ``2nd mon``;
day_of_week 0 is Monday; fields before the least significant one given
default to ``*``, those after it to their minimum (week and day_of_week to
``*``). Daylight saving time: a wall time that occurs twice fires twice (as
APScheduler means to), one skipped by a spring-forward change fires at the
moment of the change plus its distance into the gap (02:30 -> 03:30).
"""

from __future__ import annotations

import calendar
import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from st2common.exceptions import ValidationError

UTC = datetime.timezone.utc
ONE_SECOND = datetime.timedelta(seconds=1)
# Bound of the daylight-saving walk; a firing further out is placed by the zone's own reading of it.
MAX_OFFSET_CHANGES = 64
# The calendar (weekdays, leap years, ISO weeks) repeats every 400 years: no match by then means never.
SEARCH_YEARS = 400
# Longer than any spring-forward gap of a time zone.
LONGEST_GAP = datetime.timedelta(hours=3)

CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
_BOUNDS = {"year": (1970, 9999), "month": (1, 12), "day": (1, 31), "week": (1, 53), "day_of_week": (0, 6),
           "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
_DEFAULTS = {"year": "*", "month": "1", "day": "1", "week": "*", "day_of_week": "*",
             "hour": "0", "minute": "0", "second": "0"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NAMES = {"day_of_week": {name: i for i, name in enumerate(WEEKDAYS)},
          "month": {name: i + 1 for i, name in enumerate(MONTHS)}}
_ORDINALS = {"1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "last": -1}

_ALL = re.compile(r"\*(?:/(\d+))?$")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?(?:/(\d+))?$")
_NAMED_RANGE = re.compile(r"([a-z]+)(?:-([a-z]+))?$")
_POSITION = re.compile(rf"(1st|2nd|3rd|4th|5th|last) +({'|'.join(WEEKDAYS)})$")


@dataclass(frozen=True)
class CronField:
    """One parsed cron field: stepped ranges, plus (day only) ``last`` and weekday positions."""

    name: str
    ranges: tuple[tuple[int, int, int], ...] = ()
    last_day: bool = False
    positions: tuple[tuple[int, int], ...] = ()  # (ordinal, weekday); ordinal -1 is "last"

    def matches(self, value: int) -> bool:
        """Whether a value is in one of the ranges."""
        return any(first <= value <= last and (value - first) % step == 0 for first, last, step in self.ranges)

    def values(self) -> list[int]:
        """Every value of the field's bounds that matches, ascending."""
        low, high = _BOUNDS[self.name]
        return [value for value in range(low, high + 1) if self.matches(value)]

    def days_of(self, year: int, month: int) -> list[int]:
        """The days of a month this (day) field matches, ascending."""
        length = calendar.monthrange(year, month)[1]
        days = {day for day in range(1, length + 1) if self.matches(day)}
        if self.last_day:
            days.add(length)
        for ordinal, weekday in self.positions:
            same = [day for day in range(1, length + 1) if calendar.weekday(year, month, day) == weekday]
            if ordinal == -1:
                days.add(same[-1])
            elif ordinal <= len(same):
                days.add(same[ordinal - 1])
        return sorted(days)


def parse_field(name: str, expression: Any) -> CronField:
    """A cron field from its APScheduler expression; ValidationError naming ``parameters.<name>``."""
    text = str(expression).strip().lower()
    low, high = _BOUNDS[name]
    ranges, positions, last_day = [], [], False

    def invalid(reason: str) -> ValidationError:
        return ValidationError(f'parameters.{name}: "{expression}" is not a valid cron expression ({reason})',
                               field=f"parameters.{name}")

    def number(value: str) -> int:
        names = _NAMES.get(name, {})
        result = names[value] if value in names else int(value) if value.isdigit() else None
        if result is None:
            raise invalid(f"unknown name {value!r}")
        if not low <= result <= high:
            raise invalid(f"{result} is outside {low}-{high}")
        return result

    for term in (part.strip() for part in text.split(",")):
        step = None
        if (found := _ALL.match(term)) is not None:
            first, last, step = low, high, found.group(1)
        elif (found := _RANGE.match(term)) is not None:
            first, step = number(found.group(1)), found.group(3)
            last = number(found.group(2)) if found.group(2) else (high if step else first)
        elif name == "day" and term == "last":
            last_day = True
            continue
        elif name == "day" and (found := _POSITION.match(term)) is not None:
            positions.append((_ORDINALS[found.group(1)], WEEKDAYS.index(found.group(2))))
            continue
        elif name in _NAMES and (found := _NAMED_RANGE.match(term)) is not None:
            first = number(found.group(1))
            last = number(found.group(2)) if found.group(2) else first
        else:
            raise invalid(f"cannot read {term!r}")
        step = int(step) if step else 1
        if step < 1 or last < first:
            raise invalid("the step must be positive and a range must not run backwards")
        ranges.append((first, last, step))
    return CronField(name, tuple(ranges), last_day, tuple(positions))


@dataclass(frozen=True)
class CronSchedule:
    """Fires at the wall-clock times in ``zone`` that every field matches."""

    fields: Mapping[str, CronField]
    zone: datetime.tzinfo
    _times: tuple = field(default=(), compare=False, repr=False)

    @classmethod
    def parse(cls, parameters: Mapping[str, Any], zone: datetime.tzinfo) -> CronSchedule:
        """From CronTimer parameters, with APScheduler's defaults for the fields not given."""
        given = {name: parameters[name] for name in CRON_FIELDS if parameters.get(name) is not None}
        expressions, defaults = {}, False
        for name in CRON_FIELDS:
            if name in given:
                expressions[name] = given.pop(name)
                defaults = not given
            else:
                expressions[name] = _DEFAULTS[name] if defaults else "*"
        fields = {name: parse_field(name, expression) for name, expression in expressions.items()}
        times = tuple(fields[name].values() for name in ("hour", "minute", "second"))
        if not all(times):
            raise ValidationError("parameters: the cron fields match no time of day", field="parameters")
        return cls(fields, zone, times)

    def next_wall(self, start: datetime.datetime) -> datetime.datetime | None:
        """The first naive wall-clock time at or after start (whole seconds) that matches, or None."""
        year_field, month_field, day_field = self.fields["year"], self.fields["month"], self.fields["day"]
        day, floor = start.date(), start.time().replace(microsecond=0)
        while day.year <= min(9999, start.year + SEARCH_YEARS):
            if not year_field.matches(day.year):
                if day.year == 9999:
                    return None
                day, floor = datetime.date(day.year + 1, 1, 1), datetime.time()
                continue
            if month_field.matches(day.month):
                for number in day_field.days_of(day.year, day.month):
                    if number < day.day:
                        continue
                    candidate = day.replace(day=number)
                    if not (self.fields["week"].matches(candidate.isocalendar()[1])
                            and self.fields["day_of_week"].matches(candidate.weekday())):
                        continue
                    at = self._first_time(floor if candidate == day else datetime.time())
                    if at is not None:
                        return datetime.datetime.combine(candidate, at)
            if day.month == 12:
                if day.year == 9999:
                    return None
                day = datetime.date(day.year + 1, 1, 1)
            else:
                day = datetime.date(day.year, day.month + 1, 1)
            floor = datetime.time()
        return None

    def _first_time(self, floor: datetime.time) -> datetime.time | None:
        hours, minutes, seconds = self._times
        for hour in (h for h in hours if h >= floor.hour):
            for minute in (m for m in minutes if hour > floor.hour or m >= floor.minute):
                for second in seconds:
                    if hour > floor.hour or minute > floor.minute or second >= floor.second:
                        return datetime.time(hour, minute, second)
        return None

    def next_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The first firing strictly after moment (aware), in UTC, or None if there is none.

        Walks the zone's offset changes: between two changes wall time is
        instant + offset, so the first matching wall time gives the instant;
        at a spring-forward change the skipped wall times that match fire
        at the change plus their distance into the gap.
        """
        start = moment.astimezone(UTC).replace(microsecond=0) + ONE_SECOND
        skipped = found = None
        earlier = start - LONGEST_GAP
        if _offset(self.zone, start) > _offset(self.zone, earlier):
            # start is just after a spring-forward change: the rest of its gap may still fire.
            change = _next_offset_change(self.zone, earlier, start, _offset(self.zone, earlier))
            skipped = self._skipped_fire(start, change)
        for _ in range(MAX_OFFSET_CHANGES):
            offset = _offset(self.zone, start)
            found = self.next_wall((start + offset).replace(tzinfo=None))
            if found is None:
                return skipped
            candidate = (found - offset).replace(tzinfo=UTC)
            change = _next_offset_change(self.zone, start, candidate, offset)
            if change is None:
                return min(candidate, skipped) if skipped is not None else candidate
            if skipped is not None and skipped <= change:
                return skipped
            fire = self._skipped_fire(change, change)
            if fire is not None:
                skipped = fire if skipped is None else min(skipped, fire)
            start = change
        # Decades of offset changes away: the zone's own reading of that wall time is close enough.
        return found.replace(tzinfo=self.zone).astimezone(UTC) if found is not None else skipped

    def _skipped_fire(self, start: datetime.datetime, change: datetime.datetime) -> datetime.datetime | None:
        """The first firing at or after start of a wall time skipped by a spring-forward change, or None.

        A skipped wall time fires at the instant the offset before the change
        gives it: the change plus its distance into the gap.
        """
        before, after = _offset(self.zone, change - ONE_SECOND), _offset(self.zone, change)
        if after <= before:
            return None
        in_gap = self.next_wall((max(start, change) + before).replace(tzinfo=None))
        if in_gap is None or in_gap >= (change + after).replace(tzinfo=None):
            return None
        return (in_gap - before).replace(tzinfo=UTC)


def _offset(zone: datetime.tzinfo, instant: datetime.datetime) -> datetime.timedelta:
    return instant.astimezone(zone).utcoffset() or datetime.timedelta()


def _next_offset_change(zone: datetime.tzinfo, start: datetime.datetime, end: datetime.datetime,
                        offset: datetime.timedelta) -> datetime.datetime | None:
    """The first instant in (start, end] (whole seconds) where the zone's offset is no longer offset."""
    low = start
    while low < end:
        # Day steps: two changes never fall within one day, so none is stepped over.
        high = min(low + datetime.timedelta(days=1), end)
        if _offset(zone, high) != offset:
            while high - low > ONE_SECOND:
                middle = low + datetime.timedelta(seconds=(high - low).total_seconds() // 2)
                low, high = (low, middle) if _offset(zone, middle) != offset else (middle, high)
            return high
        low = high
    return None
