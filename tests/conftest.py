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

import kombu  # noqa: E402
import pytest  # noqa: E402

from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402
from st2common.transport import memfolder  # noqa: E402
from st2common.transport.topology import Topology  # noqa: E402
from testsupport import (  # noqa: E402
    AMQP_PREFIXES, RABBITMQ_URL, REQUIRE_RABBITMQ, free_port, make_settings, rabbitmq_available,
)


@pytest.fixture(scope="session")
def embedded_mongo(tmp_path_factory) -> EmbeddedMongo:
    """One nx-27017 server for the session, on a free port and a temporary file."""
    folder = tmp_path_factory.mktemp("mongo")
    server = EmbeddedMongo(folder / "st2.sqlite", free_port(), folder)
    server.start(die_with_parent=True)
    yield server
    server.stop()


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


@pytest.fixture(scope="session", autouse=True)
def _bus_memory_cleanup(tmp_path_factory):
    """At the end of the run, free the shared memory of every filesystem bus the tests made."""
    yield
    memfolder.clear_under(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session", autouse=True)
def _broker_cleanup():
    """At the end of the run, remove every queue and exchange the tests declared on RabbitMQ."""
    yield
    if not AMQP_PREFIXES:
        return
    conn = kombu.Connection(RABBITMQ_URL, connect_timeout=2)
    try:
        channel = conn.default_channel
        for prefix in sorted(AMQP_PREFIXES):
            Topology(prefix).delete(channel)
    except Exception as exc:  # cleanup must not turn a passing run red
        warnings.warn(f"could not delete the tests' RabbitMQ topology: {exc}")
    finally:
        conn.release()
