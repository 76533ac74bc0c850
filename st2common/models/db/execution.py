"""Execution documents: one record per action run, plus its output lines."""

import mongoengine as me

from st2common import statuses
from st2common.models.db.base import (
    EscapedDictField, EscapedDynamicField, LeanLoad, WholeDictField, WholeListField, utcnow,
)


class ExecutionDB(LeanLoad, me.Document):
    """One run of an action. The single record behind /executions (StackStorm keeps two)."""

    RESOURCE_TYPE = "execution"

    status = me.StringField(required=True, default=statuses.REQUESTED, choices=statuses.EXECUTION_STATUSES)
    action_ref = me.StringField(required=True)
    # Denormalised copies, as StackStorm's execution shape carries them.
    action = EscapedDictField(required=True)
    runner = EscapedDictField(required=True)
    parameters = EscapedDictField()
    result = EscapedDynamicField()
    result_size = me.IntField(default=0)
    context = EscapedDictField()
    parent = me.StringField()
    children = WholeListField(me.StringField())
    log = WholeListField(me.DictField())
    delay = me.IntField()
    notify = EscapedDictField()
    rule = EscapedDictField()
    trigger = EscapedDictField()
    trigger_type = EscapedDictField()
    trigger_instance = EscapedDictField()
    workflow_execution = me.StringField()
    task_execution = me.StringField()
    # Which worker owns it while it runs: {hostname, pid, worker_id}.
    runner_info = WholeDictField()
    start_timestamp = me.DateTimeField(default=utcnow)
    end_timestamp = me.DateTimeField()
    # Bumped on every write, so a conditional update can detect a concurrent one.
    revision = me.IntField(default=1)

    meta = {
        "collection": "execution_d_b",
        "indexes": [
            "status",
            "action_ref",
            "parent",
            "-start_timestamp",
            "runner_info.worker_id",
            "context.user",
            "trigger_instance.id",
            "rule.ref",
        ],
    }


class ExecutionOutputDB(LeanLoad, me.Document):
    """One chunk of an execution's stdout / stderr, stored while it runs."""

    RESOURCE_TYPE = "execution_output"

    execution_id = me.StringField(required=True)
    action_ref = me.StringField()
    runner_ref = me.StringField()
    timestamp = me.DateTimeField(default=utcnow)
    output_type = me.StringField(default="output")
    data = me.StringField()

    meta = {"collection": "execution_output_d_b", "indexes": ["execution_id", "timestamp"]}
