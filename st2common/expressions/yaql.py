"""YAQL expressions: ``<% ctx(x).where($ > 1) %>``.

One engine and one root context with the function registry, built on first
use; each evaluation gets a child context carrying the ``Runtime`` and the
workflow variables as ``$``. Parsed expressions are cached by their text.
"""

from __future__ import annotations

import collections.abc  # noqa: F401  yaql 3 reads collections.abc without importing it
import functools
import inspect
import re
from typing import Any

import yaql
from yaql.language import exceptions as yaql_exc
from yaql.language import factory

from st2common.expressions.functions import FUNCTIONS, RUNTIME_KEY, Runtime
from st2common.expressions.functions import ExpressionEvaluationException

LANGUAGE = "yaql"
# A YAQL expression anywhere in a string, delimiters included.
EXPRESSION = re.compile(r"<%.*?%>", re.DOTALL)
_CACHE_SIZE = 4096

# Variables an expression reads: ctx(x), ctx('x'), ctx().x, and $.x outside
# any call (inside one, as in select($.name), $ is the item being iterated).
_VARIABLE_PATTERNS = (
    re.compile(r"\bctx\(\s*['\"]?(\w+)['\"]?\s*\)"),
    re.compile(r"\bctx\(\s*\)\s*\.\s*(\w+)"),
)
_ROOT_VARIABLE = re.compile(r"(?<![\w$])\$\.(\w+)")


class YaqlEvaluationException(ExpressionEvaluationException):
    """A YAQL expression failed to evaluate."""


class YaqlGrammarException(ExpressionEvaluationException):
    """A YAQL expression does not parse."""


@functools.cache
def _engine():
    return factory.YaqlFactory().create()


@functools.cache
def _root_context():
    context = yaql.create_context()
    for name, (fn, _needs_context) in FUNCTIONS.items():
        context.register_function(fn, name=name)
    return context


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse(source: str):
    return _engine()(source)


def strip(expression: str) -> str:
    """The expression without its ``<% %>`` delimiters."""
    return expression.strip()[2:-2].strip()


def validate(text: str) -> list[dict[str, Any]]:
    """Parse errors of every YAQL expression in text, as inspection entries."""
    errors = []
    for expression in EXPRESSION.findall(text):
        try:
            _parse(strip(expression))
        except (yaql_exc.YaqlException, ValueError, TypeError) as exc:
            errors.append({"language": LANGUAGE, "expression": expression, "message": str(exc)})
    return errors


def variables(text: str) -> list[tuple[str, str]]:
    """(expression, variable name) for every context variable text reads."""
    found = []
    for expression in EXPRESSION.findall(text):
        for pattern in _VARIABLE_PATTERNS:
            found.extend((expression, name) for name in pattern.findall(expression))
        for match in _ROOT_VARIABLE.finditer(expression):
            before = expression[:match.start()]
            if before.count("(") == before.count(")"):
                found.append((expression, match.group(1)))
    return found


def _evaluate_one(expression: str, runtime: Runtime) -> Any:
    source = strip(expression)
    context = _root_context().create_child_context()
    context[RUNTIME_KEY] = runtime
    try:
        result = _parse(source).evaluate(data=dict(runtime.variables), context=context)
        if inspect.isgenerator(result):
            result = list(result)
        return result
    except ExpressionEvaluationException as exc:
        raise YaqlEvaluationException(
            f"Unable to evaluate expression '{expression}'. {type(exc).__name__}: {exc}") from exc
    except KeyError as exc:
        key = str(exc).strip("'")
        raise YaqlEvaluationException(
            f"Unable to resolve key '{key}' in expression '{expression}' from context.") from exc
    except Exception as exc:  # yaql raises from its own tree and from any function it calls
        raise YaqlEvaluationException(
            f"Unable to evaluate expression '{expression}'. {type(exc).__name__}: {exc}") from exc


def evaluate(text: str, runtime: Runtime) -> Any:
    """Evaluate a string holding YAQL: a lone expression keeps its type, text is interpolated."""
    expressions = EXPRESSION.findall(text)
    if len(expressions) == 1 and text.strip() == expressions[0]:
        return _evaluate_one(expressions[0], runtime)
    output = text
    for expression in expressions:
        output = output.replace(expression, str(_evaluate_one(expression, runtime)), 1)
    return output
