"""inquirer runner (core.ask): asks a person, leaves the execution ``pending`` until they answer.

| runner parameter | default                              | meaning                                        |
| ---------------- | ------------------------------------ | ---------------------------------------------- |
| schema           | one required boolean ``continue``    | JSON Schema the response must satisfy          |
| route            | ""                                   | where rules should send the notification       |
| users            | []                                   | who may respond (empty: anyone)                |
| roles            | []                                   | roles one of which the responder must hold     |
| ttl              | 1440                                 | minutes before the inquiry times out           |

run() dispatches trigger ``core.st2.generic.inquiry`` ``{id, route}`` (so rules can
notify people) and returns status ``pending`` with the result
``{schema, roles, users, route, ttl}``. The answer arrives through
st2common.services.inquiries (PUT /inquiries/<id>), which marks the execution
succeeded with ``response`` added and moves its workflow on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from st2common import statuses
from st2common.exceptions import RunnerError
from st2common.runners.base import ActionRunner, RunResult
from st2common.services import triggerinstances, triggers, triggertypes

LOG = logging.getLogger(__name__)

DEFAULT_TTL = 1440


class _Bus:
    """What triggerinstances.dispatch publishes through: the run's publish callback."""

    def __init__(self, publish: Callable[[str, str, dict], None]) -> None:
        self.publish = publish


class InquirerRunner(ActionRunner):
    """inquirer: a pending execution holding the inquiry, and the trigger announcing it."""

    name = "inquirer"

    def pre_run(self) -> None:
        if self.ctx.publish is None:
            raise RunnerError(f"action {self.ctx.action_ref}: the inquirer runner needs a bus to announce "
                              "the inquiry", runner=self.name)

    def run(self) -> RunResult:
        params = self.ctx.runner_parameters
        route = params.get("route") or ""
        result: dict[str, Any] = {
            "schema": params.get("schema"),
            "roles": list(params.get("roles") or []),
            "users": list(params.get("users") or []),
            "route": route,
            "ttl": params.get("ttl", DEFAULT_TTL),
        }
        # The shadow trigger of a system type is made at registration; resolving it here without
        # a publisher covers a database registered by an older release, and nothing watches its creation.
        triggers.resolve_trigger(triggertypes.INQUIRY_TRIGGER_REF)
        triggerinstances.dispatch(_Bus(self.ctx.publish), triggertypes.INQUIRY_TRIGGER_REF,
                                  {"id": self.ctx.execution_id, "route": route},
                                  trace_context=self.ctx.context.get("trace_context"))
        LOG.info("execution %s: inquiry pending (route %r)", self.ctx.execution_id, route)
        return RunResult(statuses.PENDING, result)
