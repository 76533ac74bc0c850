"""Local shell runners: local-shell-cmd runs `cmd` through the shell, local-shell-script runs the entry point.

| runner parameter | default | meaning                                                        |
| ---------------- | ------- | -------------------------------------------------------------- |
| cmd              |         | the command line (local-shell-cmd only)                        |
| cwd              | (ours)  | working directory                                              |
| env              | {}      | extra environment variables                                    |
| kwarg_op         | "--"    | prefix of named script arguments                               |
| sudo             | false   | run as root through `sudo -E -- bash -c`                       |
| sudo_password    | null    | secret; fed to `sudo -S` on stdin, never on the command line   |
| timeout          | 60      | seconds; then the whole process tree is killed, status timeout |

Result: {stdout, stderr, return_code, succeeded, failed} (+ error on timeout or a
bad sudo password). One trailing newline is stripped from stdout/stderr and each
is JSON-decoded when it is valid JSON (StackStorm does both). Status from the exit
code as StackStorm maps it: 0 succeeded, -9 timeout, -15 abandoned, else failed;
canceled when cancel() ended it. Every command runs in its own session, so the
process group plus a /proc walk finds the whole tree to kill.

Script arguments follow StackStorm: parameters with a `position` become
positional arguments in order (booleans "1"/"0", arrays comma-joined, objects
JSON, None ""), every other action parameter a named `<kwarg_op>name=value`
(true: a bare flag; false, None and "" dropped; other values str()), all
shell-quoted.

As in StackStorm, when `[system_user] user` is an account on this machine other
than the one the action runner runs as, commands run as that user through
`sudo -E -H -u <user> -- bash -c`; when no such account exists they run as the
action runner's own user.
"""

from __future__ import annotations

import abc
import codecs
import functools
import json
import logging
import os
import pwd
import re
import select
import shlex
import subprocess
import threading
import time
from typing import Any, Callable

from st2common import statuses
from st2common.exceptions import RunnerError
from st2common.runners.base import ActionRunner, RunContext, RunResult
from st2common.util.process import kill_tree
from st2actionrunner.runners import KILL_GRACE, action_env, user_env, write_all

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60
DEFAULT_KWARG_OP = "--"
EXIT_STATUS = {0: statuses.SUCCEEDED, 1: statuses.FAILED, -9: statuses.TIMED_OUT, -15: statuses.ABANDONED}
# After the command exits, how long background children may keep its pipes open before we stop reading.
PIPE_DRAIN_GRACE = 0.5
_SUDO_FAILED = re.compile(r"sudo: \d+ incorrect password attempts")
_SUDO_USER = re.compile(r"\[sudo\] password for (.+?):")


def serialize_positional(kind: str | None, value: Any) -> str:
    """One positional script argument as StackStorm serialises it."""
    if kind in ("string", "number", "integer", "float"):
        return "" if value is None else str(value)
    if kind == "boolean":
        return "" if value is None else ("1" if value else "0")
    if kind in ("array", "list"):
        return ",".join(map(str, value)) if value else ""
    if kind == "object":
        return json.dumps(value) if value else ""
    if kind == "null":
        return ""
    return str(value) if value else ""


def script_arguments(parameters: dict[str, Any], schema: dict[str, dict[str, Any]],
                     kwarg_op: str = DEFAULT_KWARG_OP) -> str:
    """The quoted argument string of a script: named arguments first, then positional ones."""
    positional = sorted(
        (attrs["position"], name) for name, attrs in schema.items()
        if isinstance(attrs, dict) and attrs.get("position") is not None
    )
    positional_names = {name for _, name in positional}
    parts = []
    for name, value in parameters.items():
        if name in positional_names or value is None or (isinstance(value, str) and not value):
            continue
        if isinstance(value, bool):
            if value:
                parts.append(shlex.quote(kwarg_op + name))
        else:
            parts.append(f"{shlex.quote(kwarg_op + name)}={shlex.quote(str(value))}")
    for _, name in positional:
        parts.append(shlex.quote(serialize_positional(schema[name].get("type"), parameters.get(name))))
    return " ".join(parts)


def shell_command(command: str, *, sudo: bool = False, sudo_password: str | None = None,
                  user: str | None = None) -> str:
    """The command line the shell runs: as is, as root through sudo, or as another user (StackStorm's forms)."""
    flags = "-S -E" if sudo_password else "-E"
    if sudo:
        return f"sudo {flags} -- bash -c {shlex.quote(command)}"
    if user:
        return f"sudo {flags} -H -u {shlex.quote(user)} -- bash -c {shlex.quote(command)}"
    return command


def run_as_user(settings: Any) -> str | None:
    """[system_user] user when it is an existing account other than ours, else None (run as ourselves)."""
    if settings is None:
        return None
    wanted = settings.system_user.user
    return None if not _account_exists(wanted) or _own_account() == wanted else wanted


@functools.lru_cache(maxsize=8)
def _account_exists(name: str) -> bool:
    # Each look-up reads the account database; accounts made after the start need a restart, as in StackStorm.
    try:
        pwd.getpwnam(name)
    except (KeyError, TypeError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def _own_account() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def strip_shell_chars(text: str) -> str:
    """Drop one trailing newline, then one trailing carriage return (StackStorm's strip_shell_chars)."""
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def try_json(text: str) -> Any:
    """text decoded as JSON when it is valid JSON, else text unchanged."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class OutputPump:
    """Reads one pipe until EOF, passing each line to output(stream, line) and keeping the whole text."""

    def __init__(self, fd: int, stream: str, output: Callable[[str, str], None],
                 on_eof: Callable[[], None]) -> None:
        self.fd = fd
        self.stream = stream
        self.output = output
        self.on_eof = on_eof
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._run, name=f"pump-{stream}", daemon=True)

    def start(self) -> "OutputPump":
        self.thread.start()
        return self

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def _emit(self, line: str) -> None:
        self.chunks.append(line)
        try:
            self.output(self.stream, line)
        except Exception:
            # Losing one streamed line must not fail the run; the result keeps the full text.
            LOG.exception("output callback failed for %s", self.stream)

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            while True:
                data = os.read(self.fd, 65536)
                if not data:
                    break
                pending += decoder.decode(data)
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._emit(line + "\n")
            pending += decoder.decode(b"", final=True)
            if pending:
                self._emit(pending)
        except OSError as exc:
            LOG.warning("reading %s stopped: %s", self.stream, exc)
        finally:
            os.close(self.fd)
            self.on_eof()


def watch_exit(pid: int, on_exit: Callable[[], None]) -> bool:
    """Call on_exit the moment process pid exits, from a (green) thread; False where Linux pidfds are missing.

    Waiting for the exit by polling (sleeps from 0.5 ms, which eventlet's hub
    rounds up to whole milliseconds) added 2-3 ms to every short command.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False

    def wait() -> None:
        try:
            # A pidfd reads as ready once the process has exited; select is green under eventlet.
            select.select([fd], [], [])
        except (OSError, ValueError):
            pass
        finally:
            os.close(fd)
            on_exit()

    threading.Thread(target=wait, name=f"exit-{pid}", daemon=True).start()
    return True


class _LocalShellRunner(ActionRunner, abc.ABC):
    """What both local runners share: run one shell command line, stream it, time it out, cancel it."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._cancel_requested = False
        self._wake = threading.Event()
        self._exit_watched = False
        params = ctx.runner_parameters
        self.cwd = params.get("cwd") or None
        self.env = user_env(params.get("env"))
        self.kwarg_op = params.get("kwarg_op") or DEFAULT_KWARG_OP
        self.sudo = bool(params.get("sudo", False))
        self.sudo_password = params.get("sudo_password") or None
        self.timeout = params.get("timeout", DEFAULT_TIMEOUT)
        self.debug = bool(params.get("debug", False))

    def pre_run(self) -> None:
        if self.ctx.runner_parameters.get("content_version"):
            raise RunnerError(f"action {self.ctx.action_ref}: content_version (git worktrees) is not supported",
                              field="content_version")
        if self.cwd and not os.path.isdir(self.cwd):
            raise RunnerError(f'action {self.ctx.action_ref}: working directory "{self.cwd}" does not exist',
                              path=self.cwd)

    @abc.abstractmethod
    def command(self) -> str:
        """The command line to run, before any sudo wrapping."""

    def full_command(self) -> str:
        """The command line the shell runs, sudo wrapping included."""
        return shell_command(self.command(), sudo=self.sudo, sudo_password=self.sudo_password,
                             user=run_as_user(self.ctx.settings))

    def cancel(self) -> None:
        self._cancel_requested = True
        self._wake.set()

    def run(self) -> RunResult:
        env = dict(os.environ)
        env.update(self.env)
        env.update(action_env(self.ctx, debug=self.debug))
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(
                self.full_command(), shell=True, cwd=self.cwd, env=env, stdout=out_w, stderr=err_w,
                stdin=subprocess.PIPE if self.sudo_password else subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            raise RunnerError(f"action {self.ctx.action_ref}: cannot start the command: {exc}") from exc
        finally:
            # The child holds its own copies; ours must close so EOF arrives when it exits.
            os.close(out_w)
            os.close(err_w)
        LOG.info("execution %s: %s started pid %s (sudo=%s)", self.ctx.execution_id, self.name, proc.pid,
                 self.sudo)
        self._exit_watched = watch_exit(proc.pid, self._wake.set)
        pumps = [OutputPump(out_r, "stdout", self.ctx.output, self._wake.set).start(),
                 OutputPump(err_r, "stderr", self.ctx.output, self._wake.set).start()]
        if self.sudo_password:
            self._feed_password(proc)
        exit_code, outcome = self._wait(proc, pumps)
        return self._result(exit_code, outcome, pumps[0].text, pumps[1].text)

    def _feed_password(self, proc: subprocess.Popen) -> None:
        try:
            write_all(proc.stdin.fileno(), (self.sudo_password + "\n").encode())
        except OSError:
            pass  # sudo did not ask (cached credentials) or already exited
        finally:
            proc.stdin.close()

    def _wait(self, proc: subprocess.Popen, pumps: list[OutputPump]) -> tuple[int, str | None]:
        """Wait for exit and EOF; returns (exit code, None | "timeout" | "canceled")."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        outcome = None
        exited_at = None
        delay = 0.0005
        while True:
            # Clear before looking, so a wake-up that lands while we look is not lost.
            self._wake.clear()
            code = proc.poll()
            drained = not any(p.thread.is_alive() for p in pumps)
            now = time.monotonic()
            if code is not None:
                if drained:
                    return code, outcome
                exited_at = exited_at or now
                if now - exited_at > PIPE_DRAIN_GRACE:
                    LOG.info("execution %s: background processes keep the output open; not waiting for them",
                             self.ctx.execution_id)
                    return code, outcome
            elif outcome is None and self._cancel_requested:
                outcome = "canceled"
                LOG.info("execution %s: canceled, killing process tree %s", self.ctx.execution_id, proc.pid)
                kill_tree(proc.pid, KILL_GRACE)
            elif outcome is None and deadline is not None and now >= deadline:
                outcome = "timeout"
                LOG.info("execution %s: timed out after %ss, killing process tree %s",
                         self.ctx.execution_id, self.timeout, proc.pid)
                kill_tree(proc.pid, KILL_GRACE)
            if not drained or self._exit_watched:
                # Event-driven: a pump's EOF, the exit or cancel() wakes us at once.
                self._wake.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - now)))
            else:
                time.sleep(delay)
                delay = min(delay * 2, 0.02)

    def _result(self, exit_code: int, outcome: str | None, stdout: str, stderr: str) -> RunResult:
        error = None
        if outcome == "timeout":
            error = f"Action failed to complete in {self.timeout} seconds"
            exit_code = -9
        if self.sudo_password and _SUDO_FAILED.search(stderr):
            match = _SUDO_USER.search(stderr)
            error = ("Invalid sudo password provided or sudo is not configured for this user "
                     f"({match.group(1) if match else 'unknown'})")
            exit_code = -1
        succeeded = exit_code == 0
        result = {
            "failed": not succeeded,
            "succeeded": succeeded,
            "return_code": exit_code,
            "stdout": try_json(strip_shell_chars(stdout)),
            "stderr": try_json(strip_shell_chars(stderr)),
        }
        if error:
            result["error"] = error
        status = statuses.CANCELED if outcome == "canceled" else EXIT_STATUS.get(exit_code, statuses.FAILED)
        LOG.info("execution %s: %s exited %s -> %s", self.ctx.execution_id, self.name, exit_code, status)
        return RunResult(status, result)


class LocalShellCommandRunner(_LocalShellRunner):
    """local-shell-cmd: runs the `cmd` runner parameter through the shell."""

    name = "local-shell-cmd"

    def pre_run(self) -> None:
        super().pre_run()
        if self.ctx.entry_point:
            raise RunnerError("entry_point is only valid for local-shell-script runner",
                              path=self.ctx.entry_point)
        if not self.ctx.runner_parameters.get("cmd"):
            raise RunnerError(f"action {self.ctx.action_ref}: the cmd parameter is empty", field="cmd")

    def command(self) -> str:
        return self.ctx.runner_parameters["cmd"]


class LocalShellScriptRunner(_LocalShellRunner):
    """local-shell-script: runs the pack's entry point with positional and named arguments."""

    name = "local-shell-script"

    def pre_run(self) -> None:
        super().pre_run()
        path = self.ctx.entry_point_path
        if path is None:
            raise RunnerError(f"action {self.ctx.action_ref}: missing entry_point action metadata attribute")
        if not path.is_file():
            raise RunnerError(f'action {self.ctx.action_ref}: entry point "{path}" does not exist',
                              path=str(path))
        if not os.access(path, os.X_OK):
            try:
                path.chmod(path.stat().st_mode | 0o111)
            except OSError:
                pass  # read-only file system: StackStorm skips the chmod there too

    def command(self) -> str:
        args = script_arguments(self.ctx.action_parameters, self.ctx.parameters_schema, self.kwarg_op)
        script = shlex.quote(str(self.ctx.entry_point_path))
        return f"{script} {args}" if args else script
