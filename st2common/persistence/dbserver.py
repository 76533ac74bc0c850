"""The embedded database's server loop: nx-27017's command handler on one thread.

nx-27017's own servers cost most of their CPU outside the database on a small
machine: the asyncio one hands every command to a worker thread and back (a
self-pipe write and an epoll wake-up each time), the threaded one logs every
reply at INFO and makes its client threads fight for the GIL and the handler's
lock. Its handler serialises every command on one lock anyway, so one thread
that reads whole messages from every client and answers them in turn loses no
concurrency. The SQLite file is opened in exclusive locking mode, as nothing
else may write it while the server runs: each transaction then skips the file
locks (bench/db.py: about 660 -> 240 us of server CPU a command).

Run as ``python -m st2common.persistence.dbserver --db FILE --port N ...``
(EmbeddedMongo.command). Besides host:port it listens on a local socket
(--unix-socket), which the platform's services use (persistence/db.py).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import uuid
from pathlib import Path

from neosqlite._sqlite import sqlite3
from neosqlite.collection.json_helpers import neosqlite_json_dumps
from neosqlite.binary import Binary
from neosqlite.collection.query_helper import update_operations
from neosqlite.collection.query_helper.crud_operations import CRUDOperationsMixin
from neosqlite.collection.query_helper.utils import _convert_bytes_to_binary
from neosqlite.exceptions import MalformedDocument
from neosqlite.objectid import ObjectId
from neosqlite.sql_utils import quote_table_name
from nx_27017.handler import NeoSQLiteHandler
from nx_27017.wire_protocol import (
    MAX_MESSAGE_SIZE_BYTES,
    MESSAGE_HEADER_SIZE,
    OP_MSG,
    OP_QUERY,
    ResponseBuilder,
    WireProtocol,
    _get_next_request_id,
)

LOG = logging.getLogger("st2.dbserver")

RECV_SIZE = 1 << 20
# A client that stops reading its reply stalls every other one; past this it is dropped.
SEND_TIMEOUT = 30.0


class _Sections(list):
    """A message's sections whose text form is short.

    nx-27017's handle_insert formats its sections into a debug f-string on
    every call, logged or not: the repr of every document inserted, about a
    tenth of an insert's CPU.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} sections>"

    __str__ = __repr__


class Client:
    """One connection: its socket, the bytes of its next message so far, its id for cursors."""

    __slots__ = ("sock", "buffer", "conn_id")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.conn_id = str(uuid.uuid4())


class WireServer:
    """Answers MongoDB wire messages from every client, one at a time, on one thread."""

    def __init__(self, handler: NeoSQLiteHandler, host: str, port: int, unix_socket: Path | None = None) -> None:
        self.handler = handler
        self.selector = selectors.DefaultSelector()
        self.unix_socket = unix_socket
        self._listen(socket.create_server((host, port), backlog=512, reuse_port=False))
        if unix_socket is not None:
            # The platform's own services connect here: a local socket costs less CPU a command than TCP.
            unix_socket.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(unix_socket))
            os.chmod(unix_socket, 0o600)
            listener.listen(512)
            self._listen(listener)

    def _listen(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, listener)

    def serve_forever(self) -> None:
        """Accept and answer until the process is stopped."""
        while True:
            for key, _ in self.selector.select():
                if isinstance(key.data, Client):
                    self._read(key.data)
                else:
                    self._accept(key.data)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT)
        client = Client(sock)
        self.selector.register(sock, selectors.EVENT_READ, client)
        self.handler.increment_connections()

    def _read(self, client: Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(client)
            return
        buffer = client.buffer
        buffer += data
        while len(buffer) >= MESSAGE_HEADER_SIZE:
            length = struct.unpack_from("<i", buffer, 0)[0]
            if length < MESSAGE_HEADER_SIZE or length > MAX_MESSAGE_SIZE_BYTES:
                LOG.warning("dropping a client that sent a message of length %d", length)
                self._close(client)
                return
            if len(buffer) < length:
                return
            message = bytes(buffer[:length])
            del buffer[:length]
            try:
                client.sock.sendall(self._answer(message, client.conn_id))
            except OSError as exc:
                LOG.warning("dropping a client that did not take its reply: %s", exc)
                self._close(client)
                return

    def _answer(self, message: bytes, conn_id: str) -> bytes:
        """The reply to one whole message, as nx-27017's own servers build it."""
        request_id, opcode = struct.unpack_from("<i", message, 4)[0], struct.unpack_from("<i", message, 12)[0]
        if opcode == WireProtocol.OP_MSG:
            try:
                msg = OP_MSG.parse(message)
                msg["_conn_id"] = conn_id
                sections = msg["sections"] = _Sections(msg["sections"])
                inserts = any(kind == "payload_docs" or (kind == "body" and isinstance(body, dict) and "insert" in body)
                              for kind, body in sections)
                _, document = (self.handler.handle_insert if inserts else self.handler.handle_command)(msg)
            except Exception as exc:  # noqa: BLE001 - the client gets the error, the server goes on
                LOG.exception("command failed")
                document = {"ok": 0, "errmsg": str(exc)}
            return ResponseBuilder.build_op_msg_reply(
                request_id=_get_next_request_id(), response_to=request_id, document=document)
        if opcode == WireProtocol.OP_QUERY:
            try:
                msg = OP_QUERY.parse(message)
                msg["_conn_id"] = conn_id
                _, documents = self.handler.handle_query(msg)
            except Exception as exc:  # noqa: BLE001
                LOG.exception("legacy query failed")
                documents = [{"ok": 0, "errmsg": str(exc)}]
            return ResponseBuilder.build_reply(_get_next_request_id(), request_id, documents)
        return ResponseBuilder.build_op_msg_reply(
            request_id=0, response_to=request_id, document={"ok": 0, "errmsg": f"Unsupported opcode: {opcode}"})

    def _close(self, client: Client) -> None:
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        self.handler.decrement_connections()
        self.handler.close_streams_for_connection(client.conn_id)


class Handler(NeoSQLiteHandler):
    """nx-27017's handler, the documents of one insert command stored in one transaction.

    In autocommit mode every document is a transaction of its own, which
    writes the table's and each index's pages to the log again. A savepoint
    opens a transaction where there is none and nests in a client's. What was
    stored before a failure is kept, as it was document by document.
    """

    def handle_insert(self, msg):
        """Insert the command's documents (nx-27017's handle_insert) inside one savepoint."""
        if self._gridfs_insert(msg):
            return super().handle_insert(msg)  # GridFS opens its own transaction
        db = self.conn.db
        db.execute("SAVEPOINT st2_insert")
        try:
            return super().handle_insert(msg)
        finally:
            db.execute("RELEASE SAVEPOINT st2_insert")

    def _gridfs_insert(self, msg) -> bool:
        for kind, body in msg.get("sections") or ():
            if kind == "body" and isinstance(body, dict):
                return self._is_gridfs_collection(str(body.get("insert") or ""))
        return True  # not a shape this wrapper knows: nx-27017 alone


def _insert(self, document):
    """neosqlite's _internal_insert without its deepcopy and its JSON validation query.

    Converting bytes to Binary already builds new dicts and lists, so the
    caller's document is not touched (but for its ``_id``, as before); and
    json.dumps writes valid JSON once NaN and infinities are refused (they
    were refused by the validation). The two were about a sixth of the
    server's CPU on insert-heavy loads.
    """
    if not isinstance(document, dict):
        raise MalformedDocument(f"document must be a dictionary, not a {type(document)}")
    doc_to_insert = _convert_bytes_to_binary(document)
    original_has_id = "_id" in document
    generated_id = ObjectId() if not original_has_id or document["_id"] is None else document["_id"]
    doc_to_insert["_id"] = generated_id
    try:
        json_str = neosqlite_json_dumps(doc_to_insert, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"Invalid JSON document: {exc}") from exc
    cursor = self.collection.db.execute(
        f"INSERT INTO {quote_table_name(self.collection.name)}(data, _id) VALUES (?, ?)",
        (json_str, str(generated_id)))
    if cursor.lastrowid is None:
        raise sqlite3.Error("Failed to get last row id.")
    if not original_has_id:
        document["_id"] = generated_id
    return generated_id


# Leaves of a stored document that nothing changes in place: shared by a copy.
_SHARED = frozenset({str, int, float, bool, type(None), datetime.datetime, ObjectId, Binary})


def _tree_copy(value):
    """copy.deepcopy for a document read from the database: new dicts and lists, the same leaves.

    neosqlite copies the stored document before applying an update in Python
    (so the old one can be compared and returned); deepcopy's memo and
    per-object dispatch made that copy most of an update's CPU.
    """
    kind = type(value)
    if kind is dict:
        return {key: _tree_copy(item) for key, item in value.items()}
    if kind is list:
        return [_tree_copy(item) for item in value]
    if kind in _SHARED:
        return value
    return copy.deepcopy(value)


def open_handler(db_path: str) -> NeoSQLiteHandler:
    """nx-27017's handler on one SQLite file, locked for this process alone."""
    # This process is the server: every insert and update of it goes through the lean paths.
    CRUDOperationsMixin._internal_insert = _insert
    update_operations.deepcopy = _tree_copy
    handler = Handler(db_path, journal_mode="WAL")
    handler.conn.db.execute("PRAGMA locking_mode=EXCLUSIVE")
    return handler


def _exit(signum, frame) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """Serve one SQLite file on host:port until SIGTERM."""
    parser = argparse.ArgumentParser(prog="st2-dbserver", description=__doc__.splitlines()[0])
    parser.add_argument("--db", dest="db_path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--unix-socket", type=Path, help="also listen on this local socket")
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--log-file", type=Path, help="log here as well as to stderr")
    args = parser.parse_args(argv)

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file is not None and str(args.log_file) != os.devnull:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s - %(name)s - %(levelname)s - [%(process)d] - %(message)s")
    # nx-27017 logs routine events at INFO; only its warnings are worth a line.
    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)

    handler = open_handler(args.db_path)
    server = WireServer(handler, args.host, args.port, args.unix_socket)
    args.pid_file.write_text(f"{os.getpid()}\n")
    LOG.info("serving %s on %s:%d%s", args.db_path, args.host, args.port,
             f" and {args.unix_socket}" if args.unix_socket else "")
    try:
        server.serve_forever()
    finally:
        args.pid_file.unlink(missing_ok=True)
        if args.unix_socket is not None:
            args.unix_socket.unlink(missing_ok=True)
        handler.conn.db.close()


if __name__ == "__main__":
    main()
