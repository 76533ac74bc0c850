"""A service process's life, shared by every console script: settings, logging,
database and bus (waiting for them while they are down), a status file that
st2ctl reads, and a clean stop on SIGTERM / SIGINT.

The status file (var/run/<service>.status) is one JSON object:
``{"service", "pid", "state", "detail", "time"}`` where state is one of
starting, waiting (detail names the dependency it cannot reach), ready,
stopping, stopped, failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from st2common import config, log
from st2common.exceptions import BusError, ConfigError, DatabaseError
from st2common.persistence import db as database
from st2common.transport.connection import check_connection, make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

LOG = logging.getLogger(__name__)
# Allocations between young-generation collections once a service is ready (Python's default: 700).
GC_YOUNG_THRESHOLD = 20000

STARTING, WAITING, READY, STOPPING, STOPPED, FAILED = (
    "starting", "waiting", "ready", "stopping", "stopped", "failed")


def run_path(settings) -> Path:
    """The folder of pid and status files."""
    return settings.var_path / "run"


def status_path(settings, service: str) -> Path:
    """Where a service writes its status."""
    return run_path(settings) / f"{service}.status"


def read_status(settings, service: str) -> dict | None:
    """The last status a service wrote, or None."""
    try:
        return json.loads(status_path(settings, service).read_text())
    except (OSError, ValueError):
        return None


def parse_args(service: str, argv: list[str] | None) -> argparse.Namespace:
    """The options every service takes."""
    parser = argparse.ArgumentParser(prog=service, description=f"StackStorm-compatible {service} service")
    parser.add_argument("--config-file", default=None,
                        help=f"st2.conf to use (default: ${config.CONFIG_PATH_ENV} or conf/st2.conf)")
    return parser.parse_args(argv)


class Service:
    """One service process: owns its settings, database connection and publisher."""

    def __init__(self, name: str, settings) -> None:
        self.name = name
        self.settings = settings
        self.topology = Topology(settings.messaging.prefix)
        self.publisher: Publisher | None = None
        self.stop_event = threading.Event()
        self._status_file = status_path(settings, name)

    @classmethod
    def from_argv(cls, name: str, argv: list[str] | None = None) -> "Service":
        """Build the settings from the command line; a bad config exits with one line naming it."""
        args = parse_args(name, argv)
        try:
            settings = config.load(args.config_file)
        except ConfigError as exc:
            raise SystemExit(f"{name}: configuration error: {exc}") from None
        return cls(name, settings)

    # -- status -------------------------------------------------------------------------

    def write_status(self, state: str, detail: str = "") -> None:
        """Record state for st2ctl (atomically: write then rename)."""
        self._status_file.parent.mkdir(parents=True, exist_ok=True)
        payload = {"service": self.name, "pid": os.getpid(), "state": state, "detail": detail,
                   "time": time.time()}
        tmp = self._status_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload))
        tmp.replace(self._status_file)

    # -- life ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask the service to stop."""
        def on_signal(signum, _frame):
            LOG.info("%s got signal %d; stopping", self.name, signum)
            self.stop_event.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _wait_for(self, what: str, check) -> bool:
        delay = 0.2
        while not self.stop_event.is_set():
            try:
                check()
                return True
            except (DatabaseError, BusError) as exc:
                LOG.warning("%s is waiting: %s", self.name, exc)
                self.write_status(WAITING, str(exc))
                self.stop_event.wait(delay)
                delay = min(delay * 2, 5.0)
        return False

    def connect(self, database_required: bool = True, bus_required: bool = True) -> bool:
        """Connect to the database and the bus, waiting while they are down; False if stopped first."""
        if database_required and not self._wait_for(
                "database", lambda: database.connect(self.settings, retry_for=0)):
            return False
        if bus_required:
            if not self._wait_for("bus", lambda: check_connection(self.settings.messaging)):
                return False
            self.publisher = Publisher(make_connection(self.settings.messaging), self.topology)
            self.publisher.declare_work_queues()
        return True

    def run(self, body: Callable[["Service"], None], database_required: bool = True,
            bus_required: bool = True) -> int:
        """Set up logging, signals and connections, call body(self), tear down; the exit code."""
        log.setup(self.name, self.settings)
        self.install_signal_handlers()
        self.write_status(STARTING)
        LOG.info("%s starting (pid %d, config %s)", self.name, os.getpid(), self.settings.path)
        code = 0
        try:
            if self.connect(database_required, bus_required):
                body(self)
            self.write_status(STOPPING)
        except Exception as exc:
            LOG.exception("%s failed", self.name)
            self.write_status(FAILED, f"{type(exc).__name__}: {exc}")
            code = 1
        finally:
            if self.publisher is not None:
                self.publisher.close()
            database.disconnect()
        if code == 0:
            self.write_status(STOPPED)
            LOG.info("%s stopped", self.name)
        return code

    def ready(self) -> None:
        """Tell st2ctl the service is up (what start-up built is frozen out of the collector's sight)."""
        # Modules, settings, caches filled at start live as long as the process: without this, each
        # full collection walks all of them again (~0.2 ms of CPU per item in the rules engine).
        gc.freeze()
        # The hot paths free what they build without the collector (no reference cycles): a young
        # collection every 700 allocations would only walk live messages and records in flight.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self.write_status(READY)
        LOG.info("%s ready", self.name)

    def wait(self) -> None:
        """Block until a stop is asked for."""
        while not self.stop_event.is_set():
            self.stop_event.wait(1.0)
