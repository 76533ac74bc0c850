"""The workflow conductor: pure, serialisable, no I/O.

The service drives it in five moves:

1. ``WorkflowConductor(spec, input, context)`` then ``request_workflow_status("running")``
   (context is ``{st2: {...}, parent: {...}}``; input defaults and vars render now);
2. ``get_next_tasks()``: what to run now, each ``NextTask`` with its rendered
   ``ActionRequest``s (one per with-items item), delay and a stable key. The
   conductor records them as requested, so persist it after the call;
3. ``update_task_state(TaskEvent(...))`` for each status change of a child;
4. ``serialize()`` / ``WorkflowConductor.deserialize(data)`` between events;
5. ``get_workflow_status()``, ``get_workflow_output()``, ``errors`` and ``result()``.

Semantics: fail fast (an unremediated failure stops new tasks in every branch;
running ones finish, then the workflow fails); a transition whose ``do`` names
a task or ``noop`` remediates a failure; ``fail`` fails the workflow once what
it started has run; ``retry`` re-runs the task up to three times; output is
rendered whenever the workflow completes, failed or not.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any, Callable, Iterator

from st2common import statuses
from st2common.exceptions import NotFoundError, TransitionError, ValidationError
from st2common.expressions import ExpressionEvaluationException, Runtime
from st2common.expressions.functions import NO_ITEM
from st2workflowengine.orquesta import rendering
from st2workflowengine.orquesta.events import ActionRequest, NextTask, TaskEvent, WorkflowEvent
from st2workflowengine.orquesta.graph import graph_of
from st2workflowengine.orquesta.rendering import error_entry
from st2workflowengine.orquesta.spec import WorkflowSpec, parse
from st2workflowengine.orquesta.state import ITEM_ACTIVE, WorkflowState
from st2workflowengine.orquesta.transitions import complete_task

LOG = logging.getLogger(__name__)

_NOT_STARTED = (statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED)
_DONE = frozenset({statuses.SUCCEEDED, statuses.FAILED, statuses.CANCELED})
# A loop of action-less tasks that never exits would otherwise spin forever.
_MAX_INLINE_STEPS = 10000


class WorkflowConductor:
    """Conducts one workflow execution from its spec, input and parent context."""

    def __init__(self, spec: WorkflowSpec | dict[str, Any] | str, input: dict[str, Any] | None = None,
                 context: dict[str, Any] | None = None, *, state: dict[str, Any] | None = None,
                 errors: list[dict[str, Any]] | None = None, output: dict[str, Any] | None = None,
                 kv_lookup: Callable[[str, str, str | None, bool], Any] | None = None) -> None:
        self.spec = spec if isinstance(spec, WorkflowSpec) else parse(spec)
        self.graph = graph_of(self.spec)
        self.input = dict(input or {})
        self.context = dict(context or {})
        self.state = WorkflowState(state)
        self.errors: list[dict[str, Any]] = list(errors or [])
        self.output = output
        self.kv_lookup = kv_lookup

    # Persistence.

    def serialize(self) -> dict[str, Any]:
        """Everything needed to rebuild the conductor, as JSON-ready data."""
        # A JSON round trip is both the deep copy and the proof that it is JSON-ready.
        return json.loads(json.dumps({
            "spec": self.spec.definition, "graph": self.graph.serialize(), "input": self.input,
            "context": self.context, "state": self.state.to_dict(), "errors": self.errors,
            "output": self.output,
        }))

    @classmethod
    def deserialize(cls, data: dict[str, Any], kv_lookup: Callable[..., Any] | None = None) -> "WorkflowConductor":
        """The conductor serialize() described (kv_lookup is not stored: pass it again)."""
        data = json.loads(json.dumps(data))
        return cls(data["spec"], data.get("input"), data.get("context"), state=data.get("state"),
                   errors=data.get("errors"), output=data.get("output"), kv_lookup=kv_lookup)

    # Reading.

    def get_workflow_status(self) -> str:
        """The workflow's status (orquesta's strings; "null" before it starts)."""
        return self.state.status

    def get_workflow_output(self) -> dict[str, Any] | None:
        """The rendered output once the workflow completed, else None."""
        return self.output

    def result(self) -> dict[str, Any]:
        """The parent execution's result as StackStorm shapes it: output, plus errors when abended."""
        result: dict[str, Any] = {"output": self.output or None}
        if self.state.status in statuses.ABENDED or self.errors:
            result["errors"] = copy.deepcopy(self.errors)
        return result

    def get_task(self, task_id: str, route: int = 0) -> dict[str, Any] | None:
        """A copy of the latest state entry of a task instance, or None."""
        entry = self.state.get_task(task_id, route)
        return copy.deepcopy(entry) if entry else None

    def get_task_sequence(self) -> list[dict[str, Any]]:
        """Copies of every task instance started so far, in start order."""
        return copy.deepcopy(self.state.sequence)

    # Workflow status.

    def handle(self, event: TaskEvent | WorkflowEvent) -> None:
        """Apply any event: a task status change or a workflow status request."""
        if isinstance(event, WorkflowEvent):
            self.request_workflow_status(event.status)
        else:
            self.update_task_state(event)

    def request_workflow_status(self, status: str) -> None:
        """Start, pause, resume, cancel or fail the workflow (TransitionError if not allowed now)."""
        old = self.state.status
        if status == old:
            return
        if status == statuses.SUCCEEDED:
            raise TransitionError("workflow_execution", "workflow", old, status)
        # A paused workflow has nothing running to wait for: canceling it is canceling it at once.
        checked = statuses.CANCELED if (old, status) == (statuses.PAUSED, statuses.CANCELING) else status
        statuses.check_transition("workflow_execution", "workflow", old, checked)
        if status == statuses.RUNNING and old in (statuses.UNSET,) + _NOT_STARTED:
            self._start()
        elif status in _NOT_STARTED:
            self.state.status = status
        elif status in (statuses.RUNNING, statuses.RESUMING):
            LOG.info("workflow resumed from %s", old)
            self.state.status = statuses.RUNNING
            self._resume_paused()
        elif status in (statuses.PAUSING, statuses.PAUSED):
            self.state.status = statuses.PAUSING
        elif status in (statuses.CANCELING, statuses.CANCELED):
            self.state.status = statuses.CANCELING
            self.state.staged = []
            self._drop_retries(statuses.CANCELED)
        elif status == statuses.FAILED:
            self.fail_fast()
        self._settle_items()
        self._refresh()

    def _resume_paused(self) -> None:
        """Paused tasks (and items) resume with the workflow: the service resumes their paused subworkflows."""
        for entry in self.state.sequence:
            if entry["status"] == statuses.PAUSED:
                entry["status"] = statuses.RESUMING
            for i, item in enumerate(entry.get("items") or []):
                if item and item["status"] == statuses.PAUSED:
                    entry["items"][i] = {**item, "status": statuses.RESUMING}

    def _start(self) -> None:
        runtime = Runtime(kv_lookup=self.kv_lookup)
        rendered, variables, errors = rendering.render_initial_context(self.spec, self.input, self.context, runtime)
        self.input = rendered
        if errors:
            self.errors.extend(errors)
            self.state.status = statuses.FAILED
            return
        index = self.state.add_context(variables, [])
        for name in self.graph.start_tasks:
            self.state.staged.append({"id": name, "route": 0, "prev": {}, "ctxs": {"in": [index]}, "ready": True})
        if not self.state.staged:
            self.errors.append({"type": "error", "message": "WorkflowError: Unable to identify any starting task."})
            self.state.status = statuses.FAILED
            return
        self.state.status = statuses.RUNNING

    def _refresh(self) -> None:
        """Move the workflow on when its tasks allow: paused, canceled, succeeded or failed."""
        status = self.state.status
        if self.state.has_active_tasks():
            return
        if status == statuses.CANCELING:
            self._finish(statuses.CANCELED)
        elif status == statuses.PAUSING:
            self.state.status = statuses.PAUSED
        elif status in (statuses.RUNNING, statuses.RESUMING, statuses.PAUSED):
            if self.state.failing:
                self._finish(statuses.FAILED)
            elif self._has_pending_work():
                return
            elif self.state.has_waiting_tasks():
                self.state.status = statuses.PAUSED
            else:
                for staged in self.state.staged:
                    self.errors.append({
                        "type": "error", "task_id": staged["id"], "route": staged["route"],
                        "message": f'UnreachableJoinError: The join task|route "{staged["id"]}|{staged["route"]}" '
                                   f'is partially satisfied but unreachable.'})
                failed = bool(self.state.staged) or self.state.fail_requested
                self.state.staged = []
                self._finish(statuses.FAILED if failed else statuses.SUCCEEDED)

    def _finish(self, status: str) -> None:
        self.state.status = status
        variables = self.state.terminal_context()
        output, errors = rendering.render_output(self.spec, variables, self.runtime_for(variables))
        self.output = output
        if errors:
            self.errors.extend(errors)
            if status == statuses.SUCCEEDED:
                self.state.status = statuses.FAILED
        LOG.info("workflow completed as %s with %d error(s)", self.state.status, len(self.errors))

    def fail_fast(self) -> None:
        """Stop starting anything new: the workflow fails once running tasks finish."""
        self.state.failing = True
        self.state.staged = []
        self._drop_retries(statuses.FAILED)

    def _drop_retries(self, status: str) -> None:
        for entry in self.state.tasks_with_status({statuses.RETRYING}):
            entry["status"] = entry.get("retried_from") or status
            entry["done"] = self.state.tick()
            entry["ctxs"]["out"] = entry["ctxs"]["out"] if entry["ctxs"]["out"] is not None else entry["ctxs"]["in"][0]

    # Runtime for expressions.

    def runtime_for(self, variables: dict[str, Any], entry: dict[str, Any] | None = None,
                    item: Any = NO_ITEM) -> Runtime:
        """What expressions see for a task (or for the workflow when entry is None)."""
        task = None
        if entry is not None:
            task = {"id": entry["id"], "route": entry["route"], "status": entry["status"], "result": entry["result"]}
        return Runtime(variables=variables, task=task, item=item, find_task=self._find_task, kv_lookup=self.kv_lookup)

    def _find_task(self, task_id: str, route: int | None) -> dict[str, Any] | None:
        return self.state.find_task(task_id, route) or self.state.find_task(task_id, None)

    # Next tasks.

    def get_next_tasks(self) -> list[NextTask]:
        """Tasks (and with-items items) to request now; they are recorded as requested.

        Action-less tasks complete here without a child, and whatever they lead
        to is returned in the same call.
        """
        requests: list[NextTask] = []
        for _ in range(_MAX_INLINE_STEPS):
            if self.state.status not in (statuses.RUNNING, statuses.RESUMING) or self.state.failing:
                break
            for staged in self.state.ready_staged():
                self.state.staged.remove(staged)
                self.state.add_task(self._new_entry(staged))
            pending = list(self._dispatchable())
            if not pending:
                break
            for entry in pending:
                if self.state.failing:
                    break
                request = self._dispatch(entry)
                if request is not None:
                    requests.append(request)
            if not self.state.ready_staged() and not any(
                    e["status"] in (statuses.UNSET, statuses.RETRYING) for e in self.state.sequence):
                break
        self._refresh()
        return requests

    @staticmethod
    def _new_entry(staged: dict[str, Any]) -> dict[str, Any]:
        entry = {
            "id": staged["id"], "route": staged["route"], "status": statuses.UNSET, "attempt": 0,
            "retries": 0, "engine_retries": 0, "ctxs": {"in": list(staged["ctxs"]["in"]), "out": None},
            "prev": dict(staged["prev"]), "next": {}, "result": None, "done": None, "meta": {},
        }
        if staged.get("keep_items") is not None:
            entry["keep_items"] = staged["keep_items"]
        return entry

    def _has_pending_work(self) -> bool:
        return bool(self.state.ready_staged()) or any(True for _ in self._dispatchable(ignore_status=True))

    def _dispatchable(self, ignore_status: bool = False) -> Iterator[dict[str, Any]]:
        for entry in self.state.sequence:
            if entry["status"] in (statuses.UNSET, statuses.RETRYING):
                yield entry
            elif (entry.get("items") is not None and entry["status"] not in statuses.COMPLETED
                  and self._items_to_start(entry, ignore_status)):
                yield entry

    def _items_to_start(self, entry: dict[str, Any], ignore_status: bool = False) -> list[int]:
        running = self.state.status in (statuses.RUNNING, statuses.RESUMING)
        if self.state.failing or not (running or ignore_status):
            return []
        items = entry["items"]
        if any(item and item["status"] in statuses.ABENDED for item in items):
            return []
        unstarted = [i for i, item in enumerate(items) if item is None]
        if entry.get("concurrency") is None:
            return unstarted
        active = sum(1 for item in items if item and item["status"] in ITEM_ACTIVE)
        return unstarted[:max(entry["concurrency"] - active, 0)]

    def _dispatch(self, entry: dict[str, Any]) -> NextTask | None:
        spec = self.graph.task(entry["id"])
        variables = self.state.context(entry["ctxs"]["in"])
        runtime = self.runtime_for(variables, entry)
        first = entry["status"] in (statuses.UNSET, statuses.RETRYING)
        item_ids: list[int] = []
        try:
            delay = None
            if first:
                delay_spec = entry.pop("retry_delay", None) if entry["status"] == statuses.RETRYING else spec.delay
                delay = rendering.seconds(delay_spec, runtime, f"tasks.{spec.name}.delay")
            if spec.action is None:
                self._complete(entry, statuses.SUCCEEDED, None)
                return None
            if spec.with_items is None:
                ref, action_input = rendering.action(spec, runtime)
                entry["status"] = statuses.REQUESTED
                return NextTask(entry["id"], entry["route"], self.state.index(entry), entry["attempt"], spec,
                                (ActionRequest(ref, action_input),), delay, context=variables)
            if first and not self._expand_items(entry, spec, runtime):
                return None
            item_ids = self._items_to_start(entry)
            actions = tuple(ActionRequest(*rendering.action(spec, self.runtime_for(
                variables, entry, entry["item_values"][i])), item_id=i) for i in item_ids)
        except ExpressionEvaluationException as exc:
            self._render_failed(entry, exc, item_ids)
            return None
        for i in item_ids:
            entry["items"][i] = {"status": statuses.REQUESTED, "result": None}
        if entry["status"] != statuses.RUNNING:
            entry["status"] = statuses.REQUESTED if first else statuses.RUNNING
        return NextTask(entry["id"], entry["route"], self.state.index(entry), entry["attempt"], spec, actions,
                        delay if first else None, len(entry["items"]), entry["concurrency"], variables)

    def _expand_items(self, entry: dict[str, Any], spec: Any, runtime: Runtime) -> bool:
        values = rendering.items(spec.with_items, runtime)
        concurrency = rendering.count(spec.with_items.concurrency, runtime, f"tasks.{spec.name}.with.concurrency")
        if concurrency == 0:
            raise rendering.RenderError(f'The concurrency of task "{spec.name}" must be at least 1.')
        entry["item_values"], entry["concurrency"] = values, concurrency
        keep = entry.pop("keep_items", None)
        entry["items"] = list(keep) if keep is not None and len(keep) == len(values) else [None] * len(values)
        if not values or all(item is not None for item in entry["items"]):
            self._complete(entry, statuses.SUCCEEDED, [item["result"] for item in entry["items"]])
            return False
        return True

    def _render_failed(self, entry: dict[str, Any], exc: Exception, item_ids: list[int]) -> None:
        LOG.info("task %s route %s failed to render: %s", entry["id"], entry["route"], exc)
        self.errors.append(error_entry(exc, task_id=entry["id"], route=entry["route"]))
        self.fail_fast()
        if entry.get("items") and any(item and item["status"] in ITEM_ACTIVE for item in entry["items"]):
            for i in item_ids:
                entry["items"][i] = {"status": statuses.FAILED, "result": None}
            return
        entry["status"] = statuses.FAILED
        entry["done"] = self.state.tick()
        inbound = entry["ctxs"]["in"]
        entry["ctxs"]["out"] = inbound[0] if len(inbound) == 1 else self.state.add_context({}, inbound)

    # Task events.

    def update_task_state(self, event: TaskEvent) -> bool:
        """Apply a child's status change; False when it changes nothing (a repeat, or stale)."""
        entry = self._event_entry(event)
        if entry is None:
            return False
        if event.meta:
            entry["meta"].update(event.meta)
        changed = self._update_item(entry, event) if event.item_id is not None else self._update_task(entry, event)
        self._refresh()
        return changed

    def _event_entry(self, event: TaskEvent) -> dict[str, Any] | None:
        if event.seq is not None:
            if not 0 <= event.seq < len(self.state.sequence):
                raise NotFoundError("task", f"{event.task_id}|{event.route}|{event.seq}")
            entry = self.state.sequence[event.seq]
            if entry["id"] != event.task_id or entry["route"] != event.route:
                raise ValidationError(f"sequence {event.seq} is not task {event.task_id} route {event.route}",
                                      field="seq")
        else:
            entry = self.state.get_task(event.task_id, event.route)
            if entry is None:
                raise NotFoundError("task", f"{event.task_id}|{event.route}")
        if event.attempt is not None and event.attempt != entry["attempt"]:
            LOG.info("ignoring event of attempt %s for task %s (now attempt %s)",
                     event.attempt, event.task_id, entry["attempt"])
            return None
        return entry

    def _update_task(self, entry: dict[str, Any], event: TaskEvent) -> bool:
        old = entry["status"]
        if old == event.status:
            return False
        if not statuses.is_transition_valid("task_execution", old, event.status):
            LOG.warning("ignoring task %s route %s going from %s to %s", entry["id"], entry["route"], old, event.status)
            return False
        if event.status in statuses.COMPLETED:
            self._complete(entry, event.status, event.result)
        else:
            entry["status"] = event.status
        return True

    def _update_item(self, entry: dict[str, Any], event: TaskEvent) -> bool:
        items = entry.get("items")
        if items is None or not 0 <= event.item_id < len(items):
            raise ValidationError(f"task {entry['id']} has no item {event.item_id}", field="item_id")
        item = items[event.item_id] or {"status": statuses.UNSET, "result": None}
        if item["status"] == event.status:
            return False
        if not statuses.is_transition_valid("task_execution", item["status"], event.status):
            LOG.warning("ignoring item %s of task %s going from %s to %s",
                        event.item_id, entry["id"], item["status"], event.status)
            return False
        done = event.status in statuses.COMPLETED
        items[event.item_id] = {"status": event.status, "result": event.result if done else item["result"]}
        self._aggregate(entry)
        return True

    def _settle_items(self) -> None:
        for entry in list(self.state.sequence):
            if entry.get("items") is not None and entry["status"] not in statuses.COMPLETED \
                    and entry["status"] not in (statuses.UNSET, statuses.RETRYING):
                self._aggregate(entry)

    def _aggregate(self, entry: dict[str, Any]) -> None:
        """Set a with-items task's status from its items' (completing it when they are done)."""
        present = [item["status"] for item in entry["items"] if item]
        workflow = self.state.status
        if any(s in ITEM_ACTIVE for s in present):
            new = {statuses.CANCELING: statuses.CANCELING, statuses.PAUSING: statuses.PAUSING}.get(
                workflow, statuses.RUNNING)
        elif statuses.PENDING in present:
            new = statuses.PENDING
        elif statuses.PAUSED in present:
            new = statuses.PAUSED
        elif any(s in statuses.ABENDED for s in present):
            new = statuses.FAILED
        elif statuses.CANCELED in present:
            new = statuses.CANCELED
        elif len(present) == len(entry["items"]):
            new = statuses.SUCCEEDED
        elif workflow in (statuses.CANCELING, statuses.CANCELED) or self.state.failing:
            new = statuses.CANCELED
        elif workflow in (statuses.PAUSING, statuses.PAUSED):
            new = statuses.PAUSED
        else:
            new = statuses.RUNNING
        if new == entry["status"]:
            return
        if new in statuses.COMPLETED:
            self._complete(entry, new, [item["result"] if item else None for item in entry["items"]])
        else:
            entry["status"] = new

    def _complete(self, entry: dict[str, Any], status: str, result: Any) -> None:
        complete_task(self, entry, status, result)

    # Re-run.

    def request_rerun(self, tasks: list[str | tuple[str, int]] | None = None,
                      reset_items: list[str] | None = None) -> None:
        """Run a completed workflow again from the given tasks (default: its failed tasks).

        A with-items task re-runs only its items that did not succeed, unless it is
        named in reset_items.
        """
        if self.state.status not in _DONE:
            raise TransitionError("workflow_execution", "workflow", self.state.status, statuses.RESUMING)
        entries = []
        if tasks:
            for task in tasks:
                task_id, route = (task, 0) if isinstance(task, str) else task
                entry = self.state.get_task(task_id, route)
                if entry is None or entry["status"] not in statuses.COMPLETED:
                    raise ValidationError(f'Unable to rerun task "{task_id}" on route {route}: it did not complete.',
                                          field="tasks")
                entries.append(entry)
        else:
            latest = {(e["id"], e["route"]): e for e in self.state.sequence}
            entries = [e for e in latest.values() if e["status"] in statuses.ABENDED | {statuses.CANCELED}]
            if not entries:
                raise ValidationError("The workflow has no failed task to rerun.", field="tasks")
        reset = set(reset_items or [])
        self.errors, self.output = [], None
        self.state.failing = self.state.fail_requested = False
        self.state.staged = []
        for entry in entries:
            staged = {"id": entry["id"], "route": entry["route"], "prev": dict(entry["prev"]),
                      "ctxs": {"in": list(entry["ctxs"]["in"])}, "ready": True}
            if entry.get("items") is not None and entry["id"] not in reset:
                staged["keep_items"] = [item if item and item["status"] == statuses.SUCCEEDED else None
                                        for item in entry["items"]]
            self.state.staged.append(staged)
        self.state.reruns += 1
        self.state.status = statuses.RUNNING
        LOG.info("workflow rerun #%d from %s", self.state.reruns, [e["id"] for e in entries])
