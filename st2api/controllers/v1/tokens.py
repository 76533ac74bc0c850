"""Tokens: POST /tokens with HTTP Basic credentials, POST /tokens/validate.

Served by the auth app on ``[auth] port`` at ``/tokens`` and ``/v1/tokens``
(where the CLI posts), and by the API app at ``/auth/v1/tokens``, as
StackStorm's proxy layout has it. Creating a token is the only call that needs
no credentials; validating one needs a token or API key itself.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from st2api.controllers.base import Call, Controller, Route
from st2common import config
from st2common.exceptions import AuthError, ValidationError
from st2common.services import tokens
from st2common.services.users import FlatFileUsers, htpasswd_path

LOG = logging.getLogger(__name__)

BAD_CREDENTIALS = "Invalid or missing credentials"


def basic_credentials(header: str | None) -> tuple[str, str]:
    """(user, password) from an Authorization: Basic header; AuthError for anything else."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise AuthError(BAD_CREDENTIALS)
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError(BAD_CREDENTIALS) from None
    if not sep or not user:
        raise AuthError(BAD_CREDENTIALS)
    return user, password


class TokenHandlers(Controller):
    """The two token operations, mounted under a prefix by the subclasses."""

    prefix = ""

    def __init__(self, state) -> None:
        super().__init__(state)
        self.users = FlatFileUsers(htpasswd_path(state.settings))
        self.routes = (
            Route("POST", self.prefix, "create", status=201, public=True),
            Route("POST", f"{self.prefix}/validate".strip("/"), "validate", reads=True),
        )

    def create(self, call: Call) -> dict[str, Any]:
        """POST /tokens: a new token for the Basic-auth user."""
        user, password = basic_credentials(call.request.headers.get("Authorization"))
        if not self.users.authenticate(user, password):
            LOG.info("auth: refused a token to %s: wrong user or password", user)
            raise AuthError(BAD_CREDENTIALS)
        body = call.body()
        if not isinstance(body, dict):
            raise ValidationError("The body must be an object")
        if body.get("user") or body.get("impersonate_user"):
            raise ValidationError("Only service users can ask for a token for another user.", field="user")
        token, raw = tokens.issue(call.settings, user, ttl=body.get("ttl"))
        call.headers["X-API-URL"] = config.public_api_url(call.settings, versioned=False)
        return {"id": str(token.pk), "user": token.user, "token": raw, "expiry": tokens.iso_expiry(token.expiry),
                "metadata": dict(token.metadata or {}), "service": token.service}

    def validate(self, call: Call) -> dict[str, bool]:
        """POST /tokens/validate: whether the body's token is valid."""
        body = call.body()
        if not isinstance(body, dict) or not body.get("token"):
            raise ValidationError("Token is not provided in the request body.", field="token")
        return {"valid": tokens.is_valid(str(body["token"]))}


class TokensController(TokenHandlers):
    """/tokens on the auth port."""

    resource = "tokens"
    prefix = ""


class AuthController(TokenHandlers):
    """/auth/v1/tokens on the API port."""

    resource = "auth"
    prefix = "v1/tokens"
