"""Trace documents: the chain trigger instance -> rule enforcement -> executions, tied by a trace tag.

StackStorm keeps the three component lists inside the trace. Here each
component is its own document (TraceComponentDB): the embedded server finds
nothing through an indexed array, and appending is then a plain insert, so the
rules engine and the action runner can add to one trace at the same time
without a read-modify-write race. The API puts the lists back together.
"""

import mongoengine as me

from st2common.models.db.base import LeanLoad, utcnow

COMPONENT_TRIGGER_INSTANCE = "trigger_instance"
COMPONENT_RULE = "rule"
COMPONENT_EXECUTION = "action_execution"
COMPONENT_TYPES = (COMPONENT_TRIGGER_INSTANCE, COMPONENT_RULE, COMPONENT_EXECUTION)

# The API's list name for each component type.
COMPONENT_LISTS = {
    COMPONENT_TRIGGER_INSTANCE: "trigger_instances",
    COMPONENT_RULE: "rules",
    COMPONENT_EXECUTION: "action_executions",
}


class TraceDB(LeanLoad, me.Document):
    """One trace: its tag and when it started; its components live in TraceComponentDB."""

    RESOURCE_TYPE = "trace"

    trace_tag = me.StringField(required=True)
    start_timestamp = me.DateTimeField(required=True, default=utcnow)

    meta = {"collection": "trace_d_b", "indexes": ["trace_tag", "-start_timestamp"]}

    @property
    def uid(self) -> str:
        """StackStorm's trace uid: ``trace:<id>``."""
        return f"{self.RESOURCE_TYPE}:{self.pk}"


class TraceComponentDB(LeanLoad, me.Document):
    """One member of a trace: a trigger instance, a rule (as enforced) or an execution, and its cause.

    ``caused_by`` is ``{type, id}``: a rule is caused by a trigger instance,
    an execution by ``<rule id>:<trigger instance id>`` or by its parent.
    ``link_key`` is unique, so recording the same link twice (a redelivered
    message) stores it once.
    """

    RESOURCE_TYPE = "trace_component"

    trace_id = me.StringField(required=True)
    component_type = me.StringField(required=True, choices=COMPONENT_TYPES)
    object_id = me.StringField(required=True)
    ref = me.StringField()
    updated_at = me.DateTimeField(required=True, default=utcnow)
    caused_by_type = me.StringField()
    caused_by_id = me.StringField()
    link_key = me.StringField(required=True, unique=True)

    meta = {
        "collection": "trace_component_d_b",
        "indexes": [
            "trace_id",
            # Finding the trace of an execution, a rule or a trigger instance.
            {"fields": ["component_type", "object_id"]},
        ],
    }

    @staticmethod
    def make_link_key(trace_id: str, component_type: str, object_id: str, caused_by_id: str | None) -> str:
        """The identity of a link: the same component with the same cause in the same trace."""
        return f"{trace_id}:{component_type}:{object_id}:{caused_by_id or ''}"

    def clean(self) -> None:
        """Derive link_key before every save (mongoengine calls clean from validate)."""
        self.link_key = self.make_link_key(self.trace_id, self.component_type, self.object_id,
                                           self.caused_by_id)

    @property
    def caused_by(self) -> dict:
        """The API's ``caused_by`` object (empty when the component started the trace)."""
        if not self.caused_by_type:
            return {}
        return {"type": self.caused_by_type, "id": self.caused_by_id}
