"""Status strings as StackStorm spells them, their groups, and the transition tables.

State machines are data: each record type has a dict of status -> statuses it
may move to, and ``check_transition`` is the one place that reads it.
"""

from __future__ import annotations

from st2common.exceptions import TransitionError

# Executions (StackStorm's LIVEACTION_STATUS_*).
REQUESTED = "requested"
SCHEDULED = "scheduled"
DELAYED = "delayed"
RUNNING = "running"
PENDING = "pending"
PAUSING = "pausing"
PAUSED = "paused"
RESUMING = "resuming"
CANCELING = "canceling"
CANCELED = "canceled"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timeout"
ABANDONED = "abandoned"

EXECUTION_STATUSES = (
    REQUESTED, SCHEDULED, DELAYED, RUNNING, PENDING, PAUSING, PAUSED, RESUMING,
    CANCELING, CANCELED, SUCCEEDED, FAILED, TIMED_OUT, ABANDONED,
)
COMPLETED = frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELED, ABANDONED})
FAILED_STATES = frozenset({FAILED, TIMED_OUT, ABANDONED})
CANCELABLE = frozenset({REQUESTED, SCHEDULED, DELAYED, RUNNING, PAUSING, PAUSED, RESUMING})
# Statuses of an execution that has started and not completed.
ACTIVE = frozenset({RUNNING, PAUSING, PAUSED, RESUMING, CANCELING, PENDING})
# Of those, the ones where a worker process holds it; pending (an inquiry) and
# paused (a workflow) wait for a person or a resume, not for a process.
WORKER_OWNED = frozenset({RUNNING, PAUSING, RESUMING, CANCELING})

EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({SCHEDULED, DELAYED, CANCELING, CANCELED, FAILED}),
    DELAYED: frozenset({REQUESTED, SCHEDULED, DELAYED, CANCELING, CANCELED, FAILED}),
    SCHEDULED: frozenset({RUNNING, DELAYED, CANCELING, CANCELED, FAILED, ABANDONED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, TIMED_OUT, ABANDONED, PENDING, CANCELING, CANCELED,
                        PAUSING, PAUSED}),
    PENDING: frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELING, CANCELED, RUNNING, ABANDONED}),
    PAUSING: frozenset({PAUSED, RUNNING, CANCELING, CANCELED, SUCCEEDED, FAILED, TIMED_OUT, ABANDONED}),
    PAUSED: frozenset({RESUMING, RUNNING, CANCELING, CANCELED, ABANDONED}),
    RESUMING: frozenset({RUNNING, PAUSING, CANCELING, CANCELED, SUCCEEDED, FAILED, TIMED_OUT, ABANDONED}),
    CANCELING: frozenset({CANCELED, ABANDONED}),
    CANCELED: frozenset(),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    TIMED_OUT: frozenset(),
    ABANDONED: frozenset(),
}

# Trigger instances.
TRIGGER_INSTANCE_PENDING = "pending"
TRIGGER_INSTANCE_PROCESSING = "processing"
TRIGGER_INSTANCE_PROCESSED = "processed"
TRIGGER_INSTANCE_PROCESSING_FAILED = "processing_failed"

TRIGGER_INSTANCE_TRANSITIONS: dict[str, frozenset[str]] = {
    # Straight to processed when no rule matched: there was nothing to do while "processing".
    TRIGGER_INSTANCE_PENDING: frozenset({TRIGGER_INSTANCE_PROCESSING, TRIGGER_INSTANCE_PROCESSED,
                                         TRIGGER_INSTANCE_PROCESSING_FAILED}),
    TRIGGER_INSTANCE_PROCESSING: frozenset({TRIGGER_INSTANCE_PROCESSED, TRIGGER_INSTANCE_PROCESSING_FAILED}),
    # A re-emitted instance is processed again.
    TRIGGER_INSTANCE_PROCESSED: frozenset({TRIGGER_INSTANCE_PROCESSING}),
    TRIGGER_INSTANCE_PROCESSING_FAILED: frozenset({TRIGGER_INSTANCE_PROCESSING}),
}

# Rule enforcements: written once, never changed. "succeeded" means an execution
# was requested, not that it later succeeded.
ENFORCEMENT_SUCCEEDED = "succeeded"
ENFORCEMENT_FAILED = "failed"
ENFORCEMENT_STATUSES = (ENFORCEMENT_SUCCEEDED, ENFORCEMENT_FAILED)

TABLES: dict[str, dict[str, frozenset[str]]] = {
    "execution": EXECUTION_TRANSITIONS,
    "trigger_instance": TRIGGER_INSTANCE_TRANSITIONS,
}


def is_transition_valid(record: str, old: str, new: str) -> bool:
    """True when the table for record allows old -> new (staying put is always allowed)."""
    if old == new:
        return True
    return new in TABLES[record].get(old, frozenset())


def check_transition(record: str, record_id: object, old: str, new: str) -> None:
    """Raise TransitionError unless the table for record allows old -> new."""
    if not is_transition_valid(record, old, new):
        raise TransitionError(record, record_id, old, new)


# Workflow and task executions (Orquesta). "null" is orquesta's UNSET: a
# workflow or task not yet started.
UNSET = "null"
RETRYING = "retrying"

WORKFLOW_STATUSES = (
    UNSET, REQUESTED, SCHEDULED, DELAYED, RUNNING, PAUSING, PAUSED, RESUMING,
    CANCELING, CANCELED, SUCCEEDED, FAILED,
)
TASK_STATUSES = WORKFLOW_STATUSES + (PENDING, TIMED_OUT, ABANDONED, RETRYING)
# A workflow or task in one of these still has work in flight.
WORKFLOW_ACTIVE = frozenset({REQUESTED, SCHEDULED, DELAYED, RUNNING, RESUMING, PAUSING, CANCELING})
ABENDED = frozenset({FAILED, TIMED_OUT, ABANDONED})

WORKFLOW_TRANSITIONS: dict[str, frozenset[str]] = {
    UNSET: frozenset({REQUESTED, SCHEDULED, DELAYED, RUNNING, FAILED}),
    REQUESTED: frozenset({SCHEDULED, DELAYED, RUNNING, PAUSED, CANCELED, FAILED}),
    SCHEDULED: frozenset({DELAYED, RUNNING, PAUSED, CANCELED, FAILED}),
    DELAYED: frozenset({SCHEDULED, RUNNING, PAUSED, CANCELED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, PAUSING, PAUSED, CANCELING, CANCELED}),
    PAUSING: frozenset({PAUSED, RUNNING, RESUMING, CANCELING, CANCELED, FAILED}),
    PAUSED: frozenset({RESUMING, RUNNING, SUCCEEDED, CANCELED, FAILED}),
    RESUMING: frozenset({RUNNING, PAUSING, PAUSED, SUCCEEDED, CANCELING, CANCELED, FAILED}),
    CANCELING: frozenset({CANCELED, FAILED}),
    # Output that fails to render turns a success into a failure.
    SUCCEEDED: frozenset({FAILED}),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}

_TASK_DONE = frozenset({SUCCEEDED, FAILED, TIMED_OUT, ABANDONED})
TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    UNSET: frozenset({REQUESTED, SCHEDULED, DELAYED, RUNNING, FAILED}),
    REQUESTED: frozenset({SCHEDULED, DELAYED, RUNNING, PENDING, PAUSED, CANCELING, CANCELED}) | _TASK_DONE,
    SCHEDULED: frozenset({DELAYED, RUNNING, PENDING, PAUSED, CANCELING, CANCELED}) | _TASK_DONE,
    DELAYED: frozenset({SCHEDULED, RUNNING, PAUSED, CANCELING, CANCELED}) | _TASK_DONE,
    RUNNING: frozenset({PENDING, PAUSING, PAUSED, CANCELING, CANCELED}) | _TASK_DONE,
    # An inquiry answered (or a resumed branch) goes back to running or completes.
    PENDING: frozenset({RUNNING, RESUMING, PAUSED, CANCELING, CANCELED}) | _TASK_DONE,
    PAUSING: frozenset({PAUSED, RUNNING, RESUMING, CANCELING, CANCELED}) | _TASK_DONE,
    PAUSED: frozenset({RESUMING, RUNNING, PENDING, CANCELING, CANCELED}) | _TASK_DONE,
    RESUMING: frozenset({RUNNING, PAUSING, PAUSED, PENDING, CANCELING, CANCELED}) | _TASK_DONE,
    CANCELING: frozenset({CANCELED}) | _TASK_DONE,
    # A completed task may be retried (retry policy, the retry command, a re-run).
    SUCCEEDED: frozenset({RETRYING}),
    FAILED: frozenset({RETRYING}),
    TIMED_OUT: frozenset({RETRYING}),
    ABANDONED: frozenset({RETRYING}),
    CANCELED: frozenset({RETRYING}),
    RETRYING: frozenset({REQUESTED, SCHEDULED, DELAYED, RUNNING, CANCELED, FAILED}),
}

TABLES["workflow_execution"] = WORKFLOW_TRANSITIONS
TABLES["task_execution"] = TASK_TRANSITIONS
