"""Casting a parameter value to its declared JSON type, as StackStorm casts CLI text and rendered templates.

``cast(name, value, definition)``: "5" for an integer is 5, "a,b" for an array
is ["a", "b"], '{"k": 1}' for an object is a dict, "yes" for a boolean is
True; None and StackStorm's ``use_none`` marker are None. A value that does
not fit is a ParameterError naming the parameter, quoting the value unless the
definition says secret.
"""

from __future__ import annotations

import ast
import json
from typing import Any, Mapping

from st2common.exceptions import ParameterError

#: What secret values are replaced with in API output and logs (StackStorm's MASKED_ATTRIBUTE_VALUE).
MASK = "********"
#: The text StackStorm's ``use_none`` filter renders, cast back to None.
NONE_MAGIC = "%*****__%NONE%__*****%"


def shown(value: Any, definition: Mapping[str, Any]) -> str:
    """value as an error message may quote it: MASK for a secret."""
    return MASK if definition.get("secret") else repr(value)


def _type_error(name: str, value: Any, definition: Mapping[str, Any], type_name: str) -> ParameterError:
    return ParameterError(f'parameter "{name}": {shown(value, definition)} is not of type \'{type_name}\'',
                          field=name)


def _cast_integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError


def _cast_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return float(value.strip())
    raise TypeError


_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


def _cast_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise TypeError


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        # StackStorm falls back to a Python literal (a rendered dict prints as one).
        return ast.literal_eval(text)


def _cast_array(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            decoded = _decode(text)
            if isinstance(decoded, (list, tuple)):
                return list(decoded)
            raise TypeError
        # The CLI's form: a comma-separated list.
        return [part.strip() for part in text.split(",") if part.strip()]
    raise TypeError


def _cast_object(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        decoded = _decode(value.strip())
        if isinstance(decoded, dict):
            return decoded
    raise TypeError


def _cast_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise TypeError


def _cast_null(value: Any) -> Any:
    raise TypeError


_CASTS = {
    "integer": _cast_integer,
    "number": _cast_number,
    "boolean": _cast_boolean,
    "array": _cast_array,
    "object": _cast_object,
    "string": _cast_string,
    "null": _cast_null,
}


def cast(name: str, value: Any, definition: Mapping[str, Any]) -> Any:
    """value converted to the parameter's declared type; ParameterError naming it when it cannot be."""
    if value is None or value == NONE_MAGIC:
        return None
    caster = _CASTS.get(definition.get("type"))
    if caster is None:
        return value
    try:
        return caster(value)
    except (TypeError, ValueError, SyntaxError, MemoryError, RecursionError):
        raise _type_error(name, value, definition, definition["type"]) from None
