"""Action documents."""

import mongoengine as me

from st2common.models.db.base import ContentMixin, EscapedDictField, LeanLoad, WholeDictField, WholeListField


class ActionDB(LeanLoad, ContentMixin, me.Document):
    """An action: metadata, runner type and the parameter schema."""

    RESOURCE_TYPE = "action"

    name = me.StringField(required=True)
    pack = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    enabled = me.BooleanField(default=True)
    entry_point = me.StringField(default="")
    runner_type = WholeDictField(required=True)
    parameters = EscapedDictField()
    output_schema = EscapedDictField()
    notify = EscapedDictField()
    tags = WholeListField(me.DictField())
    metadata_file = me.StringField()

    meta = {"collection": "action_d_b", "indexes": ["pack", "name"]}
