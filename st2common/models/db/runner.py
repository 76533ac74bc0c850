"""Runner type documents."""

import mongoengine as me

from st2common.models.db.base import EscapedDictField, LeanLoad


class RunnerTypeDB(LeanLoad, me.Document):
    """A runner type: how an action of this kind is executed, and its parameters."""

    RESOURCE_TYPE = "runner_type"

    name = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    description = me.StringField()
    enabled = me.BooleanField(default=True)
    runner_package = me.StringField()
    runner_module = me.StringField()
    runner_parameters = EscapedDictField()
    output_key = me.StringField()
    output_schema = EscapedDictField()

    meta = {"collection": "runner_type_d_b"}

    def set_identity(self) -> None:
        self.uid = f"runner_type:{self.name}"
