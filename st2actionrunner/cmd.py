"""Console script st2actionrunner: the scheduler and the runners, until SIGTERM."""

import eventlet

eventlet.monkey_patch()

from st2common.service import Service  # noqa: E402


def _serve(service: Service) -> None:
    service.ready()
    service.wait()


def main(argv: list[str] | None = None) -> int:
    """Run st2actionrunner."""
    return Service.from_argv("st2actionrunner", argv).run(_serve)
