"""POST /v1/rules/test, the rule tester: which criteria match and what the action would get; nothing runs."""

from __future__ import annotations

from test_api_support import SECRET, api, api_settings, publisher, settings  # noqa: F401 (fixtures)
from test_api_triggers import events_api, make_rule  # noqa: F401 (fixture)

from st2common.models.api.base import MASKED
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.services import triggerinstances

HOOK = {"type": "core.st2.webhook", "parameters": {"url": "deploy"}}
CRITERIA = {
    "trigger.body.env": {"type": "equals", "pattern": "prod"},
    "trigger.body.branch": {"type": "matchwildcard", "pattern": "release/*"},
    "trigger.body.count": {"type": "gt", "pattern": "{{ trigger.body.minimum }}"},
}
RULE_FILE = {"name": "on_deploy", "pack": "apitest", "trigger": HOOK, "criteria": CRITERIA,
             "action": {"ref": "core.local", "parameters": {"cmd": "deploy {{ trigger.body.branch }}"}}}
MATCHING = {"body": {"env": "prod", "branch": "release/1.2", "count": 5, "minimum": 3}, "headers": {}}


def test_an_inline_rule_file_against_a_payload(events_api):
    # When a rule file (not stored, not enabled) is tested against a matching payload
    answer = events_api.post_json("/v1/rules/test", {"rule": RULE_FILE, "payload": MATCHING}).json
    # Then it matches, each criterion says why, and the rendered action parameters are shown
    assert answer["matched"] is True and answer["reason"] == "every criterion matches"
    assert answer["rule"] == {"ref": "apitest.on_deploy", "id": None, "enabled": False}
    assert [(c["key"], c["type"], c["value"], c["matched"]) for c in answer["criteria"]] == [
        ("trigger.body.env", "equals", "prod", True),
        ("trigger.body.branch", "matchwildcard", "release/1.2", True),
        ("trigger.body.count", "greaterthan", 5, True)]
    # The templated pattern is shown rendered, with its type kept
    assert answer["criteria"][2]["pattern"] == "{{ trigger.body.minimum }}" and answer["criteria"][2]["rendered"] == 3
    assert answer["action"] == {"ref": "core.local", "parameters": {"cmd": "deploy release/1.2"}}
    # And nothing was stored or run
    assert not RuleDB.objects and not TriggerInstanceDB.objects and not ExecutionDB.objects
    assert not RuleEnforcementDB.objects


def test_a_non_matching_payload_says_which_criteria_failed(events_api):
    payload = {"body": {"env": "stage", "branch": "release/1.2", "count": 1, "minimum": 3}}
    answer = events_api.post_json("/v1/rules/test", {"rule": RULE_FILE, "payload": payload}, status=200).json
    assert answer["matched"] is False and answer["reason"] == "criterion trigger.body.env does not match"
    # Every criterion is evaluated, so all misses show at once
    assert [c["matched"] for c in answer["criteria"]] == [False, True, False]
    assert answer["criteria"][0]["explanation"] == (
        "trigger.body.env equals 'prod': payload value 'stage' does not match")


def test_a_stored_rule_against_a_stored_trigger_instance(events_api, publisher):
    # Given a stored rule and an instance a webhook POST stored
    make_rule(events_api, "on_deploy", criteria=CRITERIA, action=RULE_FILE["action"])
    events_api.post_json("/v1/webhooks/deploy", MATCHING["body"])
    instance = TriggerInstanceDB.objects.get()
    # When the tester is asked by rule ref and instance id
    answer = events_api.post_json("/v1/rules/test", {"rule_ref": "apitest.on_deploy",
                                                     "trigger_instance_id": str(instance.pk)}).json
    # Then the stored instance is what was evaluated
    assert answer["matched"] is True
    assert answer["trigger_instance"]["id"] == str(instance.pk)
    assert answer["action"]["parameters"] == {"cmd": "deploy release/1.2"}
    # And an instance of another trigger does not match
    other = triggerinstances.dispatch(publisher, "core.st2.sensor.process_exit", {"id": "s"})
    answer = events_api.post_json("/v1/rules/test", {"rule_ref": "apitest.on_deploy",
                                                     "trigger_instance_id": str(other.pk)}).json
    assert answer["matched"] is False and "another trigger" in answer["reason"]


def test_the_cli_request_shape_with_a_trigger_instance_document(events_api):
    # `st2 rule test <ref> --trigger-instance f` sends the stored rule's GET body and {trigger, payload}
    rule = make_rule(events_api, "on_deploy", criteria=CRITERIA, action=RULE_FILE["action"])
    body = {"rule": dict(rule, enabled=True),
            "trigger_instance": {"trigger": rule["trigger"]["ref"], "payload": MATCHING}}
    answer = events_api.post_json("/v1/rules/test", body).json
    assert answer["matched"] is True and answer["rule"]["id"] == rule["id"]


def test_secret_parameters_are_rendered_masked(events_api):
    # Given a stored rule passing a secret (its GET body shows it masked)
    action = {"ref": "apitest.secretive", "parameters": {"password": SECRET, "cmd": "{{ trigger.body.env }}"}}
    rule = make_rule(events_api, "secret", trigger=HOOK, action=action)
    assert rule["action"]["parameters"]["password"] == MASKED
    # When the tester renders it, from the ref or from the masked GET body
    by_ref = events_api.post_json("/v1/rules/test", {"rule_ref": "apitest.secret", "payload": MATCHING}).json
    by_body = events_api.post_json("/v1/rules/test", {"rule": rule, "payload": MATCHING}).json
    # Then the secret stays masked and the rest is rendered
    for answer in (by_ref, by_body):
        assert answer["action"]["parameters"] == {"password": MASKED, "cmd": "prod"}
    # And show_secrets reveals the real value even when the masked body was sent
    shown = events_api.post_json("/v1/rules/test?show_secrets=true", {"rule": rule, "payload": MATCHING}).json
    assert shown["action"]["parameters"]["password"] == SECRET


def test_errors_in_evaluation_or_rendering_are_reported(events_api):
    # A comparison that cannot be made is a non-match with the error, as a failed enforcement would say
    mixed = dict(RULE_FILE, criteria={"trigger.body.count": {"type": "lt", "pattern": "ten"}})
    answer = events_api.post_json("/v1/rules/test", {"rule": mixed, "payload": MATCHING}).json
    assert answer["matched"] is False and "cannot compare" in answer["error"]
    assert answer["criteria"][0]["error"] == answer["error"].split(": ", 1)[1]
    # Parameters that cannot be rendered make it a non-match too (the engine would record a failure)
    broken = dict(RULE_FILE, criteria={}, action={"ref": "core.local", "parameters": {"cmd": "{{ trigger.nope.x }}"}})
    answer = events_api.post_json("/v1/rules/test", {"rule": broken, "payload": MATCHING}).json
    assert answer["matched"] is False and answer["reason"] == "the action parameters cannot be rendered"
    assert 'parameter "cmd"' in answer["error"] and "parameters" not in answer["action"]


def test_bad_requests(events_api):
    # An unknown operator lists the valid ones; an unknown action names it
    bad_operator = dict(RULE_FILE, criteria={"trigger.body.env": {"type": "like", "pattern": "x"}})
    response = events_api.post_json("/v1/rules/test", {"rule": bad_operator, "payload": {}}, status=400)
    assert 'unknown operator "like"' in response.json["faultstring"] and "iequals" in response.json["faultstring"]
    bad_action = dict(RULE_FILE, action={"ref": "core.teleport"})
    response = events_api.post_json("/v1/rules/test", {"rule": bad_action, "payload": {}}, status=400)
    assert response.json["faultstring"] == 'action "core.teleport" is not registered'
    # Exactly one rule and one instance source
    both = events_api.post_json("/v1/rules/test", {"rule": RULE_FILE, "rule_ref": "x.y", "payload": {}}, status=400)
    assert both.json["faultstring"].startswith("give exactly one of rule, rule_ref")
    neither = events_api.post_json("/v1/rules/test", {"rule": RULE_FILE}, status=400)
    assert "trigger_instance_id, trigger_instance, payload" in neither.json["faultstring"]
    # Unknown references are 404s (the rule, the instance) or name the trigger
    events_api.post_json("/v1/rules/test", {"rule_ref": "apitest.nothing", "payload": {}}, status=404)
    events_api.post_json("/v1/rules/test", {"rule": RULE_FILE, "trigger_instance_id": "0" * 24}, status=404)
    unknown = events_api.post_json("/v1/rules/test", {"rule": RULE_FILE,
                                                      "trigger_instance": {"trigger": "no.such", "payload": {}}},
                                   status=400)
    assert unknown.json["faultstring"] == 'trigger "no.such" is not registered'
