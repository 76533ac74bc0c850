"""Policy decisions, pure (plain data in, plain data out), and the two edges that load, decide and save.

| policy type              | when                         | decision                                              |
| ------------------------ | ---------------------------- | ----------------------------------------------------- |
| action.concurrency       | before scheduling            | fewer than ``threshold`` running (a slot won): run;   |
|                          |                              | else ``action``: ``delay`` (re-checked later, or when |
|                          |                              | a slot is freed) or ``cancel``                        |
| action.concurrency.attr  | before scheduling            | the same, counting only executions whose parameters   |
|                          |                              | named in ``attributes`` have the same values          |
| action.retry             | after a run ends             | ``retry_on`` failure (status failed) or timeout       |
|                          |                              | (status timeout), fewer than ``max_retry_count``      |
|                          |                              | retries so far, not a workflow's child: run it again  |
|                          |                              | after ``delay`` seconds                               |
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from st2common import statuses
from st2common.exceptions import StackStormBaseException
from st2common.services import executions
from st2common.services import policies as policy_service

LOG = logging.getLogger(__name__)

CONCURRENCY = "action.concurrency"
CONCURRENCY_BY_ATTR = "action.concurrency.attr"
RETRY = "action.retry"
CONCURRENCY_TYPES = frozenset({CONCURRENCY, CONCURRENCY_BY_ATTR})

SCHEDULE, DELAY, CANCEL = "schedule", "delay", "cancel"

# Seconds between re-checks of an execution delayed by a concurrency policy. Freed slots
# nudge the waiting executions at once; the re-check is the fallback when a nudge is lost.
RECHECK_FIRST = 0.5
RECHECK_MAX = 2.5

RETRY_ON_STATUS = {"failure": statuses.FAILED, "timeout": statuses.TIMED_OUT}
DEFAULT_MAX_RETRY_COUNT = 2


def concurrency_key(policy_ref: str, policy_type: str, params: Mapping[str, Any],
                    execution_parameters: Mapping[str, Any] | None) -> str:
    """What a concurrency policy counts executions by: the policy, and for .attr the attribute values."""
    if policy_type != CONCURRENCY_BY_ATTR:
        return policy_ref
    values = {name: (execution_parameters or {}).get(name) for name in params.get("attributes") or ()}
    digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{policy_ref}:{digest}"


def concurrency_decision(params: Mapping[str, Any], running: int) -> str:
    """SCHEDULE when fewer than threshold run, else the policy's action (DELAY or CANCEL)."""
    if running < int(params.get("threshold", 0)):
        return SCHEDULE
    return CANCEL if params.get("action") == CANCEL else DELAY


def combine(decisions: list[str]) -> str:
    """One outcome for several policies: any cancel cancels, else any delay delays."""
    if CANCEL in decisions:
        return CANCEL
    if DELAY in decisions:
        return DELAY
    return SCHEDULE


def recheck_after(times_delayed: int) -> float:
    """Seconds before a delayed execution checks its concurrency policies again (doubling, capped)."""
    return min(RECHECK_MAX, RECHECK_FIRST * 2 ** max(0, times_delayed))


@dataclass(frozen=True)
class Retry:
    """A decision to run a finished execution again."""

    retry_count: int
    delay_ms: int | None
    context: dict[str, Any]


def retry_count_of(context: Mapping[str, Any] | None) -> int:
    """How many times the execution's original was already retried (0 for an original)."""
    retry = ((context or {}).get("policies") or {}).get("retry") or {}
    return int(retry.get("retry_count") or 0)


def retry_decision(policy_ref: str, params: Mapping[str, Any], execution_id: str, status: str,
                   context: Mapping[str, Any] | None, has_parent: bool) -> Retry | None:
    """The retry to request after a run that ended in status, or None (StackStorm's retry policy)."""
    if has_parent:
        # A workflow decides about its tasks' failures itself.
        return None
    wanted = RETRY_ON_STATUS.get(params.get("retry_on"))
    if wanted is None or status != wanted:
        return None
    done = retry_count_of(context)
    if done >= int(params.get("max_retry_count", DEFAULT_MAX_RETRY_COUNT)):
        return None
    delay = float(params.get("delay") or 0)
    new_context = {k: v for k, v in dict(context or {}).items() if k not in ("parent", "re-run")}
    new_context["policies"] = {"retry": {"applied_policy": policy_ref, "retry_count": done + 1,
                                         "retried_liveaction_id": execution_id}}
    return Retry(retry_count=done + 1, delay_ms=int(delay * 1000) or None, context=new_context)


# -- the edges: what the scheduler (before) and the notifier (after) call -----------------------
# They load the action's policies and the counts, call the decisions above and save the outcome.

@dataclass(frozen=True)
class Admission:
    """Whether an execution may be scheduled now, and why not."""

    decision: str
    reason: str = ""


def has_concurrency(action_ref: str) -> bool:
    """True when a concurrency policy applies to the action (from the in-memory policy index)."""
    return any(p.policy_type in CONCURRENCY_TYPES for p in policy_service.policies_of(action_ref))


def admit(execution) -> Admission:
    """Apply the action's concurrency policies before scheduling: its slots taken, or why it waits."""
    applied = [p for p in policy_service.policies_of(execution.action_ref) if p.policy_type in CONCURRENCY_TYPES]
    if not applied:
        return Admission(SCHEDULE)
    execution_id = str(execution.pk)
    decisions, reasons, claimed = [], [], []
    for policy in applied:
        params = dict(policy.parameters or {})
        threshold = int(params.get("threshold", 0))
        key = concurrency_key(policy.ref, policy.policy_type, params, execution.parameters)
        taken, others, new = policy_service.claim_slot(key, threshold, execution_id, execution.action_ref)
        if taken:
            if new:
                claimed.append(key)
            continue
        # Every slot is held: the count is at the threshold, whatever was read.
        decisions.append(concurrency_decision(params, max(others, threshold)))
        reasons.append(f"policy {policy.ref}: {others} executions of {execution.action_ref} running "
                       f"(threshold {threshold})")
    outcome = combine(decisions)
    if outcome != SCHEDULE:
        # All or nothing: the slots this call took under the other policies go back (only those:
        # another copy handling the same execution at this moment may hold its own).
        for key in claimed:
            policy_service.release_slots(execution_id, key)
    return Admission(outcome, "; ".join(reasons))


def after_run(publisher, execution) -> None:
    """Apply the action's policies once an execution completed: free its slots, request its retry."""
    applied = policy_service.policies_of(execution.action_ref)
    if not applied:
        return
    concurrency = [p for p in applied if p.policy_type in CONCURRENCY_TYPES]
    if concurrency and policy_service.release_slots(str(execution.pk)):
        # Executions waiting on another attribute value do not need this slot: nudge more of them.
        limit = 20 if any(p.policy_type == CONCURRENCY_BY_ATTR for p in concurrency) else 2
        policy_service.nudge_delayed(publisher, execution.action_ref, limit)
    for policy in applied:
        if policy.policy_type != RETRY:
            continue
        retry = retry_decision(policy.ref, dict(policy.parameters or {}), str(execution.pk), execution.status,
                               execution.context, bool(execution.parent))
        if retry is None or not policy_service.mark_retried(execution):
            continue
        try:
            again = executions.request(publisher, execution.action_ref, dict(execution.parameters or {}),
                                       context=retry.context, delay=retry.delay_ms,
                                       notify=dict(execution.notify or {}) or None,
                                       user=(execution.context or {}).get("user"))
        except StackStormBaseException as exc:
            LOG.warning("policy %s: execution %s cannot be retried: %s", policy.ref, execution.pk, exc)
            continue
        LOG.info("policy %s: execution %s %s, retry %d requested as %s", policy.ref, execution.pk,
                 execution.status, retry.retry_count, again.pk)
