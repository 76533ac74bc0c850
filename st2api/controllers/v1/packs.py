"""/packs: list and get (by id, then by ref)."""

from __future__ import annotations

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route
from st2common.models.api import pack as pack_api
from st2common.models.db.pack import PackDB


class PacksController(ResourceController):
    """Registered packs."""

    resource = "packs"
    model = PackDB
    lookup_by = "pack_ref"
    supported_filters = {"name": "name", "ref": "ref"}
    default_sort = ("ref",)

    routes = (
        Route("GET", "", "get_all", {**PAGING, "id": "array", "name": "string", "ref": "string"}),
        Route("GET", "{ref_or_id}", "get_one"),
    )

    def to_api(self, doc: PackDB, call: Call) -> dict:
        return pack_api.to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /packs."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /packs/{ref_or_id}."""
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)
