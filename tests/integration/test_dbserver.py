"""The embedded database's one-thread server loop, driven over real sockets.

Every other test already talks to it through pymongo; these cover what a
well-behaved client never does: messages cut into pieces, clients vanishing
mid-message or sending garbage, replies bigger than a socket buffer, many
clients at once, and a restart keeping what was written.
"""

from __future__ import annotations

import datetime
import os
import socket
import sqlite3
import struct
import threading

import bson
import pymongo
import pytest

from st2common.persistence import db
from st2common.persistence.embedded import EmbeddedMongo
from testsupport import free_port, make_settings

OP_MSG = 2013


def op_msg(request_id: int, command: dict) -> bytes:
    body = struct.pack("<I", 0) + b"\x00" + bson.encode(command)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG) + body


def read_reply(sock: socket.socket) -> tuple[int, dict]:
    header = recv_exactly(sock, 16)
    length, _, response_to, _ = struct.unpack("<iiii", header)
    body = recv_exactly(sock, length - 16)
    return response_to, bson.decode(body[5:])


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


@pytest.fixture
def server(tmp_path):
    instance = EmbeddedMongo(tmp_path / "db.sqlite", free_port(), tmp_path)
    instance.start(die_with_parent=True)
    yield instance
    instance.stop()


@pytest.fixture
def client(server):
    client = pymongo.MongoClient(server.url)
    yield client
    client.close()


def connect(server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def test_a_message_sent_in_pieces_is_answered_once_whole(server):
    message = op_msg(7, {"ping": 1, "$db": "admin"})
    with connect(server) as sock:
        for piece in (message[:3], message[3:16], message[16:20], message[20:]):
            sock.sendall(piece)
        assert read_reply(sock) == (7, {"ok": 1.0})


def test_replies_hold_bson_types_at_every_depth(server, client):
    things = client.st2.things
    first, second = bson.ObjectId(), bson.ObjectId()
    things.insert_one({"_id": first, "price": 1.1, "id": 0,
                       "links": [{"to": second, "ids": [first, second]}], "at": datetime.datetime(2026, 11, 22, 3, 0)})
    doc = things.find_one({"_id": first})
    assert type(doc["_id"]) is bson.ObjectId and doc["links"] == [{"to": second, "ids": [first, second]}]
    assert type(doc["links"][0]["ids"][1]) is bson.ObjectId
    assert doc["price"] == 1.1 and doc["id"] == 0
    assert doc["at"] == datetime.datetime(2026, 11, 22, 3, 0)
    with connect(server) as sock:
        sock.sendall(op_msg(3, {"find": "things", "filter": {}, "$db": "st2"}))
        _, reply = read_reply(sock)
    # an exhausted cursor's id is a 64-bit 0, as MongoDB sends it
    assert reply["ok"] == 1 and type(reply["cursor"]["id"]) is bson.int64.Int64 and reply["cursor"]["id"] == 0
    assert [each["_id"] for each in reply["cursor"]["firstBatch"]] == [first]


def test_two_messages_in_one_write_get_two_replies_in_order(server):
    with connect(server) as sock:
        sock.sendall(op_msg(1, {"ping": 1, "$db": "admin"}) + op_msg(2, {"ping": 1, "$db": "admin"}))
        assert read_reply(sock)[0] == 1
        assert read_reply(sock)[0] == 2


def test_clients_that_vanish_or_send_garbage_do_not_disturb_the_others(server):
    client = pymongo.MongoClient(server.url)
    try:
        client.st2.things.insert_one({"_id": "before"})
        half = connect(server)
        half.sendall(op_msg(1, {"ping": 1, "$db": "admin"})[:10])
        half.close()
        garbage = connect(server)
        garbage.sendall(struct.pack("<iiii", 3, 1, 0, OP_MSG))
        # A message whose length cannot be right: the server drops that client.
        assert garbage.recv(16) == b""
        garbage.close()
        client.st2.things.insert_one({"_id": "after"})
        assert sorted(doc["_id"] for doc in client.st2.things.find()) == ["after", "before"]
    finally:
        client.close()


def test_a_reply_larger_than_the_socket_buffers_arrives_whole(server):
    client = pymongo.MongoClient(server.url)
    try:
        blob = "x" * 200_000
        client.st2.big.insert_many([{"_id": i, "blob": blob} for i in range(40)])
        docs = list(client.st2.big.find())
        assert len(docs) == 40 and all(doc["blob"] == blob for doc in docs)
    finally:
        client.close()


def test_many_clients_writing_at_once_each_see_their_own_writes(server):
    errors = []

    def work(worker: int) -> None:
        client = pymongo.MongoClient(server.url, maxPoolSize=4)
        try:
            things = client.st2.things
            for n in range(30):
                things.insert_one({"_id": f"{worker}-{n}", "n": 0})
                things.find_one_and_update({"_id": f"{worker}-{n}", "n": 0}, {"$set": {"n": 1}})
                if things.find_one({"_id": f"{worker}-{n}"})["n"] != 1:
                    errors.append(f"{worker}-{n}")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client = pymongo.MongoClient(server.url)
    try:
        assert client.st2.things.count_documents({"n": 1}) == 240
    finally:
        client.close()


def test_a_batch_insert_keeps_what_came_before_a_clash_and_refuses_what_json_cannot_hold(client):
    things = client.st2.things
    things.insert_one({"_id": "b", "n": 0})
    # Ordered: the documents before the clash are stored, the rest are not
    with pytest.raises(pymongo.errors.BulkWriteError) as ordered:
        things.insert_many([{"_id": "a"}, {"_id": "b"}, {"_id": "c"}], ordered=True)
    assert [(e["index"], e["code"]) for e in ordered.value.details["writeErrors"]] == [(1, 11000)]
    assert sorted(doc["_id"] for doc in things.find()) == ["a", "b"]
    # Unordered: every other document is stored
    with pytest.raises(pymongo.errors.BulkWriteError):
        things.insert_many([{"_id": "d"}, {"_id": "b"}, {"_id": "e"}], ordered=False)
    assert sorted(doc["_id"] for doc in things.find()) == ["a", "b", "d", "e"]
    # A value JSON cannot hold is refused, not stored as invalid text
    with pytest.raises(pymongo.errors.PyMongoError):
        things.insert_one({"_id": "nan", "x": float("nan")})
    assert things.find_one({"_id": "nan"}) is None
    # Nested values, bytes and ids come back as they went in
    oid = bson.ObjectId()
    things.insert_one({"_id": "deep", "ref": oid, "blob": b"\x00\x01", "list": [{"a": [1, {"b": None}]}]})
    doc = things.find_one({"_id": "deep"})
    assert doc["ref"] == oid and bytes(doc["blob"]) == b"\x00\x01" and doc["list"] == [{"a": [1, {"b": None}]}]
    # And a new document gets its id from the server when none is given
    assert isinstance(things.insert_one({"n": 5}).inserted_id, bson.ObjectId)


def test_an_update_leaves_the_document_it_started_from_as_it_was(client):
    things = client.st2.things
    stamp = datetime.datetime(2026, 11, 21, 19, 0, 0, 123000)
    things.insert_one({"_id": "x", "log": [{"status": "requested", "at": stamp}], "nested": {"list": [1]}})
    # "$pull" of a field nobody has takes the update onto its Python path (as Access's writes do)
    before = things.find_one_and_update(
        {"_id": "x"}, {"$set": {"log": [{"status": "requested", "at": stamp}, {"status": "running", "at": stamp}],
                                "nested.list": [1, 2]}, "$pull": {"_none": 1}},
        return_document=pymongo.ReturnDocument.BEFORE)
    assert before["log"] == [{"status": "requested", "at": stamp}] and before["nested"] == {"list": [1]}
    after = things.find_one({"_id": "x"})
    assert [entry["status"] for entry in after["log"]] == ["requested", "running"]
    assert after["log"][1]["at"] == stamp and after["nested"] == {"list": [1, 2]}
    # A change made in place on the copy (a push into a list it holds) is a change, and is stored
    things.update_one({"_id": "x"}, {"$set": {"tags": ["a"]}})
    assert things.update_one({"_id": "x"}, {"$push": {"tags": "b"}, "$pull": {"_none": 1}}).modified_count == 1
    assert things.find_one({"_id": "x"})["tags"] == ["a", "b"]


def test_the_file_is_the_servers_alone_and_keeps_its_data_across_a_restart(server):
    client = pymongo.MongoClient(server.url)
    client.st2.things.insert_one({"_id": "kept", "value": 42})
    client.close()
    other = sqlite3.connect(server.db_path, timeout=0.2)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("CREATE TABLE intruder (x)")
    other.close()

    server.stop()
    assert not server.pid_file.exists()
    server.start(die_with_parent=True)
    client = pymongo.MongoClient(server.url)
    try:
        assert client.st2.things.find_one({"_id": "kept"}) == {"_id": "kept", "value": 42}
    finally:
        client.close()


def test_the_pid_file_names_the_serving_process(server):
    pid = int(server.pid_file.read_text())
    assert pid == server.process.pid
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        assert b"st2common.persistence.dbserver" in handle.read()
    assert os.path.exists(server.db_path)


def test_the_platform_connects_over_the_servers_local_socket(tmp_path):
    # Given an embedded server run as st2ctl runs it: its run folder under the platform's var/
    settings = make_settings(tmp_path, None, extra={"ST2_DATABASE__EMBEDDED": "true",
                                                    "ST2_DATABASE__PORT": str(free_port())})
    server = EmbeddedMongo(tmp_path / "db.sqlite", settings.database.port, settings.var_path / "run")
    # Before it runs, clients would go to host:port
    assert db.client_url(settings) == settings.database_url()
    server.start(die_with_parent=True)
    try:
        # Once it runs, the platform's processes use its local socket, which only its owner may open
        url = db.client_url(settings)
        assert url.startswith("mongodb://%2F") and url.endswith(f".sock/{settings.database.db_name}")
        assert server.socket_path.stat().st_mode & 0o777 == 0o600
        client = db.connect(settings)
        client[settings.database.db_name].things.insert_one({"_id": "over the socket"})
        # And what it writes there is what host:port serves
        tcp = pymongo.MongoClient(server.url)
        assert tcp[settings.database.db_name].things.find_one() == {"_id": "over the socket"}
        tcp.close()
        db.disconnect()
    finally:
        server.stop()
    # A stopped server leaves no socket behind, and clients go back to host:port
    assert not server.socket_path.exists()
    assert db.client_url(settings) == settings.database_url()


def test_a_run_folder_too_deep_for_a_socket_keeps_to_tcp(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedMongo(tmp_path / "db.sqlite", free_port(), deep)
    assert server.socket_path is None
    assert "--unix-socket" not in server.command()
    server.start(die_with_parent=True)
    try:
        client = pymongo.MongoClient(server.url)
        assert client.admin.command("ping")["ok"] == 1.0
        client.close()
    finally:
        server.stop()
