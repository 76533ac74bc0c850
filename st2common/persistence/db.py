"""The mongoengine connection, built from [database]."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import mongoengine as me
import pymongo
from pymongo.errors import PyMongoError

from st2common.exceptions import DatabaseError
from st2common.persistence.embedded import local_socket
from st2common.transport.connection import masked_url

LOG = logging.getLogger(__name__)


def _client_kwargs(settings) -> dict:
    db = settings.database
    kwargs: dict = {
        "serverSelectionTimeoutMS": db.connection_timeout,
        "connectTimeoutMS": db.connection_timeout,
        "tz_aware": True,
        "uuidRepresentation": "standard",
    }
    if db.username and "://" not in db.host:
        kwargs["username"] = db.username
        kwargs["password"] = db.password
    if db.authentication_mechanism:
        kwargs["authMechanism"] = db.authentication_mechanism
    if db.tls:
        kwargs["tls"] = True
        if db.tls_ca_file:
            kwargs["tlsCAFile"] = str(db.tls_ca_file)
    return kwargs


def client_url(settings) -> str:
    """The URL the platform's processes connect with: the embedded server's local socket when it has one.

    Each command then costs both sides less CPU than over TCP; the server
    answers on its host:port too, for everything else.
    """
    url = settings.database_url()
    if not settings.database.embedded or "://" in settings.database.host:
        return url
    # st2ctl runs it from var/run (st2common.service.run_path, which imports this module).
    path = local_socket(settings.var_path / "run")
    if path is None or not path.is_socket():
        return url
    return f"mongodb://{quote(str(path), safe='')}/{settings.database.db_name}"


def connect(settings, alias: str = me.DEFAULT_CONNECTION_NAME, retry_for: float = 0.0) -> pymongo.MongoClient:
    """Connect mongoengine to the configured database, retrying for up to retry_for seconds."""
    url = client_url(settings)
    deadline = time.monotonic() + retry_for
    delay = 0.1
    while True:
        try:
            me.disconnect(alias)
            me.connect(db=settings.database.db_name, host=url, alias=alias, **_client_kwargs(settings))
            client = me.get_connection(alias)
            client.admin.command("ping")
            LOG.info("connected to database %s", masked_url(url))
            return client
        except PyMongoError as exc:
            if time.monotonic() >= deadline:
                raise DatabaseError(f"database at {masked_url(settings.database_url())} is unreachable: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, settings.database.connection_retry_backoff_max_s)


def check(settings, timeout_ms: int = 2000) -> None:
    """Ping the configured database once; raise DatabaseError naming it if it does not answer."""
    url = client_url(settings)
    kwargs = _client_kwargs(settings)
    kwargs["serverSelectionTimeoutMS"] = timeout_ms
    client = pymongo.MongoClient(url, **kwargs)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        raise DatabaseError(f"database at {masked_url(settings.database_url())} is unreachable: {exc}") from exc
    finally:
        client.close()


def disconnect(alias: str = me.DEFAULT_CONNECTION_NAME) -> None:
    """Drop the mongoengine connection."""
    me.disconnect(alias)


def ensure_indexes(*models) -> None:
    """Create the declared indexes of each document class."""
    for model in models:
        model.ensure_indexes()
