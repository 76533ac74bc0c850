"""The mongoengine connection, built from [database]."""

from __future__ import annotations

import logging
import time

import mongoengine as me
import pymongo
from pymongo.errors import PyMongoError

from st2common.exceptions import DatabaseError
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


def connect(settings, alias: str = me.DEFAULT_CONNECTION_NAME, retry_for: float = 0.0) -> pymongo.MongoClient:
    """Connect mongoengine to the configured database, retrying for up to retry_for seconds."""
    url = settings.database_url()
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
                raise DatabaseError(f"database at {masked_url(url)} is unreachable: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, settings.database.connection_retry_backoff_max_s)


def check(settings, timeout_ms: int = 2000) -> None:
    """Ping the configured database once; raise DatabaseError naming it if it does not answer."""
    url = settings.database_url()
    kwargs = _client_kwargs(settings)
    kwargs["serverSelectionTimeoutMS"] = timeout_ms
    client = pymongo.MongoClient(url, **kwargs)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        raise DatabaseError(f"database at {masked_url(url)} is unreachable: {exc}") from exc
    finally:
        client.close()


def disconnect(alias: str = me.DEFAULT_CONNECTION_NAME) -> None:
    """Drop the mongoengine connection."""
    me.disconnect(alias)


def ensure_indexes(*models) -> None:
    """Create the declared indexes of each document class."""
    for model in models:
        model.ensure_indexes()
