"""GET /user: who the caller is, how they authenticated, and their roles."""

from __future__ import annotations

import datetime
from typing import Any

from st2api.auth import METHOD_TOKEN
from st2api.controllers.base import Call, Controller, Route


class UserController(Controller):
    """The caller's identity."""

    resource = "user"
    routes = (Route("GET", "", "get"),)

    def get(self, call: Call) -> dict[str, Any]:
        """GET /user."""
        identity = call.identity
        authentication: dict[str, Any] = {"method": identity.method, "location": identity.location}
        if identity.method == METHOD_TOKEN and identity.token_expire is not None:
            expire = datetime.datetime.fromtimestamp(identity.token_expire, datetime.timezone.utc)
            authentication["token_expire"] = expire.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "username": identity.user,
            "authentication": authentication,
            "rbac": {"enabled": call.settings.rbac.enable, "roles": list(identity.roles),
                     "is_admin": identity.is_admin},
        }
