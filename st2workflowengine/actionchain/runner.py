"""action-chain runner: check the chain, hand it to the workflow engine, return ``running``.

| step    | what happens                                                                     |
| ------- | -------------------------------------------------------------------------------- |
| pre_run | the definition (entry point under the pack's actions/) must exist and be a valid |
|         | chain (schema, node names in on-success / on-failure / default); otherwise the  |
|         | execution fails at once with a top-level ``{error, traceback}``                 |
| run     | a chain execution is stored ``requested`` with the action's rendered parameters |
|         | (st2workflowengine.actionchain.service.request)                                 |
| result  | status ``running`` and an empty ``{tasks, published}``: the action runner's     |
|         | slot is free at once, and its write of this result is what starts the chain in  |
|         | the engine, which runs one node at a time as each child completes and ends the  |
|         | execution with ``{tasks: [...], published: {...}}``                             |

Unlike StackStorm's runner, nothing waits in the action runner: no thread per
chain, no polling of children.
"""

from __future__ import annotations

import logging

from st2common import statuses
from st2common.exceptions import RunnerError
from st2common.runners.base import ActionRunner, RunResult
from st2workflowengine.actionchain import service
from st2workflowengine.actionchain.spec import ChainSpec, ChainSpecError, parse

LOG = logging.getLogger(__name__)


class ActionChainRunner(ActionRunner):
    """action-chain: starts an ActionChain in the workflow engine."""

    name = "action-chain"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.spec: ChainSpec | None = None

    def pre_run(self) -> None:
        path = self.ctx.entry_point_path
        if path is None or not path.is_file():
            raise RunnerError(f'Action chain definition "{self.ctx.entry_point}" of action {self.ctx.action_ref} '
                              f"does not exist ({path}).", runner=self.name)
        try:
            self.spec = parse(path.read_text(), source=self.ctx.entry_point)
        except ChainSpecError as exc:
            raise RunnerError(str(exc), runner=self.name) from exc

    def run(self) -> RunResult:
        runner_parameters = dict(self.ctx.runner_parameters)
        service.request(self.ctx.execution_id, self.spec, dict(self.ctx.action_parameters), runner_parameters,
                        source=self.ctx.entry_point)
        result: dict = {"tasks": []}
        if runner_parameters.get("display_published", True) is not False:
            result["published"] = {}
        return RunResult(statuses.RUNNING, result)
