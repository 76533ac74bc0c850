"""/runnertypes: list, get by name or id, and PUT (only ``enabled`` applies, as in StackStorm)."""

from __future__ import annotations

import logging

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route
from st2common.models.api import runner as runner_api
from st2common.models.db.runner import RunnerTypeDB

LOG = logging.getLogger(__name__)


class RunnerTypesController(ResourceController):
    """Runner types, looked up by id, then by name."""

    resource = "runnertypes"
    model = RunnerTypeDB
    lookup_by = "name"
    supported_filters = {"name": "name"}
    default_sort = ("name",)

    routes = (
        Route("GET", "", "get_all", {**PAGING, "id": "array", "name": "array"}),
        Route("GET", "{name_or_id}", "get_one"),
        Route("PUT", "{name_or_id}", "put"),
    )

    def to_api(self, doc: RunnerTypeDB, call: Call) -> dict:
        return runner_api.to_api(doc, mask_secrets=call.mask_secrets)

    def get_all(self, call: Call) -> webob.Response:
        """GET /runnertypes (the CLI's `runner get` asks ?name=X and expects one row)."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /runnertypes/{name_or_id}."""
        return self.get_response(self.lookup(call.path["name_or_id"]), call)

    def put(self, call: Call) -> dict:
        """PUT /runnertypes/{name_or_id}: enable or disable a runner type."""
        runner = self.lookup(call.path["name_or_id"])
        body = runner_api.validate_update(call.body())
        if body.get("id") and body["id"] != str(runner.pk):
            LOG.warning("PUT /runnertypes/%s: ignoring mismatched id %s in the body",
                        call.path["name_or_id"], body["id"])
        if "enabled" in body and body["enabled"] != runner.enabled:
            runner.enabled = body["enabled"]
            runner = self.access().add_or_update(runner)
            LOG.info("runner type %s %s", runner.name, "enabled" if runner.enabled else "disabled")
        return self.to_api(runner, call)
