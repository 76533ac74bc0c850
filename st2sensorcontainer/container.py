"""The sensor container: every enabled sensor type in its own process, kept running.

Datasheet:

- Each enabled SensorTypeDB runs as ``python -m st2sensorcontainer.wrapper``
  (the pack's virtualenv Python when ``<base_path>/virtualenvs/<pack>`` has
  one), with the container's settings passed as ``ST2_<SECTION>__<OPTION>``
  variables and the sensor's output relayed into the container's log.
- Every start dispatches ``core.st2.sensor.process_spawn`` ``{id, timestamp,
  pid, cmd}`` and every exit ``core.st2.sensor.process_exit`` ``{id,
  timestamp, exit_code}``, with the sensor's ref as ``id``, as StackStorm does.
- A non-zero exit is respawned after ``respawn_delay * n`` seconds, at most
  ``max_respawns`` times in a row; the count starts again once a sensor stayed
  up ``reset_after`` seconds (StackStorm: 2.5 s, 2, 10 s). Exit 0 is left
  alone. A class that cannot be imported is logged with its pack, file and
  error and not respawned; the other sensors go on.
- Sensor type events on the ``sensor`` exchange (enable, disable, register,
  delete) start, stop or restart that sensor live.
- Stop: SIGTERM every sensor (the wrapper calls ``cleanup()``), SIGKILL the
  process trees still there after ``stop_grace`` seconds.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eventlet

from st2common.config import OPTIONS, PATH, PATHS, REPO_ROOT
from st2common.exceptions import StackStormBaseException
from st2common.models.db.sensor import SensorTypeDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import triggerinstances, triggertypes
from st2common.transport.connection import make_connection
from st2common.transport.consumer import Consumer, Handler, run_in_background
from st2common.transport.publisher import Publisher
from st2common.util.process import kill_tree

LOG = logging.getLogger(__name__)

# Sensor process states, as container.state(ref) reports them.
RUNNING, RESPAWNING, EXITED, FAILED, STOPPED = "running", "respawning", "exited", "failed", "stopped"

READY_TIMEOUT = 30.0
# What a wrapper whose sensor class cannot be imported or built exits with (never respawned), and the
# prefix of the one stderr line that says why.
LOAD_FAILED_EXIT_CODE = 3
LOAD_ERROR_PREFIX = "sensor load error: "
# Lines of a sensor's output kept to explain its exit.
OUTPUT_TAIL = 50
_LEVELS = {name: level for name, level in logging.getLevelNamesMapping().items() if name != "NOTSET"}


@dataclass(frozen=True)
class SensorSpec:
    """What a sensor process is started from; a changed spec means a restart."""

    id: str
    ref: str
    pack: str
    class_name: str
    file_path: str
    trigger_types: tuple[str, ...]
    poll_interval: int | None

    @classmethod
    def from_doc(cls, doc: SensorTypeDB) -> "SensorSpec":
        """The spec of a stored sensor type."""
        uri = doc.artifact_uri or ""
        return cls(id=str(doc.pk), ref=doc.ref, pack=doc.pack, class_name=doc.class_name,
                   file_path=uri[len("file://"):] if uri.startswith("file://") else uri,
                   trigger_types=tuple(doc.trigger_types or ()), poll_interval=doc.poll_interval)


@dataclass(eq=False)
class SensorProcess:
    """One sensor under supervision: its current process, state and respawn count."""

    spec: SensorSpec
    state: str = RUNNING
    process: subprocess.Popen | None = None
    respawns: int = 0
    stopping: bool = False
    thread: Any = None
    wake: threading.Event = field(default_factory=lambda: threading.Event())
    output: collections.deque = field(default_factory=lambda: collections.deque(maxlen=OUTPUT_TAIL))

    @property
    def active(self) -> bool:
        """True while it runs or waits to be respawned."""
        return self.thread is not None and not self.thread.dead


def settings_env(settings) -> dict[str, str]:
    """Every setting as an ST2_<SECTION>__<OPTION> variable, so a child process loads the same settings."""
    env: dict[str, str] = {}
    for section, options in OPTIONS.items():
        values = getattr(settings, section)
        for option, spec in options.items():
            value = getattr(values, option)
            if value is None:
                if spec.kind == PATH:
                    env[f"ST2_{section.upper()}__{option.upper()}"] = ""
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (tuple, list)):
                text = (":" if spec.kind == PATHS else ",").join(str(item) for item in value)
            else:
                text = str(value)
            env[f"ST2_{section.upper()}__{option.upper()}"] = text
    return env


class SensorWatcher(Handler):
    """Sensor type create/update/delete events -> start, stop or restart that sensor."""

    def __init__(self, container: "SensorContainer") -> None:
        self.container = container
        self.queue = container.publisher.topology.broadcast_queue("sensor")

    def handle(self, body: dict[str, Any]) -> None:
        sensor_id = body.get("id")
        if sensor_id:
            self.container.refresh(str(sensor_id))


class SensorContainer:
    """Runs, respawns and stops the sensor processes of one container service."""

    def __init__(self, settings, publisher: Publisher, respawn_delay: float = 2.5, max_respawns: int = 2,
                 reset_after: float = 10.0, stop_grace: float = 5.0) -> None:
        self.settings = settings
        self.publisher = publisher
        self.respawn_delay = respawn_delay
        self.max_respawns = max_respawns
        self.reset_after = reset_after
        self.stop_grace = stop_grace
        self.sensors: dict[str, SensorProcess] = {}
        self._lock = threading.RLock()
        self._stopped = False
        self._env = settings_env(settings)
        self.consumer = Consumer(make_connection(settings.messaging), publisher, [SensorWatcher(self)],
                                 max_redeliveries=settings.messaging.max_redeliveries, pool_size=4)
        self._consumer_thread = None

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch sensor type events, then start every enabled sensor; returns once they are spawned."""
        triggerinstances.configure(self.settings)
        # process_spawn and process_exit must exist before the first sensor starts.
        triggertypes.register_system_trigger_types(self.publisher)
        self._consumer_thread = run_in_background(self.consumer)
        if not self.consumer.wait_ready(READY_TIMEOUT):
            LOG.warning("sensor watcher not ready after %.0f s; enable/disable may be missed", READY_TIMEOUT)
        docs = Access(SensorTypeDB).query({"enabled": True}, order_by=("ref",))
        LOG.info("starting %d enabled sensors", len(docs))
        for doc in docs:
            self.refresh(str(doc.pk))

    def stop(self) -> None:
        """Stop watching, SIGTERM every sensor, SIGKILL what is left after the grace period (once)."""
        if self._stopped:
            return
        self._stopped = True
        self.consumer.stop()
        with self._lock:
            entries = list(self.sensors.values())
        self._terminate(entries)
        if self._consumer_thread is not None:
            self._consumer_thread.wait()

    def state(self, ref: str) -> str | None:
        """The state of a sensor (running, respawning, exited, failed, stopped), or None if never started."""
        entry = self.sensors.get(ref)
        return entry.state if entry is not None else None

    def pid(self, ref: str) -> int | None:
        """The pid of a sensor's running process, or None."""
        entry = self.sensors.get(ref)
        process = entry.process if entry is not None else None
        return process.pid if process is not None and process.poll() is None else None

    # -- sensor types -----------------------------------------------------------------------

    def refresh(self, sensor_id: str) -> None:
        """Bring one sensor type's process in line with its record: start, stop or restart it."""
        if self._stopped:
            return
        oid = to_object_id(sensor_id)
        # Read under the lock: two events for one sensor must be applied in the order their reads saw.
        with self._lock:
            doc = Access(SensorTypeDB).get(id=oid) if oid is not None else None
            entry = next((e for e in self.sensors.values() if e.spec.id == sensor_id), None)
            if doc is None or not doc.enabled:
                if entry is not None and entry.active:
                    LOG.info("sensor %s is %s; stopping it", entry.spec.ref, "disabled" if doc else "deleted")
                    self._terminate([entry])
                return
            spec = SensorSpec.from_doc(doc)
            if entry is not None and entry.active:
                if entry.spec == spec:
                    return
                LOG.info("sensor %s changed; restarting it", spec.ref)
                self._terminate([entry])
            if self._stopped:
                return
            entry = SensorProcess(spec)
            self.sensors[spec.ref] = entry
            entry.thread = eventlet.spawn(self._supervise, entry)

    # -- one sensor -------------------------------------------------------------------------

    def command(self, spec: SensorSpec) -> list[str]:
        """The wrapper command line of a sensor, as StackStorm's container builds it."""
        venv_python = Path(self.settings.base_path) / "virtualenvs" / spec.pack / "bin" / "python"
        python = str(venv_python) if venv_python.exists() else sys.executable
        args = [python, "-m", "st2sensorcontainer.wrapper", "--pack", spec.pack, "--file-path", spec.file_path,
                "--class-name", spec.class_name, "--trigger-type-refs", ",".join(spec.trigger_types)]
        if spec.poll_interval:
            args += ["--poll-interval", str(spec.poll_interval)]
        if self.settings.path is not None:
            args += ["--config-file", str(self.settings.path)]
        return args

    def _environment(self, spec: SensorSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not (k.startswith("ST2_") and "__" in k)}
        env.update(self._env)
        paths = [str(REPO_ROOT)]
        if self.settings.packs.enable_common_libs:
            paths.insert(0, str(Path(spec.file_path).parent.parent / "lib"))
        env["PYTHONPATH"] = ":".join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _supervise(self, entry: SensorProcess) -> None:
        try:
            self._keep_running(entry)
        except Exception:  # a bug here must not leave the sensor looking alive
            LOG.exception("supervising sensor %s failed; it is no longer watched", entry.spec.ref)
            entry.state = FAILED

    def _keep_running(self, entry: SensorProcess) -> None:
        """Run the sensor, respawning it after a crash as the policy allows, until it is stopped or given up."""
        spec = entry.spec
        while not entry.stopping:
            started = time.monotonic()
            code = self._run_once(entry)
            if code is None or entry.stopping:
                break
            if code == 0:
                LOG.info("sensor %s exited normally; not respawning it", spec.ref)
                entry.state = EXITED
                return
            if code == LOAD_FAILED_EXIT_CODE:
                LOG.error("sensor %s of pack %s cannot be loaded from %s: %s; the other sensors keep running",
                          spec.ref, spec.pack, spec.file_path, self._load_error(entry))
                entry.state = FAILED
                return
            if time.monotonic() - started >= self.reset_after:
                entry.respawns = 0
            if entry.respawns >= self.max_respawns:
                LOG.error("sensor %s exited with code %d after %d respawns; giving up", spec.ref, code,
                          entry.respawns)
                entry.state = FAILED
                return
            entry.respawns += 1
            delay = self.respawn_delay * entry.respawns
            LOG.warning("sensor %s exited with code %d; respawning in %.1f s (respawn %d of %d)", spec.ref, code,
                        delay, entry.respawns, self.max_respawns)
            entry.state = RESPAWNING
            entry.wake.wait(delay)
        entry.state = STOPPED

    def _run_once(self, entry: SensorProcess) -> int | None:
        """Start the sensor's process and wait for it to exit; its exit code, or None if it did not start."""
        spec = entry.spec
        args = self.command(spec)
        try:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env=self._environment(spec),
                                       start_new_session=True)
        except OSError as exc:
            LOG.error("sensor %s of pack %s cannot be started (%s): %s", spec.ref, spec.pack, args[0], exc)
            entry.state = FAILED
            return None
        entry.process = process
        entry.state = RUNNING
        if entry.stopping:
            # Stopped while this process was being started: _terminate did not know its pid yet.
            process.terminate()
        cmd = shlex.join(args)
        LOG.info("sensor %s started (pid %d): %s", spec.ref, process.pid, cmd)
        self._dispatch(triggertypes.SENSOR_SPAWN_TRIGGER_REF,
                       {"id": spec.ref, "timestamp": int(time.time()), "pid": process.pid, "cmd": cmd})
        reader = eventlet.spawn(self._relay, entry, process)
        code = process.wait()
        with eventlet.Timeout(1.0, False):
            reader.wait()
        LOG.info("sensor %s (pid %d) exited with code %d", spec.ref, process.pid, code)
        self._dispatch(triggertypes.SENSOR_EXIT_TRIGGER_REF,
                       {"id": spec.ref, "timestamp": int(time.time()), "exit_code": code})
        return code

    def _relay(self, entry: SensorProcess, process: subprocess.Popen) -> None:
        """Copy the sensor's output lines into the container's log at the level each line names."""
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            entry.output.append(line)
            word, _, rest = line.partition(" ")
            level = _LEVELS.get(word)
            LOG.log(level or logging.INFO, "sensor %s (pid %d): %s", entry.spec.ref, process.pid,
                    rest if level else line)
        process.stdout.close()

    @staticmethod
    def _load_error(entry: SensorProcess) -> str:
        for line in reversed(entry.output):
            if line.startswith(LOAD_ERROR_PREFIX):
                return line[len(LOAD_ERROR_PREFIX):]
        return entry.output[-1] if entry.output else "no output"

    def _dispatch(self, trigger_ref: str, payload: dict[str, Any]) -> None:
        try:
            triggerinstances.dispatch(self.publisher, trigger_ref, payload)
        except StackStormBaseException as exc:
            LOG.warning("cannot dispatch %s for sensor %s: %s", trigger_ref, payload.get("id"), exc)

    def _terminate(self, entries: list[SensorProcess]) -> None:
        """SIGTERM the sensors' processes, SIGKILL their trees after the grace period, wait for them."""
        for entry in entries:
            entry.stopping = True
            entry.wake.set()
            process = entry.process
            if process is not None and process.poll() is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.stop_grace
        for entry in entries:
            if entry.thread is None:
                continue
            with eventlet.Timeout(max(0.0, deadline - time.monotonic()), False):
                entry.thread.wait()
            if not entry.thread.dead and entry.process is not None:
                LOG.warning("sensor %s (pid %d) did not stop in %.1f s; killing it", entry.spec.ref,
                            entry.process.pid, self.stop_grace)
                kill_tree(entry.process.pid, grace=0)
                entry.thread.wait()
            entry.state = STOPPED
