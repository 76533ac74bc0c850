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

A timer without ``timezone`` uses ``[timersengine] local_timezone``. The
schedules are in st2rulesengine.schedules, cron fields and daylight saving
time in st2rulesengine.cron.

Each tick dispatches (triggerinstances.dispatch) StackStorm's payload
``{executed_at: str(UTC now), schedule: null}`` under the trace tag ``<type
name>-<trigger name>``. Every rules engine copy runs the timers; a tick's instance id is
derived from (trigger id, tick), so it is stored once and a copy that finds it
stored dispatches nothing. A tick later than MISFIRE_GRACE (a stopped or
starved process) is skipped and missed ticks coalesce, as in APScheduler.

Trigger create/update/delete events (a broadcast queue on the trigger
exchange) add, reschedule or drop a timer at once; the whole set is reloaded
every RELOAD_INTERVAL seconds in case an event was lost.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

import eventlet
from bson import ObjectId

from st2common.exceptions import ConfigError, StackStormBaseException, ValidationError
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import triggerinstances, triggertypes
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher
from st2rulesengine.cron import UTC
from st2rulesengine.schedules import Schedule, schedule_of, zone_of

LOG = logging.getLogger(__name__)

MISFIRE_GRACE = datetime.timedelta(seconds=5)
RELOAD_INTERVAL = 60.0


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
        docs = Access(TriggerDB).query(raw={"type": {"$in": list(triggertypes.TIMER_TRIGGER_REFS)}})
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
        if doc is not None and doc.type in triggertypes.TIMER_TRIGGER_REFS:
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
            triggerinstances.dispatch(self.publisher, timer.ref, payload, trace_context={"trace_tag": timer.trace_tag},
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
