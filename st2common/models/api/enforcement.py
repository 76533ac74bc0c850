"""The RuleEnforcement shape: RuleEnforcementDB out as StackStorm shows it (falsy fields dropped)."""

from __future__ import annotations

from typing import Any

from st2common.models.api.base import document_dict, drop_falsy
from st2common.models.db.enforcement import RuleEnforcementDB

FIELDS = ("rule", "trigger_instance_id", "execution_id", "failure_reason", "enforced_at", "status")


def to_api(enforcement: RuleEnforcementDB) -> dict[str, Any]:
    """enforcement as GET /ruleenforcements shows it; ``id`` and ``rule`` are always there."""
    data = drop_falsy(document_dict(enforcement, FIELDS))
    data["id"] = str(enforcement.pk)
    data["rule"] = dict(enforcement.rule or {})
    return data


def add_view_properties(items: list[dict[str, Any]], instances: dict[str, dict], executions: dict[str, dict]) -> None:
    """Embed ``trigger_instance`` and ``execution`` objects (empty when gone), as the views do, in place."""
    for item in items:
        item["trigger_instance"] = instances.get(item.get("trigger_instance_id") or "", {})
        item["execution"] = executions.get(item.get("execution_id") or "", {})
