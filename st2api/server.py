"""The HTTP server under the API: eventlet's WSGI server, reading request headers without the email parser.

eventlet.wsgi parses every request's headers with http.server, which hands
them to the email package's feed parser: about half of the server's CPU per
request, more than routing and authenticating it. HttpProtocol here reads the
same request line and header block into a small case-insensitive list and
leaves everything else (keep-alive, chunked bodies, 100-continue, the size
limits on the request line and headers) to eventlet.

What eventlet recomputes on every request and that cannot change meanwhile is
computed once: the environ keys that depend only on the connection (its
getsockname() is a system call), each header name's environ key, each
response header name's Foo-Bar capitalisation and the Date header of the
current second (ResponseHeaders, around the app). The bytes on the wire are
eventlet's own.
"""

from __future__ import annotations

import re
import time
from http import HTTPStatus
from urllib.parse import unquote

from eventlet import wsgi

# http.client's limit on the number of header lines, the blank one included (431 beyond it).
MAX_HEADERS = 100
# What the email parser takes for a header name (printable ASCII but the colon).
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]*")
# Concurrent connections served by one process (eventlet's greenthread pool).
MAX_CONNECTIONS = 1000
# Past this many distinct header names a name cache starts again empty (clients may send any names).
NAME_CACHE_LIMIT = 1000


class Headers:
    """A request's header lines: first value by case-insensitive name, as email.message.Message.get."""

    __slots__ = ("_headers", "_index")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        # eventlet's get_environ reads the (name, value) pairs from _headers.
        self._headers = pairs
        self._index: dict[str, str] = {}
        for name, value in pairs:
            self._index.setdefault(name.lower(), value)

    def get(self, name: str, default=None):
        return self._index.get(name.lower(), default)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._index

    def get_content_type(self) -> str:
        """email's default for a request without Content-Type."""
        return "text/plain"


def read_headers(rfile) -> list[tuple[str, str]] | None:
    """The header lines up to the blank line as (name, value) pairs, as http.client and email read them.

    None when there are more than MAX_HEADERS lines (the blank one counted).
    A folded line (leading space or tab) continues the previous value; the
    first line that is not a header (no colon, or a name with spaces or
    non-ASCII) ends the headers, and the lines after it are read and dropped.
    """
    pairs: list[list[str]] = []
    count = 0
    ended = False
    while True:
        line = rfile.readline()
        count += 1
        if count > MAX_HEADERS:
            return None
        if line in (b"\r\n", b"\n", b""):
            return [(name, value.rstrip("\r\n")) for name, value in pairs]
        if ended:
            continue
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            if pairs:
                pairs[-1][1] += text
            continue
        name, colon, value = text.partition(":")
        if not colon or not _NAME.fullmatch(name):
            ended = True
            continue
        pairs.append([name, value.lstrip(" \t")])


def _environ_key(name: str) -> str | None:
    """The environ key eventlet files a request header under (HTTP_X_AUTH_TOKEN), None when it drops it."""
    # eventlet drops names with an underscore: X-Auth_Token would pass for X-Auth-Token.
    if "_" in name or not name:
        return None
    key = name.replace("-", "_").upper()
    # Content-Type and Content-Length are filed without the prefix, from their first value.
    return None if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


_ENVIRON_KEYS: dict[str, str | None] = {}


class HttpProtocol(wsgi.HttpProtocol):
    """eventlet's protocol with http.server's parse_request minus the email parser."""

    def setup(self) -> None:
        super().setup()
        if isinstance(self.server.app, ResponseHeaders):
            # ResponseHeaders capitalises the names, from its cache.
            self.capitalize_response_headers = False
        self._connection_environ: dict | None = None

    def _shared_environ(self) -> dict:
        """What every request on this connection shares (Server.get_environ is the same for all)."""
        sockname = wsgi.addr_to_host_port(self.request.getsockname())
        client = wsgi.addr_to_host_port(self.client_address)
        self._connection_environ = {
            **self.server.get_environ(), "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.0",
            "SERVER_NAME": sockname[0], "SERVER_PORT": str(sockname[1]),
            "REMOTE_ADDR": client[0], "REMOTE_PORT": str(client[1]), "GATEWAY_INTERFACE": "CGI/1.1",
        }
        return self._connection_environ

    def get_environ(self) -> dict:
        """eventlet's environ for the request (same keys, same values), from the connection's shared part."""
        env = (self._connection_environ or self._shared_environ()).copy()
        env["REQUEST_METHOD"] = self.command
        path, mark, query = self.path.partition("?")
        env["RAW_PATH_INFO"] = path
        env["PATH_INFO"] = unquote(path, encoding="latin1")
        if mark:
            env["QUERY_STRING"] = query
        headers = self.headers
        content_type = headers.get("content-type")
        env["CONTENT_TYPE"] = content_type if content_type is not None else headers.get_content_type()
        length = headers.get("content-length")
        if length:
            env["CONTENT_LENGTH"] = length
        env["headers_raw"] = headers_raw = tuple((name, value.strip(" \t\n\r"))
                                                 for name, value in headers._headers)
        keys = _ENVIRON_KEYS
        for name, value in headers_raw:
            try:
                key = keys[name]
            except KeyError:
                if len(keys) >= NAME_CACHE_LIMIT:
                    keys.clear()
                key = keys[name] = _environ_key(name)
            if key is None:
                continue
            if key in env:
                env[key] += "," + value
            else:
                env[key] = value
        if env.get("HTTP_EXPECT", "").lower() == "100-continue":
            wfile, wfile_line = self.wfile, b"HTTP/1.1 100 Continue\r\n"
        else:
            wfile = wfile_line = None
        chunked = env.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if not chunked and length is None:
            # RFC 9112 6.3: a request with neither has no body.
            length = "0"
        env["wsgi.input"] = env["eventlet.input"] = wsgi.Input(
            self.rfile, length, self.connection, wfile=wfile, wfile_line=wfile_line, chunked_input=chunked)
        env["eventlet.posthooks"] = []

        def set_idle():
            self.conn_state[2] = wsgi.STATE_IDLE
        env["eventlet.set_idle"] = set_idle
        return env

    def parse_request(self) -> bool:
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            number = _version_number(version)
            if number is None:
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                f"Invalid HTTP version ({version.split('/', 1)[1]})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        if path.startswith("//"):
            # As http.server: a path starting // reads as a host to clients (open redirects).
            path = "/" + path.lstrip("/")
        self.command, self.path = command, path
        pairs = read_headers(self.rfile)
        if pairs is None:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers",
                            f"got more than {MAX_HEADERS} headers")
            return False
        self.headers = Headers(pairs)
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        # eventlet answers Expect: 100-continue itself when the app reads the body.
        return True


def _version_number(version: str) -> tuple[int, int] | None:
    """(major, minor) of an HTTP/x.y token as http.server checks it, else None."""
    if not version.startswith("HTTP/"):
        return None
    parts = version[5:].split(".")
    if len(parts) != 2 or not all(part.isdigit() and len(part) <= 10 for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def _capitalized(name: str) -> str:
    """eventlet's capitalisation of a response header name: X-Request-ID -> X-Request-Id."""
    return "-".join(part.encode("latin1").capitalize().decode("latin1") for part in name.split("-"))


class ResponseHeaders:
    """The app's response headers as eventlet's protocol would write them, from caches.

    Names are capitalised as eventlet capitalises them (HttpProtocol then
    leaves them as they are). A response that carries its Content-Length gets
    the Date header eventlet would write after the others, formatted once a
    second; one without is left to eventlet, which writes its Content-Length
    before the Date.
    """

    def __init__(self, app) -> None:
        self.app = app
        self._names: dict[str, str] = {}
        self._date: tuple[int, str] = (0, "")

    def __call__(self, environ, start_response):
        names = self._names

        def start(status, headers, exc_info=None):
            out = []
            dated = False
            for given, value in headers:
                try:
                    name = names[given]
                except KeyError:
                    if len(names) >= NAME_CACHE_LIMIT:
                        names.clear()
                    name = names[given] = _capitalized(given)
                if name == "Content-Length":
                    dated = True
                elif name == "Date":
                    dated = False
                    break
                out.append((name, value))
            else:
                if dated:
                    out.append(("Date", self._now()))
                return start_response(status, out, exc_info)
            # The app dates its response itself: eventlet's rules, untouched.
            return start_response(status, [(names.get(n) or _capitalized(n), v) for n, v in headers], exc_info)

        return self.app(environ, start)

    def _now(self) -> str:
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, wsgi.format_date_time(second))
        return self._date[1]


def serve(sock, app) -> None:
    """Serve the WSGI app on a listening eventlet socket until killed."""
    wsgi.server(sock, ResponseHeaders(app), log_output=False, max_size=MAX_CONNECTIONS, protocol=HttpProtocol)
