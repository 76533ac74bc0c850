"""What the service feeds the conductor, and what the conductor asks the service to run.

Inbound: a ``TaskEvent`` each time a task's child execution changes status
(with ``item_id`` for one item of a with-items task), and a ``WorkflowEvent``
to pause, resume, cancel or fail the whole workflow. Child execution statuses
are StackStorm's strings and map one to one onto task statuses.

Outbound: ``NextTask`` records from ``get_next_tasks()``, each with the
``ActionRequest``s to turn into child executions now. ``(seq, attempt,
item_id)`` identifies one child for good, so a service that crashed between
requesting children and saving the conductor can recognise children it
already requested.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from st2common import statuses
from st2common.exceptions import ValidationError
from st2workflowengine.orquesta.spec import TaskSpec


@dataclass(frozen=True)
class TaskEvent:
    """A task (or one item of it) changed status; ``result`` comes with completed statuses.

    ``meta`` carries the service's own facts about the task execution
    (``task_execution_id``, ``start_timestamp``, ``end_timestamp`` ...), which the
    ``task()`` expression function returns.
    """

    task_id: str
    route: int
    status: str
    result: Any = None
    item_id: int | None = None
    meta: dict[str, Any] | None = None
    # When given, the event applies only to that task instance and attempt
    # (NextTask.seq / NextTask.attempt), so a late event of an earlier run is ignored.
    seq: int | None = None
    attempt: int | None = None

    def __post_init__(self) -> None:
        if self.status not in statuses.TASK_STATUSES:
            raise ValidationError(f"unknown task status {self.status!r}", field="status")

    def to_dict(self) -> dict[str, Any]:
        """The event as plain data (for a bus message or a log)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskEvent":
        """An event from its plain-data form."""
        return cls(**data)


@dataclass(frozen=True)
class WorkflowEvent:
    """A request to move the whole workflow: running, pausing, paused, resuming, canceling, canceled, failed."""

    status: str

    def __post_init__(self) -> None:
        if self.status not in statuses.WORKFLOW_STATUSES:
            raise ValidationError(f"unknown workflow status {self.status!r}", field="status")


@dataclass(frozen=True)
class ActionRequest:
    """One child execution to request: the rendered action ref and input, and its item."""

    action: str
    input: dict[str, Any]
    item_id: int | None = None


@dataclass(frozen=True)
class NextTask:
    """A task the service should run now.

    ``delay`` is in seconds (StackStorm's execution delay is in milliseconds);
    ``items_count`` and ``concurrency`` are set for with-items tasks, whose
    later items come from later calls to ``get_next_tasks()``.
    """

    task_id: str
    route: int
    seq: int
    attempt: int
    spec: TaskSpec
    actions: tuple[ActionRequest, ...]
    delay: float | None = None
    items_count: int | None = None
    concurrency: int | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The task's name (its id in the spec)."""
        return self.task_id
