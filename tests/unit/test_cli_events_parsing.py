"""The event-side st2 commands' pure parts: trace causation chains and display filters,
the rule tester's request and report, include_attributes, and argument checks that
fail before any request is made."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from st2client.cli import cli
from st2client.commands import CommandError
from st2client.commands.rule import format_test_result, include_params, rule_test_request
from st2client.commands.trace import causation_chain, component_rows, display_filter

TI1, TI2, RULE, EX1, EX2 = "ti1", "ti2", "r1", "ex1", "ex2"
TRACE = {
    "id": "t1", "trace_tag": "deploy-42", "start_timestamp": "2024-01-01T00:00:00.000000Z",
    "trigger_instances": [
        {"object_id": TI1, "ref": "core.st2.webhook", "updated_at": "2024-01-01T00:00:01.000000Z", "caused_by": {}},
        {"object_id": TI2, "ref": "core.st2.webhook", "updated_at": "2024-01-01T00:00:04.000000Z", "caused_by": {}},
        {"object_id": "ti3", "ref": "core.st2.generic.actiontrigger", "updated_at": "2024-01-01T00:00:07.000000Z",
         "caused_by": {"type": "action_execution", "id": EX2}},
    ],
    # The same rule fired for both webhook instances: the cause tells the two apart.
    "rules": [
        {"object_id": RULE, "ref": "p.deploy", "updated_at": "2024-01-01T00:00:02.000000Z",
         "caused_by": {"type": "trigger_instance", "id": TI1}},
        {"object_id": RULE, "ref": "p.deploy", "updated_at": "2024-01-01T00:00:05.000000Z",
         "caused_by": {"type": "trigger_instance", "id": TI2}},
    ],
    "action_executions": [
        {"object_id": EX1, "ref": "core.local", "updated_at": "2024-01-01T00:00:03.000000Z",
         "caused_by": {"type": "rule", "id": f"{RULE}:{TI1}"}},
        {"object_id": EX2, "ref": "core.local", "updated_at": "2024-01-01T00:00:06.000000Z",
         "caused_by": {"type": "rule", "id": f"{RULE}:{TI2}"}},
    ],
}


def _ids(trace: dict) -> dict:
    return {name: [(c["object_id"], c["updated_at"][-9:-8]) for c in trace[name]]
            for name in ("trigger_instances", "rules", "action_executions")}


@pytest.mark.parametrize("component_type, component_id, expected", [
    # An execution walks up through the rule firing that caused it to its trigger instance.
    ("action_execution", EX2, {"trigger_instances": [(TI2, "4")], "rules": [(RULE, "5")],
                               "action_executions": [(EX2, "6")]}),
    ("action_execution", EX1, {"trigger_instances": [(TI1, "1")], "rules": [(RULE, "2")],
                               "action_executions": [(EX1, "3")]}),
    ("trigger_instance", "ti3", {"trigger_instances": [("ti3", "7"), (TI2, "4")], "rules": [(RULE, "5")],
                                 "action_executions": [(EX2, "6")]}),
    ("trigger_instance", TI1, {"trigger_instances": [(TI1, "1")], "rules": [], "action_executions": []}),
    ("action_execution", "nope", {"trigger_instances": [], "rules": [], "action_executions": []}),
])
def test_causation_chain_walks_caused_by_to_the_start(component_type, component_id, expected):
    # Given a trace where one rule fired twice / When the chain of one component is asked for
    # Then only that component and its causes remain
    assert _ids(causation_chain(TRACE, component_type, component_id)) == expected


@pytest.mark.parametrize("show, hide_noop, expected", [
    ((), False, {"trigger_instances": 3, "rules": 2, "action_executions": 2}),
    (("rules",), False, {"trigger_instances": 0, "rules": 2, "action_executions": 0}),
    (("action_executions", "trigger_instances"), False, {"trigger_instances": 3, "rules": 0, "action_executions": 2}),
    # ti3 (the action trigger) started no rule: a noop trigger instance.
    ((), True, {"trigger_instances": 2, "rules": 2, "action_executions": 2}),
    (("rules",), True, {"trigger_instances": 0, "rules": 2, "action_executions": 0}),
])
def test_display_filters(show, hide_noop, expected):
    filtered = display_filter(TRACE, show, hide_noop)
    assert {name: len(filtered[name]) for name in expected} == expected


@pytest.mark.parametrize("attributes, types", [
    (["all"], ["trigger-instance", "rule", "execution", "trigger-instance", "rule", "execution",
               "trigger-instance"]),
    (["rules"], ["rule", "rule"]),
    (["executions", "triggers"], ["trigger-instance", "execution", "trigger-instance", "execution",
                                  "trigger-instance"]),
    (["id", "trace_tag"], []),
])
def test_components_table_is_sorted_by_time_and_labelled(attributes, types):
    assert [row["type"] for row in component_rows(TRACE, attributes)] == types


@pytest.mark.parametrize("attributes, expected", [
    (["ref", "pack"], {"include_attributes": "ref,pack"}),
    (["id", "trigger", "id", "rule.ref"], {"include_attributes": "id,trigger,rule.ref"}),
    (["ref", "all"], None),
])
def test_include_attributes(attributes, expected):
    assert include_params(attributes) == expected


RULE_YAML = """
name: on_metric
pack: events_pack
trigger:
  type: events_pack.metric
criteria:
  trigger.value: {type: greaterthan, pattern: 90}
action:
  ref: core.local
  parameters: {cmd: "echo {{ trigger.value }}"}
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "rule.yaml").write_text(RULE_YAML)
    (tmp_path / "instance.json").write_text(json.dumps(
        {"id": "x", "trigger": "events_pack.metric", "payload": {"value": 95}, "status": "processed"}))
    (tmp_path / "payload.yaml").write_text("value: 95\nhost: web1\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    return tmp_path


@pytest.mark.parametrize("rule, source, expected", [
    ("rule.yaml", ("abc123", None, None), {"trigger_instance_id": "abc123"}),
    ("rule.yaml", (None, "instance.json", None),
     {"trigger_instance": {"trigger": "events_pack.metric", "payload": {"value": 95}}}),
    ("rule.yaml", (None, None, "payload.yaml"), {"trigger_instance": {"payload": {"value": 95, "host": "web1"}}}),
    # Not a file: the stored rule with that ref (or id).
    ("events_pack.on_metric", ("abc123", None, None),
     {"rule_ref": "events_pack.on_metric", "trigger_instance_id": "abc123"}),
])
def test_rule_tester_request_from_files(files, rule, source, expected):
    # Given a rule file (or a stored rule's ref) and one trigger instance source / When the tester request
    # is built / Then the rule goes as written, with the instance id, document or payload
    instance_id, instance, payload = source
    rule_path = str(files / rule) if rule.endswith(".yaml") else rule
    body = rule_test_request(rule_path, instance_id, instance and str(files / instance),
                             payload and str(files / payload))
    if rule.endswith(".yaml"):
        sent = body.pop("rule")
        assert sent["name"] == "on_metric" and "enabled" not in sent
        assert sent["action"]["parameters"] == {"cmd": "echo {{ trigger.value }}"}
    assert body == expected


@pytest.mark.parametrize("rule, payload, message", [
    ("missing.yaml", "payload.yaml", "does not exist"),
    ("list.yaml", "payload.yaml", "does not hold a rule"),
    ("rule.yaml", "list.yaml", "does not hold a payload"),
])
def test_rule_tester_bad_files_name_the_problem(files, rule, payload, message):
    with pytest.raises(CommandError, match=message):
        rule_test_request(str(files / rule), None, None, str(files / payload))


ANSWER = {
    "matched": True, "reason": "every criterion matches",
    "criteria": [{"key": "trigger.value", "type": "greaterthan", "pattern": 90, "value": 95, "matched": True},
                 {"key": "trigger.host", "type": "startswith", "pattern": "{{ 'w' }}", "rendered": "w",
                  "value": "web1", "matched": True}],
    "action": {"ref": "core.local", "parameters": {"cmd": "echo web1 95"}},
}


@pytest.mark.parametrize("answer, lines, patterns", [
    (ANSWER, ['Rule "events_pack.on_metric" matches: every criterion matches', "action.ref: core.local",
              "action.parameters: ", "  cmd: echo web1 95"], ["90", "w"]),
    ({"matched": False, "reason": "criterion trigger.value does not match",
      "criteria": [{"key": "trigger.value", "type": "greaterthan", "pattern": 90, "value": 5, "matched": False},
                   {"key": "trigger.host", "type": "startswith", "pattern": "web", "evaluated": False}],
      "action": {"ref": "core.local", "parameters": {}}},
     ['Rule "events_pack.on_metric" does not match: criterion trigger.value does not match'], ["90", "web"]),
    ({"matched": False, "error": "Failed to match rule events_pack.on_metric: cannot compare",
      "criteria": [{"key": "trigger.value", "type": "lessthan", "pattern": 1, "value": "x",
                    "error": "cannot compare"}]},
     ['Rule "events_pack.on_metric" does not match.',
      "Error: Failed to match rule events_pack.on_metric: cannot compare"], ["1"]),
])
def test_rule_tester_report(answer, lines, patterns):
    # Given the tester's answer / When it is printed / Then the verdict, each criterion and the action show
    text = format_test_result(answer, "events_pack.on_metric")
    for line in lines:
        assert line in text.splitlines()
    rows = [[cell.strip() for cell in line.split("|")[1:6]] for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == ["key", "type", "pattern", "value", "result"]
    expected_results = [("error: " + c["error"]) if c.get("error") else "not evaluated"
                        if c.get("evaluated") is False else "matched" if c["matched"] else "not matched"
                        for c in answer["criteria"]]
    assert [row[4] for row in rows[1:]] == expected_results
    # The rendered pattern is shown rather than its template; numbers as JSON.
    assert [row[2] for row in rows[1:]] == patterns
    assert ("action.ref" in text) is answer["matched"]


@pytest.mark.parametrize("args", [
    ["rule", "test", "x.yaml"],
    ["rule", "test", "x.yaml", "-i", "a", "-p", "b.yaml"],
    ["trace", "list", "-c", "tag", "-e", "ex1"],
    ["trace", "get", "t1", "-e", "ex1", "-r", "r1"],
    ["trigger-instance", "list", "--status", "done"],
    ["timer", "list", "-ty", "core.st2.Nope"],
    ["rule", "list", "-n", "many"],
    ["rule-enforcement", "get"],
])
def test_usage_errors_exit_2_before_any_request(args):
    # Given no API at the url / When arguments are wrong / Then it is a usage error, not a connection error
    result = CliRunner().invoke(cli, ["--api-url", "http://127.0.0.1:9/v1", "--skip-config", *args])
    assert result.exit_code == 2, result.output
    assert "Cannot connect" not in result.output


@pytest.mark.parametrize("group, commands", [
    ("rule", {"list", "get", "create", "update", "delete", "enable", "disable", "test"}),
    ("rule-enforcement", {"list", "get"}),
    ("trigger", {"list", "get", "getspecs"}),
    ("trigger-instance", {"list", "get", "re-emit"}),
    ("trace", {"list", "get"}),
    ("webhook", {"list", "get"}),
    ("timer", {"list", "get"}),
])
def test_command_tree_matches_stackstorms(group, commands):
    assert set(cli.commands[group].commands) >= commands
