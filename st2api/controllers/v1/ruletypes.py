"""/ruletypes: the rule types (standard, backstop), list and get."""

from __future__ import annotations

import webob

from st2api.controllers.base import Call, ResourceController, Route
from st2common.models.api import rule as rule_api
from st2common.models.db.rule import RuleTypeDB


class RuleTypesController(ResourceController):
    """Rule types, looked up by id, then by name."""

    resource = "ruletypes"
    model = RuleTypeDB
    lookup_by = "name"
    supported_filters = {"name": "name"}
    default_sort = ("name",)

    routes = (
        Route("GET", "", "get_all", {"limit": "integer", "offset": "integer", "id": "array", "name": "string"}),
        Route("GET", "{id}", "get_one"),
    )

    def to_api(self, doc: RuleTypeDB, call: Call) -> dict:
        return rule_api.rule_type_to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /ruletypes."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /ruletypes/{id} (a name works too)."""
        return self.get_response(self.lookup(call.path["id"]), call)
