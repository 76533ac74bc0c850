"""Every criteria operator and alias, table-driven: StackStorm's semantics, quirks included."""

from __future__ import annotations

import datetime

import pytest

from st2common import operators
from st2common.exceptions import ValidationError
from st2common.operators import WILDCARD, apply, parse_criteria, parse_path

class ago:  # noqa: N801 - reads as a function in the case tables
    """A moment seconds before the test runs (not before collection, which may be minutes earlier)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"ago({self.seconds})"

    def render(self) -> str:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (now - datetime.timedelta(seconds=self.seconds)).isoformat()


def resolve(value):
    """Case values, with lazy moments rendered now."""
    return value.render() if isinstance(value, ago) else value


# (operator, payload value, pattern, expected)
CASES = [
    ("equals", "abc", "abc", True),
    ("equals", "abc", "ABC", False),
    ("equals", 5, 5, True),
    ("equals", 5, "5", False),  # no coercion
    ("equals", [1, 2], [1, 2], True),
    ("equals", {"a": 1}, {"a": 1}, True),
    ("equals", None, None, False),  # a None pattern never equals
    ("equals", b"abc", "abc", True),  # bytes are decoded
    ("nequals", "abc", "abd", True),
    ("nequals", "abc", "abc", False),
    ("nequals", 5, "5", True),
    ("nequals", "abc", None, True),  # no None guard: value != None
    ("nequals", None, None, False),
    ("iequals", "AbC", "aBc", True),
    ("iequals", "abc", "abd", False),
    ("iequals", "abc", None, False),
    ("contains", "hello world", "lo w", True),
    ("contains", "hello", "xyz", False),
    ("contains", ["a", "b"], "b", True),
    ("contains", ["a", "b"], "c", False),
    ("contains", {"key": 1}, "key", True),
    ("contains", "abc", None, False),
    ("ncontains", "hello", "xyz", True),
    ("ncontains", "hello", "ell", False),
    ("ncontains", ["a"], "a", False),
    ("ncontains", "hello", None, False),  # None pattern: False even for the negation
    ("icontains", "Hello World", "WORLD", True),
    ("icontains", "Hello", "xyz", False),
    ("icontains", "Hello", None, False),
    ("incontains", "Hello", "XYZ", True),
    ("incontains", "Hello", "ELL", False),
    ("incontains", "Hello", None, False),
    ("startswith", "deploy-prod", "deploy", True),
    ("startswith", "deploy-prod", "Deploy", False),
    ("startswith", "x", None, False),
    ("istartswith", "deploy-prod", "DEPLOY", True),
    ("istartswith", "deploy-prod", "prod", False),
    ("istartswith", "x", None, False),
    ("endswith", "deploy-prod", "prod", True),
    ("endswith", "deploy-prod", "PROD", False),
    ("endswith", "x", None, False),
    ("iendswith", "deploy-prod", "PROD", True),
    ("iendswith", "deploy-prod", "deploy", False),
    ("iendswith", "x", None, False),
    ("lessthan", 3, 5, True),
    ("lessthan", 5, 5, False),
    ("lessthan", 2.5, 3, True),
    ("lessthan", "a", "b", True),  # raw comparison of text
    ("lessthan", 3, None, False),
    ("greaterthan", 6, 5, True),
    ("greaterthan", 5, 5, False),
    ("greaterthan", "b", "a", True),
    ("greaterthan", 6, None, False),
    ("matchwildcard", "server-01.prod", "server-*.prod", True),
    ("matchwildcard", "server-01.prod", "server-?.prod", False),
    ("matchwildcard", "a.txt", "*.[tT]xt", True),
    ("matchwildcard", "x", None, False),
    ("matchregex", "error: disk full", "error", True),
    ("matchregex", "an error", "error", False),  # anchored at the start
    ("matchregex", "line1\nline2", "line1.line2", True),  # DOTALL
    ("matchregex", "x", None, False),
    ("regex", "an error happened", "err(or)?", True),
    ("regex", "an ERROR", "error", False),
    ("regex", "abc123", r"^abc\d+$", True),
    ("regex", "x", None, False),
    ("iregex", "an ERROR", "error", True),
    ("iregex", "fine", "error", False),
    ("iregex", "x", None, False),
    ("timediff_lt", ago(10), 60, True),
    ("timediff_lt", ago(120), 60, False),
    ("timediff_lt", ago(10), "60", True),  # a number in text, as a template renders it
    ("timediff_lt", ago(10), None, False),
    ("timediff_gt", ago(120), 60, True),
    ("timediff_gt", ago(10), 60, False),
    ("timediff_gt", ago(10), None, False),
    ("exists", "x", "ignored", True),
    ("exists", 0, None, True),
    ("exists", False, None, True),
    ("exists", None, "ignored", False),
    ("nexists", None, None, True),
    ("nexists", "", None, False),
    ("inside", "b", ["a", "b"], True),
    ("inside", "c", ["a", "b"], False),
    ("inside", "ell", "hello", True),
    ("inside", 2, [1, 2, 3], True),
    ("inside", "a", None, False),
    ("ninside", "c", ["a", "b"], True),
    ("ninside", "a", ["a", "b"], False),
    ("ninside", "a", None, False),
]


@pytest.mark.parametrize("operator,value,pattern,expected", CASES)
def test_operator(operator, value, pattern, expected):
    # Given a payload value and a rendered pattern; When the operator compares them; Then the verdict is StackStorm's
    assert apply(operator, resolve(value), pattern) is expected


def test_every_operator_has_cases():
    covered = {case[0] for case in CASES} | {"search"}
    assert covered == set(operators.OPERATORS)


@pytest.mark.parametrize("alias,canonical", sorted(operators.ALIASES.items()))
def test_aliases_behave_as_their_operator(alias, canonical):
    # Given every case of the full operator; Then its short alias gives the same verdicts
    rows = [case for case in CASES if case[0] == canonical]
    assert rows
    for _, value, pattern, expected in rows:
        assert apply(alias, resolve(value), pattern) is expected
    assert operators.canonical_name(alias) == canonical


def test_alias_table_is_stackstorms():
    assert operators.ALIASES == {"eq": "equals", "neq": "nequals", "ieq": "iequals", "lt": "lessthan",
                                 "gt": "greaterthan", "td_lt": "timediff_lt", "td_gt": "timediff_gt",
                                 "in": "inside", "nin": "ninside"}


def test_names_are_case_insensitive():
    assert apply("Equals", "a", "a") is True
    assert apply("EQ", "a", "b") is False


@pytest.mark.parametrize("operator,value,pattern", [
    ("lessthan", "5", 10),  # mixed types are not coerced
    ("greaterthan", None, 3),
    ("iequals", 5, "5"),
    ("contains", None, "x"),  # a missing value cannot contain anything
    ("contains", 5, "5"),
    ("startswith", 5, "5"),
    ("icontains", ["A"], "a"),
    ("matchwildcard", 5, "*"),
    ("regex", "x", "(unclosed"),
    ("regex", 5, "5"),
    ("timediff_lt", "not a date", 60),
    ("timediff_gt", ago(10), "soon"),
    ("inside", "a", 5),
])
def test_impossible_comparisons_raise_a_validation_error(operator, value, pattern):
    # Given values the operator cannot compare; Then a ValidationError says which, instead of a crash
    with pytest.raises(ValidationError) as error:
        apply(operator, resolve(value), pattern)
    assert operators.canonical_name(operator) in error.value.message


def test_unknown_operator_lists_the_valid_names():
    with pytest.raises(ValidationError) as error:
        apply("equalz", "a", "a")
    message = error.value.message
    assert 'unknown operator "equalz"' in message
    for name in ("equals", "eq", "search", "td_lt", "nin", "iregex"):
        assert name in message


@pytest.mark.parametrize("form", [
    lambda now: now.isoformat(), lambda now: now.replace(tzinfo=None).isoformat(),
    lambda now: now.strftime("%Y-%m-%d %H:%M:%S.%f"), lambda now: now.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    lambda now: now, lambda now: now.timestamp(),
], ids=["iso", "naive", "space", "rfc2822", "datetime", "epoch"])
def test_timestamps_in_every_accepted_form(form):
    # Given "now" written as ISO 8601 (aware, naive = UTC), RFC 2822, a datetime or epoch seconds
    value = form(datetime.datetime.now(datetime.timezone.utc))
    assert apply("timediff_lt", value, 5) is True
    assert apply("timediff_gt", value, 5) is False


ITEMS = [{"name": "Status", "to": "Approved"}, {"name": "Owner", "to": "bob"}]


def check_item(item, child):
    """A check function like the matcher's: look the child's path up under "item"."""
    value = item
    for step in child.path[1:]:
        value = value.get(step) if isinstance(value, dict) else None
    return apply(child.operator, value, child.pattern)


@pytest.mark.parametrize("condition,children,value,expected", [
    ("any", {"item.name": ("equals", "Status"), "item.to": ("equals", "Approved")}, ITEMS, True),
    ("any", {"item.name": ("equals", "Status"), "item.to": ("equals", "bob")}, ITEMS, False),
    ("all", {"item.to": ("exists", None)}, ITEMS, True),
    ("all", {"item.name": ("equals", "Status")}, ITEMS, False),
    ("all", {"item.name": ("equals", "Status")}, [], True),  # vacuous truth, as in StackStorm
    ("any", {"item.name": ("equals", "Status")}, [], False),
    ("any2any", {"item.name": ("equals", "nobody"), "item.to": ("equals", "bob")}, ITEMS, True),
    ("any2any", {"item.name": ("equals", "nobody"), "item.to": ("equals", "x")}, ITEMS, False),
    ("all2any", {"item.name": ("equals", "Status"), "item.to": ("equals", "bob")}, ITEMS, True),
    ("all2any", {"item.name": ("equals", "Status"), "item.to": ("equals", "x")}, ITEMS, False),
    ("any", {"item.name": ("equals", "Status")}, {"name": "Status"}, True),  # a dict is one item
])
def test_search_conditions(condition, children, value, expected):
    criteria = {"trigger.fields": {"type": "search", "condition": condition,
                                   "pattern": {key: {"type": op, "pattern": pattern}
                                               for key, (op, pattern) in children.items()}}}
    (criterion,) = parse_criteria(criteria)
    assert operators.search(value, criterion.children, criterion.condition, check_item) is expected


def test_search_needs_a_list():
    (criterion,) = parse_criteria({"trigger.x": {"type": "search", "condition": "any",
                                                 "pattern": {"item.a": {"type": "exists", "pattern": 1}}}})
    with pytest.raises(ValidationError, match="needs a list"):
        operators.search("text", criterion.children, "any", check_item)
    with pytest.raises(ValidationError, match="condition"):
        operators.search([], criterion.children, "count", check_item)


@pytest.mark.parametrize("key,steps", [
    ("trigger.a", ("trigger", "a")),
    ("trigger.body.items[0].name", ("trigger", "body", "items", 0, "name")),
    ("trigger.items[*].name", ("trigger", "items", WILDCARD, "name")),
    ("trigger.*.name", ("trigger", WILDCARD, "name")),
    ("trigger.'a.b'.c", ("trigger", "a.b", "c")),
    ('trigger."a.b"', ("trigger", "a.b")),
    ("trigger.x#1", ("trigger", "x")),
    ("trigger.headers.Content-Type", ("trigger", "headers", "Content-Type")),
    ("trigger.list[-1]", ("trigger", "list", -1)),
])
def test_payload_paths(key, steps):
    assert parse_path(key) == steps


@pytest.mark.parametrize("key", ["trigger..a", "trigger.", ".trigger", "trigger[x]", "trigger a"])
def test_malformed_paths_are_refused(key):
    with pytest.raises(ValidationError, match="not a payload path"):
        parse_path(key)


def test_criteria_parse_in_order_with_canonical_operators():
    criteria = parse_criteria({
        "trigger.a": {"type": "eq", "pattern": 1},
        "trigger.a#2": {"type": "nexists"},  # exists/nexists need no pattern here
        "trigger.b": {"type": "IEquals", "pattern": "{{ trigger.c }}"},
    })
    assert [(c.key, c.operator, c.pattern) for c in criteria] == [
        ("trigger.a", "equals", 1), ("trigger.a#2", "nexists", None), ("trigger.b", "iequals", "{{ trigger.c }}")]
    assert criteria[1].path == ("trigger", "a")


@pytest.mark.parametrize("criteria,field,text", [
    ({"trigger.a": {"type": "equalz", "pattern": 1}}, "criteria.trigger.a.type", "valid operators are"),
    ({"trigger.a": {"pattern": 1}}, "criteria.trigger.a.type", "no operator"),
    ({"trigger.a": {"type": "equals"}}, "criteria.trigger.a.pattern", "no pattern"),
    ({"trigger.a": "equals"}, "criteria.trigger.a", "must be a mapping"),
    ({"trigger.a": {"type": "eq", "pattern": 1, "patern": 2}}, "criteria.trigger.a.patern", "unknown field"),
    ({"trigger.a": {"type": "eq", "pattern": 1, "condition": "any"}}, "criteria.trigger.a.condition", "only"),
    ({"trigger..a": {"type": "eq", "pattern": 1}}, "criteria.trigger..a", "not a payload path"),
    ({"trigger.l": {"type": "search", "pattern": {"item.a": {"type": "eq", "pattern": 1}}}},
     "criteria.trigger.l.condition", "valid conditions are: any, all, any2any, all2any"),
    ({"trigger.l": {"type": "search", "condition": "any", "pattern": "x"}}, "criteria.trigger.l.pattern",
     "child criteria"),
    ({"trigger.l": {"type": "search", "condition": "all", "pattern": {"item.a": {"type": "bad", "pattern": 1}}}},
     "criteria.trigger.l.pattern.item.a.type", "valid operators are"),
])
def test_invalid_criteria_name_the_field(criteria, field, text):
    with pytest.raises(ValidationError) as error:
        parse_criteria(criteria)
    assert error.value.field == field
    assert text in error.value.message


def test_criteria_must_be_a_mapping():
    assert parse_criteria(None) == ()
    with pytest.raises(ValidationError, match="must be a mapping"):
        parse_criteria(["trigger.a"])
