"""Console script st2api: serve the REST API with eventlet's WSGI server until SIGTERM."""

import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402

from eventlet import wsgi  # noqa: E402

from st2api.app import setup_app  # noqa: E402
from st2common.service import Service  # noqa: E402

LOG = logging.getLogger(__name__)


def _serve(service: Service) -> None:
    api = service.settings.api
    app = setup_app(service.settings, service.publisher)
    sock = eventlet.listen((api.host, api.port))
    LOG.info("st2api listening on http://%s:%d", api.host, api.port)
    server = eventlet.spawn(wsgi.server, sock, app, log_output=False, max_size=1000)
    service.ready()
    service.wait()
    server.kill()
    sock.close()


def main(argv: list[str] | None = None) -> int:
    """Run st2api."""
    return Service.from_argv("st2api", argv).run(_serve)
