"""The rules engine's records written in their stored shape, with the instance's finish in the same batch.

Same engine as test_rules_engine (its fixtures, both buses, the embedded
database). Enforcements and trace links are inserted as plain documents and
the move to processed shares their batch; the rule, trigger and trigger type
copied onto each execution are built once per stored version. What is checked
is what a user reads back: the same documents, the same statuses, the copy of
a rule that follows the rule and its action's secrets.
"""

from __future__ import annotations

import datetime

from test_rules_engine import enforcements_of, engine, execution_of, start_engine  # noqa: F401 (fixtures)
from test_rules_engine_batches import status_of, stored_pending, together

from st2common import statuses
from st2common.models.db.action import ActionDB
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import TraceComponentDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import trace as trace_service
from st2common.services import triggerinstances
from st2rulesengine.batches import Records, RecordWriter


def test_enforcements_and_links_read_back_as_the_documents_they_always_were(engine):
    # Given a rule that enforces and one whose parameters cannot render, on the same trigger
    good = engine.add_rule("good", {"cmd": "echo {{ trigger.host }}"})
    bad = engine.add_rule("bad", {"cmd": "echo {{ trigger.nope.deeper }}"})
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    # When an instance matches both
    instance = engine.processed(engine.dispatch({"host": "db1"}))
    # Then it is processed, and each enforcement loads with every field it had
    assert instance.status == statuses.TRIGGER_INSTANCE_PROCESSED
    by_ref = {e.rule["ref"]: e for e in enforcements_of(instance)}
    succeeded, failed = by_ref[good.ref], by_ref[bad.ref]
    assert isinstance(succeeded, RuleEnforcementDB) and succeeded.status == statuses.ENFORCEMENT_SUCCEEDED
    assert succeeded.rule == {"ref": good.ref, "id": str(good.pk), "uid": good.uid}
    assert succeeded.failure_reason is None
    assert execution_of(succeeded).parameters == {"cmd": "echo db1"}
    assert failed.status == statuses.ENFORCEMENT_FAILED and failed.execution_id is None
    assert "nope" in failed.failure_reason
    for enforcement in (succeeded, failed):
        assert enforcement.trigger_instance_id == str(instance.pk)
        assert enforcement.enforced_at.replace(tzinfo=datetime.timezone.utc) >= before
    # And the trace holds the instance, both rules and the one execution, each link loadable
    trace = trace_service.trace_of("trigger_instance", instance.pk)
    links = trace_service.components(trace)
    assert all(isinstance(link, TraceComponentDB) and link.link_key for link in links)
    assert sorted((link.component_type, link.object_id) for link in links) == sorted([
        ("trigger_instance", str(instance.pk)), ("rule", str(good.pk)), ("rule", str(bad.pk)),
        ("action_execution", succeeded.execution_id)])
    execution_link = next(link for link in links if link.component_type == "action_execution")
    assert execution_link.caused_by == {"type": "rule", "id": f"{good.pk}:{instance.pk}"}


def test_the_rule_copied_onto_executions_follows_the_rule_and_its_actions_secrets(engine):
    # Given an action whose parameter is not secret yet, and a rule passing it a payload value
    action = ActionDB(name="turning", pack="tests", runner_type={"name": "noop"},
                      parameters={"token": {"type": "string"}})
    action.set_identity()
    Access(ActionDB).add_or_update(action)
    rule = engine.add_rule("copied", {"token": "{{ trigger.host }}"}, action="tests.turning")

    def rule_copy(host: str) -> dict:
        [enforcement] = enforcements_of(engine.processed(engine.dispatch({"host": host})))
        return execution_of(enforcement).rule

    # When it is enforced twice, Then both executions carry the rule as it is, the parameter shown
    assert rule_copy("a")["action"]["parameters"] == {"token": "{{ trigger.host }}"}
    assert rule_copy("b") == rule_copy("c")
    # When the action's parameter becomes secret, Then the next copy masks it
    action.parameters = {"token": {"type": "string", "secret": True}}
    Access(ActionDB).add_or_update(action)
    assert rule_copy("d")["action"]["parameters"] == {"token": "********"}
    # When the rule itself changes, Then the next copy is the changed rule
    version = engine.rules.version
    rule.description = "changed"
    Access(RuleDB, engine.publisher).add_or_update(rule)
    engine.wait_until(lambda: engine.rules.version > version, "the changed rule in the index")
    copy = rule_copy("e")
    assert copy["description"] == "changed" and copy["action"]["parameters"] == {"token": "********"}


def test_records_are_kept_when_another_engine_finished_the_instance(engine):
    # Given two instances this engine claimed, one of which the sweep of another engine took over since
    writer = RecordWriter()
    instances = [stored_pending({"host": f"h{i}"}, status=statuses.TRIGGER_INSTANCE_PROCESSING) for i in range(2)]
    mine, taken = (Access(TriggerInstanceDB).get_by_id(i.pk) for i in instances)
    assert triggerinstances.update_instance_status(taken, statuses.TRIGGER_INSTANCE_PROCESSING_FAILED) is not None
    trace = trace_service.create("records-test")

    def records_of(instance: TriggerInstanceDB) -> Records:
        records = Records(trace=trace)
        records.enforcements.append({"trigger_instance_id": str(instance.pk), "status": "failed",
                                     "rule": {"ref": "tests.r", "id": "r", "uid": "rule:tests:r"},
                                     "enforced_at": datetime.datetime.now(datetime.timezone.utc),
                                     "failure_reason": "test"})
        records.links.append(trace_service.rule_link("r", "tests.r", instance.pk))
        return records

    # When both are stored and finished in one batch
    loaded = [Access(TriggerInstanceDB).get_by_id(i.pk) for i in instances]
    results = together(lambda instance: writer.store_and_finish(records_of(instance), instance), loaded)
    # Then the batch moved one of the two and cannot say which; the records of both are stored,
    # and the one taken over keeps the other engine's status
    assert results == [None, None]
    assert status_of(mine) == statuses.TRIGGER_INSTANCE_PROCESSED
    assert status_of(taken) == statuses.TRIGGER_INSTANCE_PROCESSING_FAILED
    for instance in instances:
        [enforcement] = enforcements_of(instance)
        assert enforcement.failure_reason == "test"
    assert Access(TraceComponentDB).count({"trace_id": str(trace.pk)}) == 2
    # When one already processed is finished again (a redelivery), Then the result says this write did not
    assert writer.store_and_finish(Records(), Access(TriggerInstanceDB).get_by_id(mine.pk)) is False


def test_links_stored_before_are_skipped_and_the_new_ones_of_the_batch_stored(engine):
    # Given a trace holding one rule link already (an earlier, interrupted attempt)
    trace = trace_service.create("repeat-test")
    first = trace_service.rule_link("r1", "tests.r1", "i1")
    assert trace_service.add_links(trace, [first]) == 1
    other = trace_service.create("other-test")
    # When that link is stored again in one batch with new links of both traces
    second = trace_service.rule_link("r2", "tests.r2", "i1")
    third = trace_service.execution_link("e1", "core.local", "r1", "i1")
    trace_service.add_links_of([(trace, [first, second]), (other, [third])])
    # Then each link is stored once, the repeat refused by its unique key rather than doubled
    stored = sorted((link.trace_id, link.object_id) for link in Access(TraceComponentDB).query(
        raw={"trace_id": {"$in": [str(trace.pk), str(other.pk)]}}))
    assert stored == sorted([(str(trace.pk), "r1"), (str(trace.pk), "r2"), (str(other.pk), "e1")])
    assert trace_service.add_links(trace, [first, second]) == 0
