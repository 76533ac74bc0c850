"""Inquiry use-cases: list and read pending inquiries, answer one, time out the overdue ones.

An inquiry is not a record of its own: it is an execution of the ``inquirer``
runner (core.ask) in status ``pending``, whose result holds the question
``{schema, roles, users, route, ttl}`` (st2actionrunner.runners.inquirer).

| use-case | checks                                             | writes                                   |
| -------- | -------------------------------------------------- | ---------------------------------------- |
| respond  | an inquirer execution, still pending (400); the    | pending -> succeeded, result + response; |
|          | caller in ``users`` and holding one of ``roles``   | then its workflow moves on (below)       |
|          | when those are set, admins always (403); the       |                                          |
|          | response valid against ``schema`` (400)            |                                          |
| expire   | pending longer than ``ttl`` minutes (ttl > 0)      | pending -> timeout; its workflow moves on|

Moving the workflow on: under Orquesta the answered task is applied to the
workflow's conductor here, before the workflow is resumed, so a resume never
finds the task still pending and pauses again; the engine's own handling of
the same update is then a no-op. The workflow is resumed only when it paused
(nothing else was active); otherwise the answer's next tasks are requested at
once. Under any other parent (ActionChain) the root execution is asked to
resume when it is pausing or paused, as StackStorm does.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any, Iterable, Mapping

from st2common import statuses
from st2common.exceptions import (AccessDeniedError, NotFoundError, StaleRecordError, TransitionError,
                                  ValidationError)
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.services import executions, triggertypes
from st2common.services.workflows import WorkflowService
from st2workflowengine.orquesta import WorkflowConductor

LOG = logging.getLogger(__name__)

RUNNER = "inquirer"
# The stored filter of "the inquiries": pending executions of the inquirer runner.
PENDING_QUERY = {"status": statuses.PENDING, "runner.name": RUNNER}
FIELDS = ("route", "ttl", "users", "roles", "schema")
_PAUSED = (statuses.PAUSING, statuses.PAUSED)


def is_inquiry(execution: ExecutionDB) -> bool:
    """True for an execution of the inquirer runner."""
    return (execution.runner or {}).get("name") == RUNNER


def to_api(execution: ExecutionDB) -> dict[str, Any]:
    """StackStorm's inquiry shape: {id, route, ttl, users, roles, schema}."""
    result = execution.result if isinstance(execution.result, Mapping) else {}
    return {"id": str(execution.pk), **{name: result.get(name) for name in FIELDS}}


def check_open(execution: ExecutionDB) -> None:
    """ValidationError unless this is an inquiry still waiting for its answer."""
    inquiry_id = str(execution.pk)
    if not is_inquiry(execution):
        raise ValidationError(f'Action execution "{inquiry_id}" is not an inquiry.', field="id")
    if execution.status == statuses.TIMED_OUT:
        raise ValidationError(f'Inquiry "{inquiry_id}" timed out and cannot be responded to.', field="id")
    if execution.status != statuses.PENDING:
        raise ValidationError(f'Inquiry "{inquiry_id}" has already been responded to.', field="id")


def get(access, inquiry_id: str) -> ExecutionDB:
    """A pending inquiry by id: NotFoundError when no such execution, ValidationError when not open."""
    try:
        execution = access.get_by_id(inquiry_id)
    except NotFoundError:
        raise NotFoundError("inquiry", inquiry_id, f'Unable to identify resource with id "{inquiry_id}".') from None
    check_open(execution)
    return execution


def check_permission(execution: ExecutionDB, user: str, roles: Iterable[str], is_admin: bool = False) -> None:
    """AccessDeniedError unless user may answer: listed in users and holding one of roles, when set."""
    if is_admin:
        return
    inquiry = to_api(execution)
    allowed_users = inquiry["users"] or []
    allowed_roles = inquiry["roles"] or []
    users_pass = not allowed_users or user in allowed_users
    roles_pass = not allowed_roles or bool(set(roles or ()) & set(allowed_roles))
    if not (users_pass and roles_pass):
        raise AccessDeniedError(f'User "{user}" does not have permission to respond to inquiry "{execution.pk}".')


def validate_response(execution: ExecutionDB, response: Any) -> dict[str, Any]:
    """The response with the schema's top-level defaults filled in; ValidationError naming the problem."""
    schema = to_api(execution)["schema"] or {}
    if not isinstance(response, Mapping):
        raise ValidationError(f'Response for inquiry "{execution.pk}" did not pass schema validation. '
                              f"response: must be an object", field="response")
    filled = copy.deepcopy(dict(response))
    for name, sub in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(sub, Mapping) and "default" in sub:
            filled[name] = copy.deepcopy(sub["default"])
    try:
        triggertypes.validate_against(schema, filled, "response")
    except ValidationError as exc:
        raise ValidationError(f'Response for inquiry "{execution.pk}" did not pass schema validation. {exc}',
                              field=exc.field) from None
    return filled


def respond(service: WorkflowService, inquiry_id: str, response: Any, user: str,
            roles: Iterable[str] = (), is_admin: bool = False) -> dict[str, Any]:
    """Answer a pending inquiry as user: {id, response}; its workflow then moves on.

    NotFoundError (no such execution), ValidationError (not an open inquiry, or
    a response the schema refuses), AccessDeniedError (user not allowed).
    """
    execution = get(service.executions, inquiry_id)
    check_permission(execution, user, roles, is_admin)
    response = validate_response(execution, response)
    result = {**dict(execution.result or {}), "response": response}
    try:
        answered = executions.update_status(service.executions, execution, statuses.SUCCEEDED,
                                            publish_work=False, result=result)
    except (StaleRecordError, TransitionError):
        # Answered or timed out between our read and our write: say which.
        check_open(service.executions.get_by_id(inquiry_id))
        raise
    LOG.info("inquiry %s answered by %s", inquiry_id, user)
    move_on(service, answered)
    return {"id": str(answered.pk), "response": response}


def expire(service: WorkflowService, now: datetime.datetime | None = None) -> list[str]:
    """Time out every pending inquiry older than its ttl (minutes; 0 or less never); their ids."""
    now = now or utcnow()
    expired = []
    for execution in service.executions.query(raw=dict(PENDING_QUERY)):
        ttl = to_api(execution)["ttl"]
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            continue
        started = execution.start_timestamp
        if started.tzinfo is None:
            started = started.replace(tzinfo=datetime.timezone.utc)
        if now - started <= datetime.timedelta(minutes=ttl):
            continue
        try:
            timed_out = executions.update_status(service.executions, execution, statuses.TIMED_OUT,
                                                 publish_work=False, result=execution.result)
        except (StaleRecordError, TransitionError) as exc:
            LOG.debug("inquiry %s moved on before it could time out: %s", execution.pk, exc)
            continue
        LOG.info("inquiry %s timed out after %d minutes", execution.pk, ttl)
        move_on(service, timed_out)
        expired.append(str(execution.pk))
    return expired


def move_on(service: WorkflowService, inquiry: ExecutionDB) -> None:
    """After an inquiry ended: its Orquesta task applied and the workflow resumed, or its root resumed."""
    orquesta = (inquiry.context or {}).get("orquesta") or {}
    if orquesta.get("workflow_execution_id"):
        service.child_changed(inquiry)
        service.advance(service.mutate(orquesta["workflow_execution_id"], _resume_if_paused))
    elif inquiry.parent:
        _resume_root(service, inquiry)


def _resume_if_paused(_workflow, conductor: WorkflowConductor) -> bool:
    if conductor.get_workflow_status() not in _PAUSED:
        return False
    conductor.request_workflow_status(statuses.RESUMING)
    return True


def _resume_root(service: WorkflowService, inquiry: ExecutionDB) -> None:
    """StackStorm's rule outside Orquesta: the root execution resumes if it is pausing or paused."""
    root = inquiry
    while root.parent:
        root = service.executions.get_by_id(root.parent)
    if root.status not in _PAUSED:
        return
    try:
        executions.update_status(service.executions, root, statuses.RESUMING)
    except (StaleRecordError, TransitionError) as exc:
        LOG.info("root execution %s of inquiry %s not resumed: %s", root.pk, inquiry.pk, exc)
