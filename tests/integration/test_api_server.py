"""The API's HTTP server (st2api/server.py): eventlet's WSGI server with its own header reader.

A real server process serves a WSGI app that echoes what it was given; the
tests speak raw HTTP/1.1 to it over a socket, as clients (the official CLI's
requests, curl, browsers) do, and to the same app under eventlet's stock
protocol: both must answer alike.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ECHO_SERVER = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from eventlet import wsgi
    from st2api.server import serve

    def echo(environ, start_response):
        body = environ["wsgi.input"].read()
        path = environ["PATH_INFO"]
        if path == "/environ":
            # Every plain value of the environ (objects differ between processes).
            out = json.dumps({k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}).encode()
            start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(out)))])
            return [out]
        if path == "/nolength":
            start_response("201 Created", [("x-lower-CASE", "a"), ("Access-Control-Allow-Origin", "*")])
            return [b"streamed ", b"body"]
        if path == "/dated":
            start_response("200 OK", [("date", "Thu, 01 Jan 1970 00:00:00 GMT"), ("Content-Length", "2")])
            return [b"ok"]
        seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k in (
            "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH")}
        seen["body"] = body.decode("latin-1")
        out = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out))),
                                  ("X-Request-ID", "abc")])
        return [out]

    sock = eventlet.listen(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    if sys.argv[2] == "stock":
        wsgi.server(sock, echo, log_output=False)
    else:
        serve(sock, echo)
""")


def _start(kind: str):
    process = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(REPO), kind], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    return process, int(process.stdout.readline())


@pytest.fixture(scope="module")
def ports():
    """The ports of the echo app under our protocol and under eventlet's stock one."""
    started = [_start("ours"), _start("stock")]
    try:
        yield started[0][1], started[1][1]
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server_port(ports):
    return ports[0]


def exchange(port: int, raw: bytes, responses: int = 1) -> list[tuple[str, dict[str, str], bytes]]:
    """Send raw on one connection; the (status line, headers, body) of each response read back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        reader = sock.makefile("rb")
        out = []
        for _ in range(responses):
            status = reader.readline().decode().rstrip("\r\n")
            headers: dict[str, str] = {}
            while True:
                line = reader.readline().decode("latin-1").rstrip("\r\n")
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            length = int(headers.get("Content-Length", "0"))
            out.append((status, headers, reader.read(length)))
        return out


def test_headers_reach_the_app_as_wsgi_environ_keys(server_port):
    # When a request carries mixed-case, repeated and folded headers and a query string
    raw = (b"GET /v1/executions/abc?include_attributes=status HTTP/1.1\r\n"
           b"Host: localhost\r\n"
           b"x-auth-token: tok\r\n"
           b"St2-Context: {\"a\": 1}\r\n"
           b"X-Multi: one\r\n"
           b"X-Multi: two\r\n"
           b"X-Folded: first\r\n"
           b"\tsecond\r\n"
           b"Bad Name: dropped\r\n"
           b"\r\n")
    status, headers, body = exchange(server_port, raw)[0]
    seen = json.loads(body)
    # Then the app sees each as eventlet always gave them (repeats joined, folds unfolded)
    assert status == "HTTP/1.1 200 OK"
    assert seen["REQUEST_METHOD"] == "GET" and seen["PATH_INFO"] == "/v1/executions/abc"
    assert seen["QUERY_STRING"] == "include_attributes=status"
    assert seen["HTTP_X_AUTH_TOKEN"] == "tok"
    assert seen["HTTP_ST2_CONTEXT"] == '{"a": 1}'
    assert seen["HTTP_X_MULTI"] == "one,two"
    assert seen["HTTP_X_FOLDED"] == "first\r\n\tsecond"
    assert not any(key.startswith("HTTP_BAD") for key in seen)
    # And without a Content-Type the app is told text/plain, as eventlet's email parser said
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert headers["Content-Type"] == "application/json" and "Date" in headers


def test_keep_alive_serves_several_requests_on_one_connection_with_their_bodies(server_port):
    # When a client sends two POSTs back to back on one connection, as requests' sessions do
    first = b'{"action": "core.noop"}'
    second = b'{"action": "core.local"}'
    raw = (b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s"
           b"POST /v1/executions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n%s") % (len(first), first, len(second), second)
    answers = exchange(server_port, raw, responses=2)
    # Then both are answered in order, each app call seeing its own body
    assert [json.loads(body)["body"] for _, _, body in answers] == [first.decode(), second.decode()]
    assert all(json.loads(body)["CONTENT_TYPE"] == "application/json" for _, _, body in answers)


def test_chunked_and_expect_100_continue_bodies_are_read(server_port):
    # When curl sends a large body with Expect: 100-continue, or a client streams it chunked
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/webhooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        reader = sock.makefile("rb")
        # Then the server asks for the body before the app reads it
        assert reader.readline().startswith(b"HTTP/1.1 100 Continue")
        reader.readline()
        sock.sendall(b"hello")
        assert reader.readline().startswith(b"HTTP/1.1 200")
    chunked = (b"POST /v1/webhooks/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert json.loads(exchange(server_port, chunked)[0][2])["body"] == "abcde"


@pytest.mark.parametrize("raw", [
    b"GET /x HTTP/1.1 extra\r\n\r\n",
    b"GET /x HTTP/x.y\r\n\r\n",
    b"GET /x HTTP/1.12345678901\r\n\r\n",
    b"GET /x HTTP/2.0\r\n\r\n",
    b"POST /x\r\n\r\n",
    b"\r\n",
    b"GET //evil.example.com/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n",
    b"GET /x HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-A: 1\r\nno colon here\r\nX-B: 2\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-A: 1\r\nBad Name: 3\r\nX-B: 2\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\tfolded first\r\nX-A:  padded \t \r\n: empty name\r\nX-F: a\r\n  b\r\n\r\n",
    b"GET /x HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(99)) + b"\r\n",
    b"GET /x HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n",
    b"GET /x HTTP/1.1\r\nX-\xe9: 1\r\nX-B: \xe9\r\n\r\n",
], ids=["extra-word", "bad-version", "long-version", "http2", "http09-post", "empty", "double-slash",
        "http10", "101-headers", "long-header", "negative-length", "line-without-colon", "name-with-space",
        "folds-padding-empty-name", "99-headers", "100-headers", "latin-1"])
def test_odd_requests_are_answered_as_eventlets_own_protocol_answers_them(ports, raw):
    ours, stock = (_answer(port, raw) for port in ports)
    assert ours == stock


def _answer(port: int, raw: bytes, keep_date: bool = False) -> bytes:
    """Everything the server sends back until it closes or goes quiet, without the Date header."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        sock.settimeout(0.5)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except socket.timeout:
            pass
    return received if keep_date else _undated(received)


def test_a_client_asking_to_close_gets_the_connection_closed(server_port):
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 10
        received = b""
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"Connection: close" in received


@pytest.mark.parametrize("raw", [
    b"GET /environ?a=1&b=%20x HTTP/1.1\r\nHost: h\r\nX-Auth-Token: t\r\nX-Multi: 1\r\nx-multi: 2\r\n"
    b"X_Under: dropped\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /env%69ron HTTP/1.0\r\n\r\n",
    b"POST /environ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
], ids=["headers-and-query", "http10-quoted-path", "chunked"])
def test_the_app_gets_the_environ_eventlet_gives_it(ports, raw):
    # When the same request reaches the app under our protocol and under eventlet's own
    ours, stock = (json.loads(exchange(port, raw)[0][2]) for port in ports)
    # Then the environ holds the same keys and values, but for the two servers' and clients' ports
    for seen in (ours, stock):
        assert seen.pop("REMOTE_PORT").isdigit() and seen.pop("SERVER_PORT").isdigit()
    assert ours == stock


@pytest.mark.parametrize("raw", [
    b"GET /nolength HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nolength HTTP/1.0\r\nHost: x\r\n\r\n",
    b"HEAD /nolength HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /dated HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
], ids=["chunked-answer", "http10-answer", "head", "app-dated", "with-length"])
def test_responses_go_out_as_eventlet_writes_them(ports, raw):
    # When the app answers without a Content-Length, with header names in any case, or with its own Date
    ours, stock = (_answer(port, raw, keep_date=True) for port in ports)
    # Then the bytes are eventlet's: names capitalised, chunks, one Date line (the app's when it gave one)
    assert _undated(ours) == _undated(stock)
    assert [line.startswith(b"Date: ") for line in ours.split(b"\r\n")] == \
        [line.startswith(b"Date: ") for line in stock.split(b"\r\n")]
    if b"/dated" in raw:
        assert b"Date: Thu, 01 Jan 1970 00:00:00 GMT" in ours


def _undated(received: bytes) -> bytes:
    return b"\r\n".join(line for line in received.split(b"\r\n") if not line.startswith(b"Date: "))
