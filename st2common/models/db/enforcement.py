"""Rule enforcement documents: the record that a rule matched a trigger instance, and what it requested."""

import mongoengine as me

from st2common.models.db.base import LeanLoad, WholeDictField, utcnow
# The statuses live with the others; kept importable from here.
from st2common.statuses import ENFORCEMENT_FAILED, ENFORCEMENT_STATUSES, ENFORCEMENT_SUCCEEDED  # noqa: F401


class RuleEnforcementDB(LeanLoad, me.Document):
    """One rule applied to one trigger instance: the execution requested, or why none was."""

    RESOURCE_TYPE = "rule_enforcement"

    trigger_instance_id = me.StringField(required=True)
    execution_id = me.StringField()
    # {ref, id, uid} of the rule as it was when enforced.
    rule = WholeDictField(required=True)
    enforced_at = me.DateTimeField(required=True, default=utcnow)
    status = me.StringField(required=True, default=ENFORCEMENT_SUCCEEDED, choices=ENFORCEMENT_STATUSES)
    failure_reason = me.StringField()

    meta = {
        "collection": "rule_enforcement_d_b",
        "indexes": [
            "rule.ref",
            "rule.id",
            "trigger_instance_id",
            "execution_id",
            "-enforced_at",
        ],
    }
