"""Rule documents: trigger + criteria + action, and the rule types (standard, backstop)."""

import mongoengine as me

from st2common.models.db.base import ContentMixin, EscapedDictField, LeanLoad, WholeDictField, WholeListField

RULE_TYPE_STANDARD = "standard"
RULE_TYPE_BACKSTOP = "backstop"
RULE_TYPES = (RULE_TYPE_STANDARD, RULE_TYPE_BACKSTOP)


class RuleTypeDB(me.Document):
    """A kind of rule: ``standard`` always applies, ``backstop`` only when no standard rule matched."""

    RESOURCE_TYPE = "rule_type"

    name = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    enabled = me.BooleanField(default=True)
    parameters = EscapedDictField()

    meta = {"collection": "rule_type_d_b"}

    def set_identity(self) -> None:
        """uid from the name (rule types have no pack)."""
        self.uid = f"{self.RESOURCE_TYPE}:{self.name}"


class RuleDB(LeanLoad, ContentMixin, me.Document):
    """A rule: when its trigger fires and the criteria hold, run the action with rendered parameters.

    ``trigger`` is ``{type, parameters, ref}`` (ref names the TriggerDB for
    those parameters); ``criteria`` maps a payload path (``trigger.body.x``,
    dots escaped in storage) to ``{type, pattern[, condition]}``. Query the
    trigger type with a raw filter (``{"trigger.type": ref}``): mongoengine
    reads ``trigger__type`` as the ``$type`` operator.
    """

    RESOURCE_TYPE = "rule"

    name = me.StringField(required=True)
    pack = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    # StackStorm's RuleAPI default: a rule fires only once someone enables it.
    enabled = me.BooleanField(default=False)
    trigger = EscapedDictField(required=True)
    criteria = EscapedDictField()
    action = EscapedDictField(required=True)
    type = WholeDictField(default=lambda: {"ref": RULE_TYPE_STANDARD, "parameters": {}})
    context = EscapedDictField()
    tags = WholeListField(me.DictField())
    metadata_file = me.StringField()

    meta = {
        "collection": "rule_d_b",
        "indexes": [
            "pack",
            "name",
            # The rules engine loads the enabled rules of a trigger type.
            {"fields": ["trigger.type", "enabled"]},
            "trigger.ref",
            "action.ref",
        ],
    }
