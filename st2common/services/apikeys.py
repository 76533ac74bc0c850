"""API keys: created with a random key shown once, stored as a SHA-512 hash, enabled or disabled."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import re
from typing import Any

import mongoengine as me

from bson import ObjectId

from st2common.exceptions import AuthError, ConflictError, NotFoundError, ValidationError
from st2common.models.db.auth import ApiKeyDB
from st2common.services.tokens import ensure_user

LOG = logging.getLogger(__name__)

MASK = "********"
KEY_DISABLED = "Unauthorized - API key is disabled."
KEY_UNKNOWN = "Unauthorized - API key does not exist."
# base64 altchars StackStorm draws from for the two non-alphanumeric characters of a key.
_ALTCHARS = (b"Aa", b"Bb", b"Cc", b"Dd", b"Ee", b"Ff", b"Gg", b"Hh", b"Jj", b"Kk", b"Mm", b"Nn")


def key_hash(raw: str) -> str:
    """The stored form of a raw key (SHA-512, hex)."""
    return hashlib.sha512(raw.encode()).hexdigest()


def generate_key() -> str:
    """A new raw key: base64 of the SHA-256 hex of 256 random bytes, padding stripped, as StackStorm's."""
    digest = hashlib.sha256(os.urandom(256)).hexdigest().encode()
    return base64.b64encode(digest, random.SystemRandom().choice(_ALTCHARS)).rstrip(b"=").decode()


def create(user: str, metadata: dict[str, Any] | None = None, enabled: bool = True,
           known_hash: str | None = None) -> tuple[ApiKeyDB, str | None]:
    """A new key for user, stored hashed; (document, raw key).

    With known_hash (``st2 apikey load`` restoring a saved key) that hash is stored
    and there is no raw key to return.
    """
    if not user:
        raise ValidationError("An API key needs a user", field="user")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationError("'metadata' must be an object", field="metadata")
    if known_hash is not None and not re.fullmatch(r"[0-9a-f]{128}", known_hash):
        raise ValidationError("key_hash must be the SHA-512 hex digest of a key", field="key_hash")
    ensure_user(user)
    raw = None if known_hash else generate_key()
    doc = ApiKeyDB(user=user, key_hash=known_hash or key_hash(raw), metadata=metadata or {}, enabled=bool(enabled))
    try:
        doc.save(force_insert=True)
    except me.NotUniqueError:
        raise ConflictError("An API key with this key_hash already exists.") from None
    LOG.info("auth: API key %s created for %s", doc.pk, user)
    return doc, raw


def check(raw: str) -> ApiKeyDB:
    """The enabled key for raw; AuthError with StackStorm's message when unknown or disabled."""
    doc = ApiKeyDB.objects(key_hash=key_hash(raw)).first()
    if doc is None:
        raise AuthError(KEY_UNKNOWN)
    if not doc.enabled:
        raise AuthError(KEY_DISABLED)
    return doc


def lookup(id_or_key: str) -> ApiKeyDB:
    """The key with this id or this raw key (StackStorm's GET /apikeys/{id_or_key})."""
    doc = None
    if ObjectId.is_valid(id_or_key):
        doc = ApiKeyDB.objects(pk=id_or_key).first()
    if doc is None:
        doc = ApiKeyDB.objects(key_hash=key_hash(id_or_key)).first()
    if doc is None:
        raise NotFoundError("ApiKey", id_or_key, f'ApiKey with id "{id_or_key}" is not found.')
    return doc


def shape(doc: ApiKeyDB, show_hash: bool = False) -> dict[str, Any]:
    """The API's view of a key: never the key, the hash only when asked for by an admin."""
    return {
        "id": str(doc.pk),
        "uid": f"api_key:{MASK}" if not show_hash else doc.uid,
        "user": doc.user,
        "key_hash": doc.key_hash if show_hash else MASK,
        "metadata": dict(doc.metadata or {}),
        "created_at": doc.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "enabled": doc.enabled,
    }
