"""orquesta runner: inspect the workflow, hand it to the workflow engine, return ``running``.

| step            | what happens                                                                 |
| --------------- | ---------------------------------------------------------------------------- |
| pre_run         | the definition (entry point under the pack's actions/) must exist            |
| run             | inspection (syntax, semantics, expression, context, content): any problem    |
|                 | fails the execution at once with result ``{errors: [...], output: None}`` and |
|                 | nothing is scheduled; otherwise a workflow execution is stored and           |
|                 | ``workflow.status requested`` published (st2common.services.workflows)       |
| result          | status ``running``: the action runner's slot is free at once, and the        |
|                 | dispatcher leaves the execution running for the engine to finish             |

A re-run that names tasks (``context["re-run"]`` with ``tasks`` / ``reset``)
continues the earlier execution's workflow from those tasks instead of
starting a new one.
"""

from __future__ import annotations

import logging

from st2common import statuses
from st2common.exceptions import NotFoundError, RunnerError, StaleRecordError, TransitionError, ValidationError
from st2common.runners.base import ActionRunner, RunResult
from st2common.services import workflows
from st2workflowengine.orquesta import inspection
from st2workflowengine.orquesta.spec import WorkflowInspectionError

LOG = logging.getLogger(__name__)


class OrquestaRunner(ActionRunner):
    """orquesta: starts an Orquesta workflow in the workflow engine."""

    name = "orquesta"

    def pre_run(self) -> None:
        path = self.ctx.entry_point_path
        if path is None or not path.is_file():
            raise RunnerError(f'Workflow definition "{self.ctx.entry_point}" of action {self.ctx.action_ref} '
                              f"does not exist ({path}).", runner=self.name)

    def run(self) -> RunResult:
        rerun = (self.ctx.context or {}).get("re-run") or {}
        if rerun.get("tasks") or rerun.get("reset"):
            return self._rerun(rerun)
        definition = self.ctx.entry_point_path.read_text()
        try:
            spec = inspection.check(definition, workflows.action_lookup())
        except WorkflowInspectionError as exc:
            LOG.info("execution %s: workflow %s failed inspection", self.ctx.execution_id, self.ctx.entry_point)
            return RunResult(statuses.FAILED, {"errors": inspection.flatten(exc.errors), "output": None})
        notify = self.ctx.runner_parameters.get("notify") or []
        workflows.request(self._publish, self.ctx.execution_id, spec, dict(self.ctx.action_parameters),
                          notify_tasks=list(notify), settings=self.ctx.settings, execution=self.ctx.record)
        # Its result ({}) was stored with the write that handed the execution to the engine.
        return RunResult(statuses.RUNNING, {}, recorded=True)

    def _rerun(self, rerun: dict) -> RunResult:
        try:
            workflows.request_rerun(self._publish, self.ctx.execution_id, rerun.get("ref"),
                                    rerun.get("tasks"), rerun.get("reset"))
        except (NotFoundError, ValidationError, TransitionError, StaleRecordError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            return RunResult(statuses.FAILED, {"errors": [{"type": "error", "message": message}], "output": None})
        return RunResult(statuses.RUNNING, {}, recorded=True)

    def _publish(self, exchange: str, routing_key: str, body: dict) -> None:
        if self.ctx.publish is None:
            raise RunnerError("the orquesta runner needs a bus to hand workflows to the engine", runner=self.name)
        self.ctx.publish(exchange, routing_key, body)
