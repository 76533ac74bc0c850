"""The ActionChain language: schema, typed frozen records, and the node-to-node rule.

A definition is ``{chain: [nodes], default: <node name>, vars: {name: value}}``
and nothing else. A node has ``name`` and ``ref`` (required), ``parameters``
(or the old name ``params``, not both), ``on-success``, ``on-failure``,
``publish`` and ``notify``.

| node ended                  | next node      | the chain's status if it ends there |
| --------------------------- | -------------- | ----------------------------------- |
| succeeded                   | ``on-success`` | succeeded                           |
| failed, abandoned           | ``on-failure`` | failed                              |
| timeout                     | ``on-failure`` | timeout                             |
| canceled                    | none           | canceled                            |

So the chain's status is the status of the last node run: a failure whose
``on-failure`` node succeeds ends the chain succeeded, a failure with no
``on-failure`` ends it failed. The start node is ``default``, else the first
node that no ``on-success``/``on-failure`` names, else the first node.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import jsonschema
import yaml

from st2common import statuses
from st2common.exceptions import ValidationError

_NOTIFY_ITEM = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "data": {"type": "object"},
        "routes": {"type": "array", "items": {"type": "string"}},
        "channels": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "ref"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "ref": {"type": "string", "minLength": 1},
        "params": {"type": ["object", "null"]},
        "parameters": {"type": ["object", "null"]},
        "on-success": {"type": ["string", "null"]},
        "on-failure": {"type": ["string", "null"]},
        "publish": {"type": ["object", "null"], "patternProperties": {r"^\w+$": {}}},
        "notify": {
            "type": ["object", "null"],
            "properties": {"on-complete": _NOTIFY_ITEM, "on-success": _NOTIFY_ITEM, "on-failure": _NOTIFY_ITEM},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["chain"],
    "properties": {
        "chain": {"type": "array", "items": NODE_SCHEMA},
        "default": {"type": ["string", "null"]},
        "vars": {"type": ["object", "null"], "patternProperties": {r"^\w+$": {}}},
    },
    "additionalProperties": False,
}

_VALIDATOR = jsonschema.Draft4Validator(SCHEMA)
# The node status that decides the next node -> (transition key, the chain's status if it ends).
_FOLLOW = {
    statuses.SUCCEEDED: ("on-success", statuses.SUCCEEDED),
    statuses.FAILED: ("on-failure", statuses.FAILED),
    statuses.ABANDONED: ("on-failure", statuses.FAILED),
    statuses.TIMED_OUT: ("on-failure", statuses.TIMED_OUT),
}


class ChainSpecError(ValidationError):
    """The definition is not a valid ActionChain; ``errors`` lists each problem with its spec_path."""

    def __init__(self, errors: list[dict[str, str]], source: str = "") -> None:
        where = f' in "{source}"' if source else ""
        listed = "; ".join(f"{e['spec_path']}: {e['message']}" if e["spec_path"] else e["message"] for e in errors)
        super().__init__(f"Invalid action chain definition{where}: {listed}",
                         field=errors[0]["spec_path"] if errors else None)
        self.errors = errors
        self.source = source


def is_expression(value: Any) -> bool:
    """True for a node name written as a Jinja expression (resolved, and checked, only at run time)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@dataclass(frozen=True)
class Node:
    """One node: the action it runs, its parameters, where to go next and what it publishes."""

    name: str
    ref: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    on_success: str | None = None
    on_failure: str | None = None
    publish: Mapping[str, Any] = field(default_factory=dict)
    notify: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def context(self) -> dict[str, Any]:
        """The node as StackStorm puts it in a child's ``context.chain`` (keys with underscores)."""
        keys = ("name", "ref", "params", "parameters", "on-success", "on-failure", "publish", "notify")
        return {key.replace("-", "_"): copy.deepcopy(self.raw.get(key)) for key in keys}

    def next_for(self, status: str) -> tuple[str | None, str]:
        """(the next node's name or None, the chain's status should it end here) after this node ended status."""
        if status not in _FOLLOW:
            return None, status
        key, chain_status = _FOLLOW[status]
        return (self.on_success if key == "on-success" else self.on_failure) or None, chain_status


@dataclass(frozen=True)
class ChainSpec:
    """A parsed ActionChain definition."""

    nodes: tuple[Node, ...]
    default: str
    vars: Mapping[str, Any]
    definition: Mapping[str, Any] = field(compare=False, repr=False)

    def node(self, name: str) -> Node | None:
        """The first node called name (StackStorm's lookup), or None."""
        return next((node for node in self.nodes if node.name == name), None)

    def start(self) -> Node:
        """The node the chain starts with."""
        return self.node(self.default)


def _node(raw: Mapping[str, Any]) -> Node:
    return Node(name=raw["name"], ref=raw["ref"], parameters=dict(raw.get("parameters") or raw.get("params") or {}),
                on_success=raw.get("on-success") or None, on_failure=raw.get("on-failure") or None,
                publish=dict(raw.get("publish") or {}), notify=raw.get("notify") or None, raw=dict(raw))


def _path(parts) -> str:
    return ".".join(str(p) for p in parts)


def default_node(definition: Mapping[str, Any]) -> str | None:
    """StackStorm's start node: default, else the first node no transition names, else the first."""
    chain = definition.get("chain") or []
    if definition.get("default"):
        return definition["default"]
    if not chain:
        return None
    referenced = {n.get(key) for n in chain for key in ("on-success", "on-failure")}
    for node in chain:
        if node["name"] not in referenced:
            return node["name"]
    return chain[0]["name"]


def check(definition: Any) -> list[dict[str, str]]:
    """Every problem of a definition, each {message, spec_path} ([] when it is valid)."""
    if not isinstance(definition, Mapping):
        return [{"message": "the definition must be a mapping with a \"chain\" list", "spec_path": ""}]
    errors = [{"message": error.message, "spec_path": _path(error.absolute_path)}
              for error in sorted(_VALIDATOR.iter_errors(definition), key=lambda e: list(e.absolute_path))]
    if errors:
        return errors
    chain = definition["chain"]
    names = {node["name"] for node in chain}
    for index, node in enumerate(chain):
        if node.get("params") and node.get("parameters"):
            errors.append({"message": 'Either "params" or "parameters" attribute needs to be provided, '
                                      "but not both", "spec_path": f"chain.{index}"})
        for key in ("on-success", "on-failure"):
            target = node.get(key)
            if target and not is_expression(target) and target not in names:
                errors.append({"message": f'Unable to find node with name "{target}" referenced in "{key}" '
                                          f'in task "{node["name"]}".', "spec_path": f"chain.{index}.{key}"})
    default = definition.get("default")
    if default and not is_expression(default) and default not in names:
        errors.append({"message": f'Unable to find node with name "{default}" referenced in "default".',
                       "spec_path": "default"})
    if not errors and default_node(definition) is None:
        errors.append({"message": "Failed to find default node: the chain has no nodes.", "spec_path": "chain"})
    return errors


def load(text: str, source: str = "") -> dict[str, Any]:
    """The definition in YAML (or JSON) text as a mapping; ChainSpecError when it does not parse."""
    try:
        definition = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChainSpecError([{"message": f"Failed to parse action chain definition: {exc}", "spec_path": ""}],
                             source) from exc
    return definition


def parse(definition: Any, source: str = "") -> ChainSpec:
    """Validate a definition (text or mapping) and build its ChainSpec; ChainSpecError lists every problem."""
    if isinstance(definition, str):
        definition = load(definition, source)
    errors = check(definition)
    if errors:
        raise ChainSpecError(errors, source)
    return ChainSpec(nodes=tuple(_node(raw) for raw in definition["chain"]), default=default_node(definition),
                     vars=dict(definition.get("vars") or {}), definition=copy.deepcopy(dict(definition)))
