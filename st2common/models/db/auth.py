"""Users, tokens and API keys: who may call the API, and with what.

Neither tokens nor API keys are stored in the clear. StackStorm keeps the raw
token in its document; here only its SHA-256 is kept, so a copy of the
database opens nothing. API keys are kept as StackStorm keeps them, as a
SHA-512 hash, which is also what its API shows to admins as ``key_hash``.
"""

from __future__ import annotations

import mongoengine as me

from st2common.models.db.base import EscapedDictField, LeanLoad, utcnow


class UserDB(me.Document):
    """A user seen by the auth service (created on first login or API key), as StackStorm records them."""

    RESOURCE_TYPE = "user"

    name = me.StringField(required=True, unique=True)
    is_service = me.BooleanField(default=False)
    nicknames = me.DictField()

    meta = {"collection": "user_d_b"}


class TokenDB(LeanLoad, me.Document):
    """An access token: its hash, owner and expiry. The database removes it a day after it expires.

    Kept that day so that a client using it hears "Token has expired", not just "Unauthorized".
    """

    RESOURCE_TYPE = "token"

    user = me.StringField(required=True)
    token_hash = me.StringField(required=True, unique=True)
    expiry = me.DateTimeField(required=True)
    metadata = EscapedDictField()
    service = me.BooleanField(default=False)

    meta = {
        "collection": "token_d_b",
        "indexes": [{"fields": ["expiry"], "expireAfterSeconds": 86400}, "user"],
    }


class ApiKeyDB(me.Document):
    """An API key: the SHA-512 of the raw key, its owner, and whether it is enabled."""

    RESOURCE_TYPE = "api_key"

    user = me.StringField(required=True)
    key_hash = me.StringField(required=True, unique=True)
    metadata = EscapedDictField()
    created_at = me.DateTimeField(required=True, default=utcnow)
    enabled = me.BooleanField(default=True)

    meta = {"collection": "api_key_d_b", "indexes": ["user"]}

    @property
    def uid(self) -> str:
        """StackStorm's uid: ``api_key:<key_hash>``."""
        return f"{self.RESOURCE_TYPE}:{self.key_hash}"
