"""ActionChain use-cases: start a chain for an execution, move it on as its children complete,
pause, resume and cancel it at node boundaries, and recover what a crash left behind.

- request (in the action-chain runner): an ActionChainExecutionDB stored ``requested``
  and the execution taken off the action runner's books. The engine starts the chain
  when the action runner records the runner's ``running`` result (that write's
  execution update reaches the engine), so nothing the engine does can race the
  action runner's own last write.
- execution_changed (in the engine, for every execution update): a chain's own execution
  starting, or asked to pause / resume / cancel; or a child of a chain that completed,
  went paused or pending. Each is one compare-and-set of the chain record (on
  ``revision``) through the pure ChainConductor, then the child request it asks for,
  then the chain's execution brought in line (status; result when paused or done).
- sweep (in the engine's periodic sweep): chains left unchanged for a while are caught
  up with a lost start, a lost child update, a lost control, or a child a crash kept
  from being requested.

The control path needs nothing chain-specific: setting the chain's execution to
``pausing``, ``resuming`` or ``canceling`` (workflows.pause / resume and
executions.cancel, as ``PUT /executions/{id}`` does) is enough; the engine's
``ChainService.control`` then acts on it, at the next node boundary.
"""

from __future__ import annotations

import datetime
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

import eventlet

from st2common import statuses
from st2common.exceptions import (NotFoundError, StackStormBaseException, StaleRecordError, TransitionError,
                                  ValidationError)
from st2common.models.db.actionchain import ActionChainExecutionDB
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services.configs import LazyConfig
from st2common.services.keyvalues import Datastore
from st2common.services import workflow_control
from st2common.services.workflows import plain, resume_paused_parent
from st2common.templating import st2kv_context
from st2common.transport.publisher import Publisher
from st2workflowengine.actionchain.conductor import ChainConductor, ChainState, Child, Lookups, Step, utc_aware
from st2workflowengine.actionchain.spec import ChainSpec, Node, parse

LOG = logging.getLogger(__name__)

RUNNER = "action-chain"
CONTROL_STATUSES = frozenset({statuses.PAUSING, statuses.RESUMING, statuses.CANCELING, statuses.CANCELED})
CHILD_STATUSES = statuses.COMPLETED | {statuses.PAUSED, statuses.PENDING}
SWEPT = (statuses.REQUESTED, statuses.RUNNING, statuses.PAUSING, statuses.PAUSED, statuses.CANCELING)
_CAS_ATTEMPTS = 100
_CHILD_FIELDS = ("id", "status", "context", "result", "start_timestamp", "end_timestamp", "runner", "log",
                 "parent")


def is_chain(execution: ExecutionDB) -> bool:
    """True for an execution of an ActionChain action."""
    return ((execution.runner or {}).get("name") or (execution.action or {}).get("runner_type")) == RUNNER


def chain_node(execution: ExecutionDB) -> str | None:
    """The chain node an execution runs for (StackStorm's ``context.chain.name``), or None."""
    chain = (execution.context or {}).get("chain")
    return chain.get("name") if isinstance(chain, dict) and execution.parent else None


# -- request (in the action runner) ------------------------------------------------------------

def request(execution_id: str, spec: ChainSpec, parameters: dict[str, Any], runner_parameters: dict[str, Any],
            source: str = "") -> ActionChainExecutionDB:
    """Store a chain execution, ``requested``, for a running execution."""
    access = Access(ExecutionDB)
    execution = access.get_by_id(execution_id)
    record = ActionChainExecutionDB(
        action_execution=str(execution.pk), spec=dict(spec.definition), source=source,
        parameters=dict(parameters), context=dict(execution.context or {}), notify=dict(execution.notify or {}),
        options={"display_published": runner_parameters.get("display_published", True) is not False,
                 "skip_notify": list(runner_parameters.get("skip_notify") or [])})
    record = Access(ActionChainExecutionDB).add_or_update(record, publish=False)
    # The engine carries it from now on: without a worker id, the sweep never abandons it
    # when the action runner that started it stops.
    info = {k: v for k, v in dict(execution.runner_info or {}).items() if k != "worker_id"}
    access.update_if(execution.pk, {}, {"runner_info": info}, publish=False)
    LOG.info("action chain execution %s requested for execution %s", record.pk, execution.pk)
    return record


@dataclass
class Outcome:
    """What one stored change of a chain led to."""

    record: ActionChainExecutionDB
    conductor: ChainConductor
    step: Step


class ChainService:
    """The engine's side of ActionChain: moves chains on as their executions change."""

    def __init__(self, settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.chains: Access[ActionChainExecutionDB] = Access(ActionChainExecutionDB)
        self.executions: Access[ExecutionDB] = executions.access(publisher)
        self.datastore = Datastore(settings)

    # -- engine entry point -----------------------------------------------------------------

    def execution_changed(self, execution: ExecutionDB) -> None:
        """Route one execution update: the chain's own execution, or a child of a chain."""
        if is_chain(execution):
            if execution.status == statuses.RUNNING:
                self.start(str(execution.pk))
            elif execution.status in CONTROL_STATUSES:
                self.control(execution)
        if chain_node(execution) and execution.status in CHILD_STATUSES:
            self.child_changed(execution)

    def start(self, execution_id: str) -> None:
        """A requested chain starts: vars rendered, its start node requested."""
        record = self.chains.get(action_execution=execution_id)
        if record is None or record.status != statuses.REQUESTED:
            return
        self.advance(self.mutate(execution_id, lambda conductor, control, now: conductor.start(control, now)))

    def child_changed(self, child: ExecutionDB) -> None:
        """A child completed, or went paused or pending: its chain moves on (or pauses)."""
        seen = Child(str(child.pk), chain_node(child), child.status, child.result if child.status in
                     statuses.COMPLETED else None, child.start_timestamp, child.end_timestamp)
        if child.status in statuses.COMPLETED:
            change = lambda conductor, control, now: conductor.node_ended(seen, control, now)  # noqa: E731
        else:
            change = lambda conductor, control, now: conductor.node_waiting(seen)  # noqa: E731
        self.advance(self.mutate(child.parent, change))

    def control(self, execution: ExecutionDB) -> None:
        """The chain's execution was asked to pause, resume or cancel: the chain follows."""
        if self.chains.get(action_execution=str(execution.pk)) is None:
            return

        def change(conductor: ChainConductor, control: str | None, now: datetime.datetime) -> Step:
            # The execution's status as read now, not as the update said: a redelivered
            # "pausing" must not pause a chain that has been resumed since.
            if control not in CONTROL_STATUSES:
                return Step()
            child = self.current_child(conductor, str(execution.pk))
            active = child is None or child.status not in statuses.COMPLETED
            return conductor.control(control, active, now)
        outcome = self.mutate(str(execution.pk), change)
        if outcome is not None:
            LOG.info("action chain of execution %s: control asked, chain now %s", execution.pk,
                     outcome.conductor.state.status)
        self.advance(outcome)

    # -- the one way a chain changes --------------------------------------------------------

    def conductor_of(self, record: ActionChainExecutionDB) -> ChainConductor:
        """The conductor a chain record stores, with this engine's datastore and config lookups."""
        context = plain(record.context) or {}
        user = context.get("api_user") or context.get("user")
        state = ChainState(status=record.status, vars=plain(record.vars) or {},
                           published=plain(record.published) or {}, tasks=plain(record.tasks) or [],
                           current=plain(record.current), error=plain(record.error))
        lookups = Lookups(st2kv=st2kv_context(self.datastore, user),
                          config=LazyConfig(context.get("pack"), user, self.settings))
        options = record.options or {}
        return ChainConductor(parse(plain(record.spec), record.source or ""), plain(record.parameters) or {}, state,
                              execution_id=record.action_execution, context=context,
                              display_published=options.get("display_published", True) is not False,
                              lookups=lookups)

    def mutate(self, execution_id: Any, change: Callable[[ChainConductor, str | None, datetime.datetime], Step]
               ) -> Outcome | None:
        """Apply change under a compare-and-set on the chain record; None when nothing changed."""
        for attempt in range(_CAS_ATTEMPTS):
            record = self.chains.get(action_execution=str(execution_id))
            if record is None or record.status in statuses.COMPLETED:
                return None
            conductor = self.conductor_of(record)
            control = self._status_of(record.action_execution)
            if control is None or control in statuses.COMPLETED:
                # Its execution ended (or is gone) without it: nothing more may run for it.
                step = conductor.end(control or statuses.ABANDONED)
            else:
                step = change(conductor, control, utcnow())
            if not step.changed:
                return None
            state = conductor.state
            now = utcnow()
            fields = {"status": state.status, "vars": state.vars, "published": state.published,
                      "tasks": state.tasks, "current": state.current, "error": state.error, "updated_at": now}
            if state.status in statuses.COMPLETED:
                fields["end_timestamp"] = now
            updated = self.chains.update_if(record.pk, {"revision": record.revision}, fields, publish=False)
            if updated is not None:
                return Outcome(updated, conductor, step)
            # Another engine copy wrote first: start over from what it stored.
            eventlet.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StaleRecordError(f"action chain of execution {execution_id} kept changing under this engine")

    def advance(self, outcome: Outcome | None) -> None:
        """Act on a stored change: pass a control on, request the next child, show the status."""
        while outcome is not None:
            step = outcome.step
            if step.cascade:
                self._cascade(outcome.record.action_execution, outcome.conductor, step.cascade)
            failed = self._request(outcome, *step.request) if step.request is not None else None
            self._sync_execution(outcome)
            outcome = failed

    # -- children ---------------------------------------------------------------------------

    def _request(self, outcome: Outcome, node: Node, parameters: dict[str, Any]) -> Outcome | None:
        """Request a node's child; when it is refused, the stored change that failure leads to."""
        execution_id = outcome.record.action_execution
        try:
            self._request_child(outcome.record, outcome.conductor, node, parameters)
            return None
        except (NotFoundError, ValidationError) as exc:
            LOG.info("action chain of execution %s: node %s cannot be requested: %s", execution_id, node.name, exc)
            if isinstance(exc, NotFoundError) and getattr(exc, "resource", None) == "action":
                return self.mutate(execution_id, lambda c, control, now: c.action_missing(node.name))
            return self.mutate(execution_id,
                               lambda c, control, now, error=exc: c.request_failed(node.name, error, control, now))

    def _request_child(self, record: ActionChainExecutionDB, conductor: ChainConductor, node: Node,
                       parameters: dict[str, Any]) -> ExecutionDB:
        context = {"parent": conductor.parent_context(), "chain": node.context()}
        options = record.options or {}
        notify = None
        if node.name not in (options.get("skip_notify") or []):
            notify = dict(node.notify or record.notify or {}) or None
        own = record.context or {}
        child = executions.request(
            self.publisher, node.ref, parameters, context=context, parent=record.action_execution,
            user=own.get("user"), notify=notify, trace_tag=(own.get("trace_context") or {}).get("trace_tag"))
        LOG.info("action chain of execution %s: node %s requested as execution %s", record.action_execution,
                 node.name, child.pk)
        return child

    def current_child(self, conductor: ChainConductor, execution_id: str) -> ExecutionDB | None:
        """The child execution of the node the chain waits on, if it was requested and exists."""
        current = conductor.state.current or {}
        if not current.get("requested"):
            return None
        for child in self.executions.query({"parent": execution_id}, only=_CHILD_FIELDS,
                                           order_by=["-start_timestamp"]):
            seen = Child(str(child.pk), chain_node(child), child.status, None, child.start_timestamp)
            if conductor.is_current(seen):
                return child
        return None

    def _cascade(self, execution_id: str, conductor: ChainConductor, wanted: str) -> None:
        """Pass a pause, resume or cancel on to the running child that takes it (workflows)."""
        child = self.current_child(conductor, execution_id)
        if child is None:
            return
        workflow_control.pass_on(self.publisher, self.executions, child, wanted, execution_id)

    # -- the chain's execution ----------------------------------------------------------------

    def _status_of(self, execution_id: str) -> str | None:
        found = self.executions.query({"id": execution_id}, only=("id", "status"))
        return found[0].status if found else None

    def _sync_execution(self, outcome: Outcome) -> None:
        """Show the chain's status on its execution; the result too once paused or done."""
        status = outcome.conductor.state.status
        if status == statuses.REQUESTED:
            return
        changes: dict[str, Any] = {}
        if status in statuses.COMPLETED or status == statuses.PAUSED:
            result, size = executions.limit_result(outcome.conductor.result(),
                                                   self.settings.actionrunner.max_result_size)
            changes = {"result": result, "result_size": size}
        for _ in range(_CAS_ATTEMPTS):
            try:
                execution = self.executions.get_by_id(outcome.record.action_execution)
            except NotFoundError:
                LOG.warning("action chain %s: its execution is gone", outcome.record.pk)
                return
            target = status
            if execution.status == statuses.CANCELING and status in statuses.COMPLETED:
                target = statuses.CANCELED  # a cancel asked while the chain ended still ends it canceled
            if execution.status in statuses.COMPLETED or (execution.status == target and not changes):
                return
            via = ()
            if not statuses.is_transition_valid("execution", execution.status, target):
                via = (statuses.RUNNING,)
            try:
                if execution.status == target:
                    self.executions.update_if(execution.pk, {"status": target}, changes)
                else:
                    executions.update_status(self.executions, execution, target, publish_work=False, via=via,
                                             **changes)
                    LOG.info("action chain of execution %s %s", execution.pk, target)
                if target == statuses.RUNNING and execution.parent:
                    resume_paused_parent(self.executions, execution.parent)
                return
            except StaleRecordError:
                continue
            except TransitionError as exc:
                LOG.warning("action chain %s: execution %s cannot show %s: %s", outcome.record.pk, execution.pk,
                            target, exc)
                return

    # -- recovery -----------------------------------------------------------------------------

    def sweep(self, idle_for: float = 0.0) -> int:
        """Catch up every unfinished chain unchanged for idle_for seconds; how many were looked at."""
        cutoff = utcnow() - datetime.timedelta(seconds=idle_for)
        found = self.chains.query({"status__in": list(SWEPT)}, raw={"updated_at": {"$lte": cutoff}},
                                  order_by=["updated_at"])
        for record in found:
            try:
                self.reconcile(record, idle_since=cutoff)
            except StackStormBaseException as exc:
                LOG.warning("sweep: action chain %s not reconciled: %s", record.pk, exc)
        return len(found)

    def reconcile(self, record: ActionChainExecutionDB, idle_since: datetime.datetime | None = None) -> None:
        """Replay what a chain may have missed: its start, a control, its child's last update, a lost request.

        idle_since: a sweep's cutoff. A chain written after it is being moved on right now (its
        engine may be storing the child it just requested), so the sweep leaves it alone.
        """
        try:
            execution = self.executions.get_by_id(record.action_execution)
        except NotFoundError:
            return
        if execution.status in statuses.COMPLETED:
            self.mutate(record.action_execution, lambda c, control, now: c.end(execution.status))
            return
        if record.status == statuses.REQUESTED:
            self.start(record.action_execution)
            return
        if execution.status in CONTROL_STATUSES:
            self.control(execution)
        record = self.chains.get_by_id(record.pk)
        written = record.updated_at
        if idle_since is not None and written is not None and utc_aware(written) > utc_aware(idle_since):
            return
        conductor = self.conductor_of(record)
        current = conductor.state.current or {}
        if conductor.state.status in statuses.COMPLETED or not current.get("requested"):
            return
        child = self.current_child(conductor, record.action_execution)
        if child is None:
            LOG.warning("action chain of execution %s: node %s was never requested; requesting it",
                        record.action_execution, current.get("node"))
            self.advance(self.mutate(record.action_execution, lambda c, control, now: c.request_again(control, now)))
        elif child.status in CHILD_STATUSES:
            self.child_changed(self.executions.get_by_id(child.pk))
