"""The pecan application factory: routing, errors, CORS and request ids around the v1 controllers.

pecan hands every request to RootController.dispatch (RoutedPecan skips pecan's
own routing), which resolves it through the Router table (st2api/controllers)
and calls the handler with a Call. Errors
become ``{"faultstring": ...}`` bodies through st2api/errors.py only. The
middleware around the app answers OPTIONS (CORS pre-flight, no auth), refuses
bodies over ``[api] max_body_size`` and puts the CORS headers and
``X-Request-ID`` on every response, errors included. An origin is allowed only
when ``[api] allow_origin`` names it (or is ``*``).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import types
import uuid

import mongoengine as me
import pecan
import pecan.core
import webob
import webob.cookies
import webob.exc
from pecan import expose

from st2api.auth import METHOD_TOKEN, Authenticator
from st2api.controllers import Router
from st2api.controllers.base import Call, cast_query, reply
from st2api.controllers.v1 import AUTH_CONTROLLERS, CONTROLLERS
from st2api.errors import BodyTooLarge, error_response
from st2common import __version__
from st2common.persistence.access import Access
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

LOG = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# The verb of a permission name per method (action_view, action_create ...), for 403 messages.
PERMISSION_VERBS = {"GET": "view", "HEAD": "view", "POST": "create", "PUT": "modify", "DELETE": "delete",
                    "PATCH": "modify"}
CORS_METHODS = "GET,POST,PUT,DELETE,OPTIONS"
CORS_HEADERS = "Content-Type,Authorization,X-Auth-Token,St2-Api-Key,X-Request-ID"
CORS_EXPOSE = "Content-Type,X-Limit,X-Total-Count,X-Request-ID"
# Tokens whose latest auth-token cookie is kept (the whole cache is dropped past it).
COOKIE_CACHE_LIMIT = 10_000
# Origin header values whose CORS headers are kept (the whole cache is dropped past it).
ORIGIN_CACHE_LIMIT = 1000
# A uuid4's random bytes, and how many request ids are made from one read of them.
REQUEST_ID_BYTES = 16
REQUEST_IDS_AHEAD = 256


def singular(resource: str) -> str:
    """A resource's singular name in permission names: executions -> execution, policies -> policy."""
    if resource.endswith("ies"):
        return resource[:-3] + "y"
    return resource[:-1] if resource.endswith("s") else resource


class AppState:
    """What handlers share: settings, the publisher, one access object per document type."""

    def __init__(self, settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.authenticator = Authenticator(settings)
        self._access: dict[type, Access] = {}

    def access(self, model: type[me.Document]) -> Access:
        """The access object for model, publishing writes through the app's publisher."""
        if model not in self._access:
            self._access[model] = Access(model, self.publisher)
        return self._access[model]


class RootController:
    """Every request goes to dispatch(): one routing table instead of pecan's object traversal."""

    def __init__(self, state: AppState, controllers=CONTROLLERS) -> None:
        self.state = state
        self.router = Router([cls(state) for cls in controllers])
        # token -> ((max_age, second), Set-Cookie value) of its latest cookie.
        self._cookies: dict[str, tuple[tuple[int, int], str]] = {}

    @expose()
    def dispatch(self):
        # The request itself: every attribute read through the pecan.request proxy costs a context-local lookup.
        request = pecan.core.state.request
        environ = request.environ
        request_id = environ.get("st2.request_id", "-")
        started = time.monotonic()
        try:
            try:
                # Decoded once here (webob caches the query): bytes that are not UTF-8 are the client's error.
                request.path_info, request.GET
            except UnicodeDecodeError:
                raise webob.exc.HTTPBadRequest() from None
            response = self._handle(request)
        except Exception as exc:  # every failure becomes a faultstring; errors.py decides the status
            response = error_response(exc, request_id, request.method, environ.get("PATH_INFO", ""))
        LOG.debug("request %s %s %s -> %d (%.1f ms)", request_id, request.method, environ.get("PATH_INFO", ""),
                  response.status_int, (time.monotonic() - started) * 1000)
        return response

    def _handle(self, request: webob.Request) -> webob.Response:
        controller, route, params = self.router.resolve(request.method, request.path_info)
        if controller is None:
            return reply({"version": __version__, "docs_url": "https://docs.stackstorm.com/"})
        identity = None
        if not route.public:
            authenticator = self.state.authenticator
            identity = authenticator.identify(request)
            permission = route.permission or f"{singular(controller.resource)}_{PERMISSION_VERBS[request.method]}"
            authenticator.authorize(identity, request.method, permission, route.reads)
        call = Call(self.state, request, params, cast_query(route.query, request.GET), identity)
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
        if identity is not None and identity.method == METHOD_TOKEN and identity.location != "cookie":
            self._set_cookie(response, request, identity)
        return response

    def _set_cookie(self, response: webob.Response, request: webob.Request, identity) -> None:
        """StackStorm's auth-token cookie for browsers (st2web); the CLI ignores it."""
        token = request.headers.get("X-Auth-Token") or request.GET.get("x-auth-token")
        now = time.time()
        max_age = max(0, int(identity.token_expire - now))
        # The header changes only with Max-Age and the second its Expires date is counted from;
        # building it (webob's Morsel, a date format) costs more than the rest of a cheap request.
        key = (max_age, int(now))
        cached = self._cookies.get(token)
        if cached is None or cached[0] != key:
            api = self.state.settings.api
            header = webob.cookies.make_cookie(
                "auth-token", token.encode("utf-8"), max_age=max_age, httponly=True,
                secure=api.auth_cookie_secure, samesite=api.auth_cookie_same_site)
            if len(self._cookies) >= COOKIE_CACHE_LIMIT:
                self._cookies.clear()
            cached = self._cookies[token] = (key, header)
        response.headerlist.append(("Set-Cookie", cached[1]))


class Request(webob.Request):
    """webob's request as it is: pecan's own wraps every attribute read (dozens a request) to turn a
    UnicodeDecodeError into a 400, which RootController.dispatch checks for once instead."""


class RoutedPecan(pecan.Pecan):
    """pecan as the WSGI layer (the request object and its context local) without its routing.

    pecan's find_controller walks the controller tree and its invoke_controller
    reads the handler's signature (inspect.getfullargspec, twice a request, a
    tenth of a cheap request's CPU) to drop keyword arguments it does not take.
    Here the controller is always RootController.dispatch, which takes none,
    catches every error and answers a webob Response; with no hooks, what is
    left of pecan's request cycle is done here: pecan.request is set while it
    runs, and a 200 with an empty body goes out as a 204 without a
    Content-Type (pecan's rule).
    """

    def __call__(self, environ, start_response):
        request = self.request_cls(environ)
        context = pecan.core.state
        context.request = request
        try:
            response = self.root.dispatch()
        finally:
            del context.request
        if response.status_int == 200 and not isinstance(response.app_iter, types.GeneratorType):
            # pecan also decodes a body with a charset to check it is empty: no bytes, no text.
            if not response.body:
                response.status = 204
        elif response.status_int == 200:
            _peek_empty(response)
        if response.status_int in (204, 304):
            response.content_type = None
        return response(environ, start_response)


def _peek_empty(response: webob.Response) -> None:
    """pecan's rule for a streamed 200: a 204 when the generator yields nothing."""
    ahead, kept = itertools.tee(response.app_iter)
    try:
        next(ahead)
    except StopIteration:
        response.status = 204
    finally:
        response.app_iter = kept


class ApiMiddleware:
    """CORS, request ids, OPTIONS and the body size limit around the pecan app."""

    def __init__(self, app, settings) -> None:
        self.app = app
        self.max_body_size = settings.api.max_body_size
        # Only configured origins: StackStorm also allows its st2web development origins by
        # default, which would let any page served there use a logged-in browser's cookie.
        origins = list(settings.api.allow_origin)
        if origins and settings.auth.api_url:
            origins.append(settings.auth.api_url)
        self.origins = origins
        # Origin header -> (the CORS headers for it, their lower-case names and X-Request-ID's).
        self._cors_by_origin: dict[str | None, tuple[list[tuple[str, str]], frozenset[str]]] = {}
        self._request_ids: list[str] = []

    def __call__(self, environ, start_response):
        request_id = environ.get("HTTP_X_REQUEST_ID") or self._request_id()
        environ["st2.request_id"] = request_id
        origin = environ.get("HTTP_ORIGIN")
        cors = self._cors_by_origin.get(origin)
        if cors is None:
            if len(self._cors_by_origin) >= ORIGIN_CACHE_LIMIT:
                self._cors_by_origin.clear()
            headers = self._cors(origin)
            names = frozenset(name.lower() for name, _ in headers + [(REQUEST_ID_HEADER, "")])
            cors = self._cors_by_origin[origin] = (headers, names)
        extra = cors[0] + [(REQUEST_ID_HEADER, request_id)]
        replaced = cors[1]

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

    def _request_id(self) -> str:
        """A new uuid4 string, as uuid.uuid4() makes it, from random bytes read for 256 at a time."""
        try:
            # list.pop is atomic: threads serving requests side by side never share an id.
            return self._request_ids.pop()
        except IndexError:
            raw = os.urandom(REQUEST_ID_BYTES * REQUEST_IDS_AHEAD)
            made = [str(uuid.UUID(bytes=raw[at:at + REQUEST_ID_BYTES], version=4))
                    for at in range(0, len(raw), REQUEST_ID_BYTES)]
            self._request_ids.extend(made[1:])
            return made[0]

    def _cors(self, origin: str | None) -> list[tuple[str, str]]:
        if "*" in self.origins:
            allowed = origin or "*"
        else:
            allowed = origin if origin in self.origins else None
        headers = [("Access-Control-Allow-Origin", allowed)] if allowed else []
        return headers + [
            ("Access-Control-Allow-Methods", CORS_METHODS),
            ("Access-Control-Allow-Headers", CORS_HEADERS),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", CORS_EXPOSE),
        ]


def setup_app(settings, publisher: Publisher | None = None, controllers=CONTROLLERS):
    """A WSGI app serving the API for settings; writes publish through publisher (one is built if None)."""
    if publisher is None:
        publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    state = AppState(settings, publisher)
    root = RootController(state, controllers)
    # What pecan.make_app builds without debug or error documents (nothing here forwards a request
    # internally, so no RecursiveMiddleware), with pecan's routing skipped.
    app = RoutedPecan(root, force_canonical=False, guess_content_type_from_ext=False, request_cls=Request)
    middleware = ApiMiddleware(app, settings)
    # The routing table, for whoever must see every route (the auth coverage test).
    middleware.router = root.router
    return middleware


def setup_auth_app(settings, publisher: Publisher | None = None):
    """The auth service's WSGI app ([auth] port): /tokens and /v1/tokens."""
    return setup_app(settings, publisher, controllers=AUTH_CONTROLLERS)
