"""Policy documents: the policy types, the policies attached to actions, and concurrency slots."""

from __future__ import annotations

import mongoengine as me

from st2common.models.db.base import ContentMixin, EscapedDictField, LeanLoad, utcnow


class PolicyTypeDB(me.Document):
    """A kind of policy (``action.concurrency`` ...): its parameters' schema, keyed by ``<resource_type>.<name>``."""

    RESOURCE_TYPE = "policy_type"

    name = me.StringField(required=True)
    resource_type = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    enabled = me.BooleanField(default=True)
    module = me.StringField()
    parameters = EscapedDictField()

    meta = {"collection": "policy_type_d_b", "indexes": ["resource_type"]}

    @staticmethod
    def make_ref(resource_type: str, name: str) -> str:
        return f"{resource_type}.{name}"

    def set_identity(self) -> None:
        """Derive ref and uid from resource type and name."""
        self.ref = self.make_ref(self.resource_type, self.name)
        self.uid = f"{self.RESOURCE_TYPE}:{self.resource_type}:{self.name}"


class PolicyDB(LeanLoad, ContentMixin, me.Document):
    """A policy of one type attached to one action; an action has at most one policy of each type."""

    RESOURCE_TYPE = "policy"

    name = me.StringField(required=True)
    pack = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    enabled = me.BooleanField(default=True)
    resource_ref = me.StringField(required=True)
    policy_type = me.StringField(required=True)
    parameters = EscapedDictField()
    metadata_file = me.StringField()

    meta = {
        "collection": "policy_d_b",
        "indexes": ["pack", {"fields": ["resource_ref", "policy_type"], "unique": True}],
    }


class ConcurrencySlotDB(me.Document):
    """One of a concurrency policy's ``threshold`` slots, held by the execution that runs in it.

    The unique (key, slot) index is what keeps every copy of the scheduler
    within the threshold: a slot is taken by inserting it, and only one insert
    wins. ``key`` is the policy's ref, plus a digest of the attribute values
    for ``action.concurrency.attr``.
    """

    RESOURCE_TYPE = "concurrency_slot"

    key = me.StringField(required=True)
    slot = me.IntField(required=True, min_value=0)
    execution_id = me.StringField(required=True)
    action_ref = me.StringField()
    claimed_at = me.DateTimeField(default=utcnow)

    meta = {
        "collection": "concurrency_slot_d_b",
        "indexes": [{"fields": ["key", "slot"], "unique": True}, "execution_id"],
    }
