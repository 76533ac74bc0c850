"""The sensor base classes pack code derives from, also importable as ``st2reactor.sensor.base``.

A pack sensor is written exactly as for StackStorm::

    from st2reactor.sensor.base import Sensor

    class MySensor(Sensor):
        def run(self):
            ...
            self.sensor_service.dispatch(trigger="mypack.event", payload={...})

``Sensor`` is passive: ``run()`` blocks and dispatches when something
happens. ``PollingSensor`` runs ``poll()`` every ``poll_interval`` seconds.
The sensor wrapper (st2sensorcontainer.wrapper) builds the instance with its
sensor service and pack config, calls ``setup()`` then ``run()``, passes the
sensor's triggers to ``add_trigger`` / ``update_trigger`` / ``remove_trigger``
as they change, and calls ``cleanup()`` when the container stops it.

StackStorm declares the hooks abstract; here they default to doing nothing,
so a sensor overrides only what it needs (a StackStorm sensor overrides them
all anyway).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["BaseSensor", "Sensor", "PollingSensor"]

DEFAULT_POLL_INTERVAL = 5


class BaseSensor:
    """What every sensor has: ``self.sensor_service``, ``self.config`` and the lifecycle hooks."""

    def __init__(self, sensor_service: Any, config: dict | None = None) -> None:
        self.sensor_service = sensor_service
        self.config = config if config is not None else {}
        # StackStorm's older, underscore-prefixed names; pack code still reads them.
        self._sensor_service = sensor_service
        self._config = self.config

    def setup(self) -> None:
        """Called once, before run(): open connections, read state."""

    def run(self) -> None:
        """The sensor's main loop; dispatch trigger instances from here."""

    def cleanup(self) -> None:
        """Called once when the sensor is stopped: close what setup() opened."""

    def add_trigger(self, trigger: dict) -> None:
        """A trigger of one of this sensor's trigger types was created (a TriggerAPI dict)."""

    def update_trigger(self, trigger: dict) -> None:
        """A trigger of one of this sensor's trigger types was updated."""

    def remove_trigger(self, trigger: dict) -> None:
        """A trigger of one of this sensor's trigger types was deleted."""


class Sensor(BaseSensor):
    """A passive sensor: run() blocks, waiting for events to dispatch."""


class PollingSensor(BaseSensor):
    """An active sensor: run() calls poll() every poll_interval seconds until the sensor is stopped."""

    def __init__(self, sensor_service: Any, config: dict | None = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        super().__init__(sensor_service=sensor_service, config=config)
        self._poll_interval = poll_interval
        # An unusual name: pack sensors often keep their own "_stopped" flag.
        self._st2_poll_stop = threading.Event()

    def run(self) -> None:
        """poll(), then wait poll_interval seconds, until stop() (an exception from poll() ends the sensor)."""
        while not self._st2_poll_stop.is_set():
            self.poll()
            # As in StackStorm, the interval is the pause after a poll, not the period between starts.
            self._st2_poll_stop.wait(self._poll_interval)

    def stop(self) -> None:
        """Make run() return after the poll in progress."""
        self._st2_poll_stop.set()

    def poll(self) -> None:
        """Look once for what happened since the last poll and dispatch it."""

    def get_poll_interval(self) -> float:
        """Seconds between two polls."""
        return self._poll_interval

    def set_poll_interval(self, poll_interval: float) -> None:
        """Change the seconds between two polls (takes effect after the current wait)."""
        self._poll_interval = poll_interval
