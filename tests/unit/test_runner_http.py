"""http-request runner against a real local HTTP server in a (green) thread."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from st2common.exceptions import RunnerError
from st2common.runners.base import RunContext
from st2actionrunner.runners.http import HttpRunner


class EchoHandler(BaseHTTPRequestHandler):
    """Answers /json, /text, /status/<code>, /slow and /redirect; JSON answers echo the request."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _echo(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = urlparse(self.path)
        return {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                "headers": dict(self.headers), "body": body}

    def _send(self, code: int, body: str, content_type: str, extra: dict | None = None) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        echo = self._echo()
        path = echo["path"]
        if path == "/text":
            self._send(200, "plain words", "text/plain")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), json.dumps(echo), "application/json")
        elif path == "/slow":
            time.sleep(3)
            self._send(200, "late", "text/plain")
        elif path == "/redirect":
            self._send(302, "", "text/plain", {"Location": "/json"})
        elif path == "/badjson":
            self._send(200, "{not json", "application/json; charset=utf-8")
        else:
            self._send(200, json.dumps(echo), "application/json; charset=utf-8", {"X-Echo": "yes"})

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def make_ctx(url: str, runner_parameters: dict | None = None, **action_parameters) -> RunContext:
    return RunContext(
        execution_id="exec-http", action_ref="core.http", pack="core", entry_point="", pack_path=None,
        runner_parameters={"url": url, **(runner_parameters or {})}, action_parameters=action_parameters,
    )


def run(ctx: RunContext):
    runner = HttpRunner(ctx)
    runner.pre_run()
    return runner.run()


def test_get_json_is_parsed(server):
    # Given a server answering JSON
    result = run(make_ctx(f"{server}/json", params={"q": "st2"}))
    # Then the body comes back decoded, with StackStorm's result keys
    assert result.status == "succeeded"
    assert set(result.result) == {"status_code", "body", "parsed", "headers"}
    assert result.result["status_code"] == 200 and result.result["parsed"] is True
    body = result.result["body"]
    assert body["method"] == "GET" and body["query"] == {"q": ["st2"]}
    assert body["headers"]["User-Agent"].startswith("st2/v") and body["headers"]["X-Stanley-Action"] == "http"
    assert result.result["headers"]["X-Echo"] == "yes"


def test_text_body_is_kept_as_text(server):
    result = run(make_ctx(f"{server}/text"))
    assert result.result["body"] == "plain words" and result.result["parsed"] is False


def test_invalid_json_stays_text(server):
    result = run(make_ctx(f"{server}/badjson"))
    assert result.status == "succeeded" and result.result == {**result.result, "body": "{not json", "parsed": False}


def test_dict_body_is_sent_as_json_with_post_by_default(server):
    result = run(make_ctx(f"{server}/json", body={"a": [1, 2]}))
    echo = result.result["body"]
    assert echo["method"] == "POST"
    assert echo["headers"]["Content-Type"] == "application/json" and json.loads(echo["body"]) == {"a": [1, 2]}


def test_string_body_with_json_content_type_is_normalised(server):
    # StackStorm decodes a string body (JSON or a Python literal) and re-encodes it as JSON
    ctx = make_ctx(f"{server}/json", {"headers": {"Content-Type": "application/json"}},
                   method="put", body="{'x': True}")
    echo = run(ctx).result["body"]
    assert echo["method"] == "PUT" and json.loads(echo["body"]) == {"x": True}


def test_basic_auth_cookies_and_auth_header(server):
    ctx = make_ctx(f"{server}/json", {"username": "stanley", "password": "s3cret", "cookies": {"k": "v"}},
                   auth="x-auth-token=XYZ")
    headers = run(ctx).result["body"]["headers"]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"stanley:s3cret").decode()
    assert headers["Cookie"] == "k=v" and headers["x-auth-token"] == "XYZ"


def test_non_2xx_fails(server):
    result = run(make_ctx(f"{server}/status/404"))
    assert result.status == "failed" and result.result["status_code"] == 404
    assert run(make_ctx(f"{server}/status/206")).status == "succeeded"


def test_redirects_follow_only_when_allowed(server):
    assert run(make_ctx(f"{server}/redirect")).result["status_code"] == 302
    followed = run(make_ctx(f"{server}/redirect", {"allow_redirects": True}))
    assert followed.result["status_code"] == 200 and followed.result["body"]["path"] == "/json"


def test_timeout_gives_status_timeout(server):
    result = run(make_ctx(f"{server}/slow", timeout=0.3))
    assert result.status == "timeout" and "error" in result.result


def test_connection_refused_is_a_runner_error():
    with pytest.raises(RunnerError, match="failed"):
        run(make_ctx("http://127.0.0.1:9/json", timeout=2))


@pytest.mark.parametrize("params,message", [
    ({"url_hosts_blacklist": ["127.0.0.1"]}, "is blacklisted"),
    ({"url_hosts_whitelist": ["example.com"]}, "is not whitelisted"),
    ({"url_hosts_blacklist": ["a"], "url_hosts_whitelist": ["b"]}, "mutually exclusive"),
])
def test_host_lists(server, params, message):
    with pytest.raises(RunnerError, match=message):
        HttpRunner(make_ctx(f"{server}/json", params)).pre_run()


def test_cancel_ends_a_request_in_flight(server):
    runner = HttpRunner(make_ctx(f"{server}/slow"))
    runner.pre_run()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run()))
    thread.start()
    time.sleep(0.1)
    canceled_at = time.monotonic()
    runner.cancel()
    thread.join(5)
    assert time.monotonic() - canceled_at < 2 and outcome["result"].status == "canceled"
