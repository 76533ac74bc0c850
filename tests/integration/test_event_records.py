"""The event side's records on the embedded database: trigger types, sensors and rules registered from
packs, triggers found or created by parameters, and payload / parameter validation."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from st2common import statuses
from st2common.content import register
from st2common.exceptions import ConflictError, NotFoundError, ValidationError
from st2common.models.db.base import utcnow
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.rule import RuleDB, RuleTypeDB
from st2common.models.db.sensor import SensorTypeDB
from st2common.models.db.trace import TraceComponentDB, TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB
from st2common.persistence.access import Access
from st2common.services import triggers, triggertypes
from st2rulesengine.matcher import Rule, TriggerInstance, match
from testsupport import make_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "contrib" / "packs"
EVENTS_PACK = REPO / "tests" / "fixtures" / "packs" / "events_pack"
EVENT_KINDS = ["triggers", "sensors", "rules"]
SYSTEM_TYPES = {
    "core.st2.webhook", "core.st2.IntervalTimer", "core.st2.DateTimer", "core.st2.CronTimer",
    "core.st2.generic.actiontrigger", "core.st2.generic.notifytrigger", "core.st2.generic.inquiry",
    "core.st2.action.file_written", "core.st2.sensor.process_spawn", "core.st2.sensor.process_exit",
    "core.st2.key_value_pair.create", "core.st2.key_value_pair.update",
    "core.st2.key_value_pair.value_change", "core.st2.key_value_pair.delete",
}


@pytest.fixture
def packs(tmp_path) -> Path:
    """A pack folder holding a copy of events_pack, free to be broken by a test."""
    folder = tmp_path / "packs"
    shutil.copytree(EVENTS_PACK, folder / "events_pack")
    return folder


@pytest.fixture
def settings(tmp_path, embedded_mongo, packs):
    """Settings searching the shipped packs (core's actions), then the test's pack folder."""
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(SHIPPED),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(packs),
    })


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors_by_file(report) -> dict[str, object]:
    return {Path(error.path).name: error for error in report.errors}


def test_event_content_registers_and_a_second_run_changes_nothing(settings, db):
    # Given events_pack and the shipped packs; When triggers, sensors and rules are registered
    report = register(settings, EVENT_KINDS)

    # Then nothing failed, and the event kinds run after what they need (runners, actions)
    assert report.ok, report.errors
    assert set(report.registered) >= {"triggers", "sensors", "rules", "rule_types", "runners", "actions"}

    # The system trigger types are stored with StackStorm's schemas, each parameter-less one with its shadow trigger
    types = {t.ref: t for t in TriggerTypeDB.objects}
    assert SYSTEM_TYPES | {"events_pack.metric", "events_pack.heartbeat"} == set(types)
    webhook = types["core.st2.webhook"]
    assert webhook.uid == "trigger_type:core:st2.webhook"
    assert webhook.parameters_schema == {"type": "object", "properties": {"url": {"type": "string", "required": True}},
                                         "additionalProperties": False}
    assert webhook.payload_schema["properties"]["body"] == {"anyOf": [{"type": "array"}, {"type": "object"}]}
    assert types["core.st2.IntervalTimer"].parameters_schema["properties"]["unit"]["enum"] == [
        "weeks", "days", "hours", "minutes", "seconds"]
    shadow = TriggerDB.objects.get(ref="core.st2.generic.actiontrigger")
    assert (shadow.type, shadow.parameters, shadow.name) == ("core.st2.generic.actiontrigger", {},
                                                             "st2.generic.actiontrigger")
    assert shadow.uid == "trigger:core:st2.generic.actiontrigger:99914b932bd37a50b983c5e7c90ae93b"
    assert TriggerDB.objects(type="core.st2.webhook", ref="core.st2.webhook").count() == 0

    # The pack's trigger type and the one its sensor declares
    metric = types["events_pack.metric"]
    assert metric.metadata_file == "triggers/metric.yaml" and metric.tags == [{"name": "team", "value": "ops"}]
    assert types["events_pack.heartbeat"].payload_schema["required"] == ["count"]

    # The sensor: metadata only, its file located
    sensor = SensorTypeDB.objects.get(ref="events_pack.HeartbeatSensor")
    assert (sensor.name, sensor.class_name, sensor.entry_point) == ("HeartbeatSensor", "HeartbeatSensor",
                                                                    "heartbeat_sensor.py")
    source = Path(settings.content.packs_base_paths[0]) / "events_pack" / "sensors" / "heartbeat_sensor.py"
    assert sensor.artifact_uri == f"file://{source}"
    assert sensor.trigger_types == ["events_pack.heartbeat"] and sensor.poll_interval == 5 and sensor.enabled
    assert sensor.uid == "sensor_type:events_pack:HeartbeatSensor"

    # Rule types, then rules with their trigger found or created
    assert {t.name for t in RuleTypeDB.objects} == {"standard", "backstop"}
    rules = {r.name: r for r in RuleDB.objects(pack="events_pack")}
    assert set(rules) == {"on_metric", "on_deploy_hook", "every_minute", "heartbeat_fallback"}
    on_metric = rules["on_metric"]
    assert on_metric.trigger == {"type": "events_pack.metric", "parameters": {}, "ref": "events_pack.metric"}
    assert on_metric.criteria["trigger.value"] == {"type": "greaterthan", "pattern": 90}
    assert on_metric.action == {"ref": "core.local",
                                "parameters": {"cmd": "echo {{ trigger.host }} {{ trigger.value }}"}}
    assert on_metric.type == {"ref": "standard", "parameters": {}} and on_metric.uid == "rule:events_pack:on_metric"
    hook = rules["on_deploy_hook"]
    assert hook.trigger["parameters"] == {"url": "events/deploy"}
    hook_trigger = TriggerDB.objects.get(ref=hook.trigger["ref"])
    assert hook_trigger.name != "st2.webhook" and hook.trigger["ref"] == f"core.{hook_trigger.name}"
    assert (hook_trigger.type, hook_trigger.ref_count) == ("core.st2.webhook", 1)
    assert rules["every_minute"].enabled is False  # StackStorm's default
    assert rules["heartbeat_fallback"].type["ref"] == "backstop"
    assert rules["heartbeat_fallback"].trigger["ref"] == "events_pack.heartbeat"

    # The rules engine's lookup: enabled rules of a trigger type
    enabled = RuleDB.objects(__raw__={"trigger.type": "core.st2.webhook", "enabled": True})
    assert [r.ref for r in enabled] == ["events_pack.on_deploy_hook"]

    counts = {model: model.objects.count() for model in (TriggerTypeDB, TriggerDB, SensorTypeDB, RuleDB)}
    ids = {r.ref: (r.pk, r.trigger["ref"]) for r in RuleDB.objects}

    # When registered again; Then nothing is written, no trigger is added, every rule keeps its trigger
    again = register(settings, EVENT_KINDS)
    assert again.ok and sum(again.changed.values()) == 0
    assert again.registered == report.registered
    assert {model: model.objects.count() for model in counts} == counts
    assert {r.ref: (r.pk, r.trigger["ref"]) for r in RuleDB.objects} == ids


def test_broken_rules_are_reported_with_path_and_field_while_the_others_register(settings, db, packs):
    # Given events_pack plus rule files each broken in one way
    rules = packs / "events_pack" / "rules"
    write(rules / "bad_trigger.yaml", """\
        name: bad_trigger
        trigger:
          type: events_pack.no_such_trigger
        action:
          ref: core.noop
        """)
    write(rules / "bad_action.yaml", """\
        name: bad_action
        trigger:
          type: events_pack.metric
        action:
          ref: core.no_such_action
        """)
    write(rules / "bad_operator.yaml", """\
        name: bad_operator
        trigger:
          type: events_pack.metric
        criteria:
          trigger.value:
            type: morethan
            pattern: 5
        action:
          ref: core.noop
        """)
    write(rules / "bad_timer.yaml", """\
        name: bad_timer
        trigger:
          type: core.st2.IntervalTimer
          parameters:
            unit: fortnights
            delta: 1
        action:
          ref: core.noop
        """)
    write(rules / "bad_field.yaml", """\
        name: bad_field
        trigger:
          type: events_pack.metric
        action:
          ref: core.noop
        enabeld: true
        """)
    write(rules / "bad_pack.yaml", """\
        name: bad_pack
        pack: someone_else
        trigger:
          type: events_pack.metric
        action:
          ref: core.noop
        """)

    # When the rules are registered
    report = register(settings, ["rules"])

    # Then each broken file is reported with its path, line and field, and names what is wrong
    errors = errors_by_file(report)
    assert set(errors) == {"bad_trigger.yaml", "bad_action.yaml", "bad_operator.yaml", "bad_timer.yaml",
                           "bad_field.yaml", "bad_pack.yaml"}
    assert all(error.kind == "rules" and error.pack == "events_pack" for error in errors.values())
    assert str(errors["bad_trigger.yaml"].path) == str(rules / "bad_trigger.yaml")
    assert (errors["bad_trigger.yaml"].field, errors["bad_trigger.yaml"].line) == ("trigger.type", 3)
    assert 'trigger type "events_pack.no_such_trigger" is not registered' in str(errors["bad_trigger.yaml"])
    assert (errors["bad_action.yaml"].field, errors["bad_action.yaml"].line) == ("action.ref", 5)
    assert 'action "core.no_such_action" is not registered' in str(errors["bad_action.yaml"])
    bad_operator = errors["bad_operator.yaml"]
    assert (bad_operator.field, bad_operator.line) == ("criteria.trigger.value.type", 6)
    assert 'unknown operator "morethan"' in str(bad_operator) and "valid operators are: " in str(bad_operator)
    assert "greaterthan" in str(bad_operator) and "td_gt" in str(bad_operator)
    assert (errors["bad_timer.yaml"].field, errors["bad_timer.yaml"].line) == ("trigger.parameters.unit", 5)
    assert "fortnights" in str(errors["bad_timer.yaml"])
    assert (errors["bad_field.yaml"].field, errors["bad_field.yaml"].line) == ("enabeld", 6)
    assert (errors["bad_pack.yaml"].field, errors["bad_pack.yaml"].line) == ("pack", 2)

    # And the good rules are registered all the same, the broken ones not at all
    assert report.failed["rules"] == 6 and report.registered["rules"] == 4
    assert {r.name for r in RuleDB.objects(pack="events_pack")} == {
        "on_metric", "on_deploy_hook", "every_minute", "heartbeat_fallback"}
    # No trigger is left behind for a rule that was not stored
    assert TriggerDB.objects(type="core.st2.IntervalTimer").count() == 1


def test_broken_sensors_and_trigger_types_are_reported_while_the_others_register(settings, db, packs):
    # Given a sensor without its Python file, one polling too often, and a trigger type with an unknown field
    sensors = packs / "events_pack" / "sensors"
    write(sensors / "lost.yaml", "class_name: LostSensor\nentry_point: lost.py\n")
    write(sensors / "eager.yaml", "class_name: EagerSensor\nentry_point: heartbeat_sensor.py\npoll_interval: 1\n")
    write(sensors / "declares_badly.yaml", """\
        class_name: DeclaresBadly
        entry_point: heartbeat_sensor.py
        trigger_types:
          - name: fine
          - name: broken
            payload_shema: {}
        """)
    write(packs / "events_pack" / "triggers" / "typo.yaml", "name: typo\npayload_schema: {}\ndescripton: x\n")

    # When triggers and sensors are registered
    report = register(settings, ["triggers", "sensors"])

    # Then each problem names its file, field and line
    sensor_errors = {Path(e.path).name: e for e in report.errors if e.kind == "sensors"}
    trigger_errors = {Path(e.path).name: e for e in report.errors if e.kind == "triggers"}
    assert set(sensor_errors) == {"lost.yaml", "eager.yaml", "declares_badly.yaml"}
    assert sensor_errors["lost.yaml"].field == "entry_point" and "no such file" in str(sensor_errors["lost.yaml"])
    assert (sensor_errors["eager.yaml"].field, sensor_errors["eager.yaml"].line) == ("poll_interval", 3)
    assert sensor_errors["declares_badly.yaml"].field == "trigger_types.1.payload_shema"
    assert set(trigger_errors) == {"typo.yaml", "declares_badly.yaml"}
    assert (trigger_errors["typo.yaml"].field, trigger_errors["typo.yaml"].line) == ("descripton", 3)
    assert (trigger_errors["declares_badly.yaml"].field, trigger_errors["declares_badly.yaml"].line) == (
        "trigger_types.1.payload_shema", 6)

    # And everything else is stored: the good sensor, and the good type the broken sensor declared
    assert {s.ref for s in SensorTypeDB.objects} == {"events_pack.HeartbeatSensor"}
    assert {t.ref for t in TriggerTypeDB.objects(pack="events_pack")} == {
        "events_pack.metric", "events_pack.heartbeat", "events_pack.fine"}


def test_a_rule_moved_to_another_trigger_releases_the_old_one(settings, db, packs):
    # Given the registered pack and a second rule on the same webhook
    rules = packs / "events_pack" / "rules"
    write(rules / "same_hook.yaml", """\
        name: same_hook
        trigger:
          type: core.st2.webhook
          parameters:
            url: events/deploy
        action:
          ref: core.noop
        """)
    assert register(settings, ["rules"]).ok
    first = RuleDB.objects.get(name="on_deploy_hook").trigger["ref"]
    assert RuleDB.objects.get(name="same_hook").trigger["ref"] == first  # "/events/deploy/" is the same hook
    assert TriggerDB.objects.get(ref=first).ref_count == 2

    # When one rule moves to another url; Then the old trigger stays for the other rule
    path = rules / "on_deploy_hook.yaml"
    path.write_text(path.read_text().replace("/events/deploy/", "events/release"))
    assert register(settings, ["rules"]).ok
    moved = RuleDB.objects.get(name="on_deploy_hook").trigger["ref"]
    assert moved != first and TriggerDB.objects.get(ref=moved).parameters == {"url": "events/release"}
    assert TriggerDB.objects.get(ref=first).ref_count == 1

    # When the other rule moves too; Then the unused trigger is deleted
    other = rules / "same_hook.yaml"
    other.write_text(other.read_text().replace("events/deploy", "events/release"))
    assert register(settings, ["rules"]).ok
    assert TriggerDB.objects(ref=first).count() == 0
    assert TriggerDB.objects.get(ref=moved).ref_count == 2
    assert {t.parameters["url"] for t in TriggerDB.objects(type="core.st2.webhook")} == {"events/release"}


def test_triggers_are_found_or_created_by_type_and_parameters(db):
    # Given the system trigger types, registered by the service function (twice: idempotent)
    assert triggertypes.register_system_trigger_types() > 0
    assert triggertypes.register_system_trigger_types() == 0
    interval = triggertypes.get_trigger_type("core.st2.IntervalTimer")
    webhook = triggertypes.get_trigger_type("core.st2.webhook")

    # When a trigger is asked for with parameters, in any key order
    first, created = triggers.get_or_create_trigger(interval, {"unit": "seconds", "delta": 5})
    again, created_again = triggers.get_or_create_trigger(interval, {"delta": 5, "unit": "seconds"})
    other, _ = triggers.get_or_create_trigger(interval, {"unit": "seconds", "delta": 6})

    # Then the same parameters give the same trigger (a UUID-named one), others a new one
    assert created and not created_again and again.pk == first.pk and other.pk != first.pk
    assert first.ref == f"core.{first.name}" and len(first.name) == 36
    assert first.uid == f"trigger:core:{first.name}:{first.parameters_hash}"
    assert triggers.find_trigger("core.st2.IntervalTimer", {"delta": 5, "unit": "seconds"}).pk == first.pk
    assert triggers.find_trigger("core.st2.IntervalTimer", {"delta": 7, "unit": "seconds"}) is None

    # A webhook url is the same hook with or without its slashes; no parameters is the shadow trigger
    hook, _ = triggers.get_or_create_trigger(webhook, {"url": "/ci/build/"})
    assert triggers.get_or_create_trigger(webhook, {"url": "ci/build"})[0].pk == hook.pk
    assert hook.parameters == {"url": "ci/build"}
    notify = triggertypes.get_trigger_type("core.st2.generic.notifytrigger")
    shadow, created = triggers.get_or_create_trigger(notify, {})
    assert not created and shadow.ref == "core.st2.generic.notifytrigger"

    # An unknown type is named in the error
    with pytest.raises(NotFoundError, match='trigger type "core.nope" is not registered'):
        triggertypes.get_trigger_type("core.nope")


@pytest.mark.parametrize("type_ref,payload,field", [
    ("core.st2.webhook", {"headers": {}, "body": "plain text"}, "payload.body"),
    ("core.st2.webhook", {"headers": "x", "body": {}}, "payload.headers"),
    ("core.st2.generic.inquiry", {"id": "abc"}, "payload.route"),
    ("core.st2.generic.inquiry", {"id": "abc", "route": "r", "extra": 1}, "payload.extra"),
    ("core.st2.IntervalTimer", {"executed_at": 5}, "payload.executed_at"),
    ("events_pack.metric", {"host": "web"}, "payload.value"),
    ("events_pack.metric", {"value": "high"}, "payload.value"),
    ("events_pack.heartbeat", {"count": 1.5}, "payload.count"),
])
def test_invalid_payloads_name_the_field(settings, db, type_ref, payload, field):
    register(settings, ["triggers"])
    with pytest.raises(ValidationError) as error:
        triggertypes.validate_payload(triggertypes.get_trigger_type(type_ref), payload)
    assert error.value.field == field and error.value.message.startswith(f"{field}: ")


@pytest.mark.parametrize("type_ref,payload", [
    ("core.st2.webhook", {"headers": {"A": "b"}, "body": [1, 2]}),
    ("core.st2.generic.actiontrigger", {"execution_id": "1", "status": "failed", "result": {"x": 1}}),
    ("core.st2.sensor.process_spawn", {"id": "p.S", "timestamp": 1, "pid": 5, "cmd": "x"}),
    ("core.st2.IntervalTimer", {"executed_at": "2014-07-30 05:04:24.578325", "schedule": None}),
    ("events_pack.metric", {"value": 97.5, "host": "web-01", "anything": "else"}),
])
def test_valid_payloads_pass(settings, db, type_ref, payload):
    register(settings, ["triggers"])
    triggertypes.validate_payload(triggertypes.get_trigger_type(type_ref), payload)


@pytest.mark.parametrize("type_ref,parameters,field", [
    ("core.st2.IntervalTimer", {"unit": "fortnights", "delta": 1}, "parameters.unit"),
    ("core.st2.IntervalTimer", {"unit": "seconds"}, "parameters.delta"),
    ("core.st2.IntervalTimer", {"unit": "seconds", "delta": 1, "every": 2}, "parameters.every"),
    ("core.st2.DateTimer", {"date": "someday"}, "parameters.date"),
    ("core.st2.CronTimer", {"hour": 25}, "parameters.hour"),
    ("core.st2.webhook", {}, "parameters.url"),
    ("events_pack.metric", {"other": 1}, "parameters.other"),
])
def test_invalid_trigger_parameters_name_the_field(settings, db, type_ref, parameters, field):
    register(settings, ["triggers"])
    with pytest.raises(ValidationError) as error:
        triggertypes.validate_parameters(triggertypes.get_trigger_type(type_ref), parameters)
    assert error.value.field == field


def test_trigger_parameter_defaults_count_for_the_check_and_pack_types_can_skip_it(settings, db):
    register(settings, ["triggers"])
    metric = triggertypes.get_trigger_type("events_pack.metric")
    cron = triggertypes.get_trigger_type("core.st2.CronTimer")
    # A null parameter with a default is checked as the default, and stored as given
    assert triggertypes.validate_parameters(metric, {"source": None}) == {"source": None}
    assert triggertypes.validate_parameters(metric, {}) == {}
    # [system] validate_trigger_parameters = False: pack types pass as given, system types are still checked
    assert triggertypes.validate_parameters(metric, {"other": 1}, enforce=False) == {"other": 1}
    with pytest.raises(ValidationError):
        triggertypes.validate_parameters(triggertypes.get_trigger_type("core.st2.webhook"), {}, enforce=False)
    assert triggertypes.validate_parameters(cron, {"minute": "*/5", "day_of_week": 1, "timezone": "UTC"}) == {
        "minute": "*/5", "day_of_week": 1, "timezone": "UTC"}
    assert triggertypes.validate_parameters(triggertypes.get_trigger_type("core.st2.DateTimer"),
                                            {"date": "2014-12-31 23:59:59"}) == {"date": "2014-12-31 23:59:59"}


def test_stored_rules_match_instances_of_their_trigger(settings, db):
    # Given the registered pack; When the enabled rules of the webhook type are loaded as matcher records
    assert register(settings, EVENT_KINDS).ok
    stored = RuleDB.objects(__raw__={"trigger.type": "core.st2.webhook", "enabled": True})
    rules = [Rule.from_db(doc) for doc in stored]
    hook = TriggerDB.objects.get(ref=rules[0].trigger_ref)

    # Then an instance of the rule's trigger with a matching payload fires it, and renders its command
    def instance(payload):
        return TriggerInstance(hook.type, payload, dict(hook.parameters), trigger_ref=hook.ref)

    fired = match(rules, instance({"headers": {}, "body": {"env": "prod", "version": "1.2"}}))
    assert [m.rule.ref for m in fired.matched] == ["events_pack.on_deploy_hook"]
    assert match(rules, instance({"headers": {}, "body": {"env": "dev"}})).matched == ()


def test_instances_enforcements_and_traces_are_found_the_way_the_engine_looks_for_them(db):
    # Given trigger instances, one already processed
    instances = Access(TriggerInstanceDB)
    first = instances.add_or_update(TriggerInstanceDB(trigger="core.st2.webhook", payload={"a.b": {"$c": 1}}))
    second = instances.add_or_update(TriggerInstanceDB(trigger="events_pack.metric", payload={"value": 1}))
    instances.add_or_update(TriggerInstanceDB(trigger="events_pack.metric", payload={},
                                              status=statuses.TRIGGER_INSTANCE_PROCESSED))

    # Then pending ones are found oldest first, payload keys with dots and dollars intact
    pending = instances.query({"status": statuses.TRIGGER_INSTANCE_PENDING}, order_by=["occurrence_time"])
    assert [str(i.pk) for i in pending] == [str(first.pk), str(second.pk)]
    assert pending[0].payload == {"a.b": {"$c": 1}}
    assert instances.count({"occurrence_time__lte": utcnow(), "trigger": "events_pack.metric"}) == 2
    # And only one engine wins the move to processing
    taken = instances.update_if(first.pk, {"status": "pending"}, {"status": "processing"})
    assert taken.status == "processing"
    assert instances.update_if(first.pk, {"status": "pending"}, {"status": "processing"}) is None

    # Given enforcements of two rules; Then they are found by rule ref, trigger instance and execution
    enforcements = Access(RuleEnforcementDB)
    ok = enforcements.add_or_update(RuleEnforcementDB(
        trigger_instance_id=str(first.pk), execution_id="e1",
        rule={"ref": "events_pack.on_metric", "id": "r1", "uid": "rule:events_pack:on_metric"}))
    failed = enforcements.add_or_update(RuleEnforcementDB(
        trigger_instance_id=str(second.pk), rule={"ref": "events_pack.other", "id": "r2", "uid": "u"},
        status="failed", failure_reason="Failed to match rule events_pack.other: boom"))
    assert [e.pk for e in enforcements.query({"rule__ref": "events_pack.on_metric"})] == [ok.pk]
    assert [e.pk for e in enforcements.query({"trigger_instance_id": str(second.pk)})] == [failed.pk]
    assert [e.pk for e in enforcements.query({"execution_id": "e1"})] == [ok.pk]
    assert ok.status == "succeeded" and failed.failure_reason.endswith("boom")

    # Given a trace linking instance -> rule -> execution; Then each member leads back to it, once
    trace = Access(TraceDB).add_or_update(TraceDB(trace_tag="webhook-events/deploy-1"))
    links = Access(TraceComponentDB)
    trace_id = str(trace.pk)
    links.add_or_update(TraceComponentDB(trace_id=trace_id, component_type="trigger_instance",
                                         object_id=str(first.pk), ref="core.st2.webhook"))
    links.add_or_update(TraceComponentDB(trace_id=trace_id, component_type="rule", object_id="r1",
                                         ref="events_pack.on_metric", caused_by_type="trigger_instance",
                                         caused_by_id=str(first.pk)))
    execution = TraceComponentDB(trace_id=trace_id, component_type="action_execution", object_id="e1",
                                 ref="core.local", caused_by_type="rule", caused_by_id=f"r1:{first.pk}")
    links.add_or_update(execution)
    with pytest.raises(ConflictError):  # a redelivered message records nothing twice
        links.add_or_update(TraceComponentDB(trace_id=trace_id, component_type="action_execution",
                                             object_id="e1", caused_by_type="rule", caused_by_id=f"r1:{first.pk}"))
    found = links.get(component_type="action_execution", object_id="e1")
    assert found.trace_id == trace_id and found.caused_by == {"type": "rule", "id": f"r1:{first.pk}"}
    assert len(links.query({"trace_id": trace_id})) == 3
    assert Access(TraceDB).query({"trace_tag": "webhook-events/deploy-1"})[0].uid == f"trace:{trace_id}"
