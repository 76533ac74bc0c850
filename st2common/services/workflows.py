"""Workflow use-cases: start an Orquesta workflow for an execution, move it on as its children
change, control it (pause, resume, cancel, re-run) and recover what a crash left behind.

- request (in the orquesta runner): a workflow execution stored ``requested``, the
  execution pointed at it; ``workflow.status requested`` published.
- start, child_changed, control (in the engine): one compare-and-set of the
  conductor's state, then ``request_children`` (a task execution per task attempt,
  a child execution per task or item, through executions.request) and the
  workflow's execution brought in line (its status, and {output, errors} at the end).

The conductor (st2workflowengine.orquesta) is pure: every change loads the
workflow execution, rebuilds the conductor from it, applies the change, asks
for the next tasks and writes the new state back only if ``revision`` is
still the one it read; on a conflict it starts over from a fresh read. So
any number of engine copies can handle the children of one workflow at once,
and a redelivered child update is a no-op (the conductor ignores a status a
task already has, and events of an earlier attempt).

Children are requested after the state that asks for them is stored, and the
same write lists them in ``pending``; the engine's sweep (st2workflowengine.handler)
applies children that completed while no engine was listening and requests
pending children that do not exist, so a crash between the two loses nothing
and runs nothing twice.
"""

from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import eventlet
from bson import ObjectId

from st2common import statuses
from st2common.exceptions import (NotFoundError, ParameterError, StackStormBaseException, StaleRecordError,
                                  TransitionError, ValidationError)
from st2common.models.api.base import isotime
from st2common.models.db.action import ActionDB
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.runners import registry
from st2common.services import executions
from st2common.services.keyvalues import Datastore
from st2common.transport.publisher import Publisher
from st2workflowengine.orquesta import (NextTask, TaskEvent, WorkflowConductor, WorkflowSpec,
                                       inspection, parse)

LOG = logging.getLogger(__name__)

WORKFLOW_EXCHANGE = "workflow.status"
ORQUESTA = "orquesta"
_CAS_ATTEMPTS = 100
_TASK_CACHE_SIZE = 10000
# Child statuses the conductor acts on; "running" only when it resumes a paused or pending child.
CHILD_STATUSES = statuses.COMPLETED | {statuses.PENDING, statuses.PAUSED}
_WAITING = (statuses.PENDING, statuses.PAUSED)
_NOT_STARTED = (statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED)
# Status of a workflow's action execution -> the status the workflow is asked to take.
_CONTROL = {statuses.PAUSING: statuses.PAUSING, statuses.RESUMING: statuses.RESUMING,
            statuses.CANCELING: statuses.CANCELING, statuses.CANCELED: statuses.CANCELING}


def plain(value: Any) -> Any:
    """A stored value as plain JSON data the conductor may change freely."""
    return json.loads(json.dumps(value)) if value is not None else None


def action_lookup() -> Callable[[str], dict[str, Any] | None]:
    """inspection's action_lookup: ref -> the action's parameters merged with its runner's, or None."""
    cache: dict[str, dict[str, Any] | None] = {}

    def lookup(ref: str) -> dict[str, Any] | None:
        if ref not in cache:
            action = Access(ActionDB).get(ref=ref)
            if action is None:
                cache[ref] = None
            else:
                runner = Access(RunnerTypeDB).get(name=executions.runner_name(action))
                try:
                    cache[ref] = registry.merge_parameters(runner.runner_parameters if runner else {},
                                                           action.parameters, ref)
                except ParameterError:
                    cache[ref] = dict(action.parameters or {})
        return cache[ref]
    return lookup


def inspect(definition: str | dict[str, Any]) -> list[dict[str, Any]]:
    """Every problem of a definition as StackStorm's inspect endpoint lists them ([] when fine)."""
    return inspection.flatten(inspection.inspect(definition, action_lookup()))


def kv_lookup(settings) -> Callable[[str, str, str | None, bool], Any]:
    """st2kv's datastore reader for expressions (NotFoundError for a missing key)."""
    store = Datastore(settings)

    def lookup(name: str, scope: str, user: str | None, decrypt: bool) -> Any:
        return store.get(name, scope, user=user, decrypt=decrypt, requester=user)["value"]
    return lookup


def api_url(settings) -> str:
    """The versioned public API URL workflows see as ctx().st2.api_url."""
    if settings is None:
        return "http://127.0.0.1:9101/v1"
    base = settings.auth.api_url or f"http://{settings.api.host}:{settings.api.port}"
    return f"{base.rstrip('/')}/v1"


# -- request (in the action runner) ----------------------------------------------------------

def request(publish: Callable[[str, str, dict], None], execution_id: str, spec: WorkflowSpec,
            input: dict[str, Any], notify_tasks: list[str] | None = None, settings=None) -> WorkflowExecutionDB:
    """Store a workflow execution for a running execution and hand it to the engine."""
    execution = Access(ExecutionDB).get_by_id(execution_id)
    context = dict(execution.context or {})
    workflow_id = ObjectId()
    st2 = {
        "action_execution_id": str(execution.pk), "api_url": api_url(settings),
        "user": context.get("user") or executions.SYSTEM_USER, "pack": context.get("pack"),
        "action": execution.action_ref, "runner": (execution.runner or {}).get("name", ORQUESTA),
        "workflow_execution_id": str(workflow_id),
    }
    for key in ("api_user", "source_channel"):
        if context.get(key):
            st2[key] = context[key]
    workflow = WorkflowExecutionDB(
        id=workflow_id, action_execution=str(execution.pk), spec=spec.definition, input=dict(input),
        context={"st2": st2, "parent": context},
        notify={"tasks": list(notify_tasks or []), "config": dict(execution.notify or {})})
    Access(WorkflowExecutionDB).add_or_update(workflow, publish=False)
    _adopt(execution, context, str(workflow.pk))
    publish(WORKFLOW_EXCHANGE, statuses.REQUESTED, {"id": str(workflow.pk)})
    LOG.info("workflow execution %s requested for execution %s", workflow.pk, execution.pk)
    return workflow


def _adopt(execution: ExecutionDB, context: dict[str, Any], workflow_id: str) -> None:
    """Point the execution at its workflow, and take it off the action runner's books.

    Without a worker id the sweep never abandons it when the action runner that
    started it stops: the workflow engine, not that process, now carries it.
    """
    info = {k: v for k, v in dict(execution.runner_info or {}).items() if k != "worker_id"}
    Access(ExecutionDB).update_if(execution.pk, {}, {
        "context": {**context, "workflow_execution": workflow_id}, "runner_info": info,
        "workflow_execution": workflow_id}, publish=False)


def request_rerun(publish: Callable[[str, str, dict], None], execution_id: str, original_id: str,
                  tasks: list[str] | None, reset: list[str] | None) -> WorkflowExecutionDB:
    """Re-run the workflow of an earlier execution from tasks (default: its failed ones), for execution_id."""
    workflows = Access(WorkflowExecutionDB)
    found = workflows.get(action_execution=original_id)
    if found is None:
        raise NotFoundError("workflow_execution", original_id,
                            f'Unable to find the workflow execution of execution "{original_id}".')
    execution = Access(ExecutionDB).get_by_id(execution_id)
    for _ in range(_CAS_ATTEMPTS):
        workflow = workflows.get_by_id(found.pk)
        conductor = conductor_of(workflow)
        conductor.request_rerun(list(tasks or []) or None, list(reset or []))
        fields = _state_fields(conductor)
        context = plain(workflow.context) or {}
        context.setdefault("st2", {})["action_execution_id"] = execution_id
        fields.update(status=statuses.REQUESTED, action_execution=execution_id, context=context,
                      end_timestamp=None, pending=None)
        if workflows.update_if(workflow.pk, {"revision": workflow.revision}, fields, publish=False) is not None:
            _adopt(execution, dict(execution.context or {}), str(workflow.pk))
            publish(WORKFLOW_EXCHANGE, statuses.REQUESTED, {"id": str(workflow.pk)})
            LOG.info("workflow execution %s re-run for execution %s", workflow.pk, execution_id)
            return workflows.get_by_id(workflow.pk)
    raise StaleRecordError(f"workflow execution {found.pk} kept changing while being re-run")


# -- the conductor in and out of the record ----------------------------------------------------

def conductor_of(workflow: WorkflowExecutionDB, kv: Callable[..., Any] | None = None) -> WorkflowConductor:
    """The conductor a workflow execution stores (kv is the st2kv reader)."""
    return WorkflowConductor(parse(plain(workflow.spec)), plain(workflow.input), plain(workflow.context),
                             state=plain(workflow.state) or None, errors=plain(workflow.errors),
                             output=plain(workflow.output), kv_lookup=kv)


def _state_fields(conductor: WorkflowConductor) -> dict[str, Any]:
    status = conductor.get_workflow_status()
    fields = {"state": conductor.state.to_dict(), "status": status, "errors": conductor.errors or None,
              "output": conductor.get_workflow_output(), "input": conductor.input, "updated_at": utcnow()}
    if status in statuses.COMPLETED:
        fields.update(end_timestamp=fields["updated_at"], pending=None)
    return fields


def _descriptor(task: NextTask, action) -> dict[str, Any]:
    return {"task_id": task.task_id, "route": task.route, "seq": task.seq, "attempt": task.attempt,
            "action": action.action, "input": action.input, "item_id": action.item_id,
            "delay": task.delay, "items_count": task.items_count, "concurrency": task.concurrency}


def still_requested(conductor: WorkflowConductor, pending: dict[str, Any]) -> bool:
    """True while the conductor still waits for a pending child to be requested or to start."""
    sequence = conductor.state.sequence
    if not 0 <= pending["seq"] < len(sequence):
        return False
    entry = sequence[pending["seq"]]
    if entry["attempt"] != pending["attempt"]:
        return False
    if pending["item_id"] is None:
        return entry["status"] in _NOT_STARTED
    items = entry.get("items") or []
    item = items[pending["item_id"]] if pending["item_id"] < len(items) else None
    return bool(item) and item["status"] in _NOT_STARTED


@dataclass
class Outcome:
    """What one stored change of a workflow execution led to."""

    workflow: WorkflowExecutionDB
    conductor: WorkflowConductor
    old_status: str
    next_tasks: list[NextTask] = field(default_factory=list)


class WorkflowService:
    """The engine's side: runs workflows forward as their children change."""

    def __init__(self, settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.workflows: Access[WorkflowExecutionDB] = Access(WorkflowExecutionDB, publisher)
        self.tasks: Access[TaskExecutionDB] = Access(TaskExecutionDB)
        self.executions: Access[ExecutionDB] = executions.access(publisher)
        self.kv = kv_lookup(settings)
        # Task executions this process stored or read: the fields events need never change, so
        # a child's completion finds its task without a read.
        self._task_cache: OrderedDict[str, TaskExecutionDB] = OrderedDict()

    # -- the one way state changes ------------------------------------------------------------

    def mutate(self, workflow_id: Any, change: Callable[[WorkflowExecutionDB, WorkflowConductor], bool]
               ) -> Outcome | None:
        """Apply change (True when it changed something) under a compare-and-set; None if nothing changed."""
        for attempt in range(_CAS_ATTEMPTS):
            workflow = self.workflows.get_by_id(workflow_id)
            conductor = conductor_of(workflow, self.kv)
            old_status = workflow.status
            if not change(workflow, conductor):
                return None
            next_tasks = conductor.get_next_tasks()
            fields = _state_fields(conductor)
            if fields["status"] not in statuses.COMPLETED:
                carried = [p for p in (plain(workflow.pending) or []) if still_requested(conductor, p)]
                fields["pending"] = carried + [_descriptor(t, a) for t in next_tasks for a in t.actions] or None
            updated = self.workflows.update_if(workflow.pk, {"revision": workflow.revision}, fields, publish=False)
            if updated is not None:
                return Outcome(updated, conductor, old_status, next_tasks)
            # Another engine copy wrote first: start over from what it stored.
            eventlet.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StaleRecordError(f"workflow execution {workflow_id} kept changing under this engine")

    def advance(self, outcome: Outcome | None) -> None:
        """Act on a stored change: request the next children, then show the new status on the execution."""
        while outcome is not None:
            failures = self.request_children(outcome.workflow, outcome.next_tasks)
            self._sync_execution(outcome)
            outcome = self.fail_requests(outcome.workflow.pk, failures) if failures else None

    # -- engine entry points -----------------------------------------------------------------

    def start(self, workflow_id: Any) -> None:
        """A requested workflow execution (new, or re-run) starts: its first tasks are requested."""
        def change(workflow: WorkflowExecutionDB, conductor: WorkflowConductor) -> bool:
            if workflow.status != statuses.REQUESTED:
                return False
            if conductor.get_workflow_status() == statuses.UNSET:
                conductor.request_workflow_status(statuses.RUNNING)
            return True
        try:
            outcome = self.mutate(workflow_id, change)
        except NotFoundError:
            LOG.warning("no workflow execution %s to start", workflow_id)
            return
        if outcome is not None:
            LOG.info("workflow execution %s started (%s)", workflow_id, outcome.conductor.get_workflow_status())
        self.advance(outcome)

    def child_changed(self, child: ExecutionDB) -> None:
        """A child execution reached a status its task cares about."""
        orquesta = (child.context or {}).get("orquesta") or {}
        try:
            task = self.task(orquesta.get("task_execution_id"))
        except NotFoundError:
            LOG.warning("execution %s names no known task execution", child.pk)
            return
        event = self.event(child, task)
        outcome = self.mutate(task.workflow_execution, lambda _w, conductor: self.apply(conductor, [event]))
        # The next children first: the task record is history, not on the critical path.
        self.advance(outcome)
        if outcome is not None:
            self.record_task(outcome.conductor, task, child)

    def control(self, execution: ExecutionDB) -> None:
        """The workflow's own execution was asked to pause, resume or cancel: the workflow follows."""
        wanted = _CONTROL.get(execution.status)
        workflow = self.workflows.get(action_execution=str(execution.pk))
        if wanted is None or workflow is None:
            return

        def change(_workflow: WorkflowExecutionDB, conductor: WorkflowConductor) -> bool:
            before = conductor.get_workflow_status()
            try:
                if before == statuses.UNSET:
                    # Not started yet: start it, so it can pause or cancel before any task runs.
                    conductor.request_workflow_status(statuses.RUNNING)
                conductor.request_workflow_status(wanted)
            except TransitionError as exc:
                LOG.info("workflow execution %s: %s", workflow.pk, exc)
                return False
            return conductor.get_workflow_status() != before
        outcome = self.mutate(workflow.pk, change)
        if outcome is not None:
            LOG.info("workflow execution %s: %s -> %s", workflow.pk, outcome.old_status,
                     outcome.conductor.get_workflow_status())
            self._cascade(execution, wanted)
        self.advance(outcome)

    def fail(self, workflow_id: Any, error: BaseException) -> None:
        """Fail a workflow the engine cannot move on (the error is recorded); running children finish."""
        def change(_workflow: WorkflowExecutionDB, conductor: WorkflowConductor) -> bool:
            if conductor.get_workflow_status() in statuses.COMPLETED:
                return False
            if conductor.get_workflow_status() == statuses.UNSET:
                conductor.request_workflow_status(statuses.RUNNING)
            conductor.errors.append({"type": "error", "message": f"{type(error).__name__}: {error}"})
            conductor.request_workflow_status(statuses.FAILED)
            return True
        self.advance(self.mutate(workflow_id, change))

    def apply(self, conductor: WorkflowConductor, events: list[TaskEvent]) -> bool:
        """Feed child events to the conductor; True when any changed it."""
        changed = False
        for event in events:
            try:
                changed = conductor.update_task_state(event) or changed
            except (NotFoundError, ValidationError) as exc:
                LOG.warning("ignoring the event of task %s (seq %s): %s", event.task_id, event.seq, exc)
        return changed

    def event(self, child: ExecutionDB, task: TaskExecutionDB) -> TaskEvent:
        """The conductor's event for a child's current status."""
        status = child.status
        done = status in statuses.COMPLETED
        meta = {"task_execution_id": str(task.pk), "workflow_execution_id": task.workflow_execution,
                "start_timestamp": isotime(task.start_timestamp),
                "end_timestamp": isotime(child.end_timestamp) if done else None}
        item_id = ((child.context or {}).get("orquesta") or {}).get("item_id")
        return TaskEvent(task.task_id, task.task_route, status, child.result if done else None, item_id=item_id,
                         meta=meta, seq=task.seq, attempt=task.attempt)

    def record_task(self, conductor: WorkflowConductor, task: TaskExecutionDB, child: ExecutionDB) -> None:
        """Bring the task execution's status and result in line with the conductor's entry."""
        sequence = conductor.state.sequence
        entry = sequence[task.seq] if task.seq < len(sequence) else None
        if entry is None:
            return
        if entry["attempt"] != task.attempt:
            # That attempt is over (the task is being retried): it ended as its child did.
            status, result = child.status, child.result
        else:
            status, result = entry["status"], entry.get("result")
        if status == task.status or status not in statuses.COMPLETED | set(_WAITING):
            return
        changes: dict[str, Any] = {"status": status}
        if status in statuses.COMPLETED:
            changes.update(result=result, end_timestamp=child.end_timestamp or utcnow())
        self.tasks.update_if(task.pk, {}, changes, publish=False)
        task.status = status

    # -- children ------------------------------------------------------------------------------

    def request_children(self, workflow: WorkflowExecutionDB, next_tasks: list[NextTask],
                         only_missing: set[tuple[str, int | None]] | None = None) -> list[tuple[NextTask, Exception]]:
        """One task execution per task attempt, one child execution per task or item; the failures.

        only_missing, when given, holds (task execution id, item id) pairs that
        already have a child: those are skipped (recovery).
        """
        failures = []
        for task in next_tasks:
            record = self._task_execution(workflow, task)
            for action in task.actions:
                if only_missing is not None and (str(record.pk), action.item_id) in only_missing:
                    continue
                try:
                    self._request_child(workflow, task, record, action)
                except (NotFoundError, ValidationError) as exc:
                    LOG.info("workflow execution %s: task %s cannot be requested: %s", workflow.pk, task.task_id, exc)
                    failures.append((task, exc))
                    break
        return failures

    def _task_execution(self, workflow: WorkflowExecutionDB, task: NextTask) -> TaskExecutionDB:
        key = TaskExecutionDB.make_key(str(workflow.pk), task.seq, task.attempt)
        if task.items_count is not None:
            # Later items of a with-items task find their record stored already.
            existing = self.tasks.get(key=key)
            if existing is not None:
                return existing
        spec_tasks = (workflow.spec or {}).get("tasks") or {}
        record = TaskExecutionDB(
            key=key, workflow_execution=str(workflow.pk), task_name=task.task_id, task_id=task.task_id,
            task_route=task.route, seq=task.seq, attempt=task.attempt, task_spec=spec_tasks.get(task.task_id) or {},
            delay=task.delay, itemized=task.items_count is not None, items_count=task.items_count,
            items_concurrency=task.concurrency, context=task.context, status=statuses.REQUESTED)
        try:
            return self._remember(self.tasks.add_or_update(record, publish=False))
        except StackStormBaseException as exc:
            found = self.tasks.get(key=key)
            if found is None:
                raise
            LOG.debug("task execution %s already stored: %s", key, exc)
            return found

    def task(self, task_id: Any) -> TaskExecutionDB:
        """A task execution by id (from this process's cache when it has it)."""
        task = self._task_cache.get(str(task_id))
        if task is None:
            task = self._remember(self.tasks.get_by_id(task_id))
        return task

    def _remember(self, task: TaskExecutionDB) -> TaskExecutionDB:
        self._task_cache[str(task.pk)] = task
        while len(self._task_cache) > _TASK_CACHE_SIZE:
            self._task_cache.popitem(last=False)
        return task

    def _request_child(self, workflow: WorkflowExecutionDB, task: NextTask, record: TaskExecutionDB,
                       action) -> ExecutionDB:
        context = workflow.context or {}
        st2 = context.get("st2") or {}
        own = context.get("parent") or {}
        parent = {"execution_id": workflow.action_execution, "user": st2.get("user"), "pack": st2.get("pack")}
        for key in ("api_user", "source_channel", "parent"):
            if own.get(key):
                parent[key] = own[key]
        orquesta = {"workflow_execution_id": str(workflow.pk), "task_execution_id": str(record.pk),
                    "task_name": task.task_id, "task_id": task.task_id, "task_route": task.route}
        if action.item_id is not None:
            orquesta["item_id"] = action.item_id
        child_context = {"pack": st2.get("pack"), "user": st2.get("user"), "parent": parent, "orquesta": orquesta}
        notify = workflow.notify or {}
        trace_tag = (own.get("trace_context") or {}).get("trace_tag")
        delay = int(round(task.delay * 1000)) if task.delay else None
        return executions.request(
            self.publisher, action.action, dict(action.input or {}), context=child_context, delay=delay,
            parent=workflow.action_execution, user=st2.get("user"), trace_tag=trace_tag,
            notify=dict(notify.get("config") or {}) if task.task_id in (notify.get("tasks") or []) else None)

    def fail_requests(self, workflow_id: Any, failures: list[tuple[NextTask, Exception]]) -> Outcome | None:
        """Children that could not be requested fail their task, and the workflow with them."""
        def change(_workflow: WorkflowExecutionDB, conductor: WorkflowConductor) -> bool:
            for task, exc in failures:
                conductor.errors.append({"type": "error", "message": f"{type(exc).__name__}: {exc}",
                                         "task_id": task.task_id, "route": task.route})
                conductor.fail_fast()
                conductor.update_task_state(TaskEvent(task.task_id, task.route, statuses.FAILED,
                                                      {"errors": [str(exc)]}, seq=task.seq, attempt=task.attempt))
            return True
        return self.mutate(workflow_id, change)

    def _cascade(self, execution: ExecutionDB, wanted: str) -> None:
        """Pass a pause, resume or cancel on to the children that take it."""
        for child in self.executions.query({"parent": str(execution.pk)},
                                           only=("id", "status", "runner", "action", "log", "parent")):
            is_workflow = ((child.runner or {}).get("name") or "") in registry.WORKFLOW_RUNNERS
            try:
                if wanted == statuses.CANCELING and child.status in statuses.CANCELABLE and (
                        is_workflow or child.status in _NOT_STARTED):
                    executions.cancel(self.publisher, str(child.pk))
                elif wanted == statuses.PAUSING and is_workflow and child.status == statuses.RUNNING:
                    executions.update_status(self.executions, child, statuses.PAUSING)
                elif wanted == statuses.RESUMING and is_workflow and child.status == statuses.PAUSED:
                    executions.update_status(self.executions, child, statuses.RESUMING)
            except (StaleRecordError, TransitionError) as exc:
                LOG.info("child %s of %s not moved to %s: %s", child.pk, execution.pk, wanted, exc)

    # -- the workflow's action execution -------------------------------------------------------

    def _sync_execution(self, outcome: Outcome) -> None:
        """Show the conductor's status on the workflow's action execution (and its result once done)."""
        status = outcome.conductor.get_workflow_status()
        if status == outcome.old_status and status not in statuses.COMPLETED:
            return
        target = statuses.RUNNING if status == statuses.RESUMING else status
        changes = {"result": outcome.conductor.result()} if status in statuses.COMPLETED else {}
        for _ in range(_CAS_ATTEMPTS):
            try:
                execution = self.executions.get_by_id(outcome.workflow.action_execution)
            except NotFoundError:
                LOG.warning("workflow execution %s: its execution is gone", outcome.workflow.pk)
                return
            if execution.status == target or execution.status in statuses.COMPLETED:
                return
            via = ()
            if not statuses.is_transition_valid("execution", execution.status, target):
                via = (statuses.RUNNING,)
            try:
                executions.update_status(self.executions, execution, target, publish_work=False, via=via, **changes)
                if status in statuses.COMPLETED:
                    LOG.info("workflow execution %s %s", outcome.workflow.pk, status)
                if target == statuses.RUNNING and execution.parent:
                    self._resume_parent(execution.parent)
                return
            except StaleRecordError:
                continue
            except TransitionError as exc:
                LOG.warning("workflow execution %s: execution %s cannot show %s: %s", outcome.workflow.pk,
                            execution.pk, target, exc)
                return

    def _resume_parent(self, parent_id: str) -> None:
        """A resumed subworkflow resumes the paused workflow above it."""
        try:
            parent = self.executions.get_by_id(parent_id)
            if parent.status == statuses.PAUSED:
                executions.update_status(self.executions, parent, statuses.RESUMING)
        except (NotFoundError, StaleRecordError, TransitionError) as exc:
            LOG.debug("parent %s not resumed: %s", parent_id, exc)
