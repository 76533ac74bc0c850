"""Rendering of ActionChain ``vars``, node ``parameters`` and ``publish``, as StackStorm does it.

Each value of a mapping is rendered on its own as a Jinja template (through the
one environment of st2common.templating): text as it is, a list or dict as its
JSON text (decoded again after rendering), anything else as ``str(value)``.
A value whose text does not change keeps its original type; any other becomes
the rendered text, so a published ``"{{ 5 }}"`` is the string ``"5"`` (the
action a later node calls casts it to its parameter's type). Every render also
sees ``__context``, the whole context.

| what       | context (later entries win)                                                   |
| ---------- | ----------------------------------------------------------------------------- |
| vars       | ``st2kv`` (system, user), the chain action's parameters                        |
| parameters | the chain's parameters, earlier nodes' results by node name, the chain's vars |
|            | and published values, ``__results``, ``system``, ``st2kv``,                    |
|            | ``action_context`` = {parent: chain context + execution_id}, ``config_context`` |
| publish    | the chain's parameters, ``<this node>`` = its result, earlier results, vars,  |
|            | ``__results``, ``system``, ``st2kv``                                          |

``st2kv.user`` is offered in node parameters and publish too (StackStorm offers
only ``st2kv.system`` there): a superset, so StackStorm content renders alike.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from st2common.templating import environment

RESULTS_KEY = "__results"
CONTEXT_KEY = "__context"


class RenderError(Exception):
    """A value failed to render; key and template name it."""

    def __init__(self, key: str, template: str, error: Exception) -> None:
        super().__init__(str(error))
        self.key = key
        self.template = template
        self.error = error


def render_values(mapping: Mapping[str, Any] | None, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render each value of mapping on its own (see the module doc); RenderError names the key."""
    if not mapping:
        return dict(mapping or {})
    scope = {CONTEXT_KEY: context, **context}
    rendered: dict[str, Any] = {}
    for key, value in mapping.items():
        structured = isinstance(value, (dict, list))
        text = json.dumps(value) if structured else value if isinstance(value, str) else str(value)
        try:
            output = environment().from_string(text).render(scope)
        except Exception as exc:  # any failure of a template is the template's: name it
            raise RenderError(key, text, exc) from exc
        if output == text:
            rendered[key] = value
        elif structured:
            try:
                rendered[key] = json.loads(output)
            except ValueError as exc:
                raise RenderError(key, text, exc) from exc
        else:
            rendered[key] = str(output)
    return rendered


def vars_context(parameters: Mapping[str, Any], st2kv: Mapping[str, Any]) -> dict[str, Any]:
    """What ``vars`` render with."""
    return {**st2kv, **parameters}


def parameters_context(parameters: Mapping[str, Any], results: Mapping[str, Any], chain_vars: Mapping[str, Any],
                       st2kv: Mapping[str, Any], action_context: Mapping[str, Any],
                       config: Any) -> dict[str, Any]:
    """What a node's ``parameters`` render with."""
    context: dict[str, Any] = {**parameters, **results, **chain_vars, RESULTS_KEY: dict(results)}
    context.update(_datastore(st2kv))
    context["action_context"] = dict(action_context)
    context["config_context"] = config
    return context


def publish_context(parameters: Mapping[str, Any], node_name: str, result: Any, results: Mapping[str, Any],
                    chain_vars: Mapping[str, Any], st2kv: Mapping[str, Any]) -> dict[str, Any]:
    """What a node's ``publish`` renders with, once the node ended."""
    context: dict[str, Any] = {**parameters, node_name: result, **results, **chain_vars,
                               RESULTS_KEY: dict(results)}
    context.update(_datastore(st2kv))
    return context


def _datastore(st2kv: Mapping[str, Any]) -> dict[str, Any]:
    """``st2kv`` and StackStorm's older spelling ``system`` (``{{ system.key }}``)."""
    lookups = st2kv.get("st2kv") or {}
    return {"st2kv": lookups, "system": lookups.get("system")}
