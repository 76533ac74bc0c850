"""Kombu connections built from [messaging] url.

The URL is the config: ``amqp://`` for RabbitMQ, ``filesystem://`` for the
embedded default. The filesystem transport (st2common.transport.filesystem)
keeps every message as a file in a folder per queue under one shared folder
(``data``: in == out, so every process sees every queue; in shared memory by
default, see st2common.transport.memfolder) and the exchange -> queue tables
in ``control``; consumers are woken by inotify where there is one, and
otherwise poll their queues' folders every ``filesystem_polling_interval``
seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import kombu

from st2common.exceptions import BusError
from st2common.transport import filesystem, memfolder

LOG = logging.getLogger(__name__)


def filesystem_folders(root: Path, in_memory: bool = True) -> dict[str, str]:
    """The data and control folders of the filesystem transport under root, created.

    With in_memory, data links to a folder in shared memory where there is one
    (st2common.transport.memfolder).
    """
    control = root / "control"
    control.mkdir(parents=True, exist_ok=True)
    data = memfolder.data_folder(root, in_memory)
    return {"data_folder_in": str(data), "data_folder_out": str(data), "control_folder": str(control)}


def masked_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":********@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def is_filesystem(connection: kombu.Connection) -> bool:
    """True when connection uses the embedded filesystem bus."""
    return connection.get_transport_cls() is filesystem.Transport


def make_connection(messaging) -> kombu.Connection:
    """A new, unconnected kombu Connection for the [messaging] section."""
    url = messaging.url
    if url.startswith("filesystem:"):
        options = filesystem_folders(Path(messaging.filesystem_path), messaging.filesystem_memory)
        options["polling_interval"] = messaging.filesystem_polling_interval
        return kombu.Connection(url, transport=filesystem.Transport, transport_options=options)
    return kombu.Connection(url, connect_timeout=5, heartbeat=0)


def check_connection(messaging, timeout: float = 3.0) -> None:
    """Connect once and raise BusError naming the (masked) URL when the bus does not answer."""
    conn = make_connection(messaging)
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises several unrelated types here
        raise BusError(f"message bus at {masked_url(messaging.url)} is unreachable: {exc}") from exc
    finally:
        conn.release()
