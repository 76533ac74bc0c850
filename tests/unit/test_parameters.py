"""Action parameters: merge, casting, validation and rendering, table-driven on plain data."""

from __future__ import annotations

import pytest

from st2common import parameters as params
from st2common.exceptions import ParameterError
from st2common.templating import environment

# A runner type shaped like local-shell-cmd, and actions shaped like core.local and core.echo.
RUNNER = {
    "cmd": {"type": "string"},
    "cwd": {"type": "string"},
    "env": {"type": "object"},
    "kwarg_op": {"type": "string", "default": "--"},
    "sudo": {"type": "boolean", "default": False},
    "sudo_password": {"type": "string", "default": None, "secret": True},
    "timeout": {"type": "integer", "default": 60},
}
LOCAL = {"cmd": {"type": "string", "required": True}, "sudo": {"immutable": True}}
ECHO = {
    "message": {"type": "string", "required": True},
    "cmd": {"type": "string", "required": True, "default": 'echo "{{message}}"', "immutable": True},
}
TYPED = {
    "count": {"type": "integer"},
    "ratio": {"type": "number"},
    "flag": {"type": "boolean"},
    "items": {"type": "array"},
    "obj": {"type": "object"},
    "name": {"type": "string", "enum": ["a", "b"]},
    "small": {"type": "integer", "minimum": 1, "maximum": 5},
    "token": {"type": "string", "secret": True},
}


def schema(runner=None, action=None, ref="pack.action"):
    return params.ParameterSchema.build(runner or {}, action or {}, ref)


# -- merge ---------------------------------------------------------------------------------------

def test_merge_overlays_the_action_on_the_runner():
    # Given local-shell-cmd's parameters and core.local's overrides
    merged = schema(RUNNER, LOCAL, "core.local")
    # Then the action's attributes win and the runner's others stay
    assert merged.definitions["cmd"] == {"type": "string", "required": True}
    assert merged.definitions["sudo"] == {"type": "boolean", "default": False, "immutable": True}
    assert merged.immutable_names == {"sudo"}
    assert merged.secret_names == {"sudo_password"}


def test_merge_refuses_a_changed_type_naming_the_parameter():
    with pytest.raises(ParameterError) as caught:
        schema(RUNNER, {"timeout": {"type": "string"}})
    assert "timeout" in str(caught.value)


def test_split_gives_runner_names_to_the_runner():
    merged = schema(RUNNER, {**LOCAL, "extra": {"type": "string"}})
    runner, action = merged.split({"cmd": "ls", "timeout": 5, "extra": "x"})
    assert runner == {"cmd": "ls", "timeout": 5}
    assert action == {"extra": "x"}
    assert list(merged.action_definitions()) == ["extra"]


def test_secrets_are_masked():
    merged = schema(RUNNER, LOCAL)
    assert merged.mask({"cmd": "ls", "sudo_password": "hunter2"}) == {"cmd": "ls", "sudo_password": params.MASK}


# -- casting -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, given, expected", [
    ("count", "42", 42),
    ("count", 7, 7),
    ("count", 3.0, 3),
    ("ratio", "1.5", 1.5),
    ("ratio", 2, 2),
    ("flag", "true", True),
    ("flag", "False", False),
    ("flag", "1", True),
    ("flag", True, True),
    ("items", "a, b,c", ["a", "b", "c"]),
    ("items", '["x", 1]', ["x", 1]),
    ("items", ["x"], ["x"]),
    ("items", "", []),
    ("obj", '{"k": [1]}', {"k": [1]}),
    ("obj", "{'k': 1}", {"k": 1}),
    ("obj", {"k": 1}, {"k": 1}),
    ("name", "a", "a"),
])
def test_cli_text_is_cast_to_the_declared_type(name, given, expected):
    # When a request carries a value as the CLI or an API client sends it
    live = params.render_live(schema(action=TYPED), {name: given})
    # Then it is stored as the declared type
    assert live == {name: expected}
    assert type(live[name]) is type(expected)


@pytest.mark.parametrize("name, given", [
    ("count", "abc"),
    ("count", "1.5"),
    ("count", True),
    ("ratio", "fast"),
    ("flag", "maybe"),
    ("flag", 2),
    ("items", "[1, 2"),
    ("obj", "[1, 2]"),
    ("obj", "not json"),
    ("name", 5),
])
def test_a_value_of_the_wrong_type_names_the_parameter(name, given):
    with pytest.raises(ParameterError) as caught:
        params.render_live(schema(action=TYPED), {name: given})
    assert caught.value.field == name
    assert f'"{name}"' in str(caught.value)


# -- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("action, given, field, words", [
    (LOCAL, {}, "cmd", "required"),
    (LOCAL, {"cmd": "ls", "nope": 1}, "nope", "'nope' was unexpected"),
    (LOCAL, {"cmd": "ls", "sudo": True}, "sudo", "immutable"),
    (ECHO, {"message": "hi", "cmd": "rm -rf /"}, "cmd", "immutable"),
    (TYPED, {"name": "c"}, "name", "is not one of"),
    (TYPED, {"small": 9}, "small", "maximum"),
    (TYPED, {"small": "0"}, "small", "minimum"),
])
def test_bad_requests_are_refused_naming_the_parameter(action, given, field, words):
    with pytest.raises(ParameterError) as caught:
        params.render_live(schema(RUNNER if action is not TYPED else {}, action), given)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_a_secret_never_appears_in_an_error():
    with pytest.raises(ParameterError) as caught:
        params.render_live(schema(action=TYPED), {"token": 12345})
    assert "12345" not in str(caught.value)


def test_none_counts_as_not_supplied():
    live = params.render_live(schema(RUNNER, LOCAL), {"cmd": "ls", "cwd": None})
    assert live == {"cmd": "ls"}


# -- defaults and rendering ----------------------------------------------------------------------

def test_live_keeps_what_was_supplied_and_final_adds_every_default():
    merged = schema(RUNNER, LOCAL)
    live = params.render_live(merged, {"cmd": "echo hi", "timeout": "5"})
    assert live == {"cmd": "echo hi", "timeout": 5}
    final = params.render_final(merged, live)
    assert final == {"cmd": "echo hi", "timeout": 5, "kwarg_op": "--", "sudo": False, "sudo_password": None}


def test_an_immutable_templated_default_renders_at_run_time_from_other_parameters():
    # Given core.echo, whose immutable cmd default uses {{message}}
    merged = schema(RUNNER, ECHO, "core.echo")
    # When it is requested with a message
    live = params.render_live(merged, {"message": "hello"})
    # Then the execution stores the message only, and the runner gets the rendered cmd
    assert live == {"message": "hello"}
    assert params.render_final(merged, live)["cmd"] == 'echo "hello"'


def test_templated_values_render_in_dependency_order_with_the_context():
    action = {
        "c": {"type": "string", "default": "{{ b }}-c"},
        "b": {"type": "string", "default": "{{ a }}-b"},
        "a": {"type": "string"},
        "who": {"type": "string", "default": "{{ action_context.user }}"},
        "n": {"type": "integer", "default": "{{ 2 * 3 }}"},
        "listed": {"type": "array", "default": ["{{ n }}", "{{ a }}"]},
    }
    live = params.render_live(schema(action=action), {"a": "x"}, context={"user": "bob"})
    assert live == {"a": "x", "b": "x-b", "c": "x-b-c", "who": "bob", "n": 6, "listed": [6, "x"]}


def test_templates_and_lone_expressions_see_the_environments_globals():
    # Given templates calling Jinja's globals, whole and as a lone expression, rendered twice (compiled once)
    action = {"a": {"type": "array", "default": "{{ range(3) | list }}"},
              "b": {"type": "string", "default": "{{ dict(k=1)['k'] }}-{{ namespace(x=2).x }}"}}
    for _ in range(2):
        live = params.render_live(schema(action=action), {})
        # Then each renders with them
        assert live == {"a": [0, 1, 2], "b": "1-2"}


def test_a_supplied_template_is_rendered_once():
    merged = schema(action={"a": {"type": "string"}, "b": {"type": "string"}})
    live = params.render_live(merged, {"a": "{{ b }}!", "b": "{% raw %}{{ x }}{% endraw %}"})
    assert live == {"a": "{{ x }}!", "b": "{{ x }}"}
    # At run time the stored values are literals
    assert params.render_final(merged, live) == live


@pytest.mark.parametrize("action, field, words", [
    ({"a": {"type": "string", "default": "{{ b }}"}, "b": {"type": "string", "default": "{{ a }}"}},
     None, "cyclic dependency"),
    ({"a": {"type": "string", "default": "{{ a }}"}}, "a", "cyclic dependency"),
    ({"a": {"type": "string", "default": "{{ nowhere }}"}}, "a", "undefined"),
    ({"a": {"type": "string", "default": "{{ b }}"}, "b": {"type": "string"}}, "a", "dependency unsatisfied"),
    ({"a": {"type": "string", "default": "{{ oops"}}, "a", "syntax"),
    ({"a": {"type": "object", "default": {"k": "{{ nowhere }}"}}}, "a", "undefined"),
    ({"a": {"type": "array", "default": ["{{ action_context.nope }}"]}}, "a", "undefined"),
    ({"a": {"type": "integer", "default": "{{ 'x' * 2 }}"}}, "a", "not of type 'integer'"),
])
def test_rendering_errors_name_the_parameter(action, field, words):
    with pytest.raises(ParameterError) as caught:
        params.render_live(schema(action=action), {})
    assert caught.value.field in ((field,) if field else tuple(action))
    assert words in str(caught.value)


def test_the_environment_is_sandboxed_and_strict():
    env = environment()
    assert env.undefined.__name__ == "StrictUndefined"
    with pytest.raises(ParameterError):
        params.render_live(schema(action={"a": {"type": "string"}}),
                           {"a": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
