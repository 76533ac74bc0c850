"""The one generic access class: read, query, write and delete documents of one type.

Every write publishes a create/update/delete event ({"id": ...}) on the
resource's exchange, when the topology has one and a publisher is given.
The query and update shapes used here are the ones that work on both MongoDB
and the embedded nx-27017 server (see docs/mongodb-compat.md): prefix matches
go through ``$regex`` strings, never compiled patterns; lists are appended by
a conditional rewrite, never ``$push``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Generic, Iterable, TypeVar

import mongoengine as me
from bson import ObjectId
from bson.errors import InvalidId
from mongoengine.errors import NotUniqueError
from pymongo.errors import PyMongoError

from st2common.exceptions import ConflictError, DatabaseError, NotFoundError
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

T = TypeVar("T", bound=me.Document)

CREATE, UPDATE, DELETE = "create", "update", "delete"


def prefix_filter(field: str, prefix: str) -> dict:
    """A raw filter matching values of field that start with prefix."""
    return {field: {"$regex": "^" + re.escape(prefix)}}


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

    def get(self, **filters: Any) -> T | None:
        """The first document matching filters, or None."""
        return self._first(**filters)

    def _first(self, **filters: Any) -> T | None:
        try:
            return self.model.objects(**filters).first()
        except PyMongoError as exc:
            raise DatabaseError(f"reading {self.resource_type}: {exc}") from exc

    def query(self, filters: dict | None = None, raw: dict | None = None, order_by: Iterable[str] = (),
              limit: int | None = None, offset: int = 0, only: Iterable[str] = (),
              exclude: Iterable[str] = ()) -> list[T]:
        """Documents matching mongoengine filters and a raw filter, sorted and sliced."""
        queryset = self._queryset(filters, raw)
        if order_by:
            queryset = queryset.order_by(*order_by)
        if offset:
            queryset = queryset.skip(offset)
        if limit is not None:
            queryset = queryset.limit(limit)
        if only:
            queryset = queryset.only(*only)
        if exclude:
            queryset = queryset.exclude(*exclude)
        try:
            return list(queryset)
        except PyMongoError as exc:
            raise DatabaseError(f"querying {self.resource_type}: {exc}") from exc

    def count(self, filters: dict | None = None, raw: dict | None = None) -> int:
        """How many documents match; costly on the embedded server, so only when asked for."""
        try:
            return self._queryset(filters, raw).count()
        except PyMongoError as exc:
            raise DatabaseError(f"counting {self.resource_type}: {exc}") from exc

    def _queryset(self, filters: dict | None, raw: dict | None):
        kwargs = dict(filters or {})
        if raw:
            kwargs["__raw__"] = raw
        return self.model.objects(**kwargs)

    # -- writes -------------------------------------------------------------------------

    def add_or_update(self, doc: T, publish: bool = True) -> T:
        """Insert or save doc; ConflictError when a unique field clashes."""
        created = doc.pk is None
        try:
            doc.save()
        except NotUniqueError as exc:
            raise ConflictError(f"{self.resource_type} conflicts with an existing one: {exc}",
                                conflict_id=self._conflicting_id(doc)) from exc
        except PyMongoError as exc:
            raise DatabaseError(f"writing {self.resource_type}: {exc}") from exc
        if publish:
            self.publish(CREATE if created else UPDATE, doc)
        return doc

    def _conflicting_id(self, doc: T) -> str | None:
        for name, field in self.model._fields.items():
            if getattr(field, "unique", False) and getattr(doc, name, None) is not None:
                other = self._first(**{name: getattr(doc, name)})
                if other is not None:
                    return str(other.pk)
        return None

    def update_if(self, doc_id: Any, expected: dict[str, Any], changes: dict[str, Any],
                  publish: bool = True) -> T | None:
        """Apply changes ($set) if the document still has the expected values; the new doc or None.

        This is the compare-and-set every status change goes through, so two
        copies of a service never both win the same transition.
        """
        oid = to_object_id(doc_id)
        if oid is None:
            return None
        update = {f"set__{name}": value for name, value in changes.items() if value is not None}
        update.update({f"unset__{name}": True for name, value in changes.items() if value is None})
        if "revision" in self.model._fields:
            update["inc__revision"] = 1
        try:
            doc = self.model.objects(id=oid, **expected).modify(new=True, **update)
        except PyMongoError as exc:
            raise DatabaseError(f"updating {self.resource_type} {doc_id}: {exc}") from exc
        if doc is not None and publish:
            self.publish(UPDATE, doc)
        return doc

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

    def insert_many(self, docs: list[T]) -> list[T]:
        """Bulk insert; no events are published (used by registration and imports)."""
        if not docs:
            return []
        try:
            return self.model.objects.insert(docs)
        except NotUniqueError as exc:
            raise ConflictError(f"{self.resource_type} conflicts with an existing one: {exc}") from exc
        except PyMongoError as exc:
            raise DatabaseError(f"inserting {self.resource_type}: {exc}") from exc

    def delete(self, doc: T, publish: bool = True) -> None:
        """Delete doc and publish its deletion."""
        try:
            doc.delete()
        except PyMongoError as exc:
            raise DatabaseError(f"deleting {self.resource_type} {doc.pk}: {exc}") from exc
        if publish:
            self.publish(DELETE, doc)

    def delete_by(self, filters: dict | None = None, raw: dict | None = None) -> int:
        """Delete every matching document without events; returns how many."""
        try:
            return self._queryset(filters, raw).delete()
        except PyMongoError as exc:
            raise DatabaseError(f"deleting {self.resource_type}: {exc}") from exc

    # -- events -------------------------------------------------------------------------

    def publish(self, event: str, doc: T, **extra: Any) -> None:
        """Publish {"id", ...extra} with routing key event on the resource's exchange."""
        if self._exchange is None or self.publisher is None:
            return
        body = {"id": str(doc.pk), **extra}
        self.publisher.publish_to(self._exchange, event, body)
