"""What moves workflows on: the workflow engine's consumers, and its sweep for what they missed.

| queue                                   | message                | does                                       |
| --------------------------------------- | ---------------------- | ------------------------------------------ |
| workflow.work (workflow.status          | {"id"} of a workflow   | starts it: first tasks requested           |
| ``requested``; copies compete)          | execution              | (WorkflowService.start)                    |
| workflow.action.update (execution       | {"id", "status"} of    | a child of a workflow (context.orquesta)   |
| ``update``; copies compete)             | any written execution  | that completed, went pending or paused, or |
|                                         |                        | resumed: its task moves on                 |
|                                         |                        | (WorkflowService.child_changed); a         |
|                                         |                        | workflow's own execution asked to pause,   |
|                                         |                        | resume or cancel: the workflow follows     |
|                                         |                        | (WorkflowService.control)                  |

Every execution write arrives on the update queue. An update that announces a
status nothing here acts on (requested, scheduled, delayed; the first running of
a plain child this engine requested; any status but a control of an Orquesta
workflow with no parent), or an execution with no parent that is no workflow
(its message names both), is dropped unread; the completion of a plain child
this engine requested costs a read of its status and result (its task is known
here), none when its update carries them; the others cost
one read of the few fields events need, and are dropped when the
record has moved past the announced status (the update of its new status
follows: a noop's "running" update would otherwise find it succeeded and apply
its completion twice). Handling is idempotent: a status the conductor already
knows changes nothing, so a redelivered message does no harm.

The sweep (WorkflowSweep) makes good what no consumer saw: for each active
workflow execution left unchanged for a while, it applies the children that
completed (their update lost with a killed consumer on the embedded bus, or
sent while no engine ran and lost), and requests the children listed in
``pending`` that do not exist (an engine died between storing the state that
asks for them and requesting them). Only workflows unchanged for ``idle_for``
seconds are touched, so the sweep does not race another engine copy that is
requesting the children it just stored.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from st2common import statuses
from st2common.exceptions import NotFoundError, StackStormBaseException
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import WorkflowExecutionDB
from st2common.persistence.access import to_object_id
from st2common.runners import registry
from st2common.services import workflows
from st2common.services.workflows import WorkflowService, pending_tasks, plain, still_requested
from st2common.transport.consumer import Handler
from st2workflowengine.actionchain.service import ChainService

LOG = logging.getLogger(__name__)

REQUEST_QUEUE = "workflow.work"
UPDATE_QUEUE = "workflow.action.update"
# Statuses of a workflow's own execution that the workflow must follow.
CONTROL_STATUSES = frozenset({statuses.PAUSING, statuses.RESUMING, statuses.CANCELING, statuses.CANCELED})


# Statuses of an execution update that neither a workflow nor an action chain acts on: such an
# update (its status rides in the message) is dropped without reading the record.
IGNORED_STATUSES = frozenset({statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED})
# What the update handler reads of an execution: what a task's or node's event and a control need,
# without the copies of the action and runner schemas, the parameters and the list of children.
UPDATE_FIELDS = ("id", "status", "runner", "context", "parent", "result", "log", "start_timestamp",
                 "end_timestamp")


def _completed_child(body: dict[str, Any]) -> ExecutionDB | None:
    """The CHILD_FIELDS of a completed child from its update event, when it carries them (small results)."""
    if "result" not in body or body.get("status") not in statuses.COMPLETED:
        return None
    oid = to_object_id(body.get("id"))
    if oid is None:
        return None
    try:
        ended = datetime.datetime.fromisoformat(body["end_timestamp"])
    except (KeyError, TypeError, ValueError):
        return None
    # As a read of those fields builds it: mongoengine's constructor costs ten times more, on every task.
    return ExecutionDB._from_son({"_id": oid, "status": body["status"], "result": body["result"],
                                  "end_timestamp": ended})


def _load(service: WorkflowService, execution_id: Any, only: tuple[str, ...] = ()) -> ExecutionDB | None:
    return service.executions.get_fields(execution_id, only)


def is_workflow(execution: ExecutionDB) -> bool:
    """True for an execution of an Orquesta workflow action."""
    return ((execution.runner or {}).get("name") or (execution.action or {}).get("runner_type")) in (
        workflows.ORQUESTA, *registry.ALIASES)


def outside_workflows(body: dict[str, Any]) -> bool:
    """True for the update of an execution no workflow acts on (as its message says).

    Neither a workflow nor in one; or an Orquesta workflow of its own (no
    parent) in any status but a control: its engine wrote or awaits the
    others, only an action chain's start, or a child resuming, needs a
    running execution read, and controls come as their own statuses.
    """
    if body.get("parent") is not False or "runner" not in body:
        return False
    runner = registry.ALIASES.get(body["runner"], body["runner"])
    return runner not in registry.WORKFLOW_RUNNERS or (
        runner == workflows.ORQUESTA and body.get("status") not in CONTROL_STATUSES)


def resumed(execution: ExecutionDB) -> bool:
    """True when a running execution was paused or pending before (an answered inquiry, a resume)."""
    if execution.status != statuses.RUNNING:
        return False
    return any(entry.get("status") in (statuses.PAUSED, statuses.PENDING) for entry in execution.log or [])


class WorkflowRequestHandler(Handler):
    """workflow.work: start a requested workflow execution."""

    def __init__(self, service: WorkflowService) -> None:
        self.service = service
        self.queue = service.publisher.topology.work_queue(REQUEST_QUEUE)

    def handle(self, body: dict[str, Any]) -> None:
        self.service.start(body.get("id"))

    def give_up(self, body: dict[str, Any], error: BaseException) -> None:
        """A workflow that cannot be started fails, with the error."""
        workflow = self.service.workflows.get(id=body.get("id"))
        if workflow is None or workflow.status != statuses.REQUESTED:
            return
        self.service.fail(workflow.pk, error)


class ExecutionUpdateHandler(Handler):
    """workflow.action.update: children moving their tasks on, and controls of workflow executions."""

    def __init__(self, service: WorkflowService) -> None:
        self.service = service
        self.queue = service.publisher.topology.work_queue(UPDATE_QUEUE)
        # ActionChains move on from the same updates (st2workflowengine.actionchain.service).
        self.chains = ChainService(service.settings, service.publisher)

    def handle(self, body: dict[str, Any]) -> None:
        announced = body.get("status")
        if announced in IGNORED_STATUSES or outside_workflows(body) or (
                announced == statuses.RUNNING and self.service.first_run(body.get("id"))):
            return
        known = self.service.requested_child(body.get("id"), announced) if (
            announced in workflows.CHILD_STATUSES) else None
        if known is not None:
            # A plain child this engine requested: no context to read, no chain or control to follow.
            child = _completed_child(body) or _load(self.service, body.get("id"), workflows.CHILD_FIELDS)
            if child is not None and child.status == announced:
                self.service.child_changed(child, known)
            return
        execution = _load(self.service, body.get("id"), UPDATE_FIELDS)
        if execution is None or (announced is not None and execution.status != announced):
            # Moved on since: the message of the status it has now follows, and acts on it once.
            return
        if execution.status in CONTROL_STATUSES and is_workflow(execution):
            self.service.control(execution)
        if (execution.context or {}).get("orquesta") and (
                execution.status in workflows.CHILD_STATUSES or resumed(execution)):
            self.service.child_changed(execution)
        self.chains.execution_changed(execution)

    def give_up(self, body: dict[str, Any], error: BaseException) -> None:
        """A child update that keeps failing fails its workflow rather than leave it waiting forever."""
        execution = _load(self.service, body.get("id"))
        orquesta = ((execution.context or {}).get("orquesta") or {}) if execution is not None else {}
        workflow_id = orquesta.get("workflow_execution_id")
        if workflow_id:
            try:
                self.service.fail(workflow_id, error)
            except StackStormBaseException as exc:
                LOG.error("workflow execution %s could not be failed: %s", workflow_id, exc)


def handlers(service: WorkflowService) -> list[Handler]:
    """The engine's consumers' handlers."""
    return [WorkflowRequestHandler(service), ExecutionUpdateHandler(service)]


class WorkflowSweep:
    """Catches active workflow executions up with their children (see the module doc)."""

    def __init__(self, service: WorkflowService) -> None:
        self.service = service
        self.chains = ChainService(service.settings, service.publisher)

    def run(self, idle_for: float = 0.0) -> int:
        """Reconcile every active workflow execution unchanged for idle_for seconds; how many."""
        cutoff = utcnow() - datetime.timedelta(seconds=idle_for)
        active = sorted(statuses.WORKFLOW_ACTIVE | {statuses.PAUSED})
        found = self.service.workflows.query({"status__in": active}, raw={"updated_at": {"$lte": cutoff}},
                                             order_by=["updated_at"])
        for workflow in found:
            try:
                self.reconcile(workflow)
            except StackStormBaseException as exc:
                LOG.warning("sweep: workflow execution %s not reconciled: %s", workflow.pk, exc)
        return len(found) + self.chains.sweep(idle_for)

    def reconcile(self, workflow: WorkflowExecutionDB) -> None:
        """Catch one workflow up: missed child updates applied, lost children requested."""
        service = self.service
        if workflow.status == statuses.REQUESTED:
            service.start(workflow.pk)
            return
        children = service.executions.query({"parent": workflow.action_execution},
                                            only=("id", "status", "context", "result", "end_timestamp", "log"))
        records = {str(t.pk): t for t in service.tasks.query({"workflow_execution": str(workflow.pk)})}
        existing: set[tuple[str, int | None]] = set()
        events, seen = [], []
        # In completion order, as the updates would have come: later writers win in the context.
        for child in sorted(children, key=lambda c: (c.end_timestamp is None, c.end_timestamp or 0)):
            orquesta = (child.context or {}).get("orquesta") or {}
            task_id = orquesta.get("task_execution_id")
            if not task_id:
                continue
            existing.add((task_id, orquesta.get("item_id")))
            if child.status not in workflows.CHILD_STATUSES:
                continue
            task = records.get(task_id)
            if task is None:
                # Not stored yet (a task is stored at its first kept status): rebuilt from its pending entry.
                try:
                    task = records[task_id] = service.task(task_id, workflow.pk)
                except NotFoundError:
                    continue
            events.append(service.event(child, task))
            seen.append((task, child))
        self._request_lost(workflow, existing)
        outcome = None
        if events:
            outcome = service.mutate(workflow.pk, lambda _w, conductor: service.apply(conductor, events),
                                     before_write=service.recording(seen))
        if outcome is not None:
            LOG.info("workflow execution %s caught up with %d child updates", workflow.pk, len(events))
        service.advance(outcome)

    def _request_lost(self, workflow: WorkflowExecutionDB, existing: set[tuple[str, int | None]]) -> None:
        """Request the pending children that were never requested."""
        pending = plain(workflow.pending) or []
        if not pending:
            return
        conductor = workflows.conductor_of(workflow, self.service.kv)
        lost = pending_tasks(conductor, [item for item in pending if still_requested(conductor, item)])
        tasks = [task for task, _ in lost]
        task_ids = {(task.seq, task.attempt): task_id for task, task_id in lost if task_id}
        failures = self.service.request_children(workflow, tasks, only_missing=existing, task_ids=task_ids)
        self.service.linger_records(workflow.pk)
        if failures:
            LOG.warning("workflow execution %s: %d lost children could not be requested", workflow.pk, len(failures))
            self.service.advance(self.service.fail_requests(workflow.pk, failures))
