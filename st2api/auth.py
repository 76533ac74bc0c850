"""Who is asking: the token or API key on a request, checked in StackStorm's order, and what they may do.

The first credential present wins, even when it is invalid and a valid one of
another kind is also there: the ``X-Auth-Token`` header, the ``St2-Api-Key``
header, the ``x-auth-token`` and ``st2-api-key`` query parameters, then the
``auth-token`` cookie. A checked credential is trusted for
``[auth] credential_cache_ttl`` seconds (never past a token's expiry) without
a database read; disabling or deleting a key through this API drops it from
the cache at once, other revocations take effect within that time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import webob

from st2common import rbac
from st2common.exceptions import AccessDeniedError, AuthError
from st2common.services import apikeys, tokens

NO_CREDENTIALS = "Unauthorized - One of Token or API key required."
METHOD_TOKEN = "authentication token"
METHOD_API_KEY = "API key"
SAFE_METHODS = ("GET", "HEAD")
# (kind, where, name) in the order StackStorm tries them.
SOURCES = (
    ("token", "header", "X-Auth-Token"),
    ("api_key", "header", "St2-Api-Key"),
    ("token", "query", "x-auth-token"),
    ("api_key", "query", "st2-api-key"),
    ("token", "cookie", "auth-token"),
)
CACHE_LIMIT = 10_000


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: user, how they proved it, and their roles."""

    user: str
    method: str
    location: str
    roles: tuple[str, ...] = ()
    is_admin: bool = False
    token_expire: float | None = None
    key_id: str | None = None


def credential(request: webob.Request) -> tuple[str, str, str] | None:
    """(kind, location, value) of the first credential present on request, or None."""
    for kind, where, name in SOURCES:
        if where == "header":
            value = request.headers.get(name)
        elif where == "query":
            value = request.GET.get(name)
        else:
            value = request.cookies.get(name)
        if value:
            return kind, where, value
    return None


class Authenticator:
    """Checks credentials against the database, remembering good ones briefly."""

    def __init__(self, settings, roles: rbac.Roles | None = None) -> None:
        self.enabled = settings.auth.enable
        self.cache_ttl = settings.auth.credential_cache_ttl
        self.roles = roles or rbac.Roles(settings)
        self.system_user = settings.system_user.user
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def identify(self, request: webob.Request) -> Identity:
        """The caller of request; AuthError (401) with StackStorm's message when there is none or it is bad."""
        if not self.enabled:
            return Identity(self.system_user, "none", "none", tuple(self.roles.of(self.system_user)), True)
        found = credential(request)
        if found is None:
            raise AuthError(NO_CREDENTIALS)
        kind, location, value = found
        digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()
        now = time.time()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        identity = self._check(kind, location, value)
        until = now + self.cache_ttl
        if identity.token_expire is not None:
            until = min(until, identity.token_expire)
        with self._lock:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[digest] = (until, identity)
        return identity

    def _check(self, kind: str, location: str, value: str) -> Identity:
        if kind == "token":
            token = tokens.check(value)
            expire = tokens.as_utc(token.expiry).timestamp()
            return self._identity(token.user, METHOD_TOKEN, location, token_expire=expire)
        key = apikeys.check(value)
        return self._identity(key.user, METHOD_API_KEY, location, key_id=str(key.pk))

    def _identity(self, user: str, method: str, location: str, **extra) -> Identity:
        return Identity(user, method, location, tuple(self.roles.of(user)), self.roles.is_admin(user), **extra)

    def forget_key(self, key_id: str) -> None:
        """Drop every cached identity that came from the API key key_id (disabled or deleted)."""
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[1].key_id != key_id}

    def authorize(self, identity: Identity, method: str, permission: str, reads: bool) -> None:
        """AccessDeniedError (403) unless identity's roles allow this operation."""
        if identity.is_admin:
            return
        if (method in SAFE_METHODS or reads) and self.roles.may_read(identity.user):
            return
        raise AccessDeniedError(f'User "{identity.user}" doesn\'t have required permission "{permission}"')
