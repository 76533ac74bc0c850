"""The runners, one module per family; st2common/runners/registry.py names the class of each type.

| runner type                        | module      | result                                          |
| ---------------------------------- | ----------- | ----------------------------------------------- |
| local-shell-cmd, local-shell-script | local.py   | {stdout, stderr, return_code, succeeded, failed} |
| python-script                      | python.py (+ python_wrapper.py in the worker) | {stdout, stderr, exit_code, result} |
| http-request                       | http.py     | {status_code, body, parsed, headers}            |
| noop                               | noop.py     | {failed, succeeded, return_code}                |
| announcement                       | announcement.py | {output: parameters, **parameters}          |

Each takes a RunContext and returns a RunResult (st2common/runners/base.py);
none touches the database or the bus except through the context's callbacks.
This module holds what several runners share: the environment an action sees.
"""

from __future__ import annotations

import select
from typing import Any

from eventlet.patcher import original

from st2common import config
from st2common.runners.base import RunContext

# Seconds between SIGTERM and SIGKILL when a run is canceled or timed out.
KILL_GRACE = 1.0
# eventlet's green os.write retries EPIPE forever: a pipe whose reader died (a command
# that exited before reading its sudo password, a dead python worker) would spin the
# action runner at full CPU with the run stuck in running. The plain write raises it.
_unpatched_write = original("os").write


def public_api_url(settings: Any) -> str | None:
    """The versioned API URL actions are told about (ST2_ACTION_API_URL), as StackStorm builds it."""
    return config.public_api_url(settings) if settings is not None else None


def action_env(ctx: RunContext, debug: bool = False) -> dict[str, str]:
    """The ST2_ACTION_* variables every local action gets, StackStorm's names."""
    env = {"ST2_ACTION_PACK_NAME": ctx.pack, "ST2_ACTION_EXECUTION_ID": str(ctx.execution_id)}
    api_url = public_api_url(ctx.settings)
    if api_url:
        env["ST2_ACTION_API_URL"] = api_url
    if ctx.auth_token:
        env["ST2_ACTION_AUTH_TOKEN"] = ctx.auth_token
    if debug:
        env["ST2_ACTION_DEBUG"] = "1"
    return env


def user_env(env: Any) -> dict[str, str]:
    """The `env` runner parameter as string variables (None values dropped)."""
    if not env:
        return {}
    return {str(key): str(value) for key, value in dict(env).items() if value is not None}


def write_all(fd: int, data: bytes) -> None:
    """Write data to a pipe without ever blocking the event hub on a full pipe; OSError when it is broken."""
    view = memoryview(data)
    while view:
        # Writable means at least one page is free, so a write of one page never blocks.
        select.select([], [fd], [])
        view = view[_unpatched_write(fd, view[:4096]):]
