"""The embedded database server's lean write paths, beside nx-27017's own.

neosqlite (under nx-27017) applies an update by loading the stored document,
deep-copying it, changing the copy in Python and writing it back whole; for
the small documents of this platform that machinery, not SQLite, is most of
a write's CPU. The shapes the services send on their hot paths are simple:

| command        | taken here when                                                   |
| -------------- | ----------------------------------------------------------------- |
| update         | one statement, no upsert, no array filters; the filter is ``_id`` |
|                | (an ObjectId or ``$in`` of them) and equalities of top-level      |
|                | fields to strings or integers (or a field that is there and not   |
|                | null: ``{"$exists": true, "$ne": null}``); the update ``$set`` /  |
|                | ``$unset`` / ``$inc`` / ``$push`` (a value, or ``$each`` alone)   |
|                | of top-level fields, ``$addToSet`` of strings to a list field of  |
|                | one document (``$pull`` of fields the documents do not have is    |
|                | the nothing it is)                                                |
| findAndModify  | the same, for one ``_id``, without projection or upsert           |
| insert         | into a collection that exists, not GridFS's: the documents in one |
|                | transaction (nx-27017 reads the table list and resolves the       |
|                | session for each command first)                                   |

Updates run as one SQL UPDATE with SQLite's JSON functions, the new values
encoded as neosqlite encodes them (so a datetime is stored as a date, and
reads see no difference). Anything else goes to nx-27017 unchanged: other
shapes, an update that matches fewer documents than it names (so that the
full matching rules decide, arrays and all), and a write SQLite refuses (a
unique index), undone first, so that nx-27017 answers the error as it does.

Inserts and updates that do go to neosqlite skip its deepcopy and second
JSON check (``lean_insert``, ``tree_copy``), and so do its projections of
what a find read; ``install`` puts them in place.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from bson import ObjectId as BsonObjectId
from neosqlite._sqlite import sqlite3
from neosqlite.binary import Binary
from neosqlite.collection.json_helpers import NeoSQLiteJSONEncoder, neosqlite_json_dumps
from neosqlite.collection.query_helper import aggregation, update_operations
from neosqlite.collection.query_helper.crud_operations import CRUDOperationsMixin
from neosqlite.collection.query_helper.utils import _convert_bytes_to_binary
from neosqlite.exceptions import MalformedDocument
from neosqlite.objectid import ObjectId
from neosqlite.sql_utils import quote_table_name

# A top-level field name that is safe to put in a JSON path literal.
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Keys of a command document that change nothing about what the write does.
_ROUTINE = frozenset({"$db", "lsid", "ordered", "$clusterTime", "$readPreference"})


def install() -> None:
    """Make neosqlite's insert, Python-update and projection paths lean in this process (the database server's)."""
    if not callable(getattr(CRUDOperationsMixin, "_internal_insert", None)) or not all(
            hasattr(module, "deepcopy") for module in (update_operations, aggregation)):
        # pyproject.toml pins the neosqlite releases these were checked on; another one must be checked again.
        raise RuntimeError("this neosqlite release does not have the internals dbwrites replaces")
    CRUDOperationsMixin._internal_insert = lean_insert
    update_operations.deepcopy = tree_copy
    # A find with a projection copies each document it read before picking its fields (the API's
    # include_attributes: most of the database's CPU for a listing).
    aggregation.deepcopy = tree_copy


# -- neosqlite's own paths, lean -------------------------------------------------------

def lean_insert(self, document):
    """neosqlite's _internal_insert without its deepcopy and its JSON validation query.

    Converting bytes to Binary already builds new dicts and lists, so the
    caller's document is not touched (but for its ``_id``, as before); and
    json.dumps writes valid JSON once NaN and infinities are refused (they
    were refused by the validation). The two were about a sixth of the
    server's CPU on insert-heavy loads.
    """
    if not isinstance(document, dict):
        raise MalformedDocument(f"document must be a dictionary, not a {type(document)}")
    doc_to_insert = _convert_bytes_to_binary(document)
    original_has_id = "_id" in document
    generated_id = ObjectId() if not original_has_id or document["_id"] is None else document["_id"]
    doc_to_insert["_id"] = generated_id
    try:
        json_str = neosqlite_json_dumps(doc_to_insert, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"Invalid JSON document: {exc}") from exc
    cursor = self.collection.db.execute(
        f"INSERT INTO {quote_table_name(self.collection.name)}(data, _id) VALUES (?, ?)",
        (json_str, str(generated_id)))
    if cursor.lastrowid is None:
        raise sqlite3.Error("Failed to get last row id.")
    if not original_has_id:
        document["_id"] = generated_id
    return generated_id


# Leaves of a stored document that nothing changes in place: shared by a copy.
_SHARED = frozenset({str, int, float, bool, type(None), datetime.datetime, ObjectId, Binary})


def tree_copy(value):
    """copy.deepcopy for a document read from the database: new dicts and lists, the same leaves.

    neosqlite copies the stored document before applying an update in Python
    (so the old one can be compared and returned); deepcopy's memo and
    per-object dispatch made that copy most of an update's CPU.
    """
    kind = type(value)
    if kind is dict:
        return {key: tree_copy(item) for key, item in value.items()}
    if kind is list:
        return [tree_copy(item) for item in value]
    if kind in _SHARED:
        return value
    return copy.deepcopy(value)


# -- updates as one SQL statement ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Plan:
    """A simple update turned into SQL: which rows, the new data expression, and its parameters."""

    ids: list[str]
    conditions: list[str]
    condition_params: list[Any]
    # What must hold of every matched document for the SQL to mean what Mongo's update means.
    guards: list[str]
    expression: str
    params: list[Any]
    # Whether every matched document is certainly changed (a counter moved, a field
    # the filter pins set to something else): then nothing needs comparing.
    changes: bool
    # $addToSet: (field, the strings to add, the index in params of the new list), filled in per document.
    add_to_set: tuple[str, list[str], int] | None = None


class _StoredJSON(NeoSQLiteJSONEncoder):
    """neosqlite's JSON encoder that also takes what a decoded command holds: BSON ObjectIds and bytes.

    nx-27017 and neosqlite first copy a whole document to turn those into
    their own types, two walks in Python; the encoder's hook meets only the
    values JSON has no form for, and stores them in the same form as those
    copies did (a 2.5 KB execution: 66 -> 24 us).
    """

    def default(self, obj):
        if isinstance(obj, BsonObjectId):
            return ObjectId(obj.binary).encode_for_storage()
        if isinstance(obj, bytes) and not isinstance(obj, Binary):
            return Binary(obj).encode_for_storage()
        return super().default(obj)


_STORED_JSON = _StoredJSON(allow_nan=False)


def _encode(value: Any) -> str:
    """A value as neosqlite stores it inside a document (JSON text; datetimes as dates)."""
    return _STORED_JSON.encode(value)


def _plan(query: Any, update: Any) -> _Plan | None:
    """The SQL of a filter and update this module takes, or None."""
    if not isinstance(query, dict) or not isinstance(update, dict) or not update:
        return None
    ids: list[str] | None = None
    conditions: list[str] = []
    condition_params: list[Any] = []
    pinned: dict[str, Any] = {}
    present_lists: list[str] = []
    for name, expected in query.items():
        if name == "_id":
            if isinstance(expected, BsonObjectId):
                ids = [str(expected)]
            elif (isinstance(expected, dict) and list(expected) == ["$in"] and isinstance(expected["$in"], list)
                  and expected["$in"] and all(isinstance(oid, BsonObjectId) for oid in expected["$in"])):
                ids = list(dict.fromkeys(str(oid) for oid in expected["$in"]))
            else:
                return None
        elif _FIELD.match(name) and (isinstance(expected, str)
                                     or (isinstance(expected, int) and not isinstance(expected, bool))):
            conditions.append(f"json_extract(data, '$.{name}') = ?")
            condition_params.append(expected)
            pinned[name] = expected
        elif _FIELD.match(name) and isinstance(expected, dict) and expected == _PRESENT_FILTER:
            conditions.append(f"json_type(data, '$.{name}') IS NOT NULL AND json_type(data, '$.{name}') != 'null'")
            # Mongo's $ne: null also refuses a list holding a null: nx-27017 decides that one.
            present_lists.append(f"json_type(data, '$.{name}') != 'array' OR NOT EXISTS "
                                 f"(SELECT 1 FROM json_each(data, '$.{name}') WHERE type = 'null')")
        else:
            return None
    if ids is None:
        return None
    removed: list[str] = []
    settings: list[str] = []
    params: list[Any] = []
    guards: list[str] = present_lists
    seen: set[str] = set()
    changes = False
    add_to_set = None
    for operator, fields in update.items():
        if not isinstance(fields, dict) or not fields:
            return None
        for name, value in fields.items():
            if not _FIELD.match(name) or name == "_id" or name in seen:
                return None
            seen.add(name)
            if operator == "$set":
                try:
                    params.append(_encode(value))
                except (TypeError, ValueError):
                    return None
                settings.append(f"'$.{name}', json(?)")
                if name in pinned and type(value) is type(pinned[name]) and value != pinned[name]:
                    changes = True
            elif operator == "$unset":
                removed.append(f"'$.{name}'")
            elif operator == "$inc" and isinstance(value, int) and not isinstance(value, bool):
                settings.append(f"'$.{name}', COALESCE(json_extract(data, '$.{name}'), 0) + ?")
                params.append(value)
                changes = changes or value != 0
                # Mongo refuses $inc of a non-number: nx-27017 says so.
                guards.append(f"json_type(data, '$.{name}') IS NULL OR json_type(data, '$.{name}') IN "
                              f"('integer', 'real')")
            elif operator == "$push":
                values = _pushed(value)
                if values is None:
                    return None
                try:
                    encoded = [_encode(item) for item in values]
                except (TypeError, ValueError):
                    return None
                appended = ", ".join("'$[#]', json(?)" for _ in encoded)
                # A missing field becomes the list, as Mongo makes it; a field that is not a list is an
                # error Mongo gives, so nx-27017 answers it.
                if encoded:
                    settings.append(f"'$.{name}', json_insert(COALESCE(json_extract(data, '$.{name}'), "
                                    f"json('[]')), {appended})")
                    params.extend(encoded)
                    changes = True
                guards.append(f"json_type(data, '$.{name}') IS NULL OR json_type(data, '$.{name}') = 'array'")
            elif operator == "$addToSet":
                added = _pushed(value)
                if add_to_set is not None or not added or len(ids) != 1 or not all(
                        isinstance(item, str) for item in added):
                    return None
                # The new list depends on the stored one: _with_added works it out once the row is known.
                settings.append(f"'$.{name}', json(?)")
                add_to_set = (name, added, len(params))
                params.append(None)
                # A missing field stays missing on nx-27017 (Mongo would make the list), and a field
                # that is not a list is an error: both nx-27017's to answer.
                guards.append(f"json_type(data, '$.{name}') = 'array'")
            elif operator == "$pull":
                # Of a field the document does not have: nothing. Of one it has: nx-27017's work.
                guards.append(f"json_type(data, '$.{name}') IS NULL")
            else:
                return None
    expression = "data"
    if removed:
        expression = f"json_remove({expression}, {', '.join(removed)})"
    if settings:
        expression = f"json_set({expression}, {', '.join(settings)})"
    conditions = [f"({condition})" for condition in conditions]
    return _Plan(ids, conditions, condition_params, guards, expression, params, changes, add_to_set)


# A filter value meaning "the field is there and is not null", as Access.add_to_set sends it.
_PRESENT_FILTER = {"$exists": True, "$ne": None}


def _with_added(db, table: str, plan: _Plan, row: int) -> _Plan:
    """plan with its $addToSet list worked out for row's stored list.

    The server answers one command at a time, so the list read here is the one the write replaces.
    """
    name, added, index = plan.add_to_set
    (text,) = db.execute(f"SELECT json_extract(data, '$.{name}') FROM {table} WHERE id = ?", (row,)).fetchone()
    current = json.loads(text)
    # Only strings can equal the strings added (Mongo compares by type first): anything else stays as it is.
    held = {item for item in current if isinstance(item, str)}
    new = [item for item in dict.fromkeys(added) if item not in held]
    params = list(plan.params)
    params[index] = _encode(current + new) if new else text
    return replace(plan, params=params, changes=plan.changes or bool(new))


def _pushed(value: Any) -> list[Any] | None:
    """The items a ``$push`` appends: one value, or ``$each`` without modifiers; None for any other shape."""
    if isinstance(value, dict):
        # $slice, $position, $sort, or a document pushed whole: nx-27017's.
        return value["$each"] if list(value) == ["$each"] and isinstance(value["$each"], list) else None
    return [value]


def _matched(db, table: str, plan: _Plan) -> list[tuple[int, int]] | None:
    """(row id, whether the plan's guards hold) of the rows its filter matches; None: no such table."""
    marks = " AND ".join(f"({guard})" for guard in plan.guards) or "1"
    where = " AND ".join([f"_id IN ({', '.join('?' * len(plan.ids))})", *plan.conditions])
    try:
        return db.execute(f"SELECT id, {marks} FROM {table} WHERE {where} ORDER BY id",
                          [*plan.ids, *plan.condition_params]).fetchall()
    except sqlite3.OperationalError:
        return None


def _apply(db, table: str, plan: _Plan, rows: list[int]) -> int | None:
    """Write the plan to the rows; how many changed, or None when SQLite refused it (a unique index).

    A refused statement changes nothing, so nx-27017 can then run the command
    and answer the error as it does.
    """
    marks = ", ".join("?" * len(rows))
    sql, params = f"UPDATE {table} SET data = {plan.expression} WHERE id IN ({marks})", [*plan.params, *rows]
    if not plan.changes:
        # Only the documents this changes are written (and counted), as Mongo's nModified says.
        sql, params = f"{sql} AND json({plan.expression}) IS NOT json(data)", [*params, *plan.params]
    try:
        cursor = db.execute(sql, params)
    except sqlite3.Error:
        return None
    return cursor.rowcount


def _plain(command: dict[str, Any], allowed: frozenset[str]) -> bool:
    """Whether a command holds nothing beyond the keys a fast path knows."""
    return all(key in allowed or key in _ROUTINE for key in command)


def insert(handler, command: dict[str, Any], documents: list[Any], db_name: str) -> dict[str, Any] | None:
    """The reply to an ``insert`` command this module takes, written; None to leave it to nx-27017."""
    name = command.get("insert")
    if (not isinstance(name, str) or not _plain(command, frozenset({"insert", "documents"}))
            or handler._is_gridfs_collection(name) or not documents
            or not all(isinstance(document, dict) for document in documents)):
        return None
    collection = handler.get_database(db_name)[name]
    db = collection.db
    sql = f"INSERT INTO {quote_table_name(collection.name)}(data, _id) VALUES (?, ?)"
    rows, ids = [], []
    try:
        for document in documents:
            if document.get("_id") is None:
                # A copy: should SQLite refuse the batch, nx-27017 gets the documents as they came.
                document = {**document, "_id": ObjectId()}
            ids.append(document["_id"])
            rows.append((_encode(document), str(document["_id"])))
    except (TypeError, ValueError):
        return None  # nx-27017 names the document that cannot be stored
    db.execute("SAVEPOINT st2_fast_insert")
    try:
        db.executemany(sql, rows)
    except sqlite3.Error:
        # A clash, or no such table yet: nothing of this batch stays.
        db.execute("ROLLBACK TO SAVEPOINT st2_fast_insert")
        db.execute("RELEASE SAVEPOINT st2_fast_insert")
        return None
    db.execute("RELEASE SAVEPOINT st2_fast_insert")
    return {"ok": 1, "n": len(ids), "insertedIds": ids}


def update(handler, command: dict[str, Any], db_name: str) -> dict[str, Any] | None:
    """The reply to an ``update`` command this module takes, written; None to leave it to nx-27017."""
    if not _plain(command, frozenset({"update", "updates"})):
        return None
    updates = command.get("updates")
    if not isinstance(updates, list) or len(updates) != 1:
        return None
    statement = updates[0]
    if not isinstance(statement, dict) or not _plain(statement, frozenset({"q", "u", "multi", "upsert"})):
        return None
    if statement.get("upsert") or not isinstance(command.get("update"), str):
        return None
    plan = _plan(statement.get("q"), statement.get("u"))
    if plan is None:
        return None
    collection = handler.get_database(db_name)[command["update"]]
    table = quote_table_name(collection.name)
    db = collection.db
    found = _matched(db, table, plan)
    if not found or not all(fits for _, fits in found):
        return None
    if not statement.get("multi"):
        found = found[:1]
    elif len(found) < len(plan.ids):
        # Some were left out: Mongo's equality also matches arrays holding the value, which
        # the SQL does not see; nx-27017 matches by the full rules.
        return None
    if plan.add_to_set is not None:
        plan = _with_added(db, table, plan, found[0][0])
    modified = _apply(db, table, plan, [row for row, _ in found])
    if modified is None:
        return None
    return {"ok": 1, "n": len(found), "nModified": modified}


def find_and_modify(handler, command: dict[str, Any], db_name: str) -> dict[str, Any] | None:
    """The reply to a ``findAndModify`` command this module takes, written; None to leave it to nx-27017."""
    if not _plain(command, frozenset({"findAndModify", "query", "update", "new", "sort", "upsert"})):
        return None
    if command.get("upsert") or not isinstance(command.get("findAndModify"), str):
        return None
    update_doc = command.get("update")
    if not isinstance(update_doc, dict) or not all(key.startswith("$") for key in update_doc):
        return None
    plan = _plan(command.get("query"), update_doc)
    if plan is None or len(plan.ids) != 1:
        return None  # a sort only matters among several candidates
    collection = handler.get_database(db_name)[command["findAndModify"]]
    table = quote_table_name(collection.name)
    db = collection.db
    found = _matched(db, table, plan)
    if not found or not found[0][1]:
        return None
    row = found[0][0]
    if plan.add_to_set is not None:
        plan = _with_added(db, table, plan, row)
    if not command.get("new"):
        data = db.execute(f"SELECT data FROM {table} WHERE id = ?", (row,)).fetchone()[0]
    if _apply(db, table, plan, [row]) is None:
        return None
    if command.get("new"):
        data = db.execute(f"SELECT data FROM {table} WHERE id = ?", (row,)).fetchone()[0]
    return {"ok": 1, "value": collection._load(row, data)}
