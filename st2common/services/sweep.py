"""The execution sweep: make good what a crash or a lossy bus left behind.

The stored record is the truth and a message is only a nudge, so a nudge that
was lost (the embedded bus drops what a killed consumer held) is replaced by
looking at the records:

| records found                                        | what the sweep does                        |
| ---------------------------------------------------- | ------------------------------------------ |
| ``requested`` / ``scheduled`` unchanged for a while   | publish {"id"} again on liveaction.status, |
|                                                      | routed by the status (their work queues)   |
| ``delayed`` whose delay (ms from start) has passed,  | move back to ``requested`` (published): its |
| no concurrency policy on its action                  | scheduler's timer was lost                  |
| ``delayed`` held by a concurrency policy, and no live | one ``requested`` nudge, status unchanged   |
| execution of its action holds a slot                 | (nothing else would wake it)               |
| ``delayed`` held by a concurrency policy while a slot| nothing: the scheduler re-checks it, and    |
| holder still runs                                    | the holder's end nudges it                 |
| WORKER_OWNED (running, pausing, canceling ...) with a| ``abandoned``, result {"error": ...}; on the |
| ``runner_info.worker_id`` of a dead or unknown worker | dead worker's host, the processes carrying  |
|                                                      | its ST2_ACTION_EXECUTION_ID are killed      |

Every step is safe to repeat and to run in several processes at once: a
re-published message is a duplicate nudge that idempotent consumers ignore,
and status changes go through ``executions.update_status``, a compare-and-set
on the old status, so only one sweeper wins each record. Records with no
``runner_info.worker_id`` are never touched: nobody claimed them, so nobody died
holding them. ``pending`` (an inquiry) and ``paused`` (a workflow) are left
alone: they wait for a person or a resume, not for the worker that set them.

An execution a concurrency policy delays stays ``delayed`` for as long as its
action's slots are taken, which may be long; moving it back to ``requested``
every round would only have the scheduler delay it again, two writes and two
log entries per round. The scheduler has its own ways to bring it back (its
re-check timer, and the nudge a slot holder's end sends), so the sweep steps in
only when none of those can fire: no execution of the action holds a slot.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field

import eventlet

from st2common import statuses
from st2common.exceptions import StackStormBaseException, StaleRecordError, TransitionError
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.policy import ConcurrencySlotDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import executions
from st2common.services.policies import policies_of
from st2common.services.workers import WorkerRegistry
from st2common.transport.publisher import Publisher
from st2common.util import process

LOG = logging.getLogger(__name__)

# Statuses whose work is a message on liveaction.status routed by the status itself.
REPUBLISHED = (statuses.REQUESTED, statuses.SCHEDULED)

# Enough to decide, without loading results and parameters.
_FIELDS = ("id", "status", "log", "start_timestamp", "delay", "runner_info", "action_ref")
# The policy types that delay an execution until a slot is free (st2actionrunner.policies.CONCURRENCY_TYPES).
CONCURRENCY_POLICY_TYPES = frozenset({"action.concurrency", "action.concurrency.attr"})


@dataclass
class SweepReport:
    """Ids of the executions one sweep acted on."""

    republished: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    # Delayed by a concurrency policy with no slot holder left: nudged, status unchanged.
    nudged: list[str] = field(default_factory=list)


def sweep_executions(access: Access[ExecutionDB], publisher: Publisher, settings,
                     worker_registry: WorkerRegistry, stuck_after: float = 0.0) -> SweepReport:
    """One sweep; stuck_after is how long (s) a record must have kept its status to count as stuck.

    At start-up 0 is right (whatever the previous incarnation held is lost);
    a periodic sweep waits longer so it does not duplicate nudges in flight.
    """
    now = utcnow()
    report = SweepReport()
    _abandon_orphans(access, worker_registry, settings.actionrunner.worker_dead_after, report)
    _republish_stuck(access, publisher, now, stuck_after, report)
    _requeue_due_delayed(access, publisher, now, stuck_after, report)
    if report.republished or report.requeued or report.abandoned:
        LOG.info("sweep: %d re-published, %d delayed re-queued, %d abandoned",
                 len(report.republished), len(report.requeued), len(report.abandoned))
    return report


def _last_change(execution: ExecutionDB) -> datetime.datetime:
    """When the execution got its current status: its last log entry, else its start."""
    for entry in reversed(execution.log or []):
        if entry.get("timestamp") is not None:
            return entry["timestamp"]
    return execution.start_timestamp


def _waiting(access: Access[ExecutionDB], status: str, now: datetime.datetime,
             stuck_after: float) -> list[ExecutionDB]:
    """Executions in status that have kept it for at least stuck_after seconds, oldest first."""
    cutoff = now - datetime.timedelta(seconds=stuck_after)
    # No status can have changed before the record existed, so the start
    # timestamp narrows the candidates in the database.
    candidates = access.query({"status": status}, raw={"start_timestamp": {"$lte": cutoff}},
                              order_by=["start_timestamp"], only=_FIELDS)
    return [execution for execution in candidates if _last_change(execution) <= cutoff]


def _republish_stuck(access: Access[ExecutionDB], publisher: Publisher, now: datetime.datetime,
                     stuck_after: float, report: SweepReport) -> None:
    for status in REPUBLISHED:
        for execution in _waiting(access, status, now, stuck_after):
            publisher.publish(executions.WORK_EXCHANGE, status, {"id": str(execution.pk)})
            report.republished.append(str(execution.pk))
            LOG.debug("sweep: re-published %s execution %s", status, execution.pk)


def _requeue_due_delayed(access: Access[ExecutionDB], publisher: Publisher, now: datetime.datetime,
                         stuck_after: float, report: SweepReport) -> None:
    due = [execution for execution in _waiting(access, statuses.DELAYED, now, stuck_after)
           if execution.start_timestamp + datetime.timedelta(milliseconds=execution.delay or 0) <= now]
    if not due:
        return
    limited = {ref for ref in {execution.action_ref for execution in due}
               if any(p.policy_type in CONCURRENCY_POLICY_TYPES for p in policies_of(ref))}
    running = _slot_holders(limited) if limited else {}
    for execution in due:
        execution_id = str(execution.pk)
        if execution.action_ref not in limited:
            if _move(access, execution, statuses.REQUESTED):
                report.requeued.append(execution_id)
        elif not running.get(execution.action_ref, set()) - {execution_id}:
            publisher.publish(executions.WORK_EXCHANGE, statuses.REQUESTED, {"id": execution_id})
            report.nudged.append(execution_id)
            LOG.debug("sweep: delayed execution %s nudged: no execution of %s holds a slot", execution_id,
                      execution.action_ref)


def _slot_holders(action_refs: set[str]) -> dict[str, set[str]]:
    """The ids of the live (not completed) executions holding a concurrency slot, by action."""
    slots = Access(ConcurrencySlotDB).query(raw={"action_ref": {"$in": sorted(action_refs)}},
                                            only=("action_ref", "execution_id"))
    ids = [oid for oid in (to_object_id(slot.execution_id) for slot in slots) if oid is not None]
    holders = Access(ExecutionDB).query(raw={"_id": {"$in": ids}}, only=("id", "status")) if ids else []
    live = {str(execution.pk) for execution in holders if execution.status not in statuses.COMPLETED}
    found: dict[str, set[str]] = {}
    for slot in slots:
        if slot.execution_id in live:
            found.setdefault(slot.action_ref, set()).add(slot.execution_id)
    return found


def _abandon_orphans(access: Access[ExecutionDB], worker_registry: WorkerRegistry, dead_after: float,
                     report: SweepReport) -> None:
    claimed = [
        execution
        for execution in access.query({"status__in": sorted(statuses.WORKER_OWNED)},
                                      raw={"runner_info.worker_id": {"$exists": True}}, only=_FIELDS)
        if (execution.runner_info or {}).get("worker_id")
    ]
    dead = worker_registry.dead_among({execution.runner_info["worker_id"] for execution in claimed}, dead_after)
    for execution in claimed:
        worker_id = execution.runner_info["worker_id"]
        if worker_id not in dead:
            continue
        error = (f"worker {worker_id} died while the execution was {execution.status}; "
                 "the execution was abandoned")
        if _move(access, execution, statuses.ABANDONED, result={"error": error}):
            report.abandoned.append(str(execution.pk))
            LOG.warning("sweep: execution %s abandoned (worker %s is dead)", execution.pk, worker_id)
            if execution.runner_info.get("hostname") == socket.gethostname():
                _kill_leftovers(str(execution.pk))


def _kill_leftovers(execution_id: str) -> None:
    """Kill what the dead worker's run left behind on this host: every process carrying its execution id."""
    for pid, command in process.processes_with_env("ST2_ACTION_EXECUTION_ID", execution_id).items():
        try:
            os.kill(pid, signal.SIGKILL)
            LOG.warning("sweep: killed process %d (%s) left by abandoned execution %s", pid, command[:80],
                        execution_id)
        except (ProcessLookupError, PermissionError):
            pass


def _move(access: Access[ExecutionDB], execution: ExecutionDB, new_status: str, **changes) -> bool:
    """update_status, where losing the race to another writer is a normal outcome."""
    try:
        executions.update_status(access, execution, new_status,
                                 publish_work=new_status in executions.WORK_STATUSES, **changes)
        return True
    except (StaleRecordError, TransitionError) as exc:
        LOG.debug("sweep: execution %s moved on before %s: %s", execution.pk, new_status, exc)
        return False


class PeriodicSweep:
    """Runs sweep_executions (and purges dead workers) every interval seconds in a green thread."""

    def __init__(self, access: Access[ExecutionDB], publisher: Publisher, settings,
                 worker_registry: WorkerRegistry, interval: float, stuck_after: float | None = None) -> None:
        self.access = access
        self.publisher = publisher
        self.settings = settings
        self.worker_registry = worker_registry
        self.interval = interval
        # A record is stuck once it has waited longer than a worker may stay silent.
        self.stuck_after = settings.actionrunner.worker_dead_after if stuck_after is None else stuck_after
        self.rounds = 0
        self._stopping = threading.Event()
        self._thread: eventlet.greenthread.GreenThread | None = None

    def start(self) -> PeriodicSweep:
        """Start the green thread; the first sweep runs after one interval."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = eventlet.spawn(self._run)
        return self

    def run_once(self) -> SweepReport:
        """One round: sweep, then drop the records of workers dead long enough to be abandoned."""
        report = sweep_executions(self.access, self.publisher, self.settings, self.worker_registry,
                                  stuck_after=self.stuck_after)
        self.worker_registry.purge()
        self.rounds += 1
        return report

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.run_once()
            except StackStormBaseException as exc:
                # Database or bus briefly away: the next round retries.
                LOG.warning("periodic sweep failed: %s", exc)

    def stop(self) -> None:
        """Stop sweeping and wait for a round in progress to finish."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.wait()


def periodic(access: Access[ExecutionDB], publisher: Publisher, settings, worker_registry: WorkerRegistry,
             interval: float, stuck_after: float | None = None) -> PeriodicSweep:
    """Start a PeriodicSweep every interval seconds; call .stop() on a clean shutdown."""
    return PeriodicSweep(access, publisher, settings, worker_registry, interval, stuck_after).start()
