"""The Trace shape: a TraceDB and its TraceComponentDB links put back into StackStorm's three lists."""

from __future__ import annotations

from typing import Any, Iterable

from st2common.models.api.base import isotime
from st2common.models.db.trace import COMPONENT_LISTS, TraceComponentDB, TraceDB


def component_to_api(component: TraceComponentDB) -> dict[str, Any]:
    """One trace member: ``{object_id, ref, updated_at, caused_by}``."""
    return {
        "object_id": component.object_id,
        "ref": component.ref or "",
        "updated_at": isotime(component.updated_at),
        "caused_by": component.caused_by,
    }


def to_api(trace: TraceDB, components: Iterable[TraceComponentDB]) -> dict[str, Any]:
    """trace with its components grouped into trigger_instances, rules and action_executions (oldest first)."""
    data: dict[str, Any] = {"id": str(trace.pk), "uid": trace.uid, "trace_tag": trace.trace_tag}
    data.update(to_api_lists(components))
    data["start_timestamp"] = isotime(trace.start_timestamp)
    return data


def to_api_lists(components: Iterable[TraceComponentDB]) -> dict[str, list[dict[str, Any]]]:
    """The three component lists of a trace, each oldest first."""
    lists: dict[str, list[dict[str, Any]]] = {name: [] for name in COMPONENT_LISTS.values()}
    for component in sorted(components, key=lambda c: (c.updated_at, str(c.pk))):
        lists[COMPONENT_LISTS[component.component_type]].append(component_to_api(component))
    return lists
