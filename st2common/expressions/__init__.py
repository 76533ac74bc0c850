"""Workflow expressions: YAQL ``<% %>`` and Jinja ``{{ }}``/``{% %}`` over one function registry.

``evaluate(value, runtime)`` walks lists and dicts and evaluates every string
holding an expression; ``validate`` and ``variables`` serve inspection. The two
languages cannot be mixed in one string.
"""

from __future__ import annotations

from typing import Any, Iterator

from st2common.expressions import jinja, yaql
from st2common.expressions.functions import (
    FUNCTIONS,
    NONE_MAGIC_VALUE,
    ExpressionEvaluationException,
    Runtime,
    VariableInaccessibleError,
    VariableUndefinedError,
)
from st2common.expressions.jinja import JinjaEvaluationException
from st2common.expressions.yaql import YaqlEvaluationException

__all__ = [
    "FUNCTIONS", "ExpressionEvaluationException", "ExpressionGrammarException", "JinjaEvaluationException",
    "Runtime", "VariableInaccessibleError", "VariableUndefinedError", "YaqlEvaluationException",
    "evaluate", "has_expression", "is_expression", "language", "validate", "variables",
]

_LANGUAGES = {yaql.LANGUAGE: yaql, jinja.LANGUAGE: jinja}
MIXED_MESSAGE = "Expressions of different types (YAQL and Jinja) cannot be mixed in one statement."


class ExpressionGrammarException(ExpressionEvaluationException):
    """A statement mixes YAQL and Jinja."""


def language(text: Any) -> str | None:
    """"yaql" or "jinja" for a string holding expressions, None for plain values."""
    if not isinstance(text, str):
        return None
    found = [name for name, module in _LANGUAGES.items() if module.EXPRESSION.search(text)]
    if len(found) > 1:
        raise ExpressionGrammarException(MIXED_MESSAGE)
    return found[0] if found else None


def has_expression(value: Any) -> bool:
    """True when value, or any string nested in it, holds an expression."""
    return any(True for _ in _strings(value, with_expressions=True))


def is_expression(text: Any) -> bool:
    """True when text is exactly one expression and nothing else."""
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    for module in _LANGUAGES.values():
        found = module.EXPRESSION.findall(stripped)
        if len(found) == 1 and found[0] == stripped:
            return True
    return False


def _strings(value: Any, with_expressions: bool = False) -> Iterator[str]:
    if isinstance(value, str):
        if not with_expressions or any(m.EXPRESSION.search(value) for m in _LANGUAGES.values()):
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, with_expressions)
            yield from _strings(item, with_expressions)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, with_expressions)


def evaluate(value: Any, runtime: Runtime) -> Any:
    """Evaluate every expression in value (recursing into lists and dicts)."""
    if isinstance(value, str):
        name = language(value)
        if name is None:
            return value
        result = _LANGUAGES[name].evaluate(value, runtime)
        return None if result == NONE_MAGIC_VALUE else result
    if isinstance(value, dict):
        return {evaluate(k, runtime): evaluate(v, runtime) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [evaluate(v, runtime) for v in value]
    return value


def validate(value: Any) -> list[dict[str, Any]]:
    """Grammar errors of the expressions in value: {language, expression, message} each."""
    errors = []
    for text in _strings(value, with_expressions=True):
        try:
            name = language(text)
        except ExpressionGrammarException as exc:
            errors.append({"language": None, "expression": text, "message": str(exc)})
            continue
        errors.extend(_LANGUAGES[name].validate(text))
    return errors


def variables(value: Any) -> list[tuple[str, str, str]]:
    """(language, expression, variable name) for every context variable value reads."""
    found = []
    for text in _strings(value, with_expressions=True):
        for name, module in _LANGUAGES.items():
            found.extend((name, expression, var) for expression, var in module.variables(text))
    return found
