"""Policy use-cases shared by the action runner and the API: the policies of an action, concurrency
slots, nudging delayed executions, marking a retried execution, and saving policies.

Concurrency is counted in the database, so every copy of the scheduler sees
the same count (StackStorm needs a coordination backend for that):

| use-case        | reads / writes                                                        |
| --------------- | --------------------------------------------------------------------- |
| claim_slot      | the slots of a key; insert one of slots 0..threshold-1 (a unique      |
|                 | index: one insert wins); when all are held, slots whose execution has |
|                 | completed or vanished (abandoned by a dead runner ...) are deleted    |
|                 | and the claim is tried again                                          |
| release_slots   | delete the slots an execution holds (it completed)                   |
| nudge_delayed   | liveaction.status ``requested`` for the oldest delayed executions of |
|                 | an action, so the scheduler re-checks them now                        |
| mark_retried    | a compare-and-set on the execution's revision adding                 |
|                 | ``context.policies.retried_by``: one retry per failed run, however    |
|                 | often its completion is delivered                                     |

``policies_of`` runs twice per execution (before scheduling, after the end),
and most actions have no policy: it reads the enabled policies of every
action in one query into ``INDEX`` (a RecordCache) and answers from memory.
The index is forgotten on a policy write through Access in this process and,
in the action runner, which watches the policy exchange, on every policy
event; elsewhere it is read again after INDEX_TTL seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from st2common import statuses
from st2common.content.policies import action_registered, parse_policy
from st2common.exceptions import ConflictError, ContentError, ValidationError
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.policy import ConcurrencySlotDB, PolicyDB
from st2common.persistence.access import Access, to_object_id
from st2common.persistence.cache import RecordCache
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

WORK_EXCHANGE = "liveaction.status"
_CLAIM_ROUNDS = 2
INDEX_TTL = 1.0
INDEX_WATCHED_TTL = 30.0
INDEX = RecordCache("policies", (PolicyDB,), INDEX_TTL, INDEX_WATCHED_TTL)


def _read_index() -> dict[str, tuple[PolicyDB, ...]]:
    index: dict[str, list[PolicyDB]] = {}
    for policy in Access(PolicyDB).query({"enabled": True}, order_by=("policy_type", "id")):
        index.setdefault(policy.resource_ref, []).append(policy)
    return {ref: tuple(found) for ref, found in index.items()}


def policies_of(action_ref: str) -> list[PolicyDB]:
    """The enabled policies attached to an action, in a stable order (treat them as read-only)."""
    return list(INDEX.get("enabled", _read_index).get(action_ref, ()))


# -- concurrency slots --------------------------------------------------------------------------

def _stale(slots: list[ConcurrencySlotDB]) -> list[ConcurrencySlotDB]:
    """The slots whose execution has completed or no longer exists."""
    ids = [oid for oid in (to_object_id(slot.execution_id) for slot in slots) if oid is not None]
    found = Access(ExecutionDB).query(raw={"_id": {"$in": ids}}, only=("id", "status")) if ids else []
    live = {str(e.pk) for e in found if e.status not in statuses.COMPLETED}
    return [slot for slot in slots if slot.execution_id not in live]


def claim_slot(key: str, threshold: int, execution_id: str,
               action_ref: str | None = None) -> tuple[bool, int, bool]:
    """Take one of key's threshold slots for the execution; (holds one, how many others do, taken just now)."""
    access = Access(ConcurrencySlotDB)
    held: list[ConcurrencySlotDB] = []
    for _ in range(_CLAIM_ROUNDS):
        held = access.query({"key": key})
        if any(slot.execution_id == execution_id for slot in held):
            # Taken before (a redelivered request, or another copy handling it right now).
            return True, len(held) - 1, False
        taken = {slot.slot for slot in held}
        for number in range(threshold):
            if number in taken:
                continue
            try:
                access.add_or_update(ConcurrencySlotDB(key=key, slot=number, execution_id=execution_id,
                                                       action_ref=action_ref), publish=False)
            except ConflictError:
                continue  # another scheduler took it first
            LOG.debug("execution %s holds slot %d of %s", execution_id, number, key)
            return True, len(held), True
        stale = _stale(held)
        if not stale:
            break
        for slot in stale:
            # Conditional on the holder, so a slot re-taken meanwhile is left alone.
            access.delete_by({"id": slot.pk, "execution_id": slot.execution_id})
            LOG.info("slot %d of %s freed: execution %s no longer runs", slot.slot, key, slot.execution_id)
    return False, len(held), False


def release_slots(execution_id: str, key: str | None = None) -> int:
    """Free the slots the execution holds (of one key, or all of them: it completed); how many."""
    filters = {"execution_id": execution_id} if key is None else {"execution_id": execution_id, "key": key}
    return Access(ConcurrencySlotDB).delete_by(filters)


def nudge_delayed(publisher: Publisher, action_ref: str, limit: int) -> int:
    """Ask the scheduler to re-check the oldest delayed executions of an action now; how many."""
    waiting = Access(ExecutionDB).query({"action_ref": action_ref, "status": statuses.DELAYED},
                                        order_by=("start_timestamp",), limit=limit, only=("id",))
    for execution in waiting:
        publisher.publish(WORK_EXCHANGE, statuses.REQUESTED, {"id": str(execution.pk)})
    return len(waiting)


# -- retry --------------------------------------------------------------------------------------

def mark_retried(execution: ExecutionDB) -> bool:
    """Record on a finished execution that its retry is being requested; False when it already was."""
    access = Access(ExecutionDB)
    for _ in range(_CLAIM_ROUNDS * 5):
        context = dict(execution.context or {})
        policies = dict(context.get("policies") or {})
        if policies.get("retried_by_policy"):
            return False
        policies["retried_by_policy"] = True
        context["policies"] = policies
        if access.update_if(execution.pk, {"revision": execution.revision}, {"context": context},
                            publish=False) is not None:
            return True
        execution = access.get_by_id(execution.pk)
    return False


# -- saving (API) -------------------------------------------------------------------------------

def save_policy(data: Any, publisher: Publisher | None = None, existing: PolicyDB | None = None) -> PolicyDB:
    """Validate a policy document (PolicyAPI) and store it, new or over existing; ValidationError for 400s."""
    try:
        spec = parse_policy(data, None, action_registered)
    except ContentError as exc:
        raise ValidationError(exc.reason, field=exc.field) from None
    access = Access(PolicyDB, publisher)
    other = access.get(resource_ref=spec.resource_ref, policy_type=spec.policy_type)
    if other is not None and (existing is None or other.pk != existing.pk):
        raise ConflictError(f'action "{spec.resource_ref}" already has a {spec.policy_type} policy ({other.ref})',
                            conflict_id=str(other.pk))
    doc = existing or PolicyDB()
    for name, value in spec.fields().items():
        if name == "metadata_file" and existing is not None:
            continue
        setattr(doc, name, value)
    doc.set_identity()
    return access.add_or_update(doc)
