"""Resource objects the client returns and accepts, at StackStorm's import paths.

Pack code does ``from st2client.models import KeyValuePair`` and builds records
with keyword arguments, so every class here is a plain attribute bag: the
fields of the API document become attributes, ``serialize()`` gives the body
back. Class attributes say where the resource lives in the REST API and how
the CLI names it.
"""

from __future__ import annotations

import json
from typing import Any


class Resource:
    """An API document as an object: one attribute per field."""

    # URL segment under the API root, e.g. "actions"; defaults to the lowercased plural.
    _url_path: str | None = None
    _plural: str = ""
    _display_name: str | None = None
    _plural_display_name: str | None = None
    _repr_attributes: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            setattr(self, name, value)

    @classmethod
    def get_display_name(cls) -> str:
        """How messages name one of these."""
        return cls._display_name or cls.__name__

    @classmethod
    def get_plural_display_name(cls) -> str:
        """How messages name several of these."""
        return cls._plural_display_name or cls._plural

    @classmethod
    def get_url_path_name(cls) -> str:
        """The URL segment of the collection."""
        return cls._url_path or cls._plural.lower()

    @classmethod
    def deserialize(cls, doc: dict | str) -> "Resource":
        """An object from an API document (a dict or its JSON text)."""
        if not isinstance(doc, dict):
            doc = json.loads(doc)
        return cls(**doc)

    def serialize(self) -> dict:
        """The API document for this object."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def to_dict(self, exclude_attributes: list[str] | None = None) -> dict:
        """The fields as a dict, minus exclude_attributes."""
        exclude = set(exclude_attributes or ())
        return {k: v for k, v in self.serialize().items() if k not in exclude}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.serialize() == self.serialize()

    def __repr__(self) -> str:
        if not self._repr_attributes:
            return f"<{type(self).__name__} id={getattr(self, 'id', None)}>"
        shown = ",".join(f"{a}={getattr(self, a, None)}" for a in self._repr_attributes)
        return f"<{type(self).__name__} {shown}>"

    __hash__ = None  # mutable attribute bags


class Action(Resource):
    """An action: metadata, runner type and parameter schema."""

    _plural = "Actions"
    _url_path = "actions"
    _repr_attributes = ("name", "pack", "enabled", "runner_type")


class RunnerType(Resource):
    """A runner type and its runner_parameters."""

    _plural = "RunnerTypes"
    _display_name = "Runner"
    _plural_display_name = "Runners"
    _repr_attributes = ("name", "enabled", "description")


class Execution(Resource):
    """One run of an action."""

    _plural = "ActionExecutions"
    _url_path = "executions"
    _display_name = "Action Execution"
    _plural_display_name = "Action executions"
    _repr_attributes = ("status", "action", "start_timestamp", "end_timestamp", "parameters", "delay")


class LiveAction(Execution):
    """StackStorm's older name for an execution request; kept for pack code."""


class Pack(Resource):
    """An installed pack."""

    _plural = "Packs"
    _url_path = "packs"
    _repr_attributes = ("ref", "version")


class KeyValuePair(Resource):
    """A datastore item; its name is its id in URLs."""

    _plural = "Keys"
    _display_name = "Key Value Pair"
    _plural_display_name = "Key Value Pairs"
    _repr_attributes = ("name", "value")

    # The keys API addresses items by name, so the name stands in for the id.
    id = property(lambda self: self.__dict__.get("name"), lambda self, value: None)


class Rule(Resource):
    """A rule: trigger, criteria, action."""

    _plural = "Rules"
    _repr_attributes = ("name", "pack", "enabled")


class RuleEnforcement(Resource):
    """The record that a rule matched a trigger instance."""

    _plural = "RuleEnforcements"
    _display_name = "Rule Enforcement"
    _plural_display_name = "Rule Enforcements"


class TriggerType(Resource):
    """A kind of event."""

    _plural = "Triggertypes"
    _display_name = "Trigger"
    _plural_display_name = "Triggers"
    _repr_attributes = ("name", "pack")


class Trigger(Resource):
    """A parameterised instance of a trigger type."""

    _plural = "Triggers"
    _display_name = "Trigger Specification"
    _plural_display_name = "Trigger Specifications"


class TriggerInstance(Resource):
    """One occurrence of a trigger with its payload."""

    _plural = "Triggerinstances"
    _display_name = "Trigger Instance"
    _plural_display_name = "TriggerInstances"


class Sensor(Resource):
    """A sensor type."""

    _plural = "Sensortypes"


class Policy(Resource):
    """A policy attached to an action."""

    _plural = "Policies"


class PolicyType(Resource):
    """A kind of policy (action.concurrency ...)."""

    _plural = "PolicyTypes"
    _display_name = "Policy type"
    _plural_display_name = "Policy types"


class ActionAlias(Resource):
    """A chat command mapped to an action."""

    _plural = "ActionAliases"
    _url_path = "actionalias"
    _display_name = "Action Alias"
    _plural_display_name = "Action Aliases"


class Inquiry(Resource):
    """A workflow step waiting for a human response."""

    _plural = "Inquiries"
    _url_path = "inquiries"
    _display_name = "Inquiry"
    _plural_display_name = "Inquiries"
    _repr_attributes = ("id", "schema", "roles", "users", "route", "ttl")


class Trace(Resource):
    """The chain trigger instance -> enforcement -> executions."""

    _plural = "Traces"


class Webhook(Resource):
    """A registered webhook trigger."""

    _plural = "Webhooks"


class Timer(Resource):
    """A timer trigger."""

    _plural = "Timers"


class Config(Resource):
    """A pack's config values."""

    _plural = "Configs"


class ConfigSchema(Resource):
    """A pack's config schema."""

    _plural = "ConfigSchema"
    _url_path = "config_schemas"
    _display_name = "Config Schema"
    _plural_display_name = "Config Schemas"


class Token(Resource):
    """An auth token."""

    _plural = "Tokens"
    _display_name = "Access Token"
    _plural_display_name = "Access Tokens"
    _repr_attributes = ("user", "expiry")


class ApiKey(Resource):
    """An API key."""

    _plural = "ApiKeys"
    _display_name = "API Key"
    _plural_display_name = "API Keys"
    _repr_attributes = ("id", "user")
