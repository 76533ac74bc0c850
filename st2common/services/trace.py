"""Traces: the chain trigger instance -> rule -> execution, tied by a trace tag.

| use-case               | write                                                   |
| ---------------------- | ------------------------------------------------------- |
| resolve                | a TraceDB when the context names none that exists       |
| start_for_execution    | the TraceDB an execution starts, under an id derived    |
|                        | from the execution's: one insert, however often asked   |
|                        | (start_for_executions: one insert for many)             |
| add_trigger_instance   | one TraceComponentDB (caused by an execution for action |
|                        | and notify triggers, as StackStorm links them)          |
| add_rule               | one TraceComponentDB, caused by ``trigger_instance``    |
| add_execution          | one TraceComponentDB, caused by ``rule``                |
|                        | (``<rule id>:<trigger instance id>``) or a parent       |

A trace context is StackStorm's ``{"id_": ..., "trace_tag": ...}`` (either
key is enough), or a bare tag string. Tags need not be unique: a context
with a tag joins the oldest trace with that tag, as StackStorm's lookup does
when it finds several. Every link is idempotent: its ``link_key`` is unique,
so a redelivered message that records the same link again stores nothing.

Traces are never changed once stored, so the ones this process created are
remembered for a while (``RECENT``): the trigger instance an execution causes
joins the trace its notifier just made without reading it back.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterable, Mapping

import eventlet
from bson import ObjectId

from st2common.exceptions import ConflictError, ValidationError
from st2common.models.db.base import utcnow
from st2common.models.db.trace import (
    COMPONENT_EXECUTION, COMPONENT_RULE, COMPONENT_TRIGGER_INSTANCE, TraceComponentDB, TraceDB,
)
from st2common.persistence.access import Access, to_object_id
from st2common.persistence.cache import RecordCache

LOG = logging.getLogger(__name__)

TRIGGER_INSTANCE_TAG = "trigger_instance-{id}"
EXECUTION_TAG = "execution-{id}"

TraceContext = Mapping[str, Any] | str | None

# Traces created here, by id, for as long as what they start is likely still being recorded. Only the
# garbage collection deletes traces, and only old ones.
RECENT_TTL = 60.0
RECENT = RecordCache("traces", (), RECENT_TTL)


def trace_context(trace: TraceDB) -> dict[str, str]:
    """The context that carries a trace on to what it causes (StackStorm's TraceContext)."""
    return {"id_": str(trace.pk), "trace_tag": trace.trace_tag}


def _context_parts(context: TraceContext) -> tuple[str | None, str | None]:
    """(trace id, trace tag) named by a context."""
    if not context:
        return None, None
    if isinstance(context, str):
        return None, context
    trace_id = context.get("id_") or context.get("id")
    return (str(trace_id) if trace_id else None), context.get("trace_tag")


def get(context: TraceContext) -> TraceDB | None:
    """The trace a context names (by id first, then the oldest with its tag), or None."""
    trace_id, tag = _context_parts(context)
    access = Access(TraceDB)
    if trace_id and to_object_id(trace_id) is not None:
        found = RECENT.peek(trace_id) or access.get(id=to_object_id(trace_id))
        if found is not None:
            return found
    if tag:
        oldest = access.query({"trace_tag": tag}, order_by=["start_timestamp", "id"], limit=1)
        return oldest[0] if oldest else None
    return None


# A link as the _link-based helpers take it: (component type, object id, ref, caused_by).
Link = tuple[str, Any, "str | None", "tuple[str, str] | None"]


def create(trace_tag: str, first_link: Link | None = None) -> TraceDB:
    """A new trace with this tag, and first_link in it when given.

    The trace's id is chosen here, so its first link is written at the same
    time as the trace: one round trip of a dispatch's latency instead of two.
    A link whose trace failed to store is left behind: a lookup by the link
    then finds no trace, and the one who looked starts another.
    """
    trace = TraceDB(id=ObjectId(), trace_tag=trace_tag)
    access = Access(TraceDB)
    if first_link is None:
        # A true insert: a save with an id given in advance costs a replace that finds nothing first.
        access.insert_many([trace], reload=False)
    else:
        stored = eventlet.spawn(access.insert_many, [trace], reload=False)
        try:
            _link(trace, *first_link)
        finally:
            stored.wait()
    RECENT.put(str(trace.pk), trace)
    LOG.debug("trace %s created with tag %s", trace.pk, trace_tag)
    return trace


def derived_id(object_id: Any, kind: str) -> ObjectId:
    """An id derived from another record's id and a kind: the same every time, and in the same second."""
    oid = to_object_id(object_id)
    if oid is None:
        raise ValidationError(f"{object_id!r} is not an ObjectId", field="id")
    digest = hashlib.sha1(f"{oid}:{kind}".encode()).digest()[:8]
    return ObjectId(oid.binary[:4] + digest)


def start_for_execution(execution_id: Any) -> TraceDB:
    """The trace an execution with none starts (tagged ``execution-<id>``), stored once however often asked."""
    oid = derived_id(execution_id, "trace")
    known = RECENT.peek(str(oid))
    if known is not None:
        return known
    trace = TraceDB(id=oid, trace_tag=EXECUTION_TAG.format(id=execution_id))
    access = Access(TraceDB)
    try:
        # A true insert: a save with an id would replace the trace a first delivery stored.
        access.insert_many([trace], reload=False)
        LOG.debug("trace %s created for execution %s", oid, execution_id)
    except ConflictError:
        trace = access.get(id=oid) or trace
    RECENT.put(str(oid), trace)
    return trace


def start_for_executions(execution_ids: list[Any]) -> list[TraceDB]:
    """start_for_execution of several executions (in their order), the traces not known here in one insert."""
    traces, new = [], []
    for execution_id in execution_ids:
        oid = derived_id(execution_id, "trace")
        trace = RECENT.peek(str(oid))
        if trace is None:
            trace = TraceDB(id=oid, trace_tag=EXECUTION_TAG.format(id=execution_id))
            new.append(trace)
        traces.append(trace)
    if new:
        try:
            Access(TraceDB).insert_many(new, reload=False)
        except ConflictError:
            # Some were stored by an earlier delivery: one by one, each an insert or a lookup.
            return [start_for_execution(execution_id) for execution_id in execution_ids]
        for trace in new:
            RECENT.put(str(trace.pk), trace)
    return traces


def get_many(trace_ids: Iterable[str]) -> dict[str, TraceDB]:
    """The stored traces among trace_ids, by id (those created here from memory, the rest in one query)."""
    found: dict[str, TraceDB] = {}
    missing = []
    for trace_id in set(trace_ids):
        trace = RECENT.peek(trace_id)
        if trace is not None:
            found[trace_id] = trace
        elif to_object_id(trace_id) is not None:
            missing.append(to_object_id(trace_id))
    if missing:
        found.update({str(trace.pk): trace for trace in Access(TraceDB).query(raw={"_id": {"$in": missing}})})
    return found


def get_or_create(trace_tag: str) -> TraceDB:
    """The oldest trace with this tag, created when there is none."""
    return get(trace_tag) or create(trace_tag)


def resolve(context: TraceContext, default_tag: str, first_link: Link | None = None) -> TraceDB:
    """The trace a context names, else a new one (tagged as the context says, or default_tag); first_link in it."""
    trace_id, tag = _context_parts(context)
    if trace_id or tag:
        found = get(context)
        if found is not None:
            if first_link is not None:
                _link(found, *first_link)
            return found
    # A tag nobody used yet, or a generated one: no lookup needed.
    return create(tag or default_tag, first_link)


def trace_of(component_type: str, object_id: Any) -> TraceDB | None:
    """The trace that holds this trigger instance, rule or execution, or None."""
    link = Access(TraceComponentDB).get(component_type=component_type, object_id=str(object_id))
    if link is None:
        return None
    return Access(TraceDB).get(id=to_object_id(link.trace_id))


def components(trace: TraceDB) -> list[TraceComponentDB]:
    """Every member of a trace, oldest first."""
    return Access(TraceComponentDB).query({"trace_id": str(trace.pk)}, order_by=["updated_at", "id"])


def _link(trace: TraceDB, component_type: str, object_id: Any, ref: str | None,
          caused_by: tuple[str, str] | None) -> TraceComponentDB | None:
    """Store one link; None when the same link was stored before."""
    cause_type, cause_id = caused_by or (None, None)
    link = TraceComponentDB(trace_id=str(trace.pk), component_type=component_type, object_id=str(object_id),
                            ref=ref, caused_by_type=cause_type, caused_by_id=cause_id)
    try:
        # A single insert: a repeated link_key is a ConflictError.
        Access(TraceComponentDB).add_or_update(link, publish=False)
    except ConflictError:
        LOG.debug("trace %s already links %s %s", trace.pk, component_type, object_id)
        return None
    return link


def _link_document(trace_id: str, kind: str, object_id: Any, ref: str | None,
                   cause: tuple[str, str] | None) -> dict[str, Any]:
    """A link in its stored shape (TraceComponentDB's fields, unset ones left out), ready for a raw insert."""
    object_id = str(object_id)
    doc = {"trace_id": trace_id, "component_type": kind, "object_id": object_id, "updated_at": utcnow(),
           "link_key": TraceComponentDB.make_link_key(trace_id, kind, object_id, cause[1] if cause else None)}
    if ref is not None:
        doc["ref"] = ref
    if cause:
        doc["caused_by_type"], doc["caused_by_id"] = cause
    return doc


def add_links(trace: TraceDB, links: Iterable[tuple[str, Any, str | None, tuple[str, str] | None]]) -> int:
    """Store several links (component type, object id, ref, caused_by) in one insert; how many were new."""
    links = list(links)
    trace_id = str(trace.pk)
    try:
        Access(TraceComponentDB).insert_raw([_link_document(trace_id, *link) for link in links])
        return len(links)
    except ConflictError:
        # A repeat of earlier work: store the missing ones one by one.
        return sum(1 for kind, object_id, ref, cause in links
                   if _link(trace, kind, object_id, ref, cause) is not None)


def add_links_of(traces_links: list[tuple[TraceDB, list[tuple[str, Any, str | None, tuple[str, str] | None]]]]) -> None:
    """Store the links of several traces in one insert (those stored before: one by one, skipping repeats)."""
    # Built as plain documents: a mongoengine document and its validation cost more than the insert.
    docs = [_link_document(str(trace.pk), *link) for trace, links in traces_links for link in links]
    try:
        Access(TraceComponentDB).insert_raw(docs)
    except ConflictError:
        for trace, links in traces_links:
            add_links(trace, links)


def trigger_instance_link(instance_id: Any, trigger_ref: str,
                          caused_by_execution: str | None = None) -> tuple[str, str, str, tuple[str, str] | None]:
    """The link of a trigger instance; an action or notify trigger's instance is caused by its execution."""
    cause = (COMPONENT_EXECUTION, str(caused_by_execution)) if caused_by_execution else None
    return COMPONENT_TRIGGER_INSTANCE, str(instance_id), trigger_ref, cause


def add_trigger_instance(trace: TraceDB, instance_id: Any, trigger_ref: str,
                         caused_by_execution: str | None = None) -> TraceComponentDB | None:
    """Link a trigger instance; an action or notify trigger's instance is caused by its execution."""
    return _link(trace, *trigger_instance_link(instance_id, trigger_ref, caused_by_execution))


def rule_link(rule_id: Any, rule_ref: str, instance_id: Any) -> tuple[str, str, str, tuple[str, str]]:
    """The link of a rule enforced for a trigger instance."""
    return COMPONENT_RULE, str(rule_id), rule_ref, (COMPONENT_TRIGGER_INSTANCE, str(instance_id))


def execution_link(execution_id: Any, action_ref: str, rule_id: Any | None = None, instance_id: Any | None = None,
                   parent_id: Any | None = None) -> tuple[str, str, str, tuple[str, str] | None]:
    """The link of an execution requested by a rule for an instance, or by a parent execution."""
    if rule_id is not None:
        cause: tuple[str, str] | None = (COMPONENT_RULE, f"{rule_id}:{instance_id}")
    elif parent_id is not None:
        cause = (COMPONENT_EXECUTION, str(parent_id))
    else:
        cause = None
    return COMPONENT_EXECUTION, str(execution_id), action_ref, cause


def add_rule(trace: TraceDB, rule_id: Any, rule_ref: str, instance_id: Any) -> TraceComponentDB | None:
    """Link a rule enforced for a trigger instance."""
    kind, object_id, ref, cause = rule_link(rule_id, rule_ref, instance_id)
    return _link(trace, kind, object_id, ref, cause)


def add_execution(trace: TraceDB, execution_id: Any, action_ref: str, rule_id: Any | None = None,
                  instance_id: Any | None = None, parent_id: Any | None = None) -> TraceComponentDB | None:
    """Link an execution, caused by a rule and instance or by its parent."""
    kind, object_id, ref, cause = execution_link(execution_id, action_ref, rule_id, instance_id, parent_id)
    return _link(trace, kind, object_id, ref, cause)
