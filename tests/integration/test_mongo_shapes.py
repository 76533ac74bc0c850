"""Every query and update shape the project uses, against the embedded nx-27017 server.

nx-27017 is not MongoDB (docs/mongodb-compat.md). This file is the tripwire:
a shape a service starts using goes into the tables below, so that if the
embedded server gets it wrong the suite says so at once. Each query shape runs
through Access.query and Access.count and is checked against the same
predicate evaluated in Python over the stored records.

Gaps from DESIGN.md confirmed on nx-27017 0.8.1 while writing this (the
shapes here avoid them, Access rewrites the ones it can):
- a compiled pattern (mongoengine __startswith/__contains/__iexact/__regex)
  errors in find, counts 0, and fails a delete: Access rewrites it to $regex;
- equality on a whole embedded document is rejected;
- $push of a dict stores a JSON string (and stringifies the list's other items);
- $addToSet on a missing field does nothing;
- equality through an indexed array finds nothing (also arrays of strings);
- a projection on a nested field comes back as a flat "a.b" key;
- a second server refuses to start without its own --pid-file/--log-file.
Not reproduced on 0.8.1: $all and $size work, bytes work in updates.
New gaps found here are listed in docs/mongodb-compat.md.
"""

from __future__ import annotations

import datetime
import time

import mongoengine as me
import pytest

from st2common import statuses
from st2common.exceptions import ConflictError
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access, prefix_filter

BASE = datetime.datetime(2026, 11, 21, 8, 0, tzinfo=datetime.timezone.utc)
STATUSES = (statuses.REQUESTED, statuses.SCHEDULED, statuses.RUNNING, statuses.SUCCEEDED)
PACKS = ("core", "linux", "core_x")


def _record(i: int) -> dict:
    """The plain data of the i-th stored execution (fresh on every call)."""
    record = {
        "status": STATUSES[i % 4],
        "action_ref": f"{PACKS[i % 3]}.act{i}",
        "action": {"ref": f"{PACKS[i % 3]}.act{i}", "pack": PACKS[i % 3]},
        "runner": {"name": "local-shell-cmd"},
        "parameters": {"cmd": f"echo {i}"},
        "context": {"user": "stanley" if i % 2 else "admin"},
        "start_timestamp": BASE + datetime.timedelta(minutes=i),
    }
    if record["status"] == statuses.RUNNING:
        record["runner_info"] = {"worker_id": f"w{i % 3}", "hostname": "h1", "pid": 100 + i}
    if i % 5 == 0:
        record["delay"] = 1000 * i
    if i % 3 == 1:
        record["parent"] = "p1"
    if i in (4, 9):
        record["trigger_instance"] = {"id": "ti-1"}
    return record


@pytest.fixture
def stored(db):
    """Twelve executions written by insert_many; returns (access, [(record, doc)])."""
    access = Access(ExecutionDB)
    records = [_record(i) for i in range(12)]
    docs = access.insert_many([ExecutionDB(**record) for record in records])
    return access, list(zip(records, docs))


def _get(record: dict, path: str):
    value = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# name -> (mongoengine filters, raw filter, predicate over the record's plain data)
QUERY_SHAPES = {
    "equality": ({"status": "running"}, None, lambda r: r["status"] == "running"),
    "$in": ({"status__in": ["requested", "scheduled"]}, None,
            lambda r: r["status"] in ("requested", "scheduled")),
    "$nin": ({"status__nin": ["succeeded"]}, None, lambda r: r["status"] != "succeeded"),
    "$ne": ({"status__ne": "succeeded"}, None, lambda r: r["status"] != "succeeded"),
    "$gt date": ({"start_timestamp__gt": BASE + datetime.timedelta(minutes=5)}, None,
                 lambda r: r["start_timestamp"] > BASE + datetime.timedelta(minutes=5)),
    "$gte/$lt date range": (
        {"start_timestamp__gte": BASE + datetime.timedelta(minutes=2),
         "start_timestamp__lt": BASE + datetime.timedelta(minutes=7)}, None,
        lambda r: BASE + datetime.timedelta(minutes=2) <= r["start_timestamp"] < BASE + datetime.timedelta(minutes=7)),
    "$lt date raw": ({}, {"start_timestamp": {"$lt": BASE + datetime.timedelta(minutes=3)}},
                     lambda r: r["start_timestamp"] < BASE + datetime.timedelta(minutes=3)),
    "dotted nested (indexed)": ({"context__user": "stanley"}, None, lambda r: r["context"]["user"] == "stanley"),
    "dotted nested raw (indexed)": ({}, {"runner_info.worker_id": "w1"},
                                    lambda r: _get(r, "runner_info.worker_id") == "w1"),
    "dotted nested (not indexed)": ({}, {"parameters.cmd": "echo 3"}, lambda r: r["parameters"]["cmd"] == "echo 3"),
    "dotted $in": ({}, {"runner_info.worker_id": {"$in": ["w0", "w2"]}},
                   lambda r: _get(r, "runner_info.worker_id") in ("w0", "w2")),
    "dotted link id": ({}, {"trigger_instance.id": "ti-1"}, lambda r: _get(r, "trigger_instance.id") == "ti-1"),
    "prefix via $regex string": ({}, prefix_filter("action_ref", "core."),
                                 lambda r: r["action_ref"].startswith("core.")),
    "prefix with regex metacharacters": ({}, prefix_filter("action_ref", "core_x."),
                                         lambda r: r["action_ref"].startswith("core_x.")),
    "mongoengine __startswith (rewritten)": ({"action_ref__startswith": "linux."}, None,
                                             lambda r: r["action_ref"].startswith("linux.")),
    "mongoengine __icontains (rewritten)": ({"action_ref__icontains": "ACT1"}, None,
                                            lambda r: "act1" in r["action_ref"]),
    "$or": ({}, {"$or": [{"status": "running"}, {"context.user": "admin"}]},
            lambda r: r["status"] == "running" or r["context"]["user"] == "admin"),
    "$or of prefixes": ({}, {"$or": [prefix_filter("action_ref", "linux."), {"parent": "p1"}]},
                        lambda r: r["action_ref"].startswith("linux.") or r.get("parent") == "p1"),
    "$exists true": ({}, {"delay": {"$exists": True}}, lambda r: "delay" in r),
    "$exists false": ({}, {"parent": {"$exists": False}}, lambda r: "parent" not in r),
    "null equality (missing field)": ({"parent": None}, None, lambda r: r.get("parent") is None),
    "filters and raw together": ({"status": "running"}, {"runner_info.worker_id": {"$ne": "w0"}},
                                 lambda r: r["status"] == "running" and _get(r, "runner_info.worker_id") != "w0"),
    "$gt int": ({"delay__gt": 0}, None, lambda r: r.get("delay", 0) > 0),
}


@pytest.mark.parametrize("shape", list(QUERY_SHAPES))
def test_query_shape_matches_and_counts(stored, shape):
    # Given twelve stored executions
    access, pairs = stored
    filters, raw, predicate = QUERY_SHAPES[shape]
    expected = sorted(str(doc.pk) for record, doc in pairs if predicate(record))
    assert expected, "every shape must match something, or it proves nothing"
    # When the shape is queried and counted
    found = sorted(str(doc.pk) for doc in access.query(filters, raw))
    counted = access.count(filters, raw)
    # Then both agree with the same predicate in Python
    assert found == expected
    assert counted == len(expected)


def test_id_in_queries_and_counts(stored):
    # nx-27017's count_documents returns 0 for ObjectId filters: Access counts ids instead.
    access, pairs = stored
    wanted = [doc.pk for _, doc in pairs[:5]]
    assert sorted(d.pk for d in access.query({"id__in": wanted})) == sorted(wanted)
    assert access.count({"id__in": wanted}) == 5
    assert access.count({"id": wanted[0]}) == 1


def test_sort_skip_limit(stored):
    access, pairs = stored
    newest_first = [doc.pk for _, doc in sorted(pairs, key=lambda p: p[0]["start_timestamp"], reverse=True)]
    page = access.query(order_by=["-start_timestamp"], offset=2, limit=3)
    assert [d.pk for d in page] == newest_first[2:5]
    # Two sort keys, one of them descending.
    by_status = sorted(pairs, key=lambda p: (p[0]["status"], -p[0]["start_timestamp"].timestamp()))
    assert [d.pk for d in access.query(order_by=["status", "-start_timestamp"])] == [d.pk for _, d in by_status]
    # Past the end is empty, not an error.
    assert access.query(order_by=["-start_timestamp"], offset=50, limit=10) == []


def test_top_level_projection(stored):
    access, _ = stored
    docs = access.query({"status": "running"}, only=["action.pack", "status"])
    assert docs and all(d.action["pack"] in PACKS and d.status == "running" for d in docs)
    assert all(not d.parameters for d in docs)


def test_conditional_modify_set_unset_inc(stored):
    # Given a scheduled execution
    access, pairs = stored
    record, doc = next((r, d) for r, d in pairs if r["status"] == "scheduled" and "delay" in r)
    # When set/unset/inc are applied on the expected old status
    updated = access.update_if(doc.pk, {"status": "scheduled"},
                               {"status": "running", "delay": None, "runner_info": {"worker_id": "w9"}})
    # Then they all land in one write and the revision is bumped
    assert updated.status == "running" and updated.delay is None and updated.revision == doc.revision + 1
    assert updated.runner_info == {"worker_id": "w9"}
    # A dotted $set inside a dict field.
    updated = access.update_if(doc.pk, {"status": "running"}, {"runner_info__pid": 42})
    assert updated.runner_info == {"worker_id": "w9", "pid": 42}
    # A stale expectation changes nothing.
    assert access.update_if(doc.pk, {"status": "scheduled"}, {"status": "failed"}) is None
    assert access.get_by_id(doc.pk).status == "running"
    # $inc on its own, as mongoengine's modify issues it.
    bumped = ExecutionDB.objects(id=doc.pk, status="running").modify(new=True, inc__result_size=5)
    assert bumped.result_size == 5


def test_list_of_dicts_rewritten_with_set(stored):
    access, pairs = stored
    doc = pairs[0][1]
    entries = [{"status": "requested", "timestamp": utcnow()}, {"status": "scheduled", "timestamp": utcnow()}]
    access.update_if(doc.pk, {}, {"log": entries})
    again = access.append(doc.pk, "log", [{"status": "running", "timestamp": utcnow()}])
    assert [e["status"] for e in again.log] == ["requested", "scheduled", "running"]
    assert all(isinstance(e, dict) for e in access.get_by_id(doc.pk).log)


def test_delete_by_prefix(stored):
    access, pairs = stored
    expected = sum(1 for r, _ in pairs if r["action_ref"].startswith("core."))
    assert access.delete_by({"action_ref__startswith": "core."}) == expected
    assert access.count(raw=prefix_filter("action_ref", "core.")) == 0
    assert access.count() == len(pairs) - expected


def test_insert_many_and_unique_index(db):
    class UniqueThing(me.Document):
        name = me.StringField(required=True, unique=True)
        meta = {"collection": "shape_unique_thing"}

    access = Access(UniqueThing)
    inserted = access.insert_many([UniqueThing(name=f"n{i}") for i in range(50)])
    assert len(inserted) == 50 and all(d.pk for d in inserted)
    assert access.count() == 50
    with pytest.raises(ConflictError) as caught:
        access.add_or_update(UniqueThing(name="n7"))
    assert caught.value.conflict_id == str(access.get(name="n7").pk)
    # Declaring the indexes again is harmless.
    UniqueThing.ensure_indexes()
    UniqueThing.ensure_indexes()


def test_ttl_index_expires_old_documents(db):
    class Expiring(me.Document):
        created = me.DateTimeField(required=True)
        meta = {"collection": "shape_expiring", "indexes": [{"fields": ["created"], "expireAfterSeconds": 60}]}

    Expiring.ensure_indexes()
    info = Expiring._get_collection().index_information()
    assert any(spec.get("expireAfterSeconds") == 60 for spec in info.values())
    access = Access(Expiring)
    access.insert_many([Expiring(created=utcnow() - datetime.timedelta(hours=1)), Expiring(created=utcnow())])
    deadline = time.monotonic() + 10
    while access.count() != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert access.count() == 1
    assert access.query()[0].created > utcnow() - datetime.timedelta(minutes=1)


def test_dates_written_by_updates_stay_dates(stored):
    # nx-27017 stores a datetime given straight to $set as a string; Access's
    # updates (update_if, and saving a loaded document) must store dates.
    access, pairs = stored
    doc = pairs[1][1]
    ended = BASE + datetime.timedelta(hours=1)
    access.update_if(doc.pk, {"status": doc.status}, {"end_timestamp": ended})
    loaded = access.get_by_id(doc.pk)
    loaded.start_timestamp = BASE - datetime.timedelta(hours=1)
    access.add_or_update(loaded)
    raw = ExecutionDB._get_collection().find_one({"_id": doc.pk})
    assert raw["end_timestamp"] == ended and raw["start_timestamp"] == BASE - datetime.timedelta(hours=1)
    assert [d.pk for d in access.query({"end_timestamp__gt": BASE})] == [doc.pk]
    assert access.query(order_by=["start_timestamp"], limit=1)[0].pk == doc.pk
