"""Console script st2rulesengine: start the service and run until SIGTERM."""

import eventlet

eventlet.monkey_patch()

from st2common.service import Service  # noqa: E402


def _serve(service: Service) -> None:
    service.ready()
    service.wait()


def main(argv: list[str] | None = None) -> int:
    """Run st2rulesengine."""
    return Service.from_argv("st2rulesengine", argv).run(_serve)
