"""The scheduler: requested executions become scheduled, or delayed until they are due.

| consumes            | liveaction.status ``requested`` (queue actionrunner.req, every copy competes) |
| ------------------- | ------------------------------------------------------------------------------ |
| due now             | requested/delayed -> scheduled (one compare-and-set)                            |
| delay (ms) not over | requested -> delayed, then a green timer for the rest; -> scheduled when it fires |
| hands on to         | this process's dispatcher when it has room (no bus hop), else the bus           |
|                     | (liveaction.status ``scheduled``, queue actionrunner.work)                      |
| reads               | nothing for a request whose message says enough (below); the others it is     |
|                     | handed at the same time, in one query (a batch Loader)                         |

The record is the truth: a delay is counted from the execution's
start_timestamp, so a timer lost with its process is made good at the next
start (``resume_delayed`` arms timers for every delayed record) or by the sweep
(it moves due ``delayed`` records back to ``requested``, which brings them here
again and they are scheduled at once).

When this process's dispatcher has room, the execution is not put on the bus
at all: the dispatcher claims it in one compare-and-set that passes through
``scheduled`` to ``running`` (both steps checked against the table and logged),
saving a write, a publish and a consume per execution. This stays correct with
several copies: the copies already share the requests through the competing
actionrunner.req queue; the claim is conditional on the status this scheduler
read, so a cancel in between wins; a dispatcher whose pool is still full after
ROOM_WAIT seconds (runs of a burst end within that) leaves the execution
``scheduled`` on the bus for any copy; and a process that dies before
its claim leaves a ``requested`` record the sweep re-publishes.

A request message names the action, the delay and the time the request was
stored. When the action has no concurrency policy and no delay was asked
for, that is all scheduling needs, and the record is not read: it is claimed
(or moved to ``scheduled``) by a compare-and-set on its status and on the
revision it was stored with, so the log that write rewrites is the one the
request stored. A record that changed since (canceled, or claimed by another
copy through a redelivered message) fails that condition and takes the usual
path: it is read, and nothing is done if it moved on. Messages that carry
only the id (re-published by the sweep or by a freed concurrency slot) are
always read.

Before anything is scheduled, the action's concurrency policies are applied
(st2actionrunner.policies.admit): the execution must win one of the policy's
``threshold`` slots, records with a unique index, so copies of this scheduler
never run more than the threshold together. Without a slot it becomes
``delayed`` (the notifier nudges it when a slot is freed; a timer re-checks
it as a fallback) or ``canceled``, as the policy says.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import eventlet
from bson import ObjectId

from st2common import statuses
from st2common.exceptions import NotFoundError, StaleRecordError, TransitionError
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access, to_object_id
from st2common.persistence.batches import Loader
from st2common.services import executions
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher
from st2actionrunner import policies

LOG = logging.getLogger(__name__)

QUEUE = "actionrunner.req"
# Seconds a request waits for a run of this process to end when every slot is taken, before it goes
# scheduled on the bus (a write, a message and a read more): in a burst of short runs one soon ends.
ROOM_WAIT = 0.05
# The revision an execution is stored with; any later write moves it on.
STORED_REVISION = ExecutionDB.revision.default


def load(access: Access[ExecutionDB], body: dict[str, Any]) -> ExecutionDB | None:
    """The execution a message points at, or None when there is none."""
    try:
        return access.get_by_id(body.get("id"))
    except NotFoundError:
        return None


@dataclass(frozen=True)
class Request:
    """A requested execution as its message tells it, standing in for the record it does not read.

    What a status change needs of the record (its id, status and log) is
    known while the record is still at the revision the request stored; the
    change is made on that condition (``expected``).
    """

    pk: ObjectId
    action_ref: str
    log: list[dict[str, Any]]
    status: str = statuses.REQUESTED
    expected: dict[str, Any] = field(default_factory=lambda: {"revision": STORED_REVISION})


def unread_request(body: dict[str, Any]) -> Request | None:
    """The request a message describes when scheduling it needs no read, else None.

    It must name the action and the time it was stored, ask for no delay, and
    the action must have no concurrency policy (from memory: the policy index).
    """
    action_ref, stamp = body.get("action_ref"), body.get("start_timestamp")
    if not action_ref or not isinstance(stamp, str) or body.get("delay"):
        return None
    oid = to_object_id(body.get("id"))
    if oid is None or policies.has_concurrency(action_ref):
        return None
    try:
        requested_at = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return Request(oid, action_ref, [{"status": statuses.REQUESTED, "timestamp": requested_at}])


class LocalDispatcher(Protocol):
    """What the scheduler needs of the dispatcher in its process."""

    def has_room(self, wait: float = 0.0) -> bool:
        """True when it can start a run now (after waiting up to wait seconds for one to end)."""

    def start(self, execution: ExecutionDB | Request, expected: dict[str, Any] | None = None) -> bool:
        """Claim (requested/delayed/scheduled -> running, on expected too) and run the execution."""


def due_in(execution: ExecutionDB, now: datetime.datetime) -> float:
    """Seconds until execution may be scheduled (0 when due or without a delay)."""
    if not execution.delay:
        return 0.0
    due = execution.start_timestamp + datetime.timedelta(milliseconds=execution.delay)
    return max(0.0, (due - now).total_seconds())


class Scheduler(Handler):
    """Moves requested executions on to scheduled, now or when their delay is over."""

    def __init__(self, publisher: Publisher, dispatcher: LocalDispatcher | None = None) -> None:
        self.queue = publisher.topology.work_queue(QUEUE)
        self.access = executions.access(publisher)
        self.loader = Loader(self.access)
        self.dispatcher = dispatcher
        self._timers: dict[str, Any] = {}
        # execution id -> how often a concurrency policy delayed it (spaces its re-checks).
        self._rechecks: dict[str, int] = {}

    def handle(self, body: dict[str, Any]) -> None:
        """Schedule or delay the requested execution body["id"]; anything else is a stale nudge."""
        request = unread_request(body)
        if request is not None:
            self._schedule_unread(request)
            return
        self._handle_read(body)

    def _schedule_unread(self, request: Request) -> None:
        """A request not read: to this process's dispatcher if it has room, else scheduled on the bus."""
        if self.dispatcher is not None and self.dispatcher.has_room(ROOM_WAIT):
            # A claim that misses sends the request back here with its id alone (see the dispatcher).
            self.dispatcher.start(request, expected=request.expected)
            return
        try:
            executions.update_status(self.access, request, statuses.SCHEDULED, publish_work=True,
                                     expected=request.expected)
        except (StaleRecordError, TransitionError) as exc:
            # Changed since it was stored: what it is now decides.
            LOG.debug("scheduler: execution %s changed since its request: %s", request.pk, exc)
            self._handle_read({"id": str(request.pk)})

    def _handle_read(self, body: dict[str, Any]) -> None:
        execution = self.loader.get(body.get("id"))
        if execution is None:
            LOG.warning("scheduler: no execution %s", body.get("id"))
            return
        if execution.status == statuses.SCHEDULED and self.dispatcher is not None:
            # A redelivered nudge for a record already scheduled: offer it again,
            # the dispatcher's compare-and-set makes a duplicate harmless.
            self.dispatcher.start(execution)
            return
        if execution.status not in (statuses.REQUESTED, statuses.DELAYED):
            LOG.debug("scheduler: execution %s is %s; nothing to do", execution.pk, execution.status)
            return
        wait = due_in(execution, utcnow())
        if wait <= 0:
            self.schedule(execution)
            return
        if execution.status == statuses.REQUESTED:
            execution = self._move(execution, statuses.DELAYED, publish_work=False)
            if execution is None:
                return
        self._arm(str(execution.pk), wait)

    def schedule(self, execution: ExecutionDB) -> None:
        """requested/delayed -> this process's dispatcher if it has room, else scheduled on the bus."""
        if not self._admitted(execution):
            return
        if self.dispatcher is not None and self.dispatcher.has_room(ROOM_WAIT):
            self.dispatcher.start(execution)
            return
        self._move(execution, statuses.SCHEDULED, publish_work=True)

    # -- concurrency policies (st2actionrunner.policies; the database counts) -------------------

    def _admitted(self, execution: ExecutionDB) -> bool:
        """Apply the action's concurrency policies: True to schedule it now, else it is delayed or canceled."""
        execution_id = str(execution.pk)
        admission = policies.admit(execution)
        if admission.decision == policies.SCHEDULE:
            self._rechecks.pop(execution_id, None)
            return True
        if admission.decision == policies.CANCEL:
            self._rechecks.pop(execution_id, None)
            try:
                executions.update_status(self.access, execution, statuses.CANCELED, publish_work=False,
                                         result={"message": f"Canceled by a concurrency policy: {admission.reason}"})
                LOG.info("execution %s canceled: %s", execution_id, admission.reason)
            except (StaleRecordError, TransitionError) as exc:
                LOG.debug("scheduler: execution %s not canceled: %s", execution_id, exc)
            return False
        if execution.status != statuses.DELAYED and self._move(execution, statuses.DELAYED, False) is None:
            return False
        # Freed slots nudge waiting executions at once; this re-check is the fallback.
        times = self._rechecks.get(execution_id, 0)
        self._rechecks[execution_id] = times + 1
        # Said once; the re-checks that follow are routine.
        self._arm(execution_id, policies.recheck_after(times), logging.INFO if times == 0 else logging.DEBUG)
        return False

    def _move(self, execution: ExecutionDB, status: str, publish_work: bool) -> ExecutionDB | None:
        try:
            return executions.update_status(self.access, execution, status, publish_work=publish_work)
        except (StaleRecordError, TransitionError) as exc:
            # Canceled meanwhile, or another copy got there first.
            LOG.debug("scheduler: execution %s not moved to %s: %s", execution.pk, status, exc)
            return None

    def _arm(self, execution_id: str, wait: float, level: int = logging.INFO) -> None:
        previous = self._timers.pop(execution_id, None)
        if previous is not None:
            previous.cancel()
        self._timers[execution_id] = eventlet.spawn_after(wait, self._due, execution_id)
        LOG.log(level, "execution %s delayed for %.3f s", execution_id, wait)

    def _due(self, execution_id: str) -> None:
        self._timers.pop(execution_id, None)
        try:
            execution = load(self.access, {"id": execution_id})
            if execution is None or execution.status != statuses.DELAYED:
                self._rechecks.pop(execution_id, None)
                return
            wait = due_in(execution, utcnow())
            if wait > 0:
                # Clocks are in milliseconds and timers may fire a little early.
                self._arm(execution_id, wait)
                return
            self.schedule(execution)
        except Exception:  # a timer has no message to redeliver: the sweep picks the record up
            LOG.exception("scheduler: delayed execution %s could not be scheduled", execution_id)

    def resume_delayed(self) -> int:
        """Arm timers for every delayed execution (those of a previous run of this service); how many."""
        waiting = self.access.query({"status": statuses.DELAYED}, only=("id", "delay", "start_timestamp"))
        now = utcnow()
        for execution in waiting:
            # Another copy may arm the same one; the compare-and-set lets one of them schedule it.
            self._arm(str(execution.pk), due_in(execution, now))
        return len(waiting)

    def stop(self) -> None:
        """Drop pending timers (their records stay delayed, for the sweep or the next start)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._rechecks.clear()

    def give_up(self, body: dict[str, Any], error: BaseException) -> None:
        """A request that cannot be scheduled after every retry fails, with the error."""
        execution = load(self.access, body)
        if execution is None or execution.status not in (statuses.REQUESTED, statuses.DELAYED):
            return
        try:
            executions.update_status(self.access, execution, statuses.FAILED, publish_work=False,
                                     result={"error": f"cannot be scheduled: {error}"})
        except (StaleRecordError, TransitionError):
            pass
