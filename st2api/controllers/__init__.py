"""Request routing: the paths StackStorm serves mapped onto one table of resource controllers.

StackStorm's API answers ``/api/v1/<x>``, ``/v1/<x>`` and bare ``/<x>`` alike,
strips one trailing slash before matching (the CLI sends ``/v1/rules/?limit=50``),
and serves ``/v1/actionexecutions/...`` as ``/v1/executions/...`` (a legacy alias).
"""

from __future__ import annotations

from st2api.controllers.base import Controller, Route
from st2api.errors import RouteNotFound

# First path segments served under another resource's name.
ALIASES = {"actionexecutions": "executions"}


def normalize_path(path: str) -> list[str]:
    """The path's segments below the API version: prefixes, one trailing slash and aliases removed."""
    for prefix in ("/api", "/v1"):
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix):]
    if path.endswith("/"):
        path = path[:-1]
    segments = path.lstrip("/").split("/") if path.strip("/") else []
    if segments:
        segments[0] = ALIASES.get(segments[0], segments[0])
    return segments


class Router:
    """Finds the controller, route and path parameters for a request."""

    def __init__(self, controllers: list[Controller]) -> None:
        self.controllers = {controller.resource: controller for controller in controllers}

    def resolve(self, method: str, path: str) -> tuple[Controller | None, Route | None, dict[str, str]]:
        """(controller, route, params); (None, None, {}) is the API root. RouteNotFound when nothing matches."""
        segments = normalize_path(path)
        if not segments:
            if method == "GET":
                return None, None, {}
            raise RouteNotFound(path)
        controller = self.controllers.get(segments[0])
        found = controller.find(method, segments[1:]) if controller is not None else None
        if found is None:
            raise RouteNotFound(path)
        route, params = found
        return controller, route, params
