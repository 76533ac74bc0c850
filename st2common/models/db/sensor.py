"""Sensor type documents: a pack's sensor class, where its code is, and the trigger types it emits."""

import mongoengine as me

from st2common.models.db.base import ContentMixin, WholeListField

# StackStorm refuses shorter poll intervals.
MINIMUM_POLL_INTERVAL = 4


class SensorTypeDB(ContentMixin, me.Document):
    """A sensor: ``name`` is its class name, ``entry_point`` the file relative to ``sensors/``."""

    RESOURCE_TYPE = "sensor_type"

    name = me.StringField(required=True)
    pack = me.StringField(required=True)
    ref = me.StringField(required=True, unique=True)
    uid = me.StringField(required=True)
    class_name = me.StringField(required=True)
    entry_point = me.StringField(required=True)
    # file://<absolute path of the sensor's Python file>
    artifact_uri = me.StringField()
    description = me.StringField()
    # Trigger type refs. Not indexed: the embedded server finds nothing through an indexed list.
    trigger_types = WholeListField(me.StringField())
    poll_interval = me.IntField()
    enabled = me.BooleanField(default=True)
    metadata_file = me.StringField()

    meta = {"collection": "sensor_type_d_b", "indexes": ["pack", "enabled"]}
