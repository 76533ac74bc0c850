"""/triggerinstances: list (newest first), get, and re-emit a stored instance."""

from __future__ import annotations

import logging
from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.models.api import trigger as trigger_api
from st2common.models.api.base import parse_isotime
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.services import triggerinstances

LOG = logging.getLogger(__name__)

LIST_QUERY = {**PAGING, "id": "array", "trigger": "array", "trigger_type": "string", "status": "string",
              "timestamp_gt": "string", "timestamp_lt": "string"}


class TriggerInstancesController(ResourceController):
    """Trigger instances, looked up by id."""

    resource = "triggerinstances"
    model = TriggerInstanceDB
    lookup_by = "id"
    supported_filters = {"trigger": "trigger", "status": "status", "timestamp": "occurrence_time"}
    default_sort = ("-occurrence_time",)

    routes = (
        Route("GET", "", "get_all", LIST_QUERY),
        Route("POST", "{instance_id}/re_emit", "re_emit"),
        Route("GET", "{instance_id}", "get_one"),
    )

    def to_api(self, doc: TriggerInstanceDB, call: Call) -> dict:
        return trigger_api.trigger_instance_to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /triggerinstances."""
        raw: dict[str, Any] = {}
        bounds = {}
        if call.query.get("timestamp_gt"):
            bounds["$gt"] = parse_isotime(call.query["timestamp_gt"], "timestamp_gt")
        if call.query.get("timestamp_lt"):
            bounds["$lt"] = parse_isotime(call.query["timestamp_lt"], "timestamp_lt")
        if bounds:
            raw["occurrence_time"] = bounds
        trigger_type = call.query.get("trigger_type")
        if trigger_type:
            refs = [t.ref for t in self.state.access(TriggerDB).query(raw={"type": trigger_type}, only=("ref",))]
            if not refs:
                return reply([], headers={"X-Total-Count": "0"})
            raw["$and"] = [{"trigger": {"$in": refs}}]
        return self.list_response(call, raw=raw)

    def get_one(self, call: Call) -> webob.Response:
        """GET /triggerinstances/{instance_id}."""
        return self.get_response(self.lookup(call.path["instance_id"]), call)

    def re_emit(self, call: Call) -> dict:
        """POST /triggerinstances/{instance_id}/re_emit: dispatch its payload again as a new instance."""
        original = self.lookup(call.path["instance_id"])
        instance = triggerinstances.re_emit(self.state.publisher, original.pk)
        LOG.info("trigger instance %s re-emitted as %s by %s", original.pk, instance.pk, call.user)
        # StackStorm's wording, typo included: clients may match on it.
        return {"message": f"Trigger instance {original.pk} succesfully re-sent.",
                "payload": dict(instance.payload or {})}
