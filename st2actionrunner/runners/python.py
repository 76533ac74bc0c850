"""python-script runner: runs a pack's Action class in a warm worker interpreter of that pack.

| runner parameter | default | meaning                                                         |
| ---------------- | ------- | --------------------------------------------------------------- |
| env              | {}      | extra environment variables for the run (PYTHONPATH is ignored) |
| timeout          | 600     | seconds; then the worker and its children are killed: timeout  |
| log_level        | DEBUG   | level of self.logger (DEBUG means [actionrunner] python_runner_log_level) |
| debug            | false   | sets ST2_ACTION_DEBUG=1                                         |

Result, as StackStorm shapes it: {stdout, stderr, exit_code, result} (+ error on
timeout). run() returning (True, v) succeeds, (False, v) fails, anything else
succeeds with that value; an exception fails with its traceback in stderr.

Workers (python_wrapper.py) are kept per (pack, interpreter, PYTHONPATH): a run
takes an idle one or starts one, sends one JSON request on a pipe, streams the
worker's stdout/stderr lines to ctx.output until the run's end marker, reads
the JSON response, and hands the worker back. A worker is retired after
MAX_RUNS runs or IDLE_TTL idle seconds, killed (with its children) on timeout
or cancel, and replaced lazily. Each run gets a fresh instance of the action
class; the module is loaded once per worker and again when its file changes,
so module-level state lives as long as the worker does (StackStorm starts an
interpreter per run).

Interpreter: the pack's virtualenv (<base_path>/virtualenvs/<pack>/bin/python)
when it exists, else [actionrunner] python_binary, else the action runner's own.
sys.path: <pack>/actions/lib, <pack>/lib when [packs] enable_common_libs, the
platform, and the entry point's folder, as StackStorm arranges it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import st2common
from st2common import statuses
from st2common.exceptions import RunnerError
from st2common.runners.base import ActionRunner, RunContext, RunResult
from st2common.util.process import kill_tree
from st2actionrunner.runners import KILL_GRACE, action_env, public_api_url, user_env, write_all

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600
MAX_RUNS = 100
MAX_IDLE_PER_KEY = 4
IDLE_TTL = 300.0
# After a kill, how long escaped children may keep the output pipes open before we stop reading.
PIPE_DRAIN_GRACE = 0.5
WRAPPER = Path(__file__).with_name("python_wrapper.py")
PLATFORM_ROOT = Path(st2common.__file__).resolve().parent.parent
INVALID_STATUS_EXIT_CODE = 220
_MARK = "\x1e\x1fst2-run-end:"


class PipeReader:
    """Reads one worker pipe across runs, keeping what was read past the point a run stopped at."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False

    def _fill(self) -> bool:
        data = os.read(self.fd, 65536) if not self.closed else b""
        if not data:
            self.close()
            return False
        self.buffer += data
        return True

    def read_until(self, marker: bytes, emit: Callable[[str], None]) -> bool:
        """Emit lines up to marker; True when the marker came, False at EOF."""
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                head, self.buffer = self.buffer[:index], self.buffer[index + len(marker):]
                self._emit_lines(head, emit, final=True)
                return True
            # Complete lines can go now; a partial one may be the start of the marker.
            cut = self.buffer.rfind(b"\n") + 1
            if cut:
                self._emit_lines(self.buffer[:cut], emit, final=False)
                self.buffer = self.buffer[cut:]
            if not self._fill():
                self._emit_lines(self.buffer, emit, final=True)
                self.buffer = b""
                return False

    def read_line(self) -> bytes | None:
        """One line without its newline, or None at EOF."""
        while True:
            index = self.buffer.find(b"\n")
            if index >= 0:
                line, self.buffer = self.buffer[:index], self.buffer[index + 1:]
                return line
            if not self._fill():
                return None

    @staticmethod
    def _emit_lines(data: bytes, emit: Callable[[str], None], final: bool) -> None:
        if not data:
            return
        lines = data.split(b"\n")
        tail = lines.pop()
        for line in lines:
            emit(line.decode("utf-8", "replace") + "\n")
        if tail and final:
            emit(tail.decode("utf-8", "replace"))

    def close(self) -> None:
        """Close the fd (once)."""
        if not self.closed:
            self.closed = True
            try:
                os.close(self.fd)
            except OSError:
                pass


class Worker:
    """One warm interpreter running python_wrapper.py for one pack."""

    def __init__(self, key: tuple, python: str, pack: str, env: dict[str, str]) -> None:
        self.key = key
        self._args = (key, python, pack, env)
        self.runs = 0
        self.last_used = time.monotonic()
        req_r, self._requests = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [python, "-u", str(WRAPPER), "--pack", pack, "--request-fd", str(req_r),
                 "--response-fd", str(resp_w)],
                pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                env=env, start_new_session=True,
            )
        except OSError as exc:
            for fd in (self._requests, resp_r, out_r, err_r):
                os.close(fd)
            raise RunnerError(f"cannot start a python worker with {python}: {exc}") from exc
        finally:
            for fd in (req_r, resp_w, out_w, err_w):
                os.close(fd)
        self.responses = PipeReader(resp_r)
        self.stdout = PipeReader(out_r)
        self.stderr = PipeReader(err_r)
        LOG.info("python worker %s started for pack %s with %s", self.proc.pid, pack, python)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def successor(self) -> "Worker":
        """A new worker like this one."""
        return Worker(*self._args)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, payload: bytes) -> None:
        """Write one request line."""
        if self._requests is None:
            raise BrokenPipeError("the worker's request pipe is closed")
        write_all(self._requests, payload)

    def kill(self) -> int:
        """Kill the worker and its children; its exit code."""
        kill_tree(self.pid, KILL_GRACE)
        return self.reap()

    def reap(self) -> int:
        """Wait for the (dying) worker to exit; its exit code."""
        delay = 0.0005
        while self.proc.poll() is None:
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        self._close_requests()
        return self.proc.returncode

    def retire(self) -> None:
        """Let an idle worker finish: EOF on its request pipe makes it exit; reap it in the background."""
        self._close_requests()
        threading.Thread(target=self._finish, name=f"retire-{self.pid}", daemon=True).start()

    def _finish(self) -> None:
        deadline = time.monotonic() + 5.0
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.kill()
        # Idle: no run is reading these pipes, so closing them here races with nobody.
        for reader in (self.responses, self.stdout, self.stderr):
            reader.close()
        LOG.info("python worker %s retired after %s runs", self.pid, self.runs)

    def _close_requests(self) -> None:
        if self._requests is not None:
            try:
                os.close(self._requests)
            except OSError:
                pass
            self._requests = None


class WorkerPool:
    """Idle warm workers by key; runs take one or start one, and hand it back when done."""

    def __init__(self, max_runs: int = MAX_RUNS, max_idle: int = MAX_IDLE_PER_KEY,
                 idle_ttl: float = IDLE_TTL) -> None:
        self.max_runs = max_runs
        self.max_idle = max_idle
        self.idle_ttl = idle_ttl
        self._idle: dict[tuple, list[Worker]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: tuple, spawn: Callable[[], Worker]) -> Worker:
        """An idle live worker for key, else a new one."""
        stale = []
        with self._lock:
            idle = self._idle.get(key, [])
            worker = None
            while idle:
                candidate = idle.pop()
                if candidate.alive():
                    worker = candidate
                    break
                stale.append(candidate)
            stale.extend(self._expired())
        for old in stale:
            old.retire()
        return worker or spawn()

    def release(self, worker: Worker) -> None:
        """Take a worker back after a run that ended normally."""
        worker.runs += 1
        worker.last_used = time.monotonic()
        worn_out = worker.runs >= self.max_runs
        with self._lock:
            idle = self._idle.setdefault(worker.key, [])
            if not worn_out and worker.alive() and len(idle) < self.max_idle:
                idle.append(worker)
                return
        worker.retire()
        if worn_out:
            # Start the replacement now: its interpreter boots while nobody waits for it.
            try:
                fresh = worker.successor()
            except RunnerError as exc:
                LOG.warning("could not start a replacement python worker: %s", exc)
                return
            with self._lock:
                self._idle.setdefault(fresh.key, []).append(fresh)

    def _expired(self) -> list[Worker]:
        now = time.monotonic()
        expired = []
        for key, idle in self._idle.items():
            keep = [w for w in idle if now - w.last_used < self.idle_ttl]
            expired.extend(w for w in idle if now - w.last_used >= self.idle_ttl)
            self._idle[key] = keep
        return expired

    def idle_count(self) -> int:
        """How many workers wait idle, over all keys."""
        with self._lock:
            return sum(len(idle) for idle in self._idle.values())

    def shutdown(self) -> None:
        """Stop every idle worker (busy ones are killed by their run's cancel or exit with their parent)."""
        with self._lock:
            workers = [w for idle in self._idle.values() for w in idle]
            self._idle.clear()
        for worker in workers:
            if worker.alive():
                worker.kill()


POOL = WorkerPool()


def shutdown_workers() -> None:
    """Stop the idle python workers; the action runner calls this when it stops."""
    POOL.shutdown()


atexit.register(shutdown_workers)


class PythonRunner(ActionRunner):
    """python-script: the pack's Action subclass, run(**parameters) in a warm worker."""

    name = "python-script"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        params = ctx.runner_parameters
        self.timeout = params.get("timeout", DEFAULT_TIMEOUT)
        self.env = {k: v for k, v in user_env(params.get("env")).items() if k.lower() != "pythonpath"}
        self.debug = bool(params.get("debug", False))
        self.log_level = params.get("log_level") or "DEBUG"
        if self.log_level == "DEBUG" and ctx.settings is not None:
            self.log_level = ctx.settings.actionrunner.python_runner_log_level
        self._cancel_requested = False
        self._wake = threading.Event()

    def pre_run(self) -> None:
        if self.ctx.runner_parameters.get("content_version"):
            raise RunnerError(f"action {self.ctx.action_ref}: content_version (git worktrees) is not supported",
                              field="content_version")
        path = self.ctx.entry_point_path
        if path is None:
            raise RunnerError(f'Action "{self.ctx.action_ref}" is missing entry_point attribute')
        if not path.is_file():
            raise RunnerError(f'action {self.ctx.action_ref}: entry point "{path}" does not exist',
                              path=str(path))

    def cancel(self) -> None:
        self._cancel_requested = True
        self._wake.set()

    def run(self) -> RunResult:
        marker = f"{_MARK}{uuid.uuid4().hex}\n"
        payload = self._payload({
            "id": self.ctx.execution_id,
            "file_path": str(self.ctx.entry_point_path),
            "parameters": self.ctx.action_parameters,
            "config": self.ctx.config,
            "config_path": self._config_path(),
            "log_level": self.log_level,
            "env": self._run_env(),
            "sys_path": [str(self.ctx.entry_point_path.parent)],
            "marker": marker,
        })
        python, pythonpath, worker_env = self._interpreter()
        key = (self.ctx.pack, python, pythonpath)
        worker = POOL.acquire(key, lambda: Worker(key, python, self.ctx.pack, worker_env))
        stdout: list[str] = []
        stderr: list[str] = []
        reply: dict[str, Any] = {}
        # Sending is one of the waited-for steps too: a stuck worker must not outlive the timeout.
        readers = [
            self._reader(lambda: worker.send(payload)),
            self._reader(lambda: worker.stdout.read_until(marker.encode(), self._emitter("stdout", stdout))),
            self._reader(lambda: worker.stderr.read_until(marker.encode(), self._emitter("stderr", stderr))),
            self._reader(lambda: reply.update(line=worker.responses.read_line())),
        ]
        outcome = self._wait(worker, readers)
        line = reply.get("line")
        if outcome is None and line is not None:
            POOL.release(worker)
            response = json.loads(line)
            exit_code = int(response["exit_code"])
        else:
            exit_code = worker.kill()
            response = {"status": None, "result": None}
            LOG.info("execution %s: python worker %s ended (%s), exit code %s",
                     self.ctx.execution_id, worker.pid, outcome or "died", exit_code)
        return self._result(outcome, exit_code, response, "".join(stdout), "".join(stderr))

    def _payload(self, request: dict[str, Any]) -> bytes:
        try:
            return json.dumps(request).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise RunnerError(f"action {self.ctx.action_ref}: parameters or config are not JSON: {exc}") from exc

    def _reader(self, target: Callable[[], Any]) -> threading.Thread:
        def read() -> None:
            try:
                target()
            except OSError as exc:
                # A dead worker shows as EOF or a broken pipe; its exit code tells the rest.
                LOG.warning("execution %s: talking to the python worker failed: %s", self.ctx.execution_id, exc)
            except Exception:
                # Never leave the run waiting on a step that died; the kill below cleans up.
                LOG.exception("execution %s: python worker exchange failed", self.ctx.execution_id)
            finally:
                self._wake.set()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def _emitter(self, stream: str, chunks: list[str]) -> Callable[[str], None]:
        def emit(line: str) -> None:
            chunks.append(line)
            try:
                self.ctx.output(stream, line)
            except Exception:
                LOG.exception("execution %s: output callback failed", self.ctx.execution_id)

        return emit

    def _wait(self, worker: Worker, readers: list[threading.Thread]) -> str | None:
        """Wait for the run's output and response; None, or "timeout"/"canceled" after killing the worker."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        outcome = None
        killed_at = None
        died_at = None
        while True:
            self._wake.clear()
            if not any(t.is_alive() for t in readers):
                return outcome
            now = time.monotonic()
            if killed_at is None and not worker.alive():
                # A worker that died mid-run (killed, crashed) leaves children holding its
                # output pipes open; they go with it, or the run would wait for them.
                died_at = died_at or now
                if now - died_at > PIPE_DRAIN_GRACE:
                    LOG.warning("execution %s: python worker %s died; killing what is left of it",
                                self.ctx.execution_id, worker.pid)
                    kill_tree(worker.pid, 0)
                    killed_at = now
            if outcome is None and self._cancel_requested:
                outcome = "canceled"
            elif outcome is None and deadline is not None and now >= deadline:
                outcome = "timeout"
            if outcome is not None and killed_at is None:
                LOG.info("execution %s: %s, killing python worker %s", self.ctx.execution_id, outcome,
                         worker.pid)
                kill_tree(worker.pid, KILL_GRACE)
                killed_at = time.monotonic()
            elif killed_at is not None and now - killed_at > PIPE_DRAIN_GRACE:
                return outcome
            wait = 0.05 if deadline is None or outcome else max(0.0, min(0.05, deadline - now))
            self._wake.wait(wait)

    def _result(self, outcome: str | None, exit_code: int, response: dict, stdout: str,
                stderr: str) -> RunResult:
        if exit_code == INVALID_STATUS_EXIT_CODE and outcome is None:
            raise RunnerError(response.get("error") or stderr, exit_code=exit_code)
        result = {"stdout": stdout, "stderr": stderr, "exit_code": exit_code, "result": response.get("result")}
        flag = response.get("status")
        if outcome == "canceled":
            status = statuses.CANCELED
        elif outcome == "timeout":
            status = statuses.TIMED_OUT
            result["exit_code"] = -9
            result["error"] = f"Action failed to complete in {self.timeout} seconds"
        elif exit_code == 0 and flag is not False:
            status = statuses.SUCCEEDED
        else:
            status = statuses.FAILED
        LOG.info("execution %s: python action %s -> %s", self.ctx.execution_id, self.ctx.action_ref, status)
        return RunResult(status, result)

    def _interpreter(self) -> tuple[str, tuple[str, ...], dict[str, str]]:
        """(python binary, PYTHONPATH entries, worker environment) for this pack."""
        settings = self.ctx.settings
        pack_path = self.ctx.pack_path or self.ctx.entry_point_path.parent.parent
        python = sys.executable
        path_dirs = [str(pack_path / "actions" / "lib")]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if settings is not None:
            if settings.packs.enable_common_libs:
                path_dirs.append(str(pack_path / "lib"))
            venv = Path(settings.base_path) / "virtualenvs" / self.ctx.pack
            if (venv / "bin" / "python").exists():
                python = str(venv / "bin" / "python")
                env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
                env["VIRTUAL_ENV"] = str(venv)
            elif settings.actionrunner.python_binary:
                python = str(settings.actionrunner.python_binary)
        path_dirs.append(str(PLATFORM_ROOT))
        env["PYTHONPATH"] = ":".join(path_dirs)
        return python, tuple(path_dirs), env

    def _run_env(self) -> dict[str, str]:
        env = dict(self.env)
        env.update(action_env(self.ctx, debug=self.debug))
        api_url = public_api_url(self.ctx.settings)
        if api_url:
            env["ST2_API_URL"] = api_url
        if self.ctx.auth_token:
            env["ST2_AUTH_TOKEN"] = self.ctx.auth_token
        return env

    def _config_path(self) -> str | None:
        settings = self.ctx.settings
        if settings is None:
            return None
        return str(Path(settings.content.configs_path) / f"{self.ctx.pack}.yaml")
