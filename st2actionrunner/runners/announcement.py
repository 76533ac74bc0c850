"""announcement runner: publishes the action's parameters on the announcement exchange.

| runner parameter | default   | meaning                                                    |
| ---------------- | --------- | ---------------------------------------------------------- |
| experimental     | false     | must be true, as StackStorm requires, or the run fails     |
| route            | "general" | the routing key; the stream shows st2.announcement__<route> |

The message body is StackStorm's {"payload": <action parameters>, "trace_context": ...};
the result is {"output": <parameters>, **<parameters>}, status succeeded.
"""

from __future__ import annotations

import logging

from st2common import statuses
from st2common.exceptions import RunnerError
from st2common.runners.base import ActionRunner, RunResult

LOG = logging.getLogger(__name__)

EXCHANGE = "announcement"
DEFAULT_ROUTE = "general"


class AnnouncementRunner(ActionRunner):
    """announcement: one message on the announcement exchange, routed by `route`."""

    name = "announcement"

    def pre_run(self) -> None:
        if not self.ctx.runner_parameters.get("experimental"):
            raise RunnerError(f"Experimental flag is missing for action {self.ctx.action_ref}",
                              field="experimental")
        if self.ctx.publish is None:
            raise RunnerError(f"action {self.ctx.action_ref}: this runner was given no way to publish")

    def run(self) -> RunResult:
        route = self.ctx.runner_parameters.get("route") or DEFAULT_ROUTE
        payload = dict(self.ctx.action_parameters)
        body = {"payload": payload, "trace_context": self.ctx.context.get("trace_context")}
        self.ctx.publish(EXCHANGE, route, body)
        LOG.info("execution %s: announcement published on route %s", self.ctx.execution_id, route)
        return RunResult(statuses.SUCCEEDED, {"output": payload, **payload})
