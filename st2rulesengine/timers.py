"""Timers: the triggers of core.st2.IntervalTimer, DateTimer and CronTimer fire trigger instances on time.

Datasheet:

| timer        | parameters                                  | fires                                         |
| ------------ | ------------------------------------------- | --------------------------------------------- |
| IntervalTimer| unit (weeks ... seconds), delta             | every delta units, counted from the trigger's |
|              |                                             | creation, first at creation + delta           |
| DateTimer    | date (naive = in ``timezone``), timezone    | once; a date already past is not scheduled    |
| CronTimer    | year, month, day, week, day_of_week, hour,  | at each matching wall-clock time in           |
|              | minute, second (APScheduler 3 expressions), | ``timezone``                                  |
|              | timezone                                    |                                               |

A timer without ``timezone`` uses ``[timersengine] local_timezone``. Cron
fields follow APScheduler's CronTrigger, which StackStorm passes them to:
``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, ``a/n``, comma lists, month and
weekday names, and in ``day`` ``last``, ``last fri``, ``2nd mon``;
day_of_week 0 is Monday; fields before the least significant one given
default to ``*``, those after it to their minimum (week and day_of_week to
``*``). Daylight saving time: a wall time that occurs twice fires twice (as
APScheduler means to), one skipped by a spring-forward change fires at the
moment of the change plus its distance into the gap (02:30 -> 03:30).

Each tick dispatches (triggers.dispatch) StackStorm's payload ``{executed_at:
str(UTC now), schedule: null}`` under the trace tag ``<type name>-<trigger
name>``. Every rules engine copy runs the timers; a tick's instance id is
derived from (trigger id, tick), so it is stored once and a copy that finds it
stored dispatches nothing. A tick later than MISFIRE_GRACE (a stopped or
starved process) is skipped and missed ticks coalesce, as in APScheduler.

Trigger create/update/delete events (a broadcast queue on the trigger
exchange) add, reschedule or drop a timer at once; the whole set is reloaded
every RELOAD_INTERVAL seconds in case an event was lost.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import eventlet
from bson import ObjectId

from st2common.exceptions import ConfigError, StackStormBaseException, ValidationError
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import triggers
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

UTC = datetime.timezone.utc
ONE_SECOND = datetime.timedelta(seconds=1)
MISFIRE_GRACE = datetime.timedelta(seconds=5)
RELOAD_INTERVAL = 60.0
# Bound of the daylight-saving walk; a firing further out is placed by the zone's own reading of it.
MAX_OFFSET_CHANGES = 64
# The calendar (weekdays, leap years, ISO weeks) repeats every 400 years: no match by then means never.
SEARCH_YEARS = 400
# Longer than any spring-forward gap of a time zone.
LONGEST_GAP = datetime.timedelta(hours=3)

UNITS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}

# -- cron fields ----------------------------------------------------------------------------------

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
    if type_ref == triggers.INTERVAL_TIMER_TRIGGER_REF:
        unit, delta = parameters.get("unit"), parameters.get("delta")
        if unit not in UNITS:
            raise ValidationError(f"parameters.unit: {unit!r} is not one of {', '.join(UNITS)}",
                                  field="parameters.unit")
        if isinstance(delta, bool) or not isinstance(delta, int) or delta < 1:
            raise ValidationError(f"parameters.delta: {delta!r} is not a positive integer", field="parameters.delta")
        return IntervalSchedule(anchor.astimezone(UTC), datetime.timedelta(seconds=delta * UNITS[unit]))
    if type_ref == triggers.DATE_TIMER_TRIGGER_REF:
        try:
            at = datetime.datetime.fromisoformat(str(parameters.get("date")).strip())
        except ValueError:
            raise ValidationError(f'parameters.date: "{parameters.get("date")}" is not a date and time',
                                  field="parameters.date") from None
        return DateSchedule(at if at.tzinfo is not None else at.replace(tzinfo=zone))
    if type_ref == triggers.CRON_TIMER_TRIGGER_REF:
        return CronSchedule.parse(parameters, zone)
    raise ValidationError(f"{type_ref} is not a timer trigger type", field="type")


# -- the engine -----------------------------------------------------------------------------------

@dataclass
class Timer:
    """One timer trigger, its schedule and its next firing (None: nothing left to fire)."""

    trigger_id: str
    ref: str
    name: str
    type_ref: str
    parameters: dict
    schedule: Schedule
    next_fire: datetime.datetime | None = None

    @property
    def trace_tag(self) -> str:
        """StackStorm's trace tag of a timer: ``<trigger type name>-<trigger name>``."""
        return f"{self.type_ref.partition('.')[2]}-{self.name}"

    def same_as(self, other: Timer) -> bool:
        """Whether other is this timer with the same schedule."""
        return (self.trigger_id, self.type_ref, self.parameters) == (other.trigger_id, other.type_ref,
                                                                      other.parameters)


def tick_id(trigger_id: str, tick: datetime.datetime) -> ObjectId:
    """The trigger instance id of one tick of one timer: the same in every engine copy."""
    digest = hashlib.sha1(f"{trigger_id}:{tick.astimezone(UTC).isoformat()}".encode()).digest()
    return ObjectId(int(tick.timestamp()).to_bytes(4, "big") + digest[:8])


class TimerEngine:
    """Runs every timer trigger of the database in one green thread, kept current by trigger events."""

    def __init__(self, publisher: Publisher, local_timezone: str = "UTC") -> None:
        self.publisher = publisher
        try:
            self.zone = zone_of(local_timezone, UTC)
        except ValidationError as exc:
            raise ConfigError("timersengine", "local_timezone", str(exc)) from None
        self._timers: dict[str, Timer] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = None

    def handlers(self) -> list[Handler]:
        """The handler of trigger events (this process's broadcast queue on the trigger exchange)."""
        return [_TriggerEvents(self.publisher.topology.broadcast_queue("trigger"), self)]

    def start(self) -> None:
        """Load the timers and start firing them."""
        LOG.info("timers: %d scheduled", self.load())
        self._thread = eventlet.spawn(self._run)

    def stop(self) -> None:
        """Stop firing; returns once a tick in progress is dispatched."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.wait()
            self._thread = None

    # -- the set of timers ---------------------------------------------------------------------

    def load(self) -> int:
        """Take every timer trigger of the database (keeping the next firing of unchanged ones)."""
        docs = Access(TriggerDB).query(raw={"type": {"$in": list(triggers.TIMER_TRIGGER_REFS)}})
        now = _now()
        loaded = {}
        for doc in docs:
            timer = self._build(doc, now)
            if timer is not None:
                loaded[timer.trigger_id] = timer
        with self._lock:
            for trigger_id, timer in loaded.items():
                self._keep_next_fire(timer, self._timers.get(trigger_id))
            self._timers = loaded
        self._wake.set()
        return len(loaded)

    def refresh(self, trigger_id: str) -> None:
        """Take one trigger's stored state: a timer added, rescheduled or dropped."""
        oid = to_object_id(trigger_id)
        doc = Access(TriggerDB).get(id=oid) if oid is not None else None
        timer = None
        if doc is not None and doc.type in triggers.TIMER_TRIGGER_REFS:
            timer = self._build(doc, _now())
        with self._lock:
            previous = self._timers.pop(trigger_id, None)
            if timer is not None:
                self._keep_next_fire(timer, previous)
                self._timers[trigger_id] = timer
        if timer is not None and (previous is None or not previous.same_as(timer)):
            LOG.info("timer %s (%s) scheduled; next at %s", timer.ref, timer.type_ref, timer.next_fire)
        elif timer is None and previous is not None:
            LOG.info("timer %s removed", previous.ref)
        self._wake.set()

    def timers(self) -> list[Timer]:
        """The timers held now."""
        with self._lock:
            return list(self._timers.values())

    def _build(self, doc: TriggerDB, now: datetime.datetime) -> Timer | None:
        parameters = dict(doc.parameters or {})
        try:
            schedule = schedule_of(doc.type, parameters, doc.pk.generation_time, self.zone)
        except ValidationError as exc:
            LOG.error("timer %s (%s) is not scheduled: %s", doc.ref, doc.type, exc)
            return None
        timer = Timer(str(doc.pk), doc.ref, doc.name, doc.type, parameters, schedule)
        timer.next_fire = schedule.next_after(now)
        if timer.next_fire is None:
            LOG.info("timer %s (%s) has nothing left to fire", doc.ref, doc.type)
        return timer

    @staticmethod
    def _keep_next_fire(timer: Timer, previous: Timer | None) -> None:
        # A reload between a tick coming due and its firing must not skip that tick.
        if previous is not None and previous.same_as(timer):
            timer.next_fire = previous.next_fire

    # -- firing --------------------------------------------------------------------------------

    def _run(self) -> None:
        next_reload = _now() + datetime.timedelta(seconds=RELOAD_INTERVAL)
        while not self._stopping.is_set():
            now = _now()
            if now >= next_reload:
                next_reload = now + datetime.timedelta(seconds=RELOAD_INTERVAL)
                try:
                    self.load()
                except StackStormBaseException as exc:
                    LOG.warning("timers: reload failed (%s); keeping the timers held", exc)
            self._wake.clear()
            self.fire_due(now)
            upcoming = [timer.next_fire for timer in self.timers() if timer.next_fire is not None]
            wake_at = min(upcoming + [next_reload])
            self._wake.wait(max(0.0, (wake_at - _now()).total_seconds()))

    def fire_due(self, now: datetime.datetime) -> int:
        """Fire every timer whose next firing is due at now; how many ticks were dispatched."""
        fired = 0
        for timer in self.timers():
            tick = timer.next_fire
            if tick is None or tick > now:
                continue
            if now - tick <= MISFIRE_GRACE:
                fired += self._fire(timer, tick, now)
            else:
                LOG.warning("timer %s missed its tick at %s by %s; skipped", timer.ref, tick, now - tick)
            timer.next_fire = timer.schedule.next_after(now)
        return fired

    def _fire(self, timer: Timer, tick: datetime.datetime, now: datetime.datetime) -> int:
        instance_id = tick_id(timer.trigger_id, tick)
        try:
            if Access(TriggerInstanceDB).get(id=instance_id) is not None:
                LOG.debug("timer %s tick %s was fired by another engine", timer.ref, tick)
                return 0
            # The payload is StackStorm's: str() of an aware UTC now, and the "time" parameter.
            payload = {"executed_at": str(now), "schedule": timer.parameters.get("time")}
            triggers.dispatch(self.publisher, timer.ref, payload, trace_context={"trace_tag": timer.trace_tag},
                              instance_id=instance_id)
        except StackStormBaseException as exc:
            LOG.error("timer %s tick %s not dispatched: %s", timer.ref, tick, exc)
            return 0
        except Exception:  # a bug must not stop every other timer
            LOG.exception("timer %s tick %s not dispatched", timer.ref, tick)
            return 0
        LOG.debug("timer %s fired for %s as trigger instance %s", timer.ref, tick, instance_id)
        return 1


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


class _TriggerEvents(Handler):
    """Trigger create/update/delete events -> TimerEngine.refresh."""

    def __init__(self, queue, engine: TimerEngine) -> None:
        self.queue = queue
        self.engine = engine

    def handle(self, body: dict[str, Any]) -> None:
        """Refresh the timer of the trigger named by the event."""
        if body.get("id"):
            self.engine.refresh(str(body["id"]))
