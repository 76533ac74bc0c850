"""Inspection before start: every problem listed, by StackStorm's categories, with paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from st2workflowengine.orquesta import inspection
from st2workflowengine.orquesta.spec import WorkflowInspectionError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workflows"
TASK = "properties.tasks.patternProperties.^\\w+$"

ACTIONS = {
    "core.noop": {},
    "core.echo": {"message": {"type": "string", "required": True}},
    "core.local": {"cmd": {"type": "string", "required": True}, "timeout": {"type": "integer", "default": 60}},
    "core.remote": {"cmd": {"required": True}, "hosts": {"required": True}},
    "core.http": {"url": {"required": True}},
}

BROKEN = """
version: 1.0
input:
  - a
vars:
  - b: <% ctx(undefined_var) %>
tasks:
  fail:
    action: core.noop
  t1:
    action: core.local cmd=<% ctx(a) %> stray
    input:
      bogus: 1
    next:
      - when: <% succeeded( %>
        publish: x=<% ctx(later) %> later=1
        do: t2, ghost
  t2:
    join: 3
    action: nopack
  t3:
    action: core.echo
    next:
      - do: t2
  t4:
    action: examples.missing
output:
  - o: '{{ ctx("never_set") }}'
"""


def find(errors, category, spec_path):
    return [e for e in errors.get(category, []) if e["spec_path"] == spec_path]


def test_every_problem_is_listed_with_its_category_and_paths():
    # Given a definition with problems of every kind, When inspected
    errors = inspection.inspect(BROKEN, action_lookup=ACTIONS.get)
    # Then each category lists its own, with orquesta's messages and paths
    assert set(errors) == {"semantics", "expression", "context", "content"}
    [reserved] = find(errors, "semantics", "tasks.fail")
    assert reserved["message"] == 'The task name "fail" is reserved with special function.'
    assert reserved["schema_path"] == TASK
    [ghost] = find(errors, "semantics", "tasks.t1.next[0].do")
    assert ghost["message"] == 'The task "ghost" is not defined.'
    assert ghost["schema_path"] == f"{TASK}.properties.next.items.properties.do"
    assert find(errors, "semantics", "tasks.t2.join")
    assert "stray" in find(errors, "semantics", "tasks.t1.action")[0]["message"]
    [parse_error] = errors["expression"]
    assert (parse_error["language"], parse_error["expression"]) == ("yaql", "<% succeeded( %>")
    assert parse_error["spec_path"] == "tasks.t1.next[0].when"
    context = {(e["spec_path"], e["message"]) for e in errors["context"]}
    assert context == {
        ("vars[0]", 'Variable "undefined_var" is referenced before assignment.'),
        ("tasks.t1.next[0].publish", 'Variable "later" is referenced before assignment.'),
        ("output[0]", 'Variable "never_set" is referenced before assignment.'),
    }
    content = {(e["spec_path"], e["message"]) for e in errors["content"]}
    assert content == {
        ("tasks.t1.input.bogus", 'Action "core.local" has unexpected input "bogus".'),
        ("tasks.t2.action", 'The action reference "nopack" is not formatted correctly.'),
        ("tasks.t3.input", 'Action "core.echo" is missing required input "message".'),
        ("tasks.t4.action", 'The action "examples.missing" is not registered in the database.'),
    }
    assert all({"type", "message", "spec_path", "schema_path"} <= set(e) for es in errors.values() for e in es)


def test_flatten_gives_one_sorted_list_for_the_api():
    flat = inspection.flatten(inspection.inspect(BROKEN, action_lookup=ACTIONS.get))
    order = [inspection.CATEGORIES.index(e["type"]) for e in flat]
    assert order == sorted(order) and len(flat) == 12


def test_syntax_errors_come_alone():
    errors = inspection.inspect({"version": 1.0, "tasks": {"t": {"action": "core.noop", "unknown": 1}}})
    assert list(errors) == ["syntax"]
    assert errors["syntax"][0]["spec_path"] == "tasks.t"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_fixture_workflows_pass_inspection(path):
    assert inspection.inspect(path.read_text(), action_lookup=ACTIONS.get) == {}


def test_context_follows_paths_through_joins_and_loops():
    wf = {"version": 1.0, "vars": [{"i": 0}], "tasks": {
        "a": {"action": "core.noop", "next": [{"publish": "x=1", "do": "j"}]},
        "b": {"action": "core.noop", "next": [{"publish": [{"y": "<% ctx(i) %>"}], "do": "j"}]},
        "j": {"join": "all", "action": "core.echo message=<% ctx(x) + ctx(y) %>",
              "next": [{"when": "<% ctx(x) < 3 %>", "publish": "z={{ ctx('x') }}", "do": "a"}]},
    }, "output": [{"z": "<% ctx(z) %>"}, {"w": "<% ctx(z) %>"}]}
    assert inspection.inspect(wf) == {}


def test_expression_actions_and_expression_input_skip_content_checks():
    wf = {"version": 1.0, "tasks": {"t": {"action": "<% ctx(ref) %>", "input": "<% ctx(p) %>"}},
          "input": ["ref", "p"]}
    assert inspection.inspect(wf, action_lookup=ACTIONS.get) == {}


def test_check_raises_with_all_categories():
    with pytest.raises(WorkflowInspectionError) as info:
        inspection.check(BROKEN, action_lookup=ACTIONS.get)
    assert set(info.value.errors) == {"semantics", "expression", "context", "content"}
    assert str(info.value) == "Workflow definition failed inspection."
    assert inspection.check((FIXTURES / "chain10.yaml").read_text()).tasks
