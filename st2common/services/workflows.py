"""Workflow use-cases: start an Orquesta workflow for an execution, move it on as its children
change, control it (pause, resume, cancel, re-run) and recover what a crash left behind.

- request (in the orquesta runner): a workflow execution stored ``requested``, the
  execution pointed at it; ``workflow.status requested`` published.
- start, child_changed, control (in the engine): one compare-and-set of the
  conductor's state (children's events that wait for the same turn share it),
  then ``request_children`` (a child execution per task or item, all of one
  change in one insert through executions.request_many) and the workflow's
  execution brought in line (its status, and {output, errors} at the end).
- pause, resume (in the API; cancel is executions.cancel): the workflow's execution
  moves to pausing or resuming; the engine reads that update and the workflow
  follows (control), passing it on to child workflows (down) and, for a resumed
  subworkflow, to the paused workflow above it (up).

The conductor (st2workflowengine.orquesta) is pure: every change applies to
the conductor a workflow execution stores, asks it for the next tasks and
writes the new state back only if ``revision`` is still the one it started
from (st2common.services.workflow_records, which also keeps the conductor in
memory between changes). So any number of engine copies can handle the
children of one workflow at once, and a redelivered child update is a no-op
(the conductor ignores a status a task already has, and events of an earlier
attempt).

Children are requested after the state that asks for them is stored, and the
same write names them in ``pending``; the engine's sweep (st2workflowengine.handler)
applies children that completed while no engine was listening and requests
pending children that do not exist, so a crash between the two loses nothing
and runs nothing twice. A task execution is stored once, under the id its
pending entry chose, a moment after the write that applies its completion (or
its wait, pending or paused), with those of the workflow's next changes: an
engine that meets a child whose task execution it does not hold rebuilds it
from that entry (recover_task). The children join their workflow's execution's
``children`` list the same way (st2common.services.workflow_records).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

from bson import ObjectId

from st2common import config, masking, statuses
from st2common.exceptions import (NotFoundError, ParameterError, StackStormBaseException, StaleRecordError,
                                  TransitionError, ValidationError)
from st2common.models.api.base import isotime
from st2common.models.db.action import ActionDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.persistence.cache import RecordCache
from st2common.runners import registry
from st2common.services import executions
from st2common.services import trace as trace_service
# plain, kv_lookup, conductor_of, pending_tasks and still_requested are used through this module too.
# pause, resume and resume_paused_parent are used through this module too.
from st2common.services import workflow_control
from st2common.services.workflow_control import pause, resume, resume_paused_parent  # noqa: F401
from st2common.services.workflow_records import (CAS_ATTEMPTS, HeldWorkflow, Outcome, WorkflowRecords,  # noqa: F401
                                                 conductor_of, kv_lookup, pending_tasks, plain, state_fields,
                                                 still_requested)
from st2common.transport.publisher import Publisher
from st2workflowengine.orquesta import NextTask, TaskEvent, WorkflowConductor, WorkflowSpec, inspection

LOG = logging.getLogger(__name__)

WORKFLOW_EXCHANGE = "workflow.status"
ORQUESTA = "orquesta"
# Child statuses the conductor acts on; "running" only when it resumes a paused or pending child.
CHILD_STATUSES = statuses.COMPLETED | {statuses.PENDING, statuses.PAUSED}
_REQUESTED_KEPT = 10000
# What a plain child's completion is read for: its task, and the item, are known to the process that requested it.
CHILD_FIELDS = ("id", "status", "result", "end_timestamp")
# Merged parameter schemas of the actions workflows name, by ref (None: no such action); read-only.
ACTION_SCHEMAS = RecordCache("workflow action schemas", (ActionDB, RunnerTypeDB), executions.LOOKUP_TTL,
                             executions.LOOKUP_WATCHED_TTL)
# The size of a running workflow's result, {}, as executions.limit_result counts it.
_EMPTY_RESULT_SIZE = len("{}")
# Status of a workflow's action execution -> the status the workflow is asked to take.
_CONTROL = {statuses.PAUSING: statuses.PAUSING, statuses.RESUMING: statuses.RESUMING,
            statuses.CANCELING: statuses.CANCELING, statuses.CANCELED: statuses.CANCELING}


def _action_schema(ref: str) -> dict[str, Any] | None:
    action = Access(ActionDB).get(ref=ref)
    if action is None:
        return None
    runner = Access(RunnerTypeDB).get(name=executions.runner_name(action))
    try:
        return registry.merge_parameters(runner.runner_parameters if runner else {}, action.parameters, ref)
    except ParameterError:
        return dict(action.parameters or {})


def action_lookup() -> Callable[[str], dict[str, Any] | None]:
    """inspection's action_lookup: ref -> the action's parameters merged with its runner's, or None.

    Kept in ACTION_SCHEMAS (as the actions requests name are kept in executions.LOOKUPS), so
    a workflow started again and again does not read its tasks' actions every time.
    """
    return lambda ref: ACTION_SCHEMAS.get(ref, lambda: _action_schema(ref))


def inspect(definition: str | dict[str, Any]) -> list[dict[str, Any]]:
    """Every problem of a definition as StackStorm's inspect endpoint lists them ([] when fine)."""
    return inspection.flatten(inspection.inspect(definition, action_lookup()))


def api_url(settings) -> str:
    """The versioned public API URL workflows see as ctx().st2.api_url."""
    if settings is None:
        return "http://127.0.0.1:9101/v1"
    return config.public_api_url(settings)


# -- request (in the action runner) ----------------------------------------------------------

def request(publish: Callable[[str, str, dict], None], execution_id: str, spec: WorkflowSpec,
            input: dict[str, Any], notify_tasks: list[str] | None = None, settings=None,
            execution: ExecutionDB | None = None) -> WorkflowExecutionDB:
    """Store a workflow execution for a running execution and hand it to the engine.

    execution is the record the action runner claimed (read when not given).
    An input the action runner decrypted (its stored parameter is a template that
    decrypts, as a parent workflow's sealed task input is) enters the workflow as
    that template, never as the clear value: a task given it decrypts it again.
    """
    if execution is None or str(execution.pk) != str(execution_id):
        execution = Access(ExecutionDB).get_by_id(execution_id)
    input = {**input, **{name: value for name, value in (execution.parameters or {}).items()
                         if name in input and masking.decrypts(value)}}
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
    # A true insert: a save with an id given in advance costs a replace that finds nothing first.
    Access(WorkflowExecutionDB).insert_many([workflow], reload=False)
    _adopt(execution, context, str(workflow.pk))
    publish(WORKFLOW_EXCHANGE, statuses.REQUESTED, {"id": str(workflow.pk)})
    LOG.info("workflow execution %s requested for execution %s", workflow.pk, execution.pk)
    return workflow


def _adopt(execution: ExecutionDB, context: dict[str, Any], workflow_id: str) -> None:
    """Point the execution at its workflow, and take it off the action runner's books.

    Without a worker id the sweep never abandons it when the action runner that
    started it stops: the workflow engine, not that process, now carries it.
    The runner's result while the workflow runs ({}) is stored by the same
    write: the action runner then records nothing (RunResult.recorded).
    """
    info = {k: v for k, v in dict(execution.runner_info or {}).items() if k != "worker_id"}
    Access(ExecutionDB).set_if(execution.pk, {}, {
        "context": {**context, "workflow_execution": workflow_id}, "runner_info": info,
        "workflow_execution": workflow_id, "result": {}, "result_size": _EMPTY_RESULT_SIZE})


def request_rerun(publish: Callable[[str, str, dict], None], execution_id: str, original_id: str,
                  tasks: list[str] | None, reset: list[str] | None) -> WorkflowExecutionDB:
    """Re-run the workflow of an earlier execution from tasks (default: its failed ones), for execution_id."""
    workflows = Access(WorkflowExecutionDB)
    found = workflows.get(action_execution=original_id)
    if found is None:
        raise NotFoundError("workflow_execution", original_id,
                            f'Unable to find the workflow execution of execution "{original_id}".')
    execution = Access(ExecutionDB).get_by_id(execution_id)
    for _ in range(CAS_ATTEMPTS):
        workflow = workflows.get_by_id(found.pk)
        conductor = conductor_of(workflow)
        conductor.request_rerun(list(tasks or []) or None, list(reset or []))
        fields = state_fields(conductor)
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


def child_trace_context(own: dict[str, Any], execution_id: str) -> dict[str, str] | None:
    """The trace a workflow's children join, named by id (their action triggers then need no lookup).

    The workflow's own trace when its context names it by id (a rule, or a
    parent workflow, started it); for a workflow started on its own, the trace
    its completion starts (``execution-<id>``, made now under the same derived
    id). None when only lookups find it (a trace tag, a parent outside
    Orquesta): the notifier finds it then, as before.
    """
    carried = own.get("trace_context")
    if isinstance(carried, dict) and carried.get("id_"):
        return {"id_": str(carried["id_"]), "trace_tag": carried.get("trace_tag")}
    if carried or own.get("parent"):
        return None
    return trace_service.trace_context(trace_service.start_for_execution(execution_id))


class _Batch:
    """Children's events of one workflow that wait for the same turn: applied in one change and one write."""

    def __init__(self, events: list[TaskEvent], seen: list[tuple[TaskExecutionDB, ExecutionDB]]) -> None:
        self.events = events
        self.seen = seen
        self.done = threading.Event()
        self.error: BaseException | None = None


class WorkflowService(WorkflowRecords):
    """The engine's side: runs workflows forward as their children change."""

    def __init__(self, settings, publisher: Publisher) -> None:
        super().__init__(settings, publisher)
        # Plain (not workflow) children this process requested and has not seen complete, by id:
        # [task execution id, item id, first "running" seen].
        self._requested: OrderedDict[str, list] = OrderedDict()
        # Children's events waiting for their workflow's turn, by workflow execution id (see child_changed).
        self._batches: dict[str, _Batch] = {}

    def advance(self, outcome: Outcome | None) -> None:
        """Act on a stored change: request the next children, then show the new status on the execution."""
        while outcome is not None:
            failures = self.request_children(outcome.workflow, outcome.next_tasks)
            # The records of the tasks this change completed: a little later, with those of the next changes.
            self.linger_records(outcome.workflow.pk)
            self._sync_execution(outcome)
            outcome = self.fail_requests(outcome.workflow.pk, failures) if failures else None

    def recording(self, seen: list[tuple[TaskExecutionDB, ExecutionDB]],
                  defer: bool = False) -> Callable[[WorkflowConductor], None]:
        """mutate's before_write for children's events: their task executions brought in line.

        Before the workflow's write, so a workflow never shows its end before
        its tasks show theirs; with defer, the records are stored by
        flush_records after it (advance lingers them; a write that ends the
        workflow stores them first), their pending entries kept until then.
        """
        return lambda conductor: self.record_tasks(conductor, seen, defer=defer)

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

    def child_changed(self, child: ExecutionDB, known: tuple[str, int | None] | None = None) -> None:
        """A child execution reached a status its task cares about.

        known is (task execution id, item id) of a child this process requested
        (requested_child): then only CHILD_FIELDS of the child need be read.
        Children of one workflow that change while another's change waits for
        its turn join that change: one write for all, and each returns once it
        is stored (or raises what kept it from being stored).
        """
        orquesta = (child.context or {}).get("orquesta") or {}
        task_id, item_id = known if known is not None else (orquesta.get("task_execution_id"), orquesta.get("item_id"))
        task = self._child_task(child, task_id, orquesta.get("workflow_execution_id"))
        if task is None:
            LOG.warning("execution %s names no known task execution", child.pk)
            return
        event = self.event(child, task, item_id)
        key = str(task.workflow_execution)
        batch = self._batches.get(key)
        if batch is not None:
            # Another child of this workflow waits for its turn: this event joins its change (one write for both).
            batch.events.append(event)
            batch.seen.append((task, child))
            batch.done.wait()
            if batch.error is not None:
                raise batch.error
            return
        batch = self._batches[key] = _Batch([event], [(task, child)])
        try:
            self.advance(self._apply_batch(task.workflow_execution, batch))
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            if self._batches.get(key) is batch:
                del self._batches[key]
            batch.done.set()

    def _apply_batch(self, workflow_id: Any, batch: "_Batch") -> Outcome | None:
        """The children's events of a batch applied in one change (closed to new events once its turn comes)."""
        key = str(workflow_id)
        unknown: list[str] = []

        def change(_workflow: HeldWorkflow, conductor: WorkflowConductor) -> bool:
            if self._batches.get(key) is batch:
                del self._batches[key]
            unknown.clear()
            return self.apply(conductor, batch.events, unknown)
        record = self.recording(batch.seen, defer=True)
        outcome = self.mutate(workflow_id, change, monotonic=True, before_write=record)
        if outcome is None and unknown:
            # The conductor held here is behind: another process moved the workflow on (the API
            # answering an inquiry, another engine copy) and requested this task. Read it again.
            outcome = self.mutate(workflow_id, lambda _w, conductor: self.apply(conductor, batch.events),
                                  before_write=record)
        return outcome

    def _child_task(self, child: ExecutionDB, task_id: Any, workflow_id: Any) -> TaskExecutionDB | None:
        """The task execution a child names: held here, else rebuilt from its workflow's pending entry or read."""
        if not task_id:
            return None
        task = self._task_cache.get(str(task_id))
        if task is not None:
            return task
        if workflow_id is None:
            # A child this process requested, whose task execution it no longer holds: its context names the workflow.
            read = self.executions.get_fields(child.pk, ("id", "context"))
            workflow_id = (((read.context if read is not None else None) or {}).get("orquesta") or {}).get(
                "workflow_execution_id")
        try:
            return self.task(task_id, workflow_id)
        except NotFoundError:
            return None

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

    def apply(self, conductor: WorkflowConductor, events: list[TaskEvent], unknown: list[str] | None = None) -> bool:
        """Feed child events to the conductor; True when any changed it.

        With unknown, an event for a task the conductor does not know is noted
        there (the caller may hold a conductor that is behind) instead of logged.
        """
        changed = False
        for event in events:
            try:
                changed = conductor.update_task_state(event) or changed
            except NotFoundError as exc:
                if unknown is not None:
                    unknown.append(event.task_id)
                else:
                    LOG.warning("ignoring the event of task %s (seq %s): %s", event.task_id, event.seq, exc)
            except ValidationError as exc:
                LOG.warning("ignoring the event of task %s (seq %s): %s", event.task_id, event.seq, exc)
        return changed

    def event(self, child: ExecutionDB, task: TaskExecutionDB, item_id: int | None = None) -> TaskEvent:
        """The conductor's event for a child's current status (item_id: the child's context's, unless given)."""
        status = child.status
        done = status in statuses.COMPLETED
        meta = {"task_execution_id": str(task.pk), "workflow_execution_id": task.workflow_execution,
                "start_timestamp": isotime(task.start_timestamp),
                "end_timestamp": isotime(child.end_timestamp) if done else None}
        if item_id is None:
            item_id = ((child.context or {}).get("orquesta") or {}).get("item_id")
        return TaskEvent(task.task_id, task.task_route, status, child.result if done else None, item_id=item_id,
                         meta=meta, seq=task.seq, attempt=task.attempt)

    # -- children ------------------------------------------------------------------------------

    def request_children(self, workflow: HeldWorkflow | WorkflowExecutionDB, next_tasks: list[NextTask],
                         only_missing: set[tuple[str, int | None]] | None = None,
                         task_ids: dict[tuple[int, int], str] | None = None) -> list[tuple[NextTask, Exception]]:
        """One task execution per task attempt (held, not stored), one child execution per task or item; the failures.

        only_missing, when given, holds (task execution id, item id) pairs that
        already have a child: those are skipped; task_ids, the task execution
        ids pending entries chose by (seq, attempt) (both for recovery).
        """
        failures: list[tuple[NextTask, Exception]] = []
        ids = task_ids or {}
        prepared: list[tuple[NextTask, TaskExecutionDB, Any, ExecutionDB]] = []
        for task in next_tasks:
            record = self.task_execution(workflow, task, ids.get((task.seq, task.attempt)))
            for action in task.actions:
                if only_missing is not None and (str(record.pk), action.item_id) in only_missing:
                    continue
                try:
                    prepared.append((task, record, action, self._prepare_child(workflow, task, record, action)))
                except (NotFoundError, ValidationError) as exc:
                    LOG.info("workflow execution %s: task %s cannot be requested: %s", workflow.pk, task.task_id, exc)
                    failures.append((task, exc))
                    # No child will complete it: stored now, as requested.
                    self.store_task(record)
                    break
        if not prepared:
            return failures
        failed = {(task.seq, task.attempt) for task, _ in failures}
        error = None
        # One insert for all of them (branches of a split, items), each announced; listed in their parent's
        # children by the next flush_records (advance lingers it), with the children requested meanwhile.
        outcomes = executions.request_many(self.publisher, [child for *_, child in prepared], parents_held=True,
                                           listed=lambda parent, ids: self.list_children(workflow.pk, parent, ids))
        for (task, record, action, child), outcome in zip(prepared, outcomes):
            if isinstance(outcome, (NotFoundError, ValidationError)):
                if (task.seq, task.attempt) not in failed:
                    failed.add((task.seq, task.attempt))
                    failures.append((task, outcome))
                    self.store_task(record)
                continue
            if isinstance(outcome, Exception):
                # The database or the bus: raised once the others are known, the sweep requests it again.
                error = error or outcome
                continue
            runner = (child.runner or {}).get("name")
            if registry.ALIASES.get(runner, runner) not in registry.WORKFLOW_RUNNERS:
                self._requested[str(child.pk)] = [str(record.pk), action.item_id, False]
        while len(self._requested) > _REQUESTED_KEPT:
            self._requested.popitem(last=False)
        if error is not None:
            raise error
        return failures

    def _prepare_child(self, workflow: HeldWorkflow | WorkflowExecutionDB, task: NextTask, record: TaskExecutionDB,
                       action) -> ExecutionDB:
        """The child execution of one task or item, validated and not stored (executions.prepare)."""
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
        trace = child_trace_context(own, workflow.action_execution)
        trace_tag = None
        if trace is not None:
            child_context["trace_context"] = trace
        else:
            trace_tag = (own.get("trace_context") or {}).get("trace_tag")
        delay = int(round(task.delay * 1000)) if task.delay else None
        return executions.prepare(
            action.action, dict(action.input or {}), context=child_context, delay=delay,
            parent=workflow.action_execution, user=st2.get("user"), parent_user=st2.get("user"), trace_tag=trace_tag,
            notify=dict(notify.get("config") or {}) if task.task_id in (notify.get("tasks") or []) else None)

    def first_run(self, execution_id: Any) -> bool:
        """True (once) for the first ``running`` of a plain child this process requested.

        Nothing acts on that update: only a workflow's or a chain's own start, or a
        child resuming from paused or pending, needs a running child read.
        """
        known = self._requested.get(str(execution_id))
        if known is None or known[2]:
            return False
        known[2] = True
        return True

    def requested_child(self, execution_id: Any, status: str) -> tuple[str, int | None] | None:
        """(task execution id, item id) of a plain child this process requested, or None (read its context).

        Forgotten once the child is seen complete: a redelivered update takes
        the reading path, and finds the event already applied.
        """
        key = str(execution_id)
        known = self._requested.pop(key, None) if status in statuses.COMPLETED else self._requested.get(key)
        return (known[0], known[1]) if known is not None else None

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

    def _list_lost(self, execution: ExecutionDB) -> None:
        """List the children a workflow's execution lacks (an engine stopped before it listed them), in their order."""
        listed = set(execution.children or [])
        try:
            found = self.executions.query({"parent": str(execution.pk)}, only=("id",), order_by=["start_timestamp"])
            lost = [str(child.pk) for child in found if str(child.pk) not in listed]
            if lost:
                LOG.info("execution %s: %d children listed that an engine did not list", execution.pk, len(lost))
                self.executions.add_to_set(execution.pk, "children", lost)
        except StackStormBaseException as exc:
            # The workflow's end matters more than its list: it is written all the same.
            LOG.warning("execution %s: children not checked: %s", execution.pk, exc)

    def _cascade(self, execution: ExecutionDB, wanted: str) -> None:
        """Pass a pause, resume or cancel on to the children that take it."""
        for child in self.executions.query({"parent": str(execution.pk)},
                                           only=("id", "status", "runner", "action", "log", "parent")):
            workflow_control.pass_on(self.publisher, self.executions, child, wanted, str(execution.pk))

    # -- the workflow's action execution -------------------------------------------------------

    def _sync_execution(self, outcome: Outcome) -> None:
        """Show the conductor's status on the workflow's action execution (and its result once done)."""
        status = outcome.conductor.get_workflow_status()
        if status == outcome.old_status and status not in statuses.COMPLETED:
            return
        if outcome.old_status == statuses.REQUESTED and status == statuses.RUNNING:
            # Started: the action runner that requested it left its execution running.
            return
        target = statuses.RUNNING if status == statuses.RESUMING else status
        changes = {"result": outcome.conductor.result()} if status in statuses.COMPLETED else {}
        # A workflow another process had a hand in may have children it requested and never listed.
        check = status in statuses.COMPLETED and not outcome.workflow.sole
        for _ in range(CAS_ATTEMPTS):
            # What a status change reads and rewrites: not the parameters and result it holds (nor the children,
            # unless they are checked).
            execution = self.executions.get_fields(outcome.workflow.action_execution,
                                                   ("id", "status", "log", "parent", "runner")
                                                   + (("children",) if check else ()))
            if execution is None:
                LOG.warning("workflow execution %s: its execution is gone", outcome.workflow.pk)
                return
            if execution.status == target or execution.status in statuses.COMPLETED:
                return
            if check:
                self._list_lost(execution)
                check = False
            via = ()
            if not statuses.is_transition_valid("execution", execution.status, target):
                via = (statuses.RUNNING,)
            try:
                # held: the fields read are all the write and its event need; nothing is read back.
                executions.update_status(self.executions, execution, target, publish_work=False, via=via, held=True,
                                         **changes)
                if status in statuses.COMPLETED:
                    LOG.info("workflow execution %s %s", outcome.workflow.pk, status)
                if target == statuses.RUNNING and execution.parent:
                    resume_paused_parent(self.executions, execution.parent)
                return
            except StaleRecordError:
                continue
            except TransitionError as exc:
                LOG.warning("workflow execution %s: execution %s cannot show %s: %s", outcome.workflow.pk,
                            execution.pk, target, exc)
                return

