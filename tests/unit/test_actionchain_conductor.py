"""The ActionChain language and its conductor, without I/O: parsing, the next-node rule, StackStorm's
rendering of vars / parameters / publish, and the decisions taken at node boundaries."""

from __future__ import annotations

import datetime

import pytest

from st2common import statuses
from st2workflowengine.actionchain import ChainConductor, ChainSpecError, ChainState, Child, parse
from st2workflowengine.actionchain.rendering import render_values
from st2workflowengine.actionchain.spec import check, default_node

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)

CHAIN = {
    "vars": {"greeting": "hello {{ who }}", "limit": 3},
    "chain": [
        {"name": "a", "ref": "core.echo", "parameters": {"message": "{{ greeting }}"},
         "publish": {"said": "{{ a.stdout }}", "n": "{{ limit + 1 }}"}, "on-success": "b", "on-failure": "fix"},
        {"name": "b", "ref": "core.echo", "parameters": {"message": "{{ said }}/{{ n }}/{{ __results.a.stdout }}"}},
        {"name": "fix", "ref": "core.noop"},
    ],
}


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def conductor(definition=CHAIN, parameters=None, state=None, **kwargs) -> ChainConductor:
    return ChainConductor(parse(definition), parameters or {"who": "ann"}, state or ChainState(),
                          execution_id="chain1", context={"user": "stanley", "pack": "p"}, **kwargs)


def child(node: str, status: str, result=None, started: float = 1.0, id_: str | None = None) -> Child:
    return Child(id_ or f"{node}-{started}", node, status, result, at(started), at(started + 0.5))


# -- the language ------------------------------------------------------------------------------

def test_a_valid_chain_parses_into_nodes_with_the_start_node():
    spec = parse(CHAIN)
    assert [n.name for n in spec.nodes] == ["a", "b", "fix"]
    assert spec.start().name == "a"
    assert spec.node("a").on_success == "b" and spec.node("a").on_failure == "fix"


def test_every_problem_of_a_definition_is_listed_with_its_path():
    definition = {"chain": [
        {"name": "a", "ref": "core.noop", "on-success": "nowhere", "params": {"x": 1}, "parameters": {"y": 2}},
        {"name": "b", "ref": "core.noop", "on-failure": "{{ dynamic }}"},
    ], "default": "ghost"}
    problems = check(definition)
    assert {(p["spec_path"], p["message"]) for p in problems} == {
        ("chain.0", 'Either "params" or "parameters" attribute needs to be provided, but not both'),
        ("chain.0.on-success", 'Unable to find node with name "nowhere" referenced in "on-success" in task "a".'),
        ("default", 'Unable to find node with name "ghost" referenced in "default".'),
    }
    with pytest.raises(ChainSpecError) as raised:
        parse(definition, source="chains/x.yaml")
    assert 'in "chains/x.yaml"' in str(raised.value) and len(raised.value.errors) == 3


@pytest.mark.parametrize("definition, path", [
    ({"chain": [{"name": "a", "ref": "core.noop", "retries": 2}]}, "chain.0"),
    ({"chain": [{"name": "a"}]}, "chain.0"),
    ({"chain": [], "other": 1}, ""),
    ({"vars": {}}, ""),
])
def test_schema_errors_name_the_field(definition, path):
    assert [p["spec_path"] for p in check(definition)] == [path]


def test_text_that_is_not_yaml_is_refused():
    with pytest.raises(ChainSpecError, match="Failed to parse"):
        parse("chain: [unclosed")


@pytest.mark.parametrize("chain, default, expected", [
    ([("a", "b", None), ("b", None, None)], None, "a"),
    ([("a", None, None), ("b", "a", None)], None, "b"),
    ([("a", "b", None), ("b", "a", None)], None, "a"),
    ([("a", "b", None), ("b", None, None)], "b", "b"),
])
def test_start_node_is_default_else_first_unreferenced_else_first(chain, default, expected):
    definition = {"chain": [{"name": n, "ref": "core.noop", "on-success": s, "on-failure": f} for n, s, f in chain]}
    if default:
        definition["default"] = default
    assert default_node(definition) == expected


@pytest.mark.parametrize("status, expected", [
    (statuses.SUCCEEDED, ("b", statuses.SUCCEEDED)),
    (statuses.FAILED, ("fix", statuses.FAILED)),
    (statuses.ABANDONED, ("fix", statuses.FAILED)),
    (statuses.TIMED_OUT, ("fix", statuses.TIMED_OUT)),
    (statuses.CANCELED, (None, statuses.CANCELED)),
])
def test_next_node_follows_the_status(status, expected):
    assert parse(CHAIN).node("a").next_for(status) == expected


def test_child_context_shows_the_node_as_stackstorm_does():
    node = parse(CHAIN).node("a")
    assert node.context() == {"name": "a", "ref": "core.echo", "params": None,
                               "parameters": {"message": "{{ greeting }}"}, "on_success": "b", "on_failure": "fix",
                               "publish": {"said": "{{ a.stdout }}", "n": "{{ limit + 1 }}"}, "notify": None}


# -- rendering ----------------------------------------------------------------------------------

def test_rendered_values_are_text_and_untouched_values_keep_their_type():
    rendered = render_values({"n": "{{ 2 + 3 }}", "kept": 5, "flag": True, "items": ["{{ x }}", 1],
                              "obj": {"k": "{{ x }}"}, "whole": "{{ __context.x }}"}, {"x": "v"})
    assert rendered == {"n": "5", "kept": 5, "flag": True, "items": ["v", 1], "obj": {"k": "v"}, "whole": "v"}


# -- the conductor --------------------------------------------------------------------------------

def test_start_renders_vars_and_requests_the_start_node_with_its_parameters():
    c = conductor()
    step = c.start(None, T0)
    assert c.state.status == statuses.RUNNING and c.state.vars == {"greeting": "hello ann", "limit": 3}
    node, parameters = step.request
    assert node.name == "a" and parameters == {"message": "hello ann"}
    assert c.state.current == {"node": "a", "requested": True, "at": T0.timestamp()}


def test_a_completed_node_publishes_and_the_next_node_sees_results_and_published_values():
    c = conductor()
    c.start(None, T0)
    step = c.node_ended(child("a", statuses.SUCCEEDED, {"stdout": "out"}), None, at(2))
    node, parameters = step.request
    assert node.name == "b" and parameters == {"message": "out/4/out"}
    assert c.state.published == {"said": "out", "n": "4"}
    assert [t["name"] for t in c.state.tasks] == ["a"] and c.state.tasks[0]["state"] == statuses.SUCCEEDED
    # When the last node completes, the chain ends with the status of that node and StackStorm's result
    c.node_ended(child("b", statuses.SUCCEEDED, {"stdout": "done"}, started=3), None, at(4))
    assert c.state.status == statuses.SUCCEEDED and c.state.current is None
    result = c.result()
    assert [t["name"] for t in result["tasks"]] == ["a", "b"] and result["published"] == {"said": "out", "n": "4"}
    assert set(result["tasks"][0]) == {"id", "name", "execution_id", "liveaction_id", "workflow", "created_at",
                                       "updated_at", "state", "result"}


def test_failure_goes_on_failure_and_a_successful_handler_makes_the_chain_succeed():
    c = conductor()
    c.start(None, T0)
    step = c.node_ended(child("a", statuses.FAILED, {"stdout": ""}), None, at(2))
    assert step.request[0].name == "fix"
    c.node_ended(child("fix", statuses.SUCCEEDED, {}, started=3), None, at(4))
    assert c.state.status == statuses.SUCCEEDED


@pytest.mark.parametrize("status, final", [(statuses.FAILED, statuses.FAILED), (statuses.TIMED_OUT, statuses.TIMED_OUT),
                                           (statuses.ABANDONED, statuses.FAILED),
                                           (statuses.CANCELED, statuses.CANCELED)])
def test_a_last_node_that_did_not_succeed_decides_the_chain_status(status, final):
    c = conductor({"chain": [{"name": "only", "ref": "core.noop"}]})
    c.start(None, T0)
    c.node_ended(child("only", status, {"x": 1}), None, at(2))
    assert c.state.status == final and c.result()["tasks"][0]["state"] == status


def test_a_child_that_is_not_the_current_one_changes_nothing():
    c = conductor()
    c.start(None, at(10))
    assert not c.node_ended(child("b", statuses.SUCCEEDED), None, at(11)).changed
    # A child of the same node requested before the current request (an earlier loop) is stale
    assert not c.node_ended(child("a", statuses.SUCCEEDED, started=5), None, at(11)).changed
    first = child("a", statuses.SUCCEEDED, {"stdout": "x"}, started=10.5, id_="x1")
    assert c.node_ended(first, None, at(11)).changed
    assert not c.node_ended(first, None, at(12)).changed


def test_pause_is_taken_at_the_next_boundary_and_resume_requests_the_held_node():
    c = conductor()
    c.start(None, T0)
    # When a pause is asked while a node runs, the chain is pausing and passes the pause on
    step = c.control(statuses.PAUSING, child_active=True, now=at(1))
    assert c.state.status == statuses.PAUSING and step.cascade == statuses.PAUSING
    # Then the node's end pauses the chain with the next node held, not requested
    step = c.node_ended(child("a", statuses.SUCCEEDED, {"stdout": "o"}), statuses.PAUSING, at(2))
    assert step.request is None and c.state.status == statuses.PAUSED
    assert c.state.current == {"node": "b", "requested": False, "at": at(2).timestamp()}
    # When it is resumed, the held node is requested
    step = c.control(statuses.RESUMING, child_active=False, now=at(3))
    assert step.request[0].name == "b" and c.state.status == statuses.RUNNING


def test_cancel_waits_for_the_running_node_then_ends_canceled_with_its_task():
    c = conductor()
    c.start(None, T0)
    step = c.control(statuses.CANCELING, child_active=True, now=at(1))
    assert c.state.status == statuses.CANCELING and step.cascade == statuses.CANCELING
    step = c.node_ended(child("a", statuses.SUCCEEDED, {"stdout": "o"}), statuses.CANCELING, at(2))
    assert step.request is None and c.state.status == statuses.CANCELED
    assert [t["name"] for t in c.result()["tasks"]] == ["a"]


def test_cancel_of_a_paused_chain_ends_it_at_once():
    c = conductor()
    c.start(statuses.PAUSING, T0)
    assert c.state.status == statuses.PAUSED and c.state.current["requested"] is False
    c.control(statuses.CANCELING, child_active=False, now=at(1))
    assert c.state.status == statuses.CANCELED


def test_a_waiting_child_pauses_the_chain_and_its_end_carries_the_chain_on():
    c = conductor()
    c.start(None, T0)
    c.node_waiting(child("a", statuses.PENDING))
    assert c.state.status == statuses.PAUSED
    step = c.node_ended(child("a", statuses.SUCCEEDED, {"stdout": "yes"}), statuses.PAUSED, at(3))
    assert step.request[0].name == "b" and c.state.status == statuses.RUNNING


def test_errors_outside_a_node_fail_the_chain_with_a_top_level_error():
    # A var that does not render
    c = conductor({"vars": {"v": "{{ nope }}"}, "chain": [{"name": "a", "ref": "core.noop"}]})
    c.start(None, T0)
    assert c.state.status == statuses.FAILED and "Failed initializing ``vars`` in chain" in c.result()["error"]
    # A parameter that does not render
    c = conductor({"chain": [{"name": "a", "ref": "core.echo", "parameters": {"message": "{{ nope.x }}"}}]})
    c.start(None, T0)
    assert c.state.status == statuses.FAILED
    assert c.result()["error"].startswith('Failed to run task "a". Parameter rendering failed.')
    assert '"message"' in c.result()["error"] and c.result()["traceback"]
    # An action that does not exist
    c = conductor({"chain": [{"name": "a", "ref": "x.missing"}]})
    c.start(None, T0)
    c.action_missing("a")
    assert c.state.status == statuses.FAILED
    assert c.result()["error"] == 'Failed to run task "a". Action with reference "x.missing" doesn\'t exist'
    # A publish that does not render keeps the task and fails the chain
    c = conductor({"chain": [{"name": "a", "ref": "core.noop", "publish": {"p": "{{ a.missing.deeper }}"}}]})
    c.start(None, T0)
    c.node_ended(child("a", statuses.SUCCEEDED, {}), None, at(2))
    assert c.state.status == statuses.FAILED and len(c.result()["tasks"]) == 1
    assert c.result()["error"].startswith('Failed rendering value for publish parameter "p" in task "a"')


def test_a_node_whose_request_is_refused_fails_and_goes_on_failure():
    c = conductor()
    c.start(None, T0)
    step = c.request_failed("a", ValueError("bad parameter"), None, at(1))
    assert step.request[0].name == "fix"
    task = c.state.tasks[0]
    assert task["state"] == statuses.FAILED and task["execution_id"] is None
    assert task["result"]["error"] == 'Failed running task "a".. bad parameter'


def test_published_values_hidden_when_display_published_is_off():
    c = conductor(display_published=False)
    c.start(None, T0)
    c.node_ended(child("a", statuses.SUCCEEDED, {"stdout": "o"}), None, at(2))
    assert "published" not in c.result() and c.state.vars["said"] == "o"


def test_a_chain_whose_execution_ended_without_it_ends_too():
    c = conductor()
    c.start(None, T0)
    assert c.end(statuses.ABANDONED).changed and c.state.status == statuses.ABANDONED
    assert not c.end(statuses.FAILED).changed
    assert not c.node_ended(child("a", statuses.SUCCEEDED), None, at(2)).changed
