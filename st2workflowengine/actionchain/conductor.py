"""The ActionChain conductor: pure decisions at node boundaries, on plain, serialisable state.

The service (service.py) loads a chain execution, builds a conductor from it,
calls one method for what happened and stores the new state; the returned
``Step`` says what to do once it is stored: request the next node's child
execution, and/or pass a pause, resume or cancel on to the running child.

| event                                 | chain status ->                    | step                        |
| ------------------------------------- | ---------------------------------- | --------------------------- |
| start (requested)                     | running (paused / canceled if the  | request the start node      |
|                                       | execution was asked to)            |                             |
| the current node's child completed    | task recorded, publish rendered;   | request the next node       |
|                                       | the next node, or the end (status  |                             |
|                                       | of the last node); paused/canceled |                             |
|                                       | here if asked for                  |                             |
| the child went paused or pending      | paused                             |                             |
| the child could not be requested      | the node failed: its on-failure    | request that node           |
| (its action refused the parameters)   |                                    |                             |
| the node's action does not exist      | failed (top-level error)           |                             |
| pause asked                           | pausing (a child runs) or paused   | pause the child (workflows) |
| resume asked                          | running                            | the waiting node requested, |
|                                       |                                    | or the child resumed        |
| cancel asked                          | canceling (a child runs) or        | cancel the child (workflows |
|                                       | canceled                           | and not started ones)       |

Errors outside a node's own run (vars, the start node, rendering parameters or
publish, an unknown action) end the chain failed with a top-level
``{error, traceback}`` in the result, worded as StackStorm words them.
"""

from __future__ import annotations

import datetime
import traceback as tb
from dataclasses import dataclass, field
from typing import Any, Mapping

from st2common import statuses
from st2common.models.api.base import isotime
from st2workflowengine.actionchain import rendering
from st2workflowengine.actionchain.spec import ChainSpec, Node

PAUSE_REQUESTS = frozenset({statuses.PAUSING, statuses.PAUSED})
CANCEL_REQUESTS = frozenset({statuses.CANCELING, statuses.CANCELED})
_WAITING = frozenset({statuses.PAUSING, statuses.PAUSED})
_CLOCK_SLACK = 0.002


@dataclass
class ChainState:
    """What a chain execution stores between boundaries."""

    status: str = statuses.REQUESTED
    vars: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    # {"node": name, "requested": bool, "at": epoch seconds it was decided}: the node the chain waits on.
    current: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Child:
    """A child execution as the conductor sees it."""

    id: str
    node: str
    status: str
    result: Any = None
    start_timestamp: datetime.datetime | None = None
    end_timestamp: datetime.datetime | None = None


@dataclass(frozen=True)
class Lookups:
    """The render context's I/O, given by the service: the datastore and the pack config."""

    st2kv: Mapping[str, Any] = field(default_factory=dict)
    config: Any = None


@dataclass
class Step:
    """What to do once the new state is stored."""

    changed: bool = False
    request: tuple[Node, dict[str, Any]] | None = None
    cascade: str | None = None


def _error(text: str, exc: BaseException | None = None) -> dict[str, Any]:
    """A top-level error as StackStorm records it: the message, and the traceback when there is one."""
    trace = "".join(tb.format_exception(exc, limit=10)) if exc is not None else ""
    return {"error": text, "traceback": trace}


class ChainConductor:
    """Moves one chain on, one boundary at a time (see the module doc)."""

    def __init__(self, spec: ChainSpec, parameters: Mapping[str, Any], state: ChainState, *,
                 execution_id: str, context: Mapping[str, Any] | None = None, display_published: bool = True,
                 lookups: Lookups | None = None) -> None:
        self.spec = spec
        self.parameters = dict(parameters or {})
        self.state = state
        self.execution_id = execution_id
        self.context = dict(context or {})
        self.display_published = display_published
        self.lookups = lookups or Lookups()

    # -- what the result shows --------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """StackStorm's chain result: {tasks, published} plus a top-level error and traceback."""
        result: dict[str, Any] = {"tasks": list(self.state.tasks)}
        if self.display_published:
            result["published"] = dict(self.state.published)
        if self.state.error:
            result.update(self.state.error)
        return result

    def results(self) -> dict[str, Any]:
        """Each node's latest result by node name, as templates see them."""
        return {task["name"]: task["result"] for task in self.state.tasks}

    def parent_context(self) -> dict[str, Any]:
        """What a child's ``context.parent`` holds: the chain's whole context and its execution id."""
        return {"execution_id": self.execution_id, **self.context}

    # -- events -----------------------------------------------------------------------------

    def start(self, control: str | None, now: datetime.datetime) -> Step:
        """The chain starts: vars rendered, the start node requested (or held if paused or canceled)."""
        if self.state.status != statuses.REQUESTED:
            return Step()
        try:
            self.state.vars = rendering.render_values(
                self.spec.vars, rendering.vars_context(self.parameters, self.lookups.st2kv))
        except rendering.RenderError as exc:
            return self._finish(statuses.FAILED,
                                _error(f"Failed initializing ``vars`` in chain.. {exc.error}", exc.error))
        start = self.spec.start()
        if start is None:
            return self._finish(statuses.FAILED, _error(
                f'Failed to get starting node "{self.spec.default}". Unable to find node with name '
                f'"{self.spec.default}"'))
        return self._advance(start.name, statuses.SUCCEEDED, control, now)

    def node_ended(self, child: Child, control: str | None, now: datetime.datetime) -> Step:
        """The current node's child completed: record it, publish, go to the next node or end."""
        if not self.is_current(child):
            return Step()
        if self.state.status == statuses.PAUSED and control == statuses.PAUSED:
            # Paused because this child waited (an inquiry, a paused subworkflow): its end resumes the chain.
            control = None
        node = self.spec.node(child.node)
        self.state.tasks.append(self._task(node.name, child))
        if child.status == statuses.CANCELED:
            return self._finish(statuses.CANCELED)
        if node.publish:
            try:
                values = rendering.render_values(node.publish, rendering.publish_context(
                    self.parameters, node.name, child.result, self.results(), self.state.vars, self.lookups.st2kv))
            except rendering.RenderError as exc:
                return self._finish(statuses.FAILED, _error(
                    f'Failed rendering value for publish parameter "{exc.key}" in task "{node.name}" '
                    f"(template string={exc.template}): {exc.error}", exc.error))
            self.state.vars.update(values)
            self.state.published.update(values)
        next_name, chain_status = node.next_for(child.status)
        return self._advance(next_name, chain_status, control, now, after=node.name)

    def node_waiting(self, child: Child) -> Step:
        """The current node's child went paused or pending: the chain pauses (canceling: it ends)."""
        if not self.is_current(child):
            return Step()
        if self.state.status == statuses.CANCELING:
            return self._finish(statuses.CANCELED)
        if self.state.status == statuses.PAUSED:
            return Step()
        self.state.status = statuses.PAUSED
        return Step(changed=True)

    def action_missing(self, node_name: str) -> Step:
        """The current node's action does not exist: the chain fails with a top-level error."""
        if not self._requested(node_name):
            return Step()
        ref = self.spec.node(node_name).ref
        return self._finish(statuses.FAILED, _error(
            f'Failed to run task "{node_name}". Action with reference "{ref}" doesn\'t exist'))

    def request_failed(self, node_name: str, exc: BaseException, control: str | None,
                       now: datetime.datetime) -> Step:
        """The current node's child could not be requested (its parameters were refused): the node failed."""
        if not self._requested(node_name):
            return Step()
        error = _error(f'Failed running task "{node_name}".. {exc}', exc)
        stamp = isotime(now)
        self.state.tasks.append({"id": node_name, "name": node_name, "execution_id": None, "liveaction_id": None,
                                 "workflow": None, "created_at": stamp, "updated_at": stamp,
                                 "state": statuses.FAILED, "result": error})
        next_name, chain_status = self.spec.node(node_name).next_for(statuses.FAILED)
        return self._advance(next_name, chain_status, control, now, after=node_name)

    def end(self, status: str) -> Step:
        """The chain's execution ended without the chain (abandoned, or set by hand): the chain ends as it did."""
        if self.state.status in statuses.COMPLETED:
            return Step()
        return self._finish(status)

    def request_again(self, control: str | None, now: datetime.datetime) -> Step:
        """The current node's child was never requested (a crash in between): request it now."""
        current = self.state.current or {}
        if self.state.status in statuses.COMPLETED or not current.get("requested"):
            return Step()
        return self._advance(current["node"], statuses.SUCCEEDED, control, now)

    def control(self, wanted: str, child_active: bool, now: datetime.datetime) -> Step:
        """The chain's execution was asked to pause, resume or cancel; child_active: its current child runs."""
        status = self.state.status
        if status in statuses.COMPLETED or status == statuses.REQUESTED:
            return Step()
        current = self.state.current or {}
        if wanted in CANCEL_REQUESTS:
            if status == statuses.CANCELING:
                return Step()
            if current.get("requested") and child_active:
                self.state.status = statuses.CANCELING
                return Step(changed=True, cascade=statuses.CANCELING)
            return self._finish(statuses.CANCELED)
        if wanted == statuses.PAUSING:
            if status not in (statuses.RUNNING, statuses.RESUMING):
                return Step()
            if current.get("requested") and child_active:
                self.state.status = statuses.PAUSING
                return Step(changed=True, cascade=statuses.PAUSING)
            self.state.status = statuses.PAUSED
            return Step(changed=True)
        if wanted == statuses.RESUMING and status in _WAITING:
            if current.get("requested"):
                self.state.status = statuses.RUNNING
                return Step(changed=True, cascade=statuses.RESUMING)
            return self._advance(current.get("node"), statuses.SUCCEEDED, None, now)
        return Step()

    # -- boundaries -------------------------------------------------------------------------

    def is_current(self, child: Child) -> bool:
        """True when child is the execution of the node the chain waits on (and not recorded yet)."""
        current = self.state.current
        if self.state.status in statuses.COMPLETED or not current or not current.get("requested"):
            return False
        if current.get("node") != child.node or any(t.get("execution_id") == child.id for t in self.state.tasks):
            return False
        # A child of an earlier visit to the same node (a loop) is not this one; the slack
        # covers the database keeping timestamps to the millisecond.
        at = current.get("at")
        if at is None or child.start_timestamp is None:
            return True
        return utc_aware(child.start_timestamp).timestamp() >= at - _CLOCK_SLACK

    def _requested(self, node_name: str) -> bool:
        current = self.state.current or {}
        return (current.get("node") == node_name and bool(current.get("requested"))
                and self.state.status not in statuses.COMPLETED)

    def _advance(self, next_name: str | None, chain_status: str, control: str | None,
                 now: datetime.datetime, after: str | None = None) -> Step:
        wanted = self.state.status if self.state.status in (statuses.PAUSING, statuses.CANCELING) else control
        if wanted in CANCEL_REQUESTS:
            return self._finish(statuses.CANCELED)
        if next_name is None:
            return self._finish(chain_status)
        node = self.spec.node(next_name)
        if node is None:
            return self._finish(statuses.FAILED, _error(
                f'Failed to get next node "{after}". Unable to find node with name "{next_name}"'))
        if wanted in PAUSE_REQUESTS:
            self.state.current = {"node": node.name, "requested": False, "at": now.timestamp()}
            self.state.status = statuses.PAUSED
            return Step(changed=True)
        return self._request(node, now)

    def _request(self, node: Node, now: datetime.datetime) -> Step:
        action_context = {"parent": self.parent_context()}
        try:
            parameters = rendering.render_values(node.parameters, rendering.parameters_context(
                self.parameters, self.results(), self.state.vars, self.lookups.st2kv, action_context,
                self.lookups.config))
        except rendering.RenderError as exc:
            detail = (f'Failed rendering value for action parameter "{exc.key}" in task "{node.name}" '
                      f"(template string={exc.template}): {exc.error}")
            return self._finish(statuses.FAILED, _error(
                f'Failed to run task "{node.name}". Parameter rendering failed.. {detail}', exc.error))
        self.state.current = {"node": node.name, "requested": True, "at": now.timestamp()}
        self.state.status = statuses.RUNNING
        return Step(changed=True, request=(node, parameters))

    def _finish(self, status: str, error: dict[str, Any] | None = None) -> Step:
        self.state.status = status
        self.state.current = None
        if error is not None:
            self.state.error = error
        return Step(changed=True)

    def _task(self, name: str, child: Child) -> dict[str, Any]:
        return {"id": name, "name": name, "execution_id": child.id, "liveaction_id": child.id, "workflow": None,
                "created_at": isotime(child.start_timestamp), "updated_at": isotime(child.end_timestamp),
                "state": child.status, "result": child.result}


def utc_aware(value: datetime.datetime) -> datetime.datetime:
    """value with its time zone; a naive one (as the database gives it back) is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
