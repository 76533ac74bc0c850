"""Workflow documents: one workflow execution per Orquesta run, one task execution per task attempt.

The workflow execution holds the serialised conductor (``spec``, ``input``,
``context`` written once; ``state``, ``errors``, ``output`` rewritten on each
change) and is only ever written through a compare-and-set on ``revision``, so
two copies of the engine handling two children of one workflow at once never
lose each other's change. ``pending`` lists the child executions its last
writer was about to request (rendered action and input per item), so a sweep
can request any that a crash lost.

Task executions are keyed ``<workflow execution id>:<seq>:<attempt>``
(``key``, unique): the conductor's sequence index and attempt identify one
task instance for good, so a second insert of the same one is refused.
"""

import mongoengine as me

from st2common import statuses
from st2common.models.db.base import EscapedDictField, EscapedDynamicField, LeanLoad, utcnow


class WorkflowExecutionDB(LeanLoad, me.Document):
    """One run of an Orquesta workflow, behind the action execution that started it."""

    RESOURCE_TYPE = "workflow_execution"

    action_execution = me.StringField(required=True)
    status = me.StringField(required=True, default=statuses.REQUESTED, choices=statuses.WORKFLOW_STATUSES)
    # The definition as parsed (orquesta's spec dict), the workflow input and {st2, parent}.
    spec = EscapedDictField(required=True)
    input = EscapedDictField()
    context = EscapedDictField()
    # The conductor's state (WorkflowState.to_dict()); empty until the engine starts it.
    state = EscapedDictField()
    output = EscapedDynamicField()
    errors = EscapedDynamicField()
    # Child executions requested by the last write and not yet seen completed (see module doc).
    pending = EscapedDynamicField()
    # {"tasks": [task names], "config": the workflow action's notify}: copied onto those tasks' children.
    notify = EscapedDictField()
    start_timestamp = me.DateTimeField(default=utcnow)
    end_timestamp = me.DateTimeField()
    updated_at = me.DateTimeField(default=utcnow)
    revision = me.IntField(default=1)

    meta = {
        "collection": "workflow_execution_d_b",
        "indexes": ["action_execution", "status", "updated_at"],
    }


class TaskExecutionDB(LeanLoad, me.Document):
    """One attempt of one task instance of a workflow execution (all its with-items children)."""

    RESOURCE_TYPE = "task_execution"

    key = me.StringField(required=True, unique=True)
    workflow_execution = me.StringField(required=True)
    task_name = me.StringField(required=True)
    task_id = me.StringField(required=True)
    task_route = me.IntField(default=0)
    seq = me.IntField(required=True)
    attempt = me.IntField(default=0)
    task_spec = EscapedDictField()
    delay = me.FloatField()
    itemized = me.BooleanField(default=False)
    items_count = me.IntField()
    items_concurrency = me.IntField()
    context = EscapedDictField()
    status = me.StringField(required=True, default=statuses.REQUESTED, choices=statuses.TASK_STATUSES)
    result = EscapedDynamicField()
    start_timestamp = me.DateTimeField(default=utcnow)
    end_timestamp = me.DateTimeField()
    revision = me.IntField(default=1)

    meta = {
        "collection": "task_execution_d_b",
        "indexes": ["workflow_execution", "status"],
    }

    @staticmethod
    def make_key(workflow_execution_id: str, seq: int, attempt: int) -> str:
        """The unique key of one attempt of one task instance."""
        return f"{workflow_execution_id}:{seq}:{attempt}"
