"""The rules engine requests the executions of instances enforced together in one insert.

Same engine as test_rules_engine (its fixtures, both buses, the embedded
database). Instances are handed to the engine's handler in green threads of
their own at the same moment, as the consumer does with a batch of messages;
what is checked is what batching must keep: one execution and one linked
enforcement per matched instance, a failed enforcement for the one whose
request fails while the others of its batch go on, nothing doubled when a
batch is stored again, and executions that do run.
"""

from __future__ import annotations

import datetime

import pytest
from test_rules_engine import enforcements_of, engine, execution_of, start_engine  # noqa: F401 (fixtures)
from test_rules_engine_batches import stored_pending, together
from testsupport import freed_at_once

from st2common import statuses
from st2common.exceptions import ValidationError
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services import trace as trace_service
from st2common.services import triggerinstances


@pytest.fixture
def request_batches(monkeypatch) -> list[int]:
    """The size of each batch of executions the engine stores (the real request_many still does the work)."""
    sizes: list[int] = []
    request_many = executions.request_many

    def counted(publisher, prepared):
        sizes.append(len(prepared))
        return request_many(publisher, prepared)

    monkeypatch.setattr(executions, "request_many", counted)
    return sizes


def handled_together(engine, payloads: list[dict]) -> list[TriggerInstanceDB]:
    """Store a pending instance and its trace per payload, as dispatch does, and have the engine handle
    their messages all at the same moment."""
    instances = [stored_pending(payload) for payload in payloads]
    messages = []
    for instance in instances:
        trace = trace_service.create(trace_service.TRIGGER_INSTANCE_TAG.format(id=instance.pk))
        trace_service.add_trigger_instance(trace, instance.pk, instance.trigger)
        messages.append(triggerinstances.dispatch_message(instance, trace))
    together(engine.service.engine.handle, messages)
    return [Access(TriggerInstanceDB).get_by_id(instance.pk) for instance in instances]


def test_a_batch_of_matched_instances_requests_one_execution_each_in_one_insert(engine, request_batches):
    # Given a rule running a command built from the payload
    rule = engine.add_rule("per_host", {"cmd": "echo {{ trigger.host }}"})
    # When eight instances are handled together
    instances = handled_together(engine, [{"host": f"web{i}"} for i in range(8)])
    # Then their executions were stored together, not one insert per instance
    assert sum(request_batches) == 8 and max(request_batches) > 1, request_batches
    # And each instance is processed with one succeeded enforcement linked to its own execution
    execution_ids = set()
    for number, instance in enumerate(instances):
        assert instance.status == statuses.TRIGGER_INSTANCE_PROCESSED
        [enforcement] = enforcements_of(instance)
        assert enforcement.status == statuses.ENFORCEMENT_SUCCEEDED
        assert enforcement.rule == {"ref": rule.ref, "id": str(rule.pk), "uid": rule.uid}
        execution = execution_of(enforcement)
        execution_ids.add(str(execution.pk))
        # requested, with StackStorm's context and the rule and instance it came from
        assert execution.status == statuses.REQUESTED
        assert execution.parameters == {"cmd": f"echo web{number}"}
        assert execution.context["trigger_instance"] == {"id": str(instance.pk), "name": None}
        assert execution.context["rule"] == {"id": str(rule.pk), "name": "per_host", "ref": rule.ref}
        assert execution.trigger_instance["id"] == str(instance.pk)
        assert execution.rule["ref"] == rule.ref
        # And its trace links the instance's rule and the execution the rule caused
        trace = trace_service.trace_of("trigger_instance", instance.pk)
        assert execution.context["trace_context"]["id_"] == str(trace.pk)
        links = {(c.component_type, c.object_id): c for c in trace_service.components(trace)}
        assert links[("rule", str(rule.pk))].caused_by == {"type": "trigger_instance", "id": str(instance.pk)}
        assert links[("action_execution", str(execution.pk))].caused_by == {
            "type": "rule", "id": f"{rule.pk}:{instance.pk}"}
    assert len(execution_ids) == 8
    assert Access(ExecutionDB).count() == 8


def test_an_instance_whose_request_fails_gets_a_failed_enforcement_and_the_others_of_its_batch_go_on(
        engine, request_batches):
    # Given a rule whose timeout comes from the payload
    rule = engine.add_rule("timed", {"cmd": "echo {{ trigger.host }}", "timeout": "{{ trigger.count }}"})
    # When instances are handled together: one whose parameters cannot render, one whose
    # rendered timeout the action refuses, and good ones
    payloads = [{"host": "a", "count": 5}, {"host": "b"}, {"host": "c", "count": "soon"}, {"host": "d", "count": 7}]
    instances = handled_together(engine, payloads)
    # Then every instance is processed, each with one enforcement
    assert [i.status for i in instances] == [statuses.TRIGGER_INSTANCE_PROCESSED] * 4
    enforcements = [enforcements_of(instance) for instance in instances]
    assert [len(e) for e in enforcements] == [1] * 4
    good, unrendered, refused, also_good = (e[0] for e in enforcements)
    # And the one that could not render failed with the template's error, requesting nothing
    assert unrendered.status == statuses.ENFORCEMENT_FAILED and unrendered.execution_id is None
    assert 'parameter "timeout"' in unrendered.failure_reason
    # And the refused one failed naming the action and the parameter
    assert refused.status == statuses.ENFORCEMENT_FAILED and refused.execution_id is None
    assert refused.failure_reason.startswith('Failed to request action "core.local"')
    assert "timeout" in refused.failure_reason
    # And the others of the same batch were requested
    for enforcement, payload in ((good, payloads[0]), (also_good, payloads[3])):
        assert enforcement.status == statuses.ENFORCEMENT_SUCCEEDED
        execution = execution_of(enforcement)
        assert execution.parameters == {"cmd": f"echo {payload['host']}", "timeout": payload["count"]}
        assert execution.rule["id"] == str(rule.pk)
    assert request_batches == [2]
    assert Access(ExecutionDB).count() == 2


def test_a_batch_the_database_refuses_is_stored_one_by_one_without_doubles(engine):
    # Given three prepared requests, the first already stored (a batch that got half way before),
    # and one the database refuses
    prepared = [executions.prepare("core.local", {"cmd": f"echo {i}"}) for i in range(3)]
    ExecutionDB._get_collection().insert_one(prepared[0].to_mongo())
    prepared[2].status = "no such status"
    # When they are requested together
    outcomes = executions.request_many(engine.publisher, prepared)
    # Then the good ones are stored once each, and the refused one gets its own error
    assert outcomes[:2] == prepared[:2]
    assert isinstance(outcomes[2], ValidationError)
    stored = Access(ExecutionDB).query({})
    assert sorted(str(e.pk) for e in stored) == sorted(str(e.pk) for e in prepared[:2])
    assert all(e.status == statuses.REQUESTED for e in stored)


def test_executions_requested_together_run_when_an_action_runner_is_present(engine, request_batches):
    from st2actionrunner.cmd import ActionRunnerService

    # Given a rule and an action runner in this process
    engine.add_rule("runs", {"cmd": "echo ran {{ trigger.host }}"})
    runner = ActionRunnerService(engine.settings, engine.publisher)
    runner.start()
    try:
        # When instances are handled together
        instances = handled_together(engine, [{"host": f"h{i}"} for i in range(5)])
        assert max(request_batches) > 1, request_batches
        enforcements = [e for instance in instances for e in enforcements_of(instance)]
        # Then each execution runs to success with its own output
        for enforcement in enforcements:
            engine.wait_until(lambda e=enforcement: execution_of(e).status in statuses.COMPLETED, "the run", 30)
    finally:
        runner.stop()
    results = sorted(execution_of(e).result["stdout"].strip() for e in enforcements)
    assert results == [f"ran h{i}" for i in range(5)]
    assert all(execution_of(e).status == statuses.SUCCEEDED for e in enforcements)


def test_an_execution_stored_but_never_announced_is_run_by_the_action_runners_sweep(engine):
    from st2actionrunner.cmd import ActionRunnerService

    # Given an execution a batch stored before its engine died, so no message was sent
    [execution] = Access(ExecutionDB).insert_many([executions.prepare("core.local", {"cmd": "echo late"})],
                                                  reload=False)
    # When an action runner starts (its sweep re-publishes requests left requested)
    runner = ActionRunnerService(engine.settings, engine.publisher)
    runner.start()
    try:
        # Then the execution runs
        engine.wait_until(lambda: Access(ExecutionDB).get_by_id(execution.pk).status in statuses.COMPLETED,
                          "the run", 30)
    finally:
        runner.stop()
    assert Access(ExecutionDB).get_by_id(execution.pk).status == statuses.SUCCEEDED


def _naive(value):
    """value with its datetimes as naive UTC (as read back), at any depth."""
    if isinstance(value, dict):
        return {key: _naive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_naive(item) for item in value]
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def test_a_requested_execution_is_stored_as_mongoengine_would_store_it(engine, monkeypatch):
    # Given a rule whose parameters hold keys MongoDB cannot store as they are, and the documents as
    # mongoengine's to_mongo() gives them for the executions the engine prepares
    expected = []
    request_many = executions.request_many

    def seen(publisher, prepared):
        expected.extend(dict(execution.to_mongo()) for execution in prepared)
        return request_many(publisher, prepared)

    monkeypatch.setattr(executions, "request_many", seen)
    engine.add_rule("escaped", {"cmd": "echo {{ trigger.host }}", "env": {"A.B": "{{ trigger.host }}", "$X": "1"}})
    # When two instances are handled (the action and rule shapes they carry are shared between them)
    instances = handled_together(engine, [{"host": "web1"}, {"host": "web2"}])
    # Then each stored document is that one, key for key and in order
    assert len(expected) == 2
    for document in expected:
        raw = ExecutionDB._get_collection().find_one({"_id": document["_id"]})
        assert list(raw) == list(document)
        assert _naive(dict(raw)) == _naive(document)
        assert "A\uff0eB" in raw["parameters"]["env"] and "\uff04X" in raw["parameters"]["env"]
    # And read back, each carries its own values with the keys as given
    stored = sorted((execution_of(e) for i in instances for e in enforcements_of(i)),
                    key=lambda execution: execution.parameters["cmd"])
    assert [execution.parameters["env"] for execution in stored] == [{"A.B": "web1", "$X": "1"},
                                                                    {"A.B": "web2", "$X": "1"}]
    assert all(execution.rule["ref"] == "tests.escaped" and execution.action["ref"] == "core.local"
               for execution in stored)


def test_a_prepared_execution_behaves_as_a_constructed_document(engine):
    # Given an execution prepare() builds (past mongoengine's constructor)
    execution = executions.prepare("core.local", {"cmd": "echo hi"}, context={"a.b": {"$c": 1}})
    # Then it is a new document with every field at its value or default
    constructed = ExecutionDB(status=statuses.REQUESTED, action_ref="core.local")
    assert execution._created and execution.pk is not None
    assert set(execution._data) == set(constructed._data)
    assert (execution.result_size, execution.revision, execution.children) == (0, 1, [])
    assert execution.rule == {} and execution.result is None and execution.end_timestamp is None
    assert execution.get_status_display() == statuses.REQUESTED
    execution.validate()
    # And a change made after it is marked (and so checked when it is stored)
    execution.notify = {"on-complete": {}}
    assert "notify" in execution._changed_fields


def test_the_stored_shape_of_odd_values_is_mongoengines(engine):
    # Given a prepared execution whose fields then get values mongoengine converts on the way in: tuples,
    # nested lists, keys with "." and "$" and a key that is not text, bools where ints go, a time in a dict
    when = datetime.datetime(2026, 11, 21, 7, 1, 3, 123000, tzinfo=datetime.timezone.utc)
    execution = executions.prepare("core.local", {"cmd": "echo hi"}, context={"a.b": {"$c": (1, [2, (3,)])}})
    execution.parameters = {"cmd": "echo hi", "env": {"X.Y": "1", 7: ("a", "b")}}
    execution.runner_info = {"hostname": "h", "at": when, "nested": [{"k": (1, 2)}]}
    execution.log = [{"status": statuses.REQUESTED, "timestamp": when, "extra": [1, (2, 3)]}]
    execution.children = ["c1", "c2"]
    execution.delay = True
    execution.result = {"r.s": [{"$t": None}]}
    execution.trigger_instance = {"payload": (1, {"p.q": 2})}
    # When its stored shape is built, Then it is what mongoengine's to_mongo() gives, key for key
    expected = dict(execution.to_mongo())
    shape = executions._stored_shape(execution)
    assert list(shape) == list(expected)
    assert repr(shape) == repr(expected)


def test_the_stored_shape_copies_what_it_does_not_escape(engine):
    # Given a prepared execution
    execution = executions.prepare("core.local", {"cmd": "echo hi"}, context={"k": {"n": [1]}})
    # When its stored shape is built, Then none of its dicts or lists is the execution's own
    shape = executions._stored_shape(execution)
    for name in ("parameters", "context", "log", "notify"):
        assert shape[name] is not execution._data[name]
    assert shape["context"]["k"] is not execution._data["context"]["k"]
    assert shape["log"][0] is not execution._data["log"][0]


def test_a_prepared_execution_is_freed_once_dropped(engine):
    # Given an execution prepare() builds, stored, its status display asked for
    def stored():
        execution = executions.prepare("core.local", {"cmd": "echo hi"})
        executions._insert(executions.access(None), [execution])
        assert execution.get_status_display() == statuses.REQUESTED
        return execution
    # When its requester drops it, Then it is gone at once: no reference cycle waits for the garbage collector
    assert freed_at_once(stored)
