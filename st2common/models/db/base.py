"""Fields and mixins shared by every stored document."""

from __future__ import annotations

import datetime
from typing import Any

import mongoengine as me

# MongoDB keys may not contain "." or start with "$"; StackStorm stores such keys
# (parameters, results, payloads) escaped with these full-width look-alikes.
_ESCAPES = (("\\", "\\\\"), ("$", "\uff04"), (".", "\uff0e"))


def _escape_key(key: str) -> str:
    for raw, escaped in _ESCAPES[1:]:
        key = key.replace(raw, escaped)
    return key


def _unescape_key(key: str) -> str:
    for raw, escaped in _ESCAPES[1:]:
        key = key.replace(escaped, raw)
    return key


def escape(value: Any) -> Any:
    """Escape dict keys recursively so any JSON value can be stored."""
    if isinstance(value, dict):
        return {_escape_key(str(k)): escape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape(v) for v in value]
    return value


def unescape(value: Any) -> Any:
    """Undo escape()."""
    if isinstance(value, dict):
        return {_unescape_key(k): unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value


class EscapedDictField(me.DictField):
    """A dict field whose keys may hold "." and "$"."""

    def to_mongo(self, value, use_db_field=True, fields=None):
        return super().to_mongo(escape(value), use_db_field, fields)

    def to_python(self, value):
        return unescape(super().to_python(value))

    def validate(self, value):
        super().validate(escape(value))


class EscapedDynamicField(me.DynamicField):
    """Any JSON value (dict, list, scalar) with escaped keys; for results and payloads."""

    def to_mongo(self, value, use_db_field=True, fields=None):
        return escape(value)

    def to_python(self, value):
        return unescape(value)


def utcnow() -> datetime.datetime:
    """Timezone-aware now in UTC, truncated to what BSON stores (milliseconds)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class ContentMixin:
    """Fields of content that lives in a pack: name, pack, ref and uid."""

    RESOURCE_TYPE = "resource"

    @staticmethod
    def make_ref(pack: str, name: str) -> str:
        return f"{pack}.{name}"

    def set_identity(self) -> None:
        """Derive ref and uid from pack and name."""
        self.ref = self.make_ref(self.pack, self.name)
        self.uid = f"{self.RESOURCE_TYPE}:{self.pack}:{self.name}"
