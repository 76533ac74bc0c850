"""Helpers the test modules share: free ports, the RabbitMQ probe, per-test settings.

A plain module, not a conftest: tests/e2e has a conftest of its own, and
``from testsupport import ...`` would then find whichever was imported first.
"""

from __future__ import annotations

import functools
import gc
import os
import socket
import uuid
import weakref
from pathlib import Path

from st2common import config
from st2common.persistence.embedded import EmbeddedMongo

RABBITMQ_URL = os.environ.get("ST2_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REQUIRE_RABBITMQ = os.environ.get("ST2_TEST_REQUIRE_RABBITMQ") == "1"
# Bus prefixes used on RabbitMQ in this run; conftest deletes their topology at the end.
AMQP_PREFIXES: set[str] = set()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def rabbitmq_available() -> bool:
    """True when a broker accepts connections at the test URL."""
    import kombu

    conn = kombu.Connection(RABBITMQ_URL, connect_timeout=2)
    try:
        conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
    finally:
        conn.release()


def make_settings(tmp_path: Path, mongo: EmbeddedMongo | None, bus_url: str = "filesystem://",
                  extra: dict[str, str] | None = None):
    """Settings for a test: its own database name, bus prefix and var folder."""
    env = {
        "ST2_SYSTEM__BASE_PATH": str(tmp_path),
        "ST2_MESSAGING__URL": bus_url,
        "ST2_MESSAGING__PREFIX": f"st2t{uuid.uuid4().hex[:10]}",
        "ST2_MESSAGING__FILESYSTEM_PATH": str(tmp_path / "var" / "bus"),
    }
    if mongo is not None:
        env.update({
            "ST2_DATABASE__HOST": mongo.host,
            "ST2_DATABASE__PORT": str(mongo.port),
            "ST2_DATABASE__DB_NAME": f"st2t{uuid.uuid4().hex[:10]}",
        })
    env.update(extra or {})
    settings = config.load(path=None, env=env)
    if settings.messaging.url.startswith("amqp"):
        AMQP_PREFIXES.add(settings.messaging.prefix)
    return settings


# Values no API response may contain unless the request asked for show_secrets or decrypt;
# tests that plant a secret add it here (api_app's guard checks every response).
PLANTED_SECRETS: set[str] = set()
_CREDENTIAL_KEYS = ("HTTP_X_AUTH_TOKEN", "HTTP_ST2_API_KEY")


def api_app(settings, publisher=None):
    """The API's WSGI app for settings, for tests whose subject is not authentication.

    Every request without credentials of its own carries a token of the system
    user (an admin), and every response is checked for planted secrets. Tests of
    authentication use st2api.app.setup_app directly.
    """
    from st2api.app import setup_app

    return guarded(setup_app(settings, publisher), settings)


def guarded(app, settings):
    """app wrapped in api_app's guard: an admin token where none is given, planted secrets checked."""
    return _Guard(app, settings)


def admin_token(settings) -> str:
    """A fresh token of the system user (a system_admin) in the test's database."""
    from st2common.services import tokens

    return tokens.issue(settings, settings.system_user.user)[1]


class _Guard:
    """WSGI wrapper: adds an admin token where a request has no credentials; fails responses leaking secrets."""

    def __init__(self, app, settings) -> None:
        self.app = app
        self.settings = settings
        self._token = None

    def __call__(self, environ, start_response):
        query = environ.get("QUERY_STRING", "")
        if not any(environ.get(key) for key in _CREDENTIAL_KEYS) and "x-auth-token=" not in query \
                and "st2-api-key=" not in query:
            if self._token is None:
                self._token = admin_token(self.settings)
            environ["HTTP_X_AUTH_TOKEN"] = self._token
        body = b"".join(self.app(environ, start_response))
        if not _asks_for_secrets(query):
            text = body.decode(errors="replace")
            for secret in PLANTED_SECRETS:
                assert secret not in text, f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}?{query} " \
                                           f"leaked a secret: {text[:500]}"
        return [body]


def _asks_for_secrets(query: str) -> bool:
    from urllib.parse import parse_qs

    asked = parse_qs(query)
    return any(value.lower() in ("true", "1", "yes", "y")
               for name in ("show_secrets", "decrypt") for value in asked.get(name, []))


def freed_at_once(make) -> bool:
    """True when what make() builds is freed as soon as its last reference goes (no reference cycle)."""
    holder = [make()]
    gone = weakref.ref(holder[0])
    gc.disable()
    try:
        holder.clear()
        return gone() is None
    finally:
        gc.enable()
