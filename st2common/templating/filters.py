"""StackStorm's Jinja filters (``st2common/expressions/functions/*``), under StackStorm's names.

| filter                        | does                                                                |
| ----------------------------- | ------------------------------------------------------------------- |
| from_json_string / _yaml_     | parse text into data                                                |
| to_json_string / to_yaml_     | data as text (``indent``, ``sort_keys``, ``separators`` as st2)     |
| to_complex                    | data as JSON (what ``"{{ x }}"`` in a list or dict renders through) |
| json_escape                   | text escaped for a JSON string, without the quotes                  |
| regex_match / _search         | bool: the pattern matches at the start / anywhere                   |
| regex_replace                 | every match replaced                                                |
| regex_substring               | the result_index-th match (an error when there is none)             |
| version_compare               | -1, 0 or 1 between two semantic versions                            |
| version_more/less_than, _equal| bool comparisons                                                    |
| version_match                 | bool: ``"1.2.3" | version_match(">=1.0.0")``                        |
| version_bump_major/minor/patch| the next version; version_strip_patch: "major.minor"                |
| to_human_time_from_seconds    | 3725 -> "1h2m5s"                                                    |
| use_none                      | None as the marker that parameter casting turns back into None      |
| basename / dirname            | path parts                                                          |

``decrypt_kv`` lives with the datastore lookups (templating/datastore.py).
A failing filter raises; the renderer reports it as the template's error.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any, Callable, Mapping

import yaml

# The marker use_none renders; st2common.parameters casts it back to None (StackStorm's NONE_MAGIC_VALUE).
NONE_MAGIC = "%*****__%NONE%__*****%"


def _plain(value: Any) -> Any:
    """value with mapping, sequence and str subclasses (tracked fields, lookups) as plain types."""
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and type(value) is not str:
        return str(value)
    return value


# -- data ----------------------------------------------------------------------------------------

def from_json_string(value: Any) -> Any:
    """Parse JSON text."""
    return json.loads(str(value))


def from_yaml_string(value: Any) -> Any:
    """Parse YAML text (safe loader)."""
    return yaml.safe_load(str(value))


def to_json_string(value: Any, indent: int | None = None, sort_keys: bool = False,
                   separators: tuple[str, str] | None = (",", ": ")) -> str:
    """value as JSON text."""
    options: dict[str, Any] = {"sort_keys": bool(sort_keys)}
    if indent is not None:
        options["indent"] = indent
    if separators is not None:
        options["separators"] = tuple(separators)
    return json.dumps(_plain(value), **options)


def to_yaml_string(value: Any, indent: int | None = None, allow_unicode: bool = True) -> str:
    """value as block-style YAML text."""
    options: dict[str, Any] = {"default_flow_style": False}
    if indent is not None:
        options["indent"] = indent
    if allow_unicode is not None:
        options["allow_unicode"] = allow_unicode
    return yaml.safe_dump(_plain(value), **options)


def to_complex(value: Any) -> str:
    """value as JSON (decoded again after rendering, so a list stays a list)."""
    return json.dumps(_plain(value))


def json_escape(value: Any) -> str:
    """value escaped for use inside a JSON string (json.dumps without the outer quotes)."""
    text = json.dumps(_plain(value))
    # Only the enclosing quotes go: a string ending in an escaped quote keeps it.
    return text[1:-1] if isinstance(_plain(value), str) else text


# -- regular expressions -------------------------------------------------------------------------

def _flags(ignorecase: bool) -> int:
    return re.IGNORECASE if ignorecase else 0


def regex_match(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    """True when pattern matches at the start of value."""
    return bool(re.match(pattern, str(value), _flags(ignorecase)))


def regex_search(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    """True when pattern matches anywhere in value."""
    return bool(re.search(pattern, str(value), _flags(ignorecase)))


def regex_replace(value: Any, pattern: str, replacement: str, ignorecase: bool = False) -> str:
    """value with every match of pattern replaced (backreferences as in re.sub)."""
    return re.compile(pattern, _flags(ignorecase)).sub(replacement, str(value))


def regex_substring(value: Any, pattern: str, result_index: int = 0, ignorecase: bool = False) -> Any:
    """The result_index-th match of pattern (its groups when the pattern has several)."""
    matches = re.findall(pattern, str(value), _flags(ignorecase))
    try:
        return matches[result_index]
    except IndexError:
        raise ValueError(f"regex_substring: no match number {result_index} of {pattern!r} "
                         f"({len(matches)} found)") from None


# -- semantic versions ---------------------------------------------------------------------------

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")


def _parse_version(value: Any) -> tuple[int, int, int, tuple[str, ...]]:
    match = _SEMVER.match(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a valid semantic version (MAJOR.MINOR.PATCH)")
    prerelease = tuple(match.group(4).split(".")) if match.group(4) else ()
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), prerelease


def _prerelease_key(parts: tuple[str, ...]) -> tuple:
    # A release sorts after its pre-releases; numeric identifiers sort before alphanumeric ones.
    if not parts:
        return (1,)
    return (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts))


def version_compare(value: Any, other: Any) -> int:
    """-1, 0 or 1 as value is lower than, equal to or higher than other (build metadata ignored)."""
    left, right = _parse_version(value), _parse_version(other)
    left_key = (left[:3], _prerelease_key(left[3]))
    right_key = (right[:3], _prerelease_key(right[3]))
    return (left_key > right_key) - (left_key < right_key)


def version_more_than(value: Any, other: Any) -> bool:
    """value > other."""
    return version_compare(value, other) == 1


def version_less_than(value: Any, other: Any) -> bool:
    """value < other."""
    return version_compare(value, other) == -1


def version_equal(value: Any, other: Any) -> bool:
    """value == other."""
    return version_compare(value, other) == 0


_MATCH_OPERATORS: dict[str, Callable[[int], bool]] = {
    ">=": lambda c: c >= 0, "<=": lambda c: c <= 0, "==": lambda c: c == 0, "!=": lambda c: c != 0,
    ">": lambda c: c > 0, "<": lambda c: c < 0,
}


def version_match(value: Any, expression: str) -> bool:
    """True when value satisfies an expression such as ">=1.2.0" (operators <, >, <=, >=, ==, !=)."""
    expression = str(expression).strip()
    for operator in (">=", "<=", "==", "!=", ">", "<"):
        if expression.startswith(operator):
            return _MATCH_OPERATORS[operator](version_compare(value, expression[len(operator):].strip()))
    raise ValueError(f"version_match: {expression!r} must start with one of <, >, <=, >=, ==, !=")


def version_bump_major(value: Any) -> str:
    """The next major version: 1.2.3 -> 2.0.0."""
    major, _, _, _ = _parse_version(value)
    return f"{major + 1}.0.0"


def version_bump_minor(value: Any) -> str:
    """The next minor version: 1.2.3 -> 1.3.0."""
    major, minor, _, _ = _parse_version(value)
    return f"{major}.{minor + 1}.0"


def version_bump_patch(value: Any) -> str:
    """The next patch version: 1.2.3 -> 1.2.4."""
    major, minor, patch, _ = _parse_version(value)
    return f"{major}.{minor}.{patch + 1}"


def version_strip_patch(value: Any) -> str:
    """"major.minor" of a version."""
    major, minor, _, _ = _parse_version(value)
    return f"{major}.{minor}"


# -- time, None, paths ---------------------------------------------------------------------------

def to_human_time_from_seconds(seconds: Any) -> str:
    """A duration as StackStorm prints it: 0 -> "0s", 65 -> "1m5s", 90061 -> "1d1h1m1s"."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"to_human_time_from_seconds needs a number of seconds, got {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds}\u03bcs"
    offset = datetime.datetime(1, 1, 1) + datetime.timedelta(seconds=int(round(seconds)))
    parts = [offset.year - 1, offset.day - 1, offset.hour, offset.minute, offset.second]
    first = next((i for i, part in enumerate(parts) if part), None)
    if first is None:
        return "0s"
    units = ("y", "d", "h", "m", "s")[first:]
    return "".join(f"{part}{unit}" for part, unit in zip(parts[first:], units))


def use_none(value: Any) -> Any:
    """None as the marker a parameter cast turns back into None (a template cannot render None)."""
    return NONE_MAGIC if value is None else value


def basename(path: Any) -> str:
    """The last component of a path."""
    return os.path.basename(str(path))


def dirname(path: Any) -> str:
    """A path without its last component."""
    return os.path.dirname(str(path))


FILTERS: dict[str, Callable[..., Any]] = {
    "from_json_string": from_json_string,
    "from_yaml_string": from_yaml_string,
    "to_json_string": to_json_string,
    "to_yaml_string": to_yaml_string,
    "to_complex": to_complex,
    "json_escape": json_escape,
    "regex_match": regex_match,
    "regex_replace": regex_replace,
    "regex_search": regex_search,
    "regex_substring": regex_substring,
    "version_compare": version_compare,
    "version_more_than": version_more_than,
    "version_less_than": version_less_than,
    "version_equal": version_equal,
    "version_match": version_match,
    "version_bump_major": version_bump_major,
    "version_bump_minor": version_bump_minor,
    "version_bump_patch": version_bump_patch,
    "version_strip_patch": version_strip_patch,
    "to_human_time_from_seconds": to_human_time_from_seconds,
    "use_none": use_none,
    "basename": basename,
    "dirname": dirname,
}


def install(env) -> None:
    """Add every filter to a Jinja environment."""
    env.filters.update(FILTERS)
