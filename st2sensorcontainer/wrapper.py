"""One sensor's process: ``python -m st2sensorcontainer.wrapper --pack P --file-path F --class-name C``.

Datasheet:

- Arguments as StackStorm's sensor_wrapper.py takes them: ``--pack``,
  ``--file-path`` (the sensor's Python file), ``--class-name``,
  ``--trigger-type-refs`` (comma list), ``--poll-interval`` (PollingSensors),
  plus ``--config-file``; the container passes every setting it runs with
  as ``ST2_<SECTION>__<OPTION>`` variables, so the sensor sees the same
  database and bus.
- ``st2reactor.sensor.base`` is made an alias of st2sensorcontainer.base
  before the pack file is imported, so StackStorm pack code works unchanged.
- Life: import the class, build the sensor service and the instance (with the
  pack config, resolved as for actions by st2common.services.configs), start watching the trigger
  exchange, ``setup()``, ``add_trigger()`` for each existing trigger of the
  sensor's trigger types, then ``run()``. Trigger create/update/delete events
  become ``add_trigger`` / ``update_trigger`` / ``remove_trigger`` with the
  TriggerAPI dict (``remove_trigger`` only for triggers the sensor was given).
  SIGTERM (or the container dying) stops ``run()`` and calls ``cleanup()``.
- Exit codes: 0 stopped or ``run()`` returned; 1 ``setup()`` or ``run()``
  raised (the container respawns it); the container's LOAD_FAILED_EXIT_CODE
  when the class could not be imported or built (not respawned), with one
  stderr line starting with its LOAD_ERROR_PREFIX saying why.
- Log lines go to stderr as ``LEVEL logger [-] message``; the container relays
  them into its own log at the same level.
"""

import warnings

with warnings.catch_warnings():
    # eventlet is the chosen stack; its deprecation notice is not news in every sensor's log.
    warnings.simplefilter("ignore")
    import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


from st2common import config, log  # noqa: E402
from st2common.exceptions import ConfigError, DatabaseError, StackStormBaseException  # noqa: E402
from st2common.models.api.trigger import trigger_to_api  # noqa: E402
from st2common.models.db.trigger import TriggerDB  # noqa: E402
from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.access import Access, to_object_id  # noqa: E402
from st2common.services import configs, triggerinstances, triggers  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.consumer import Consumer, Handler, run_in_background  # noqa: E402
from st2common.transport.publisher import Publisher  # noqa: E402
from st2common.transport.topology import Topology  # noqa: E402
from st2sensorcontainer import base  # noqa: E402
from st2sensorcontainer.container import LOAD_ERROR_PREFIX, LOAD_FAILED_EXIT_CODE  # noqa: E402
from st2sensorcontainer.sensor_service import SensorService  # noqa: E402

# Named after the module even when it runs as __main__ (python -m), so its log lines say who speaks.
LOG = logging.getLogger("st2sensorcontainer.wrapper" if __name__ == "__main__" else __name__)

LOG_FORMAT = "%(levelname)s %(name)s [-] %(message)s"
ALIAS = "st2reactor.sensor.base"
# How long to wait for the database and for the trigger watcher at start.
CONNECT_TIMEOUT = 30.0
# How often the main loop looks for a stop request and for a dead parent.
CHECK_INTERVAL = 0.05


class SensorLoadError(Exception):
    """The sensor class could not be imported or instantiated."""


def install_alias() -> None:
    """Make ``st2reactor.sensor.base`` import st2sensorcontainer.base (STYLE.md section 4, decision 1)."""
    parent = None
    for name in ("st2reactor", "st2reactor.sensor"):
        module = sys.modules.get(name)
        if module is None:
            module = types.ModuleType(name, "Alias package for StackStorm pack code (st2sensorcontainer).")
            module.__path__ = []
            sys.modules[name] = module
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], module)
        parent = module
    sys.modules[ALIAS] = base
    parent.base = base


def load_sensor_class(file_path: str, class_name: str) -> type:
    """The class named class_name in the sensor file; SensorLoadError with the cause."""
    path = Path(file_path)
    if not path.is_file():
        raise SensorLoadError(f'sensor file "{path}" does not exist')
    # StackStorm puts the sensor's folder first on sys.path, so sibling modules import.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    # Named after the file, as StackStorm's loader names it, unless that would shadow a loaded module.
    module_name = path.stem if path.stem not in sys.modules else f"st2sensor_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        raise SensorLoadError(f"{type(exc).__name__}: {exc}") from exc
    found = getattr(module, class_name, None)
    if not inspect.isclass(found):
        raise SensorLoadError(f'file "{path}" has no class "{class_name}"')
    if not issubclass(found, base.BaseSensor):
        raise SensorLoadError(f'class "{class_name}" in "{path}" does not derive from '
                              f"st2reactor.sensor.base.Sensor or PollingSensor")
    return found


def load_pack_config(settings, pack: str, pack_path: Path) -> dict[str, Any]:
    """The pack's resolved config (st2common.services.configs); SensorLoadError when it fails validation."""
    try:
        return configs.load(pack, settings.system_user.user, settings).values
    except StackStormBaseException as exc:
        raise SensorLoadError(f"the config of pack {pack} cannot be used: {exc}") from exc


def build_sensor(sensor_class: type, service: SensorService, sensor_config: dict,
                 poll_interval: float | None) -> base.BaseSensor:
    """An instance of the sensor class; SensorLoadError when its constructor fails."""
    kwargs: dict[str, Any] = {"sensor_service": service, "config": sensor_config}
    if poll_interval and issubclass(sensor_class, base.PollingSensor):
        kwargs["poll_interval"] = poll_interval
    try:
        return sensor_class(**kwargs)
    except Exception as exc:
        raise SensorLoadError(f"cannot instantiate {sensor_class.__name__}: {type(exc).__name__}: {exc}") from exc


class TriggerWatcher(Handler):
    """Trigger events for the sensor's trigger types -> add_trigger / update_trigger / remove_trigger.

    Events carry only an id, so each one is reconciled against the stored
    trigger: new to the sensor -> add, changed -> update, gone -> remove. That
    makes redelivered or reordered events harmless.
    """

    def __init__(self, topology: Topology, sensor: base.BaseSensor, trigger_types: list[str]) -> None:
        self.queue = topology.broadcast_queue("trigger")
        self.sensor = sensor
        self.trigger_types = set(trigger_types)
        self.known: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def handle(self, body: dict[str, Any]) -> None:
        trigger_id = str(body.get("id") or "")
        if to_object_id(trigger_id) is None:
            return
        with self._lock:
            self._reconcile(trigger_id, Access(TriggerDB).get(id=to_object_id(trigger_id)))

    def load_existing(self) -> None:
        """add_trigger() for every stored trigger of the sensor's types."""
        if not self.trigger_types:
            return
        for doc in Access(TriggerDB).query(raw={"type": {"$in": sorted(self.trigger_types)}}):
            with self._lock:
                self._reconcile(str(doc.pk), doc)

    def _reconcile(self, trigger_id: str, doc: TriggerDB | None) -> None:
        current = trigger_to_api(doc) if doc is not None and doc.type in self.trigger_types else None
        previous = self.known.get(trigger_id)
        if current is None:
            if previous is not None:
                del self.known[trigger_id]
                self._call("remove_trigger", previous)
            return
        self.known[trigger_id] = current
        if previous is None:
            self._call("add_trigger", current)
        elif previous != current:
            self._call("update_trigger", current)

    def _call(self, hook: str, trigger: dict[str, Any]) -> None:
        LOG.info("%s(%s)", hook, trigger["ref"])
        try:
            getattr(self.sensor, hook)(trigger)
        except Exception:  # a sensor's bug in one hook must not stop the others
            LOG.exception("%s(%s) raised", hook, trigger["ref"])


class StopRequest:
    """Set by SIGTERM/SIGINT (it is the signal handler), or when the container is gone."""

    def __init__(self) -> None:
        self.requested = False
        self._parent = os.getppid()

    def __call__(self, signum: int | None = None, _frame: Any = None) -> None:
        self.requested = True

    def check(self) -> bool:
        """True once a stop is asked for; an orphaned sensor (its container died) asks for one itself."""
        if not self.requested and os.getppid() != self._parent:
            LOG.warning("the sensor container (pid %d) is gone; stopping", self._parent)
            self.requested = True
        return self.requested


class SensorWrapper:
    """Runs one sensor instance: watcher, setup, run, cleanup."""

    def __init__(self, settings, publisher: Publisher, sensor: base.BaseSensor, trigger_types: list[str],
                 stop: StopRequest) -> None:
        self.settings = settings
        self.sensor = sensor
        self.stop = stop
        self.watcher = TriggerWatcher(publisher.topology, sensor, trigger_types)
        # The trigger lookups of dispatch are forgotten when a trigger or type changes anywhere.
        handlers = [self.watcher, *triggers.lookup_handlers(publisher.topology)]
        self.consumer = Consumer(make_connection(settings.messaging), publisher, handlers,
                                 max_redeliveries=settings.messaging.max_redeliveries, pool_size=1)

    def run(self) -> int:
        """Set the sensor up and run it until it returns, fails or is stopped; the exit code."""
        consumer_thread = run_in_background(self.consumer)
        if not self.consumer.wait_ready(CONNECT_TIMEOUT):
            LOG.warning("trigger watcher not ready after %.0f s; triggers may arrive late", CONNECT_TIMEOUT)
        else:
            triggers.LOOKUPS.watch()
        try:
            return self._run_sensor()
        finally:
            self.consumer.stop()
            consumer_thread.wait()

    def _run_sensor(self) -> int:
        name = type(self.sensor).__name__
        LOG.info("running sensor initialization code")
        try:
            self.sensor.setup()
        except Exception:
            LOG.exception("sensor %s setup() raised", name)
            return 1
        self.watcher.load_existing()
        if isinstance(self.sensor, base.PollingSensor):
            LOG.info("running sensor in active mode (poll interval=%ss)", self.sensor.get_poll_interval())
        else:
            LOG.info("running sensor in passive mode")
        runner = eventlet.spawn(self._guarded_run, name)
        while not runner.dead and not self.stop.check():
            eventlet.sleep(CHECK_INTERVAL)
        if not runner.dead:
            LOG.info("stopping sensor %s", name)
            if isinstance(self.sensor, base.PollingSensor):
                self.sensor.stop()
            self._cleanup(name)
            runner.kill()
            return 0
        failed = runner.wait()
        if not failed:
            LOG.info("sensor %s run method returned", name)
        self._cleanup(name)
        return 1 if failed else 0

    def _guarded_run(self, name: str) -> bool:
        """sensor.run(); True when it raised (logged here rather than by the hub)."""
        try:
            self.sensor.run()
        except Exception:
            LOG.exception("sensor %s run method raised an exception", name)
            return True
        return False

    def _cleanup(self, name: str) -> None:
        try:
            self.sensor.cleanup()
        except Exception:
            LOG.exception("sensor %s cleanup() raised", name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """StackStorm's sensor_wrapper.py arguments, plus --config-file."""
    parser = argparse.ArgumentParser(prog="st2sensorcontainer.wrapper", description="Run one pack sensor.")
    parser.add_argument("--pack", required=True)
    parser.add_argument("--file-path", required=True)
    parser.add_argument("--class-name", required=True)
    parser.add_argument("--trigger-type-refs", default="")
    parser.add_argument("--poll-interval", type=float, default=None)
    parser.add_argument("--config-file", default=None)
    return parser.parse_args(argv)


def _report_load_failure(args: argparse.Namespace, error: Exception) -> int:
    LOG.error("cannot load sensor class %s of pack %s from %s: %s", args.class_name, args.pack, args.file_path,
              error, exc_info=error.__cause__ or error)
    sys.stderr.write(f"{LOAD_ERROR_PREFIX}{error}\n")
    sys.stderr.flush()
    return LOAD_FAILED_EXIT_CODE


def main(argv: list[str] | None = None) -> int:
    """Run the sensor named on the command line; the exit code."""
    args = parse_args(argv)
    # Before anything slow: a stop asked for while the sensor starts ends it cleanly.
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        settings = config.load(args.config_file)
    except ConfigError as exc:
        sys.stderr.write(f"sensor {args.pack}.{args.class_name}: configuration error: {exc}\n")
        return 1
    log.setup(f"sensor.{args.pack}.{args.class_name}", settings)
    triggerinstances.configure(settings)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    install_alias()
    try:
        sensor_class = load_sensor_class(args.file_path, args.class_name)
    except SensorLoadError as exc:
        return _report_load_failure(args, exc)
    if stop.check():
        return 0
    try:
        database.connect(settings, retry_for=CONNECT_TIMEOUT)
    except DatabaseError as exc:
        LOG.error("sensor %s.%s cannot start: %s", args.pack, args.class_name, exc)
        return 1
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    try:
        service = SensorService(settings, publisher, args.pack, args.class_name)
        pack_path = Path(args.file_path).resolve().parent.parent
        try:
            sensor_config = load_pack_config(settings, args.pack, pack_path)
            sensor = build_sensor(sensor_class, service, sensor_config, args.poll_interval)
        except SensorLoadError as exc:
            return _report_load_failure(args, exc)
        if stop.check():
            return 0
        trigger_types = [ref for ref in args.trigger_type_refs.split(",") if ref]
        return SensorWrapper(settings, publisher, sensor, trigger_types, stop).run()
    finally:
        publisher.close()
        database.disconnect()


if __name__ == "__main__":
    sys.exit(main())
