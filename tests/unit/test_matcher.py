"""The rule matcher, fixture-driven: every rule of fixtures/matcher/rules.yaml against every instance."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from st2common.exceptions import ValidationError
from st2rulesengine import matcher
from st2rulesengine.matcher import Rule, TriggerInstance, evaluate, match, render_action_parameters

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "matcher"
RULES = [Rule.from_dict(data) for data in yaml.safe_load((FIXTURES / "rules.yaml").read_text())]
INSTANCES = yaml.safe_load((FIXTURES / "instances.yaml").read_text())

# What the rules engine passes for st2kv / system lookups (plain mappings here).
CONTEXT = {"st2kv": {"system": {"limit": "10"}}, "system": {"mode": "active"}}


def instance_of(case: dict) -> TriggerInstance:
    trigger = case["trigger"]
    return TriggerInstance(trigger_type=trigger["type"], payload=case["payload"],
                           trigger_parameters=trigger.get("parameters") or {}, trigger_ref=trigger.get("ref"))


@pytest.mark.parametrize("case", INSTANCES, ids=[case["name"] for case in INSTANCES])
def test_rules_matched_by_each_instance(case):
    # Given every fixture rule; When one trigger instance is matched against them
    outcome = match(RULES, instance_of(case), CONTEXT)

    # Then exactly the expected rules fire, and evaluation errors are reported, not matched
    assert sorted(m.rule.ref for m in outcome.matched) == sorted(case["matched"])
    assert sorted(m.rule.ref for m in outcome.failed) == sorted(case.get("failed", []))
    for failure in outcome.failed:
        assert failure.error.startswith(f"Failed to match rule {failure.rule.ref}: ")


def rule(criteria=None, **extra) -> Rule:
    data = {"name": "r", "pack": "p", "enabled": True, "trigger": {"type": "p.t"},
            "criteria": criteria or {}, "action": {"ref": "core.noop"}, **extra}
    return Rule.from_dict(data)


def test_explanations_say_why_each_criterion_held_or_not():
    # Given a rule whose second of three criteria fails
    subject = rule({"trigger.a": {"type": "eq", "pattern": 1},
                    "trigger.b": {"type": "eq", "pattern": "{{ trigger.want }}"},
                    "trigger.c": {"type": "exists", "pattern": "x"}})
    instance = TriggerInstance("p.t", {"a": 1, "b": 2, "want": 3, "c": True})

    # When it is evaluated: the third is not evaluated; with explain_all it is
    quick = evaluate(subject, instance)
    full = evaluate(subject, instance, explain_all=True)

    assert not quick.matched and quick.error is None and quick.reason == "criterion trigger.b does not match"
    first, second, third = quick.criteria
    assert (first.matched, first.value, first.rendered) == (True, 1, 1)
    assert (second.matched, second.value, second.rendered) == (False, 2, 3)
    assert not third.evaluated and "not evaluated" in third.explain()
    assert "payload value 2 does not match" in second.explain()
    assert [c.matched for c in full.criteria] == [True, False, True] and not full.matched


def test_error_explanation_names_the_key_and_the_template_problem():
    subject = rule({"trigger.a": {"type": "eq", "pattern": "{{ trigger.missing.deeper }}"}})
    outcome = evaluate(subject, TriggerInstance("p.t", {"a": 1}))
    assert not outcome.matched
    assert 'failed to render pattern value "{{ trigger.missing.deeper }}" for key "trigger.a"' in outcome.error
    assert "error:" in outcome.criteria[0].explain()


def test_disabled_and_other_trigger_rules_say_so():
    disabled = rule(enabled=False)
    assert evaluate(disabled, TriggerInstance("p.t", {})).reason == "the rule is disabled"
    other = rule()
    assert "another trigger" in evaluate(other, TriggerInstance("p.other", {})).reason


def test_trigger_ref_or_parameters_identify_the_trigger():
    # Given a rule stored with its trigger's ref, and one known only by parameters
    by_ref = Rule.from_dict({"ref": "p.a", "enabled": True, "trigger": {
        "type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds", "delta": 5}, "ref": "core.1234"},
        "action": {"ref": "core.noop"}})
    by_parameters = Rule.from_dict({"ref": "p.b", "enabled": True, "trigger": {
        "type": "core.st2.IntervalTimer", "parameters": {"delta": 5, "unit": "seconds"}},
        "action": {"ref": "core.noop"}})

    # Then an instance of that trigger matches both; other parameters match neither
    same = TriggerInstance("core.st2.IntervalTimer", {"executed_at": "x"}, {"unit": "seconds", "delta": 5},
                           trigger_ref="core.1234")
    other = TriggerInstance("core.st2.IntervalTimer", {"executed_at": "x"}, {"unit": "seconds", "delta": 6},
                            trigger_ref="core.5678")
    assert {m.rule.ref for m in match([by_ref, by_parameters], same).matched} == {"p.a", "p.b"}
    assert match([by_ref, by_parameters], other).matched == ()


@pytest.mark.parametrize("key,payload,expected", [
    ("trigger.a.b.c", {"a": {"b": {"c": 7}}}, 7),
    ("trigger.items[1]", {"items": [1, 2]}, 2),
    ("trigger.items.1", {"items": [1, 2]}, 2),
    ("trigger.items[-1].n", {"items": [{"n": 1}, {"n": 9}]}, 9),
    ("trigger.items[*].n", {"items": [{"x": 1}, {"n": 3}, {"n": 4}]}, 3),
    ("trigger.'a.b'", {"a.b": "dotted"}, "dotted"),
    ("trigger.a.missing", {"a": {}}, None),
    ("trigger.a.b", {"a": "text"}, None),
    ("trigger.items[5]", {"items": [1]}, None),
    ("trigger.a", {"a": None}, None),
    ("st2kv.system.limit", {}, "10"),
])
def test_payload_path_lookup(key, payload, expected):
    from st2common.operators import parse_path

    assert matcher.lookup(parse_path(key), {**CONTEXT, "trigger": payload}) == expected


class KeyLookup:
    """A datastore scope as the engine provides it: item access, KeyError when missing."""

    def __init__(self, values):
        self.values = values

    def __getitem__(self, key):
        return self.values[key]


def test_lookup_objects_from_the_context_answer_paths_and_templates():
    subject = rule({"system.mode": {"type": "equals", "pattern": "on"},
                    "trigger.n": {"type": "lt", "pattern": "{{ system.limit | int }}"}})
    context = {"system": KeyLookup({"mode": "on", "limit": "5"})}
    assert evaluate(subject, TriggerInstance("p.t", {"n": 3}), context).matched
    assert not evaluate(subject, TriggerInstance("p.t", {"n": 6}), context).matched
    assert not evaluate(subject, TriggerInstance("p.t", {"n": 3}), {"system": KeyLookup({"mode": "off"})}).matched


def test_search_children_see_the_item_and_the_trigger():
    subject = rule({"trigger.hosts": {"type": "search", "condition": "all", "pattern": {
        "item.name": {"type": "startswith", "pattern": "{{ trigger.prefix }}"},
        "item.up": {"type": "equals", "pattern": True}}}})
    good = {"prefix": "web", "hosts": [{"name": "web1", "up": True}, {"name": "web2", "up": True}]}
    bad = {"prefix": "web", "hosts": [{"name": "web1", "up": True}, {"name": "db1", "up": True}]}
    assert evaluate(subject, TriggerInstance("p.t", good)).matched
    assert not evaluate(subject, TriggerInstance("p.t", bad)).matched


def test_search_on_a_missing_list_is_an_error():
    subject = rule({"trigger.hosts": {"type": "search", "condition": "any", "pattern": {
        "item.name": {"type": "equals", "pattern": "x"}}}})
    outcome = evaluate(subject, TriggerInstance("p.t", {"other": 1}))
    assert not outcome.matched and "needs a list" in outcome.error


def test_invalid_criteria_are_refused_when_the_rule_is_parsed():
    with pytest.raises(ValidationError, match="valid operators are"):
        rule({"trigger.a": {"type": "sameas", "pattern": 1}})


@pytest.mark.parametrize("parameters,payload,expected", [
    ({"cmd": "echo {{ trigger.body.name }}"}, {"body": {"name": "x"}}, {"cmd": "echo x"}),
    # A lone expression: numbers become text (string parameters still get one), lists and dicts stay
    ({"count": "{{ trigger.n }}"}, {"n": 5}, {"count": "5"}),
    ({"flag": "{{ trigger.ok }}"}, {"ok": True}, {"flag": "True"}),
    ({"hosts": "{{ trigger.hosts }}"}, {"hosts": ["a", "b"]}, {"hosts": ["a", "b"]}),
    ({"data": "{{ trigger.body }}"}, {"body": {"k": 1}}, {"data": {"k": 1}}),
    ({"maybe": "{{ trigger.nothing }}"}, {"nothing": None}, {"maybe": None}),
    ({"nested": {"a": ["{{ trigger.x }}", 2], "b": "{{ trigger.l }}"}}, {"x": "y", "l": [1]},
     {"nested": {"a": ["y", 2], "b": [1]}}),
    ({"literal": 3, "text": "plain"}, {}, {"literal": 3, "text": "plain"}),
    ({"kv": "{{ st2kv.system.limit }}"}, {}, {"kv": "10"}),
])
def test_action_parameters_render_from_the_payload(parameters, payload, expected):
    rendered = render_action_parameters(parameters, payload, CONTEXT)
    assert rendered.error is None and rendered.values == expected


@pytest.mark.parametrize("template", ["echo {{ trigger.body.missing }}", "{{ trigger.body.missing }}",
                                      "{{ trigger.body.missing | upper }}", "{{ trigger.body[ }}"])
def test_action_parameters_that_cannot_render_give_the_reason(template):
    rendered = render_action_parameters({"ok": "x", "cmd": template}, {"body": {}})
    assert rendered.values is None
    assert rendered.error.startswith('failed to render parameter "cmd": ')


def test_rule_records_from_stored_rules():
    class Stored:  # the attributes of a RuleDB
        pk = "65f0c0ffee"
        ref = "p.stored"
        uid = "rule:p:stored"
        trigger = {"type": "p.t", "parameters": {}, "ref": "p.t"}
        criteria = {"trigger.a": {"type": "eq", "pattern": 1}}
        action = {"ref": "core.noop", "parameters": {"x": 1}}
        enabled = True
        type = {"ref": "backstop", "parameters": {}}

    record = Rule.from_db(Stored())
    assert (record.ref, record.id, record.rule_type) == ("p.stored", "65f0c0ffee", "backstop")
    assert record.trigger_ref == "p.t"
    assert record.criteria[0].operator == "equals" and record.action_parameters == {"x": 1}
