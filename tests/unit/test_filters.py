"""StackStorm's Jinja filters, through the one environment every parameter renders with."""

from __future__ import annotations

import pytest

from st2common import parameters
from st2common.exceptions import ParameterError, ValidationError
from st2common.templating import render, render_value
from st2common.templating.filters import NONE_MAGIC


@pytest.mark.parametrize("template, context, expected", [
    # data
    ('{{ d | to_json_string }}', {"d": {"b": 1, "a": [1, 2]}}, '{"b": 1,"a": [1,2]}'),
    ('{{ d | to_json_string(indent=2, sort_keys=True) }}', {"d": {"b": 1, "a": 2}}, '{\n  "a": 2,\n  "b": 1\n}'),
    ('{{ d | to_yaml_string }}', {"d": {"a": [1, 2]}}, "a:\n- 1\n- 2\n"),
    ('{{ (t | from_json_string).a }}', {"t": '{"a": 5}'}, "5"),
    ('{{ (t | from_yaml_string).a.b }}', {"t": "a:\n  b: deep"}, "deep"),
    ('{{ s | json_escape }}', {"s": 'say "hi"\n'}, 'say \\"hi\\"\\n'),
    ('{{ d | to_complex }}', {"d": [1, "x"]}, '[1, "x"]'),
    # regular expressions
    ('{{ "v1.2" | regex_match("v\\\\d") }}', {}, "True"),
    ('{{ "a v1.2" | regex_match("v\\\\d") }}', {}, "False"),
    ('{{ "a v1.2" | regex_search("v\\\\d") }}', {}, "True"),
    ('{{ "HELLO" | regex_search("hello", ignorecase=True) }}', {}, "True"),
    ('{{ "a-b-c" | regex_replace("-", "+") }}', {}, "a+b+c"),
    ('{{ "john smith" | regex_replace("(\\\\w+) (\\\\w+)", "\\\\2 \\\\1") }}', {}, "smith john"),
    ('{{ "ids 12 and 34" | regex_substring("\\\\d+") }}', {}, "12"),
    ('{{ "ids 12 and 34" | regex_substring("\\\\d+", 1) }}', {}, "34"),
    # versions
    ('{{ "1.2.3" | version_compare("1.2.4") }}', {}, "-1"),
    ('{{ "1.10.0" | version_more_than("1.9.9") }}', {}, "True"),
    ('{{ "1.0.0-alpha" | version_less_than("1.0.0") }}', {}, "True"),
    ('{{ "1.0.0-alpha.1" | version_less_than("1.0.0-alpha.beta") }}', {}, "True"),
    ('{{ "2.0.0+build.5" | version_equal("2.0.0") }}', {}, "True"),
    ('{{ "1.5.0" | version_match(">=1.2.0") }}', {}, "True"),
    ('{{ "1.5.0" | version_match("<1.2.0") }}', {}, "False"),
    ('{{ "1.5.0" | version_match("!=1.5.0") }}', {}, "False"),
    ('{{ "1.2.3" | version_bump_major }}', {}, "2.0.0"),
    ('{{ "1.2.3" | version_bump_minor }}', {}, "1.3.0"),
    ('{{ "1.2.3" | version_bump_patch }}', {}, "1.2.4"),
    ('{{ "1.2.3" | version_strip_patch }}', {}, "1.2"),
    # time, paths
    ('{{ 0 | to_human_time_from_seconds }}', {}, "0s"),
    ('{{ 59 | to_human_time_from_seconds }}', {}, "59s"),
    ('{{ 65 | to_human_time_from_seconds }}', {}, "1m5s"),
    ('{{ 3725 | to_human_time_from_seconds }}', {}, "1h2m5s"),
    ('{{ 90061 | to_human_time_from_seconds }}', {}, "1d1h1m1s"),
    ('{{ "/opt/packs/core/actions/x.py" | basename }}', {}, "x.py"),
    ('{{ "/opt/packs/core/actions/x.py" | dirname }}', {}, "/opt/packs/core/actions"),
    # StackStorm's "in" test
    ('{{ "a" is in ["a", "b"] }}', {}, "True"),
])
def test_filter_renders_as_stackstorm(template, context, expected):
    assert render(template, context) == expected


def test_use_none_gives_none_to_a_parameter():
    # Given an optional parameter whose default yields nothing when the context lacks a value
    schema = parameters.ParameterSchema.build({}, {
        "proxy": {"type": "string", "default": "{{ action_context.proxy | default(None) | use_none }}"},
    })
    # When it renders; Then the marker is what the template gives, and the parameter is None, not "None"
    assert render_value("{{ None | use_none }}", {}, native=True) == NONE_MAGIC
    assert parameters.render_final(schema, {}, context={"user": "stanley"})["proxy"] is None
    assert parameters.render_final(schema, {}, context={"proxy": "http://p:3128"})["proxy"] == "http://p:3128"


def test_a_typed_parameter_gets_its_type_from_a_filter():
    # Given an integer parameter rendered through a filter; Then the stored value is an integer
    schema = parameters.ParameterSchema.build({}, {
        "text": {"type": "string", "default": "retries=3"},
        "retries": {"type": "integer", "default": "{{ text | regex_substring('\\\\d+') }}"},
    })
    assert parameters.render_final(schema, {})["retries"] == 3


@pytest.mark.parametrize("template, message", [
    ('{{ "1.2" | version_bump_major }}', "not a valid semantic version"),
    ('{{ "1.2.3" | version_match("~1.2") }}', "must start with one of"),
    ('{{ "abc" | regex_substring("\\\\d+") }}', "no match number 0"),
    ('{{ "x" | to_human_time_from_seconds }}', "needs a number of seconds"),
    ('{{ "{" | from_json_string }}', "JSONDecodeError"),
])
def test_a_failing_filter_is_the_templates_error(template, message):
    with pytest.raises(ValidationError, match=message):
        render(template, {})


def test_a_failing_filter_names_the_parameter():
    schema = parameters.ParameterSchema.build({}, {
        "v": {"type": "string", "default": "{{ 'x' | version_bump_minor }}"}})
    with pytest.raises(ParameterError, match='parameter "v".*not a valid semantic version'):
        parameters.render_final(schema, {})
