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
first child, named in that write's ``pending`` entries, and stored once, when
its status first becomes one it keeps (completed, or pending or paused): it is
history, so nothing waits for it while the task runs. A child's completion
stores it after the write that applies it: RECORD_LINGER seconds later, with
the records of the tasks that completed meanwhile, in one insert
(``linger_records``), so the way from one task to the next waits for one write
fewer and a chain of tasks shares its inserts. The writes until then keep the
task's pending entry, marked ``unrecorded``, which a later write drops once the
record is stored; a workflow's last write waits for its records. An engine
that meets a child whose task execution it does not hold (another engine copy
planned it, or this one restarted) rebuilds it from the pending entry naming
its id (``recover_task``); an entry kept for a record (marked ``unrecorded``)
that its engine stopped before storing is stored from the entry by the next
write of any engine (``_record_orphan``), so nothing is requested twice or lost.

The children a workflow requests join its execution's ``children`` the same
way: with the next flush_records, those of several tasks in one write, and
before the write that ends the workflow. An engine that stops in between
leaves a child unlisted: the engine that ends a workflow it did not hold from
its start lists what is missing (WorkflowService._list_lost); the writes add
only what a list lacks, so a late one lists nothing twice.

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
# Task executions are kept by id, and under this prefix by key.
_KEY = "key:"
_HELD_WORKFLOWS = 1000
_WAITING = (statuses.PENDING, statuses.PAUSED)
_NOT_STARTED = (statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED)
# Seconds the records a change completed wait for those of the next changes of their workflow (one insert for all).
RECORD_LINGER = 0.05
# Seconds before records that could not be stored are tried again.
RECORD_RETRY = 1.0


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
    # True while this process has written every change since the workflow's start (read while requested,
    # never missed a write since): then it requested every child, and listed or lists them itself.
    sole: bool = False

    @classmethod
    def of(cls, workflow: WorkflowExecutionDB) -> "HeldWorkflow":
        """The held record of a stored workflow execution."""
        return cls(workflow.pk, workflow.action_execution, workflow.status, workflow.revision or 0,
                   plain(workflow.pending), plain(workflow.spec) or {}, plain(workflow.context) or {},
                   plain(workflow.notify) or {}, sole=workflow.status == statuses.REQUESTED)

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


def _task_changes(conductor: WorkflowConductor, task: TaskExecutionDB, child: ExecutionDB) -> dict[str, Any] | None:
    """What a task execution's record must change to match the conductor's entry (None: nothing)."""
    sequence = conductor.state.sequence
    entry = sequence[task.seq] if task.seq < len(sequence) else None
    if entry is None:
        return None
    if entry["attempt"] != task.attempt:
        # That attempt is over (the task is being retried): it ended as its child did.
        status, result = child.status, child.result
    else:
        status, result = entry["status"], entry.get("result")
    if status == task.status or status not in statuses.COMPLETED | set(_WAITING):
        return None
    changes: dict[str, Any] = {"status": status}
    if status in statuses.COMPLETED:
        changes.update(result=result, end_timestamp=child.end_timestamp or utcnow())
    return changes


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
        # Ids of task executions in the cache not stored yet (see record_task).
        self._unstored: OrderedDict[str, None] = OrderedDict()
        # Workflow executions this process wrote last, with their conductor, and parsed specs (see mutate).
        self._held: OrderedDict[str, tuple[HeldWorkflow, WorkflowConductor]] = OrderedDict()
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
        self._turns: dict[str, list] = {}
        # Task executions whose status a write applied, to store after it (flush_records), by workflow.
        self._deferred: dict[str, list[tuple[TaskExecutionDB, dict[str, Any]]]] = {}
        # Children requested and not yet listed in their workflow's execution, by workflow: (parent, ids).
        self._unlisted: dict[str, tuple[str, list[str]]] = {}
        # Workflows whose deferred records or children a timer will store (linger_records).
        self._lingering: set[str] = set()

    def mutate(self, workflow_id: Any, change: Callable[[HeldWorkflow, WorkflowConductor], bool],
               monotonic: bool = False,
               before_write: Callable[[WorkflowConductor], None] | None = None) -> Outcome | None:
        """Apply change (True when it changed something) under a compare-and-set; None if nothing changed.

        One conditional write per change: the conductor this process wrote last
        is held in memory, so the next change of that workflow starts from it
        without a read; when another engine copy wrote since, the write misses
        and the change starts over from a fresh read. A change that finds
        nothing to do on a held conductor is checked again on a fresh read, as
        the held one may be behind, unless the change is monotonic (a child's
        event: what an earlier state already knows, a later one knows too).
        Changes of one workflow in this process take turns, so they never miss
        each other's writes. before_write(conductor), when given, runs after a
        change and before its write (the task executions it completes are stored
        there, under the same turn, or left to flush_records); the records left
        to store are stored before a write that ends the workflow.
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
                if before_write is not None:
                    before_write(conductor)
                next_tasks = conductor.get_next_tasks()
                planned = [self._plan_task(workflow, task) for task in next_tasks]
                fields = state_fields(conductor)
                if fields["status"] not in statuses.COMPLETED:
                    carried = self._carried(workflow, conductor)
                    fields["pending"] = carried + [_descriptor(t, a, str(record.pk)) for t, record in
                                                   zip(next_tasks, planned) for a in t.actions] or None
                elif workflow.pending:
                    self._carried(workflow, conductor)
                if fields["status"] in statuses.COMPLETED:
                    # Its last write drops every pending entry: the records they keep, and the children
                    # not listed yet, go first.
                    self.flush_records(key)
                # The write's own copy back would cost a conversion of the whole record: the held
                # one takes the written values instead (the same values a read would give).
                if self.workflows.set_if(workflow.pk, {"revision": workflow.revision}, fields):
                    for record in planned:
                        if record._created and str(record.pk) not in self._task_cache:
                            # Stored by record_task, at its task's first kept status.
                            self._unstored[str(record.pk)] = None
                        self._remember(record)
                    updated = workflow.written(fields)
                    self._hold(key, updated, conductor)
                    return Outcome(updated, conductor, old_status, next_tasks)
                if held is None:
                    # Another engine copy wrote first: start over from what it stored.
                    eventlet.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StaleRecordError(f"workflow execution {workflow_id} kept changing under this engine")

    def _carried(self, workflow: HeldWorkflow, conductor: WorkflowConductor) -> list[dict[str, Any]]:
        """The pending entries a write keeps: children still to start, and tasks whose record is still to store.

        An entry kept for another engine's record (``unrecorded``) is dropped
        only once that record is stored (_record_orphan).
        """
        unrecorded = {str(task.pk) for task, _ in self._deferred.get(str(workflow.pk), ())}
        carried = []
        for entry in workflow.pending or []:
            if still_requested(conductor, entry):
                carried.append(entry)
            elif entry.get("task_execution_id") in unrecorded:
                carried.append({**entry, "unrecorded": True})
            elif entry.get("unrecorded") and not self._stored_here(entry["task_execution_id"]):
                self._record_orphan(workflow, conductor, entry)
        return carried

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
        self.record_tasks(conductor, [(task, child)])

    def record_tasks(self, conductor: WorkflowConductor, seen: list[tuple[TaskExecutionDB, ExecutionDB]],
                     defer: bool = False) -> None:
        """Bring task executions in line with the conductor's entries (each with the child it last heard of).

        The first status a task keeps (completed, pending, paused) stores the
        task execution this process holds unstored, those of several tasks in
        one insert: one write for a task that runs and completes. With defer,
        those are left to flush_records (mutate stores them before a write that
        ends the workflow).
        """
        changed: dict[str, tuple[TaskExecutionDB, dict[str, Any]]] = {}
        for task, child in seen:
            changes = _task_changes(conductor, task, child)
            if changes is not None:
                changed[str(task.pk)] = (task, changes)
        new = [(task, changes) for key, (task, changes) in changed.items() if key in self._unstored]
        stored = [(task, changes) for key, (task, changes) in changed.items() if key not in self._unstored]
        if new and defer:
            for task, changes in new:
                for name, value in changes.items():
                    setattr(task, name, value)
                deferred = self._deferred.setdefault(task.workflow_execution, [])
                # A task that changes again before it is stored (pending, then completed) is stored once.
                for held, held_changes in deferred:
                    if held is task:
                        held_changes.update(changes)
                        break
                else:
                    deferred.append((task, changes))
            new = []
        if len(new) > 1:
            self._insert_tasks(new)
        elif new:
            self._insert_task(*new[0])
        for task, changes in stored:
            self.tasks.set_if(task.pk, {}, changes)
            task.status = changes["status"]

    def list_children(self, workflow_id: Any, parent: str, children: list[str]) -> None:
        """Children requested for a workflow: listed in its execution's children by the next flush_records."""
        held = self._unlisted.setdefault(str(workflow_id), (parent, []))
        held[1].extend(children)

    def linger_records(self, workflow_id: Any, delay: float = RECORD_LINGER) -> None:
        """flush_records for a workflow delay seconds from now, with what it defers meanwhile."""
        key = str(workflow_id)
        if key in self._lingering or not (self._deferred.get(key) or self._unlisted.get(key)):
            return
        self._lingering.add(key)
        eventlet.spawn_after(delay, self._flush_later, key)

    def _flush_later(self, key: str) -> None:
        self._lingering.discard(key)
        try:
            # Under the workflow's turn: a change never meets records on their way to the database.
            with self._turn(key):
                self.flush_records(key)
        except StackStormBaseException as exc:
            # Their pending entries stay in the workflow's writes meanwhile: nothing is lost.
            LOG.warning("workflow execution %s: records and children not stored yet: %s", key, exc)
            self.linger_records(key, RECORD_RETRY)

    def flush_all(self) -> None:
        """flush_records for every workflow now (an engine stopping); what fails is left to recovery."""
        for key in list(self._deferred) + [key for key in self._unlisted if key not in self._deferred]:
            try:
                with self._turn(key):
                    self.flush_records(key)
            except StackStormBaseException as exc:
                LOG.warning("workflow execution %s: records and children not stored: %s", key, exc)

    def flush_records(self, workflow_id: Any) -> None:
        """List a workflow's children requested since, and store the task executions record_tasks deferred.

        What fails is kept for a retry.
        """
        key = str(workflow_id)
        unlisted = self._unlisted.pop(key, None)
        if unlisted:
            parent, children = unlisted
            try:
                # A repeat (the completion's check got there first) lists nothing twice.
                if not self.executions.add_to_set(parent, "children", children):
                    LOG.warning("executions %s requested, their parent %s is gone", ", ".join(children), parent)
            except StackStormBaseException:
                newer = self._unlisted.pop(key, (parent, []))
                self._unlisted[key] = (parent, children + newer[1])
                raise
        deferred = self._deferred.pop(key, None)
        if not deferred:
            return
        try:
            if len(deferred) > 1:
                self._insert_tasks(deferred)
            else:
                self._insert_task(*deferred[0])
        except StackStormBaseException:
            # The pending entries stay in the workflow's writes until these are stored.
            self._deferred[key] = deferred + self._deferred.get(key, [])
            raise

    def _stored_here(self, task_id: str) -> bool:
        """True for a task execution this process holds and has stored."""
        return task_id in self._task_cache and task_id not in self._unstored

    def _record_orphan(self, workflow: HeldWorkflow, conductor: WorkflowConductor, entry: dict[str, Any]) -> None:
        """Store the record a kept pending entry names, before a write drops the entry.

        Another engine copy kept it for a record it was to store after its
        write: stored here from the entry and the conductor (a conflict means
        it got there first), so an engine that stopped in between loses nothing.
        """
        [(task, _)] = pending_tasks(conductor, [entry])
        record = self._new_task(workflow, task, entry["task_execution_id"])
        changes = _task_changes(conductor, record, ExecutionDB())
        if changes is None:
            LOG.warning("workflow execution %s: task execution %s kept for a record with no status to store",
                        workflow.pk, record.pk)
            return
        LOG.info("workflow execution %s: task execution %s stored for the engine that applied it",
                 workflow.pk, record.pk)
        self._insert_task(record, changes)

    def _insert_tasks(self, new: list[tuple[TaskExecutionDB, dict[str, Any]]]) -> None:
        """_insert_task of several in one insert (one by one when some turn out stored)."""
        before = [{name: getattr(task, name) for name in changes} for task, changes in new]
        for task, changes in new:
            for name, value in changes.items():
                setattr(task, name, value)
        try:
            self.tasks.insert_many([task for task, _ in new], reload=False)
        except ConflictError:
            # The ones before the clash are stored (their inserts are ordered): they clash again, and are changed.
            for (task, changes), old in zip(new, before):
                for name, value in old.items():
                    setattr(task, name, value)
                self._insert_task(task, changes)
            return
        except StackStormBaseException:
            for (task, _), old in zip(new, before):
                for name, value in old.items():
                    setattr(task, name, value)
            raise
        for task, _ in new:
            self._unstored.pop(str(task.pk), None)

    def _insert_task(self, task: TaskExecutionDB, changes: dict[str, Any]) -> None:
        """Store a task execution held unstored, with changes; only changes when it turns out stored."""
        before = {name: getattr(task, name) for name in changes}
        for name, value in changes.items():
            setattr(task, name, value)
        try:
            self.tasks.insert_many([task], reload=False)
        except ConflictError as exc:
            # Another engine copy stored it first (it completed or waited there): the change applies to that.
            LOG.debug("task execution %s already stored: %s", task.pk, exc)
            if not self.tasks.set_if(task.pk, {}, changes):
                LOG.warning("task execution %s: another one is stored under key %s", task.pk, task.key)
        except StackStormBaseException:
            for name, value in before.items():
                setattr(task, name, value)
            raise
        self._unstored.pop(str(task.pk), None)

    def _plan_task(self, workflow: HeldWorkflow, task: NextTask) -> TaskExecutionDB:
        """The task execution of a task attempt about to be requested: known, or new (not stored yet).

        Later items of a with-items task take the id their earlier items' pending entries name.
        """
        key = TaskExecutionDB.make_key(str(workflow.pk), task.seq, task.attempt)
        known = self._task_cache.get(_KEY + key)
        if known is not None:
            return known
        named = next((item["task_execution_id"] for item in workflow.pending or [] if item.get("task_execution_id")
                      and item["seq"] == task.seq and item["attempt"] == task.attempt), None)
        if named is None and task.items_count is not None:
            known = self.tasks.get(key=key)
        return known if known is not None else self._new_task(workflow, task, named or ObjectId())

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
        """The task execution of one attempt of a task instance: the one planned or known, else a new one held.

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
        return self._hold_unstored(self._new_task(workflow, task, task_id or ObjectId()))

    def _hold_unstored(self, record: TaskExecutionDB) -> TaskExecutionDB:
        self._unstored[str(record.pk)] = None
        return self._remember(record)

    def store_task(self, record: TaskExecutionDB) -> None:
        """Store now a task execution this process holds unstored (one whose child could not be requested)."""
        if str(record.pk) not in self._unstored:
            return
        try:
            self.tasks.insert_many([record], reload=False)
        except ConflictError as exc:
            LOG.debug("task execution %s already stored: %s", record.pk, exc)
        self._unstored.pop(str(record.pk), None)

    def recover_task(self, workflow_id: Any, task_id: Any) -> TaskExecutionDB | None:
        """A task execution this process does not hold: from the pending entry naming it, else as stored.

        Rebuilt from the pending entry (not stored: its first kept status
        stores it) when another engine copy planned it or this process
        restarted since. The workflow read stays held for the change that
        follows. None when neither a pending entry nor a record has it.
        """
        key = str(workflow_id)
        with self._turn(key):
            held = self._held.get(key)
            for fresh in ((False, True) if held is not None else (True,)):
                if fresh:
                    try:
                        held = self._load(workflow_id)
                    except NotFoundError:
                        return None
                    self._hold(key, *held)
                workflow, conductor = held
                pending = [item for item in workflow.pending or [] if item.get("task_execution_id") == str(task_id)]
                if pending:
                    task, _ = pending_tasks(conductor, pending)[0]
                    LOG.debug("workflow execution %s: task execution %s rebuilt from its pending entry",
                              workflow.pk, task_id)
                    return self._hold_unstored(self._new_task(workflow, task, task_id))
        try:
            return self._remember(self.tasks.get_by_id(task_id))
        except NotFoundError:
            return None

    def task(self, task_id: Any, workflow_id: Any = None) -> TaskExecutionDB:
        """A task execution by id: held by this process, else (of workflow_id) recovered, else stored."""
        task = self._task_cache.get(str(task_id))
        if task is not None:
            return task
        if workflow_id is not None:
            task = self.recover_task(workflow_id, task_id)
            if task is None:
                raise NotFoundError("task_execution", str(task_id))
            return task
        return self._remember(self.tasks.get_by_id(task_id))

    def _remember(self, task: TaskExecutionDB) -> TaskExecutionDB:
        self._task_cache[str(task.pk)] = self._task_cache[_KEY + task.key] = task
        while len(self._task_cache) > _TASK_CACHE_SIZE:
            evicted, _ = self._task_cache.popitem(last=False)
            # Out of the cache an unstored one is rebuilt from its pending entry (recover_task).
            self._unstored.pop(evicted, None)
        return task
