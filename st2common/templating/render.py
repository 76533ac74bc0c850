"""The Jinja environment every parameter template renders with, and rendering helpers.

StackStorm renders with a ``SandboxedEnvironment`` using ``StrictUndefined``
(an unknown variable is an error, never an empty string), ``trim_blocks`` and
``lstrip_blocks``. Its filters (``to_json_string``, ``regex_match``, ...) are
added in ``environment()`` and nowhere else, so every template sees the same set.

Compiled templates are cached by their text: the same action defaults render
on every request, and compiling is far costlier than rendering.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from st2common.exceptions import ValidationError
from st2common.templating import datastore, filters

# A value that is one expression and nothing else renders to the expression's
# own value (a list stays a list), as StackStorm's ``to_complex`` rewrite does.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)

_CACHE_SIZE = 4096


@functools.cache
def environment() -> SandboxedEnvironment:
    """The one Jinja environment (sandboxed, strict about undefined names); filters are added here."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               autoescape=False)
    filters.install(env)
    datastore.install(env)
    return env


def is_template(value: Any) -> bool:
    """True when value is text holding a Jinja expression or statement."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def contains_template(value: Any) -> bool:
    """True when value, or any string nested in its lists and dicts, is a template."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_template(v) for v in value)
    return False


def _flat_globals(template: jinja2.Template) -> jinja2.Template:
    """template with its globals in a plain dict instead of a ChainMap over the environment's.

    Every render merges the globals into a new dict, and reading a ChainMap
    through is most of the cost of rendering a short template. The environment's
    globals are all set before its first template is compiled (environment()).
    """
    template.globals = dict(template.globals)
    return template


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _template(text: str) -> jinja2.Template:
    return _flat_globals(environment().from_string(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _expression(source: str):
    expression = environment().compile_expression(source, undefined_to_none=False)
    # The expression renders through a template of its own (jinja2's TemplateExpression._template).
    inner = getattr(expression, "_template", None)
    if isinstance(inner, jinja2.Template):
        _flat_globals(inner)
    return expression


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _names(text: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(environment().parse(text)))


def variables(value: Any) -> frozenset[str]:
    """Top-level names the templates in value refer to (``{{ a.b }}`` refers to ``a``)."""
    if isinstance(value, str):
        if not is_template(value):
            return frozenset()
        try:
            return _names(value)
        except jinja2.TemplateSyntaxError as exc:
            raise ValidationError(f"template syntax error: {exc.message}") from exc
    if isinstance(value, dict):
        return frozenset().union(*(variables(v) for v in value.values())) if value else frozenset()
    if isinstance(value, (list, tuple)):
        return frozenset().union(*(variables(v) for v in value)) if value else frozenset()
    return frozenset()


def _single_expression(text: str) -> str | None:
    match = _SINGLE_EXPRESSION.match(text)
    if match is None:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in expr:
        return None
    return expr


def render(text: str, context: Mapping[str, Any]) -> str:
    """Render one template to text; ValidationError says what went wrong."""
    try:
        return _template(text).render(context)
    except jinja2.UndefinedError as exc:
        raise ValidationError(f"undefined variable: {exc.message}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ValidationError(f"template syntax error: {exc.message}") from exc
    except Exception as exc:  # a filter or the sandbox refused: any error is the template's
        raise ValidationError(f"cannot render template: {type(exc).__name__}: {exc}") from exc


def render_value(value: Any, context: Mapping[str, Any], native: bool = False) -> Any:
    """Render every template in value (recursing into lists and dicts).

    With native, a string that is a single ``{{ expression }}`` becomes the
    expression's value rather than its text; nested strings always do, so a
    list or dict keeps the types of what it refers to.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        expr = _single_expression(value) if native else None
        if expr is None:
            return render(value, context)
        try:
            result = _expression(expr)(**context)
            if isinstance(result, jinja2.Undefined):
                # An expression's value is not rendered, so strictness must be asked for.
                result._fail_with_undefined_error()
            if isinstance(result, str) and type(result) is not str:
                # A datastore lookup is text with the datastore behind it; keep only the text.
                result = str(result)
            return result
        except jinja2.UndefinedError as exc:
            raise ValidationError(f"undefined variable: {exc.message}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise ValidationError(f"template syntax error: {exc.message}") from exc
        except Exception as exc:  # as in render()
            raise ValidationError(f"cannot render template: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, dict):
        return {k: render_value(v, context, native=True) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_value(v, context, native=True) for v in value]
    return value
