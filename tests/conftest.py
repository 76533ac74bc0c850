"""Fixtures: the real embedded database and the real buses, on free ports and in temporary folders.

Nothing here mocks the database or the bus. RabbitMQ tests skip when no broker
answers at 127.0.0.1:5672, unless ST2_TEST_REQUIRE_RABBITMQ=1 (CI), where they fail.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # eventlet is the chosen stack; its deprecation notice is not news in every run.
    warnings.simplefilter("ignore")
    import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from st2common import config  # noqa: E402
from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402

RABBITMQ_URL = os.environ.get("ST2_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REQUIRE_RABBITMQ = os.environ.get("ST2_TEST_REQUIRE_RABBITMQ") == "1"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="session")
def embedded_mongo(tmp_path_factory) -> EmbeddedMongo:
    """One nx-27017 server for the session, on a free port and a temporary file."""
    folder = tmp_path_factory.mktemp("mongo")
    server = EmbeddedMongo(folder / "st2.sqlite", free_port(), folder)
    server.start()
    yield server
    server.stop()


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
    return config.load(path=None, env=env)


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """Settings on the embedded database and the filesystem bus, isolated per test."""
    return make_settings(tmp_path, embedded_mongo)


@pytest.fixture
def db(settings):
    """mongoengine connected to this test's own database on the embedded server."""
    client = database.connect(settings)
    yield client
    client.drop_database(settings.database.db_name)
    database.disconnect()


@pytest.fixture(params=["filesystem", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def bus_settings(request, tmp_path, embedded_mongo):
    """Settings on each transport in turn: the embedded filesystem bus, then RabbitMQ."""
    if request.param == "amqp":
        if not rabbitmq_available():
            if REQUIRE_RABBITMQ:
                pytest.fail(f"RabbitMQ is required (ST2_TEST_REQUIRE_RABBITMQ=1) but {RABBITMQ_URL} does not answer")
            pytest.skip("RabbitMQ does not answer at 127.0.0.1:5672")
        return make_settings(tmp_path, embedded_mongo, RABBITMQ_URL)
    return make_settings(tmp_path, embedded_mongo)
