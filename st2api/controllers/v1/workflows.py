"""/workflows/inspect: the checks an Orquesta workflow goes through before it runs, on a definition.

The body is the definition as text (StackStorm's client sends ``text/plain``
YAML); a JSON body holding the YAML text as a string, or the definition as an
object, is taken too. The answer is always 200 with the list of problems,
each ``{type, message, spec_path, schema_path}`` (plus ``language`` and
``expression`` for expression and context problems); an empty list means the
definition is fine.
"""

from __future__ import annotations

import json
from typing import Any

from st2api.controllers.base import Call, Controller, Route
from st2common.exceptions import ValidationError
from st2common.services import workflows


class WorkflowsController(Controller):
    """Workflow inspection."""

    resource = "workflows"
    routes = (Route("POST", "inspect", "inspect", reads=True),)

    def inspect(self, call: Call) -> list[dict[str, Any]]:
        """POST /workflows/inspect."""
        return workflows.inspect(_definition(call))


def _definition(call: Call) -> str | dict[str, Any]:
    raw = call.request.body or b""
    try:
        text = raw.decode(call.request.charset or "utf-8")
    except (LookupError, UnicodeDecodeError) as exc:
        raise ValidationError(f"The workflow definition is not readable text: {exc}") from None
    if "json" in (call.request.content_type or ""):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, (str, dict)):
            return parsed
    return text
