"""Pack documents."""

import mongoengine as me

from st2common.models.db.base import EscapedDictField, WholeListField


class PackDB(me.Document):
    """A registered pack: its manifest plus where it lies on disk."""

    RESOURCE_TYPE = "pack"

    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    name = me.StringField(required=True)
    description = me.StringField(required=True)
    keywords = WholeListField(me.StringField())
    version = me.StringField(required=True)
    stackstorm_version = me.StringField()
    python_versions = WholeListField(me.StringField())
    author = me.StringField(required=True)
    email = me.StringField()
    contributors = WholeListField(me.StringField())
    dependencies = WholeListField(me.StringField())
    system = EscapedDictField()
    files = WholeListField(me.StringField())
    path = me.StringField()

    meta = {"collection": "pack_d_b", "indexes": ["name"]}

    def set_identity(self) -> None:
        self.uid = f"pack:{self.ref}"
