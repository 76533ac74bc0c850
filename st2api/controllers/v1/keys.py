"""/keys: the datastore. Items are addressed by name within a scope (and user), as in StackStorm.

| request                 | query                                     | answer                                  |
| ----------------------- | ----------------------------------------- | --------------------------------------- |
| GET /keys               | prefix, name, scope (default system;      | a plain array: system items, then the   |
|                         | all, system, user, st2kv.*), user,        | requester's user items, each part paged |
|                         | decrypt, limit (100), offset              | on its own; no X-Total-Count            |
| GET /keys/{name}        | scope (default system), user, decrypt     | the item, or 404 in StackStorm's words  |
| PUT /keys/{name}        | scope (the body's scope wins)             | 200 and the stored item (create/update) |
| DELETE /keys/{name}     | scope, user                               | 204                                     |

A secret is shown as its ciphertext with ``encrypted: true`` unless
``decrypt=true`` is asked for. ``user`` naming someone other than the
requester is refused, as StackStorm refuses it while RBAC is off.
"""

from __future__ import annotations

from typing import Any

import webob

from st2api.controllers.base import Call, ResourceController, Route, reply
from st2common.exceptions import AccessDeniedError, ValidationError
from st2common.models.api.base import validate
from st2common.models.db.keyvalue import ALL_SCOPE, ALLOWED_SCOPES, FULL_USER_SCOPE, KeyValuePairDB
from st2common.services.keyvalues import Datastore, full_scope

# StackStorm's KeyValuePairSetAPI: everything GET shows is accepted back; value is text.
SET_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "value": {"type": "string"},
        "secret": {"type": "boolean"},
        "encrypted": {"type": "boolean"},
        "scope": {"type": "string"},
        "expire_timestamp": {"type": ["string", "null"]},
        "ttl": {"type": ["integer", "null"]},
        "user": {"type": ["string", "null"]},
    },
    "required": ["value"],
    "additionalProperties": False,
}

NOT_WITHOUT_RBAC = '"user" attribute can only be provided by admins when RBAC is enabled'


class KeysController(ResourceController):
    """Datastore items."""

    resource = "keys"
    model = KeyValuePairDB

    routes = (
        Route("GET", "", "get_all", {"prefix": "string", "name": "string", "scope": "string", "user": "string",
                                     "decrypt": "boolean", "limit": "integer", "offset": "integer",
                                     "sort": "string"}),
        Route("GET", "{name}", "get_one", {"scope": "string", "user": "string", "decrypt": "boolean"}),
        Route("PUT", "{name}", "put", {"scope": "string"}),
        Route("DELETE", "{name}", "delete", {"scope": "string", "user": "string"}, status=204),
    )

    def __init__(self, state) -> None:
        super().__init__(state)
        self.datastore = Datastore(state.settings, state.publisher)

    def _user(self, call: Call, user: str | None) -> str | None:
        """The user a request names, refused when it is not the requester (StackStorm without RBAC)."""
        if user and user != call.user:
            raise AccessDeniedError(NOT_WITHOUT_RBAC)
        return user or None

    @staticmethod
    def _scope(value: str | None, user: str | None) -> str:
        if user:
            return FULL_USER_SCOPE
        return full_scope(None if value in (None, "", ALL_SCOPE) else value)

    def get_all(self, call: Call) -> webob.Response:
        """GET /keys."""
        query = call.query
        user = self._user(call, query.get("user"))
        scope = query.get("scope") or "st2kv.system"
        if user:
            scope = FULL_USER_SCOPE
        if scope not in (ALL_SCOPE, *ALLOWED_SCOPES):
            raise ValidationError(f"Invalid scope: {scope}", field="scope")
        offset = query.get("offset", 0)
        if offset < 0:
            raise ValidationError(f'Offset, "{offset}" specified, must be a positive number.', field="offset")
        items = self.datastore.list(prefix=query.get("prefix"), name=query.get("name"), scope=scope, user=user,
                                    decrypt=query.get("decrypt", False), limit=self.effective_limit(call),
                                    offset=offset, requester=call.user, is_admin=self.is_admin(call))
        return reply(items)

    def get_one(self, call: Call) -> dict[str, Any]:
        """GET /keys/{name}."""
        user = self._user(call, call.query.get("user"))
        return self.datastore.get(call.path["name"], self._scope(call.query.get("scope"), user), user=user,
                                  decrypt=call.query.get("decrypt", False), requester=call.user,
                                  is_admin=self.is_admin(call))

    def put(self, call: Call) -> dict[str, Any]:
        """PUT /keys/{name}: create or replace."""
        body = validate(SET_SCHEMA, call.body())
        user = self._user(call, body.get("user"))
        scope = body.get("scope") or call.query.get("scope")
        return self.datastore.set(call.path["name"], body["value"], self._scope(scope, None), user=user,
                                  secret=body.get("secret", False), encrypted=body.get("encrypted", False),
                                  ttl=body.get("ttl"), description=body.get("description"),
                                  requester=call.user, is_admin=self.is_admin(call))

    def delete(self, call: Call) -> None:
        """DELETE /keys/{name}."""
        user = self._user(call, call.query.get("user"))
        self.datastore.delete(call.path["name"], self._scope(call.query.get("scope"), user), user=user,
                              requester=call.user, is_admin=self.is_admin(call))
