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
a plain child this engine requested), or an execution with no parent that is no
workflow (its message names both), is dropped unread;
the others cost one read of the few fields events need, and are dropped when the
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
from st2common.exceptions import StackStormBaseException
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import WorkflowExecutionDB
from st2common.persistence.access import to_object_id
from st2common.runners import registry
from st2common.services import workflows
from st2common.services.workflows import WorkflowService, plain, still_requested
from st2common.transport.consumer import Handler
from st2workflowengine.actionchain.service import ChainService
from st2workflowengine.orquesta import ActionRequest, NextTask

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


def _load(service: WorkflowService, execution_id: Any, only: tuple[str, ...] = ()) -> ExecutionDB | None:
    oid = to_object_id(execution_id)
    found = service.executions.query(raw={"_id": oid}, only=only, limit=1) if oid is not None else []
    return found[0] if found else None


def is_workflow(execution: ExecutionDB) -> bool:
    """True for an execution of an Orquesta workflow action."""
    return ((execution.runner or {}).get("name") or (execution.action or {}).get("runner_type")) in (
        workflows.ORQUESTA, *registry.ALIASES)


def outside_workflows(body: dict[str, Any]) -> bool:
    """True for the update of an execution that is neither a workflow nor in one (as its message says)."""
    if body.get("parent") is not False or "runner" not in body:
        return False
    runner = body["runner"]
    return registry.ALIASES.get(runner, runner) not in registry.WORKFLOW_RUNNERS


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
            task = records.get(orquesta.get("task_execution_id"))
            if task is None:
                continue
            existing.add((str(task.pk), orquesta.get("item_id")))
            if child.status in workflows.CHILD_STATUSES:
                events.append(service.event(child, task))
                seen.append((task, child))
        self._request_lost(workflow, existing)
        outcome = None
        if events:
            outcome = service.mutate(workflow.pk, lambda _w, conductor: service.apply(conductor, events))
        if outcome is not None:
            LOG.info("workflow execution %s caught up with %d child updates", workflow.pk, len(events))
        service.settle(outcome, seen)

    def _request_lost(self, workflow: WorkflowExecutionDB, existing: set[tuple[str, int | None]]) -> None:
        """Request the pending children that were never requested."""
        pending = plain(workflow.pending) or []
        if not pending:
            return
        conductor = workflows.conductor_of(workflow, self.service.kv)
        lost: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for item in pending:
            if still_requested(conductor, item):
                lost.setdefault((item["seq"], item["attempt"]), []).append(item)
        tasks = [NextTask(items[0]["task_id"], items[0]["route"], seq, attempt,
                          conductor.graph.task(items[0]["task_id"]),
                          tuple(ActionRequest(i["action"], i["input"], i["item_id"]) for i in items),
                          items[0]["delay"], items[0]["items_count"], items[0]["concurrency"], {})
                 for (seq, attempt), items in lost.items()]
        failures = self.service.request_children(workflow, tasks, only_missing=existing)
        if failures:
            LOG.warning("workflow execution %s: %d lost children could not be requested", workflow.pk, len(failures))
            self.service.advance(self.service.fail_requests(workflow.pk, failures))
