"""The generic access class against the embedded database, and its events on the real buses."""

from __future__ import annotations

import time

import eventlet
import pytest
from bson import ObjectId

from st2common.exceptions import ConflictError, NotFoundError, ValidationError
from st2common.models.db.action import ActionDB
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.persistence import db as database
from st2common.persistence.access import Access, prefix_filter
from st2common.transport.connection import make_connection
from st2common.transport.consumer import Consumer, Handler, run_in_background
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll predicate until it is truthy or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        eventlet.sleep(interval)


def make_action(name: str, pack: str = "core", **fields) -> ActionDB:
    action = ActionDB(name=name, pack=pack, runner_type={"name": "local-shell-cmd"},
                      parameters={"cmd": {"type": "string", "required": True}}, **fields)
    action.set_identity()
    return action


def make_execution(**fields) -> ExecutionDB:
    values = {"action_ref": "core.local", "action": {"ref": "core.local"}, "runner": {"name": "local-shell-cmd"},
              "parameters": {"cmd": "true"}}
    values.update(fields)
    return ExecutionDB(**values)


# -- reads ------------------------------------------------------------------------------


def test_get_by_id_ref_and_not_found(db):
    # Given a stored action
    access = Access(ActionDB)
    stored = access.add_or_update(make_action("local"))
    # Then it is found by id (object or string), by ref, and by either
    assert access.get_by_id(stored.pk).ref == "core.local"
    assert access.get_by_id(str(stored.pk)).pk == stored.pk
    assert access.get_by_ref("core.local").pk == stored.pk
    assert access.get_by_ref_or_id(str(stored.pk)).pk == stored.pk
    assert access.get_by_ref_or_id("core.local").pk == stored.pk
    assert access.get(pack="core", name="local").pk == stored.pk
    assert access.get(pack="nope") is None
    # And a missing or malformed id names what was asked for
    for missing in (ObjectId(), "not-an-id", "core.nope"):
        with pytest.raises(NotFoundError) as caught:
            access.get_by_ref_or_id(str(missing))
        assert caught.value.ref == str(missing) and caught.value.resource == "action"


def test_query_filters_sort_limit_offset_and_count(db):
    # Given 30 actions in three packs
    access = Access(ActionDB)
    for i in range(30):
        access.add_or_update(make_action(f"a{i:02d}", pack=("core", "linux", "examples")[i % 3]))
    # When a filtered, sorted page is asked for
    page = access.query({"pack": "linux"}, order_by=["-name"], offset=2, limit=4)
    # Then it is the right slice, and the total counts the whole filter
    linux = sorted((f"a{i:02d}" for i in range(30) if i % 3 == 1), reverse=True)
    assert [a.name for a in page] == linux[2:6]
    assert access.count({"pack": "linux"}) == 10
    assert access.count() == 30
    assert access.count(raw=prefix_filter("ref", "core.a0")) == len([i for i in range(10) if i % 3 == 0])
    assert [a.name for a in access.query({"name__in": ["a01", "a05"]}, order_by=["name"])] == ["a01", "a05"]


# -- writes -----------------------------------------------------------------------------


def test_conflict_names_the_existing_record(db):
    access = Access(ActionDB)
    first = access.add_or_update(make_action("local"))
    other = access.add_or_update(make_action("remote"))
    # A new record with the same ref
    with pytest.raises(ConflictError) as caught:
        access.add_or_update(make_action("local"))
    assert caught.value.conflict_id == str(first.pk)
    # An existing record renamed onto it
    other.name = "local"
    other.set_identity()
    with pytest.raises(ConflictError) as caught:
        access.add_or_update(other)
    assert caught.value.conflict_id == str(first.pk)
    assert access.count() == 2


def test_invalid_document_names_the_field(db):
    access = Access(ExecutionDB)
    with pytest.raises(ValidationError) as caught:
        access.add_or_update(ExecutionDB(action={"ref": "x"}, runner={"name": "y"}))
    assert caught.value.field == "action_ref"
    with pytest.raises(ValidationError):
        access.insert_many([make_execution(), make_execution(status="bogus")])
    assert access.count() == 0


def test_update_if_compare_and_set(db):
    access = Access(ExecutionDB)
    execution = access.add_or_update(make_execution(status="scheduled"))
    moved = access.update_if(execution.pk, {"status": "scheduled"}, {"status": "running"})
    assert moved.status == "running" and moved.revision == execution.revision + 1
    assert access.update_if(execution.pk, {"status": "scheduled"}, {"status": "failed"}) is None
    assert access.update_if("not-an-id", {}, {"status": "failed"}) is None
    assert access.get_by_id(execution.pk).status == "running"


def test_two_concurrent_writers_exactly_one_wins(db):
    # Given a scheduled execution and two independent connections racing to claim it
    access = Access(ExecutionDB)
    for round_ in range(10):
        execution = access.add_or_update(make_execution(status="scheduled"))
        start = eventlet.event.Event()

        def claim(worker: str):
            start.wait()
            return access.update_if(execution.pk, {"status": "scheduled"},
                                    {"status": "running", "runner_info": {"worker_id": worker}})

        pool = eventlet.GreenPool()
        results = [pool.spawn(claim, f"w{i}") for i in range(2)]
        eventlet.sleep(0)
        start.send()
        winners = [r.wait() for r in results]
        # Then exactly one claim wins, and the record names the winner
        won = [w for w in winners if w is not None]
        assert len(won) == 1, f"round {round_}: {len(won)} winners"
        assert access.get_by_id(execution.pk).runner_info == won[0].runner_info


def test_append_under_contention_loses_nothing(db):
    access = Access(ExecutionDB)
    execution = access.add_or_update(make_execution())
    pool = eventlet.GreenPool()

    def writer(n: int):
        for k in range(8):
            access.append(execution.pk, "log", [{"status": f"w{n}-{k}", "timestamp": utcnow()}])

    for n in range(6):
        pool.spawn(writer, n)
    pool.waitall()
    log = access.get_by_id(execution.pk).log
    assert sorted(e["status"] for e in log) == sorted(f"w{n}-{k}" for n in range(6) for k in range(8))
    # append honours an expectation that no longer holds
    assert access.append(execution.pk, "log", [{"status": "late"}], expected={"status": "running"}) is None


def test_save_after_load_keeps_a_concurrent_append_detectable(db):
    access = Access(ExecutionDB)
    execution = access.add_or_update(make_execution())
    loaded = access.get_by_id(execution.pk)
    loaded.context = {"user": "stanley"}
    access.add_or_update(loaded)
    # The save bumped the revision, so a compare-and-set on the old one loses.
    assert access.update_if(execution.pk, {"revision": execution.revision}, {"log": []}) is None


def test_delete_and_delete_by(db):
    access = Access(ActionDB)
    kept = access.add_or_update(make_action("kept", pack="linux"))
    gone = access.add_or_update(make_action("gone"))
    access.delete(gone)
    with pytest.raises(NotFoundError):
        access.get_by_id(gone.pk)
    for i in range(3):
        access.add_or_update(make_action(f"x{i}"))
    assert access.delete_by({"ref__startswith": "core.x"}) == 3
    assert [a.pk for a in access.query()] == [kept.pk]


def test_escaped_keys_round_trip(db):
    # Given keys with "." and "$", at every depth, in dict and dynamic fields
    access = Access(ExecutionDB)
    parameters = {"a.b": 1, "$c": {"d.e": [{"$f": "g.h"}]}, "plain": "$.x"}
    result = {"k.y": [{"$z": {"w.v": 1}}], "list": [1, {"a.b": None}]}
    execution = access.add_or_update(make_execution(parameters=parameters, result=result, context={"x.y": 1}))
    # Then they come back as written, and nothing in the stored document has a dotted or $ key
    loaded = access.get_by_id(execution.pk)
    assert loaded.parameters == parameters and loaded.result == result and loaded.context == {"x.y": 1}
    raw = ExecutionDB._get_collection().find_one({"_id": execution.pk})

    def keys(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    assert not [k for k in keys(raw) if "." in k or k.startswith("$")]
    # Through a conditional update as well
    updated = access.update_if(execution.pk, {}, {"result": {"x.y": {"$z": 2}}, "parameters": {"p.q": 1}})
    assert updated.result == {"x.y": {"$z": 2}} and updated.parameters == {"p.q": 1}
    raw = ExecutionDB._get_collection().find_one({"_id": execution.pk})
    assert not [k for k in keys(raw) if "." in k or k.startswith("$")]
    access.update_if(execution.pk, {}, {"parameters": parameters})
    # And through an in-place change saved with add_or_update (mongoengine would
    # otherwise save parameters["n.k"] as the path parameters.n.k)
    loaded = access.get_by_id(execution.pk)
    loaded.parameters["n.k"] = "v"
    loaded.result["x.y"]["$w"] = 3
    loaded.log.append({"status": "x"})
    access.add_or_update(loaded)
    again = access.get_by_id(execution.pk)
    assert again.parameters == {**parameters, "n.k": "v"}
    assert again.result == {"x.y": {"$z": 2, "$w": 3}}
    assert again.log == [{"status": "x"}]


def test_in_place_change_to_a_list_item_is_saved(db):
    # mongoengine saves log[0]["status"] = ... as $set {"log.0.status"}, which
    # nx-27017 ignores; our list fields are rewritten whole instead.
    access = Access(ExecutionDB)
    execution = access.add_or_update(make_execution(log=[{"status": "requested"}], children=["a", "b"]))
    loaded = access.get_by_id(execution.pk)
    loaded.log[0]["status"] = "scheduled"
    loaded.children[1] = "c"
    access.add_or_update(loaded)
    again = access.get_by_id(execution.pk)
    assert again.log == [{"status": "scheduled"}] and again.children == ["a", "c"]


def test_a_document_inserted_without_reload_saves_only_later_changes(db):
    # Given executions inserted in bulk and kept (not read back)
    access = Access(ExecutionDB)
    first, second = access.insert_many([make_execution(context={"user": "a"}), make_execution()], reload=False)
    # Then they carry no change marks from before the insert
    assert first._get_changed_fields() == [] and second._get_changed_fields() == []
    # And a change made afterwards, nested or not, is what the next save writes
    access.update_if(first.pk, {}, {"status": "scheduled"}, publish=False)
    first.context["user"] = "b"
    assert first._get_changed_fields() == ["context"]
    access.add_or_update(first, publish=False)
    again = access.get_by_id(first.pk)
    # (the status written in between is not overwritten by the save of the stale copy)
    assert again.context == {"user": "b"} and again.status == "scheduled"


def test_five_megabyte_documents(db):
    access = Access(ExecutionDB)
    big = "x" * (5 * 1024 * 1024)
    execution = access.add_or_update(make_execution(result={"stdout": big}))
    assert access.get_by_id(execution.pk).result["stdout"] == big
    updated = access.update_if(execution.pk, {"status": "requested"}, {"result": {"stdout": big + "y"}})
    assert len(access.get_by_id(updated.pk).result["stdout"]) == len(big) + 1
    assert access.query(exclude=["result"])[0].result is None


# -- events -----------------------------------------------------------------------------


class Recorder(Handler):
    """Keeps every body that arrives on its queue."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.bodies: list[dict] = []

    def handle(self, body: dict) -> None:
        self.bodies.append(body)


@pytest.fixture
def events(bus_settings):
    """(access to executions publishing on the test's bus, {event: Recorder}) with the db connected."""
    client = database.connect(bus_settings)
    topology = Topology(bus_settings.messaging.prefix)
    publisher = Publisher(make_connection(bus_settings.messaging), topology)
    recorders = {event: Recorder(topology.broadcast_queue("execution", routing_key=event))
                 for event in ("create", "update", "delete")}
    consumer = Consumer(make_connection(bus_settings.messaging), publisher, recorders.values())
    thread = run_in_background(consumer)
    assert consumer.wait_ready(10)
    yield Access(ExecutionDB, publisher), recorders
    consumer.stop()
    thread.wait()
    publisher.close()
    client.drop_database(bus_settings.database.db_name)
    database.disconnect()


def test_writes_publish_create_update_delete(events):
    # Given an access class with a publisher and listeners on the execution exchange
    access, recorders = events
    # When an execution is created, updated twice and deleted
    execution = access.add_or_update(make_execution())
    execution.context = {"user": "stanley"}
    access.add_or_update(execution)
    access.update_if(execution.pk, {"status": "requested"}, {"status": "scheduled"})
    access.append(execution.pk, "log", [{"status": "x"}], publish=True)
    access.delete(execution)
    # Then each event arrives, routed by its kind, carrying only the id
    oid = str(execution.pk)
    assert wait_for(lambda: len(recorders["delete"].bodies) == 1)
    assert wait_for(lambda: len(recorders["update"].bodies) == 3)
    assert recorders["create"].bodies == [{"id": oid}]
    assert recorders["update"].bodies == [{"id": oid}] * 3
    assert recorders["delete"].bodies == [{"id": oid}]


def test_failed_and_silent_writes_publish_nothing(events):
    access, recorders = events
    execution = access.add_or_update(make_execution(), publish=False)
    access.insert_many([make_execution() for _ in range(3)])
    assert access.update_if(execution.pk, {"status": "running"}, {"status": "failed"}) is None
    access.delete_by({"status": "requested"})
    # A marker write proves the bus delivered everything published before it.
    marker = access.add_or_update(make_execution())
    assert wait_for(lambda: recorders["create"].bodies)
    assert recorders["create"].bodies == [{"id": str(marker.pk)}]
    assert recorders["update"].bodies == [] and recorders["delete"].bodies == []


def test_get_fields_loads_only_the_named_fields_of_one_document(db):
    # Given a stored execution
    executions = Access(ExecutionDB)
    stored = executions.add_or_update(ExecutionDB(status="succeeded", action_ref="core.noop", action={"ref": "core.noop"},
                                                  runner={"name": "noop"}, result={"a.b": 1}, context={"user": "x"}))
    # When only some of its fields are asked for
    partial = executions.get_fields(stored.pk, ("id", "status", "result"))
    # Then those are loaded (keys unescaped), the others are left at their defaults
    assert partial.pk == stored.pk and partial.status == "succeeded" and partial.result == {"a.b": 1}
    assert partial.action_ref is None and not partial.context
    # And an unknown or malformed id is None
    assert executions.get_fields("0" * 24, ("status",)) is None
    assert executions.get_fields("nope", ("status",)) is None
