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

Changes of one workflow in one process take turns (a lock per workflow), so
children completing together (with-items, branches) queue up rather than
miss each other's writes; copies of the engine in other processes are kept
apart by the compare-and-set alone.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import eventlet

from st2common import statuses
from st2common.exceptions import StackStormBaseException, StaleRecordError
from st2common.expressions import secrets
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services.keyvalues import Datastore
from st2common.transport.publisher import Publisher
from st2workflowengine.orquesta import NextTask, WorkflowConductor, WorkflowSpec, parse

LOG = logging.getLogger(__name__)

CAS_ATTEMPTS = 100
_TASK_CACHE_SIZE = 10000
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


def _written(workflow: WorkflowExecutionDB, fields: dict[str, Any]) -> WorkflowExecutionDB:
    """A copy of workflow as set_if of fields stored it (an earlier outcome keeps its own copy)."""
    updated = copy.copy(workflow)
    updated._changed_fields = []
    for name, value in fields.items():
        setattr(updated, name, value)
    updated.revision = (workflow.revision or 0) + 1
    updated._changed_fields = []
    return updated


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
        # Workflow executions this process wrote last, with their conductor, and parsed specs (see mutate).
        self._held: OrderedDict[str, tuple[WorkflowExecutionDB, WorkflowConductor]] = OrderedDict()
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
        self._turns: dict[str, list] = {}

    def mutate(self, workflow_id: Any, change: Callable[[WorkflowExecutionDB, WorkflowConductor], bool],
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
                fields = state_fields(conductor)
                if fields["status"] not in statuses.COMPLETED:
                    carried = [p for p in (plain(workflow.pending) or []) if still_requested(conductor, p)]
                    fields["pending"] = carried + [_descriptor(t, a) for t in next_tasks for a in t.actions] or None
                # The write's own copy back would cost a conversion of the whole record: the held
                # one takes the written values instead (the same values a read would give).
                if self.workflows.set_if(workflow.pk, {"revision": workflow.revision}, fields):
                    updated = _written(workflow, fields)
                    self._hold(key, updated, conductor)
                    return Outcome(updated, conductor, old_status, next_tasks)
                if held is None:
                    # Another engine copy wrote first: start over from what it stored.
                    eventlet.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StaleRecordError(f"workflow execution {workflow_id} kept changing under this engine")

    def _load(self, workflow_id: Any) -> tuple[WorkflowExecutionDB, WorkflowConductor]:
        workflow = self.workflows.get_by_id(workflow_id)
        spec = self._specs.get(str(workflow.pk))
        if spec is None:
            spec = self._specs[str(workflow.pk)] = parse(plain(workflow.spec))
            while len(self._specs) > _HELD_WORKFLOWS:
                self._specs.popitem(last=False)
        conductor = WorkflowConductor(spec, plain(workflow.input), plain(workflow.context),
                                      state=plain(workflow.state) or None, errors=plain(workflow.errors),
                                      output=plain(workflow.output), kv_lookup=self.kv)
        return workflow, conductor

    def _hold(self, key: str, workflow: WorkflowExecutionDB, conductor: WorkflowConductor) -> None:
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
        self.tasks.set_if(task.pk, {}, changes)
        task.status = status

    def task_execution(self, workflow: WorkflowExecutionDB, task: NextTask) -> TaskExecutionDB:
        """The task execution of one attempt of a task instance, stored the first time it is asked for."""
        key = TaskExecutionDB.make_key(str(workflow.pk), task.seq, task.attempt)
        if task.items_count is not None:
            # Later items of a with-items task find their record stored already.
            existing = self._task_cache.get(_KEY + key) or self.tasks.get(key=key)
            if existing is not None:
                return self._remember(existing)
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
        self._task_cache[str(task.pk)] = self._task_cache[_KEY + task.key] = task
        while len(self._task_cache) > _TASK_CACHE_SIZE:
            self._task_cache.popitem(last=False)
        return task

