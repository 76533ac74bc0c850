"""Jinja expressions in workflows: ``{{ ctx('x') | to_json_string }}`` and ``{% %}`` blocks.

A statement that is one ``{{ expression }}`` evaluates to the expression's own
value (a list stays a list); anything else renders to text. Every registry
function is both a global and a filter; the workflow variables are also
reachable as ``_`` (``{{ _.x }}``). Undefined names are errors, never ''.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from st2common.expressions.functions import RUNTIME_KEY, Runtime, jinja_callables
from st2common.expressions.functions import ExpressionEvaluationException

LANGUAGE = "jinja"
# A Jinja expression or block anywhere in a string, delimiters included.
EXPRESSION = re.compile(r"{{.*?}}|{%.*?%}", re.DOTALL)
_BLOCK = re.compile(r"{%.*?%}", re.DOTALL)
_CACHE_SIZE = 4096

_VARIABLE_PATTERNS = (
    re.compile(r"\bctx\(\s*['\"](\w+)['\"]\s*\)"),
    re.compile(r"\bctx\(\s*\)\s*\.\s*(\w+)"),
    re.compile(r"(?<![\w.])_\.(\w+)"),
)


class JinjaEvaluationException(ExpressionEvaluationException):
    """A Jinja expression failed to evaluate."""


@functools.cache
def environment() -> SandboxedEnvironment:
    """The workflow Jinja environment: strict undefined, the function registry as globals and filters."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               autoescape=False)
    callables = jinja_callables()
    env.globals.update(callables)
    env.filters.update(callables)
    return env


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _template(text: str) -> jinja2.Template:
    return environment().from_string(text)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _expression(source: str):
    return environment().compile_expression(source, undefined_to_none=False)


def _lone_expression(text: str) -> str | None:
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    inner = stripped[2:-2]
    if "{{" in inner or "}}" in inner or _BLOCK.search(inner):
        return None
    return inner.strip()


def validate(text: str) -> list[dict[str, Any]]:
    """Syntax errors of the Jinja in text, as inspection entries."""
    try:
        environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return [{"language": LANGUAGE, "expression": text, "message": exc.message or str(exc)}]
    return []


def variables(text: str) -> list[tuple[str, str]]:
    """(expression, variable name) for every context variable text reads."""
    found = []
    for expression in EXPRESSION.findall(text):
        for pattern in _VARIABLE_PATTERNS:
            found.extend((expression, name) for name in pattern.findall(expression))
    return found


def _scope(runtime: Runtime) -> dict[str, Any]:
    return {RUNTIME_KEY: runtime, "_": runtime.variables}


def evaluate(text: str, runtime: Runtime) -> Any:
    """Evaluate a string holding Jinja: a lone ``{{ }}`` keeps its type, anything else is text."""
    source = _lone_expression(text)
    try:
        if source is not None:
            result = _expression(source)(**_scope(runtime))
            if isinstance(result, jinja2.Undefined):
                result._fail_with_undefined_error()
            return result
        return _template(text).render(_scope(runtime))
    except ExpressionEvaluationException as exc:
        raise JinjaEvaluationException(
            f"Unable to evaluate expression '{text}'. {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # jinja, the sandbox and every filter raise their own types
        raise JinjaEvaluationException(
            f"Unable to evaluate expression '{text}'. {type(exc).__name__}: {exc}") from exc
