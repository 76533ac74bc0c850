"""The runner contract: how the action runner hands one execution to a runner.

A runner gets a RunContext (everything already loaded and rendered), runs the
action and returns a RunResult. Hooks default to no-ops. Runners never touch
the database or the bus themselves, except through the callbacks given in the
context (output lines, announcements), so they can be tested alone.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from st2common import statuses

# output(stream, data): stream is "stdout" or "stderr" (or "output"); data a chunk of text.
OutputCallback = Callable[[str, str], None]


@dataclass
class RunContext:
    """What a runner needs to run one execution."""

    execution_id: str
    action_ref: str
    pack: str
    #: The action's entry_point as written in its metadata ("" when none).
    entry_point: str
    #: The pack's folder on disk (None for actions created through the API without files).
    pack_path: Path | None
    #: Rendered values of the parameters declared by the runner type.
    runner_parameters: dict[str, Any]
    #: Rendered values of the action's own parameters (not declared by the runner type).
    action_parameters: dict[str, Any]
    #: Names of the action's parameters, in schema order, with their schema (for position, type).
    parameters_schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The execution context (user, parent, trace ...).
    context: dict[str, Any] = field(default_factory=dict)
    #: The pack's resolved config (python-script actions see it as self.config).
    config: dict[str, Any] = field(default_factory=dict)
    output: OutputCallback = lambda stream, data: None
    #: publish(exchange, routing_key, body) for runners that publish (announcement).
    publish: Callable[[str, str, dict], None] | None = None
    #: The platform settings (st2common.config.Settings).
    settings: Any = None
    #: A token of the execution's user, valid while it runs (ST2_ACTION_AUTH_TOKEN), when auth is on.
    auth_token: str | None = None
    #: The execution as the action runner claimed it (a workflow runner builds on it without reading it again).
    record: Any = None

    @property
    def entry_point_path(self) -> Path | None:
        """The entry point resolved against the pack's actions/ folder, as StackStorm does."""
        if not self.entry_point:
            return None
        path = Path(self.entry_point)
        if path.is_absolute() or self.pack_path is None:
            return path
        return self.pack_path / "actions" / path


@dataclass
class RunResult:
    """How a run ended: a status from st2common.statuses and the result value."""

    status: str
    result: Any = None
    # The runner stored status and result itself, in a write of its own (the orquesta runner, with the
    # write that hands the execution to the workflow engine): the action runner has nothing to record.
    recorded: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status == statuses.SUCCEEDED


class ActionRunner(abc.ABC):
    """Base class of every runner; subclasses implement run()."""

    #: The runner type name this class implements ("local-shell-cmd" ...).
    name: str = ""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def pre_run(self) -> None:
        """Check what run() needs (entry point exists ...); raise RunnerError if it cannot run."""

    @abc.abstractmethod
    def run(self) -> RunResult:
        """Run the action to completion and say how it ended."""

    def cancel(self) -> None:
        """Stop a run in progress (kill its process tree); run() then returns status canceled."""

    def post_run(self, result: RunResult) -> None:
        """Clean up after run() (temporary files ...)."""
