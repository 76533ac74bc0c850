"""The datastore use-cases: get, list, set and delete key-value pairs; expiry; encryption.

| use-case | reads / writes                                      | trigger instances dispatched                |
| -------- | --------------------------------------------------- | ------------------------------------------- |
| set      | insert, or a compare-and-set on the old value       | key_value_pair.create, or .update (always)  |
|          |                                                     | plus .value_change when the value changed   |
| delete   | delete                                              | key_value_pair.delete                       |
| purge    | delete every expired item                           | none (as when MongoDB's TTL monitor does it)|

Trigger payloads carry the item as the API shows it without ``decrypt``
(``{"object": {...}}``, ``{"old_object", "new_object"}``), so a secret travels
as ciphertext. Expired items are skipped by every read at once. The TTL index
deletes them (MongoDB's monitor within a minute, the embedded server at the
next read), without a trigger, as in StackStorm, whose garbage collector
leaves keys to that index; st2api also runs ``PeriodicPurge`` every
``[keyvalue] purge_interval`` seconds, for a database without the index.

Who may do what (``requester``, ``is_admin``): anyone reads system items and
their own user items; another user's items, pre-encrypted values and
decryption of system items need an administrator (a role holder per
st2common/rbac.py; everyone when RBAC is off, as with StackStorm's no-op RBAC).
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import eventlet

from st2common.exceptions import (AccessDeniedError, ConflictError, NotFoundError, StackStormBaseException,
                                  ValidationError)
from st2common.log import AUDIT
from st2common.models.api.base import isotime
from st2common.models.db.base import utcnow
from st2common.models.db.keyvalue import (ALL_SCOPE, ALLOWED_SCOPES, FULL_SCOPES, FULL_SYSTEM_SCOPE,
                                          FULL_USER_SCOPE, KeyValuePairDB)
from st2common.persistence.access import Access, prefix_filter
from st2common.services import triggerinstances, triggertypes
from st2common.util import crypto

LOG = logging.getLogger(__name__)

CREATE, UPDATE, VALUE_CHANGE, DELETE = "create", "update", "value_change", "delete"
TRIGGERS = {
    CREATE: triggertypes.KEY_VALUE_PAIR_CREATE_TRIGGER_REF,
    UPDATE: triggertypes.KEY_VALUE_PAIR_UPDATE_TRIGGER_REF,
    VALUE_CHANGE: triggertypes.KEY_VALUE_PAIR_VALUE_CHANGE_TRIGGER_REF,
    DELETE: triggertypes.KEY_VALUE_PAIR_DELETE_TRIGGER_REF,
}
_WRITE_ATTEMPTS = 20


def full_scope(scope: str | None, allow_all: bool = False) -> str:
    """The stored form of a scope (``system`` -> ``st2kv.system``); None is system scope."""
    if not scope:
        return FULL_SYSTEM_SCOPE
    if allow_all and scope == ALL_SCOPE:
        return ALL_SCOPE
    if scope not in FULL_SCOPES:
        raise ValidationError(f"Scope {scope} is not in allowed scopes list: {list(ALLOWED_SCOPES)}.",
                              field="scope")
    return FULL_SCOPES[scope]


def check_ttl(ttl: Any) -> int | None:
    """ttl as seconds, or None for no expiry; ValidationError unless a positive integer."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValidationError(f"ttl must be a positive integer number of seconds, got {ttl!r}", field="ttl")
    return ttl


def _unexpired(now: datetime.datetime) -> dict:
    return {"$or": [{"expire_timestamp": None}, {"expire_timestamp": {"$gt": now}}]}


def _expired(doc: KeyValuePairDB, now: datetime.datetime) -> bool:
    expires = doc.expire_timestamp
    if expires is None:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=datetime.timezone.utc)
    return expires <= now


def document(doc: KeyValuePairDB, clear_value: str | None = None) -> dict[str, Any]:
    """The item as StackStorm's API shows it; clear_value replaces a secret's ciphertext (decrypt)."""
    decrypted = clear_value is not None
    out: dict[str, Any] = {
        "id": str(doc.pk),
        "uid": doc.uid,
        "name": doc.name,
        "value": clear_value if decrypted else doc.value,
        "secret": bool(doc.secret),
        "encrypted": bool(doc.secret) and not decrypted,
        "scope": doc.scope,
    }
    if doc.scope == FULL_USER_SCOPE:
        out["user"] = doc.user
    if doc.expire_timestamp is not None:
        out["expire_timestamp"] = isotime(doc.expire_timestamp)
    if doc.description:
        out["description"] = doc.description
    return out


class Datastore:
    """The key-value store of one platform: settings name the key file and the system user.

    Without settings it can still read (templates rendered by a caller that
    supplied no datastore); anything needing the key then says so.
    """

    def __init__(self, settings, publisher=None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.access: Access[KeyValuePairDB] = Access(KeyValuePairDB)
        self._key: crypto.AESKey | None = None
        self._key_lock = threading.Lock()

    @property
    def system_user(self) -> str:
        return self.settings.system_user.user if self.settings is not None else ""

    # -- who --------------------------------------------------------------------------------

    def owner(self, scope: str, user: str | None, requester: str | None, is_admin: bool) -> str:
        """Whose item this is: "" in system scope, else user (default: the requester)."""
        requester = requester or self.system_user
        if scope != FULL_USER_SCOPE:
            return ""
        if user and user != requester and not is_admin:
            raise AccessDeniedError('"user" attribute can only be provided by admins')
        return user or requester

    @staticmethod
    def check_decrypt(scope: str, owner: str, requester: str, is_admin: bool) -> None:
        """Decryption is for administrators, and for users reading their own items."""
        if not is_admin and not (scope == FULL_USER_SCOPE and owner == requester):
            raise AccessDeniedError("Decrypt option requires administrator access")

    # -- crypto -----------------------------------------------------------------------------

    def key(self, name: str = "") -> crypto.AESKey:
        """The datastore key; ValidationError (StackStorm's 400) when encryption is off or the file is missing."""
        if self._key is not None:
            return self._key
        if self.settings is None:
            raise ValidationError(f"cannot encrypt or decrypt datastore item {name}: this renderer was given no "
                                  "datastore settings, so the datastore key is unknown here", field="secret")
        path = self.settings.keyvalue.encryption_key_path
        if not self.settings.keyvalue.enable_encryption or path is None or not path.exists():
            raise ValidationError(f"Crypto key not found in {path}. Unable to encrypt / decrypt value for key "
                                  f"{name}.", field="secret")
        with self._key_lock:
            if self._key is None:
                self._key = crypto.read_key(path)
        return self._key

    def encrypt(self, text: str, name: str = "") -> str:
        """text encrypted with the datastore key."""
        return crypto.symmetric_encrypt(self.key(name), text)

    def decrypt(self, ciphertext: str, name: str = "") -> str:
        """A secret's clear text; ValidationError naming the item when it cannot be decrypted."""
        try:
            return crypto.symmetric_decrypt(self.key(name), ciphertext)
        except ValidationError as exc:
            raise ValidationError(f'cannot decrypt datastore item "{name}": {exc}', field="value") from None

    # -- reads ------------------------------------------------------------------------------

    def find(self, name: str, scope: str = FULL_SYSTEM_SCOPE, owner: str = "") -> KeyValuePairDB | None:
        """The unexpired stored item (value as stored), or None."""
        found = self.access.query(raw={"$and": [{"scope": scope, "user": owner, "name": name},
                                                _unexpired(utcnow())]}, limit=1)
        return found[0] if found else None

    def lookup(self, name: str, scope: str = FULL_SYSTEM_SCOPE, user: str | None = None) -> str | None:
        """The stored value of an item (ciphertext for a secret), None when missing; for templates."""
        scope = full_scope(scope)
        doc = self.find(name, scope, (user or self.system_user) if scope == FULL_USER_SCOPE else "")
        return doc.value if doc is not None else None

    def get(self, name: str, scope: str | None = FULL_SYSTEM_SCOPE, user: str | None = None,
            decrypt: bool = False, requester: str | None = None, is_admin: bool = True) -> dict[str, Any]:
        """One item as the API shows it; NotFoundError in StackStorm's words when absent or expired."""
        scope = full_scope(scope)
        requester = requester or self.system_user
        owner = self.owner(scope, user, requester, is_admin)
        if decrypt:
            self.check_decrypt(scope, owner, requester, is_admin)
        doc = self.find(name, scope, owner)
        if doc is None:
            ref = f"{owner}:{name}" if scope == FULL_USER_SCOPE else name
            raise NotFoundError("key_value_pair", ref,
                                f"KeyValuePair with name: {ref} and scope: {scope} not found in db.")
        return self._shown(doc, decrypt, requester)

    def list(self, prefix: str | None = None, scope: str | None = ALL_SCOPE, user: str | None = None,
             decrypt: bool = False, limit: int | None = None, offset: int = 0, name: str | None = None,
             requester: str | None = None, is_admin: bool = True) -> list[dict[str, Any]]:
        """System items, then the owner's user items, each part paged on its own (StackStorm's quirk).

        prefix and name filter by name; a user other than the requester needs an administrator.
        """
        scope = full_scope(scope, allow_all=True)
        requester = requester or self.system_user
        if user:
            scope = FULL_USER_SCOPE
        owner = self.owner(FULL_USER_SCOPE, user, requester, is_admin)
        if decrypt and not is_admin and scope != FULL_USER_SCOPE:
            raise AccessDeniedError("Decrypt option requires administrator access")
        now = utcnow()
        parts = []
        if scope in (ALL_SCOPE, FULL_SYSTEM_SCOPE):
            parts.append({"scope": FULL_SYSTEM_SCOPE, "user": ""})
        if scope in (ALL_SCOPE, FULL_USER_SCOPE):
            parts.append({"scope": FULL_USER_SCOPE, "user": owner})
        items: list[dict[str, Any]] = []
        for part in parts:
            clauses = [part, _unexpired(now)]
            if prefix:
                clauses.append(prefix_filter("name", prefix))
            if name:
                clauses.append({"name": name})
            docs = self.access.query(raw={"$and": clauses}, order_by=("name",), offset=offset, limit=limit)
            items.extend(self._shown(doc, decrypt, requester) for doc in docs)
        return items

    def _shown(self, doc: KeyValuePairDB, decrypt: bool, requester: str) -> dict[str, Any]:
        if not (decrypt and doc.secret):
            return document(doc)
        LOG.log(AUDIT, "user %s decrypted datastore item %s", requester, doc.uid)
        return document(doc, self.decrypt(doc.value, doc.name))

    # -- writes -----------------------------------------------------------------------------

    def set(self, name: str, value: str, scope: str | None = FULL_SYSTEM_SCOPE, user: str | None = None,
            secret: bool = False, encrypted: bool = False, ttl: int | None = None,
            description: str | None = None, requester: str | None = None,
            is_admin: bool = True) -> dict[str, Any]:
        """Create or replace an item; the stored item as the API shows it (a secret as ciphertext)."""
        if not isinstance(name, str) or not name:
            raise ValidationError("name must be a non-empty string", field="name")
        if not isinstance(value, str):
            raise ValidationError(f"value of key {name} must be a string (JSON-encode other types), "
                                  f"got {type(value).__name__}", field="value")
        scope = full_scope(scope)
        ttl = check_ttl(ttl)
        owner = self.owner(scope, user, requester, is_admin)
        stored, secret = self._stored_value(name, value, bool(secret), bool(encrypted), is_admin)
        fields = {"value": stored, "secret": secret, "encrypted": secret,
                  "expire_timestamp": utcnow() + datetime.timedelta(seconds=ttl) if ttl else None,
                  "description": description or None}
        for _ in range(_WRITE_ATTEMPTS):
            doc = self._write(name, scope, owner, fields)
            if doc is not None:
                LOG.info("datastore item %s set (secret=%s, ttl=%s)", doc.uid, secret, ttl)
                return document(doc)
        raise ConflictError(f"datastore item {name} is being changed by others; try again")

    def _stored_value(self, name: str, value: str, secret: bool, encrypted: bool,
                      is_admin: bool) -> tuple[str, bool]:
        if encrypted:
            # Pre-encrypted always means secret: otherwise anyone could have any ciphertext decrypted.
            if not is_admin:
                raise AccessDeniedError("Pre-encrypted option requires administrator access")
            key = self.key(name)
            try:
                crypto.symmetric_decrypt(key, value)
            except ValidationError:
                raise ValidationError(f'Failed to verify the integrity of the provided value for key "{name}". '
                                      "Ensure that the value is encrypted with the correct key and not "
                                      "corrupted.", field="value") from None
            return value, True
        if secret:
            return self.encrypt(value, name), True
        return value, False

    def _write(self, name: str, scope: str, owner: str, fields: dict[str, Any]) -> KeyValuePairDB | None:
        """One attempt at an upsert; None when another writer got in between."""
        existing = self.access.get(scope=scope, user=owner, name=name)
        if existing is not None and _expired(existing, utcnow()):
            # Gone for every reader already; setting it again creates it afresh.
            self.access.delete_by(raw={"_id": existing.pk, "value": existing.value})
            existing = None
        if existing is None:
            doc = KeyValuePairDB(name=name, scope=scope, user=owner, **fields)
            doc.set_identity()
            try:
                self.access.add_or_update(doc, publish=False)
            except ConflictError:
                return None
            self._dispatch(CREATE, {"object": document(doc)})
            return doc
        old_doc = document(existing)
        changes = dict(fields, uid=KeyValuePairDB.make_uid(scope, owner, name))
        doc = self.access.update_if(existing.pk, {"value": existing.value}, changes, publish=False)
        if doc is None:
            return None
        new_doc = document(doc)
        self._dispatch(UPDATE, {"object": new_doc})
        if existing.value != doc.value:
            self._dispatch(VALUE_CHANGE, {"old_object": old_doc, "new_object": new_doc})
        return doc

    def delete(self, name: str, scope: str | None = FULL_SYSTEM_SCOPE, user: str | None = None,
               requester: str | None = None, is_admin: bool = True) -> dict[str, Any]:
        """Delete an item; what it was (as the API shows it). NotFoundError when absent or expired."""
        scope = full_scope(scope)
        owner = self.owner(scope, user, requester, is_admin)
        doc = self.find(name, scope, owner)
        if doc is None:
            ref = f"{owner}:{name}" if scope == FULL_USER_SCOPE else name
            raise NotFoundError("key_value_pair", ref,
                                f"KeyValuePair with name: {ref} and scope: {scope} not found in db.")
        shown = document(doc)
        if not self.access.delete_by(raw={"_id": doc.pk}):
            raise NotFoundError("key_value_pair", name, f"KeyValuePair with name: {name} was deleted meanwhile.")
        self._dispatch(DELETE, {"object": shown})
        LOG.info("datastore item %s deleted", doc.uid)
        return shown

    def purge_expired(self) -> int:
        """Delete every expired item (no triggers, as when the database expires them); how many."""
        count = self.access.delete_by(raw={"expire_timestamp": {"$lte": utcnow()}})
        if count:
            LOG.info("purged %d expired datastore items", count)
        return count

    def _dispatch(self, operation: str, payload: dict[str, Any]) -> None:
        if self.publisher is None:
            return
        try:
            triggerinstances.dispatch(self.publisher, TRIGGERS[operation], payload)
        except StackStormBaseException as exc:
            # The item is stored, and that is what the caller asked for; the trigger is a
            # notification about it, and a missing one must not turn the write into an error.
            item = payload.get("object") or payload.get("new_object") or {}
            LOG.warning("datastore item %s: %s trigger not dispatched: %s", item.get("uid"), operation, exc)


class PeriodicPurge:
    """Purges expired datastore items every interval seconds in a green thread."""

    def __init__(self, datastore: Datastore, interval: float) -> None:
        self.datastore = datastore
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = None

    def start(self) -> "PeriodicPurge":
        """Start purging (an interval of 0 or less: never); the first round runs after one interval."""
        if self._thread is None and self.interval > 0:
            self._stopping.clear()
            self._thread = eventlet.spawn(self._run)
        return self

    @property
    def running(self) -> bool:
        """True while purge rounds are scheduled."""
        return self._thread is not None

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.datastore.purge_expired()
            except StackStormBaseException as exc:
                # The database briefly away: the next round retries.
                LOG.warning("periodic datastore purge failed: %s", exc)

    def stop(self) -> None:
        """Stop purging and wait for a round in progress."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.wait()
