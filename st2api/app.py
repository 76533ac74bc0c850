"""The pecan application factory: routing, errors, CORS and request ids around the v1 controllers.

pecan hands every path to RootController._route, which resolves it through the
Router table (st2api/controllers) and calls the handler with a Call. Errors
become ``{"faultstring": ...}`` bodies through st2api/errors.py only. The
middleware around the app answers OPTIONS (CORS pre-flight, no auth), refuses
bodies over ``[api] max_body_size`` and puts the CORS headers and
``X-Request-ID`` on every response, errors included.
"""

from __future__ import annotations

import logging
import time
import uuid

import mongoengine as me
import pecan
import webob
from pecan import expose

from st2api.controllers import Router
from st2api.controllers.base import Call, cast_query, reply
from st2api.controllers.v1 import CONTROLLERS
from st2api.errors import BodyTooLarge, error_response
from st2common import __version__
from st2common.persistence.access import Access
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

LOG = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
CORS_METHODS = "GET,POST,PUT,DELETE,OPTIONS"
CORS_HEADERS = "Content-Type,Authorization,X-Auth-Token,St2-Api-Key,X-Request-ID"
CORS_EXPOSE = "Content-Type,X-Limit,X-Total-Count,X-Request-ID"
# StackStorm's default [api] allow_origin, plus the origins it always allows (st2web in development).
DEFAULT_ORIGIN = "http://127.0.0.1:3000"
ALWAYS_ALLOWED = ("http://localhost:8080", "http://127.0.0.1:8080")


class AppState:
    """What handlers share: settings, the publisher, one access object per document type."""

    def __init__(self, settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self._access: dict[type, Access] = {}

    def access(self, model: type[me.Document]) -> Access:
        """The access object for model, publishing writes through the app's publisher."""
        if model not in self._access:
            self._access[model] = Access(model, self.publisher)
        return self._access[model]


class RootController:
    """Every request goes to dispatch(): one routing table instead of pecan's object traversal."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.router = Router([cls(state) for cls in CONTROLLERS])

    @expose()
    def _route(self, args, request):
        return self.dispatch, []

    @expose()
    def dispatch(self):
        request = pecan.request
        request_id = request.environ.get("st2.request_id", "-")
        started = time.monotonic()
        try:
            response = self._handle(request)
        except Exception as exc:  # every failure becomes a faultstring; errors.py decides the status
            response = error_response(exc, request_id, request.method, request.path_info)
        LOG.debug("request %s %s %s -> %d (%.1f ms)", request_id, request.method, request.path_info,
                  response.status_int, (time.monotonic() - started) * 1000)
        return response

    def _handle(self, request: webob.Request) -> webob.Response:
        controller, route, params = self.router.resolve(request.method, request.path_info)
        if controller is None:
            return reply({"version": __version__, "docs_url": "https://docs.stackstorm.com/"})
        call = Call(self.state, request, params, cast_query(route.query, request.GET))
        result = getattr(controller, route.handler)(call)
        if isinstance(result, webob.Response):
            response = result
        elif result is None:
            response = webob.Response(status=route.status)
            response.content_type = None
        else:
            response = reply(result, status=route.status)
        for name, value in call.headers.items():
            response.headers[name] = value
        return response


class ApiMiddleware:
    """CORS, request ids, OPTIONS and the body size limit around the pecan app."""

    def __init__(self, app, settings) -> None:
        self.app = app
        self.max_body_size = settings.api.max_body_size
        origins = list(settings.api.allow_origin) or [DEFAULT_ORIGIN]
        origins += [o for o in ALWAYS_ALLOWED if o not in origins]
        if settings.auth.api_url:
            origins.append(settings.auth.api_url)
        self.origins = origins

    def __call__(self, environ, start_response):
        request_id = environ.get("HTTP_X_REQUEST_ID") or str(uuid.uuid4())
        environ["st2.request_id"] = request_id
        extra = self._cors(environ.get("HTTP_ORIGIN")) + [(REQUEST_ID_HEADER, request_id)]
        replaced = {name.lower() for name, _ in extra}

        def start(status, headers, exc_info=None):
            headers = [(n, v) for n, v in headers if n.lower() not in replaced] + extra
            return start_response(status, headers, exc_info)

        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return webob.Response(status=200, body=b"", content_type="text/plain")(environ, start)
        length = environ.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > self.max_body_size:
            exc = BodyTooLarge(f"Request body is larger than the maximum of {self.max_body_size} bytes")
            response = error_response(exc, request_id, environ.get("REQUEST_METHOD", ""),
                                      environ.get("PATH_INFO", ""))
            return response(environ, start)
        return self.app(environ, start)

    def _cors(self, origin: str | None) -> list[tuple[str, str]]:
        if "*" in self.origins:
            allowed = origin or "*"
        else:
            allowed = origin if origin in self.origins else self.origins[0]
        return [
            ("Access-Control-Allow-Origin", allowed),
            ("Access-Control-Allow-Methods", CORS_METHODS),
            ("Access-Control-Allow-Headers", CORS_HEADERS),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", CORS_EXPOSE),
        ]


def setup_app(settings, publisher: Publisher | None = None):
    """A WSGI app serving the API for settings; writes publish through publisher (one is built if None)."""
    if publisher is None:
        publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    state = AppState(settings, publisher)
    app = pecan.make_app(RootController(state), debug=False, force_canonical=False,
                         guess_content_type_from_ext=False)
    return ApiMiddleware(app, settings)
