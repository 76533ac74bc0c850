"""Every workflow function, in YAQL and in Jinja (as a global and as a filter)."""

from __future__ import annotations

import pytest

from st2common import expressions
from st2common.exceptions import NotFoundError
from st2common.expressions import (
    ExpressionGrammarException,
    JinjaEvaluationException,
    Runtime,
    YaqlEvaluationException,
)

TASKS = {
    ("build", 0): {"id": "build", "route": 0, "status": "succeeded", "result": {"stdout": "ok"},
                   "meta": {"task_execution_id": "te1", "start_timestamp": "t0", "end_timestamp": "t1"}},
}
DATASTORE = {("system", "region"): "eu", ("user", "token"): "s3cret"}


def kv_lookup(name, scope, user, decrypt):
    try:
        value = DATASTORE[(scope, name)]
    except KeyError:
        raise NotFoundError("key", name) from None
    return f"{value}!" if decrypt else value


def runtime(**overrides):
    values = dict(
        variables={"name": "world", "path": "/opt/pack/actions/run.sh", "items": [1, 2], "letters": ["a", "b"],
                   "doc": {"a": {"b": [1, 2]}}, "none": None, "secs": 4587,
                   "st2": {"user": "stanley", "workflow_execution_id": "wf1"}},
        task={"id": "deploy", "route": 0, "status": "failed", "result": {"code": 3}},
        item={"host": "h1"},
        find_task=lambda task_id, route: TASKS.get((task_id, route if route is not None else 0)),
        kv_lookup=kv_lookup,
    )
    values.update(overrides)
    return Runtime(**values)


# (yaql, jinja global, jinja filter, expected); None where a form does not apply.
CASES = [
    ("ctx(name)", "ctx('name')", None, "world"),
    ("ctx().name", "ctx().name", None, "world"),
    ("$.name", "_.name", None, "world"),
    ("result().code", "result().code", None, 3),
    ("succeeded()", "succeeded()", None, False),
    ("failed()", "failed()", None, True),
    ("completed()", "completed()", None, True),
    ("task_status(build)", "task_status('build')", "'build' | task_status", "succeeded"),
    ("task_status(never)", "task_status('never')", None, None),
    ("task(build).result.stdout", "task('build').result.stdout", None, "ok"),
    ("task(build).task_execution_id", "task('build').task_execution_id", None, "te1"),
    ("task(build).workflow_execution_id", "task('build').workflow_execution_id", None, "wf1"),
    ("item(host)", "item('host')", None, "h1"),
    ("item()", "item()", None, {"host": "h1"}),
    ("json('{\"a\": 1}')", "json('{\"a\": 1}')", "'{\"a\": 1}' | json", {"a": 1}),
    ("zip(ctx(items), ctx(letters))", "zip(ctx('items'), ctx('letters'))", "ctx('items') | zip(ctx('letters'))",
     [[1, "a"], [2, "b"]]),
    ("zip(list(1), list(2, 3), pad => 0)", "zip([1], [2, 3], pad=0)", None, [[1, 2], [0, 3]]),
    ("st2kv('system.region')", "st2kv('system.region')", "'system.region' | st2kv", "eu"),
    ("st2kv('token', decrypt => true)", "st2kv('token', decrypt=true)", None, "s3cret!"),
    ("st2kv('missing', default => 'd')", "st2kv('missing', default='d')", None, "d"),
    ("basename(ctx(path))", "basename(ctx('path'))", "ctx('path') | basename", "run.sh"),
    ("dirname(ctx(path))", "dirname(ctx('path'))", "ctx('path') | dirname", "/opt/pack/actions"),
    ("from_json_string('[1, 2]')", "from_json_string('[1, 2]')", "'[1, 2]' | from_json_string", [1, 2]),
    ("to_json_string(ctx(doc))", "to_json_string(ctx('doc'))", "ctx('doc') | to_json_string",
     '{"a": {"b": [1,2]}}'),
    ("json_dump(ctx(items))", "json_dump(ctx('items'))", "ctx('items') | json_dump", "[1,2]"),
    ("json_parse('{\"k\": true}')", "json_parse('{\"k\": true}')", "'{\"k\": true}' | json_parse", {"k": True}),
    ("json_escape('say \"hi\"')", "json_escape('say \"hi\"')", "'say \"hi\"' | json_escape", 'say \\"hi\\"'),
    ("from_yaml_string('a: 1')", "from_yaml_string('a: 1')", "'a: 1' | from_yaml_string", {"a": 1}),
    ("to_yaml_string(ctx(doc))", "to_yaml_string(ctx('doc'))", "ctx('doc') | to_yaml_string",
     "a:\n  b:\n  - 1\n  - 2\n"),
    ("yaml_parse('- x')", "yaml_parse('- x')", "'- x' | yaml_parse", ["x"]),
    ("yaml_dump(ctx(items))", "yaml_dump(ctx('items'))", "ctx('items') | yaml_dump", "- 1\n- 2\n"),
    ("jsonpath_query(ctx(doc), 'a.b[*]')", "jsonpath_query(ctx('doc'), 'a.b[*]')",
     "ctx('doc') | jsonpath_query('a.b[*]')", [1, 2]),
    ("jsonpath_query(ctx(doc), 'zz')", "jsonpath_query(ctx('doc'), 'zz')", None, None),
    ("regex_match('v1.2', 'v\\d')", "regex_match('v1.2', 'v\\\\d')", "'v1.2' | regex_match('v\\\\d')", True),
    ("regex_match('xv1', 'v\\d')", "regex_match('xv1', 'v\\\\d')", None, False),
    ("regex_search('xv1', 'v\\d')", "regex_search('xv1', 'v\\\\d')", "'xv1' | regex_search('v\\\\d')", True),
    ("regex_replace('a.b', '\\.', '-')", "regex_replace('a.b', '\\\\.', '-')", "'a.b' | regex_replace('\\\\.', '-')",
     "a-b"),
    ("regex_substring('a1b22', '\\d+', 1)", "regex_substring('a1b22', '\\\\d+', 1)",
     "'a1b22' | regex_substring('\\\\d+', 1)", "22"),
    ("to_human_time_from_seconds(ctx(secs))", "to_human_time_from_seconds(ctx('secs'))",
     "ctx('secs') | to_human_time_from_seconds", "1h16m27s"),
    ("use_none(ctx(none))", "use_none(ctx('none'))", "ctx('none') | use_none", None),
    ("use_none(ctx(name))", "use_none(ctx('name'))", "ctx('name') | use_none", "world"),
    ("version_compare('1.2.0', '1.10.0')", "version_compare('1.2.0', '1.10.0')",
     "'1.2.0' | version_compare('1.10.0')", -1),
    ("version_more_than('2.0.0', '1.9.9')", "version_more_than('2.0.0', '1.9.9')",
     "'2.0.0' | version_more_than('1.9.9')", True),
    ("version_less_than('1.0.0-rc.1', '1.0.0')", "version_less_than('1.0.0-rc.1', '1.0.0')",
     "'1.0.0-rc.1' | version_less_than('1.0.0')", True),
    ("version_equal('1.0.0+b1', '1.0.0')", "version_equal('1.0.0+b1', '1.0.0')",
     "'1.0.0+b1' | version_equal('1.0.0')", True),
    ("version_match('1.4.2', '>=1.4.0')", "version_match('1.4.2', '>=1.4.0')",
     "'1.4.2' | version_match('>=1.4.0')", True),
    ("version_match('1.4.2', '<1.4.0')", "version_match('1.4.2', '<1.4.0')", None, False),
    ("version_bump_major('1.4.2')", "version_bump_major('1.4.2')", "'1.4.2' | version_bump_major", "2.0.0"),
    ("version_bump_minor('1.4.2')", "version_bump_minor('1.4.2')", "'1.4.2' | version_bump_minor", "1.5.0"),
    ("version_bump_patch('1.4.2')", "version_bump_patch('1.4.2')", "'1.4.2' | version_bump_patch", "1.4.3"),
    ("version_strip_patch('1.4.2')", "version_strip_patch('1.4.2')", "'1.4.2' | version_strip_patch", "1.4"),
]


@pytest.mark.parametrize("yaql_expr,jinja_global,jinja_filter,expected", CASES, ids=[c[0] for c in CASES])
def test_function_in_both_languages(yaql_expr, jinja_global, jinja_filter, expected):
    # Given the same function in each language, When evaluated, Then both give the same value
    assert expressions.evaluate(f"<% {yaql_expr} %>", runtime()) == expected
    assert expressions.evaluate(f"{{{{ {jinja_global} }}}}", runtime()) == expected
    if jinja_filter:
        assert expressions.evaluate(f"{{{{ {jinja_filter} }}}}", runtime()) == expected


def test_every_registered_function_is_covered():
    covered = {case[0].split("(")[0].lstrip("$.") for case in CASES} | {"ctx"}
    assert set(expressions.FUNCTIONS) <= covered


def test_text_around_expressions_is_interpolated():
    assert expressions.evaluate("hi <% ctx(name) %>, <% ctx(items) %>", runtime()) == "hi world, [1, 2]"
    assert expressions.evaluate("hi {{ ctx('name') }}", runtime()) == "hi world"
    assert expressions.evaluate("{% for i in ctx('items') %}{{ i }}{% endfor %}", runtime()) == "12"


def test_values_are_walked_and_keep_their_types():
    value = {"a": ["<% ctx(items) %>", "{{ ctx('doc').a }}"], "b": 1, "c": "plain"}
    assert expressions.evaluate(value, runtime()) == {"a": [[1, 2], {"b": [1, 2]}], "b": 1, "c": "plain"}


def test_errors_name_the_expression_and_the_cause():
    with pytest.raises(YaqlEvaluationException) as yaql_error:
        expressions.evaluate("<% ctx(nope) %>", runtime())
    assert str(yaql_error.value) == ("Unable to evaluate expression '<% ctx(nope) %>'. "
                                     'VariableUndefinedError: The variable "nope" is undefined.')
    with pytest.raises(YaqlEvaluationException, match="Unable to resolve key 'zz'"):
        expressions.evaluate("<% ctx().zz %>", runtime())
    with pytest.raises(JinjaEvaluationException, match="is for internal use and inaccessible"):
        expressions.evaluate("{{ ctx('__secret') }}", runtime())
    with pytest.raises(JinjaEvaluationException, match="UndefinedError"):
        expressions.evaluate("{{ undefined_name }}", runtime())
    with pytest.raises(YaqlEvaluationException, match="does not exist|not found"):
        expressions.evaluate("<% st2kv('missing') %>", runtime())
    with pytest.raises(JinjaEvaluationException, match="Could not get user"):
        expressions.evaluate("{{ st2kv('token') }}", runtime(variables={}))
    with pytest.raises(YaqlEvaluationException, match="not set"):
        expressions.evaluate("<% item() %>", runtime(item=expressions.functions.NO_ITEM))
    with pytest.raises(ExpressionGrammarException):
        expressions.evaluate("<% ctx(name) %> {{ ctx('name') }}", runtime())


def test_jinja_sandbox_refuses_unsafe_attributes():
    with pytest.raises(JinjaEvaluationException, match="SecurityError|unsafe"):
        expressions.evaluate("{{ ''.__class__.__mro__ }}", runtime())


def test_validate_and_variables_serve_inspection():
    problems = expressions.validate({"a": "<% ctx( %>", "b": ["{{ ctx('x' }}"], "c": "<% a %>{{ b }}"})
    assert [p["language"] for p in problems] == ["yaql", "jinja", None]
    found = expressions.variables(["<% ctx(a) + ctx('b') + ctx().c + $.d %>", "{{ ctx('e') ~ _.f ~ ctx().g }}"])
    assert [name for _lang, _expr, name in found] == ["a", "b", "c", "d", "e", "g", "f"]
    assert expressions.is_expression(" <% 1 %> ") and not expressions.is_expression("x <% 1 %>")
    assert expressions.has_expression({"k": ["{{ 1 }}"]}) and not expressions.has_expression({"k": "v"})
