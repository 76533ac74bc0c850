"""Helpers the test modules share: free ports, the RabbitMQ probe, per-test settings.

A plain module, not a conftest: tests/e2e has a conftest of its own, and
``from testsupport import ...`` would then find whichever was imported first.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
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


def api_app(settings, publisher=None):
    """The API's WSGI app for settings, every request carrying an admin's credentials unless it has its own.

    For tests whose subject is not authentication; tests of authentication use
    st2api.app.setup_app directly.
    """
    from st2api.app import setup_app

    return setup_app(settings, publisher)
