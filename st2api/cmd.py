"""Console script st2api: serve the REST API and the auth endpoint with eventlet's WSGI server until SIGTERM."""

import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402

from st2api.app import setup_app, setup_auth_app  # noqa: E402
from st2api.server import serve  # noqa: E402
from st2common.service import Service  # noqa: E402
from st2common.services import users  # noqa: E402
from st2common.services.keyvalues import Datastore, PeriodicPurge  # noqa: E402

LOG = logging.getLogger(__name__)


def _serve(service: Service) -> None:
    settings = service.settings
    api, auth = settings.api, settings.auth
    listeners = [("st2api", api.host, api.port, setup_app(settings, service.publisher))]
    if auth.enable:
        _ensure_admin(settings)
        # The auth endpoint lives in this process on its own port, as DESIGN.md has it.
        listeners.append(("st2auth", auth.host, auth.port, setup_auth_app(settings, service.publisher)))
    servers = []
    for name, host, port, app in listeners:
        sock = eventlet.listen((host, port))
        LOG.info("%s listening on http://%s:%d", name, host, port)
        servers.append((eventlet.spawn(serve, sock, app), sock))
    # Expired datastore items vanish from reads at once; this green thread deletes them.
    purge = PeriodicPurge(Datastore(settings, service.publisher), settings.keyvalue.purge_interval).start()
    service.ready()
    service.wait()
    purge.stop()
    for server, sock in servers:
        server.kill()
        sock.close()


def _ensure_admin(settings) -> None:
    """Create st2admin when there is no users file yet (a deployment not started by st2ctl, e.g. compose)."""
    if users.ensure_admin(settings) is not None:
        LOG.warning("auth: created user %s with a generated password, kept in %s (mode 0600)",
                    users.ADMIN_USER, users.admin_password_path(settings))


def main(argv: list[str] | None = None) -> int:
    """Run st2api."""
    return Service.from_argv("st2api", argv).run(_serve)
