"""The conductor's mutable state, as plain JSON-ready data.

- ``contexts``: what each assignment wrote, ``{in: [parent indexes], vars: {...}}``;
  0 is the initial one (st2, parent, input, vars), a transition that publishes
  adds one. A task's context is every write among its ancestors replayed in the
  order they were made, so where branches meet the last writer wins and a
  branch never undoes another's write with a value it merely inherited.
- ``routes``: lists of split ids; route 0 is ``[]``. A split task reached
  through ``<task>__t<n>`` on route r runs on ``routes[r] + [that id]``.
- ``sequence``: one entry per task instance, in the order they were started:
  ``id, route, status, attempt, ctxs {in, out}, prev, next, result, meta`` and,
  for with-items tasks, ``items`` (per item ``{status, result}`` or None when
  not started), ``item_values`` and ``concurrency``.
- ``staged``: tasks reached but not started: ``id, route, prev, ctxs {in}, ready``
  (a join waits, not ready, until enough inbound transitions arrive).
- ``clock``: a counter stamping completions, so contexts merge in completion order.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

from st2common import statuses

# Task statuses that mean a child is (or is about to be) in flight.
TASK_ACTIVE = frozenset({
    statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED, statuses.RUNNING,
    statuses.PAUSING, statuses.RESUMING, statuses.CANCELING, statuses.RETRYING,
})
# Task statuses that wait on a person or a resume, not on a process.
TASK_WAITING = frozenset({statuses.PENDING, statuses.PAUSED})
ITEM_ACTIVE = TASK_ACTIVE - {statuses.RETRYING}


def merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Merge right into left, recursing into nested dicts; right wins."""
    for key, value in right.items():
        if isinstance(left.get(key), dict) and isinstance(value, dict):
            merge(left[key], value)
        else:
            left[key] = copy.deepcopy(value)
    return left


class WorkflowState:
    """Contexts, routes, started and staged tasks of one workflow execution."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.status: str = data.get("status", statuses.UNSET)
        self.contexts: list[dict[str, Any]] = data.get("contexts", [])
        self.routes: list[list[str]] = data.get("routes", [[]])
        self.sequence: list[dict[str, Any]] = data.get("sequence", [])
        self.staged: list[dict[str, Any]] = data.get("staged", [])
        self.clock: int = data.get("clock", 0)
        # An unremediated failure (or the fail command): nothing new starts.
        self.failing: bool = data.get("failing", False)
        # The fail command: the workflow fails once what it started has run.
        self.fail_requested: bool = data.get("fail_requested", False)
        self.reruns: int = data.get("reruns", 0)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain data; WorkflowState(state.to_dict()) is the same state."""
        return {
            "status": self.status, "contexts": self.contexts, "routes": self.routes,
            "sequence": self.sequence, "staged": self.staged, "clock": self.clock,
            "failing": self.failing, "fail_requested": self.fail_requested, "reruns": self.reruns,
        }

    # Contexts and routes.

    def add_context(self, written: dict[str, Any], parents: list[int]) -> int:
        """Record variables written on top of the parent contexts; the new index."""
        self.contexts.append({"in": list(parents), "vars": copy.deepcopy(written)})
        return len(self.contexts) - 1

    def context(self, indexes: list[int]) -> dict[str, Any]:
        """The variables seen through the given contexts (a fresh copy)."""
        ancestors, stack = set(), list(indexes)
        while stack:
            index = stack.pop()
            if index not in ancestors:
                ancestors.add(index)
                stack.extend(self.contexts[index]["in"])
        merged: dict[str, Any] = {}
        for index in sorted(ancestors):
            merge(merged, self.contexts[index]["vars"])
        return merged

    def split_route(self, route: int, split_id: str) -> int:
        """The route that continues route through the split split_id (added if new)."""
        path = self.routes[route] + [split_id]
        if path not in self.routes:
            self.routes.append(path)
        return self.routes.index(path)

    # Started tasks.

    def add_task(self, entry: dict[str, Any]) -> int:
        """Append a started task; its sequence index."""
        self.sequence.append(entry)
        return len(self.sequence) - 1

    def get_task(self, task_id: str, route: int) -> dict[str, Any] | None:
        """The latest instance of task_id on route, or None."""
        for entry in reversed(self.sequence):
            if entry["id"] == task_id and entry["route"] == route:
                return entry
        return None

    def find_task(self, task_id: str, route: int | None) -> dict[str, Any] | None:
        """The latest instance of task_id on route (any route when route is None)."""
        for entry in reversed(self.sequence):
            if entry["id"] == task_id and (route is None or entry["route"] == route):
                return entry
        return None

    def index(self, entry: dict[str, Any]) -> int:
        """The sequence index of an entry (by identity)."""
        for i, candidate in enumerate(self.sequence):
            if candidate is entry:
                return i
        raise LookupError(entry["id"])

    def tasks_with_status(self, wanted: frozenset[str] | set[str]) -> Iterator[dict[str, Any]]:
        """Started tasks whose status is one of wanted."""
        return (entry for entry in self.sequence if entry["status"] in wanted)

    def has_active_tasks(self) -> bool:
        """True when some child is in flight or a task is about to be retried."""
        return any(True for _ in self.tasks_with_status(TASK_ACTIVE))

    def has_waiting_tasks(self) -> bool:
        """True when some task waits on an inquiry or a paused child."""
        return any(True for _ in self.tasks_with_status(TASK_WAITING))

    def terminal_context(self) -> dict[str, Any]:
        """The context the output renders with: completed tasks nothing followed, merged in completion order."""
        followed = {seq for entry in self.sequence for seq in entry["prev"].values()}
        ends = [entry for i, entry in enumerate(self.sequence)
                if i not in followed and entry.get("done") is not None]
        if not ends:
            return self.context([0]) if self.contexts else {}
        ends.sort(key=lambda entry: entry["done"])
        return self.context([entry["ctxs"]["out"] for entry in ends])

    # Staged tasks.

    def get_staged(self, task_id: str, route: int, ready: bool | None = None) -> dict[str, Any] | None:
        """The staged instance of task_id on route (filtered on readiness when given)."""
        for staged in self.staged:
            if staged["id"] == task_id and staged["route"] == route and (ready is None or staged["ready"] == ready):
                return staged
        return None

    def ready_staged(self) -> list[dict[str, Any]]:
        """Staged tasks ready to start, in the order they were reached."""
        return [staged for staged in self.staged if staged["ready"]]

    def tick(self) -> int:
        """The next completion stamp."""
        self.clock += 1
        return self.clock
