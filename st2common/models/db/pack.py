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


class ConfigSchemaDB(me.Document):
    """A pack's config.schema.yaml: one parameter-like definition per config option."""

    RESOURCE_TYPE = "config_schema"

    pack = me.StringField(required=True, unique=True)
    attributes = EscapedDictField()

    meta = {"collection": "config_schema_d_b"}

    def set_identity(self) -> None:
        """Nothing derived: a config schema is known by its pack alone."""


class ConfigDB(me.Document):
    """A pack's config values as written in ``<configs_path>/<pack>.yaml`` (templates unrendered).

    ``error`` holds why the values do not fit the pack's config schema, naming
    the option and the file; while it is set, actions of the pack fail with it.
    """

    RESOURCE_TYPE = "config"

    pack = me.StringField(required=True, unique=True)
    values = EscapedDictField()
    path = me.StringField()
    error = me.StringField()

    meta = {"collection": "config_d_b"}

    def set_identity(self) -> None:
        """Nothing derived: a config is known by its pack alone."""
