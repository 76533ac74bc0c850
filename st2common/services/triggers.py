"""Triggers: a trigger type plus concrete parameters; found, created, counted, and looked up by dispatch.

A trigger is found by type and a hash of its parameters (the embedded server
cannot match a whole parameters dict), and created when missing: a
parameter-less one is the type's "shadow" trigger (same pack and name), any
other gets a UUID name, as in StackStorm.

Dispatch resolves a trigger and its type for every trigger instance, so those
two reads go through LOOKUPS (a st2common.persistence.cache.RecordCache):
forgotten on a write in this process, on the trigger and trigger type events
in the processes that consume lookup_handlers() (the rules engine, the sensor
wrapper: LOOKUP_WATCHED_TTL), else after LOOKUP_TTL seconds (the API, the
action runner). Misses are never kept, so a trigger created a moment ago by
another process is found at once.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Callable, Mapping

from st2common.exceptions import ConflictError, NotFoundError, ValidationError
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB, TriggerTypeDB, parameters_hash
from st2common.persistence.access import Access, to_object_id
from st2common.persistence.cache import Forget, RecordCache
from st2common.services.triggertypes import normalize_parameters
from st2common.transport.consumer import Handler
from st2common.transport.topology import Topology

LOG = logging.getLogger(__name__)


def find_trigger(type_ref: str, parameters: Mapping[str, Any] | None) -> TriggerDB | None:
    """The trigger of type_ref with exactly these (normalised) parameters, or None."""
    digest = parameters_hash(normalize_parameters(type_ref, parameters))
    return Access(TriggerDB).get(type=type_ref, parameters_hash=digest)


def get_or_create_trigger(trigger_type: TriggerTypeDB, parameters: Mapping[str, Any] | None,
                          publisher=None) -> tuple[TriggerDB, bool]:
    """The trigger for (type, parameters), created when missing; (trigger, whether it was created).

    Parameters are expected validated (validate_parameters). Creating one
    publishes a trigger create event, which timers, webhooks and sensors watch.
    """
    parameters = normalize_parameters(trigger_type.ref, parameters)
    existing = find_trigger(trigger_type.ref, parameters)
    if existing is not None:
        return existing, False
    name = trigger_type.name if not parameters else str(uuid.uuid4())
    doc = TriggerDB(name=name, pack=trigger_type.pack, type=trigger_type.ref, parameters=parameters,
                    description=trigger_type.description)
    doc.set_identity()
    access = Access(TriggerDB, publisher)
    try:
        access.add_or_update(doc)
    except ConflictError:
        # Another process created the shadow trigger between our read and write.
        existing = find_trigger(trigger_type.ref, parameters)
        if existing is None:
            raise
        return existing, False
    LOG.info("trigger %s created for type %s", doc.ref, trigger_type.ref)
    return doc, True


def count_rules_using(trigger_ref: str) -> int:
    """How many rules name this trigger."""
    return Access(RuleDB).count(raw={"trigger.ref": trigger_ref})


def update_ref_count(trigger_ref: str, publisher=None) -> TriggerDB | None:
    """Recount the rules using a trigger; delete a parameterised trigger no rule uses. The trigger, or None.

    Counting instead of incrementing keeps registration idempotent: a
    re-registered rule does not count twice.
    """
    access = Access(TriggerDB, publisher)
    doc = access.get(ref=trigger_ref)
    if doc is None:
        return None
    count = count_rules_using(trigger_ref)
    if count == 0 and doc.parameters:
        access.delete(doc)
        LOG.info("trigger %s deleted: no rule uses it", trigger_ref)
        return None
    if doc.ref_count != count:
        doc = access.update_if(doc.pk, {}, {"ref_count": count}, publish=False) or doc
    return doc


# -- lookups ------------------------------------------------------------------------------------

LOOKUP_TTL = 10.0
LOOKUP_WATCHED_TTL = 60.0
LOOKUPS = RecordCache("triggers", (TriggerDB, TriggerTypeDB), LOOKUP_TTL, LOOKUP_WATCHED_TTL)


def _lookup(key: tuple, load: Callable[[], Any]) -> Any:
    def found() -> Any:
        value = load()
        if value is None:
            # Raised so that the miss is not kept: a trigger created elsewhere a moment later is found.
            raise NotFoundError(key[0], key[-1])
        return value

    try:
        return LOOKUPS.get(key, found)
    except NotFoundError:
        return None


# Whether any enabled rule is on a trigger type, by type ref (has_rules). Without the rule events
# (before watch()) an answer is kept a second only: a rule just created elsewhere is soon seen.
RULED = RecordCache("ruled trigger types", (RuleDB,), 1.0, LOOKUP_WATCHED_TTL)


def has_rules(type_ref: str) -> bool:
    """True when an enabled rule is on trigger type type_ref (from memory while RULED holds the answer)."""
    return RULED.get(("ruled", type_ref), lambda: bool(Access(RuleDB).query(
        {"enabled": True}, raw={"trigger.type": type_ref}, limit=1, only=("id",))))


def rule_handlers(topology: Topology) -> list[Handler]:
    """The handler of this process's broadcast queue on the rule exchange: forget RULED.

    Call ``RULED.watch()`` once the consumer running it is ready.
    """
    return [Forget(topology.broadcast_queue("rule"), RULED)]


def lookup_trigger(ref: str) -> TriggerDB | None:
    """The trigger with this ref, or None (shared: read it, never change it)."""
    return _lookup(("trigger", ref), lambda: Access(TriggerDB).get(ref=ref))


def lookup_trigger_for(type_ref: str, parameters: Mapping[str, Any] | None) -> TriggerDB | None:
    """The trigger of type_ref with these parameters, or None (shared: read it, never change it)."""
    digest = parameters_hash(normalize_parameters(type_ref, parameters))
    return _lookup(("trigger", type_ref, digest), lambda: Access(TriggerDB).get(type=type_ref, parameters_hash=digest))


def lookup_triggers_for(type_ref: str, parameters: Mapping[str, Any] | None) -> list[TriggerDB]:
    """Every trigger of type_ref with these parameters, oldest first (shared: read them, never change them).

    Normally one; two processes creating the same trigger at once can leave two.
    """
    digest = parameters_hash(normalize_parameters(type_ref, parameters))
    # An empty list is a miss: not kept, so a trigger created elsewhere a moment later is found.
    return _lookup(("triggers", type_ref, digest), lambda: Access(TriggerDB).query(
        raw={"type": type_ref, "parameters_hash": digest}, order_by=("id",)) or None) or []


def lookup_trigger_type(ref: str) -> TriggerTypeDB | None:
    """The trigger type with this ref, or None (shared: read it, never change it)."""
    return _lookup(("trigger type", ref), lambda: Access(TriggerTypeDB).get(ref=ref))


def lookup_handlers(topology: Topology) -> list[Handler]:
    """Handlers of this process's broadcast queues on the trigger and trigger type exchanges: forget LOOKUPS.

    Call ``LOOKUPS.watch()`` once the consumer running them is ready.
    """
    return [_Forget(topology.broadcast_queue(exchange)) for exchange in ("trigger", "triggertype")]


class _Forget(Handler):
    """A trigger or trigger type event -> LOOKUPS.forget."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def handle(self, body: dict[str, Any]) -> None:
        """Forget the looked-up triggers and types."""
        LOOKUPS.forget()


def resolve_trigger(trigger: str | Mapping[str, Any], publisher=None) -> tuple[TriggerDB, TriggerTypeDB]:
    """The stored trigger (and its type) that a ref or a ``{id | ref | type, parameters}`` dict names.

    A ref may name a trigger or a trigger type without parameters, whose
    shadow trigger is created when missing. NotFoundError names what is unknown.
    """
    if isinstance(trigger, str):
        found = lookup_trigger(trigger)
        if found is None:
            trigger_type = lookup_trigger_type(trigger)
            if trigger_type is None or trigger_type.parameters_schema:
                raise NotFoundError("trigger", trigger, f'Trigger "{trigger}" is not registered')
            found, _ = get_or_create_trigger(trigger_type, {}, publisher)
    elif isinstance(trigger, Mapping):
        found = None
        if trigger.get("id") and to_object_id(trigger["id"]) is not None:
            found = Access(TriggerDB).get(id=to_object_id(trigger["id"]))
        if found is None and trigger.get("ref"):
            found = lookup_trigger(trigger["ref"])
        if found is None and trigger.get("type"):
            found = lookup_trigger_for(trigger["type"], trigger.get("parameters"))
            if found is None and not trigger.get("parameters"):
                return resolve_trigger(str(trigger["type"]), publisher)
        if found is None:
            name = trigger.get("ref") or trigger.get("type") or trigger.get("id")
            raise NotFoundError("trigger", name, f'Trigger {json.dumps(dict(trigger), default=str)} is not registered')
    else:
        raise ValidationError(f"trigger must be a ref or an object, not {type(trigger).__name__}", field="trigger")
    trigger_type = lookup_trigger_type(found.type)
    if trigger_type is None:
        raise NotFoundError("trigger type", found.type, f'trigger type "{found.type}" is not registered')
    return found, trigger_type
