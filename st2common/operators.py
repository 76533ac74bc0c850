"""Rule criteria: every StackStorm operator as a pure function, the name table, and parsed criteria.

An operator takes the payload value and the rendered pattern and returns a
bool. Semantics are StackStorm's (st2common/operators.py), quirks included:

| operator (aliases)         | true when                                              | None pattern |
| -------------------------- | ------------------------------------------------------ | ------------ |
| equals (eq)                | value == pattern, no type coercion (5 != "5")          | False        |
| nequals (neq)              | value != pattern                                       | value != None|
| iequals (ieq)              | value.lower() == pattern.lower()                       | False        |
| contains / ncontains       | pattern in value / not in (substring, list member)     | False        |
| icontains / incontains     | the same, lower-cased                                  | False        |
| startswith / istartswith   | value.startswith(pattern) (optionally lower-cased)     | False        |
| endswith / iendswith       | value.endswith(pattern) (optionally lower-cased)       | False        |
| lessthan (lt)              | value < pattern, raw Python comparison                 | False        |
| greaterthan (gt)           | value > pattern, raw Python comparison                 | False        |
| matchwildcard              | fnmatch (shell glob)                                   | False        |
| matchregex                 | re.match, anchored at the start, DOTALL                | False        |
| regex / iregex             | re.search anywhere (iregex: ignoring case)             | False        |
| timediff_lt (td_lt)        | the timestamp value is less than pattern seconds old   | False        |
| timediff_gt (td_gt)        | the timestamp value is more than pattern seconds old   | False        |
| exists / nexists           | value is not None / value is None                      | ignored      |
| inside (in) / ninside (nin)| value in pattern / not in pattern                      | False        |
| search                     | child criteria on the items of a list (any, all, any2any, all2any) | False |

The text operators decode ``bytes`` to UTF-8 first. A comparison Python
cannot make (``"a" < 5``, ``startswith`` on a number) raises ValidationError:
the rules engine then records a failed enforcement, as StackStorm does.

Criterion keys are payload paths (``trigger.body.items[0].name``), a subset of
the JSONPath StackStorm evaluates: dotted fields, quoted fields for keys with
dots (``trigger."a.b"``), ``[n]``, ``[*]`` and ``*``. Everything after a ``#``
is dropped, so ``trigger.x#1`` and ``trigger.x#2`` can test one field twice.
"""

from __future__ import annotations

import datetime
import email.utils
import fnmatch
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from st2common.exceptions import ValidationError

SEARCH = "search"
SEARCH_CONDITIONS = ("any", "all", "any2any", "all2any")
# Operators whose pattern is not needed (StackStorm insists on one anyway).
PATTERNLESS = ("exists", "nexists")


def _text(value: Any, pattern: Any) -> tuple[Any, Any]:
    """bytes made text, as StackStorm's ensure_operators_are_strings does."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(pattern, bytes):
        pattern = pattern.decode("utf-8")
    return value, pattern


def equals(value: Any, pattern: Any) -> bool:
    """value == pattern."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value == pattern


def nequals(value: Any, pattern: Any) -> bool:
    """value != pattern (a None pattern tests value != None, as in StackStorm)."""
    value, pattern = _text(value, pattern)
    return value != pattern


def iequals(value: Any, pattern: Any) -> bool:
    """Case-insensitive equality of two strings."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value.lower() == pattern.lower()


def contains(value: Any, pattern: Any) -> bool:
    """pattern in value (substring, or list member)."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return pattern in value


def ncontains(value: Any, pattern: Any) -> bool:
    """pattern not in value."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return pattern not in value


def icontains(value: Any, pattern: Any) -> bool:
    """pattern in value, ignoring case."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return pattern.lower() in value.lower()


def incontains(value: Any, pattern: Any) -> bool:
    """pattern not in value, ignoring case."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return pattern.lower() not in value.lower()


def startswith(value: Any, pattern: Any) -> bool:
    """value starts with pattern."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value.startswith(pattern)


def istartswith(value: Any, pattern: Any) -> bool:
    """value starts with pattern, ignoring case."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value.lower().startswith(pattern.lower())


def endswith(value: Any, pattern: Any) -> bool:
    """value ends with pattern."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value.endswith(pattern)


def iendswith(value: Any, pattern: Any) -> bool:
    """value ends with pattern, ignoring case."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value.lower().endswith(pattern.lower())


def lessthan(value: Any, pattern: Any) -> bool:
    """value < pattern, without coercion."""
    if pattern is None:
        return False
    return value < pattern


def greaterthan(value: Any, pattern: Any) -> bool:
    """value > pattern, without coercion."""
    if pattern is None:
        return False
    return value > pattern


def matchwildcard(value: Any, pattern: Any) -> bool:
    """Shell-style glob match of the whole value."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return fnmatch.fnmatch(value, pattern)


def matchregex(value: Any, pattern: Any) -> bool:
    """Regular expression anchored at the start, ``.`` matching newlines (deprecated in StackStorm)."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return _compiled(pattern, re.DOTALL).match(value) is not None


def regex(value: Any, pattern: Any) -> bool:
    """Regular expression found anywhere in value."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return _compiled(pattern, 0).search(value) is not None


def iregex(value: Any, pattern: Any) -> bool:
    """Regular expression found anywhere in value, ignoring case."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return _compiled(pattern, re.IGNORECASE).search(value) is not None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str, flags: int) -> re.Pattern:
    return re.compile(pattern, flags)


def parse_timestamp(value: Any) -> datetime.datetime:
    """A payload timestamp as an aware UTC datetime; a naive one is taken as UTC.

    ISO 8601 text (what StackStorm's ciso8601 reads) and RFC 2822 dates (HTTP
    ``Date`` headers, which its dateutil fallback reads) are accepted, and so
    are datetimes and epoch seconds.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            try:
                moment = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                raise ValidationError(f'"{value}" is not a timestamp') from None
    else:
        raise ValidationError(f"{type(value).__name__} value {value!r} is not a timestamp")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _age_seconds(value: Any) -> float:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (now - parse_timestamp(value)).total_seconds()


def timediff_lt(value: Any, pattern: Any) -> bool:
    """The timestamp value is less than pattern seconds old."""
    if pattern is None:
        return False
    # StackStorm compares with the raw pattern, so "60" from a template fails
    # there; a number in text is what the user meant.
    return _age_seconds(value) < float(pattern)


def timediff_gt(value: Any, pattern: Any) -> bool:
    """The timestamp value is more than pattern seconds old."""
    if pattern is None:
        return False
    return _age_seconds(value) > float(pattern)


def exists(value: Any, pattern: Any) -> bool:
    """The payload has a (non-null) value at the path."""
    return value is not None


def nexists(value: Any, pattern: Any) -> bool:
    """The payload has no value (or null) at the path."""
    return value is None


def inside(value: Any, pattern: Any) -> bool:
    """value in pattern (a list member, or a substring of a text pattern)."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value in pattern


def ninside(value: Any, pattern: Any) -> bool:
    """value not in pattern."""
    if pattern is None:
        return False
    value, pattern = _text(value, pattern)
    return value not in pattern


def search(value: Any, children: tuple["Criterion", ...], condition: str | None,
           check: Callable[[Any, "Criterion"], bool]) -> bool:
    """Child criteria applied to each item of a list value; check(item, child) tests one.

    ``any``: some item matches every child; ``all``: every item matches every
    child; ``any2any``: some item matches some child; ``all2any``: every item
    matches some child. A dict value is one item; an empty list matches ``all``.
    """
    if not children:
        return False
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(f"search needs a list to search, got {type(value).__name__}")
    if condition == "any":
        return any(all(check(item, child) for child in children) for item in value)
    if condition == "all":
        return all(all(check(item, child) for child in children) for item in value)
    if condition == "any2any":
        return any(any(check(item, child) for child in children) for item in value)
    if condition == "all2any":
        return all(any(check(item, child) for child in children) for item in value)
    raise ValidationError(f'search condition "{condition}" is not recognized; valid conditions are: '
                          f'{", ".join(SEARCH_CONDITIONS)}', field="condition")


# Canonical name -> function of (value, pattern). search is listed for its name only:
# it takes child criteria and a check function (see search()).
OPERATORS: dict[str, Callable[..., bool]] = {
    "equals": equals,
    "nequals": nequals,
    "iequals": iequals,
    "contains": contains,
    "ncontains": ncontains,
    "icontains": icontains,
    "incontains": incontains,
    "startswith": startswith,
    "istartswith": istartswith,
    "endswith": endswith,
    "iendswith": iendswith,
    "lessthan": lessthan,
    "greaterthan": greaterthan,
    "matchwildcard": matchwildcard,
    "matchregex": matchregex,
    "regex": regex,
    "iregex": iregex,
    "timediff_lt": timediff_lt,
    "timediff_gt": timediff_gt,
    "exists": exists,
    "nexists": nexists,
    "inside": inside,
    "ninside": ninside,
    SEARCH: search,
}

ALIASES: dict[str, str] = {
    "eq": "equals",
    "neq": "nequals",
    "ieq": "iequals",
    "lt": "lessthan",
    "gt": "greaterthan",
    "td_lt": "timediff_lt",
    "td_gt": "timediff_gt",
    "in": "inside",
    "nin": "ninside",
}


def operator_names() -> list[str]:
    """Every name a criterion may use, aliases included, sorted."""
    return sorted([*OPERATORS, *ALIASES])


def canonical_name(name: Any) -> str:
    """The operator's full name for name or its alias; ValidationError listing the valid names."""
    # StackStorm lower-cases at evaluation but not at validation; accepting
    # "Equals" everywhere is what a rule author expects.
    key = name.lower() if isinstance(name, str) else name
    if key in OPERATORS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    raise ValidationError(f'unknown operator "{name}"; valid operators are: {", ".join(operator_names())}',
                          field="type")


def get_operator(name: str) -> Callable[..., bool]:
    """The function for an operator name or alias."""
    return OPERATORS[canonical_name(name)]


def apply(name: str, value: Any, pattern: Any) -> bool:
    """Run a (value, pattern) operator; a comparison that cannot be made is a ValidationError."""
    operator = canonical_name(name)
    if operator == SEARCH:
        raise ValidationError("search takes child criteria; evaluate it with search()", field="type")
    try:
        return bool(OPERATORS[operator](value, pattern))
    except ValidationError as exc:
        raise ValidationError(f'operator "{operator}": {exc.message}') from None
    except re.error as exc:
        raise ValidationError(f'operator "{operator}": invalid regular expression {pattern!r}: {exc}') from None
    except (TypeError, AttributeError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f'operator "{operator}" cannot compare {type(value).__name__} value {value!r} with '
            f'{type(pattern).__name__} pattern {pattern!r} ({exc})') from None


# -- payload paths ----------------------------------------------------------------------------

class _Wildcard:
    """The ``*`` / ``[*]`` path step: every item of a list or value of a mapping."""

    def __repr__(self) -> str:
        return "*"


WILDCARD = _Wildcard()

_SEGMENT = re.compile(r"""
    (?P<quoted>'[^']*'|"[^"]*")      # 'a.b' or "a.b"
  | (?P<star>\*)
  | (?P<name>[^.\[\]'"\s]+)
""", re.VERBOSE)
_INDEX = re.compile(r"\[\s*(?:(?P<index>-?\d+)|(?P<star>\*))\s*\]")


@functools.lru_cache(maxsize=4096)
def parse_path(key: str) -> tuple[str | int | _Wildcard, ...]:
    """A criterion key as path steps: field names (str), list indexes (int) and WILDCARD.

    The ``#...`` suffix is dropped. ValidationError names the key when it is malformed.
    """
    text = key.split("#", 1)[0].strip()
    steps: list[str | int | _Wildcard] = []
    position = 0
    while True:
        match = _SEGMENT.match(text, position)
        if match is None:
            raise ValidationError(f'"{key}" is not a payload path (expected a field name at '
                                  f'character {position + 1})', field=key)
        if match.group("quoted"):
            steps.append(match.group("quoted")[1:-1])
        elif match.group("star"):
            steps.append(WILDCARD)
        else:
            steps.append(match.group("name"))
        position = match.end()
        while (index := _INDEX.match(text, position)) is not None:
            steps.append(WILDCARD if index.group("star") else int(index.group("index")))
            position = index.end()
        if position == len(text):
            return tuple(steps)
        if text[position] != ".":
            raise ValidationError(f'"{key}" is not a payload path (unexpected "{text[position]}" at '
                                  f'character {position + 1})', field=key)
        position += 1


# -- criteria ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Criterion:
    """One parsed criterion: where to look, which operator, the pattern (maybe a template)."""

    key: str
    path: tuple[str | int | _Wildcard, ...]
    operator: str
    pattern: Any
    condition: str | None = None
    children: tuple["Criterion", ...] = ()


def parse_criteria(criteria: Mapping[str, Any] | None, field: str = "criteria") -> tuple[Criterion, ...]:
    """Validate a rule's criteria and parse them, in order; ValidationError names the field at fault."""
    if criteria is None:
        return ()
    if not isinstance(criteria, Mapping):
        raise ValidationError(f"{field} must be a mapping of payload path to {{type, pattern}}", field=field)
    return tuple(_parse_criterion(str(key), spec, f"{field}.{key}") for key, spec in criteria.items())


def _parse_criterion(key: str, spec: Any, field: str) -> Criterion:
    if not isinstance(spec, Mapping):
        raise ValidationError(f"{field} must be a mapping with a type and a pattern", field=field)
    if spec.get("type") is None:
        raise ValidationError(f"{field}: no operator (type) given for {key}", field=f"{field}.type")
    try:
        operator = canonical_name(spec["type"])
    except ValidationError as exc:
        raise ValidationError(f"{field}.type: {exc.message}", field=f"{field}.type") from None
    unknown = sorted(set(spec) - {"type", "pattern", "condition"})
    if unknown:
        raise ValidationError(f'{field}: unknown field "{unknown[0]}" (a criterion has type, pattern '
                              'and, for search, condition)', field=f"{field}.{unknown[0]}")
    pattern = spec.get("pattern")
    # StackStorm also demands a pattern for exists/nexists, which ignore it;
    # no working rule depends on that refusal.
    if pattern is None and operator not in PATTERNLESS:
        raise ValidationError(f"{field}: no pattern given for operator {spec['type']}", field=f"{field}.pattern")
    try:
        path = parse_path(key)
    except ValidationError as exc:
        raise ValidationError(f"{field}: {exc.message}", field=field) from None
    if operator != SEARCH:
        if spec.get("condition") is not None:
            raise ValidationError(f"{field}.condition: only the search operator takes a condition",
                                  field=f"{field}.condition")
        return Criterion(key=key, path=path, operator=operator, pattern=pattern)
    condition = spec.get("condition")
    if condition not in SEARCH_CONDITIONS:
        raise ValidationError(f'{field}.condition: search condition "{condition}" is not recognized; valid '
                              f'conditions are: {", ".join(SEARCH_CONDITIONS)}', field=f"{field}.condition")
    if not isinstance(pattern, Mapping) or not pattern:
        raise ValidationError(f"{field}.pattern: search needs a mapping of child criteria "
                              '(keys like "item.name")', field=f"{field}.pattern")
    children = parse_criteria(pattern, field=f"{field}.pattern")
    return Criterion(key=key, path=path, operator=operator, pattern=dict(pattern), condition=condition,
                     children=children)
