"""noop runner: does nothing and succeeds, with StackStorm's result {failed, succeeded, return_code}."""

from __future__ import annotations

from st2common import statuses
from st2common.runners.base import ActionRunner, RunResult


class NoopRunner(ActionRunner):
    """noop: succeeds at once, whatever the parameters."""

    name = "noop"

    def run(self) -> RunResult:
        return RunResult(statuses.SUCCEEDED, {"failed": False, "succeeded": True, "return_code": 0})
