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
    TRIGGER_INSTANCE_PENDING: frozenset({TRIGGER_INSTANCE_PROCESSING, TRIGGER_INSTANCE_PROCESSING_FAILED}),
    TRIGGER_INSTANCE_PROCESSING: frozenset({TRIGGER_INSTANCE_PROCESSED, TRIGGER_INSTANCE_PROCESSING_FAILED}),
    # A re-emitted instance is processed again.
    TRIGGER_INSTANCE_PROCESSED: frozenset({TRIGGER_INSTANCE_PROCESSING}),
    TRIGGER_INSTANCE_PROCESSING_FAILED: frozenset({TRIGGER_INSTANCE_PROCESSING}),
}

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
