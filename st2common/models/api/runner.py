"""The RunnerType shape: RunnerTypeDB out as StackStorm shows it; the update body (only `enabled` applies)."""

from __future__ import annotations

from typing import Any

from st2common.models.api.base import document_dict, mask_schema_defaults, validate
from st2common.models.db.runner import RunnerTypeDB

FIELDS = ("uid", "name", "description", "enabled", "runner_package", "runner_module",
          "runner_parameters", "output_key", "output_schema")

# PUT takes back the whole GET body (the CLI's enable/disable does that), so every
# emitted field is accepted; only `enabled` is applied, as in StackStorm.
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "runner_package": {"type": "string"},
        "runner_module": {"type": "string"},
        "query_module": {"type": "string"},
        "runner_parameters": {"type": "object"},
        "output_key": {"type": "string"},
        "output_schema": {"type": "object"},
    },
    "additionalProperties": False,
}


def to_api(runner: RunnerTypeDB, mask_secrets: bool = True) -> dict[str, Any]:
    """runner as the API shows it, with the defaults of secret runner parameters masked."""
    data = document_dict(runner, FIELDS)
    data.setdefault("runner_parameters", {})
    if mask_secrets:
        data["runner_parameters"] = mask_schema_defaults(data["runner_parameters"])
    return data


def validate_update(body: Any) -> dict[str, Any]:
    """A PUT /runnertypes body checked against the runner type shape."""
    return validate(UPDATE_SCHEMA, body)
