"""Execution use-cases shared by the services: request, status changes through the transition
table, cancel, re-run, results and output.

What each use-case writes and publishes:

| use-case       | write                                   | messages                                          |
| -------------- | --------------------------------------- | ------------------------------------------------- |
| request        | insert (status requested); parent's     | liveaction.status ``requested``; execution create |
|                | children list when it has a parent      |                                                   |
| request_many   | one insert for the requests prepare()   | as request, per execution, after the insert       |
|                | built (a batch the database refuses:    | (one the bus did not take: the sweep re-publishes |
|                | one by one); parents' children lists    | the ``requested`` record)                         |
| update_status  | one compare-and-set on the old status   | execution update {id, status}; liveaction.status  |
|                |                                         | <new status> when publish_work (callers pass it   |
|                |                                         | for statuses a work queue consumes: WORK_STATUSES)|
| cancel         | update_status to canceled (not started  | as update_status (``canceling`` reaches the       |
|                | yet) or canceling (running)             | action runners)                                   |
| re_run         | as request, context["re-run"]           | as request                                        |
| store_outputs  | one bulk insert of output chunks        | execution.output <stdout|stderr> {id, execution_id} |

Results bigger than ``[actionrunner] max_result_size`` bytes (as JSON) are
stored truncated, never rejected: the result becomes
``{"result_truncated": true, "original_size": n, "max_result_size": m,
"preview": <the first bytes of its JSON text>}`` plus, for a dict result, its
short scalar fields (return_code, succeeded, failed, status_code ...) so the
outcome stays readable.

A status change's update event carries the new status beside the id, and
whether the execution has a parent and the name of its runner, so a consumer
that acts only on some statuses (the notifier: completed ones) or only on
workflows and their children (the workflow engine) can pass over the others
without reading the record; the record stays the truth.

The action and runner type a request names are read through ``LOOKUPS``, a
RecordCache (st2common/persistence/cache.py): a write through Access in this
process forgets it at once; a change made by another process (``st2ctl
reload``) reaches this one's requests within LOOKUP_TTL seconds, or at once in
a process that consumes the action and runner type exchanges with a Forget
handler and calls ``LOOKUPS.watch()``.

A request is stored as mongoengine would store it (to_mongo), built without
its per-field machinery: prepare() sets checked values, the insert checks
only what changed since, and the dicts many executions share (the action and
runner type of a lookup, a rules engine's rule and trigger shapes, see
``share``) are escaped once, not once per execution.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

import mongoengine as me
from bson import ObjectId

from st2common import parameters as params
from st2common import statuses
from st2common.exceptions import (
    BusError, DatabaseError, NotFoundError, StaleRecordError, TransitionError, ValidationError,
)
from st2common.models.api.base import stored
from st2common.models.db.action import ActionDB
from st2common.models.db.base import (EscapedDictField, WholeDictField, WholeListField, document_of, escape,
                                      json_copy, utcnow)
from st2common.models.db.execution import ExecutionDB, ExecutionOutputDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.persistence.access import CREATE, UPDATE, Access
from st2common.persistence.cache import RecordCache
from st2common.runners.registry import WORKFLOW_RUNNERS
from st2common.transport.publisher import Publisher
from st2common.transport.topology import UPDATE_PROGRESS, WORK_QUEUES, WORKFLOW_UPDATE

LOG = logging.getLogger(__name__)

WORK_EXCHANGE = "liveaction.status"
OUTPUT_EXCHANGE = "execution.output"
# Statuses some work queue consumes; only these need a message on WORK_EXCHANGE.
WORK_STATUSES = frozenset(key for exchange, key in WORK_QUEUES.values() if exchange == WORK_EXCHANGE)
# StackStorm's default [system_user] user: the requester when a caller names none.
SYSTEM_USER = "stanley"
CANCELED_MESSAGE = "Action canceled by user."
# Result fields kept beside a truncated result's preview when short enough.
_KEPT_SCALAR_LENGTH = 256
_PREVIEW_LIMIT = 64 * 1024
_CONFLICT_ATTEMPTS = 20
# Bytes of JSON result a workflow child's completion event carries (see _completion).
INLINE_RESULT_LIMIT = 4096
# Seconds a looked-up action and runner type serve requests in a process that does not watch their events.
LOOKUP_TTL = 1.0
LOOKUP_WATCHED_TTL = 30.0
LOOKUPS = RecordCache("actions", (ActionDB, RunnerTypeDB), LOOKUP_TTL, LOOKUP_WATCHED_TTL)


def access(publisher: Publisher | None) -> Access[ExecutionDB]:
    """Access to executions, publishing their writes through publisher."""
    return Access(ExecutionDB, publisher)


def update_status(access: Access[ExecutionDB], execution: ExecutionDB, new_status: str,
                  publish_work: bool = True, via: tuple[str, ...] = (), expected: dict[str, Any] | None = None,
                  held: bool = False, **changes: Any) -> ExecutionDB:
    """Move execution to new_status if the table allows it and nobody moved it first.

    One conditional write (on the old status) and, when publish_work, one
    message on the liveaction.status exchange routed by the new status. The
    execution's log gets the {status, timestamp} entry in the same write.
    Statuses in via are passed through on the way, in the same write: each
    step is checked against the table and logged (the action runner claims a
    request it schedules itself as requested -> scheduled -> running at once).
    expected holds further values the record must still have (the action
    runner claims a request it has not read on its revision: the log it
    rewrites is then the one the request stored).
    held: execution is the caller's whole, current copy (the action runner's
    of a run it claimed, which nobody else writes but to change its status):
    the write's changes are applied to it and it is returned, instead of the
    stored document read back.
    Raises TransitionError for a change the table refuses, StaleRecordError
    when another writer changed the status in between.
    """
    old_status = execution.status
    step_from = old_status
    for step in (*via, new_status):
        statuses.check_transition("execution", execution.pk, step_from, step)
        step_from = step
    now = utcnow()
    fields = dict(changes)
    fields["status"] = new_status
    if new_status in statuses.COMPLETED and "end_timestamp" not in fields:
        fields["end_timestamp"] = now
    fields["log"] = list(execution.log or []) + [{"status": step, "timestamp": now} for step in (*via, new_status)]
    if held:
        if not access.set_if(execution.pk, {**(expected or {}), "status": old_status}, fields):
            raise StaleRecordError(f"execution {execution.pk} is no longer {old_status!r}")
        for name, value in fields.items():
            setattr(execution, name, value)
        execution.revision = (execution.revision or 0) + 1
        updated = execution
    else:
        updated = access.update_if(execution.pk, {**(expected or {}), "status": old_status}, fields, publish=False)
    if updated is None:
        raise StaleRecordError(f"execution {execution.pk} is no longer {old_status!r}")
    LOG.debug("execution %s: %s -> %s", execution.pk, old_status, new_status)
    publish_update(access, updated, new_status, old_status=old_status, **_completion(updated, new_status, fields))
    if publish_work and access.publisher is not None:
        access.publisher.publish(WORK_EXCHANGE, new_status, {"id": str(updated.pk)})
    return updated


def publish_update(access: Access[ExecutionDB], execution: ExecutionDB, status: str,
                   old_status: str | None = None, **extra: Any) -> None:
    """The update event of a written execution: {id, status, parent, runner, ...extra}.

    Whether it has a parent and its runner let consumers that follow only
    workflows pass it over unread; the routing key (``update.workflow``, see
    update_routing) keeps the updates no engine acts on from reaching it at all.
    """
    runner = (execution.runner or {}).get("name")
    access.publish(update_routing(execution.parent, runner, status, old_status), execution,
                   status=status, parent=bool(execution.parent), runner=runner, **extra)


def update_routing(parent: Any, runner: str | None, status: str, old_status: str | None = None) -> str:
    """The routing key of a status update: who acts on it (st2common.transport.topology).

    ``update.workflow`` for the updates a workflow engine acts on: every
    update of a workflow's own execution, and those of a workflow's plain
    child but while it waits to start or starts (the engine moves a task on
    when its child completes, pauses or waits, or runs again after either; a
    child's first ``running`` tells it nothing). ``update`` for the other
    completions (the notifier's), ``update.progress`` for the rest, which no
    service binds: nobody is woken to drop them.
    """
    if runner in WORKFLOW_RUNNERS:
        return WORKFLOW_UPDATE
    if parent and status not in _NOT_STARTED and not (status == statuses.RUNNING and old_status in _NOT_STARTED):
        return WORKFLOW_UPDATE
    return UPDATE if status in statuses.COMPLETED else UPDATE_PROGRESS


_NOT_STARTED = frozenset({statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED})


def _completion(execution: ExecutionDB, new_status: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A workflow child's small result and end time, carried by its completion's update event.

    The workflow engine moves the task on from them without reading the child
    back; a larger result (or one not written in this change) is read instead.
    """
    if not execution.parent or new_status not in statuses.COMPLETED or "result" not in fields:
        return {}
    if not 0 < (fields.get("result_size") or INLINE_RESULT_LIMIT + 1) <= INLINE_RESULT_LIMIT or not isinstance(
            fields.get("end_timestamp"), datetime.datetime):
        return {}
    return {"result": fields["result"], "end_timestamp": fields["end_timestamp"].isoformat()}


# -- request ------------------------------------------------------------------------------------

def runner_name(action: ActionDB) -> str:
    """The name of the runner type an action runs with."""
    runner_type = action.runner_type or {}
    return runner_type.get("name", "") if isinstance(runner_type, dict) else str(runner_type)


def action_dict(action: ActionDB) -> dict[str, Any]:
    """The action as an execution carries it (StackStorm's Action shape, runner_type a name)."""
    return {
        "id": str(action.pk), "uid": action.uid, "ref": action.ref, "name": action.name,
        "pack": action.pack, "description": action.description or "", "enabled": action.enabled,
        "entry_point": action.entry_point or "", "runner_type": runner_name(action),
        "parameters": dict(action.parameters or {}), "output_schema": dict(action.output_schema or {}),
        "notify": dict(action.notify or {}), "tags": list(action.tags or []),
        "metadata_file": action.metadata_file or "",
    }


def runner_dict(runner: RunnerTypeDB) -> dict[str, Any]:
    """The runner type as an execution carries it (StackStorm's RunnerType shape)."""
    return {
        "id": str(runner.pk), "uid": runner.uid, "name": runner.name, "description": runner.description or "",
        "enabled": runner.enabled, "runner_package": runner.runner_package,
        "runner_module": runner.runner_module, "runner_parameters": dict(runner.runner_parameters or {}),
        "output_key": runner.output_key, "output_schema": dict(runner.output_schema or {}),
    }


class _SharedForms:
    """Stored (escaped) forms of values that many executions carry and nobody changes in place.

    An action and its runner type as looked up, and the API shapes a rules
    engine copies into every execution of a rule: escaped once, not once per
    execution stored. Entries hold their value, so an id found here is its.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._forms: dict[int, tuple[Any, dict[Any, Any]]] = {}
        # Read by _stored_shape: a value whose id is not in it is not shared.
        self.forms = self._forms

    def share(self, value: Any) -> Any:
        """Mark value as never changed in place from now on; returns it."""
        if isinstance(value, dict) and id(value) not in self._forms:
            if len(self._forms) >= self.limit:
                # Values replaced by newer versions pile up here otherwise.
                self._forms.clear()
            self._forms[id(value)] = (value, {})
        return value

    def stored(self, field: Any, value: Any) -> Any:
        """field.to_mongo(value), made once per field for a shared value."""
        entry = self._forms.get(id(value))
        if entry is None or entry[0] is not value:
            return field.to_mongo(value)
        form = entry[1].get(field)
        if form is None:
            form = entry[1][field] = field.to_mongo(value)
        return form


_SHARED = _SharedForms()


def share(value: Any) -> Any:
    """Promise that value (a dict an execution carries) is never changed in place: it is escaped once."""
    return _SHARED.share(value)


@dataclass(frozen=True)
class _Lookup:
    """An action and its runner type as an execution carries them, read once for many requests."""

    action: dict[str, Any]
    runner: dict[str, Any]

    def __post_init__(self) -> None:
        _SHARED.share(self.action)
        _SHARED.share(self.runner)

    @functools.cached_property
    def schema(self) -> params.ParameterSchema:
        """The merged parameter definitions (built on first use: a bad override is the request's error)."""
        return params.ParameterSchema.build(self.runner["runner_parameters"], self.action["parameters"],
                                            self.action["ref"])


def _read_action(action_ref: str) -> _Lookup:
    action = Access(ActionDB).get(ref=action_ref)
    if action is None:
        raise NotFoundError("action", action_ref, f'Action "{action_ref}" cannot be found.')
    name = runner_name(action)
    runner = Access(RunnerTypeDB).get(name=name)
    if runner is None:
        raise NotFoundError("runner_type", name, f'Runner type "{name}" of action "{action_ref}" cannot be found.')
    return _Lookup(action_dict(action), runner_dict(runner))


def _load_action(action_ref: str) -> _Lookup:
    """The action and its runner type, shared by the executions that carry them; checks both are enabled."""
    lookup = LOOKUPS.get(action_ref, lambda: _read_action(action_ref))
    if not lookup.action["enabled"]:
        raise ValidationError(f'Unable to execute. Action "{action_ref}" is disabled.', field="action")
    if not lookup.runner["enabled"]:
        raise ValidationError(f'Runner "{lookup.runner["name"]}" has been disabled by the administrator.',
                              field="action")
    return lookup


def _check_delay(delay: Any) -> int | None:
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValidationError(f"delay must be a whole number of milliseconds >= 0, got {delay!r}", field="delay")
    return delay or None


def prepare(action_ref: str, parameters: dict[str, Any] | None = None, *,
            context: dict[str, Any] | None = None, delay: int | None = None, parent: str | None = None,
            notify: dict[str, Any] | None = None, trace_tag: str | None = None,
            user: str | None = None, parent_user: str | None = None,
            origin: Callable[[ExecutionDB], dict[str, Any]] | None = None) -> ExecutionDB:
    """The execution request() would store for these arguments, validated, not stored yet; request's errors."""
    lookup = _load_action(action_ref)
    action = lookup.action
    delay = _check_delay(delay)
    ctx = dict(context or {})
    parent_id = None
    if parent:
        if parent_user:
            parent_id = str(parent)
        else:
            parent_doc = access(None).get_by_id(parent)
            parent_id, parent_user = str(parent_doc.pk), (parent_doc.context or {}).get("user")
        ctx["parent"] = {**dict(ctx.get("parent") or {}), "execution_id": parent_id}
        # A child runs on behalf of whoever started its parent (StackStorm's rule).
        user = parent_user or user
    ctx["user"] = user or ctx.get("user") or SYSTEM_USER
    ctx.setdefault("pack", action["pack"])
    if trace_tag:
        ctx["trace_context"] = {"trace_tag": trace_tag}
    live = params.render_live(lookup.schema, parameters, ctx)

    now = utcnow()
    # Its id given in advance: a batch that failed half way is stored again without doubles (request_many).
    # The values are known good and in their loaded shape. The action and runner stay shared with the lookup
    # (reading them through the document copies what it changes); the caller's values are copied, as
    # mongoengine's constructor would have.
    execution = _new_execution(
        id=ObjectId(), status=statuses.REQUESTED, action_ref=action["ref"], action=action, runner=lookup.runner,
        parameters=json_copy(live), context=json_copy(ctx), parent=parent_id, delay=delay,
        notify=json_copy(notify or action["notify"] or {}), log=[{"status": statuses.REQUESTED, "timestamp": now}],
        start_timestamp=now,
    )
    for name, value in (origin(execution) if origin else {}).items():
        if name in ExecutionDB._fields and value is not None:
            # What mongoengine's setter does for a new document, without its checks: marked changed, the field is
            # validated when stored (_stored_shape).
            execution._data[name] = value
            execution._changed_fields.append(name)
        else:
            setattr(execution, name, value)
    return execution


_EXECUTION_FIELDS = tuple(ExecutionDB._fields.items())
_EXECUTION_NAMES = tuple(name for name, _ in _EXECUTION_FIELDS)
# The fields whose None is replaced by their default, as mongoengine's constructor does.
_DEFAULTED = tuple((name, field.default) for name, field in _EXECUTION_FIELDS
                   if not field.null and field.default is not None)


def _new_execution(**values: Any) -> ExecutionDB:
    """ExecutionDB(__auto_convert=False, **values), for values known good and in their loaded shape.

    mongoengine's constructor goes through every field's setter, and its
    descriptor for each default: a fifth of the CPU of a rule's request. This
    leaves the same document: every field in _data (None given: the field's
    default), the choice fields' get_<name>_display, no change marks yet, but
    kept from here on (a new document keeps none otherwise); and no reference
    cycle, so it is freed as soon as it is dropped.
    """
    data = {name: values.get(name) for name in _EXECUTION_NAMES}
    for name, default in _DEFAULTED:
        if data[name] is None:
            data[name] = default() if callable(default) else default
    return document_of(ExecutionDB, data, kept_changes=True)


# What a field's to_mongo() gives for the values prepare() puts in them, without mongoengine's walk of each
# value (most of the CPU of a stored shape). Each answers _NOT_PLAIN for a value it cannot vouch for: to_mongo()
# then does it.
_NOT_PLAIN = object()


def _former(field: me.fields.BaseField) -> Callable[[Any], Any]:
    """A faster field.to_mongo for the values it can vouch for; _NOT_PLAIN for the others."""
    kind = type(field)
    if kind is me.StringField:
        return lambda value: value if isinstance(value, str) else _NOT_PLAIN
    if kind is me.IntField:
        # int() of a bool (an int too) is not the bool.
        return lambda value: value if value.__class__ is int else _NOT_PLAIN
    if kind is me.DateTimeField:
        return lambda value: value if isinstance(value, datetime.datetime) else _NOT_PLAIN
    if kind is EscapedDictField and field.field is None:
        return lambda value: escape(value) if isinstance(value, (dict, list)) else _NOT_PLAIN
    if kind in (WholeDictField, WholeListField):
        # Their own to_mongo copies a plain value without mongoengine's walk (models.db.base._whole_copy).
        return field.to_mongo
    return lambda value: _NOT_PLAIN


_FIELDS = [(name, ExecutionDB._fields[name], _former(ExecutionDB._fields[name]))
           for name in ExecutionDB._fields_ordered if name != "id"]


def _stored_shape(execution: ExecutionDB) -> dict[str, Any]:
    """What mongoengine's to_mongo() gives for an execution, checked as its insert would check it.

    prepare() builds every field from checked values, so of its executions
    only the fields set or changed since (marked changed) go through their
    field's validation; a shared value is escaped once (share).
    """
    if execution.pk is None:
        execution.id = ObjectId()
        execution._created = True  # mongoengine takes setting the id of a new document for a stored one
    data = execution._data
    marks = getattr(execution, "_changed_fields", None)
    if marks is None:
        # Not built by prepare() (a new document keeps no change marks): all of it is checked.
        _validate(execution.validate)
        marks = ()
    changed = {name.split(".")[0] for name in marks}
    son: dict[str, Any] = {"_id": execution.pk}
    shared = _SHARED.forms
    for name, field, former in _FIELDS:
        value = data.get(name)
        if name in changed:
            if value is None:
                if field.required:
                    raise ValidationError(f"invalid execution: field {name} is required", field=name)
            else:
                _validate(lambda: field.validate(value), name)
        if value is not None:
            if id(value) in shared:
                value = _SHARED.stored(field, value)
            else:
                form = former(value)
                value = field.to_mongo(value) if form is _NOT_PLAIN else form
        if value is not None or field.null:
            son[field.db_field] = value
    return son


def _validate(check: Callable[[], Any], name: str | None = None) -> None:
    """check(), its mongoengine error as ours (as Access reports an invalid document)."""
    try:
        check()
    except me.ValidationError as exc:
        fields = sorted((exc.errors or {}).keys())
        raise ValidationError(f"invalid execution: {exc}", field=name or (fields[0] if fields else None)) from exc


def _insert(executions: Access[ExecutionDB], prepared: list[ExecutionDB]) -> None:
    """Store executions prepare() built in one ordered insert, their stored shape built here (insert_many's)."""
    executions.insert_raw([_stored_shape(execution) for execution in prepared])
    for execution in prepared:
        execution._created = False
        execution._changed_fields = []


def request(publisher: Publisher, action_ref: str, parameters: dict[str, Any] | None = None, *,
            context: dict[str, Any] | None = None, delay: int | None = None, parent: str | None = None,
            notify: dict[str, Any] | None = None, trace_tag: str | None = None,
            user: str | None = None, parent_user: str | None = None,
            origin: Callable[[ExecutionDB], dict[str, Any]] | None = None) -> ExecutionDB:
    """Validate a request for action_ref, store it as ``requested`` and tell the scheduler.

    origin(execution) gives fields stored with it in the same write (a rule's
    rule, trigger, trigger_type and trigger_instance). NotFoundError names an
    unknown action; ParameterError names a parameter that is unknown,
    immutable, of the wrong type, missing or fails to render.
    parent_user, from a caller that holds the parent's context (the workflow
    engine), spares reading the parent; a parent that turns out not to exist
    is then found when its children list is written (NotFoundError, the
    child deleted).
    """
    execution = prepare(action_ref, parameters, context=context, delay=delay, parent=parent, notify=notify,
                        trace_tag=trace_tag, user=user, parent_user=parent_user, origin=origin)
    executions = access(publisher)
    _insert(executions, [execution])
    _link_to_parent(executions, execution)
    _announce(executions, execution)
    return execution


def request_many(publisher: Publisher, prepared: list[ExecutionDB], parents_held: bool = False,
                 listed: Callable[[str, list[str]], None] | None = None) -> list[ExecutionDB | Exception]:
    """Store executions prepare() built in one insert, then tell the scheduler of each, in order.

    Per execution: the stored execution, or the error that kept it from being
    stored (one execution's error never fails the others). The messages go
    after the write, as request() sends them; one the bus did not take is
    sent again by the execution sweep (st2common.services.sweep), which
    re-publishes ``requested`` records, so a stored execution counts as
    requested.

    parents_held: the caller vouches that the parents exist (a workflow
    engine requesting its workflow's children), so each child joins its
    parent's children after its messages, off the way to running it; a
    parent gone by then is logged, and the child runs. listed(parent, ids),
    when given, lists them instead (the workflow engine, a little later).
    """
    executions = access(publisher)
    outcomes: list[ExecutionDB | Exception] = list(prepared)
    try:
        _insert(executions, prepared)
    except Exception as exc:  # a document the batch could not take (refused, not encodable), or the database
        # Only the type: a bulk error's text may quote a document, parameters and all.
        LOG.warning("%d execution requests stored one by one after %s", len(prepared), type(exc).__name__)
        outcomes = _store_each(executions, prepared)
    if not parents_held:
        _link_all(executions, prepared, outcomes)
    bus_down = False
    for execution, outcome in zip(prepared, outcomes):
        if outcome is not execution or bus_down:
            continue
        try:
            _announce(executions, execution)
        except BusError as exc:
            # Stored is requested: the sweep nudges it; the other messages would only wait for the bus too.
            LOG.warning("execution %s stored, its messages not sent (the sweep re-publishes it): %s",
                        execution.pk, exc)
            bus_down = True
    if parents_held:
        # The children of one parent join it in one write (a split's branches, a task's items).
        by_parent: dict[str, list[str]] = {}
        for execution, outcome in zip(prepared, outcomes):
            if outcome is execution and execution.parent:
                by_parent.setdefault(str(execution.parent), []).append(str(execution.pk))
        for parent, children in by_parent.items():
            if listed is not None:
                listed(parent, children)
                continue
            try:
                if not executions.push(parent, "children", children):
                    LOG.warning("executions %s requested, their parent %s is gone", ", ".join(children), parent)
            except DatabaseError as exc:
                LOG.warning("executions %s requested, not listed among their parent's children: %s",
                            ", ".join(children), exc)
    return outcomes


def _link_all(executions: Access[ExecutionDB], prepared: list[ExecutionDB],
              outcomes: list[ExecutionDB | Exception]) -> None:
    """_link_to_parent of each stored child in prepared; a failure replaces its outcome."""
    for position, execution in enumerate(prepared):
        if outcomes[position] is execution and execution.parent:
            try:
                _link_to_parent(executions, execution)
            except Exception as exc:  # its own requester raises or records it; the others go on
                outcomes[position] = exc


def _store_each(executions: Access[ExecutionDB], prepared: list[ExecutionDB]) -> list[ExecutionDB | Exception]:
    """Store the executions of a batch that failed one at a time; per execution, it or its error."""
    outcomes: list[ExecutionDB | Exception] = []
    database_error: DatabaseError | None = None
    for execution in prepared:
        if database_error is not None:
            # The database is failing, not a document: the others would wait for it in turn.
            outcomes.append(database_error)
            continue
        try:
            # Its id was given in advance: one the failed batch stored is replaced, not doubled.
            outcomes.append(executions.add_or_update(execution, publish=False))
        except DatabaseError as exc:
            database_error = exc
            outcomes.append(exc)
        except Exception as exc:  # its own requester raises or records it; the others go on
            outcomes.append(exc)
    return outcomes


def _link_to_parent(executions: Access[ExecutionDB], execution: ExecutionDB) -> None:
    """Add a stored child to its parent's children; a parent that is gone: the child deleted, NotFoundError."""
    if execution.parent is None:
        return
    if not executions.push(execution.parent, "children", [str(execution.pk)]):
        executions.delete(execution, publish=False)
        raise NotFoundError("execution", execution.parent, f'Parent execution "{execution.parent}" cannot be found.')


def _announce(executions: Access[ExecutionDB], execution: ExecutionDB) -> None:
    """The messages of a stored request: liveaction.status ``requested``, then the execution create event."""
    # What the scheduler needs to decide without reading the record (a re-published request has only the id).
    executions.publisher.publish(WORK_EXCHANGE, statuses.REQUESTED,
                                 {"id": str(execution.pk), "action_ref": execution.action_ref,
                                  "delay": execution.delay, "start_timestamp": execution.start_timestamp.isoformat()})
    # After the work: nothing on the way to running waits for the record's create event.
    executions.publish(CREATE, execution)
    LOG.info("execution %s of %s requested by %s", execution.pk, execution.action_ref,
             (stored(execution, "context") or {}).get("user"))


def re_run(publisher: Publisher, execution_id: str, parameters: dict[str, Any] | None = None, *,
           no_merge: bool = False, delay: int | None = None, user: str | None = None,
           tasks: list[str] | None = None, reset: list[str] | None = None) -> ExecutionDB:
    """Request the action of an earlier execution again, its parameters overlaid by parameters."""
    old = access(publisher).get_by_id(execution_id)
    tasks, reset = list(tasks or []), list(reset or [])
    runner = (old.runner or {}).get("name") or (old.action or {}).get("runner_type")
    if (tasks or reset) and runner != "orquesta":
        raise ValidationError("tasks and reset are only supported for Orquesta workflows", field="tasks")
    if tasks and parameters:
        raise ValidationError("parameters override is not supported when re-running specific tasks",
                              field="parameters")
    if not set(reset) <= set(tasks):
        raise ValidationError(f"only tasks that are re-run can be reset: {sorted(set(reset) - set(tasks))}",
                              field="reset")
    merged = dict(parameters or {}) if no_merge else {**dict(old.parameters or {}), **dict(parameters or {})}
    rerun: dict[str, Any] = {"ref": str(old.pk)}
    if tasks:
        rerun["tasks"] = tasks
    if reset:
        rerun["reset"] = reset
    context: dict[str, Any] = {"re-run": rerun}
    old_context = old.context or {}
    if old_context.get("trace_context"):
        context["trace_context"] = old_context["trace_context"]
    return request(publisher, old.action_ref, merged, context=context, delay=delay, notify=old.notify or None,
                   user=user or old_context.get("user"))


# -- cancel -------------------------------------------------------------------------------------

def cancel(publisher: Publisher, execution_id: str, user: str | None = None) -> ExecutionDB:
    """Ask for an execution to stop: canceled at once if no runner has it yet, else canceling.

    Already canceled or canceling: returned unchanged. Completed otherwise:
    TransitionError (StackStorm answers it with a 200 carrying a faultstring).
    """
    executions = access(publisher)
    execution = executions.get_by_id(execution_id)
    for _ in range(_CONFLICT_ATTEMPTS):
        status = execution.status
        if status in (statuses.CANCELED, statuses.CANCELING):
            return execution
        if status not in statuses.CANCELABLE:
            raise TransitionError("execution", execution.pk, status, statuses.CANCELING)
        not_started = status in (statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED)
        try:
            if not_started and not execution.parent:
                return update_status(executions, execution, statuses.CANCELED, publish_work=False,
                                     result={"message": CANCELED_MESSAGE, "user": user or SYSTEM_USER})
            # A runner holds it (or, for a workflow child, the workflow decides): the action
            # runners get the canceling message and stop it.
            return update_status(executions, execution, statuses.CANCELING)
        except StaleRecordError:
            execution = executions.get_by_id(execution_id)
    raise StaleRecordError(f"execution {execution_id} kept changing while being canceled")


# -- results and output -------------------------------------------------------------------------

def _json_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def limit_result(result: Any, max_size: int) -> tuple[Any, int]:
    """The result as it is stored (JSON-safe, truncated past max_size bytes) and its size in bytes."""
    coerced = False

    def fallback(value: Any) -> Any:
        nonlocal coerced
        coerced = True
        return list(value) if isinstance(value, (set, frozenset, tuple)) else str(value)

    text = json.dumps(result, default=fallback, separators=(",", ":"))
    if coerced:
        result = json.loads(text)
    size = _json_size(text)
    if max_size <= 0 or size <= max_size:
        return result, size
    truncated: dict[str, Any] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            if value is None or isinstance(value, (bool, int, float)) or (
                    isinstance(value, str) and len(value) <= _KEPT_SCALAR_LENGTH):
                truncated[key] = value
    truncated.update({"result_truncated": True, "original_size": size, "max_result_size": max_size,
                      "preview": text[:min(max_size // 2, _PREVIEW_LIMIT)]})
    LOG.warning("result of %d bytes truncated (max_result_size %d)", size, max_size)
    return truncated, _json_size(json.dumps(truncated, separators=(",", ":")))


def store_output(publisher: Publisher | None, execution: ExecutionDB, output_type: str,
                 data: str) -> ExecutionOutputDB:
    """Store one chunk of a running execution's output and announce it on execution.output."""
    return store_outputs(publisher, execution, [(output_type, data, utcnow())])[0]


def store_outputs(publisher: Publisher | None, execution: ExecutionDB,
                  chunks: list[tuple[str, str, datetime.datetime]]) -> list[ExecutionOutputDB]:
    """Store chunks (output_type, data, timestamp) in one bulk insert, in order; announce each."""
    runner_ref = (execution.runner or {}).get("name")
    docs = [ExecutionOutputDB(execution_id=str(execution.pk), action_ref=execution.action_ref,
                              runner_ref=runner_ref, timestamp=timestamp, output_type=output_type, data=data)
            for output_type, data, timestamp in chunks]
    docs = Access(ExecutionOutputDB).insert_many(docs, reload=False)
    if publisher is not None:
        for doc in docs:
            publisher.publish(OUTPUT_EXCHANGE, doc.output_type, {"id": str(doc.pk), "execution_id": str(execution.pk)})
    return docs
