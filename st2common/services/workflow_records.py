"""Workflow and task execution records as the workflow engine keeps them: the conductor in and out
of its record, one conditional write per change, and what a process keeps in memory between changes.

| kept in memory (per engine process)      | why it stays right                                         |
| ---------------------------------------- | ---------------------------------------------------------- |
| the workflow execution this process      | the next change writes on its ``revision``: if another     |
| wrote last, with its conductor           | engine copy wrote since, the write misses and the change   |
|                                          | starts over from a fresh read                              |
| parsed specs                             | a workflow execution's spec never changes                  |
| task executions, by id and by key        | the fields events read (workflow, task, seq, attempt)      |
|                                          | never change                                               |

A task execution is planned (its id chosen) with the write that asks for its
first child, named in that write's ``pending`` entries, and stored once that
child is requested: it is history, so the child does not wait for it. An
engine that meets a child whose task execution is not stored (its engine
stopped in between, or is still storing it) stores it from the pending entry
naming its id (``recover_task``), so nothing is requested twice or lost.

Changes of one workflow in one process take turns (a lock per workflow), so
children completing together (with-items, branches) queue up rather than
miss each other's writes; copies of the engine in other processes are kept
apart by the compare-and-set alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import eventlet
from bson import ObjectId

from st2common import statuses
from st2common.exceptions import ConflictError, NotFoundError, StackStormBaseException, StaleRecordError
from st2common.expressions import secrets
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services.keyvalues import Datastore
from st2common.transport.publisher import Publisher
from st2workflowengine.orquesta import ActionRequest, NextTask, WorkflowConductor, WorkflowSpec, parse

LOG = logging.getLogger(__name__)

CAS_ATTEMPTS = 100
_TASK_CACHE_SIZE = 10000
# How long a task's finish waits for the store of its planned record (by this process) to complete.
_STORE_WAIT = 10.0
# Task executions are kept by id, and under this prefix by key.
_KEY = "key:"
_HELD_WORKFLOWS = 1000
_WAITING = (statuses.PENDING, statuses.PAUSED)
_NOT_STARTED = (statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED)


def plain(value: Any) -> Any:
    """A stored value as plain JSON data the conductor may change freely."""
    return json.loads(json.dumps(value)) if value is not None else None


def kv_lookup(settings) -> Callable[[str, str, str | None, bool], Any]:
    """st2kv's datastore reader for expressions (NotFoundError for a missing key)."""
    store = Datastore(settings)

    def lookup(name: str, scope: str, user: str | None, decrypt: bool) -> Any:
        return store.get(name, scope, user=user, decrypt=decrypt, requester=user)["value"]
    return lookup


def conductor_of(workflow: WorkflowExecutionDB, kv: Callable[..., Any] | None = None) -> WorkflowConductor:
    """The conductor a workflow execution stores (kv is the st2kv reader)."""
    return WorkflowConductor(parse(plain(workflow.spec)), plain(workflow.input), plain(workflow.context),
                             state=plain(workflow.state) or None, errors=plain(workflow.errors),
                             output=plain(workflow.output), kv_lookup=kv)


def state_fields(conductor: WorkflowConductor) -> dict[str, Any]:
    """The fields of a workflow execution that hold the conductor's state, as a write sets them."""
    status = conductor.get_workflow_status()
    fields = {"state": conductor.state.to_dict(), "status": status, "errors": conductor.errors or None,
              "output": conductor.get_workflow_output(), "input": conductor.input, "updated_at": utcnow()}
    if status in statuses.COMPLETED:
        fields.update(end_timestamp=fields["updated_at"], pending=None)
    # Secrets decrypted by expressions are written sealed or masked; the conductor in memory keeps them.
    return secrets.stored(fields, (conductor.context.get("st2") or {}).get("user"))


@dataclass(frozen=True)
class HeldWorkflow:
    """What a change reads of its workflow execution besides the conductor's state (plain data).

    The engine holds it between changes instead of the stored document: an
    outcome keeps its own, and the next write makes a new one from the written
    values (copying the document, a mongoengine conversion of the whole
    record, cost more than the rest of a change).
    """

    pk: ObjectId
    action_execution: str
    status: str
    revision: int
    pending: list[dict[str, Any]] | None
    spec: dict[str, Any]
    context: dict[str, Any]
    notify: dict[str, Any]

    @classmethod
    def of(cls, workflow: WorkflowExecutionDB) -> "HeldWorkflow":
        """The held record of a stored workflow execution."""
        return cls(workflow.pk, workflow.action_execution, workflow.status, workflow.revision or 0,
                   plain(workflow.pending), plain(workflow.spec) or {}, plain(workflow.context) or {},
                   plain(workflow.notify) or {})

    def written(self, fields: dict[str, Any]) -> "HeldWorkflow":
        """This record as a set_if of fields (state_fields, plus pending) stored it."""
        return dataclasses.replace(self, status=fields["status"], pending=fields.get("pending"),
                                   revision=self.revision + 1)


def _descriptor(task: NextTask, action, task_execution_id: str) -> dict[str, Any]:
    return {"task_id": task.task_id, "route": task.route, "seq": task.seq, "attempt": task.attempt,
            "action": action.action, "input": action.input, "item_id": action.item_id,
            "delay": task.delay, "items_count": task.items_count, "concurrency": task.concurrency,
            "task_execution_id": task_execution_id}


def pending_tasks(conductor: WorkflowConductor, pending: list[dict[str, Any]]) -> list[tuple[NextTask, str | None]]:
    """The tasks pending entries describe (items of one task attempt together), with their task execution ids."""
    grouped: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for item in pending:
        grouped.setdefault((item["seq"], item["attempt"]), []).append(item)
    sequence = conductor.state.sequence
    tasks = []
    for (seq, attempt), items in grouped.items():
        first = items[0]
        # The variables the task was dispatched with (recorded in its task execution).
        variables = conductor.state.context(sequence[seq]["ctxs"]["in"]) if 0 <= seq < len(sequence) else {}
        tasks.append((NextTask(first["task_id"], first["route"], seq, attempt, conductor.graph.task(first["task_id"]),
                               tuple(ActionRequest(i["action"], i["input"], i["item_id"]) for i in items),
                               first["delay"], first["items_count"], first["concurrency"], variables),
                      first.get("task_execution_id")))
    return tasks


class _Storing:
    """A planned task execution until it is stored: one storer at a time, and a signal once stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored = threading.Event()


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

    workflow: HeldWorkflow
    # The conductor held for the workflow: a later change in this process moves it on, so readers
    # after the change may see a newer state (never an older one).
    conductor: WorkflowConductor
    old_status: str
    next_tasks: list[NextTask] = field(default_factory=list)


class WorkflowRecords:
    """The workflow and task execution records of one engine process, and the one way they change."""

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
        # Planned task executions (in the cache) not stored yet, by id.
        self._storing: OrderedDict[str, _Storing] = OrderedDict()
        # Workflow executions this process wrote last, with their conductor, and parsed specs (see mutate).
        self._held: OrderedDict[str, tuple[HeldWorkflow, WorkflowConductor]] = OrderedDict()
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
        self._turns: dict[str, list] = {}

    def mutate(self, workflow_id: Any, change: Callable[[HeldWorkflow, WorkflowConductor], bool],
               monotonic: bool = False) -> Outcome | None:
        """Apply change (True when it changed something) under a compare-and-set; None if nothing changed.

        One conditional write per change: the conductor this process wrote last
        is held in memory, so the next change of that workflow starts from it
        without a read; when another engine copy wrote since, the write misses
        and the change starts over from a fresh read. A change that finds
        nothing to do on a held conductor is checked again on a fresh read, as
        the held one may be behind, unless the change is monotonic (a child's
        event: what an earlier state already knows, a later one knows too).
        Changes of one workflow in this process take turns, so they never miss
        each other's writes.
        """
        key = str(workflow_id)
        with self._turn(key):
            for attempt in range(CAS_ATTEMPTS):
                held = self._held.pop(key, None)
                workflow, conductor = held if held is not None else self._load(workflow_id)
                old_status = workflow.status
                if not change(workflow, conductor):
                    if held is None or monotonic:
                        if held is not None:
                            self._hold(key, workflow, conductor)
                        return None
                    continue
                next_tasks = conductor.get_next_tasks()
                planned = [self._plan_task(workflow, task) for task in next_tasks]
                fields = state_fields(conductor)
                if fields["status"] not in statuses.COMPLETED:
                    carried = [p for p in workflow.pending or [] if still_requested(conductor, p)]
                    fields["pending"] = carried + [_descriptor(t, a, str(record.pk)) for t, record in
                                                   zip(next_tasks, planned) for a in t.actions] or None
                # The write's own copy back would cost a conversion of the whole record: the held
                # one takes the written values instead (the same values a read would give).
                if self.workflows.set_if(workflow.pk, {"revision": workflow.revision}, fields):
                    for record in planned:
                        if record._created and str(record.pk) not in self._task_cache:
                            # Stored by request_children once its first child is requested (store_task).
                            self._storing[str(record.pk)] = _Storing()
                            while len(self._storing) > _TASK_CACHE_SIZE:
                                self._storing.popitem(last=False)
                        self._remember(record)
                    updated = workflow.written(fields)
                    self._hold(key, updated, conductor)
                    return Outcome(updated, conductor, old_status, next_tasks)
                if held is None:
                    # Another engine copy wrote first: start over from what it stored.
                    eventlet.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StaleRecordError(f"workflow execution {workflow_id} kept changing under this engine")

    def _load(self, workflow_id: Any) -> tuple[HeldWorkflow, WorkflowConductor]:
        workflow = self.workflows.get_by_id(workflow_id)
        spec = self._specs.get(str(workflow.pk))
        if spec is None:
            spec = self._specs[str(workflow.pk)] = parse(plain(workflow.spec))
            while len(self._specs) > _HELD_WORKFLOWS:
                self._specs.popitem(last=False)
        conductor = WorkflowConductor(spec, plain(workflow.input), plain(workflow.context),
                                      state=plain(workflow.state) or None, errors=plain(workflow.errors),
                                      output=plain(workflow.output), kv_lookup=self.kv)
        return HeldWorkflow.of(workflow), conductor

    def _hold(self, key: str, workflow: HeldWorkflow, conductor: WorkflowConductor) -> None:
        if workflow.status in statuses.COMPLETED:
            self._specs.pop(key, None)
            return
        self._held[key] = (workflow, conductor)
        while len(self._held) > _HELD_WORKFLOWS:
            self._held.popitem(last=False)

    @contextmanager
    def _turn(self, key: str) -> Iterator[None]:
        """Changes of one workflow in this process, one at a time."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = [threading.Lock(), 0]
        turn[1] += 1
        try:
            with turn[0]:
                yield
        finally:
            turn[1] -= 1
            if not turn[1]:
                del self._turns[key]

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
        storing = self._storing.get(str(task.pk))
        if storing is not None:
            # Its child finished before this process stored it: the update must not run first.
            storing.stored.wait(_STORE_WAIT)
        self.tasks.set_if(task.pk, {}, changes)
        task.status = status

    def _plan_task(self, workflow: HeldWorkflow, task: NextTask) -> TaskExecutionDB:
        """The task execution of a task attempt about to be requested: known, or new (not stored yet)."""
        key = TaskExecutionDB.make_key(str(workflow.pk), task.seq, task.attempt)
        known = self._task_cache.get(_KEY + key)
        if known is None and task.items_count is not None:
            # Later items of a with-items task find their record stored already.
            known = self.tasks.get(key=key)
        return known if known is not None else self._new_task(workflow, task, ObjectId())

    @staticmethod
    def _new_task(workflow: HeldWorkflow | WorkflowExecutionDB, task: NextTask, task_id: Any) -> TaskExecutionDB:
        """A task execution for task (not stored), its context masked (the conductor keeps task's)."""
        task = secrets.recorded_task(task)
        spec_tasks = (workflow.spec or {}).get("tasks") or {}
        return TaskExecutionDB(
            id=task_id, key=TaskExecutionDB.make_key(str(workflow.pk), task.seq, task.attempt),
            workflow_execution=str(workflow.pk), task_name=task.task_id, task_id=task.task_id, task_route=task.route,
            seq=task.seq, attempt=task.attempt, task_spec=spec_tasks.get(task.task_id) or {}, delay=task.delay,
            itemized=task.items_count is not None, items_count=task.items_count,
            items_concurrency=task.concurrency, context=task.context, status=statuses.REQUESTED)

    def task_execution(self, workflow: HeldWorkflow | WorkflowExecutionDB, task: NextTask,
                       task_id: Any = None) -> TaskExecutionDB:
        """The task execution of one attempt of a task instance: the one planned or known, else stored now.

        task_id is the id a pending entry chose for it (recovery), if any.
        """
        key = TaskExecutionDB.make_key(str(workflow.pk), task.seq, task.attempt)
        known = self._task_cache.get(_KEY + key)
        if known is not None:
            return known
        if task.items_count is not None:
            existing = self.tasks.get(key=key)
            if existing is not None:
                return self._remember(existing)
        return self._store_new(self._new_task(workflow, task, task_id or ObjectId()))

    def _store_new(self, record: TaskExecutionDB) -> TaskExecutionDB:
        """Store a new task execution; the stored one when another engine stored it first (same key)."""
        try:
            return self._remember(self.tasks.insert_many([record], reload=False)[0])
        except ConflictError as exc:
            found = self.tasks.get(key=record.key)
            if found is None:
                raise
            LOG.debug("task execution %s already stored: %s", record.key, exc)
            return self._remember(found)

    def store_task(self, record: TaskExecutionDB) -> None:
        """Store a planned task execution once its first child is requested (no-op once stored)."""
        storing = self._storing.get(str(record.pk))
        if storing is None:
            return
        with storing.lock:
            if storing.stored.is_set():
                return
            try:
                self.tasks.insert_many([record], reload=False)
            except ConflictError as exc:
                # An engine that saw its child first stored it from the pending entry (recover_task).
                LOG.debug("task execution %s already stored: %s", record.pk, exc)
            except StackStormBaseException:
                # Not stored: forgotten here, so its child's completion finds it through recover_task.
                self._forget(record)
                raise
            finally:
                storing.stored.set()
                self._storing.pop(str(record.pk), None)

    def recover_task(self, workflow_id: Any, task_id: Any) -> TaskExecutionDB | None:
        """A task execution a pending entry names but nobody stored (its engine stopped first): stored now.

        None when no pending entry of the workflow names it.
        """
        try:
            workflow = self.workflows.get_by_id(workflow_id)
        except NotFoundError:
            return None
        pending = [item for item in plain(workflow.pending) or [] if item.get("task_execution_id") == str(task_id)]
        if not pending:
            return None
        try:
            found = self.tasks.get_by_id(task_id)
            return self._remember(found)
        except NotFoundError:
            pass
        task, _ = pending_tasks(conductor_of(workflow, self.kv), pending)[0]
        LOG.info("workflow execution %s: task execution %s stored from its pending entry", workflow.pk, task_id)
        return self._store_new(self._new_task(workflow, task, task_id))

    def task(self, task_id: Any) -> TaskExecutionDB:
        """A task execution by id (from this process's cache when it has it)."""
        task = self._task_cache.get(str(task_id))
        if task is None:
            task = self._remember(self.tasks.get_by_id(task_id))
        return task

    def _forget(self, task: TaskExecutionDB) -> None:
        self._task_cache.pop(str(task.pk), None)
        self._task_cache.pop(_KEY + task.key, None)

    def _remember(self, task: TaskExecutionDB) -> TaskExecutionDB:
        self._task_cache[str(task.pk)] = self._task_cache[_KEY + task.key] = task
        while len(self._task_cache) > _TASK_CACHE_SIZE:
            self._task_cache.popitem(last=False)
        return task

