"""The one generic access class: read, query, write and delete documents of one type.

Every write publishes a create/update/delete event ({"id": ...}) on the
resource's exchange, when the topology has one and a publisher is given.
The query and update shapes used here are the ones that work on both MongoDB
and the embedded nx-27017 server (see docs/mongodb-compat.md): compiled
patterns (mongoengine's ``__startswith``, ``__icontains`` ...) are rewritten
into ``$regex`` strings; counts go through the ``count`` command, or count ids
when the filter holds an ObjectId; projections keep to top-level fields; lists
of objects are appended by a conditional rewrite, never ``$push`` (lists of
scalars may be: ``push``).
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any, Callable, Generic, Iterable, TypeVar

import mongoengine as me
from bson import ObjectId, Regex
from bson.errors import InvalidId
from mongoengine.connection import ConnectionFailure
from mongoengine.errors import NotUniqueError
from mongoengine.queryset import transform
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from st2common.exceptions import ConflictError, DatabaseError, NotFoundError, ValidationError
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

T = TypeVar("T", bound=me.Document)

CREATE, UPDATE, DELETE = "create", "update", "delete"

# What a database call may raise that is the database's fault, not the caller's.
DB_ERRORS = (PyMongoError, ConnectionFailure)

_REGEX_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))

# A field no document has. "$pull" on it is a no-op on MongoDB; on nx-27017 it
# moves the update off its SQL path, which stores a datetime given directly to
# "$set" as a string ("2026-11-21 06:18:57.289000"), onto its Python path,
# which stores it as a date.
_DATE_SAFE_PULL = "_st2_no_such_field"
_SETTERS = ("$set", "$setOnInsert")


# model -> callbacks run after each write of its documents through an Access of this process.
_WRITE_LISTENERS: dict[type, list[Callable[[type], None]]] = {}


def on_write(model: type, callback: Callable[[type], None]) -> None:
    """Call callback(model) after every write of model's documents through Access in this process.

    In-process caches use it to forget what changed at once, whether or not
    the write publishes an event (writes of other processes reach them as
    bus events, or not at all, and then their time-to-live bounds the delay).
    """
    listeners = _WRITE_LISTENERS.setdefault(model, [])
    if callback not in listeners:
        listeners.append(callback)


def _written(model: type) -> None:
    for callback in _WRITE_LISTENERS.get(model, ()):
        callback(model)


# model -> whether its documents can hold embedded documents, whose change marks live in them.
_EMBEDS: dict[type, bool] = {}


def _embeds(model: type) -> bool:
    found = _EMBEDS.get(model)
    if found is None:
        kinds = (me.EmbeddedDocumentField, me.GenericEmbeddedDocumentField, me.EmbeddedDocumentListField)
        fields = list(model._fields.values())
        found = issubclass(model, me.DynamicDocument)  # fields of any type may appear on those
        while fields and not found:
            field = fields.pop()
            if isinstance(field, kinds):
                found = True
                break
            if getattr(field, "field", None) is not None:
                fields.append(field.field)
        found = _EMBEDS[model] = bool(found)
    return found


def _settle(doc: me.Document) -> None:
    """Mark a just-written document unchanged."""
    if _embeds(type(doc)):
        doc._clear_changed_fields()
    else:
        # Without embedded documents every change mark is the document's own; mongoengine's
        # _clear_changed_fields walks every nested dict and list looking for them
        # (a tenth of the rules engine's CPU when it requests executions).
        doc._changed_fields = []


# Fields whose query or update value mongoengine's transform does more with than prepare_query_value.
_SPECIAL_FIELDS = (me.fields.GeoJsonBaseField, me.CachedReferenceField, me.GenericReferenceField)


def _plain_fields(model: type, names: Iterable[str]) -> list[me.fields.BaseField] | None:
    """The fields of model named (top-level names, no operators), or None when one is not that simple."""
    fields = model._fields
    found = []
    for name in names:
        field = fields.get(name)
        if field is None or "__" in name or isinstance(field, _SPECIAL_FIELDS):
            return None
        found.append(field)
    return found


def equality_filter(model: type, values: dict[str, Any]) -> dict:
    """transform.query(model, **values) for equalities on top-level fields, built directly.

    transform.query parses every key and looks its field up the long way (a
    status change's filter: 27 -> 6 us). Anything but plain equalities takes it.
    """
    names = sorted(values)
    fields = _plain_fields(model, names)
    if fields is None:
        return transform.query(model, **values)
    return {field.db_field: field.prepare_query_value(None, values[name]) for name, field in zip(names, fields)}


def set_update(model: type, changes: dict[str, Any]) -> dict:
    """The update that sets changes (None: unsets the field) and bumps the revision, as transform.update makes it.

    Built directly for top-level fields, skipping transform.update's parsing
    of each key (with the whole fields' own conversion, an execution's claim:
    31 -> 7 us). The values go through each field's prepare_query_value as
    there (validated, converted).
    """
    fields = _plain_fields(model, changes)
    revision = "revision" in model._fields
    if fields is None:
        update = {f"set__{name}": value for name, value in changes.items() if value is not None}
        update.update({f"unset__{name}": True for name, value in changes.items() if value is None})
        if revision:
            update["inc__revision"] = 1
        return transform.update(model, **update)
    sets = {field.db_field: field.prepare_query_value("set", value)
            for field, value in zip(fields, changes.values()) if value is not None}
    unsets = {field.db_field: 1 for field, value in zip(fields, changes.values()) if value is None}
    update: dict[str, Any] = {}
    if sets:
        update["$set"] = sets
    if unsets:
        update["$unset"] = unsets
    if revision:
        field = model._fields["revision"]
        update["$inc"] = {field.db_field: field.prepare_query_value("inc", 1)}
    return update


def prefix_filter(field: str, prefix: str) -> dict:
    """A raw filter matching values of field that start with prefix."""
    return {field: {"$regex": "^" + re.escape(prefix)}}


def portable_filter(value: Any) -> Any:
    """A mongo filter with compiled patterns replaced by {"$regex": str, "$options": str}.

    nx-27017 matches nothing with a compiled pattern in find and count, and
    fails a delete with one; the string form means the same on MongoDB.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$regex" and isinstance(item, (re.Pattern, Regex)):
                pattern, options = _regex_parts(item)
                out["$regex"] = pattern
                if options and "$options" not in value:
                    out["$options"] = options
            elif isinstance(item, (re.Pattern, Regex)) and not key.startswith("$"):
                pattern, options = _regex_parts(item)
                out[key] = {"$regex": pattern, **({"$options": options} if options else {})}
            else:
                out[key] = portable_filter(item)
        return out
    if isinstance(value, list):
        return [portable_filter(item) for item in value]
    return value


def _regex_parts(value: re.Pattern | Regex) -> tuple[str, str]:
    if isinstance(value, Regex):
        value = value.try_compile()
    return value.pattern, "".join(letter for flag, letter in _REGEX_FLAGS if value.flags & flag)


def portable_update(update: dict) -> dict:
    """A mongo update document that stores datetimes as dates on nx-27017 too."""
    if any(isinstance(value, datetime.datetime) for op in _SETTERS for value in update.get(op, {}).values()):
        update = dict(update)
        update["$pull"] = {**update.get("$pull", {}), _DATE_SAFE_PULL: None}
    return update


def _holds_object_id(value: Any) -> bool:
    if isinstance(value, ObjectId):
        return True
    if isinstance(value, dict):
        return any(_holds_object_id(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_object_id(item) for item in value)
    return False


def _top_level(names: Iterable[str]) -> list[str]:
    """Field names cut to their top-level field, without duplicates, in order."""
    return list(dict.fromkeys(name.replace("__", ".").split(".")[0] for name in names))


def to_object_id(value: Any) -> ObjectId | None:
    """value as an ObjectId, or None when it is not one."""
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        return None


class Access(Generic[T]):
    """Access to the documents of one mongoengine class."""

    def __init__(self, model: type[T], publisher: Publisher | None = None) -> None:
        self.model = model
        self.publisher = publisher
        self.resource_type = getattr(model, "RESOURCE_TYPE", model.__name__)
        self._exchange = publisher.topology.resource_exchange(self.resource_type) if publisher else None

    # -- reads --------------------------------------------------------------------------

    def get_by_id(self, value: Any) -> T:
        """The document with this id; NotFoundError when there is none."""
        oid = to_object_id(value)
        doc = self._first(id=oid) if oid is not None else None
        if doc is None:
            raise NotFoundError(self.resource_type, value)
        return doc

    def get_by_ref(self, ref: str) -> T:
        """The document with this ref (or name, for types without refs)."""
        key = "ref" if "ref" in self.model._fields else "name"
        doc = self._first(**{key: ref})
        if doc is None:
            raise NotFoundError(self.resource_type, ref)
        return doc

    def get_by_ref_or_id(self, value: str) -> T:
        """Look up by id when value looks like one, else by ref."""
        if to_object_id(value) is not None:
            try:
                return self.get_by_id(value)
            except NotFoundError:
                pass
        try:
            return self.get_by_ref(value)
        except NotFoundError:
            raise NotFoundError(self.resource_type, value) from None

    def get_fields(self, doc_id: Any, fields: Iterable[str]) -> T | None:
        """The document with this id holding only the named top-level fields (others at their defaults), or None."""
        oid = to_object_id(doc_id)
        if oid is None:
            return None
        projection = {self.model._fields[name].db_field: 1 for name in _top_level(fields) if name in self.model._fields}
        try:
            son = self.model._get_collection().find_one({"_id": oid}, projection or None)
        except DB_ERRORS as exc:
            raise DatabaseError(f"reading {self.resource_type} {doc_id}: {exc}") from exc
        return self.model._from_son(son) if son is not None else None

    def get(self, **filters: Any) -> T | None:
        """The first document matching filters, or None."""
        return self._first(**filters)

    def _first(self, **filters: Any) -> T | None:
        # Straight to the collection: a queryset costs more CPU than the read itself.
        try:
            son = self.model._get_collection().find_one(self._filter(filters, None))
        except DB_ERRORS as exc:
            raise DatabaseError(f"reading {self.resource_type}: {exc}") from exc
        return self.model._from_son(son) if son is not None else None

    def query(self, filters: dict | None = None, raw: dict | None = None, order_by: Iterable[str] = (),
              limit: int | None = None, offset: int = 0, only: Iterable[str] = (),
              exclude: Iterable[str] = ()) -> list[T]:
        """Documents matching mongoengine filters and a raw filter, sorted and sliced.

        ``only`` and ``exclude`` act on top-level fields: a dotted name in
        ``only`` fetches its whole top-level field, and a dotted name in
        ``exclude`` is ignored (nx-27017 flattens or ignores nested projections).
        """
        queryset = self._queryset(filters, raw)
        if order_by:
            queryset = queryset.order_by(*order_by)
        if offset:
            queryset = queryset.skip(offset)
        if limit is not None:
            queryset = queryset.limit(limit)
        if only:
            queryset = queryset.only(*_top_level(only))
        exclude = [name for name in exclude if "." not in name and "__" not in name]
        if exclude:
            queryset = queryset.exclude(*exclude)
        try:
            return list(queryset)
        except DB_ERRORS as exc:
            raise DatabaseError(f"querying {self.resource_type}: {exc}") from exc

    def count(self, filters: dict | None = None, raw: dict | None = None) -> int:
        """How many documents match (for X-Total-Count; keep it off the hot path)."""
        try:
            query = self._filter(filters, raw)
            collection = self.model._get_collection()
            if _holds_object_id(query):
                # nx-27017's count command cannot bind ObjectIds and its
                # count_documents drops matches on them: count the ids instead.
                return sum(1 for _ in collection.find(query, {"_id": 1}))
            # The count command agrees with find on both servers; count_documents
            # (an aggregation) disagrees on nx-27017 for null and $exists.
            return int(collection.database.command("count", collection.name, query=query)["n"])
        except DB_ERRORS as exc:
            raise DatabaseError(f"counting {self.resource_type}: {exc}") from exc

    def _queryset(self, filters: dict | None, raw: dict | None):
        """A queryset for filters and raw, in the portable filter shape."""
        return self.model.objects(__raw__=self._filter(filters, raw))

    def _filter(self, filters: dict | None, raw: dict | None) -> dict:
        """The mongo filter for mongoengine filters and raw, in the portable shape."""
        query = equality_filter(self.model, filters) if filters else {}
        if raw:
            query = {"$and": [query, raw]} if query else dict(raw)
        return portable_filter(query)

    # -- writes -------------------------------------------------------------------------

    def add_or_update(self, doc: T, publish: bool = True) -> T:
        """Insert or save doc; ConflictError when a unique field clashes.

        Saving an existing document bumps its revision, so a concurrent
        update_if/append on the old revision loses instead of overwriting it.
        """
        created = doc.pk is None or doc._created
        if not created and "revision" in self.model._fields:
            doc.revision = (doc.revision or 0) + 1
        try:
            if doc.pk is None:
                self._insert(doc)
            elif created:
                doc.save()  # an id given in advance: mongoengine's save replaces a stored one
            else:
                self._save_changes(doc)
        except (NotUniqueError, DuplicateKeyError) as exc:
            raise ConflictError(f"{self.resource_type} conflicts with an existing one: {exc}",
                                conflict_id=self._conflicting_id(doc)) from exc
        except me.ValidationError as exc:
            raise self._invalid(exc) from exc
        except DB_ERRORS as exc:
            raise DatabaseError(f"writing {self.resource_type}: {exc}") from exc
        finally:
            _written(self.model)
        if publish:
            self.publish(CREATE if created else UPDATE, doc)
        return doc

    def _insert(self, doc: T) -> None:
        """Insert a new document (mongoengine's save without its extra conversions)."""
        doc.validate()
        son = doc.to_mongo()
        son.pop("_id", None)
        doc.pk = self.model._get_collection().insert_one(son).inserted_id
        doc._created = False
        _settle(doc)

    def _save_changes(self, doc: T) -> None:
        """Write the changed fields of a loaded document (mongoengine's save, in the portable shape)."""
        doc.validate()
        sets, unsets = doc._delta()
        update = {}
        if sets:
            update["$set"] = sets
        if unsets:
            update["$unset"] = {name: 1 for name in unsets}
        if update:
            result = self.model._get_collection().update_one({"_id": doc.pk}, portable_update(update))
            if result.matched_count == 0:
                raise NotFoundError(self.resource_type, doc.pk)
        _settle(doc)

    def _conflicting_id(self, doc: T) -> str | None:
        for name, field in self.model._fields.items():
            if getattr(field, "unique", False) and getattr(doc, name, None) is not None:
                other = self._first(**{name: getattr(doc, name)})
                if other is not None and other.pk != doc.pk:
                    return str(other.pk)
        return None

    def _invalid(self, exc: me.ValidationError) -> ValidationError:
        fields = sorted((exc.errors or {}).keys())
        return ValidationError(f"invalid {self.resource_type}: {exc}", field=fields[0] if fields else None)

    def update_if(self, doc_id: Any, expected: dict[str, Any], changes: dict[str, Any],
                  publish: bool = True) -> T | None:
        """Apply changes ($set) if the document still has the expected values; the new doc or None.

        This is the compare-and-set every status change goes through, so two
        copies of a service never both win the same transition.
        """
        oid = to_object_id(doc_id)
        if oid is None:
            return None
        if not changes and "revision" not in self.model._fields:
            return self._first(id=oid, **expected)
        try:
            query = self._filter({"id": oid, **expected}, None)
            son = self.model._get_collection().find_one_and_update(
                query, portable_update(set_update(self.model, changes)),
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            raise ConflictError(f"{self.resource_type} {doc_id} would clash with an existing one: {exc}") from exc
        except DB_ERRORS as exc:
            raise DatabaseError(f"updating {self.resource_type} {doc_id}: {exc}") from exc
        finally:
            _written(self.model)
        doc = self.model._from_son(son) if son is not None else None
        if doc is not None and publish:
            self.publish(UPDATE, doc)
        return doc

    def set_if(self, doc_id: Any, expected: dict[str, Any], changes: dict[str, Any]) -> bool:
        """update_if for a caller that needs no copy back: True when the document matched and was changed.

        Nothing is published and no document is read back, so the caller
        saves turning the stored document into an object again.
        """
        oid = to_object_id(doc_id)
        if oid is None:
            return False
        try:
            query = self._filter({"id": oid, **expected}, None)
            result = self.model._get_collection().update_one(query, portable_update(set_update(self.model, changes)))
        except DuplicateKeyError as exc:
            raise ConflictError(f"{self.resource_type} {doc_id} would clash with an existing one: {exc}") from exc
        except DB_ERRORS as exc:
            raise DatabaseError(f"updating {self.resource_type} {doc_id}: {exc}") from exc
        finally:
            _written(self.model)
        return result.matched_count == 1

    def set_many_if(self, doc_ids: Iterable[Any], expected: dict[str, Any], changes: dict[str, Any]) -> int:
        """set_if for many documents in one write: how many had the expected values and were changed.

        Each document is changed at most once, by one writer: when the count
        equals the number of distinct ids, this write changed every one of them.
        """
        oids = list({oid for oid in map(to_object_id, doc_ids) if oid is not None})
        if not oids:
            return 0
        try:
            query = portable_filter({"_id": {"$in": oids}, **equality_filter(self.model, expected)})
            result = self.model._get_collection().update_many(query, portable_update(set_update(self.model, changes)))
        except DB_ERRORS as exc:
            raise DatabaseError(f"updating {len(oids)} {self.resource_type}s: {exc}") from exc
        finally:
            _written(self.model)
        return result.modified_count

    def append(self, doc_id: Any, field: str, items: list, expected: dict[str, Any] | None = None,
               publish: bool = False, attempts: int = 50) -> T | None:
        """Append items to a list field; None when expected no longer holds.

        ``$push`` of objects breaks on nx-27017 and equality on a list of objects
        is rejected there, so the list is rewritten under a compare-and-set on
        the document's ``revision`` counter.
        """
        if "revision" not in self.model._fields:
            raise DatabaseError(f"{self.resource_type} has no revision field; append needs one")
        for _ in range(attempts):
            doc = self.get_by_id(doc_id)
            if expected and any(getattr(doc, k) != v for k, v in expected.items()):
                return None
            new_list = list(getattr(doc, field) or []) + list(items)
            updated = self.update_if(doc.pk, {"revision": doc.revision}, {field: new_list}, publish=publish)
            if updated is not None:
                return updated
        raise DatabaseError(f"appending to {self.resource_type} {doc_id}.{field}: too much contention")

    def push(self, doc_id: Any, field: str, items: list) -> bool:
        """Append scalar items to a list field in one write, no read; False when there is no such document.

        The list must hold scalars (``$push`` of objects breaks on nx-27017:
        append rewrites those). The revision moves on as with append.
        """
        oid = to_object_id(doc_id)
        if oid is None:
            return False
        update: dict[str, Any] = {"$push": {field: {"$each": list(items)}}}
        if "revision" in self.model._fields:
            update["$inc"] = {"revision": 1}
        try:
            result = self.model._get_collection().update_one({"_id": oid}, update)
        except DB_ERRORS as exc:
            raise DatabaseError(f"appending to {self.resource_type} {doc_id}.{field}: {exc}") from exc
        finally:
            _written(self.model)
        return result.matched_count == 1

    def add_to_set(self, doc_id: Any, field: str, items: list) -> bool:
        """push of the scalar items a list field does not hold yet (a repeat changes nothing); False: no such document.

        ``$addToSet`` does nothing to a missing field on nx-27017, so it goes
        only to a field that holds a value; a missing or null one is set
        instead. (``$type`` would say "a list" directly, but nx-27017 then
        scans the whole collection.)
        """
        oid = to_object_id(doc_id)
        if oid is None:
            return False
        inc = {"$inc": {"revision": 1}} if "revision" in self.model._fields else {}
        collection = self.model._get_collection()
        try:
            for _ in range(2):
                # Twice: a field given a list between the two writes takes the first shape the second time.
                if collection.update_one({"_id": oid, field: {"$exists": True, "$ne": None}},
                                         {"$addToSet": {field: {"$each": list(items)}}, **inc}).matched_count:
                    return True
                if collection.update_one({"_id": oid, field: None},
                                         {"$set": {field: list(dict.fromkeys(items))}, **inc}).matched_count:
                    return True
                if collection.find_one({"_id": oid}, {"_id": 1}) is None:
                    return False
        except DB_ERRORS as exc:
            raise DatabaseError(f"adding to {self.resource_type} {doc_id}.{field}: {exc}") from exc
        finally:
            _written(self.model)
        raise DatabaseError(f"adding to {self.resource_type} {doc_id}.{field}: it kept changing shape")

    def insert_many(self, docs: list[T], reload: bool = True) -> list[T]:
        """Bulk insert of validated documents; no events are published (registration, imports).

        Inserts are ordered: on a ConflictError the documents before the
        clashing one are stored and the rest are not. The documents returned
        are read back (one more command) unless reload is False: then they are
        the given ones, their ids set, as they were before the database stored
        them (times keep their microseconds).
        """
        if not docs:
            return []
        for doc in docs:
            try:
                doc.validate()
            except me.ValidationError as exc:
                raise self._invalid(exc) from exc
        try:
            if reload:
                return self.model.objects.insert(docs)
            ids = self.model.objects.insert(docs, load_bulk=False)
            for doc, oid in zip(docs, ids if isinstance(ids, list) else [ids]):
                doc.pk = oid
                doc._created = False
                _settle(doc)
            return docs
        except NotUniqueError as exc:
            raise ConflictError(f"{self.resource_type} conflicts with an existing one: {exc}") from exc
        except me.errors.BulkWriteError as exc:
            # mongoengine's error for several documents; a clash is a conflict as for one.
            if "11000" in str(exc):
                raise ConflictError(f"{self.resource_type} conflicts with an existing one: {exc}") from exc
            raise DatabaseError(f"inserting {self.resource_type}: {exc}") from exc
        except DB_ERRORS as exc:
            raise DatabaseError(f"inserting {self.resource_type}: {exc}") from exc
        finally:
            _written(self.model)

    def insert_raw(self, docs: list[dict[str, Any]]) -> None:
        """Ordered bulk insert of documents already in their stored shape; no validation, no events.

        For hot-path records built by their own code (rule enforcements, trace
        links), where building and validating mongoengine documents costs more
        than the write. A clash is a ConflictError, as in insert_many.
        """
        if not docs:
            return
        try:
            self.model._get_collection().insert_many(docs, ordered=True)
        except PyMongoError as exc:
            details = getattr(exc, "details", None) or {}
            codes = {error.get("code") for error in details.get("writeErrors", ())}
            if isinstance(exc, DuplicateKeyError) or 11000 in codes or "11000" in str(exc):
                raise ConflictError(f"{self.resource_type} conflicts with an existing one: {exc}") from exc
            raise DatabaseError(f"inserting {self.resource_type}: {exc}") from exc
        finally:
            _written(self.model)

    def delete(self, doc: T, publish: bool = True) -> None:
        """Delete doc and publish its deletion."""
        try:
            doc.delete()
        except DB_ERRORS as exc:
            raise DatabaseError(f"deleting {self.resource_type} {doc.pk}: {exc}") from exc
        finally:
            _written(self.model)
        if publish:
            self.publish(DELETE, doc)

    def delete_by(self, filters: dict | None = None, raw: dict | None = None) -> int:
        """Delete every matching document without events; returns how many."""
        try:
            return self._queryset(filters, raw).delete()
        except DB_ERRORS as exc:
            raise DatabaseError(f"deleting {self.resource_type}: {exc}") from exc
        finally:
            _written(self.model)

    # -- events -------------------------------------------------------------------------

    def publish(self, event: str, doc: T, **extra: Any) -> None:
        """Publish {"id", ...extra} with routing key event on the resource's exchange."""
        if self._exchange is None or self.publisher is None:
            return
        body = {"id": str(doc.pk), **extra}
        self.publisher.publish_to(self._exchange, event, body)
