"""The embedded database's one-statement updates: the same documents and answers as nx-27017's own path."""

from __future__ import annotations

import datetime

import pymongo
import pytest
from bson import Binary, ObjectId
from nx_27017.handler import NeoSQLiteHandler

from st2common.persistence import dbserver, dbwrites
from st2common.persistence.embedded import EmbeddedMongo
from testsupport import free_port

STAMP = datetime.datetime(2026, 11, 21, 19, 0, 0, 123000)
REF = ObjectId()
PRESENT = {"$exists": True, "$ne": None}


def command(body: dict) -> dict:
    return {"request_id": 7, "sections": [("body", {**body, "$db": "st2"})]}


def stored(handler, collection: str) -> list[dict]:
    _, reply = NeoSQLiteHandler.handle_command(handler, command({"find": collection, "filter": {}}))
    return sorted(reply["cursor"]["firstBatch"], key=lambda doc: str(doc["_id"]))


def seed(handler, collection: str, ids: list[ObjectId]) -> None:
    docs = [{"_id": oid, "status": "pending", "revision": 1, "log": [{"status": "pending", "at": STAMP}],
             "nested": {"a": {"b": [1, 2]}}, "tags": ["x"], "n": index} for index, oid in enumerate(ids)]
    handler.handle_insert(command({"insert": collection, "documents": docs}))


UPDATES = [
    # (filter, update, multi): the shapes the services send, and some they never do
    (lambda ids: {"_id": ids[0], "status": "pending"},
     {"$set": {"status": "running", "log": [{"status": "pending", "at": STAMP}, {"status": "running", "at": STAMP}],
               "runner_info": {"pid": 5, "host": "h"}, "started": STAMP}, "$inc": {"revision": 1},
      "$pull": {"_st2_no_such_field": None}}, False),
    (lambda ids: {"_id": ids[1], "status": "running"}, {"$set": {"status": "done"}}, False),  # matches nothing
    (lambda ids: {"_id": {"$in": ids}, "status": "pending"}, {"$set": {"status": "processing"}}, True),
    (lambda ids: {"_id": ids[2]}, {"$unset": {"nested": 1}, "$set": {"note": None, "ratio": 0.5}}, False),
    (lambda ids: {"_id": ids[2], "n": 2}, {"$set": {"status": "processing"}}, False),  # changes nothing
    (lambda ids: {"_id": ids[1]}, {"$pull": {"tags": "x"}}, False),  # a $pull that does something
    (lambda ids: {"_id": ids[1]}, {"$inc": {"status": 1}}, False),  # Mongo refuses it
    (lambda ids: {"_id": ids[0]}, {"$set": {"nested.a.b": [3]}}, False),  # a dotted path: nx-27017's
    # the parent's children, appended by a workflow engine
    (lambda ids: {"_id": ids[0]}, {"$push": {"tags": {"$each": ["y", "z"]}}, "$inc": {"revision": 1}}, False),
    (lambda ids: {"_id": ids[1]}, {"$push": {"children": {"$each": ["a"]}}}, False),  # no such list yet
    (lambda ids: {"_id": ids[2]}, {"$push": {"tags": {"x": STAMP}}}, False),  # a document: nx-27017's
    (lambda ids: {"_id": ids[2]}, {"$push": {"tags": {"$each": ["w"], "$slice": -1}}}, False),  # nx-27017's
    (lambda ids: {"_id": ids[2]}, {"$push": {"status": "w"}}, False),  # not a list: Mongo refuses it
    (lambda ids: {"_id": ids[0]}, {"$push": {"tags": {"$each": []}}}, False),  # changes nothing
    # ObjectIds at every depth (bytes too are stored as an insert stores them, below; nx-27017's own
    # update of a document it rewrites in Python cannot hold them)
    (lambda ids: {"_id": ids[1]}, {"$set": {"ref": REF, "refs": {"ids": [REF, {"at": STAMP, "id": REF}]}}}, False),
    # a parent's children listed by a workflow engine (Access.add_to_set): repeats are not added
    (lambda ids: {"_id": ids[0], "tags": {"$exists": True, "$ne": None}},
     {"$addToSet": {"tags": {"$each": ["x", "q", "r", "q"]}}, "$inc": {"revision": 1}}, False),
    (lambda ids: {"_id": ids[0], "tags": PRESENT}, {"$addToSet": {"tags": {"$each": ["q", "y"]}}}, False),  # nothing new
    (lambda ids: {"_id": ids[1], "nope": PRESENT}, {"$addToSet": {"tags": "a"}}, False),  # matches nothing
    (lambda ids: {"_id": ids[1]}, {"$addToSet": {"children": "b"}}, False),
    (lambda ids: {"_id": ids[2]}, {"$addToSet": {"kids": {"$each": ["a"]}}}, False),  # no such list: nx-27017's
    (lambda ids: {"_id": ids[2]}, {"$addToSet": {"tags": {"$each": [1, "x"]}}}, False),  # not all strings
    (lambda ids: {"_id": ids[2]}, {"$addToSet": {"status": "x"}}, False),  # not a list: Mongo refuses it
    (lambda ids: {"_id": ids[1]}, {"$push": {"children": None}}, False),
    (lambda ids: {"_id": ids[1], "children": PRESENT}, {"$addToSet": {"children": "c"}}, False),  # a null inside
]


@pytest.fixture
def handler(tmp_path):
    handler = dbserver.open_handler(str(tmp_path / "db.sqlite"))
    yield handler
    handler.conn.db.close()


def test_each_update_leaves_the_documents_and_answers_nx27017_would(handler):
    ids = [ObjectId() for _ in range(3)]
    seed(handler, "fast", ids)
    seed(handler, "slow", ids)
    for make_filter, update, multi in UPDATES:
        statement = {"q": make_filter(ids), "u": update, "multi": multi, "upsert": False}
        _, fast = handler.handle_command(command({"update": "fast", "updates": [statement]}))
        _, slow = NeoSQLiteHandler.handle_command(handler, command({"update": "slow", "updates": [statement]}))
        assert (fast["n"], fast["nModified"], fast.get("writeErrors") is None) == (
            slow["n"], slow["nModified"], slow.get("writeErrors") is None), update
        assert stored(handler, "fast") == stored(handler, "slow"), update
    assert stored(handler, "fast")[0]["log"][1]["at"] == STAMP  # a date, not its text


def raw_data(handler, collection: str) -> list[str]:
    """The JSON text each stored document is kept as, in insertion order."""
    return [row[0] for row in handler.conn.db.execute(f'SELECT data FROM "{collection}" ORDER BY id')]


def test_an_insert_stores_the_text_nx27017_stores(handler):
    first, second = ObjectId(), ObjectId()
    documents = [{"_id": first, "at": STAMP, "blob": b"\x00\x01", "uuid": Binary(b"u" * 16, 4), "none": None,
                  "nested": {"ids": [second, {"id": first, "at": [STAMP]}], "f": 0.5, "big": 2 ** 40}},
                 {"n": 1, "ref": second}]
    _, fast = handler.handle_insert(command({"insert": "fast", "documents": [dict(doc) for doc in documents]}))
    _, slow = NeoSQLiteHandler.handle_insert(handler, command({"insert": "slow",
                                                               "documents": [dict(doc) for doc in documents]}))
    assert fast["n"] == slow["n"] == 2
    fast_rows, slow_rows = raw_data(handler, "fast"), raw_data(handler, "slow")
    assert fast_rows[0] == slow_rows[0]
    # (the second was given no _id: each path made its own)
    assert [fast_rows[1].replace(str(doc["_id"]), "ID") for doc in stored(handler, "fast") if "n" in doc] == \
        [slow_rows[1].replace(str(doc["_id"]), "ID") for doc in stored(handler, "slow") if "n" in doc]


def test_a_projection_gives_the_fields_as_stored(handler):
    first = ObjectId()
    document = {"_id": first, "at": STAMP, "blob": b"\x00\x01", "ref": REF, "result": {"big": "x" * 100},
                "nested": {"ids": [REF, {"id": first, "at": [STAMP]}], "f": 0.5}, "tags": ["a", ["b"]]}
    handler.handle_insert(command({"insert": "things", "documents": [dict(document)]}))
    whole = stored(handler, "things")[0]
    for projection, expected in (({"result": 0}, {k: v for k, v in whole.items() if k != "result"}),
                                 ({"nested": 1, "at": 1}, {k: whole[k] for k in ("_id", "nested", "at")})):
        _, reply = handler.handle_command(command({"find": "things", "filter": {}, "projection": projection}))
        assert reply["cursor"]["firstBatch"] == [expected], projection
    assert stored(handler, "things")[0] == whole


@pytest.mark.parametrize("new", [True, False])
def test_find_and_modify_returns_the_document_after_or_before(handler, new):
    ids = [ObjectId() for _ in range(3)]
    seed(handler, "fast", ids)
    seed(handler, "slow", ids)
    body = {"query": {"_id": ids[1], "status": "pending"}, "new": new,
            "update": {"$set": {"status": "running", "at": STAMP}, "$inc": {"revision": 1},
                       # as Access sends it: nx-27017's own SQL path would store the date as text
                       "$pull": {"_st2_no_such_field": None}}}
    _, fast = handler.handle_command(command({"findAndModify": "fast", **body}))
    _, slow = NeoSQLiteHandler.handle_command(handler, command({"findAndModify": "slow", **body}))
    assert fast["value"] == slow["value"]
    assert fast["value"]["status"] == ("running" if new else "pending")
    assert stored(handler, "fast") == stored(handler, "slow")
    # A second claim finds nothing to take
    _, again = handler.handle_command(command({"findAndModify": "fast", **body}))
    assert again["value"] is None


def test_the_simple_shapes_are_written_here_and_the_rest_left_to_nx27017(handler):
    ids = [ObjectId() for _ in range(2)]
    seed(handler, "things", ids)

    def taken(q, u, **extra) -> bool:
        return dbwrites.update(handler, {"update": "things", "updates": [{"q": q, "u": u, **extra}]}, "st2") is not None

    assert taken({"_id": ids[0], "status": "pending"}, {"$set": {"status": "x", "at": STAMP}, "$inc": {"revision": 1}})
    assert taken({"_id": {"$in": ids}}, {"$set": {"status": "y"}, "$unset": {"tags": 1}}, multi=True)
    assert not taken({"_id": ids[0]}, {"$set": {"a.b": 1}})  # dotted path
    assert not taken({"status": "y"}, {"$set": {"status": "z"}})  # no _id
    assert not taken({"_id": ids[0], "n": {"$gt": 0}}, {"$set": {"status": "z"}})  # an operator
    assert taken({"_id": ids[0]}, {"$push": {"tags": "y"}})
    assert taken({"_id": ids[0]}, {"$push": {"tags": {"$each": ["y", 2, STAMP]}}, "$inc": {"revision": 1}})
    assert not taken({"_id": ids[0]}, {"$push": {"tags": {"$each": ["y"], "$position": 0}}})
    assert not taken({"_id": ids[0]}, {"$push": {"status": "y"}})  # not a list
    assert not taken({"_id": ids[0]}, {"$set": {"status": "z"}}, upsert=True)
    assert not taken({"_id": ObjectId()}, {"$set": {"status": "z"}})  # no match: nx-27017 answers
    assert not taken({"_id": {"$in": [ids[0], ObjectId()]}}, {"$set": {"status": "z"}}, multi=True)  # not all
    assert taken({"_id": ids[1]}, {"$set": {"tags": ["a"]}})
    assert taken({"_id": ids[1], "tags": PRESENT}, {"$addToSet": {"tags": {"$each": ["a", "b"]}}, "$inc": {"n": 1}})
    assert taken({"_id": ids[1]}, {"$addToSet": {"tags": "c"}})
    assert not taken({"_id": ids[1]}, {"$addToSet": {"children": "c"}})  # no such list
    assert not taken({"_id": ids[1]}, {"$addToSet": {"tags": 3}})
    assert not taken({"_id": {"$in": ids}}, {"$addToSet": {"tags": "c"}}, multi=True)  # one document only
    assert not taken({"_id": ids[1], "tags": {"$exists": True}}, {"$addToSet": {"tags": "c"}})


def test_a_unique_index_clash_is_a_duplicate_key_error_through_the_server(tmp_path):
    server = EmbeddedMongo(tmp_path / "db.sqlite", free_port(), tmp_path)
    server.start(die_with_parent=True)
    client = pymongo.MongoClient(server.url)
    try:
        things = client.st2.things
        things.create_index("ref", unique=True)
        first, second = things.insert_many([{"ref": "a", "v": 1}, {"ref": "b", "v": 1}]).inserted_ids
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            things.update_one({"_id": second}, {"$set": {"ref": "a"}})
        assert things.find_one({"_id": second})["ref"] == "b"
        # And the writes the services make come back as they were written
        assert things.update_one({"_id": first, "v": 1}, {"$set": {"at": STAMP}, "$inc": {"v": 1}}).modified_count == 1
        doc = things.find_one_and_update({"_id": first}, {"$set": {"done": True}},
                                         return_document=pymongo.ReturnDocument.AFTER)
        assert doc["at"] == STAMP and doc["v"] == 2 and doc["done"] is True
    finally:
        client.close()
        server.stop()


def test_an_insert_is_all_or_left_to_nx27017_which_answers_each_clash(handler):
    first = ObjectId()
    documents = [{"_id": first, "at": STAMP, "blob": b"\x00", "nested": {"ids": [first]}}, {"n": 1}]
    _, reply = handler.handle_insert(command({"insert": "things", "documents": documents}))
    assert reply["ok"] == 1 and reply["n"] == 2
    docs = stored(handler, "things")
    # (ids come back as neosqlite's own here: the wire reply turns them into BSON ones)
    assert len(docs) == 2 and any(doc.get("at") == STAMP and [str(i) for i in doc["nested"]["ids"]] == [str(first)]
                                  for doc in docs)
    # A batch with a clash: nothing of it stays from the one-transaction try, nx-27017 stores what precedes it
    second = ObjectId()
    _, reply = handler.handle_insert(command({"insert": "things", "ordered": True,
                                              "documents": [{"_id": second}, {"_id": first}, {"_id": ObjectId()}]}))
    assert reply["n"] == 1 and [(e["index"], e["code"]) for e in reply["writeErrors"]] == [(1, 11000)]
    assert len(stored(handler, "things")) == 3
    # A collection that does not exist yet is created (by nx-27017)
    _, reply = handler.handle_insert(command({"insert": "new_things", "documents": [{"n": 1}]}))
    assert reply["n"] == 1 and len(stored(handler, "new_things")) == 1
