"""/v1/triggertypes, /v1/triggers, /v1/triggerinstances and /v1/timers through the REST API.

No rules engine runs here: trigger instances stay as dispatch stored them.
The ``events_api`` fixture (the API with trigger types and rule types
registered) is shared with the other event-side API tests.
"""

from __future__ import annotations

import datetime
import re

import pytest
from test_api_support import api, api_settings, drain, publisher, settings  # noqa: F401 (fixtures)

from st2common.content import register
from st2common.content.bootstrap import Registration
from st2common.content.rules import register_rule_types
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import triggerinstances

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DISPATCH_QUEUE = "trigger_instances_dispatch.rules_engine"

METRIC_TYPE = {
    "name": "metric", "pack": "apitest", "description": "A metric crossed a threshold.",
    "payload_schema": {"type": "object", "properties": {"value": {"type": "number"}, "host": {"type": "string"}},
                       "required": ["value"]},
}


@pytest.fixture
def events_api(api, api_settings):
    """The API with the system trigger types, every pack's trigger types and the rule types registered."""
    report = register(api_settings, kinds=["triggers"])
    assert report.ok, report.errors
    # Only the rule types: registering "rules" would register the runners and actions again.
    run = Registration(api_settings)
    register_rule_types(run)
    assert run.report.ok, run.report.errors
    return api


def make_rule(api, name="on_hook", trigger=None, criteria=None, action=None, **extra) -> dict:
    """POST /v1/rules with a webhook rule by default; the created rule."""
    body = {"name": name, "pack": "apitest",
            "trigger": trigger or {"type": "core.st2.webhook", "parameters": {"url": "deploy"}},
            "criteria": criteria or {}, "action": action or {"ref": "core.noop"}, **extra}
    return api.post_json("/v1/rules", body).json


# -- trigger types ----------------------------------------------------------------------------


def test_trigger_list_shows_the_system_types_as_the_cli_asks(events_api):
    # When trigger types are listed the way `st2 trigger list` does
    response = events_api.get("/v1/triggertypes?include_attributes=ref,pack,description")
    rows = response.json
    # Then StackStorm's system types are there, sorted by ref, with only those columns plus id
    refs = [row["ref"] for row in rows]
    assert {"core.st2.webhook", "core.st2.IntervalTimer", "core.st2.generic.actiontrigger",
            "core.st2.key_value_pair.value_change", "core.st2.sensor.process_exit"} <= set(refs)
    assert refs == sorted(refs)
    assert all(set(row) <= {"id", "ref", "pack", "description"} and isinstance(row["id"], str) for row in rows)
    # And the page size is StackStorm's default of 100
    assert response.headers["X-Limit"] == "100"


def test_a_trigger_type_answers_by_ref_and_id_with_its_schemas(events_api):
    webhook = events_api.get("/v1/triggertypes/core.st2.webhook").json
    assert webhook["uid"] == "trigger_type:core:st2.webhook"
    assert webhook["parameters_schema"]["properties"]["url"] == {"type": "string", "required": True}
    assert events_api.get(f"/v1/triggertypes/{webhook['id']}").json == webhook
    missing = events_api.get("/v1/triggertypes/nope.nothing", status=404)
    assert missing.json["faultstring"] == 'Resource with a reference or id "nope.nothing" not found'


def test_trigger_type_create_gets_a_shadow_trigger_and_refuses_duplicates(events_api):
    # When a trigger type without parameters is created
    created = events_api.post_json("/v1/triggertypes", METRIC_TYPE, status=201).json
    # Then it is stored in StackStorm's shape
    assert created["ref"] == "apitest.metric" and created["uid"] == "trigger_type:apitest:metric"
    assert created["payload_schema"] == METRIC_TYPE["payload_schema"] and created["parameters_schema"] == {}
    # And its same-named shadow trigger exists, so it can be dispatched at once
    shadow = [t for t in events_api.get("/v1/triggers").json if t["type"] == "apitest.metric"]
    assert [(t["ref"], t["parameters"]) for t in shadow] == [("apitest.metric", {})]
    # And creating it again is a 409 naming the existing one
    conflict = events_api.post_json("/v1/triggertypes", METRIC_TYPE, status=409)
    assert conflict.json["conflict-id"] == created["id"]


def test_trigger_type_update_and_delete(events_api):
    created = events_api.post_json("/v1/triggertypes", METRIC_TYPE).json
    # When its GET body is edited and PUT back (as `st2 trigger update` does)
    body = dict(created, description="changed")
    updated = events_api.put_json(f"/v1/triggertypes/{created['id']}", body).json
    # Then the change is stored
    assert updated["description"] == "changed" and updated["id"] == created["id"]
    # When it is deleted
    events_api.delete("/v1/triggertypes/apitest.metric", status=204)
    # Then it and its shadow trigger are gone
    events_api.get("/v1/triggertypes/apitest.metric", status=404)
    assert not [t for t in events_api.get("/v1/triggers").json if t["type"] == "apitest.metric"]


def test_trigger_type_bad_input(events_api):
    # A body with a field StackStorm does not know names it
    unknown = events_api.post_json("/v1/triggertypes", dict(METRIC_TYPE, colour="red"), status=400)
    assert "colour" in unknown.json["faultstring"]
    # System types cannot be changed or deleted
    webhook = events_api.get("/v1/triggertypes/core.st2.webhook").json
    for response in (events_api.put_json("/v1/triggertypes/core.st2.webhook", webhook, status=400),
                     events_api.delete("/v1/triggertypes/core.st2.webhook", status=400)):
        assert response.json["faultstring"] == "Resources belonging to system level packs can't be manipulated"
    # A type rules use cannot be deleted
    events_api.post_json("/v1/triggertypes", METRIC_TYPE)
    make_rule(events_api, trigger={"type": "apitest.metric"})
    in_use = events_api.delete("/v1/triggertypes/apitest.metric", status=409)
    assert "apitest.on_hook" in in_use.json["faultstring"]


# -- triggers ---------------------------------------------------------------------------------


def test_triggers_crud(events_api):
    # When a parameterised trigger is created
    body = {"type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds", "delta": 5}}
    created = events_api.post_json("/v1/triggers", body, status=201).json
    # Then it gets a UUID name in its type's pack, and StackStorm's uid with the parameters' hash
    assert created["type"] == "core.st2.IntervalTimer" and created["pack"] == "core"
    assert created["uid"] == f"trigger:core:{created['name']}:{created['uid'].rsplit(':', 1)[1]}"
    # And creating the same type and parameters again answers the same trigger
    assert events_api.post_json("/v1/triggers", body, status=201).json["id"] == created["id"]
    # And it answers by id, and in the list (filtered by type, as `st2 trigger getspecs` asks)
    assert events_api.get(f"/v1/triggers/{created['id']}").json == created
    listed = events_api.get("/v1/triggers/?type=core.st2.IntervalTimer").json
    assert [t["id"] for t in listed] == [created["id"]]
    # When its parameters are changed
    changed = dict(created, parameters={"unit": "minutes", "delta": 1})
    assert events_api.put_json(f"/v1/triggers/{created['id']}", changed).json["parameters"]["unit"] == "minutes"
    # And it is deleted
    events_api.delete(f"/v1/triggers/{created['id']}", status=204)
    events_api.get(f"/v1/triggers/{created['id']}", status=404)


def test_trigger_bad_input(events_api):
    # An unknown type is a 400 naming it
    unknown = events_api.post_json("/v1/triggers", {"type": "nope.nothing"}, status=400)
    assert unknown.json["faultstring"] == 'trigger type "nope.nothing" is not registered'
    # Parameters that do not fit the type name the field
    bad = events_api.post_json("/v1/triggers", {"type": "core.st2.IntervalTimer",
                                                "parameters": {"unit": "fortnights", "delta": 1}}, status=400)
    assert "parameters.unit" in bad.json["faultstring"]
    # A trigger a rule uses cannot be deleted
    rule = make_rule(events_api)
    trigger = TriggerDB.objects.get(ref=rule["trigger"]["ref"])
    in_use = events_api.delete(f"/v1/triggers/{trigger.pk}", status=409)
    assert "used by 1 rule" in in_use.json["faultstring"]


# -- trigger instances ------------------------------------------------------------------------


def dispatch(publisher, ref, payload, seconds_ago=0):
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    return triggerinstances.dispatch(publisher, ref, payload, occurrence_time=when)


def test_trigger_instance_list_and_get_as_the_cli_asks(events_api, publisher):
    # Given three instances of two triggers
    events_api.post_json("/v1/triggertypes", METRIC_TYPE)
    old = dispatch(publisher, "apitest.metric", {"value": 1}, seconds_ago=60)
    new = dispatch(publisher, "apitest.metric", {"value": 2, "host": "a"})
    other = dispatch(publisher, "core.st2.sensor.process_exit", {"id": "x", "exit_code": 1}, seconds_ago=30)
    # When they are listed the way `st2 trigger-instance list` does
    response = events_api.get("/v1/triggerinstances/?include_attributes=id,trigger,occurrence_time,status&limit=50")
    rows = response.json
    # Then they come newest first with those columns
    assert [row["id"] for row in rows] == [str(new.pk), str(other.pk), str(old.pk)]
    assert set(rows[0]) == {"id", "trigger", "occurrence_time", "status"}
    assert rows[0]["status"] == "pending" and ISO.match(rows[0]["occurrence_time"])
    assert response.headers["X-Total-Count"] == "3"
    # And each answers by id with its payload
    one = events_api.get(f"/v1/triggerinstances/{new.pk}").json
    assert one["payload"] == {"value": 2, "host": "a"} and one["trigger"] == "apitest.metric"
    events_api.get("/v1/triggerinstances/000000000000000000000000", status=404)


def test_trigger_instance_filters(events_api, publisher):
    events_api.post_json("/v1/triggertypes", METRIC_TYPE)
    old = dispatch(publisher, "apitest.metric", {"value": 1}, seconds_ago=60)
    new = dispatch(publisher, "apitest.metric", {"value": 2})
    other = dispatch(publisher, "core.st2.sensor.process_exit", {"id": "x"}, seconds_ago=30)
    Access(TriggerInstanceDB).update_if(new.pk, {}, {"status": "processed"})

    def ids(query):
        return [row["id"] for row in events_api.get(f"/v1/triggerinstances?{query}").json]

    assert ids("trigger=apitest.metric") == [str(new.pk), str(old.pk)]
    assert ids("trigger=apitest.metric,core.st2.sensor.process_exit") == [str(new.pk), str(other.pk), str(old.pk)]
    assert ids("trigger_type=core.st2.sensor.process_exit") == [str(other.pk)]
    assert ids("trigger_type=core.st2.webhook") == []
    assert ids("status=processed") == [str(new.pk)]
    middle = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=45)).isoformat()
    assert ids(f"timestamp_gt={middle.replace('+', '%2B')}") == [str(new.pk), str(other.pk)]
    assert ids(f"timestamp_lt={middle.replace('+', '%2B')}") == [str(old.pk)]
    bad = events_api.get("/v1/triggerinstances?timestamp_gt=yesterday", status=400)
    assert "timestamp_gt" in bad.json["faultstring"]


def test_re_emit_dispatches_the_payload_again_as_a_new_instance(events_api, publisher, api_settings):
    events_api.post_json("/v1/triggertypes", METRIC_TYPE)
    original = dispatch(publisher, "apitest.metric", {"value": 7})
    drain(api_settings, DISPATCH_QUEUE)
    # When it is re-emitted the way `st2 trigger-instance re-emit` does (body null)
    answer = events_api.post(f"/v1/triggerinstances/{original.pk}/re_emit", "null",
                             content_type="application/json").json
    # Then the answer is StackStorm's message and payload, with the original named in its context
    assert answer == {"message": f"Trigger instance {original.pk} succesfully re-sent.",
                      "payload": {"value": 7, "__context": {"original_id": str(original.pk)}}}
    # And a new instance is stored and handed to the rules engines
    rows = events_api.get("/v1/triggerinstances?trigger=apitest.metric").json
    assert len(rows) == 2 and rows[0]["payload"]["__context"] == {"original_id": str(original.pk)}
    assert [body["id"] for body in drain(api_settings, DISPATCH_QUEUE)] == [rows[0]["id"]]
    # And re-emitting an unknown instance is a 404
    events_api.post("/v1/triggerinstances/000000000000000000000000/re_emit", status=404)


# -- timers -----------------------------------------------------------------------------------


def test_timers_list_the_timer_triggers_rules_created(events_api):
    # Given rules on an interval timer and a cron timer, and a webhook rule
    make_rule(events_api, "every_5s", trigger={"type": "core.st2.IntervalTimer",
                                                "parameters": {"unit": "seconds", "delta": 5}})
    make_rule(events_api, "nightly", trigger={"type": "core.st2.CronTimer",
                                               "parameters": {"hour": 2, "minute": 0, "timezone": "UTC"}})
    make_rule(events_api, "hook")
    # When timers are listed the way `st2 timer list` does
    rows = events_api.get("/v1/timers").json
    # Then only the two timers come back, each with its type and parameters
    assert sorted((row["type"], row["parameters"].get("delta")) for row in rows) == [
        ("core.st2.CronTimer", None), ("core.st2.IntervalTimer", 5)]
    assert all(isinstance(row["id"], str) and row["uid"].startswith("trigger:") for row in rows)
    # And the timer_type filter picks one kind
    cron = events_api.get("/v1/timers/?timer_type=core.st2.CronTimer").json
    assert [row["parameters"]["hour"] for row in cron] == [2]
    # And one answers by ref or id
    assert events_api.get(f"/v1/timers/{cron[0]['ref']}").json == cron[0]
    assert events_api.get(f"/v1/timers/{cron[0]['id']}").json == cron[0]
    # And a timer type that is not one is a 400 listing the valid ones; a webhook trigger is no timer
    bad = events_api.get("/v1/timers?timer_type=core.st2.webhook", status=400)
    assert "core.st2.IntervalTimer" in bad.json["faultstring"]
    webhook = Access(TriggerDB).get(type="core.st2.webhook")
    events_api.get(f"/v1/timers/{webhook.pk}", status=404)
