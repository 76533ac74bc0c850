"""Access tokens: issued to a user for a time, checked by hash, refused once expired.

The raw token is 32 hex characters (uuid4, as StackStorm's); only its SHA-256
is stored, so it is shown once, to whoever asked for it.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import uuid
from typing import Any

from st2common.exceptions import AuthError, ValidationError
from st2common.models.db.auth import TokenDB, UserDB
from st2common.models.db.base import utcnow
from st2common.persistence.access import Access

LOG = logging.getLogger(__name__)

TOKEN_EXPIRED = "Unauthorized - Token has expired."
TOKEN_UNKNOWN = "Unauthorized"


def token_hash(raw: str) -> str:
    """The stored form of a raw token."""
    return hashlib.sha256(raw.encode()).hexdigest()


def issue(settings, user: str, ttl: int | None = None, metadata: dict[str, Any] | None = None,
          service: bool = False) -> tuple[TokenDB, str]:
    """A new token for user, valid for ttl seconds (the configured default when None), and its raw value.

    ttl above the configured maximum is a ValidationError with StackStorm's message.
    """
    limit = settings.auth.service_token_ttl if service else settings.auth.token_ttl
    if ttl is None:
        ttl = limit
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        raise ValidationError(f"TTL must be a positive integer, not {ttl!r}.", field="ttl")
    if ttl > limit:
        raise ValidationError(f"TTL specified {ttl} is greater than max allowed {limit}.", field="ttl")
    if not service:
        ensure_user(user)
    token, raw = prepare(user, ttl, metadata, service)
    store(token)
    return token, raw


def prepare(user: str, ttl: int, metadata: dict[str, Any] | None = None,
            service: bool = False) -> tuple[TokenDB, str]:
    """A token not stored yet (no checks: the caller's ttl is trusted), and its raw value."""
    raw = uuid.uuid4().hex
    token = TokenDB(user=user, token_hash=token_hash(raw), expiry=utcnow() + datetime.timedelta(seconds=ttl),
                    metadata=metadata or {}, service=service)
    return token, raw


def store(token: TokenDB) -> None:
    """Store a prepared token: from now on it authenticates."""
    Access(TokenDB).add_or_update(token, publish=False)
    LOG.log(logging.DEBUG if token.service else logging.INFO, "auth: token %s issued to %s (expires %s)",
            token.pk, token.user, iso_expiry(token.expiry))


def ensure_user(name: str) -> None:
    """Record the user, as StackStorm does on first login."""
    UserDB.objects(name=name).update_one(upsert=True, set_on_insert__is_service=False)


def check(raw: str) -> TokenDB:
    """The stored token for raw; AuthError with StackStorm's message when unknown or expired."""
    token = TokenDB.objects(token_hash=token_hash(raw)).first()
    if token is None:
        raise AuthError(TOKEN_UNKNOWN)
    if as_utc(token.expiry) <= utcnow():
        raise AuthError(TOKEN_EXPIRED)
    return token


def is_valid(raw: str) -> bool:
    """True when raw is a known token that has not expired."""
    try:
        check(raw)
    except AuthError:
        return False
    return True


def revoke(raw: str) -> None:
    """Delete the token raw, if it exists (an execution's token once the execution is done)."""
    TokenDB.objects(token_hash=token_hash(raw)).delete()


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """moment as an aware UTC datetime (the database hands back naive UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def iso_expiry(moment: datetime.datetime) -> str:
    """StackStorm's expiry format: ISO-8601 UTC with microseconds and a Z."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
