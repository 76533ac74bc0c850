"""Timers in the rules engine: rules on timer triggers fire on time, follow rule changes, and fire each tick once.

The rules engine runs in this process (green threads) as st2rulesengine wires
it, timers included, on the embedded database and each bus in turn. Rules are
written as the API writes them: the trigger for their parameters found or
created (publishing a trigger event), the rule stored, the trigger recounted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from st2common import statuses
from st2common.content import bootstrap
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.persistence import db as database
from st2common.persistence.access import Access
from st2common.services import trace as trace_service
from st2common.services import triggers, triggertypes
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2rulesengine.cmd import RulesEngineService
from st2rulesengine.timers import TimerEngine, tick_id
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]
INTERVAL = triggertypes.INTERVAL_TIMER_TRIGGER_REF
EVERY_SECOND = {"unit": "seconds", "delta": 1}


def wait_until(check, what: str, timeout: float = 10.0):
    """Poll check until it returns something truthy; that value (AssertionError at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def publisher_for(settings) -> Publisher:
    return Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))


def save_rule(publisher, name: str, trigger_parameters: dict, rule: RuleDB | None = None,
              trigger_type: str = INTERVAL) -> RuleDB:
    """Create or change an enabled rule running core.noop on a timer, as POST/PUT /rules do."""
    type_doc = triggertypes.get_trigger_type(trigger_type)
    parameters = triggertypes.validate_parameters(type_doc, trigger_parameters)
    trigger, _ = triggers.get_or_create_trigger(type_doc, parameters, publisher)
    previous = rule.trigger["ref"] if rule is not None else None
    rule = rule or RuleDB(name=name, pack="tests", enabled=True, action={"ref": "core.noop", "parameters": {}})
    rule.trigger = {"type": trigger_type, "parameters": parameters, "ref": trigger.ref}
    rule.set_identity()
    Access(RuleDB, publisher).add_or_update(rule)
    triggers.update_ref_count(trigger.ref, publisher)
    if previous and previous != trigger.ref:
        triggers.update_ref_count(previous, publisher)
    return rule


def delete_rule(publisher, rule: RuleDB) -> None:
    """Delete a rule as DELETE /rules does: its trigger goes too when no other rule uses it."""
    Access(RuleDB, publisher).delete(rule)
    triggers.update_ref_count(rule.trigger["ref"], publisher)


def instances_of(trigger_ref: str) -> list[TriggerInstanceDB]:
    return Access(TriggerInstanceDB).query({"trigger": trigger_ref}, order_by=["occurrence_time"])


def enforcements_of(rule: RuleDB) -> list[RuleEnforcementDB]:
    return Access(RuleEnforcementDB).query(raw={"rule.id": str(rule.pk)})


@pytest.fixture
def engine(bus_settings, tmp_path, embedded_mongo):
    """A rules engine (timers included) consuming in this process, core's actions registered."""
    settings = make_settings(tmp_path, embedded_mongo, bus_settings.messaging.url, {
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
    })
    client = database.connect(settings)
    publisher = publisher_for(settings)
    publisher.declare_work_queues()
    bootstrap.register(settings, kinds=["runners", "actions"])
    service = RulesEngineService(settings, publisher)
    service.start()
    yield service
    service.stop()
    publisher.close()
    client.drop_database(settings.database.db_name)
    database.disconnect()


def test_an_interval_timer_rule_fires_every_second_and_stops_once_deleted(engine):
    # Given an enabled rule on core.st2.IntervalTimer every 1 second, created while the engine runs
    started = time.monotonic()
    rule = save_rule(engine.publisher, "every_second", EVERY_SECOND)
    trigger_ref = rule.trigger["ref"]
    # When 5 seconds pass at most
    # Then the rule was enforced at least twice, each time requesting core.noop
    enforced = wait_until(lambda: len(enforcements_of(rule)) >= 2 and enforcements_of(rule), "two enforcements", 5)
    assert time.monotonic() - started < 5
    assert {e.status for e in enforced} == {statuses.ENFORCEMENT_SUCCEEDED}
    executions = [Access(ExecutionDB).get_by_id(e.execution_id) for e in enforced]
    assert {execution.action_ref for execution in executions} == {"core.noop"}
    # And each instance carries StackStorm's timer payload and joins the timer's trace
    instance = instances_of(trigger_ref)[0]
    assert set(instance.payload) == {"executed_at", "schedule"} and instance.payload["schedule"] is None
    assert instance.payload["executed_at"].endswith("+00:00")
    trace = trace_service.trace_of("trigger_instance", instance.pk)
    assert trace.trace_tag == f"st2.IntervalTimer-{trigger_ref.partition('.')[2]}"
    assert trace_service.trace_of("trigger_instance", instances_of(trigger_ref)[1].pk).pk == trace.pk

    # When the rule is deleted (its trigger goes with it)
    delete_rule(engine.publisher, rule)
    assert Access(TriggerDB).get(ref=trigger_ref) is None
    wait_until(lambda: all(t.ref != trigger_ref for t in engine.timers.timers()), "the timer dropped")
    fired = len(instances_of(trigger_ref))
    # Then no tick fires any more (two ticks' time)
    time.sleep(2.2)
    assert len(instances_of(trigger_ref)) == fired


def test_a_timer_changed_through_its_rule_takes_its_new_schedule_without_a_restart(engine):
    # Given a rule on an hourly timer, which has not fired
    rule = save_rule(engine.publisher, "hourly", {"unit": "hours", "delta": 1})
    hourly_ref = rule.trigger["ref"]
    wait_until(lambda: any(t.ref == hourly_ref for t in engine.timers.timers()), "the hourly timer scheduled")
    # When the rule is changed to every second
    rule = save_rule(engine.publisher, "hourly", EVERY_SECOND, rule)
    # Then the new timer fires and the rule is enforced from it, and the hourly timer is gone
    wait_until(lambda: enforcements_of(rule), "an enforcement from the new timer", 5)
    assert Access(TriggerDB).get(ref=hourly_ref) is None
    wait_until(lambda: [t.ref for t in engine.timers.timers()] == [rule.trigger["ref"]], "only the new timer")
    assert instances_of(hourly_ref) == []


def test_a_disabled_timer_engine_fires_nothing(bus_settings, tmp_path, embedded_mongo):
    # Given a rules engine with [timersengine] enable = False
    settings = make_settings(tmp_path, embedded_mongo, bus_settings.messaging.url,
                             {"ST2_TIMERSENGINE__ENABLE": "False"})
    client = database.connect(settings)
    publisher = publisher_for(settings)
    service = RulesEngineService(settings, publisher)
    try:
        service.start()
        # Then it holds no timer engine at all
        assert service.timers is None
    finally:
        service.stop()
        publisher.close()
        client.drop_database(settings.database.db_name)
        database.disconnect()


def test_two_timer_engines_fire_each_tick_once(settings, db):
    # Given an every-second timer trigger and two timer engines (two rules engine copies) on one database
    publishers = [publisher_for(settings) for _ in range(2)]
    triggertypes.register_system_trigger_types(publishers[0])
    trigger, _ = triggers.get_or_create_trigger(triggertypes.get_trigger_type(INTERVAL), EVERY_SECOND, publishers[0])
    engines = [TimerEngine(publisher, "UTC") for publisher in publishers]
    try:
        # When both run for a few ticks
        for engine in engines:
            engine.start()
        wait_until(lambda: len(instances_of(trigger.ref)) >= 3, "three ticks", 6)
    finally:
        for engine in engines:
            engine.stop()
    # Then every tick was stored once, under the id of its tick, one second apart
    instances = instances_of(trigger.ref)
    ticks = [instance.pk.generation_time for instance in instances]
    assert [instance.pk for instance in instances] == [tick_id(str(trigger.pk), tick) for tick in ticks]
    assert len(set(ticks)) == len(ticks)
    assert all((b - a).total_seconds() == 1 for a, b in zip(ticks, ticks[1:]))

    # And when both engines find the same tick due at once, one dispatches it and the other nothing
    for engine in engines:
        [timer] = engine.timers()
        timer.next_fire = ticks[-1].replace(year=ticks[-1].year + 1)
    due = engines[0].timers()[0].next_fire
    assert sum(engine.fire_due(due) for engine in engines) == 1
    assert Access(TriggerInstanceDB).get(id=tick_id(str(trigger.pk), due)) is not None
    for publisher in publishers:
        publisher.close()
