"""/policytypes: the kinds of policy (``action.concurrency``, ``action.concurrency.attr``, ``action.retry``)
with their parameters' schemas; looked up by ref or id."""

from __future__ import annotations

from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route
from st2common.content.policies import ensure_policy_types
from st2common.models.api.base import document_dict
from st2common.models.db.policy import PolicyTypeDB

FIELDS = ("uid", "ref", "name", "resource_type", "enabled", "module", "parameters", "description")


class PolicyTypesController(ResourceController):
    """Policy types."""

    resource = "policytypes"
    model = PolicyTypeDB
    lookup_by = "ref"
    supported_filters = {"resource_type": "resource_type", "name": "name"}
    default_sort = ("resource_type", "name")
    mandatory_response = ("id", "ref")

    routes = (
        Route("GET", "", "get_all", {**PAGING, "id": "array", "name": "string", "resource_type": "string"}),
        Route("GET", "{ref_or_id}", "get_one"),
    )

    def __init__(self, state) -> None:
        super().__init__(state)
        self._ensured = False

    def _ensure(self) -> None:
        # The types are data of this platform: present even before any `st2ctl reload --register-policies`.
        if not self._ensured:
            ensure_policy_types()
            self._ensured = True

    def to_api(self, doc: PolicyTypeDB, call: Call) -> dict[str, Any]:
        return document_dict(doc, FIELDS)

    def get_all(self, call: Call) -> webob.Response:
        """GET /policytypes."""
        self._ensure()
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /policytypes/{ref_or_id}."""
        self._ensure()
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)
