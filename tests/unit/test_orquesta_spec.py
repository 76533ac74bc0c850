"""The Orquesta spec: every shorthand expanded once into typed, frozen records; the graph built from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from st2workflowengine.orquesta.graph import WorkflowGraph
from st2workflowengine.orquesta.spec import (
    InputSpec,
    WorkflowInspectionError,
    parse,
    parse_do,
    parse_inline,
    parse_with,
    split_action,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workflows"

FULL = """
version: '1.0'
description: every construct
input:
  - a
  - b: 2
vars:
  - c: <% ctx(b) %>
tasks:
  t1:
    action: >-
      core.local cmd="ls -l" timeout=30 env={"X": "1"} flag=true quoted='single q' expr=<% ctx(a) + 1 %>
    input:
      cwd: /tmp
    delay: 5
    retry:
      when: <% failed() %>
      count: 3
      delay: 2
    next:
      - when: <% succeeded() %>
        publish: x=1, y="two words"; z=<% result() %>
        do: t2, t3
      - when: <% failed() %>
        publish:
          - err: <% result().stderr %>
        do:
          - fail
  t2:
    with: host, cmd in <% zip(ctx(hosts), ctx(cmds)) %>
    action: core.remote
  t3:
    with:
      items: <% ctx(list) %>
      concurrency: <% ctx(n) %>
    action: '{{ ctx("ref") }} x=1'
  t4:
    join: all
  t5:
    join: 2
    action: core.noop
    input: <% ctx(params) %>
output:
  - out: <% ctx(x) %>
"""


def test_full_definition_parses_into_records():
    spec = parse(FULL)
    assert spec.version == "1.0" and spec.description == "every construct"
    assert spec.input == (InputSpec("a"), InputSpec("b", 2, True))
    assert spec.vars == (("c", "<% ctx(b) %>"),)
    assert spec.output == (("out", "<% ctx(x) %>"),)
    t1 = spec.task("t1")
    assert t1.action == "core.local" and t1.input == {"cwd": "/tmp"}
    assert dict(t1.inline_input) == {"cmd": "ls -l", "timeout": 30, "env": {"X": "1"}, "flag": True,
                                     "quoted": "single q", "expr": "<% ctx(a) + 1 %>"}
    assert (t1.delay, t1.retry.count, t1.retry.when, t1.retry.delay) == (5, 3, "<% failed() %>", 2)
    success, failure = t1.next
    assert success.publish == (("x", 1), ("y", "two words"), ("z", "<% result() %>"))
    assert success.do == ("t2", "t3") and failure.do == ("fail",) and failure.index == 1
    assert failure.publish == (("err", "<% result().stderr %>"),)
    t2, t3 = spec.task("t2"), spec.task("t3")
    assert (t2.with_items.names, t2.with_items.items) == (("host", "cmd"), "<% zip(ctx(hosts), ctx(cmds)) %>")
    assert t2.with_items.concurrency is None
    assert (t3.with_items.names, t3.with_items.concurrency) == ((), "<% ctx(n) %>")
    assert t3.action == '{{ ctx("ref") }}' and t3.inline_input == (("x", 1),)
    assert spec.task("t4").action is None and spec.task("t4").join == "all" and spec.task("t4").is_join
    assert spec.task("t5").join == 2 and spec.task("t5").input == "<% ctx(params) %>"


def test_records_are_frozen():
    spec = parse(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.task("t1").action = "x"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_fixture_workflow_parses(path):
    spec = parse(path.read_text())
    assert spec.tasks and WorkflowGraph(spec).start_tasks


@pytest.mark.parametrize("text,pairs,leftover", [
    ("a=1 b=two", (("a", 1), ("b", "two")), ""),
    ('a="x y",b=<% ctx(z) %>;c=[1, 2]', (("a", "x y"), ("b", "<% ctx(z) %>"), ("c", [1, 2])), ""),
    ("msg='{{ ctx(\"m\") }}'", (("msg", '{{ ctx("m") }}'),), ""),
    ("a=1 stray", (("a", 1),), "stray"),
])
def test_inline_pairs(text, pairs, leftover):
    assert parse_inline(text) == (pairs, leftover)


def test_shorthand_helpers():
    assert split_action("core.local cmd=ls") == ("core.local", "cmd=ls")
    assert split_action("<% ctx(x) + 'y' %> a=1") == ("<% ctx(x) + 'y' %>", "a=1")
    assert parse_with("x in <% ctx(l) %>") == (("x",), "<% ctx(l) %>")
    assert parse_with("{{ ctx('l') }}") == ((), "{{ ctx('l') }}")
    assert parse_with("not an expression") is None
    assert parse_do("a, b") == ("a", "b") and parse_do(["a", "b,c"]) == ("a", "b", "c") and parse_do(None) == ()


def test_syntax_errors_name_spec_and_schema_paths():
    with pytest.raises(WorkflowInspectionError) as info:
        parse({"version": 2, "tasks": {"t1": {"action": 5, "next": [{"do": []}]}, "bad-name": {}}})
    errors = info.value.errors["syntax"]
    paths = {(e["spec_path"], e["schema_path"].rsplit(".", 1)[-1]) for e in errors}
    assert ("version", "enum") in paths
    assert ("tasks.t1.action", "type") in paths
    assert ("tasks.t1.next[0].do", "oneOf") in paths
    assert ("tasks", "additionalProperties") in paths
    assert all(e["type"] == "syntax" and e["message"] for e in errors)


def test_not_a_mapping_is_a_syntax_error():
    with pytest.raises(WorkflowInspectionError):
        parse("- just\n- a list\n")
    with pytest.raises(WorkflowInspectionError):
        parse("version: [unclosed\n")


def test_graph_edges_joins_splits_and_cycles():
    graph = WorkflowGraph(parse((FIXTURES / "parallel_join.yaml").read_text()))
    assert graph.start_tasks == ["setup"]
    assert [(e.target, e.next_id) for e in graph.outbound("setup")] == [
        ("parallel1", "parallel1__t0"), ("parallel2", "parallel2__t0"), ("parallel3", "parallel3__t0")]
    assert graph.barrier("barrier") == 2 and graph.barrier("setup") is None
    assert {e.prev_id for e in graph.inbound("barrier")} == {"parallel1__t0", "intermediate__t0"}
    split = WorkflowGraph(parse((FIXTURES / "split.yaml").read_text()))
    assert split.is_split("log") and not split.is_split("left")
    loop = WorkflowGraph(parse((FIXTURES / "loop.yaml").read_text()))
    assert loop.in_cycle("check") and not loop.is_split("check") and loop.start_tasks == ["init"]
    assert loop.reachable() == {"init", "check", "step", "done"}
    assert {n["id"] for n in loop.serialize()["nodes"]} == {"init", "check", "step", "done"}
