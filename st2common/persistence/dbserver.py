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
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import bson
from bson.codec_options import CodecOptions, TypeRegistry
from bson.int64 import Int64
from neosqlite.objectid import ObjectId as NeoObjectId
from nx_27017.handler import NeoSQLiteHandler
from nx_27017.wire_protocol import (
    MAX_MESSAGE_SIZE_BYTES,
    MESSAGE_HEADER_SIZE,
    OP_MSG,
    OP_QUERY,
    WireProtocol,
    _get_next_request_id,
)

from st2common.persistence import dbwrites

LOG = logging.getLogger("st2.dbserver")

RECV_SIZE = 1 << 20
# A client that stops reading its reply stalls every other one; past this it is dropped.
SEND_TIMEOUT = 30.0


def _bson_value(value):
    """What BSON stores for a value of neosqlite's own types (called for types BSON has no form for)."""
    if isinstance(value, NeoObjectId):
        return bson.ObjectId(value.binary)
    if isinstance(value, Decimal):
        return bson.Decimal128(value)
    return value  # bson then names the type it cannot encode


# nx-27017 copies every reply document to turn those into BSON's types first; the
# encoder's hook meets only them (a reply holding a 2.5 KB execution: 52 -> 13 us).
_REPLY_CODEC = CodecOptions(type_registry=TypeRegistry(fallback_encoder=_bson_value))


def _reply_document(document: dict) -> bytes:
    """A reply document in BSON; a cursor id of 0 as a 64-bit integer, as a cursor id is."""
    cursor = document.get("cursor")
    if isinstance(cursor, dict) and type(cursor.get("id")) is int and cursor["id"] == 0:
        document = {**document, "cursor": {**cursor, "id": Int64(0)}}
    return bson.encode(document, codec_options=_REPLY_CODEC)


def op_msg_reply(request_id: int, response_to: int, document: dict) -> bytes:
    """An OP_MSG reply holding one document."""
    body = b"\x00\x00\x00\x00\x00" + _reply_document(document)
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, WireProtocol.OP_MSG) + body


def op_reply(request_id: int, response_to: int, documents: list[dict]) -> bytes:
    """An OP_REPLY (to a legacy OP_QUERY) holding documents."""
    body = struct.pack("<Iqii", 0, 0, 0, len(documents)) + b"".join(map(_reply_document, documents))
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, WireProtocol.OP_REPLY) + body


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
            return op_msg_reply(_get_next_request_id(), request_id, document)
        if opcode == WireProtocol.OP_QUERY:
            try:
                msg = OP_QUERY.parse(message)
                msg["_conn_id"] = conn_id
                _, documents = self.handler.handle_query(msg)
            except Exception as exc:  # noqa: BLE001
                LOG.exception("legacy query failed")
                documents = [{"ok": 0, "errmsg": str(exc)}]
            return op_reply(_get_next_request_id(), request_id, documents)
        return op_msg_reply(0, request_id, {"ok": 0, "errmsg": f"Unsupported opcode: {opcode}"})

    def _close(self, client: Client) -> None:
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        self.handler.decrement_connections()
        self.handler.close_streams_for_connection(client.conn_id)


class Handler(NeoSQLiteHandler):
    """nx-27017's handler, with the simple updates of st2common.persistence.dbwrites and one transaction per insert.

    In autocommit mode every document inserted is a transaction of its own,
    which writes the table's and each index's pages to the log again. A
    savepoint opens a transaction where there is none and nests in a
    client's. What was stored before a failure is kept, as it was document by
    document.
    """

    def handle_command(self, msg):
        """A simple update or findAndModify as one SQL statement, anything else as nx-27017 does it."""
        command, updates = None, None
        for kind, body in msg.get("sections") or ():
            if kind == "body":
                command = body
            elif kind == "payload" and isinstance(body, dict) and "updates" in body:
                updates = body["updates"]
        if isinstance(command, dict):
            db_name = command.get("$db", "test")
            reply = None
            with self._lock_for(db_name):
                # (findAndModify's command has an "update" field too)
                if "findAndModify" in command:
                    reply = dbwrites.find_and_modify(self, command, db_name)
                elif "update" in command:
                    reply = dbwrites.update(self, command if updates is None else {**command, "updates": updates},
                                            db_name)
            if reply is not None:
                return msg["request_id"], reply
        return super().handle_command(msg)

    def handle_insert(self, msg):
        """Insert the command's documents in one transaction (dbwrites.insert, else nx-27017's handle_insert)."""
        command, documents, plain = None, [], True
        for kind, body in msg.get("sections") or ():
            if kind == "body":
                command = body
            elif kind == "payload" and isinstance(body, dict) and list(body) == ["documents"]:
                documents.extend(body["documents"])
            else:
                plain = False  # a section shape only nx-27017 knows
        if plain and isinstance(command, dict):
            db_name = command.get("$db", "test")
            with self._lock_for(db_name):
                reply = dbwrites.insert(self, command, [*(command.get("documents") or ()), *documents], db_name)
            if reply is not None:
                return msg["request_id"], reply
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


def open_handler(db_path: str) -> NeoSQLiteHandler:
    """nx-27017's handler on one SQLite file, locked for this process alone."""
    # This process is the server: neosqlite's inserts and updates of it take the lean paths.
    dbwrites.install()
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
