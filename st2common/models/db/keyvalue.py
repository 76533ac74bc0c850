"""Key-value pairs of the datastore: system-wide or per user, optionally encrypted, optionally expiring."""

from __future__ import annotations

import mongoengine as me

from st2common.models.db.base import LeanLoad

#: Scopes as StackStorm stores them, and the short forms its API and CLI accept.
FULL_SYSTEM_SCOPE = "st2kv.system"
FULL_USER_SCOPE = "st2kv.user"
SYSTEM_SCOPE = "system"
USER_SCOPE = "user"
#: Listing only: system keys, then the requester's own.
ALL_SCOPE = "all"
#: In StackStorm's order, which its error messages print.
ALLOWED_SCOPES = (SYSTEM_SCOPE, USER_SCOPE, FULL_SYSTEM_SCOPE, FULL_USER_SCOPE)
FULL_SCOPES = {SYSTEM_SCOPE: FULL_SYSTEM_SCOPE, USER_SCOPE: FULL_USER_SCOPE,
               FULL_SYSTEM_SCOPE: FULL_SYSTEM_SCOPE, FULL_USER_SCOPE: FULL_USER_SCOPE}


class KeyValuePairDB(LeanLoad, me.Document):
    """One datastore item. ``value`` is text; for a secret it is the ciphertext.

    StackStorm stores a user-scoped item under the name ``<user>:<name>``; here
    the bare name and the user are separate fields, and the API shows them as
    StackStorm does (bare ``name`` plus ``user``). A system item's ``user`` is
    the empty string, never null: the embedded server's unique indexes treat
    nulls (and missing fields) as all different, which would let two system
    items share a name there.
    """

    RESOURCE_TYPE = "key_value_pair"

    name = me.StringField(required=True)
    value = me.StringField(required=True)
    scope = me.StringField(required=True, choices=(FULL_SYSTEM_SCOPE, FULL_USER_SCOPE))
    user = me.StringField(required=True, default="")
    # True when value holds a secret's ciphertext (StackStorm: secret=True).
    secret = me.BooleanField(default=False)
    encrypted = me.BooleanField(default=False)
    # The database deletes the item once this has passed (a TTL index); reads skip it before that.
    expire_timestamp = me.DateTimeField()
    uid = me.StringField(required=True)
    description = me.StringField()

    meta = {
        "collection": "key_value_pair_d_b",
        "indexes": [
            {"fields": ["scope", "user", "name"], "unique": True},
            {"fields": ["expire_timestamp"], "expireAfterSeconds": 0},
        ],
    }

    @staticmethod
    def make_uid(scope: str, user: str, name: str) -> str:
        """StackStorm's uid: key_value_pair:<scope>:<name>, with <user>: before the name in user scope."""
        ref = f"{user}:{name}" if scope == FULL_USER_SCOPE else name
        return f"key_value_pair:{scope}:{ref}"

    def set_identity(self) -> None:
        """Derive uid from scope, user and name."""
        self.uid = self.make_uid(self.scope, self.user, self.name)

    @property
    def key_ref(self) -> str:
        """The name StackStorm stores the item under (``<user>:<name>`` in user scope)."""
        return f"{self.user}:{self.name}" if self.scope == FULL_USER_SCOPE else self.name
