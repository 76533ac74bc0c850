"""Trigger documents: the kind of event (type), a parameterised instance of it (trigger), one occurrence."""

import hashlib
import json
from typing import Any, Mapping

import mongoengine as me

from st2common import statuses
from st2common.models.db.base import ContentMixin, EscapedDictField, LeanLoad, WholeListField, utcnow

TRIGGER_INSTANCE_STATUSES = (
    statuses.TRIGGER_INSTANCE_PENDING,
    statuses.TRIGGER_INSTANCE_PROCESSING,
    statuses.TRIGGER_INSTANCE_PROCESSED,
    statuses.TRIGGER_INSTANCE_PROCESSING_FAILED,
)


def parameters_hash(parameters: Mapping[str, Any] | None) -> str:
    """StackStorm's hash of trigger parameters (md5 of the key-sorted JSON), part of a trigger's uid."""
    text = json.dumps(dict(parameters or {}), sort_keys=True)
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - an identity, not a secret


class TriggerTypeDB(LeanLoad, ContentMixin, me.Document):
    """A kind of event (``core.st2.webhook``) with the schemas of its payload and parameters."""

    RESOURCE_TYPE = "trigger_type"

    name = me.StringField(required=True)
    pack = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    payload_schema = EscapedDictField()
    parameters_schema = EscapedDictField()
    tags = WholeListField(me.DictField())
    metadata_file = me.StringField()

    meta = {"collection": "trigger_type_d_b", "indexes": ["pack", "name"]}


class TriggerDB(LeanLoad, ContentMixin, me.Document):
    """A trigger type with concrete parameters; a parameter-less type has a same-named "shadow" one.

    Triggers with parameters are created for rules under a UUID name. Whole
    parameter dicts cannot be matched by equality on the embedded server, so
    they are found by ``type`` plus ``parameters_hash``.
    """

    RESOURCE_TYPE = "trigger"

    name = me.StringField(required=True)
    pack = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    type = me.StringField(required=True)
    parameters = EscapedDictField()
    parameters_hash = me.StringField(required=True)
    description = me.StringField()
    # How many rules use it; a parameterised trigger nobody uses is deleted.
    ref_count = me.IntField(default=0)

    meta = {
        "collection": "trigger_d_b",
        "indexes": [
            "type",
            {"fields": ["type", "parameters_hash"]},
        ],
    }

    def set_identity(self) -> None:
        """ref from pack and name; uid also carries the parameters' hash, as StackStorm's does."""
        self.parameters_hash = parameters_hash(self.parameters)
        self.ref = self.make_ref(self.pack, self.name)
        self.uid = f"{self.RESOURCE_TYPE}:{self.pack}:{self.name}:{self.parameters_hash}"


class TriggerInstanceDB(LeanLoad, me.Document):
    """One occurrence of a trigger: its payload, when it happened, and how far its processing got."""

    RESOURCE_TYPE = "trigger_instance"

    trigger = me.StringField(required=True)
    payload = EscapedDictField()
    occurrence_time = me.DateTimeField(required=True, default=utcnow)
    status = me.StringField(required=True, default=statuses.TRIGGER_INSTANCE_PENDING,
                            choices=TRIGGER_INSTANCE_STATUSES)

    meta = {
        "collection": "trigger_instance_d_b",
        "indexes": [
            "trigger",
            "-occurrence_time",
            # The sweep looks for instances left pending or processing by a dead engine.
            {"fields": ["status", "occurrence_time"]},
        ],
    }
