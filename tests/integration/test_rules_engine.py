"""The rules engine end to end: dispatch a trigger instance -> match -> rule enforcement -> execution requested.

Runs on both buses (the embedded filesystem bus, then RabbitMQ) and the
embedded database, with the rules engine consuming in this process (green
threads) exactly as st2rulesengine wires it. No action runner runs here: the
requested executions are the outcome under test.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import eventlet
import pytest
import yaml

from st2common import statuses
from st2common.content import bootstrap
from st2common.exceptions import ValidationError
from st2common.models.db.action import ActionDB
from st2common.models.db.base import utcnow
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import TraceComponentDB, TraceDB
from st2common.models.db.trigger import TriggerInstanceDB, TriggerTypeDB
from st2common.persistence import db as database
from st2common.persistence.access import UPDATE, Access
from st2common.services import executions
from st2common.services import trace as trace_service
from st2common.services.keyvalues import Datastore
from st2common.services import triggerinstances, triggers, triggertypes
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2rulesengine import matcher
from st2rulesengine.cmd import RulesEngineService
from st2rulesengine.index import TypeRules
from st2rulesengine.sweep import Sweep
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]
ALERT = "tests.alert"
ALERT_SCHEMA = {"type": "object", "properties": {"severity": {"type": "string"}, "host": {"type": "string"},
                                                 "count": {"type": "integer"}}}


class Engine:
    """The rules engine of this test and what a test needs around it."""

    def __init__(self, settings, publisher: Publisher, service: RulesEngineService) -> None:
        self.settings = settings
        self.publisher = publisher
        self.service = service
        self.rules = service.engine.rules

    def add_rule(self, name: str, action_parameters: dict, criteria: dict | None = None, *,
                 trigger_type: str = ALERT, trigger_parameters: dict | None = None, action: str = "core.local",
                 enabled: bool = True, wait: bool = True) -> RuleDB:
        """Store a rule (as the API does: its trigger found or created, an event published)."""
        type_doc = triggertypes.get_trigger_type(trigger_type)
        parameters = triggertypes.validate_parameters(type_doc, trigger_parameters or {})
        trigger, _ = triggers.get_or_create_trigger(type_doc, parameters, self.publisher)
        rule = RuleDB(name=name, pack="tests", enabled=enabled, criteria=criteria or {},
                      trigger={"type": trigger_type, "parameters": parameters, "ref": trigger.ref},
                      action={"ref": action, "parameters": action_parameters})
        rule.set_identity()
        Access(RuleDB, self.publisher).add_or_update(rule)
        if wait:
            self.wait_until(lambda: (str(rule.pk) in self.rules) == enabled, f"rule {name} in the index")
        return rule

    def dispatch(self, payload: dict, trigger=ALERT, **kwargs) -> TriggerInstanceDB:
        return triggerinstances.dispatch(self.publisher, trigger, payload, **kwargs)

    def processed(self, instance: TriggerInstanceDB, timeout: float = 10.0) -> TriggerInstanceDB:
        """Poll the instance until the engine is done with it."""
        done = (statuses.TRIGGER_INSTANCE_PROCESSED, statuses.TRIGGER_INSTANCE_PROCESSING_FAILED)
        self.wait_until(lambda: Access(TriggerInstanceDB).get_by_id(instance.pk).status in done,
                        f"trigger instance {instance.pk} processed", timeout)
        return Access(TriggerInstanceDB).get_by_id(instance.pk)

    @staticmethod
    def wait_until(check, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)


def enforcements_of(instance: TriggerInstanceDB) -> list[RuleEnforcementDB]:
    return Access(RuleEnforcementDB).query({"trigger_instance_id": str(instance.pk)}, order_by=["enforced_at"])


def execution_of(enforcement: RuleEnforcementDB) -> ExecutionDB:
    return Access(ExecutionDB).get_by_id(enforcement.execution_id)


@pytest.fixture
def start_engine(bus_settings, tmp_path, embedded_mongo):
    """start_engine(extra settings) -> Engine: core's actions and a tests.alert trigger type registered, consuming."""
    started: list[tuple[Engine, object]] = []

    def start(extra: dict | None = None) -> Engine:
        settings = make_settings(tmp_path, embedded_mongo, bus_settings.messaging.url, {
            "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
            "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
            **(extra or {}),
        })
        client = database.connect(settings)
        publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
        publisher.declare_work_queues()
        report = bootstrap.register(settings, kinds=["runners", "actions"])
        assert Access(ActionDB).get(ref="core.local") is not None, report.errors
        alert = TriggerTypeDB(name="alert", pack="tests", payload_schema=ALERT_SCHEMA, parameters_schema={})
        alert.set_identity()
        Access(TriggerTypeDB).add_or_update(alert)
        service = RulesEngineService(settings, publisher)
        service.start()
        engine = Engine(settings, publisher, service)
        started.append((engine, client))
        return engine

    yield start
    for engine, client in started:
        engine.service.stop()
        engine.publisher.close()
        client.drop_database(engine.settings.database.db_name)
        database.disconnect()


@pytest.fixture
def engine(start_engine) -> Engine:
    # Given a rules engine consuming in this process
    return start_engine()


def test_a_matching_instance_requests_the_execution_and_a_miss_requests_nothing(engine):
    # Given an enabled rule on tests.alert for critical alerts, running a command built from the payload
    rule = engine.add_rule("on_critical", {"cmd": "echo {{ trigger.host }} is down"},
                           {"trigger.severity": {"type": "equals", "pattern": "critical"}})
    # When a critical alert is dispatched
    instance = engine.dispatch({"severity": "critical", "host": "web1"})
    # Then it is processed, the rule is enforced, and core.local is requested with the rendered command
    assert engine.processed(instance).status == statuses.TRIGGER_INSTANCE_PROCESSED
    [enforcement] = enforcements_of(instance)
    assert enforcement.status == statuses.ENFORCEMENT_SUCCEEDED
    assert enforcement.rule == {"ref": rule.ref, "id": str(rule.pk), "uid": rule.uid}
    execution = execution_of(enforcement)
    assert execution.action_ref == "core.local"
    assert execution.status == statuses.REQUESTED
    assert execution.parameters == {"cmd": "echo web1 is down"}
    # And its context names the instance, the rule, the trace and the system user, as StackStorm's does
    context = execution.context
    assert context["trigger_instance"] == {"id": str(instance.pk), "name": None}
    assert context["rule"] == {"id": str(rule.pk), "name": "on_critical", "ref": "tests.on_critical"}
    assert context["user"] == "stanley"
    trace = trace_service.trace_of("trigger_instance", instance.pk)
    assert context["trace_context"] == {"id_": str(trace.pk), "trace_tag": f"trigger_instance-{instance.pk}"}
    # And the execution carries the rule, trigger, trigger type and instance it came from
    assert execution.rule["ref"] == rule.ref and execution.rule["id"] == str(rule.pk)
    assert execution.trigger_instance["id"] == str(instance.pk)
    assert execution.trigger_instance["payload"] == {"severity": "critical", "host": "web1"}
    assert execution.trigger["ref"] == ALERT and execution.trigger_type["ref"] == ALERT
    # When a warning is dispatched, Then it is processed and nothing is enforced or requested
    miss = engine.dispatch({"severity": "warning", "host": "web2"})
    assert engine.processed(miss).status == statuses.TRIGGER_INSTANCE_PROCESSED
    assert enforcements_of(miss) == []
    assert Access(ExecutionDB).count() == 1


def test_the_rule_copied_onto_the_execution_keeps_secret_parameters_masked(engine):
    # Given an action with a secret parameter, and a rule passing it a value from the payload
    action = ActionDB(name="secretive", pack="tests", runner_type={"name": "noop"},
                      parameters={"token": {"type": "string", "secret": True}})
    action.set_identity()
    Access(ActionDB).add_or_update(action)
    engine.add_rule("with_secret", {"token": "{{ trigger.host }}"}, action="tests.secretive")
    # When the rule is enforced
    [enforcement] = enforcements_of(engine.processed(engine.dispatch({"host": "s3cr3t"})))
    execution = execution_of(enforcement)
    # Then the execution runs with the value, and its copy of the rule does not show it
    assert execution.parameters == {"token": "s3cr3t"}
    assert execution.rule["action"]["parameters"] == {"token": "********"}


def test_parameters_that_fail_to_render_fail_the_enforcement_and_nothing_else(engine):
    # Given two rules on the same trigger, one whose parameters cannot render
    broken = engine.add_rule("broken", {"cmd": "echo {{ trigger.nope.deeper }}"})
    fine = engine.add_rule("fine", {"cmd": "echo {{ trigger.host }}"})
    # When an alert is dispatched
    instance = engine.dispatch({"severity": "info", "host": "db1"})
    # Then the instance is processed, the broken rule's enforcement failed with the template error
    assert engine.processed(instance).status == statuses.TRIGGER_INSTANCE_PROCESSED
    by_rule = {e.rule["ref"]: e for e in enforcements_of(instance)}
    failed = by_rule[broken.ref]
    assert failed.status == statuses.ENFORCEMENT_FAILED
    assert failed.execution_id is None
    assert 'parameter "cmd"' in failed.failure_reason and "nope" in failed.failure_reason
    # And the other rule still ran
    assert by_rule[fine.ref].status == statuses.ENFORCEMENT_SUCCEEDED
    assert execution_of(by_rule[fine.ref]).parameters == {"cmd": "echo db1"}


def test_criteria_that_cannot_be_evaluated_and_unknown_actions_fail_the_enforcement(engine):
    # Given a rule comparing a text field with a number, and a rule on an action that is gone
    engine.add_rule("bad_compare", {"cmd": "true"}, {"trigger.host": {"type": "lessthan", "pattern": 3}})
    gone = engine.add_rule("gone_action", {}, action="core.noop")
    Access(ActionDB).delete_by({"ref": "core.noop"})
    # When an alert is dispatched
    instance = engine.dispatch({"severity": "info", "host": "db1"})
    assert engine.processed(instance).status == statuses.TRIGGER_INSTANCE_PROCESSED
    # Then both enforcements are failed with the reason, and no execution was requested
    by_rule = {e.rule["ref"]: e for e in enforcements_of(instance)}
    assert by_rule["tests.bad_compare"].status == statuses.ENFORCEMENT_FAILED
    assert "tests.bad_compare" in by_rule["tests.bad_compare"].failure_reason
    assert by_rule[gone.ref].status == statuses.ENFORCEMENT_FAILED
    assert "core.noop" in by_rule[gone.ref].failure_reason
    assert Access(ExecutionDB).count() == 0


def test_rules_created_changed_and_disabled_after_start_apply_without_a_restart(engine):
    # Given an engine that started with no rules; When a rule is created
    assert len(engine.rules) == 0
    rule = engine.add_rule("late", {"cmd": "echo {{ trigger.count }}"},
                           {"trigger.count": {"type": "gt", "pattern": 1}})
    # Then the next instance is matched by it
    first = engine.dispatch({"count": 5})
    engine.processed(first)
    assert [e.status for e in enforcements_of(first)] == [statuses.ENFORCEMENT_SUCCEEDED]
    assert execution_of(enforcements_of(first)[0]).parameters == {"cmd": "echo 5"}
    # When its criteria change, Then instances are matched by the new criteria
    access = Access(RuleDB, engine.publisher)
    access.update_if(rule.pk, {}, {"criteria": {"trigger.count": {"type": "gt", "pattern": 10}}})
    engine.wait_until(lambda: engine.rules.rules_for(ALERT).entries[0][0].criteria[0].pattern == 10, "criteria refresh")
    below = engine.dispatch({"count": 5})
    assert enforcements_of(engine.processed(below)) == []
    # When it is disabled, Then nothing is enforced any more
    access.update_if(rule.pk, {}, {"enabled": False})
    engine.wait_until(lambda: str(rule.pk) not in engine.rules, "rule dropped from the index")
    second = engine.dispatch({"count": 50})
    assert enforcements_of(engine.processed(second)) == []
    # When it is deleted, Then it stays out
    access.delete(access.get_by_id(rule.pk))
    engine.wait_until(lambda: str(rule.pk) not in engine.rules, "rule gone")
    assert Access(ExecutionDB).count() == 1


def test_a_parameterised_trigger_matches_only_its_own_instances(engine):
    # Given a rule on the webhook "deploy"
    engine.add_rule("on_deploy", {"cmd": "echo {{ trigger.body.version }}"},
                    trigger_type=triggertypes.WEBHOOK_TRIGGER_REF, trigger_parameters={"url": "/deploy/"})
    engine.add_rule("on_other", {"cmd": "echo other"}, trigger_type=triggertypes.WEBHOOK_TRIGGER_REF,
                    trigger_parameters={"url": "other"})
    # When the "deploy" hook is dispatched (by type and parameters, as the webhooks controller does)
    hook = {"type": triggertypes.WEBHOOK_TRIGGER_REF, "parameters": {"url": "deploy"}}
    instance = engine.dispatch({"body": {"version": "1.2"}, "headers": {}}, trigger=hook)
    # Then only its rule ran
    [enforcement] = enforcements_of(engine.processed(instance))
    assert enforcement.rule["ref"] == "tests.on_deploy"
    assert execution_of(enforcement).parameters == {"cmd": "echo 1.2"}


def test_criteria_and_parameters_read_the_datastore(engine):
    # Given datastore items, and a rule whose criteria and parameters read them
    datastore = Datastore(engine.settings)
    datastore.set("watched_host", "web7")
    datastore.set("greeting", "hello")
    engine.add_rule("kv", {"cmd": "echo {{ st2kv.system.greeting }} {{ trigger.host }}"},
                    {"trigger.host": {"type": "equals", "pattern": "{{ st2kv.system.watched_host }}"}})
    # When alerts for the watched host and another one are dispatched
    watched = engine.processed(engine.dispatch({"host": "web7"}))
    other = engine.processed(engine.dispatch({"host": "web8"}))
    # Then only the watched host's alert ran the command, rendered with the stored greeting
    [enforcement] = enforcements_of(watched)
    assert execution_of(enforcement).parameters == {"cmd": "echo hello web7"}
    assert enforcements_of(other) == []
    # And a changed item applies to the next instance at once
    datastore.set("watched_host", "web8")
    again = engine.processed(engine.dispatch({"host": "web8"}))
    assert [e.status for e in enforcements_of(again)] == [statuses.ENFORCEMENT_SUCCEEDED]


def test_invalid_payloads_are_refused_naming_the_field_and_store_nothing(engine):
    with pytest.raises(ValidationError) as invalid:
        engine.dispatch({"count": "many"})
    assert invalid.value.field == "payload.count"
    engine.add_rule("hooked", {"cmd": "true"}, trigger_type=triggertypes.WEBHOOK_TRIGGER_REF,
                    trigger_parameters={"url": "hook"})
    with pytest.raises(ValidationError) as hook:
        engine.dispatch({"body": "text"},
                        trigger={"type": triggertypes.WEBHOOK_TRIGGER_REF, "parameters": {"url": "hook"}})
    assert hook.value.field == "payload.body"
    assert Access(TriggerInstanceDB).count() == 0
    # And validation can be skipped, as [system] validate_trigger_payload = False does
    assert engine.dispatch({"count": "many"}, validate=False).status == statuses.TRIGGER_INSTANCE_PENDING


def test_re_emit_processes_the_payload_again_in_the_same_trace(engine):
    # Given an instance that was processed and enforced
    engine.add_rule("always", {"cmd": "echo {{ trigger.host }}"})
    original = engine.processed(engine.dispatch({"host": "a"}, trace_context={"trace_tag": "incident-7"}))
    # When it is re-emitted
    again = triggerinstances.re_emit(engine.publisher, str(original.pk))
    # Then a new instance with the original's payload is processed and enforced again
    assert again.pk != original.pk
    assert again.payload == {"host": "a", "__context": {"original_id": str(original.pk)}}
    assert engine.processed(again).status == statuses.TRIGGER_INSTANCE_PROCESSED
    assert execution_of(enforcements_of(again)[0]).parameters == {"cmd": "echo a"}
    # And both are in the trace tagged incident-7, with both executions
    [trace] = Access(TraceDB).query({"trace_tag": "incident-7"})
    links = trace_service.components(trace)
    assert [c.object_id for c in links if c.component_type == "trigger_instance"] == [str(original.pk),
                                                                                     str(again.pk)]
    assert len([c for c in links if c.component_type == "action_execution"]) == 2


def test_the_trace_links_instance_rule_and_execution(engine):
    rule = engine.add_rule("traced", {"cmd": "true"})
    instance = engine.processed(engine.dispatch({"host": "x"}))
    [enforcement] = enforcements_of(instance)
    trace = trace_service.trace_of("trigger_instance", instance.pk)
    links = {c.component_type: c for c in trace_service.components(trace)}
    assert trace.trace_tag == f"trigger_instance-{instance.pk}"
    assert links["trigger_instance"].ref == ALERT and links["trigger_instance"].caused_by == {}
    assert links["rule"].object_id == str(rule.pk) and links["rule"].ref == rule.ref
    assert links["rule"].caused_by == {"type": "trigger_instance", "id": str(instance.pk)}
    assert links["action_execution"].object_id == enforcement.execution_id
    assert links["action_execution"].ref == "core.local"
    assert links["action_execution"].caused_by == {"type": "rule", "id": f"{rule.pk}:{instance.pk}"}
    # And linking again (a redelivered message) stores nothing new
    trace_service.add_rule(trace, rule.pk, rule.ref, instance.pk)
    assert Access(TraceComponentDB).count({"trace_id": str(trace.pk)}) == 3


def test_a_duplicate_nudge_does_nothing_and_the_sweep_picks_up_a_lost_one(engine):
    engine.add_rule("once", {"cmd": "true"})
    # Given a processed instance; When its message is delivered again, Then nothing more is enforced
    instance = engine.processed(engine.dispatch({"host": "a"}))
    engine.publisher.publish(triggerinstances.DISPATCH_EXCHANGE, ALERT, {"id": str(instance.pk)})
    # Given an instance stored pending whose message was lost
    lost = TriggerInstanceDB(trigger=ALERT, payload={"host": "lost"})
    Access(TriggerInstanceDB).add_or_update(lost)
    # When the sweep runs (as at start: no grace period) with no backlog on the queue,
    # Then it is re-published and processed
    engine.wait_until(lambda: engine.service.sweeper.backlog() == 0, "an empty queue")
    assert engine.service.sweeper.republish_pending() == [str(lost.pk)]
    assert engine.processed(lost).status == statuses.TRIGGER_INSTANCE_PROCESSED
    assert execution_of(enforcements_of(lost)[0]).parameters == {"cmd": "true"}
    assert len(enforcements_of(instance)) == 1


def test_dispatch_checks_a_trigger_type_changed_by_another_process_once_its_event_arrives(engine):
    # Given dispatch has looked up tests.alert, whose count is an integer
    engine.dispatch({"count": 1})
    # When another process makes count a string: its write, and the event its Access publishes
    schema = {"type": "object", "properties": {"count": {"type": "string"}}}
    TriggerTypeDB._get_collection().update_one({"ref": ALERT}, {"$set": {"payload_schema": schema}})
    Access(TriggerTypeDB, engine.publisher).publish(UPDATE, Access(TriggerTypeDB).get(ref=ALERT))

    # Then dispatch checks payloads against the new schema, well before the lookup would expire
    def refused() -> bool:
        try:
            engine.dispatch({"count": 2})
        except ValidationError:
            return True
        return False

    engine.wait_until(refused, "dispatch to see the new schema", timeout=5)
    assert engine.dispatch({"count": "3"}).payload == {"count": "3"}


def crashed_midway(engine: Engine) -> tuple[TriggerInstanceDB, dict[str, RuleDB], ExecutionDB]:
    """What an engine that died while enforcing three rules for one alert left behind.

    Rule "done" was enforced and recorded, rule "requested" had its execution
    requested but not recorded, rule "todo" was not reached; the instance is
    still processing and its message was acked.
    """
    rules = {name: engine.add_rule(name, {"cmd": f"echo {name} {{{{ trigger.host }}}}"})
             for name in ("done", "requested", "todo")}
    instance = Access(TriggerInstanceDB).add_or_update(TriggerInstanceDB(
        trigger=ALERT, payload={"host": "db1"}, status=statuses.TRIGGER_INSTANCE_PROCESSING,
        occurrence_time=utcnow() - datetime.timedelta(minutes=1)))
    trace = trace_service.create(f"trigger_instance-{instance.pk}")
    trace_service.add_trigger_instance(trace, instance.pk, ALERT)
    requested = {}
    for name in ("done", "requested"):
        rule = rules[name]
        requested[name] = executions.request(engine.publisher, "core.local", {"cmd": f"echo {name} db1"}, context={
            "trigger_instance": {"id": str(instance.pk), "name": None},
            "rule": {"id": str(rule.pk), "name": rule.name, "ref": rule.ref},
            "trace_context": trace_service.trace_context(trace)})
    done = rules["done"]
    Access(RuleEnforcementDB).add_or_update(RuleEnforcementDB(
        trigger_instance_id=str(instance.pk), execution_id=str(requested["done"].pk),
        rule={"ref": done.ref, "id": str(done.pk), "uid": done.uid}))
    return instance, rules, requested["requested"]


def test_an_instance_left_processing_is_finished_by_the_sweep_without_enforcing_a_rule_twice(engine):
    # Given an alert whose engine died midway through its three rules
    instance, rules, orphan = crashed_midway(engine)
    before = enforcements_of(instance)
    # When the sweep looks for instances left processing (no grace period)
    recovered = engine.service.sweeper.recover_processing(stuck_after=0)
    # Then the instance is processed
    assert recovered == [str(instance.pk)]
    assert Access(TriggerInstanceDB).get_by_id(instance.pk).status == statuses.TRIGGER_INSTANCE_PROCESSED
    # And each rule has exactly one enforcement and one execution: the recorded one is kept, the
    # execution requested without a record is adopted, the rule not reached is enforced now
    by_rule = {e.rule["ref"]: e for e in enforcements_of(instance)}
    assert sorted(by_rule) == sorted(rule.ref for rule in rules.values())
    assert by_rule["tests.done"].pk == before[0].pk
    assert by_rule["tests.requested"].execution_id == str(orphan.pk)
    assert execution_of(by_rule["tests.todo"]).parameters == {"cmd": "echo todo db1"}
    made = Access(ExecutionDB).query(raw={"context.trigger_instance.id": str(instance.pk)})
    assert len(made) == 3
    # And the adopted execution now carries its rule and instance, and the trace links it
    assert Access(ExecutionDB).get_by_id(orphan.pk).rule["ref"] == "tests.requested"
    trace = trace_service.trace_of("trigger_instance", instance.pk)
    linked = {c.object_id for c in trace_service.components(trace) if c.component_type == "action_execution"}
    assert {str(orphan.pk), by_rule["tests.todo"].execution_id} <= linked
    # When the sweep runs again, Then nothing more happens
    assert engine.service.sweeper.recover_processing(stuck_after=0) == []
    assert len(enforcements_of(instance)) == 3


def test_an_instance_is_taken_over_only_once_seen_processing_for_the_grace_period(engine):
    # Given an instance left processing, and two engines' sweeps with a 30 s grace period
    instance, _, _ = crashed_midway(engine)
    now = [1000.0]
    sweeps = [Sweep(engine.service.engine, clock=lambda: now[0]) for _ in range(2)]
    # When they first see it, Then they leave it alone
    assert [sweep.recover_processing(stuck_after=30) for sweep in sweeps] == [[], []]
    assert Access(TriggerInstanceDB).get_by_id(instance.pk).status == statuses.TRIGGER_INSTANCE_PROCESSING
    # When both look again 31 s later, at the same moment
    now[0] += 31
    pool = eventlet.GreenPool()
    results = [pool.spawn(sweep.recover_processing, 30) for sweep in sweeps]
    # Then exactly one of them finished it, and no rule was enforced twice
    assert sorted(len(result.wait()) for result in results) == [0, 1]
    assert Access(TriggerInstanceDB).get_by_id(instance.pk).status == statuses.TRIGGER_INSTANCE_PROCESSED
    assert len(enforcements_of(instance)) == 3
    assert Access(ExecutionDB).count(raw={"context.trigger_instance.id": str(instance.pk)}) == 3


def test_a_hundred_rules_with_criteria(engine):
    # Given 100 rules, each for one value of trigger.count
    for number in range(100):
        engine.add_rule(f"n{number}", {"cmd": f"echo {number} {{{{ trigger.host }}}}"},
                        {"trigger.count": {"type": "equals", "pattern": number},
                         "trigger.severity": {"type": "startswith", "pattern": "crit"}}, wait=False)
    engine.wait_until(lambda: len(engine.rules) == 100, "100 rules in the index")
    # When 100 alerts are dispatched, one for each value, in a shuffled order
    instances = [engine.dispatch({"count": i % 100, "severity": "critical", "host": f"h{i}"})
                 for i in range(37, 137)]
    # Then each was enforced by its one rule, with its own parameters
    for i, instance in enumerate(instances, start=37):
        [enforcement] = enforcements_of(engine.processed(instance))
        assert enforcement.rule["ref"] == f"tests.n{i % 100}"
        assert execution_of(enforcement).parameters == {"cmd": f"echo {i % 100} h{i}"}


def test_the_equality_index_finds_what_matching_every_rule_finds():
    # Given the matcher's fixture rules and more whose first criterion is a plain equals
    fixtures = REPO / "tests" / "fixtures" / "matcher"
    rules = [matcher.Rule.from_dict(data) for data in yaml.safe_load((fixtures / "rules.yaml").read_text())]
    for number in range(5):
        rules.append(matcher.Rule.from_dict({
            "name": f"n{number}", "pack": "events", "enabled": True, "trigger": {"type": "events.metric"},
            "criteria": {"trigger.value": {"type": "eq", "pattern": number * 25},
                         "trigger.host": {"type": "startswith", "pattern": "web"}},
            "action": {"ref": "core.noop"}}))
    context = {"st2kv": {"system": {"limit": "10"}}, "system": {"mode": "active"}}
    instances = yaml.safe_load((fixtures / "instances.yaml").read_text())
    instances += [{"trigger": {"type": "events.metric"}, "payload": {"value": value, "host": "web-1"}}
                  for value in (0, 25, 50, 50.0, True, [50], None)]
    for case in instances:
        trigger = case["trigger"]
        subject = matcher.TriggerInstance(trigger["type"], case["payload"], trigger.get("parameters") or {},
                                          trigger.get("ref"))
        every = [rule for rule in rules if rule.trigger_type == subject.trigger_type]
        indexed = TypeRules([(rule, None) for rule in every])
        # When it is matched against every rule, and against the index's candidates
        full = matcher.match(every, subject, context)
        narrowed = matcher.match([rule for rule, _ in indexed.candidates({**context, "trigger": subject.payload})],
                                 subject, context)
        # Then the same rules match, in the same order, and the same ones fail
        assert [m.rule.ref for m in narrowed.matched] == [m.rule.ref for m in full.matched], case
        assert [m.rule.ref for m in narrowed.failed] == [m.rule.ref for m in full.failed], case


def test_a_rule_parameter_that_decrypts_is_rendered_only_by_the_action_runner(engine, tmp_path):
    # Given a secret item, and a rule whose command uses it and the trigger's payload
    from st2actionrunner.cmd import ActionRunnerService
    from st2common.util import crypto

    crypto.write_key_file(engine.settings.keyvalue.encryption_key_path)
    Datastore(engine.settings).set("db_pw", "clear-pw-4417", secret=True)
    seen = tmp_path / "seen.txt"
    engine.add_rule("vault", {"cmd": f"echo {{{{ trigger.host }}}} {{{{ st2kv.system.db_pw | decrypt_kv }}}} > {seen}"})
    runner = ActionRunnerService(engine.settings, engine.publisher)
    runner.start()
    try:
        # When an alert runs it
        [enforcement] = enforcements_of(engine.processed(engine.dispatch({"host": "web7"})))
        engine.wait_until(lambda: execution_of(enforcement).status in statuses.COMPLETED, "the run", 20)
    finally:
        runner.stop()
    # Then the command got the clear value and the payload
    execution = execution_of(enforcement)
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert seen.read_text().strip() == "web7 clear-pw-4417"
    # And the stored execution holds the template, never the clear value
    assert "clear-pw-4417" not in repr(execution.to_mongo())
    assert "decrypt_kv" in execution.parameters["cmd"]
