"""Console script st2sensorcontainer: run every enabled pack sensor in its own process until SIGTERM.

Start-up: register the system trigger types, watch sensor type events, start
one wrapper process per enabled sensor. Stop: SIGTERM every sensor (its
cleanup() runs), SIGKILL what is still there after the grace period.
"""

import eventlet

eventlet.monkey_patch()

from st2common.service import Service  # noqa: E402
from st2sensorcontainer.container import SensorContainer  # noqa: E402

SERVICE = "st2sensorcontainer"


def _serve(service: Service) -> None:
    container = SensorContainer(service.settings, service.publisher)
    try:
        container.start()
        service.ready()
        service.wait()
    finally:
        container.stop()


def main(argv: list[str] | None = None) -> int:
    """Run st2sensorcontainer."""
    return Service.from_argv(SERVICE, argv).run(_serve)
