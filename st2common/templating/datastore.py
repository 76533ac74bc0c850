"""``st2kv`` in templates: lazy datastore lookups, and the ``decrypt_kv`` filter.

    {{ st2kv.system.api_url }}             system item "api_url"
    {{ st2kv.system.app.token }}           system item "app.token" (dotted names are joined)
    {{ st2kv.system["app.token"] }}        the same
    {{ st2kv.user.ssh_key }}               the render's user's item "ssh_key"
    {{ st2kv.system.password | decrypt_kv }}   a secret, decrypted

Each item is read when a template first touches it, once per render, through
the datastore service. A missing (or expired) item renders as an empty string,
as in StackStorm; a secret renders as its ciphertext unless decrypted.

A lookup is a ``str`` holding the value, so every filter and comparison treats
it as text; only attribute and item access in templates (``.x``, ``["x"]``)
address nested names, because the environment routes those to the lookup.

Callers that can name the datastore put ``st2kv_context(datastore, user)`` into
the render context; ``revealed(context)`` then lists the clear text of every
secret decrypted through it, so the caller can keep it out of what it records.
Without it, ``st2kv`` still resolves, for the user in ``action_context``,
reading through a datastore that has no settings: lookups work, ``decrypt_kv``
reports that no key is available.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from jinja2 import pass_context
from jinja2.runtime import Context, missing

from st2common.exceptions import ValidationError
from st2common.models.db.keyvalue import FULL_SYSTEM_SCOPE, FULL_USER_SCOPE

LOG = logging.getLogger(__name__)

ROOT_NAME = "st2kv"
_SHORT = {FULL_SYSTEM_SCOPE: "system", FULL_USER_SCOPE: "user"}


class ScopeLookup:
    """``st2kv.system`` or ``st2kv.user``: items of one scope (and user), read on first use."""

    def __init__(self, datastore, scope: str, user: str | None, cache: dict[tuple[str, str], str | None],
                 revealed: list[str] | None = None):
        self._datastore = datastore
        self._scope = scope
        self._user = user
        self._cache = cache
        self._revealed = revealed if revealed is not None else []

    def child(self, name: str) -> "KeyValueLookup":
        """The item called name (a lookup whose text is its value, "" when missing)."""
        cache_key = (self._scope, name)
        if cache_key not in self._cache:
            if self._scope == FULL_USER_SCOPE and not self._user:
                value = None
            else:
                value = self._datastore.lookup(name, self._scope, self._user)
            self._cache[cache_key] = value
            LOG.debug("template read datastore item %s (%s): %s", name, self._scope,
                      "found" if value is not None else "missing")
        value = self._cache[cache_key]
        return KeyValueLookup("" if value is None else value, self, name, value is not None)

    def decrypt(self, ciphertext: str, name: str) -> str:
        """Decrypt a value with this render's datastore; the clear text is remembered as revealed."""
        clear = self._datastore.decrypt(ciphertext, name)
        self._revealed.append(clear)
        return clear

    def reference(self, name: str) -> str:
        """How templates spell the item: st2kv.system.<name>."""
        return f"{ROOT_NAME}.{_SHORT[self._scope]}.{name}"

    def __getattr__(self, name: str) -> "KeyValueLookup":
        if name.startswith("__"):
            raise AttributeError(name)
        return self.child(name)

    def __getitem__(self, name: str) -> "KeyValueLookup":
        return self.child(str(name))

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"<{ROOT_NAME}.{_SHORT[self._scope]}>"


class KeyValueLookup(str):
    """A datastore item's value as text; ``.x`` on it in a template reads the item "<name>.x"."""

    def __new__(cls, value: str, scope: ScopeLookup, name: str, found: bool) -> "KeyValueLookup":
        text = super().__new__(cls, value)
        text._scope = scope
        text._name = name
        text._found = found
        return text

    def child(self, name: str) -> "KeyValueLookup":
        """The item "<this name>.<name>"."""
        return self._scope.child(f"{self._name}.{name}")

    def decrypted(self) -> str:
        """The clear text of this secret item; ValidationError naming it when absent or not decryptable."""
        if not self._found or not str(self):
            raise ValidationError(f'Referenced datastore item "{self._scope.reference(self._name)}" doesn\'t exist '
                                  "or it contains an empty string", field=self._name)
        return self._scope.decrypt(str(self), self._name)

    def __getattr__(self, name: str) -> "KeyValueLookup":
        if name.startswith("_"):
            raise AttributeError(name)
        return self.child(name)

    def __reduce__(self):
        # Copies and pickles of a rendered value are its text, never the datastore behind it.
        return (str, (str(self),))


def st2kv_context(datastore, user: str | None) -> dict[str, Any]:
    """The render context entry for st2kv: lookups through datastore, user scope for user."""
    cache: dict[tuple[str, str], str | None] = {}
    revealed: list[str] = []
    return {ROOT_NAME: {
        "system": ScopeLookup(datastore, FULL_SYSTEM_SCOPE, None, cache, revealed),
        "user": ScopeLookup(datastore, FULL_USER_SCOPE, user, cache, revealed),
    }}


def revealed(context: Mapping[str, Any]) -> list[str]:
    """The clear text of each secret decrypted so far through context's st2kv (the live list; [] without one)."""
    root = context.get(ROOT_NAME)
    scope = root.get("system") if isinstance(root, Mapping) else None
    return scope._revealed if isinstance(scope, ScopeLookup) else []


def _context_user(variables: Mapping[str, Any]) -> str | None:
    """StackStorm's rule: the execution's api_user, else its user."""
    action_context = variables.get("action_context")
    if isinstance(action_context, Mapping):
        return action_context.get("api_user") or action_context.get("user")
    return None


def _unconfigured_st2kv(variables: Mapping[str, Any]) -> dict[str, Any]:
    from st2common.services.keyvalues import Datastore

    return st2kv_context(Datastore(None), _context_user(variables))[ROOT_NAME]


class DatastoreContext(Context):
    """The render context: resolves st2kv for renders whose caller did not supply one."""

    def resolve_or_missing(self, key: str) -> Any:
        value = super().resolve_or_missing(key)
        if value is missing and key == ROOT_NAME:
            value = self.vars[ROOT_NAME] = _unconfigured_st2kv(self.parent)
        return value


@pass_context
def decrypt_kv(context, value: Any) -> str:
    """The clear text of an encrypted datastore value (a st2kv lookup, or ciphertext)."""
    if isinstance(value, KeyValueLookup):
        return value.decrypted()
    root = context.resolve_or_missing(ROOT_NAME)
    scope = root.get("system") if isinstance(root, Mapping) else None
    if not isinstance(scope, ScopeLookup):
        raise ValidationError("decrypt_kv: this template has no datastore to decrypt with")
    return scope.decrypt(str(value), "")


def install(env) -> None:
    """Route attribute and item access on lookups to nested names, add decrypt_kv and the st2kv default."""
    plain_getattr, plain_getitem = env.getattr, env.getitem

    def getattr_(obj, attribute):
        if isinstance(obj, (KeyValueLookup, ScopeLookup)):
            return obj.child(attribute)
        return plain_getattr(obj, attribute)

    def getitem(obj, argument):
        if isinstance(obj, (KeyValueLookup, ScopeLookup)) and isinstance(argument, str):
            return obj.child(argument)
        return plain_getitem(obj, argument)

    env.getattr = getattr_
    env.getitem = getitem
    env.context_class = DatastoreContext
    env.filters["decrypt_kv"] = decrypt_kv
