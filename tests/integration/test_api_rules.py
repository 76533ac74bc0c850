"""/v1/rules, /v1/ruletypes and /v1/ruleenforcements through the REST API.

No rules engine runs here: the tests assert what the API stores (rules and
the triggers they link) and show (enforcements written as an engine would).
"""

from __future__ import annotations

import datetime

from test_api_support import (  # noqa: F401 (fixtures)
    NESTED_SECRET, SECRET, api, api_settings, publisher, settings,
)
from test_api_triggers import events_api, make_rule  # noqa: F401 (fixture)

from st2common.models.api.base import MASKED
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services import triggerinstances

CRITERIA = {"trigger.body.env": {"type": "equals", "pattern": "prod"}}
LOCAL = {"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.msg }}"}}


def trigger_of(rule: dict) -> TriggerDB | None:
    return Access(TriggerDB).get(ref=rule["trigger"]["ref"])


# -- create, get, list ------------------------------------------------------------------------


def test_create_stores_a_disabled_rule_linked_to_a_trigger_for_its_parameters(events_api):
    # When a webhook rule is created without pack or enabled, with a url in slashes
    body = {"name": "on_deploy", "trigger": {"type": "core.st2.webhook", "parameters": {"url": "/deploy/"}},
            "criteria": CRITERIA, "action": LOCAL}
    rule = events_api.post_json("/v1/rules", body, status=201).json
    # Then it is stored in StackStorm's shape: pack default, disabled, standard, the caller in its context
    assert rule["ref"] == "default.on_deploy" and rule["uid"] == "rule:default:on_deploy"
    assert rule["enabled"] is False and rule["type"] == {"ref": "standard", "parameters": {}}
    assert rule["context"] == {"user": "stanley"}
    assert rule["criteria"] == CRITERIA and rule["action"] == LOCAL
    # And its trigger is a new parameterised trigger (UUID name) counted once
    assert rule["trigger"]["type"] == "core.st2.webhook" and rule["trigger"]["parameters"] == {"url": "deploy"}
    trigger = trigger_of(rule)
    assert trigger.parameters == {"url": "deploy"} and trigger.ref_count == 1
    assert rule["trigger"]["ref"] == f"core.{trigger.name}" and len(trigger.name) == 36
    # And it answers by ref and by id
    assert events_api.get("/v1/rules/default.on_deploy").json == rule
    assert events_api.get(f"/v1/rules/{rule['id']}").json == rule
    missing = events_api.get("/v1/rules/default.nothing", status=404)
    assert missing.json["faultstring"] == 'Resource with a reference or id "default.nothing" not found'


def test_two_rules_on_one_hook_share_its_trigger(events_api):
    first = make_rule(events_api, "first")
    second = make_rule(events_api, "second", trigger={"type": "core.st2.webhook", "parameters": {"url": "/deploy"}})
    assert first["trigger"]["ref"] == second["trigger"]["ref"]
    assert trigger_of(first).ref_count == 2
    # A parameter-less trigger type's rules use its shadow trigger
    shadow = make_rule(events_api, "on_exit", trigger={"type": "core.st2.sensor.process_exit"})
    assert shadow["trigger"] == {"type": "core.st2.sensor.process_exit", "parameters": {},
                                 "ref": "core.st2.sensor.process_exit"}


def test_rule_list_as_the_cli_asks_with_filters(events_api):
    make_rule(events_api, "b_hook", enabled=True, description="hook rule")
    make_rule(events_api, "a_timer", trigger={"type": "core.st2.IntervalTimer",
                                               "parameters": {"unit": "seconds", "delta": 5}},
              action={"ref": "core.local", "parameters": {"cmd": "date"}})
    events_api.post_json("/v1/rules", {"name": "elsewhere", "trigger": {"type": "core.st2.sensor.process_exit"},
                                       "action": {"ref": "core.noop"}})
    # When rules are listed the way `st2 rule list` does
    response = events_api.get("/v1/rules/?include_attributes=ref,pack,description,enabled&limit=50")
    rows = response.json
    # Then they come sorted by pack and name with those columns (plus id)
    assert [row["ref"] for row in rows] == ["apitest.a_timer", "apitest.b_hook", "default.elsewhere"]
    assert set(rows[1]) == {"id", "ref", "pack", "description", "enabled"} and rows[1]["enabled"] is True
    assert response.headers["X-Total-Count"] == "3" and response.headers["X-Limit"] == "50"

    def refs(query):
        return [row["ref"] for row in events_api.get(f"/v1/rules?{query}").json]

    # And each of StackStorm's filters narrows it
    assert refs("pack=default") == ["default.elsewhere"]
    assert refs("action=core.local") == ["apitest.a_timer"]
    assert refs("enabled=true") == ["apitest.b_hook"]
    assert refs("enabled=0") == ["apitest.a_timer", "default.elsewhere"]
    assert refs("name=a_timer,elsewhere") == ["apitest.a_timer", "default.elsewhere"]
    assert refs("user=stanley") == ["apitest.a_timer", "apitest.b_hook", "default.elsewhere"]
    # And the trigger filter takes the trigger's ref, or its type (`st2 rule list -g <type>`)
    hook = events_api.get("/v1/rules/apitest.b_hook").json
    assert refs(f"trigger={hook['trigger']['ref']}") == ["apitest.b_hook"]
    assert refs("trigger=core.st2.IntervalTimer") == ["apitest.a_timer"]
    # And --iftt's columns are dicts
    iftt = events_api.get("/v1/rules?include_attributes=ref,trigger.ref,action.ref,enabled").json
    assert iftt[1] == {"id": hook["id"], "ref": "apitest.b_hook", "trigger": {"ref": hook["trigger"]["ref"]},
                       "action": {"ref": "core.noop"}, "enabled": True}


def test_rule_views_add_action_and_trigger_descriptions(events_api):
    make_rule(events_api, "hook", action=LOCAL)
    views = events_api.get("/v1/rules/views").json
    assert views[0]["action"]["description"] == "Action that executes an arbitrary Linux command on the localhost."
    assert views[0]["trigger"]["description"].startswith("Trigger type for registering webhooks")
    one = events_api.get("/v1/rules/views/apitest.hook").json
    assert one["action"]["description"] == views[0]["action"]["description"]


# -- bad input --------------------------------------------------------------------------------


def test_an_unknown_trigger_type_or_action_is_a_400_naming_it(events_api):
    no_type = events_api.post_json("/v1/rules", {"name": "x", "trigger": {"type": "nope.hook"},
                                                 "action": {"ref": "core.noop"}}, status=400)
    assert no_type.json["faultstring"] == 'trigger type "nope.hook" is not registered'
    no_action = events_api.post_json("/v1/rules", {"name": "x", "trigger": {"type": "core.st2.sensor.process_exit"},
                                                   "action": {"ref": "core.teleport"}}, status=400)
    assert no_action.json["faultstring"] == 'action "core.teleport" is not registered'
    # And nothing was left behind
    assert RuleDB.objects.count() == 0


def test_an_unknown_operator_is_a_400_listing_the_valid_ones(events_api):
    response = events_api.post_json("/v1/rules", {
        "name": "x", "trigger": {"type": "core.st2.webhook", "parameters": {"url": "deploy"}},
        "criteria": {"trigger.body.env": {"type": "resembles", "pattern": "prod"}},
        "action": {"ref": "core.noop"}}, status=400)
    message = response.json["faultstring"]
    assert 'unknown operator "resembles"' in message and "criteria.trigger.body.env.type" in message
    for operator in ("equals", "matchwildcard", "timediff_lt", "search", "ninside", "icontains"):
        assert operator in message
    # And the webhook trigger created for it was not left behind
    assert not TriggerDB.objects(type="core.st2.webhook")


def test_trigger_parameters_are_checked_against_the_trigger_type(events_api):
    missing = events_api.post_json("/v1/rules", {
        "name": "x", "trigger": {"type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds"}},
        "action": {"ref": "core.noop"}}, status=400)
    assert "trigger.parameters.delta" in missing.json["faultstring"]
    extra = events_api.post_json("/v1/rules", {
        "name": "x", "trigger": {"type": "core.st2.webhook", "parameters": {"url": "a", "colour": "red"}},
        "action": {"ref": "core.noop"}}, status=400)
    assert "trigger.parameters.colour" in extra.json["faultstring"]
    no_name = events_api.post_json("/v1/rules", {"trigger": {"type": "core.st2.webhook"},
                                                 "action": {"ref": "core.noop"}}, status=400)
    assert no_name.json["faultstring"] == 'name: required field "name" is missing'


def test_a_duplicate_rule_is_a_409_naming_the_existing_one(events_api):
    rule = make_rule(events_api)
    response = events_api.post_json("/v1/rules", {"name": "on_hook", "pack": "apitest",
                                                  "trigger": {"type": "core.st2.sensor.process_exit"},
                                                  "action": {"ref": "core.noop"}}, status=409)
    assert response.json["conflict-id"] == rule["id"]


# -- update, enable, delete -------------------------------------------------------------------


def test_enable_and_disable_round_trip_the_get_body(events_api):
    rule = make_rule(events_api, criteria=CRITERIA, action=LOCAL)
    # When the CLI enables it: the GET body minus ref, enabled flipped, PUT to the id
    body = {k: v for k, v in events_api.get("/v1/rules/apitest.on_hook").json.items() if k != "ref"}
    enabled = events_api.put_json(f"/v1/rules/{rule['id']}", dict(body, enabled=True)).json
    # Then only enabled changed, and the rule keeps its trigger
    assert enabled["enabled"] is True
    assert {k: v for k, v in enabled.items() if k != "enabled"} == {k: v for k, v in rule.items() if k != "enabled"}
    assert trigger_of(rule).ref_count == 1
    # And disabling works the same way
    assert events_api.put_json("/v1/rules/apitest.on_hook", dict(body, enabled=False)).json["enabled"] is False


def test_update_moves_the_rule_to_a_new_trigger_and_drops_the_old_one(events_api):
    rule = make_rule(events_api)
    old_trigger = rule["trigger"]["ref"]
    # When the rule's hook url changes
    body = dict(rule, trigger={"type": "core.st2.webhook", "parameters": {"url": "release"}})
    updated = events_api.put_json("/v1/rules/apitest.on_hook", body).json
    # Then it is linked to a trigger for the new url, and the unused old trigger is deleted
    assert updated["trigger"]["parameters"] == {"url": "release"} and updated["trigger"]["ref"] != old_trigger
    assert trigger_of(updated).ref_count == 1
    assert Access(TriggerDB).get(ref=old_trigger) is None
    # And an update with bad input changes nothing
    bad = dict(rule, action={"ref": "core.teleport"})
    events_api.put_json("/v1/rules/apitest.on_hook", bad, status=400)
    assert events_api.get("/v1/rules/apitest.on_hook").json == updated


def test_delete_removes_the_rule_and_its_unused_trigger(events_api):
    rule = make_rule(events_api)
    other = make_rule(events_api, "other")
    events_api.delete("/v1/rules/apitest.on_hook", status=204)
    events_api.get("/v1/rules/apitest.on_hook", status=404)
    # The trigger another rule still uses stays, counted once
    assert trigger_of(other).ref_count == 1
    events_api.delete(f"/v1/rules/{other['id']}", status=204)
    assert Access(TriggerDB).get(ref=rule["trigger"]["ref"]) is None


def test_secret_action_parameters_are_masked_and_survive_a_round_trip(events_api):
    # Given a rule that passes a secret to an action
    action = {"ref": "apitest.secretive",
              "parameters": {"password": SECRET, "count": 2, "creds": {"token": NESTED_SECRET, "user": "ann"}}}
    rule = make_rule(events_api, action=action)
    # Then no answer shows the secret (the guard checks every response), unless asked for
    assert rule["action"]["parameters"] == {"password": MASKED, "count": 2,
                                            "creds": {"token": MASKED, "user": "ann"}}
    assert events_api.get("/v1/rules").json[0]["action"]["parameters"]["password"] == MASKED
    assert events_api.get("/v1/rules/views").json[0]["action"]["parameters"]["password"] == MASKED
    shown = events_api.get("/v1/rules/apitest.on_hook?show_secrets=true").json
    assert shown["action"]["parameters"]["password"] == SECRET
    # When the CLI enables it by sending the masked GET body back
    body = {k: v for k, v in events_api.get("/v1/rules/apitest.on_hook").json.items() if k != "ref"}
    events_api.put_json(f"/v1/rules/{rule['id']}", dict(body, enabled=True))
    # Then the stored secrets are still the real ones
    stored = RuleDB.objects.get(id=rule["id"]).action["parameters"]
    assert stored["password"] == SECRET and stored["creds"]["token"] == NESTED_SECRET
    # And editing a field beside a masked secret keeps the secret too
    body["action"]["parameters"]["creds"]["user"] = "bob"
    events_api.put_json(f"/v1/rules/{rule['id']}", body)
    assert RuleDB.objects.get(id=rule["id"]).action["parameters"]["creds"] == {"token": NESTED_SECRET, "user": "bob"}


# -- rule types -------------------------------------------------------------------------------


def test_rule_types(events_api):
    rows = events_api.get("/v1/ruletypes").json
    assert [row["name"] for row in rows] == ["backstop", "standard"]
    standard = rows[1]
    assert set(standard) == {"id", "name", "description", "enabled", "parameters"}
    assert events_api.get(f"/v1/ruletypes/{standard['id']}").json == standard
    assert events_api.get("/v1/ruletypes/standard").json == standard


# -- rule enforcements ------------------------------------------------------------------------


def enforce(rule: dict, instance_id: str, execution_id: str | None = None, seconds_ago: int = 0,
            failure: str | None = None) -> RuleEnforcementDB:
    """An enforcement as the rules engine writes it."""
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    doc = RuleEnforcementDB(trigger_instance_id=instance_id, execution_id=execution_id,
                            rule={"ref": rule["ref"], "id": rule["id"], "uid": rule["uid"]}, enforced_at=when,
                            status="failed" if failure else "succeeded", failure_reason=failure)
    return Access(RuleEnforcementDB).add_or_update(doc)


def test_rule_enforcements_list_get_filters_and_views(events_api, publisher):
    # Given two enforcements of a rule that passes a secret, one failed, one that requested an execution
    rule = make_rule(events_api, action={"ref": "apitest.secretive", "parameters": {"password": SECRET}})
    instance = triggerinstances.dispatch(publisher, rule["trigger"]["ref"], {"body": {"x": 1}, "headers": {}})
    execution = executions.request(publisher, "apitest.secretive", {"password": SECRET})
    failed = enforce(rule, str(instance.pk), seconds_ago=60, failure="Failed to match rule apitest.on_hook: boom")
    done = enforce(rule, str(instance.pk), execution_id=str(execution.pk))
    # When they are listed the way `st2 rule-enforcement list` does
    response = events_api.get("/v1/ruleenforcements/?limit=50")
    rows = response.json
    # Then they come newest first, each with a string id and the rule as a dict; falsy fields dropped
    assert [row["id"] for row in rows] == [str(done.pk), str(failed.pk)]
    assert rows[0]["rule"] == {"ref": "apitest.on_hook", "id": rule["id"], "uid": "rule:apitest:on_hook"}
    assert rows[0]["status"] == "succeeded" and rows[0]["execution_id"] == str(execution.pk)
    assert "failure_reason" not in rows[0] and "execution_id" not in rows[1]
    assert rows[1]["failure_reason"].endswith("boom") and rows[1]["status"] == "failed"
    assert response.headers["X-Limit"] == "50"

    def ids(query):
        return [row["id"] for row in events_api.get(f"/v1/ruleenforcements?{query}").json]

    # And StackStorm's filters narrow it
    assert ids("rule_ref=apitest.on_hook") == [str(done.pk), str(failed.pk)]
    assert ids("rule_ref=apitest.other") == []
    assert ids(f"rule_id={rule['id']}") == [str(done.pk), str(failed.pk)]
    assert ids(f"execution={execution.pk}") == [str(done.pk)]
    assert ids(f"trigger_instance={instance.pk}") == [str(done.pk), str(failed.pk)]
    middle = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    assert ids(f"enforced_at_gt={middle}") == [str(done.pk)]
    assert ids(f"enforced_at_lt={middle}") == [str(failed.pk)]
    # And one answers by id
    assert events_api.get(f"/v1/ruleenforcements/{done.pk}").json == rows[0]
    events_api.get("/v1/ruleenforcements/nope", status=404)
    # And the views embed the trigger instance and the execution (its secret masked)
    views = events_api.get("/v1/ruleenforcements/views").json
    assert views[0]["trigger_instance"]["payload"] == {"body": {"x": 1}, "headers": {}}
    assert views[0]["execution"]["id"] == str(execution.pk)
    assert views[0]["execution"]["parameters"]["password"] == MASKED
    assert views[1]["execution"] == {}
    one = events_api.get(f"/v1/ruleenforcements/views/{done.pk}").json
    assert one["execution"]["action"]["ref"] == "apitest.secretive"
