"""Execution use-cases shared by the services: status changes through the transition table."""

from __future__ import annotations

import logging
from typing import Any

from st2common import statuses
from st2common.exceptions import StaleRecordError
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access

LOG = logging.getLogger(__name__)

WORK_EXCHANGE = "liveaction.status"


def update_status(access: Access[ExecutionDB], execution: ExecutionDB, new_status: str,
                  publish_work: bool = True, **changes: Any) -> ExecutionDB:
    """Move execution to new_status if the table allows it and nobody moved it first.

    One conditional write (on the old status) and, when publish_work, one
    message on the liveaction.status exchange routed by the new status. The
    execution's log gets the {status, timestamp} entry in the same write.
    Raises TransitionError for a change the table refuses, StaleRecordError
    when another writer changed the status in between.
    """
    old_status = execution.status
    statuses.check_transition("execution", execution.pk, old_status, new_status)
    now = utcnow()
    fields = dict(changes)
    fields["status"] = new_status
    if new_status in statuses.COMPLETED and "end_timestamp" not in fields:
        fields["end_timestamp"] = now
    fields["log"] = list(execution.log or []) + [{"status": new_status, "timestamp": now}]
    updated = access.update_if(execution.pk, {"status": old_status}, fields)
    if updated is None:
        raise StaleRecordError(f"execution {execution.pk} is no longer {old_status!r}")
    LOG.debug("execution %s: %s -> %s", execution.pk, old_status, new_status)
    if publish_work and access.publisher is not None:
        access.publisher.publish(WORK_EXCHANGE, new_status, {"id": str(updated.pk)})
    return updated
