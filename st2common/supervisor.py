"""Running the platform's processes on one machine, for st2ctl.

Each service runs as ``<python> -m <service> --config-file <path>`` in a session
of its own, with stdout and stderr appended to var/log/<service>.log and its pid
in var/run/<service>.pid. The embedded database (nx-27017) is started the same
way through EmbeddedMongo and writes var/run/nx-27017.pid itself.

Stopping a service stops its whole family: everything in its session or process
group plus every descendant, because services spawn sensor and action
subprocesses, and an action may start a session of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from st2common.exceptions import DatabaseError, ServiceError
from st2common.log import log_path
from st2common.persistence.embedded import EmbeddedMongo
from st2common.service import READY, read_status, run_path, status_path
from st2common.util.process import pid_alive, read_pid

LOG = logging.getLogger(__name__)

# Start order; stop goes the other way. The API first, so it answers as soon as possible.
SERVICES = ("st2api", "st2sensorcontainer", "st2rulesengine", "st2actionrunner", "st2workflowengine")
DB_SERVER = "nx-27017"

# What identifies our process in /proc/<pid>/cmdline, so a recycled pid is never signalled.
# The database's second mark is how earlier releases started it (nx-27017's own server).
_CMDLINE_MARKS = {DB_SERVER: ("st2common.persistence.dbserver", "nx_27017")}


@dataclass(frozen=True)
class ProcessState:
    """What st2ctl status shows for one process."""

    name: str
    pid: int | None
    state: str  # ready, running, stopped or dead
    detail: str = ""


def brief(problem: str) -> str:
    """A dependency error cut to its first clause (pymongo appends its whole topology)."""
    for cut in (" (configured timeouts", ", Timeout:"):
        problem = problem.split(cut)[0]
    return problem if len(problem) <= 240 else problem[:237] + "..."


def pid_file(settings, name: str) -> Path:
    """var/run/<name>.pid."""
    return run_path(settings) / f"{name}.pid"


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def is_ours(pid: int, name: str) -> bool:
    """True when pid is alive and runs name (where /proc can tell)."""
    if not pid_alive(pid):
        return False
    cmdline = _cmdline(pid)
    return cmdline is None or any(mark in cmdline for mark in _CMDLINE_MARKS.get(name, (name,)))


def running_pid(settings, name: str) -> int | None:
    """The pid of name from its pid file when that process is alive and is name."""
    pid = read_pid(pid_file(settings, name))
    return pid if pid is not None and is_ours(pid, name) else None


def remove_stale_pid_file(settings, name: str) -> bool:
    """Delete the pid file of a process that is gone; True if there was one."""
    path = pid_file(settings, name)
    if path.exists() and running_pid(settings, name) is None:
        path.unlink(missing_ok=True)
        return True
    return False


# -- services ---------------------------------------------------------------------------

def launch(settings, name: str) -> subprocess.Popen:
    """Start one service in a new session, appending its output to its log file."""
    log_file = log_path(settings, name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    run_path(settings).mkdir(parents=True, exist_ok=True)
    # A status left by an earlier run must not pass for this one's.
    status_path(settings, name).unlink(missing_ok=True)
    command = [sys.executable, "-m", name]
    if settings.path is not None:
        command += ["--config-file", str(settings.path)]
    with open(log_file, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, close_fds=True)
    pid_file(settings, name).write_text(f"{process.pid}\n")
    LOG.info("launched %s (pid %d)", name, process.pid)
    return process


def _last_log_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")


def wait_ready(settings, processes: dict[str, subprocess.Popen | int], timeout: float) -> dict[str, str]:
    """Wait until each service reports ready; {service: why not} for those that did not."""
    pending = dict(processes)
    problems: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for name, proc in list(pending.items()):
            pid = proc.pid if isinstance(proc, subprocess.Popen) else proc
            status = read_status(settings, name)
            if status and status.get("pid") == pid and status.get("state") == READY:
                del pending[name]
                continue
            code = proc.poll() if isinstance(proc, subprocess.Popen) else (None if pid_alive(pid) else "?")
            if code is not None:
                del pending[name]
                problems[name] = _describe(settings, name, status, pid, f"exited with code {code}")
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for name, proc in pending.items():
        pid = proc.pid if isinstance(proc, subprocess.Popen) else proc
        problems[name] = _describe(settings, name, read_status(settings, name), pid,
                                   f"not ready after {timeout:g}s")
    return problems


def _describe(settings, name: str, status: dict | None, pid: int, what: str) -> str:
    log_file = log_path(settings, name)
    if status and status.get("pid") == pid:
        state = f"state {status.get('state')}"
        if status.get("detail"):
            state += f": {brief(status['detail'])}"
    else:
        state = "no status reported"
        last = _last_log_line(log_file)
        if last and "exited" in what:
            state += f"; last log line: {last}"
    return f"{name} {what} ({state}); see {log_file}"


def service_state(settings, name: str) -> ProcessState:
    """The state of one service from its pid and status files."""
    path = pid_file(settings, name)
    pid = read_pid(path)
    if pid is None:
        return ProcessState(name, None, "stopped")
    status = read_status(settings, name)
    if not is_ours(pid, name):
        last = ""
        if status and status.get("pid") == pid and status.get("detail"):
            last = f" (last state {status.get('state')}: {brief(status['detail'])})"
        return ProcessState(name, pid, "dead", f"process gone, stale pid file {path}{last}")
    if status is None or status.get("pid") != pid:
        return ProcessState(name, pid, "running", "no status reported yet")
    if status.get("state") == READY:
        return ProcessState(name, pid, "ready")
    detail = status.get("state", "?") + (f": {brief(status['detail'])}" if status.get("detail") else "")
    return ProcessState(name, pid, "running", detail)


# -- the embedded database --------------------------------------------------------------

def embedded_server(settings) -> EmbeddedMongo:
    """The nx-27017 server for [database] embedded, on the configured host and port."""
    parts = urlsplit(settings.database_url())
    server = EmbeddedMongo(settings.database.embedded_path, parts.port or 27017, run_path(settings),
                           host=parts.hostname or "127.0.0.1")
    # In the foreground nx-27017 logs to stderr as well as to --log-file; keep one copy,
    # the stderr one, which also catches tracebacks.
    server.log_file = Path(os.devnull)
    return server


def start_database(settings, timeout: float) -> tuple[int, bool]:
    """Start the embedded server unless it runs; (pid, True if started now). Raises DatabaseError."""
    server = embedded_server(settings)
    log_file = log_path(settings, DB_SERVER)
    pid = running_pid(settings, DB_SERVER)
    if pid is not None:
        server.wait_ready(timeout)
        return pid, False
    remove_stale_pid_file(settings, DB_SERVER)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        try:
            pid = server.start(timeout=timeout, stdout=out)
        except DatabaseError as exc:
            if server.process is not None and server.process.poll() is None:
                stop_families({DB_SERVER: server.process.pid}, grace=2.0)
            # EmbeddedMongo names its --log-file, which is /dev/null here; point at the real log.
            raise DatabaseError(f"{str(exc).split('; see ')[0]}; see {log_file}") from exc
    return pid, True


def database_state(settings) -> ProcessState:
    """The state of the embedded server: ready when it answers."""
    server = embedded_server(settings)
    path = pid_file(settings, DB_SERVER)
    pid = read_pid(path)
    if pid is None:
        return ProcessState(DB_SERVER, None, "stopped")
    if not is_ours(pid, DB_SERVER):
        return ProcessState(DB_SERVER, pid, "dead", f"process gone, stale pid file {path}")
    if server.ping(timeout_ms=1000):
        return ProcessState(DB_SERVER, pid, "ready", server.url)
    return ProcessState(DB_SERVER, pid, "running", f"{server.url} does not answer")


# -- stopping ---------------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, int, int]] | None:
    """{pid: (ppid, pgrp, session)} of every live, non-zombie process; None without /proc."""
    if not os.path.isdir("/proc/self"):
        return None
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _family(table: dict[int, tuple[int, int, int]], leader: int) -> set[int]:
    members = {pid for pid, (_, pgrp, sid) in table.items() if leader in (pid, pgrp, sid)}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)
    return members


def _signal(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(known: dict[str, set[int]], leaders: dict[str, int]) -> dict[str, set[int]]:
    table = _process_table()
    if table is None:
        return {name: ({pid} if pid_alive(pid) else set()) for name, pid in leaders.items()}
    for name, leader in leaders.items():
        known[name] |= _family(table, leader)
    return {name: {pid for pid in pids if pid in table} for name, pids in known.items()}


def stop_families(leaders: dict[str, int], grace: float = 10.0) -> list[str]:
    """SIGTERM each leader, then its leftover family; SIGKILL what remains after grace. Names killed."""
    known: dict[str, set[int]] = {name: set() for name in leaders}
    _alive(known, leaders)  # remember each family before its leader dies and orphans reparent
    # The leader stops its own children in order; the rest are only told once it is gone.
    _signal(leaders.values(), signal.SIGTERM)
    told: set[str] = set()
    deadline = time.monotonic() + grace
    while True:
        alive = _alive(known, leaders)
        if not any(alive.values()) or time.monotonic() >= deadline:
            break
        for name, pids in alive.items():
            if pids and leaders[name] not in pids and name not in told:
                _signal(pids, signal.SIGTERM)
                told.add(name)
        time.sleep(0.05)
    killed = [name for name, pids in alive.items() if pids]
    for name in killed:
        LOG.warning("%s did not stop within %gs; killing pids %s", name, grace, sorted(alive[name]))
        _signal(alive[name], signal.SIGKILL)
        try:
            os.killpg(leaders[name], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5.0
    while any(_alive(known, leaders).values()):
        if time.monotonic() >= deadline:
            left = {name: sorted(pids) for name, pids in _alive(known, leaders).items() if pids}
            raise ServiceError(f"processes survived SIGKILL: {left}")
        time.sleep(0.02)
    return killed


def stop(settings, names: list[str], grace: float = 10.0) -> dict[str, str]:
    """Stop the named processes (services and/or the db server); {name: what happened}."""
    leaders: dict[str, int] = {}
    outcome: dict[str, str] = {}
    for name in names:
        pid = running_pid(settings, name)
        if pid is not None:
            leaders[name] = pid
        elif remove_stale_pid_file(settings, name):
            outcome[name] = "was not running (removed stale pid file)"
        else:
            outcome[name] = "was not running"
    killed = stop_families(leaders, grace) if leaders else []
    for name, pid in leaders.items():
        outcome[name] = f"killed after {grace:g}s (pid {pid})" if name in killed else f"stopped (pid {pid})"
        pid_file(settings, name).unlink(missing_ok=True)
    return outcome
