"""Fields and mixins shared by every stored document."""

from __future__ import annotations

import datetime
import functools
import weakref
from typing import Any

import mongoengine as me
from bson import SON, ObjectId
from mongoengine import signals
from mongoengine.base.datastructures import BaseDict, BaseList

# MongoDB keys may not contain "." or start with "$"; StackStorm stores such keys
# (parameters, results, payloads) escaped with these full-width look-alikes.
_ESCAPES = (("$", "\uff04"), (".", "\uff0e"))


def _escape_key(key: str) -> str:
    for raw, escaped in _ESCAPES:
        key = key.replace(raw, escaped)
    return key


def _unescape_key(key: str) -> str:
    for raw, escaped in _ESCAPES:
        key = key.replace(escaped, raw)
    return key


def escape(value: Any) -> Any:
    """Escape dict keys recursively so any JSON value can be stored."""
    # Keys with nothing to escape, and leaves, are taken as they are: most keys of most values.
    if isinstance(value, dict):
        return {(key if key.__class__ is str and "." not in key and "$" not in key else _escape_key(str(key))):
                (escape(item) if isinstance(item, (dict, list, tuple)) else item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape(item) if isinstance(item, (dict, list, tuple)) else item for item in value]
    return value


def unescape(value: Any) -> Any:
    """Undo escape()."""
    if isinstance(value, dict):
        return {_unescape_key(k): unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value


def _unescape_loaded(value: Any) -> Any:
    """unescape() for a field's to_python: one copying walk, unescaping a key only where needed."""
    if isinstance(value, dict):
        return {(_unescape_key(key) if isinstance(key, str) and ("\uff04" in key or "\uff0e" in key) else key):
                (_unescape_loaded(item) if isinstance(item, (dict, list)) else item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_unescape_loaded(item) if isinstance(item, (dict, list)) else item for item in value]
    return value


def json_copy(value: Any) -> Any:
    """A copy of a JSON value's dicts and lists, sharing its leaves (to_python must not share the caller's)."""
    if isinstance(value, dict):
        return {key: json_copy(item) if isinstance(item, (dict, list)) else item for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) if isinstance(item, (dict, list)) else item for item in value]
    return value


# Leaves mongoengine's to_mongo keeps as they are (an ObjectId field's value among them).
_STORED_LEAVES = frozenset({str, int, float, bool, type(None), datetime.datetime, ObjectId})


class _NotPlain(Exception):
    """A value holds something mongoengine's to_mongo would convert."""


def _stored_copy(value: Any) -> Any:
    """What mongoengine's to_mongo makes of a value of plain dicts, lists and leaves: a copy of its containers."""
    kind = type(value)
    if kind in _STORED_LEAVES:
        return value
    if isinstance(value, dict) and all(type(key) is str for key in value):
        return {key: _stored_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stored_copy(item) for item in value]
    raise _NotPlain()


_NOTHING = object()


def _whole_copy(field: me.fields.ComplexBaseField, value: Any) -> Any:
    """What mongoengine stores of a whole list or dict field's plain value (a copy of its containers), else _NOTHING.

    mongoengine's own walk converts each nested value, looking for documents:
    most of the CPU of a status change's log and runner_info.
    """
    inner = field.field
    kind = type(inner)
    if not isinstance(value, (dict, list)) or not (
            inner is None or (kind is me.DictField and inner.field is None) or kind is me.StringField):
        return _NOTHING
    item_kind = dict if kind is me.DictField else str if kind is me.StringField else None
    if item_kind is not None and not all(isinstance(item, item_kind)
                                         for item in (value.values() if isinstance(value, dict) else value)):
        return _NOTHING
    try:
        return _stored_copy(value)
    except _NotPlain:
        return _NOTHING


def _plain_json(field: me.fields.ComplexBaseField, value: Any) -> bool:
    """True when mongoengine's to_python can be skipped: a dict or list field of plain JSON.

    It walks every nested value looking for documents and references (turning
    each list into a dict and back), most of the cost of reading a record.
    """
    return field.field is None and isinstance(value, (dict, list))


class _WholeDict(BaseDict):
    """A tracked dict whose changes, at any depth, mark the whole field changed.

    mongoengine records a change to ``parameters["a.b"]`` as the path
    ``parameters.a.b`` and saves it as ``$set``/``$unset`` on that path, which
    splits the key at its dot (and bypasses the escaping); a change to
    ``log[0]`` becomes ``$set {"log.0": ...}``, which nx-27017 silently ignores.
    Rewriting the whole field on any change avoids both.
    """

    # Nothing here holds references; stops mongoengine re-wrapping (and so
    # detaching) the value on every attribute access.
    _dereferenced = True

    def __getitem__(self, key):
        return _track(dict.__getitem__(self, key), self, key)

    def _mark_as_changed(self, key=None):
        if hasattr(self._instance, "_mark_as_changed"):
            self._instance._mark_as_changed(self._name)


class _WholeList(BaseList):
    """The list counterpart of _WholeDict."""

    _dereferenced = True

    def __getitem__(self, key):
        value = list.__getitem__(self, key)
        return value if isinstance(key, slice) else _track(value, self, key)

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def _mark_as_changed(self, key=None):
        if hasattr(self._instance, "_mark_as_changed"):
            self._instance._mark_as_changed(self._name)


def _track(value: Any, parent: BaseDict | BaseList, key: Any) -> Any:
    """value wrapped (in place in parent) so its changes mark parent's whole field."""
    if isinstance(value, dict) and not isinstance(value, _WholeDict):
        wrapped = _WholeDict(value, None, parent._name)
    elif isinstance(value, list) and not isinstance(value, _WholeList):
        wrapped = _WholeList(value, None, parent._name)
    else:
        return value
    wrapped._instance = parent._instance
    if isinstance(parent, dict):
        dict.__setitem__(parent, key, wrapped)
    else:
        list.__setitem__(parent, key, wrapped)
    return wrapped


# Inner fields whose values mongoengine must resolve on access; the JSON fields here never hold them.
_RESOLVED = (me.ReferenceField, me.GenericReferenceField, me.LazyReferenceField, me.GenericLazyReferenceField,
             me.EmbeddedDocumentField, me.GenericEmbeddedDocumentField)


def _json_get(field: me.fields.ComplexBaseField, instance: Any, owner: Any) -> Any:
    """A JSON field's value, wrapped for change tracking, without mongoengine's dereferencing.

    mongoengine walks a dict or list field's value for references on its
    first access, copies it into a BaseDict, and walks it again: a tenth of
    an action runner's CPU per execution, for fields that hold plain JSON.
    """
    if instance is None:
        return field
    if isinstance(field.field, _RESOLVED):
        return _wrap_field_value(field, instance, me.fields.ComplexBaseField.__get__(field, instance, owner))
    return _wrap_field_value(field, instance, instance._data.get(field.name))


def _wrap_field_value(field: me.fields.BaseField, instance: Any, value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, _WholeDict):
        value = _WholeDict(value, instance, field.name)
        instance._data[field.name] = value
    elif isinstance(value, list) and not isinstance(value, _WholeList):
        value = _WholeList(value, instance, field.name)
        instance._data[field.name] = value
    return value


class WholeDictField(me.DictField):
    """A dict field saved as a whole whenever anything in it changes."""

    def to_mongo(self, value, use_db_field=True, fields=None):
        copy = _whole_copy(self, value)
        return super().to_mongo(value, use_db_field, fields) if copy is _NOTHING else copy

    def prepare_query_value(self, op, value):
        if op == "set" and self.field is None:
            # mongoengine's own path for a set of a dict field without an inner field (escaped, if it is)
            return self.to_mongo(value)
        return super().prepare_query_value(op, value)

    def to_python(self, value):
        return json_copy(value) if _plain_json(self, value) else super().to_python(value)

    def __get__(self, instance, owner):
        return _json_get(self, instance, owner)


class WholeListField(me.ListField):
    """A list field saved as a whole whenever anything in it changes."""

    def to_mongo(self, value, use_db_field=True, fields=None):
        copy = _whole_copy(self, value)
        return super().to_mongo(value, use_db_field, fields) if copy is _NOTHING else copy

    def prepare_query_value(self, op, value):
        # (max_length is ListField's own check of a set value)
        copy = _whole_copy(self, value) if op == "set" and self.max_length is None else _NOTHING
        return super().prepare_query_value(op, value) if copy is _NOTHING else copy

    def to_python(self, value):
        return json_copy(value) if _plain_json(self, value) else super().to_python(value)

    def __get__(self, instance, owner):
        return _json_get(self, instance, owner)


class EscapedDictField(WholeDictField):
    """A dict field whose keys may hold "." and "$"."""

    def to_mongo(self, value, use_db_field=True, fields=None):
        if _plain_json(self, value):
            # mongoengine's to_mongo calls this method again for each nested dict, which
            # escaped every subtree once per level above it.
            return escape(value)
        return super().to_mongo(escape(value), use_db_field, fields)

    def to_python(self, value):
        return _unescape_loaded(value) if _plain_json(self, value) else unescape(super().to_python(value))

    def validate(self, value):
        if _plain_json(self, value):
            # Escaping makes every key storable; mongoengine's walk would only re-check that.
            if not isinstance(value, dict):
                self.error("Only dictionaries may be used in a DictField")
            return
        super().validate(escape(value))


class EscapedDynamicField(me.DynamicField):
    """Any JSON value (dict, list, scalar) with escaped keys; for results and payloads."""

    def __get__(self, instance, owner):
        value = super().__get__(instance, owner)
        return value if instance is None else _wrap_field_value(self, instance, value)

    def to_mongo(self, value, use_db_field=True, fields=None):
        return escape(value)

    def to_python(self, value):
        return _unescape_loaded(value)


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


# Field types whose loaded value mongoengine stores as given (BaseField.__set__): a document made of
# these alone can be loaded without its constructor. Any other (embedded documents, references,
# enums, files) takes mongoengine's own path.
_PLAIN_FIELDS = (me.StringField, me.IntField, me.LongField, me.FloatField, me.BooleanField, me.DateTimeField,
                 me.ObjectIdField, me.DynamicField, me.DictField, me.ListField)
_PLAIN_INNER = (me.StringField, me.IntField, me.LongField, me.FloatField, me.BooleanField, me.DateTimeField,
                me.ObjectIdField, me.DictField)
_FIELD_DISPLAY = me.Document._BaseDocument__get_field_display


def _plain_field(field: me.fields.BaseField) -> bool:
    if type(field).__set__ not in (me.fields.BaseField.__set__, me.fields.ComplexBaseField.__set__):
        return False
    if isinstance(field, (me.DictField, me.ListField)):
        inner = field.field
        return inner is None or (isinstance(inner, _PLAIN_INNER) and _plain_field(inner))
    return isinstance(field, _PLAIN_FIELDS)


class LeanLoad:
    """Loads stored documents without mongoengine's constructor, for documents of plain fields.

    mongoengine builds a loaded document by calling its constructor, which goes
    through every field's setter and descriptor (and a check of every key):
    most of the cost of reading a record, and of listing executions through the
    API. This leaves the same document: each field's value converted by its
    to_python, None (or absent) replaced by its default as the setter does,
    the choice fields' get_<name>_display, no change marks.
    """

    @classmethod
    def _from_son(cls, son, _auto_dereference=True, created=False):
        plan = _LOAD_PLANS.get(cls)
        if plan is None:
            plan = _LOAD_PLANS[cls] = _load_plan(cls)
        if (plan is False or not _auto_dereference or not isinstance(son, dict)
                or son.get("_cls", cls._class_name) != cls._class_name or _signalled()
                or any(key not in plan.known for key in son)):
            return super()._from_son(son, _auto_dereference=_auto_dereference, created=created)
        data = {}
        try:
            for name, db_field, to_python, null, default in plan.fields:
                value = son.get(db_field)
                if value is None:
                    if not null and default is not None:
                        value = default() if callable(default) else default
                else:
                    value = to_python(value)
                data[name] = value
        except (AttributeError, ValueError):
            # A value its field cannot take: mongoengine's path names it.
            return super()._from_son(son, _auto_dereference=_auto_dereference, created=created)
        return document_of(cls, data, created=created, kept_changes=True)


class _LoadPlan:
    __slots__ = ("fields", "known")

    def __init__(self, fields, known) -> None:
        self.fields = fields
        self.known = known


_LOAD_PLANS: dict[type, Any] = {}


def _load_plan(cls) -> _LoadPlan | bool:
    """How to load cls's documents lean, or False when one of its fields needs mongoengine's path."""
    if cls._dynamic or cls.STRICT or not all(_plain_field(field) for field in cls._fields.values()):
        return False
    fields = tuple((name, field.db_field, field.to_python, field.null, field.default)
                   for name, field in cls._fields.items())
    known = frozenset({field.db_field for field in cls._fields.values()} | {"_cls", "_text_score"})
    return _LoadPlan(fields, known)


_CHOICES: dict[type, tuple] = {}


def document_of(cls, data: dict[str, Any], created: bool = True, kept_changes: bool = False):
    """cls(**data) without the constructor, for data holding every field in its loaded shape.

    mongoengine's constructor runs every field's setter and default and checks
    every name. This leaves the same document: data as its values, the choice
    fields' get_<name>_display, no change marks (kept from now on with
    kept_changes, as a loaded document keeps them; a new one keeps none); and
    no reference cycle (mongoengine binds get_<name>_display to the document),
    so it is freed as soon as it is dropped, not by the garbage collector.
    """
    choices = _CHOICES.get(cls)
    if choices is None:
        choices = _CHOICES[cls] = tuple((f"get_{name}_display", field) for name, field in cls._fields.items()
                                        if field.choices)
    doc = cls.__new__(cls)
    state = object.__setattr__
    state(doc, "_initialised", False)
    state(doc, "_created", created)
    state(doc, "_dynamic_fields", SON())
    state(doc, "_data", data)
    state(doc, "_cls", cls._class_name)
    if choices:
        weak = weakref.proxy(doc)
        for attribute, field in choices:
            state(doc, attribute, functools.partial(_FIELD_DISPLAY, weak, field=field))
    if kept_changes:
        state(doc, "_changed_fields", [])
    state(doc, "_initialised", True)
    return doc


def _signalled() -> bool:
    """True when some code listens to a document's construction (mongoengine's signals)."""
    return bool(getattr(signals.pre_init, "receivers", None) or getattr(signals.post_init, "receivers", None))
