"""Timer schedules: what the parameters of an IntervalTimer, DateTimer or CronTimer trigger describe.

Each schedule answers one question, ``next_after(moment)``: the first firing
strictly after an aware moment, in UTC, or None when nothing is left to fire.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from st2common.exceptions import ValidationError
from st2common.services import triggertypes
from st2rulesengine.cron import UTC, CronSchedule

UNITS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


@dataclass(frozen=True)
class IntervalSchedule:
    """Fires every ``every`` from ``anchor`` on, the first time at anchor + every."""

    anchor: datetime.datetime
    every: datetime.timedelta

    def next_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The first tick strictly after moment."""
        ticks = max(1, (moment - self.anchor) // self.every + 1)
        return (self.anchor + ticks * self.every).astimezone(UTC)


@dataclass(frozen=True)
class DateSchedule:
    """Fires once, at ``at``."""

    at: datetime.datetime

    def next_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """``at`` while it is still ahead of moment, else None."""
        return self.at.astimezone(UTC) if self.at > moment else None


Schedule = IntervalSchedule | DateSchedule | CronSchedule


def zone_of(name: str | None, default: datetime.tzinfo) -> datetime.tzinfo:
    """The zoneinfo zone called name (default when empty); ValidationError naming parameters.timezone."""
    if not name:
        return default
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f'parameters.timezone: "{name}" is not a known time zone',
                              field="parameters.timezone") from None


def schedule_of(type_ref: str, parameters: Mapping[str, Any], anchor: datetime.datetime,
                default_zone: datetime.tzinfo) -> Schedule:
    """The schedule a timer trigger's parameters describe; ValidationError naming the bad parameter."""
    zone = zone_of(parameters.get("timezone"), default_zone)
    if type_ref == triggertypes.INTERVAL_TIMER_TRIGGER_REF:
        unit, delta = parameters.get("unit"), parameters.get("delta")
        if unit not in UNITS:
            raise ValidationError(f"parameters.unit: {unit!r} is not one of {', '.join(UNITS)}",
                                  field="parameters.unit")
        if isinstance(delta, bool) or not isinstance(delta, int) or delta < 1:
            raise ValidationError(f"parameters.delta: {delta!r} is not a positive integer", field="parameters.delta")
        return IntervalSchedule(anchor.astimezone(UTC), datetime.timedelta(seconds=delta * UNITS[unit]))
    if type_ref == triggertypes.DATE_TIMER_TRIGGER_REF:
        try:
            at = datetime.datetime.fromisoformat(str(parameters.get("date")).strip())
        except ValueError:
            raise ValidationError(f'parameters.date: "{parameters.get("date")}" is not a date and time',
                                  field="parameters.date") from None
        return DateSchedule(at if at.tzinfo is not None else at.replace(tzinfo=zone))
    if type_ref == triggertypes.CRON_TIMER_TRIGGER_REF:
        return CronSchedule.parse(parameters, zone)
    raise ValidationError(f"{type_ref} is not a timer trigger type", field="type")
