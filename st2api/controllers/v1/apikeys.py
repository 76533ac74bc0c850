"""/apikeys: create (the raw key is answered once), list and get (hash masked), update, delete.

| Route                     | Notes                                                                    |
|---------------------------|--------------------------------------------------------------------------|
| GET /apikeys              | limit (default 50), offset, show_secrets (admins see key_hash)          |
| GET /apikeys/{id_or_key}  | by id or by the raw key                                                  |
| POST /apikeys             | {user?, metadata?, enabled?, key_hash?}: 201 with a new ``key``, or the given hash stored (load) |
| PUT /apikeys/{id_or_key}  | enabled, metadata, user change; key_hash only "********"/empty/unchanged |
| DELETE /apikeys/{id_or_key} | 204                                                                    |

Users who are not admins see and manage only their own keys.
"""

from __future__ import annotations

import logging
from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.exceptions import AccessDeniedError, ValidationError
from st2common.models.db.auth import ApiKeyDB
from st2common.services import apikeys

LOG = logging.getLogger(__name__)

SECRETS = {"show_secrets": "boolean"}
CHANGEABLE = ("enabled", "metadata", "user")


class ApiKeysController(ResourceController):
    """API keys."""

    resource = "apikeys"
    model = ApiKeyDB
    default_limit = 50
    supported_filters = {"user": "user"}
    default_sort = ("user", "created_at")

    routes = (
        Route("GET", "", "get_all", {**PAGING, **SECRETS, "user": "string"}),
        Route("POST", "", "post", status=201),
        Route("GET", "{id_or_key}", "get_one", SECRETS),
        Route("PUT", "{id_or_key}", "put"),
        Route("DELETE", "{id_or_key}", "delete", status=204),
    )

    def to_api(self, doc: ApiKeyDB, call: Call) -> dict[str, Any]:
        return apikeys.shape(doc, show_hash=not call.mask_secrets)

    def filter_query(self, call: Call) -> dict[str, Any]:
        query = super().filter_query(call)
        if not self.is_admin(call):
            query["user"] = call.user
        return query

    def _own(self, call: Call) -> ApiKeyDB:
        doc = apikeys.lookup(call.path["id_or_key"])
        if doc.user != call.user and not self.is_admin(call):
            raise AccessDeniedError(f'User "{call.user}" may not use the API key "{doc.pk}" of another user')
        return doc

    def get_all(self, call: Call) -> webob.Response:
        """GET /apikeys."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /apikeys/{id_or_key}."""
        return self.get_response(self._own(call), call)

    def post(self, call: Call) -> webob.Response:
        """POST /apikeys: the new key, shown only in this answer."""
        body = call.body()
        if not isinstance(body, dict):
            raise ValidationError("The body must be an object")
        user = body.get("user") or call.user
        if user != call.user and not self.is_admin(call):
            raise AccessDeniedError("Only admins can create API keys for other users")
        known_hash = body.get("key_hash") if body.get("key_hash") not in (None, "", apikeys.MASK) else None
        if known_hash and not self.is_admin(call):
            raise AccessDeniedError("Only admins can load API keys by their hash")
        doc, raw = apikeys.create(user, body.get("metadata"), body.get("enabled", True), known_hash)
        LOG.info("apikey %s created for %s by %s", doc.pk, user, call.user)
        shown = apikeys.shape(doc)
        shown.pop("key_hash")
        return reply({**shown, "key": raw} if raw else shown, status=201)

    def put(self, call: Call) -> dict[str, Any]:
        """PUT /apikeys/{id_or_key}: enabled, metadata and user."""
        doc = self._own(call)
        body = call.body()
        if not isinstance(body, dict):
            raise ValidationError("The body must be an object")
        given_hash = body.get("key_hash")
        if given_hash not in (None, "", apikeys.MASK, doc.key_hash):
            raise ValidationError("key_hash of an API key cannot be changed", field="key_hash")
        for name in CHANGEABLE:
            if name in body:
                setattr(doc, name, body[name])
        if doc.user != call.user and not self.is_admin(call):
            raise AccessDeniedError("Only admins can give API keys to other users")
        self.access().add_or_update(doc, publish=False)
        self.state.authenticator.forget_key(str(doc.pk))
        LOG.info("apikey %s updated by %s (enabled=%s)", doc.pk, call.user, doc.enabled)
        return self.to_api(doc, call)

    def delete(self, call: Call) -> None:
        """DELETE /apikeys/{id_or_key}."""
        doc = self._own(call)
        self.access().delete(doc, publish=False)
        self.state.authenticator.forget_key(str(doc.pk))
        LOG.info("apikey %s deleted by %s", doc.pk, call.user)
