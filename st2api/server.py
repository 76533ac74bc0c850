"""The HTTP server under the API: eventlet's WSGI server, reading request headers without the email parser.

eventlet.wsgi parses every request's headers with http.server, which hands
them to the email package's feed parser: about half of the server's CPU per
request, more than routing and authenticating it. HttpProtocol here reads the
same request line and header block into a small case-insensitive list and
leaves everything else (keep-alive, chunked bodies, 100-continue, the size
limits on the request line and headers) to eventlet.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from eventlet import wsgi

# http.client's limit on the number of header lines, the blank one included (431 beyond it).
MAX_HEADERS = 100
# What the email parser takes for a header name (printable ASCII but the colon).
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]*")
# Concurrent connections served by one process (eventlet's greenthread pool).
MAX_CONNECTIONS = 1000


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


class HttpProtocol(wsgi.HttpProtocol):
    """eventlet's protocol with http.server's parse_request minus the email parser."""

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


def serve(sock, app) -> None:
    """Serve the WSGI app on a listening eventlet socket until killed."""
    wsgi.server(sock, app, log_output=False, max_size=MAX_CONNECTIONS, protocol=HttpProtocol)
