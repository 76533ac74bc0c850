"""What happens when a task completes: retry, then its transitions in order.

Each satisfied transition publishes (later transitions and the tasks it leads
to see what it published), then acts on its ``do``: a task is staged (a join
waits for enough arrivals; a split gets its own route), ``noop`` remediates a
failure, ``fail`` fails the workflow once what it started has run, ``retry``
re-runs the task up to three times. A failed task that nothing remediates
stops new work everywhere (fail fast) and is recorded as an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st2common import statuses
from st2common.expressions import ExpressionEvaluationException
from st2workflowengine.orquesta import rendering
from st2workflowengine.orquesta.rendering import error_entry
from st2workflowengine.orquesta.spec import ENGINE_COMMANDS

if TYPE_CHECKING:
    from st2workflowengine.orquesta.conductor import WorkflowConductor

TASK_FAILED_MESSAGE = "Execution failed. See result for details."
ENGINE_RETRY_LIMIT = 3


def complete_task(conductor: "WorkflowConductor", entry: dict[str, Any], status: str, result: Any) -> None:
    """Record a task's completion, then retry it or follow its transitions."""
    state = conductor.state
    entry.update(status=status, result=result, done=state.tick())
    spec = conductor.graph.task(entry["id"])
    variables = state.context(entry["ctxs"]["in"])
    runtime = conductor.runtime_for(variables, entry)
    where = {"task_id": entry["id"], "route": entry["route"]}
    inbound = entry["ctxs"]["in"]
    current = inbound[0] if len(inbound) == 1 else state.add_context({}, inbound)
    entry["ctxs"]["out"] = current

    if state.status in (statuses.CANCELING, statuses.CANCELED):
        return
    try:
        if spec.retry is not None and rendering.retry_applies(
                spec, runtime, status, entry["retries"],
                lambda: rendering.count(spec.retry.count, runtime, f"tasks.{spec.name}.retry.count")):
            delay = rendering.seconds(spec.retry.delay, runtime, f"tasks.{spec.name}.retry.delay")
            entry["retries"] += 1
            retry(entry, delay)
            return
    except ExpressionEvaluationException as exc:
        conductor.errors.append(error_entry(exc, **where))
        conductor.fail_fast()
        return

    remediated = fail = again = False
    for transition in spec.next:
        transition_id = f"{transition.do[0] if transition.do else 'continue'}__t{transition.index}"
        try:
            satisfied = rendering.is_satisfied(transition, runtime)
        except ExpressionEvaluationException as exc:
            conductor.errors.append(error_entry(exc, task_transition_id=transition_id, **where))
            conductor.fail_fast()
            break
        for target in transition.do:
            if target not in ENGINE_COMMANDS:
                entry["next"][f"{target}__t{transition.index}"] = satisfied
        if not satisfied:
            continue
        if transition.publish:
            published, errors = rendering.publish(transition, variables, runtime)
            if errors:
                for error in errors:
                    error.update(task_transition_id=transition_id, **where)
                conductor.errors.extend(errors)
                conductor.fail_fast()
                break
            current = entry["ctxs"]["out"] = state.add_context(published, [current])
        for target in transition.do:
            if target == "continue":
                continue
            if target == "noop":
                remediated = True
            elif target == "fail":
                fail = True
            elif target == "retry":
                again = True
            else:
                remediated = True
                stage(conductor, entry, target, transition.index, current)

    if again and entry["engine_retries"] < ENGINE_RETRY_LIMIT:
        entry["engine_retries"] += 1
        retry(entry, None)
        return
    abended = status in statuses.ABENDED
    if abended and (fail or not remediated):
        conductor.errors.append({"type": "error", "message": TASK_FAILED_MESSAGE, **where, "result": result})
    if fail:
        state.fail_requested = True
    if abended and not remediated:
        conductor.fail_fast()
    elif status == statuses.CANCELED and not state.failing:
        # A child canceled on its own cancels the workflow it belongs to.
        state.status = statuses.CANCELING
        state.staged = []


def retry(entry: dict[str, Any], delay: float | int | None) -> None:
    """Put a completed task back to run again as its next attempt."""
    entry["retried_from"] = entry["status"]
    entry.update(status=statuses.RETRYING, attempt=entry["attempt"] + 1, result=None, done=None, next={})
    entry["ctxs"]["out"] = None
    for key in ("items", "item_values", "concurrency"):
        entry.pop(key, None)
    if delay:
        entry["retry_delay"] = delay


def stage(conductor: "WorkflowConductor", entry: dict[str, Any], target: str, index: int, context: int) -> None:
    """Record an arrival at target through transition index of entry's task."""
    state, graph = conductor.state, conductor.graph
    if state.failing:
        return
    prev_id = f"{entry['id']}__t{index}"
    seq = state.index(entry)
    route = entry["route"]
    if graph.is_split(target):
        route = state.split_route(route, prev_id)
    barrier = graph.barrier(target)
    if barrier is None:
        staged = state.get_staged(target, route, ready=True)
        if staged is None:
            staged = {"id": target, "route": route, "prev": {}, "ctxs": {"in": []}, "ready": True}
            state.staged.append(staged)
        staged["prev"][prev_id] = seq
        staged["ctxs"]["in"].append(context)
        return
    staged = state.get_staged(target, route, ready=False)
    if staged is None:
        existing = state.get_task(target, route)
        if existing is not None and prev_id not in existing["prev"]:
            # A late arrival at a join that already ran (join by count): nothing to do.
            return
        staged = {"id": target, "route": route, "prev": {}, "ctxs": {"in": []}, "ready": False}
        state.staged.append(staged)
    staged["prev"][prev_id] = seq
    staged["ctxs"]["in"].append(context)
    arrived = {key.rsplit("__t", 1)[0] for key in staged["prev"]}
    staged["ready"] = len(arrived) >= barrier
