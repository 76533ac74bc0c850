"""ActionChain documents: one chain execution per run of an ``action-chain`` action.

The record carries what the workflow engine needs to move a chain on between
child executions, and nothing the API shows: the definition, the chain
action's rendered parameters (secrets included, which is why they are not
kept in the execution's context), the variables, the task entries of the
nodes run so far, and ``current``, the node the chain waits on:
``{"node": name, "requested": bool, "at": when it was decided}``. A node
with ``requested`` false is the next one of a chain paused at a node boundary.

It is written only through a compare-and-set on ``revision``, so the engine
copies handling a child's completion and a pause or cancel at the same time
never lose each other's change.
"""

import mongoengine as me

from st2common import statuses
from st2common.models.db.base import EscapedDictField, EscapedDynamicField, utcnow


class ActionChainExecutionDB(me.Document):
    """One run of an ActionChain, behind the action execution that started it."""

    RESOURCE_TYPE = "action_chain_execution"

    action_execution = me.StringField(required=True, unique=True)
    status = me.StringField(required=True, default=statuses.REQUESTED, choices=statuses.EXECUTION_STATUSES)
    # The definition as loaded from the entry point, and where it came from (for messages).
    spec = EscapedDictField(required=True)
    source = me.StringField()
    # The chain action's rendered parameters, its runner parameters, and its execution's context.
    parameters = EscapedDictField()
    options = EscapedDictField()
    context = EscapedDictField()
    notify = EscapedDictField()
    vars = EscapedDictField()
    published = EscapedDictField()
    tasks = EscapedDynamicField()
    current = EscapedDynamicField()
    error = EscapedDynamicField()
    start_timestamp = me.DateTimeField(default=utcnow)
    end_timestamp = me.DateTimeField()
    updated_at = me.DateTimeField(default=utcnow)
    revision = me.IntField(default=1)

    meta = {
        "collection": "action_chain_execution_d_b",
        "indexes": ["status", "updated_at"],
    }
