"""The rules engine's batched status writes, and the dispatch message that carries the instance whole.

Same engine as test_rules_engine (its fixtures, both buses, the embedded
database). What is checked here is what the speed work must not change: the
instance the engine builds from a message is the stored one, status writes of
instances handled together still let exactly one engine have each, and an
instance whose claim could not be told apart is finished by the sweep.
"""

from __future__ import annotations

import datetime

import eventlet
from bson import ObjectId
from test_rules_engine import ALERT, enforcements_of, engine, execution_of, start_engine  # noqa: F401 (fixtures)
from testsupport import freed_at_once

from st2common import statuses
from st2common.models.api.trigger import trigger_instance_to_api
from st2common.models.db.base import utcnow
from st2common.models.db.trace import TraceDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import triggerinstances
from st2rulesengine.batches import StatusWriter


def stored_pending(payload: dict, **fields) -> TriggerInstanceDB:
    """An instance stored pending as dispatch stores it, with no message sent (nothing consumes it)."""
    instance = TriggerInstanceDB(id=ObjectId(), trigger=ALERT, payload=payload, **fields)
    return Access(TriggerInstanceDB).insert_many([instance], reload=False)[0]


def status_of(instance: TriggerInstanceDB) -> str:
    return Access(TriggerInstanceDB).get_by_id(instance.pk).status


def together(call, instances: list[TriggerInstanceDB]) -> list:
    """call(instance) for each instance in green threads of their own, at the same moment; the results."""
    pool = eventlet.GreenPool()
    threads = [pool.spawn(call, instance) for instance in instances]
    return [thread.wait() for thread in threads]


def test_an_instance_built_from_its_message_is_the_stored_one(engine):
    # Given instances with payloads that survive JSON: keys with "." and "$" (and one with an escape
    # character, which the database turns into "."), nesting, numbers, text, and a caller's
    # occurrence time with microseconds
    payloads = [{"host": "web1", "a.b": {"$c": [1, 2.5, None, True, "é"]}, "n": -0.0}, {},
                {"deep": [[{"x": 1}], []], "big": 2 ** 62}, {"x\uff0ey": 1}]
    when = datetime.datetime(2026, 11, 21, 7, 1, 3, 123456, tzinfo=datetime.timezone.utc)
    for payload in payloads:
        instance = stored_pending(payload, occurrence_time=when)
        trace = TraceDB(id=instance.pk, trace_tag="t")
        # When its message is built and read back by the engine
        message = triggerinstances.dispatch_message(instance, trace)
        built = triggerinstances.instance_from_message(message)
        # Then it carries the instance, the same as the engine would read it from the database
        assert built is not None, payload
        stored = Access(TriggerInstanceDB).get_by_id(instance.pk)
        assert trigger_instance_to_api(built) == trigger_instance_to_api(stored)
        assert built.status == statuses.TRIGGER_INSTANCE_PENDING


def test_a_payload_json_would_change_is_read_from_the_database(engine):
    engine.add_rule("any", {"cmd": "echo {{ trigger.host }}"})
    # Given payloads that would come back from JSON unlike from the database (a date, a tuple),
    # and one too big to carry
    odd = [{"host": "a", "at": utcnow()}, {"host": "c", "t": (1, 2)},
           {"host": "d", "blob": "x" * (triggerinstances.INLINE_PAYLOAD_LIMIT + 1)}]
    for payload in odd:
        instance = stored_pending(payload)
        # Then their messages carry only the id and trace
        message = triggerinstances.dispatch_message(instance, TraceDB(id=instance.pk, trace_tag="t"))
        assert set(message) == {"id", "trace_id", "trace_tag"}
        assert triggerinstances.instance_from_message(message) is None
    # And when they are dispatched, each is enforced with what the database holds
    for payload in odd:
        instance = engine.processed(engine.dispatch(payload, validate=False))
        [enforcement] = enforcements_of(instance)
        assert execution_of(enforcement).parameters == {"cmd": f"echo {payload['host']}"}


def test_claims_of_instances_handled_together_go_in_one_write_and_one_engine_wins_each(engine):
    writer = StatusWriter()
    # Given three pending instances, the first handled twice at the same moment (a duplicate message)
    instances = [stored_pending({"host": f"h{i}"}) for i in range(3)]
    first_again = Access(TriggerInstanceDB).get_by_id(instances[0].pk)
    # When all four claims are made together
    results = together(writer.claim, [*instances, first_again])
    # Then this engine has each instance once
    assert results == [True, True, True, False]
    assert [status_of(i) for i in instances] == [statuses.TRIGGER_INSTANCE_PROCESSING] * 3
    # And claimed again (a second engine), none is won
    assert together(writer.claim, [Access(TriggerInstanceDB).get_by_id(i.pk) for i in instances]) == [False] * 3
    # When they are finished together, Then all are processed
    assert together(writer.finish, instances) == [True] * 3
    assert [status_of(i) for i in instances] == [statuses.TRIGGER_INSTANCE_PROCESSED] * 3


def test_instances_no_rule_matches_are_processed_in_one_write(engine):
    writer = StatusWriter()
    # Given two pending instances and one another engine has claimed
    pending = [stored_pending({"host": f"h{i}"}) for i in range(2)]
    taken = stored_pending({"host": "taken"}, status=statuses.TRIGGER_INSTANCE_PROCESSING)
    # When all three are skipped together (they matched nothing here)
    together(writer.skip, [*pending, Access(TriggerInstanceDB).get_by_id(taken.pk)])
    # Then the pending ones are processed and the claimed one is left to its engine
    assert [status_of(i) for i in pending] == [statuses.TRIGGER_INSTANCE_PROCESSED] * 2
    assert status_of(taken) == statuses.TRIGGER_INSTANCE_PROCESSING


def test_claims_that_cannot_be_told_apart_are_enforced_by_the_sweep_once(engine):
    engine.add_rule("on_alert", {"cmd": "echo {{ trigger.host }}"})
    rules_engine = engine.service.engine
    # Given two pending instances, one of which another engine claims just before this one's batch
    mine = stored_pending({"host": "mine"}, occurrence_time=utcnow() - datetime.timedelta(minutes=1))
    theirs = stored_pending({"host": "theirs"}, occurrence_time=utcnow() - datetime.timedelta(minutes=1))
    loaded = [Access(TriggerInstanceDB).get_by_id(i.pk) for i in (mine, theirs)]
    assert triggerinstances.update_instance_status(theirs, statuses.TRIGGER_INSTANCE_PROCESSING) is not None
    # When this engine claims both together, Then its write moved one of them, it cannot tell which,
    # and it enforces neither
    assert together(rules_engine.statuses.claim, loaded) == [None, None]
    assert enforcements_of(mine) == [] and enforcements_of(theirs) == []
    assert status_of(mine) == statuses.TRIGGER_INSTANCE_PROCESSING
    # When the sweep finds them left processing, Then each is enforced exactly once
    recovered = engine.service.sweeper.recover_processing(stuck_after=0)
    assert sorted(recovered) == sorted([str(mine.pk), str(theirs.pk)])
    for instance, host in ((mine, "mine"), (theirs, "theirs")):
        assert status_of(instance) == statuses.TRIGGER_INSTANCE_PROCESSED
        [enforcement] = enforcements_of(instance)
        assert execution_of(enforcement).parameters == {"cmd": f"echo {host}"}


def test_an_instance_built_from_its_message_behaves_as_a_constructed_document(engine):
    # Given the message of a stored pending instance
    instance = stored_pending({"host": "web1", "a.b": {"$c": [1]}})
    message = triggerinstances.dispatch_message(instance, TraceDB(id=instance.pk, trace_tag="t"))
    # When the engine builds the instance from it (past mongoengine's constructor)
    built = triggerinstances.instance_from_message(message)
    constructed = TriggerInstanceDB(id=instance.pk, trigger=built.trigger, payload=message["payload"],
                                    occurrence_time=built.occurrence_time, status=built.status)
    # Then it is the document the constructor makes: the same values, new, unmarked, valid
    assert built._data == constructed._data and list(built._data) == list(constructed._data)
    assert (built._created, built._initialised) == (constructed._created, constructed._initialised) == (True, True)
    assert not hasattr(built, "_changed_fields") and not hasattr(constructed, "_changed_fields")
    assert built.get_status_display() == statuses.TRIGGER_INSTANCE_PENDING
    built.validate()
    # And its payload is its own (the message's is not shared)
    assert built.payload == message["payload"] and built._data["payload"] is not message["payload"]
    # And its status moves as a loaded instance's does
    assert triggerinstances.update_instance_status(built, statuses.TRIGGER_INSTANCE_PROCESSING) is not None
    assert status_of(instance) == statuses.TRIGGER_INSTANCE_PROCESSING


def test_the_trace_a_message_names_is_built_without_a_read(engine):
    # Given a dispatch message naming its trace
    instance = stored_pending({"host": "web1"})
    trace_id = ObjectId()
    message = triggerinstances.dispatch_message(instance, TraceDB(id=trace_id, trace_tag="tag-1"))
    # When the trace is built from it, Then it is the trace the constructor makes with that id and tag
    trace = triggerinstances.trace_from_message(message)
    assert isinstance(trace, TraceDB) and (trace.pk, trace.trace_tag) == (trace_id, "tag-1")
    assert trace._created and trace.start_timestamp is not None
    trace.validate()
    # And a message naming no trace, or a malformed one, names none
    for broken in ({}, {"trace_id": str(trace_id)}, {"trace_id": "nope", "trace_tag": "t"},
                   {"trace_id": str(trace_id), "trace_tag": ""}, {"trace_id": str(trace_id), "trace_tag": 3}):
        assert triggerinstances.trace_from_message({**message, **{"trace_id": None, "trace_tag": None}, **broken}) \
            is None


def test_an_instance_built_from_its_message_is_freed_once_dropped(engine):
    # Given an instance built from its message, its status display asked for
    instance = stored_pending({"host": "web1"})
    message = triggerinstances.dispatch_message(instance, TraceDB(id=instance.pk, trace_tag="t"))
    assert triggerinstances.instance_from_message(message).get_status_display() == statuses.TRIGGER_INSTANCE_PENDING
    # When the engine drops it, Then it is gone at once: no reference cycle waits for the garbage collector
    assert freed_at_once(lambda: triggerinstances.instance_from_message(message))


def test_the_engine_holds_its_prefetch_and_writes_a_quarter_of_it_at_a_time(start_engine):
    # Given an engine that may hold 8 instances at once
    engine = start_engine({"ST2_RULESENGINE__PREFETCH_COUNT": "8"})
    engine.add_rule("on_alert", {"cmd": "echo {{ trigger.host }}"})
    service = engine.service
    assert service.consumer.pool_size == 8
    assert {service.engine.statuses._claim.batch_size, service.engine.loader._load.batch_size,
            service.engine.enforcer.writer._store.batch_size, service.engine.enforcer.requests._request.batch_size} == {2}
    # When 30 instances come at once, Then each is enforced once, with its own execution
    instances = [engine.dispatch({"host": f"h{i}"}) for i in range(30)]
    hosts = []
    for instance in instances:
        assert engine.processed(instance).status == statuses.TRIGGER_INSTANCE_PROCESSED
        (enforcement,) = enforcements_of(instance)
        hosts.append(execution_of(enforcement).parameters["cmd"])
    assert hosts == [f"echo h{i}" for i in range(30)]
