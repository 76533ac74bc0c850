"""Pause and resume of workflow executions (PUT /executions/{id}): status changes the engine follows.

The API moves the execution to ``pausing`` or ``resuming`` with a
compare-and-set; the workflow engine reads every execution update and does
the rest (st2common/services/workflows.py, st2workflowengine/handler.py).
"""

from __future__ import annotations

import logging

from st2common import statuses
from st2common.exceptions import NotFoundError, StaleRecordError, TransitionError, ValidationError
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access
from st2common.runners import registry
from st2common.services import executions
from st2common.services.workflow_records import CAS_ATTEMPTS
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

_NOT_STARTED = (statuses.REQUESTED, statuses.SCHEDULED, statuses.DELAYED)


def _workflow_execution(access: Access[ExecutionDB], execution_id: str, verb: str) -> ExecutionDB:
    """The execution to pause or resume; ValidationError (StackStorm's words) unless it runs a workflow."""
    execution = access.get_by_id(execution_id)
    runner = (execution.runner or {}).get("name") or (execution.action or {}).get("runner_type") or ""
    if registry.ALIASES.get(runner, runner) not in registry.WORKFLOW_RUNNERS:
        raise ValidationError(f'Unable to {verb} liveaction "{execution.pk}" because it is not supported by '
                              f'the "{runner}" runner.', field="status")
    return execution


def pause(publisher: Publisher, execution_id: str, user: str | None = None) -> ExecutionDB:
    """Ask a running workflow execution to pause: ``pausing`` now, ``paused`` once its running tasks end.

    The workflow engine follows the execution's status (no work message: the
    engine reads every execution update). Already pausing or paused: unchanged.
    """
    return _request(publisher, execution_id, user, "pause", statuses.RUNNING, statuses.PAUSING,
                    done=(statuses.PAUSING, statuses.PAUSED),
                    refusal='Unable to pause liveaction "{id}" because it is not in a running state.')


def _request(publisher: Publisher, execution_id: str, user: str | None, verb: str, source: str, target: str,
             done: tuple[str, ...], refusal: str) -> ExecutionDB:
    """Move a workflow execution from source to target (compare-and-set, retried); done statuses: unchanged."""
    access = executions.access(publisher)
    for _ in range(CAS_ATTEMPTS):
        execution = _workflow_execution(access, execution_id, verb)
        if execution.status in done:
            return execution
        if execution.status != source:
            raise ValidationError(refusal.format(id=execution.pk, status=execution.status), field="status")
        try:
            updated = executions.update_status(access, execution, target, publish_work=False)
        except StaleRecordError:
            continue
        LOG.info("execution %s: %s requested by %s", execution.pk, verb, user or executions.SYSTEM_USER)
        return updated
    raise StaleRecordError(f"execution {execution_id} kept changing while asked to {verb}")


def resume_paused_parent(access, parent_id: str) -> None:
    """A resumed subworkflow (or chain) resumes the paused workflow above it."""
    try:
        parent = access.get_by_id(parent_id)
        if parent.status == statuses.PAUSED:
            executions.update_status(access, parent, statuses.RESUMING, publish_work=False)
    except (NotFoundError, StaleRecordError, TransitionError) as exc:
        LOG.debug("parent %s not resumed: %s", parent_id, exc)


def resume(publisher: Publisher, execution_id: str, user: str | None = None) -> ExecutionDB:
    """Ask a paused workflow execution to resume (``resuming``); running or resuming already: unchanged."""
    return _request(publisher, execution_id, user, "resume", statuses.PAUSED, statuses.RESUMING,
                    done=(statuses.RUNNING, statuses.RESUMING),
                    refusal='Unable to resume liveaction "{id}" because it is in "{status}" state and not in '
                            '"paused" state.')


def pass_on(publisher: Publisher, access: Access[ExecutionDB], child: ExecutionDB, wanted: str,
            parent_id: str) -> None:
    """Pass a parent's pause, resume or cancel (wanted: pausing, resuming, canceling) on to one child.

    Workflows follow all three; another child is canceled only before it
    starts (a running action finishes, as in StackStorm). A child that moved on
    meanwhile is left as it is.
    """
    is_workflow = ((child.runner or {}).get("name") or "") in registry.WORKFLOW_RUNNERS
    try:
        if wanted == statuses.CANCELING and child.status in statuses.CANCELABLE and (
                is_workflow or child.status in _NOT_STARTED):
            executions.cancel(publisher, str(child.pk))
        elif wanted == statuses.PAUSING and is_workflow and child.status == statuses.RUNNING:
            executions.update_status(access, child, statuses.PAUSING, publish_work=False)
        elif wanted == statuses.RESUMING and is_workflow and child.status in (statuses.PAUSING, statuses.PAUSED):
            executions.update_status(access, child, statuses.RESUMING, publish_work=False)
    except (StaleRecordError, TransitionError) as exc:
        LOG.info("child %s of %s not moved to %s: %s", child.pk, parent_id, wanted, exc)
