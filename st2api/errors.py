"""The one exception -> HTTP status table, and the ``{"faultstring": ...}`` bodies StackStorm answers with.

Nothing else in the platform knows about HTTP: controllers and services raise
the errors of st2common.exceptions and this table decides the status. The
first matching class wins, so subclasses come before their parents. Anything
not in the table is a bug: it is logged with its traceback and the request id,
and the client gets a generic 500.
"""

from __future__ import annotations

import json
import logging

import webob
import webob.exc

from st2common.exceptions import (
    AccessDeniedError, AuthError, BusError, ConfigError, ConflictError, ContentError, DatabaseError,
    NotFoundError, StackStormBaseException, StaleRecordError, TransitionError, UnknownRunnerError,
    ValidationError,
)

LOG = logging.getLogger(__name__)

# json.dumps(body, default=str) without building an encoder per call.
_encode = json.JSONEncoder(default=str).encode

INTERNAL_ERROR = "Internal Server Error"
ROUTE_NOT_FOUND = "The resource could not be found."


class RouteNotFound(StackStormBaseException):
    """No route matches the request's method and path."""

    def __init__(self, path: str) -> None:
        super().__init__(ROUTE_NOT_FOUND, path=path)


class BodyTooLarge(StackStormBaseException):
    """The request body is larger than [api] max_body_size."""


# (exception class, HTTP status), most specific first. ParameterError is a ValidationError.
STATUS_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (RouteNotFound, 404),
    (NotFoundError, 404),
    (ConflictError, 409),
    # Someone else changed the record between our read and our conditional write.
    (StaleRecordError, 409),
    (ValidationError, 400),
    (ContentError, 400),
    (UnknownRunnerError, 400),
    # StackStorm answers a refused status change (UnexpectedActionExecutionStatusError) with 400.
    (TransitionError, 400),
    (AuthError, 401),
    (AccessDeniedError, 403),
    (BodyTooLarge, 413),
    # RootController.dispatch raises this when the path or query string is not valid UTF-8.
    (webob.exc.HTTPBadRequest, 400),
    (DatabaseError, 503),
    (BusError, 503),
    (ConfigError, 500),
)


def status_for(exc: BaseException) -> int | None:
    """The HTTP status for exc, or None when it is not an error we raise on purpose."""
    for cls, status in STATUS_TABLE:
        if isinstance(exc, cls):
            return status
    return None


def json_response(body, status: int = 200, headers: dict[str, str] | None = None) -> webob.Response:
    """A JSON response of body (values JSON cannot hold are written as their str())."""
    response = webob.Response(body=_encode(body).encode(), status=status, content_type="application/json",
                              charset="utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def fault_response(message: str, status: int, **extra) -> webob.Response:
    """A {"faultstring": message} response (plus extra keys, e.g. conflict-id)."""
    return json_response({"faultstring": message, **extra}, status=status)


def error_response(exc: BaseException, request_id: str, method: str, path: str) -> webob.Response:
    """The response for an exception raised while handling a request."""
    status = status_for(exc)
    unavailable = isinstance(exc, (DatabaseError, BusError))
    if status is None or (status >= 500 and not unavailable):
        LOG.error("request %s %s %s failed", request_id, method, path, exc_info=exc)
        return fault_response(INTERNAL_ERROR, 500)
    if unavailable:
        LOG.error("request %s %s %s: service unavailable: %s", request_id, method, path, exc)
    else:
        LOG.info("request %s %s %s: %d %s", request_id, method, path, status, exc)
    extra = {}
    if isinstance(exc, ConflictError) and getattr(exc, "conflict_id", None):
        extra["conflict-id"] = str(exc.conflict_id)
    return fault_response(str(exc), status, **extra)
