"""/policies: list, get by ref or id, create, update, delete. A policy for an unknown action or of an
unknown type is a 400 naming it; a second policy of one type on one action is a 409.

| request                   | query / body                           | answer                              |
| ------------------------- | -------------------------------------- | ----------------------------------- |
| GET /policies             | P (100), pack, name, resource_ref,     | Policy[]                            |
|                           | policy_type                            |                                     |
| GET /policies/{ref_or_id} |                                        | Policy                              |
| POST /policies            | name, pack, resource_ref, policy_type, | 201 Policy (parameters with the     |
|                           | parameters, description, enabled       | type's defaults)                    |
| PUT /policies/{ref_or_id} | the same (what GET shows is accepted)  | 200 Policy                          |
| DELETE /policies/{..}     |                                        | 204                                 |
"""

from __future__ import annotations

import logging
from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.exceptions import ConflictError
from st2common.models.api.base import document_dict
from st2common.models.db.policy import PolicyDB
from st2common.services import policies

LOG = logging.getLogger(__name__)

FIELDS = ("uid", "ref", "name", "pack", "description", "enabled", "resource_ref", "policy_type", "parameters",
          "metadata_file")


def to_api(doc: PolicyDB) -> dict[str, Any]:
    """A policy as StackStorm shows it."""
    return document_dict(doc, FIELDS)


class PoliciesController(ResourceController):
    """Policies, looked up by ref (pack.name) or id."""

    resource = "policies"
    model = PolicyDB
    lookup_by = "ref"
    supported_filters = {"pack": "pack", "name": "name", "resource_ref": "resource_ref",
                         "policy_type": "policy_type"}
    default_sort = ("pack", "name")
    mandatory_retrieve = ("pack", "name")
    mandatory_response = ("id", "ref")

    routes = (
        Route("GET", "", "get_all", {**PAGING, "id": "array", "pack": "string", "name": "string",
                                     "resource_ref": "string", "policy_type": "string"}),
        Route("POST", "", "post", status=201),
        Route("GET", "{ref_or_id}", "get_one"),
        Route("PUT", "{ref_or_id}", "put"),
        Route("DELETE", "{ref_or_id}", "delete", status=204),
    )

    def to_api(self, doc: PolicyDB, call: Call) -> dict:
        return to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /policies."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /policies/{ref_or_id}."""
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)

    def post(self, call: Call) -> webob.Response:
        """POST /policies: a new policy; 201."""
        body = call.body()
        if isinstance(body, dict) and body.get("name") and body.get("pack"):
            existing = self.access().get(ref=PolicyDB.make_ref(body["pack"], body["name"]))
            if existing is not None:
                raise ConflictError(f'Policy "{existing.ref}" already exists.', conflict_id=str(existing.pk))
        policy = policies.save_policy(body, self.state.publisher)
        LOG.info("policy %s (%s) created by %s", policy.ref, policy.pk, call.user)
        return reply(to_api(policy), status=201)

    def put(self, call: Call) -> dict:
        """PUT /policies/{ref_or_id}: replace a policy (the pack and name are kept when the body has none)."""
        policy = self.lookup(call.path["ref_or_id"])
        body = call.body()
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in ("id", "ref", "uid")}
            body.setdefault("pack", policy.pack)
            body.setdefault("name", policy.name)
            if PolicyDB.make_ref(body["pack"], body["name"]) != policy.ref:
                other = self.access().get(ref=PolicyDB.make_ref(body["pack"], body["name"]))
                if other is not None:
                    raise ConflictError(f'Policy "{other.ref}" already exists.', conflict_id=str(other.pk))
        policy = policies.save_policy(body, self.state.publisher, existing=policy)
        LOG.info("policy %s (%s) updated by %s", policy.ref, policy.pk, call.user)
        return to_api(policy)

    def delete(self, call: Call) -> None:
        """DELETE /policies/{ref_or_id}."""
        policy = self.lookup(call.path["ref_or_id"])
        self.access().delete(policy)
        LOG.info("policy %s (%s) deleted by %s", policy.ref, policy.pk, call.user)
