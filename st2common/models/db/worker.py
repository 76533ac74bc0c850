"""Worker documents: the live service registry that lets a sweep find dead workers."""

import mongoengine as me

from st2common.models.db.base import utcnow


class WorkerDB(me.Document):
    """A running service process, kept alive by periodic heartbeats."""

    RESOURCE_TYPE = "worker"

    worker_id = me.StringField(required=True, unique=True)
    service = me.StringField(required=True)
    hostname = me.StringField(required=True)
    pid = me.IntField(required=True)
    started_at = me.DateTimeField(default=utcnow)
    heartbeat = me.DateTimeField(default=utcnow)

    meta = {"collection": "worker_d_b", "indexes": ["service", "heartbeat"]}
