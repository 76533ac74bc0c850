"""http-request runner: one HTTP request with requests, StackStorm's parameters and result.

| runner parameter      | default | meaning                                              |
| --------------------- | ------- | ---------------------------------------------------- |
| url                   |         | required                                             |
| headers, cookies      |         | objects                                              |
| username, password    |         | HTTP basic auth (password is secret)                 |
| http_proxy, https_proxy |       | proxy URLs                                           |
| verify_ssl_cert       | true    | verify HTTPS certificates                            |
| allow_redirects       | false   | follow redirects                                     |
| url_hosts_blacklist / url_hosts_whitelist | | host lists, mutually exclusive           |

Action parameters (core.http): method (POST when there is a body or a file,
else GET), body, params (query), auth ("name=value": sent as that header),
timeout (60 s), file_name / file_content / file_content_type (an upload).
A body is JSON-encoded when the content-type header says application/json
(StackStorm), and a dict or list body with no content-type is sent as JSON
with that header (StackStorm would form-encode it).

Result {status_code, body, parsed, headers}: body JSON-decoded when the
response is application/json (parsed says whether it was). Succeeded for
status codes 200-206, failed otherwise; a requests timeout gives status
timeout and {error}.
"""

from __future__ import annotations

import ast
import json
import logging
import threading
from typing import Any
from urllib.parse import urlparse

import requests
from requests.auth import HTTPBasicAuth

import st2common
from st2common import statuses
from st2common.exceptions import RunnerError
from st2common.runners.base import ActionRunner, RunContext, RunResult

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60
SUCCESS_STATUS_CODES = range(200, 207)


def url_host(url: str) -> str:
    """The host of a URL without port or IPv6 brackets, as the host lists name it."""
    parsed = urlparse(url)
    return (parsed.hostname or "").strip("[]")


def parse_body(headers: dict[str, str], text: str) -> tuple[Any, bool]:
    """(body, parsed): the JSON value when the content type is application/json and it decodes."""
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    if content_type.split(";")[0].strip() != "application/json":
        return text, False
    try:
        return json.loads(text), True
    except ValueError:
        LOG.info("response body claims JSON but does not decode; kept as text")
        return text, False


def _as_object(value: Any) -> Any:
    """A string body meant as JSON: decode it (JSON, then a Python literal), as StackStorm does."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise RunnerError(f"Request body ({value}) can't be parsed as JSON", field="body") from exc


class HttpRunner(ActionRunner):
    """http-request: sends the request and reports the response."""

    name = "http-request"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._canceled = threading.Event()
        self._done = threading.Event()

    def pre_run(self) -> None:
        params = self.ctx.runner_parameters
        if not params.get("url"):
            raise RunnerError(f"action {self.ctx.action_ref}: the url parameter is required", field="url")
        if params.get("url_hosts_blacklist") and params.get("url_hosts_whitelist"):
            raise RunnerError('"url_hosts_blacklist" and "url_hosts_whitelist" parameters are mutually '
                              "exclusive. Only one should be provided.", field="url_hosts_blacklist")
        host = url_host(params["url"])
        blacklist = [h.lower().strip("[]") for h in params.get("url_hosts_blacklist") or ()]
        whitelist = [h.lower().strip("[]") for h in params.get("url_hosts_whitelist") or ()]
        if blacklist and host in blacklist:
            raise RunnerError(f'URL "{params["url"]}" is blacklisted', field="url")
        if whitelist and host not in whitelist:
            raise RunnerError(f'URL "{params["url"]}" is not whitelisted', field="url")

    def cancel(self) -> None:
        self._canceled.set()
        self._done.set()

    def run(self) -> RunResult:
        request = self._request()
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["result"] = self._send(request)
            except BaseException as exc:  # handed to run(), which raises or reports it
                outcome["error"] = exc
            finally:
                self._done.set()

        # The request runs beside us so cancel() ends the run at once; a late reply is dropped.
        threading.Thread(target=send, name=f"http-{self.ctx.execution_id}", daemon=True).start()
        self._done.wait()
        if self._canceled.is_set() and "result" not in outcome:
            return RunResult(statuses.CANCELED, {"error": "Action canceled while the request was in flight"})
        error = outcome.get("error")
        if isinstance(error, requests.exceptions.Timeout):
            return RunResult(statuses.TIMED_OUT, {"error": str(error)})
        if isinstance(error, requests.exceptions.RequestException):
            raise RunnerError(f'request to "{request["url"]}" failed: {error}') from error
        if error is not None:
            raise error
        result = outcome["result"]
        status = statuses.SUCCEEDED if result["status_code"] in SUCCESS_STATUS_CODES else statuses.FAILED
        return RunResult(status, result)

    def _request(self) -> dict[str, Any]:
        """The keyword arguments of requests.request for this run."""
        runner, action = self.ctx.runner_parameters, self.ctx.action_parameters
        headers = dict(runner.get("headers") or {})
        headers["User-Agent"] = f"st2/v{st2common.__version__}"
        headers["X-Stanley-Action"] = self.ctx.action_ref.split(".", 1)[-1]
        lower = {k.lower(): v for k, v in headers.items()}
        body = action.get("body")
        if lower.get("content-type") == "application/json" and body is not None:
            body = json.dumps(_as_object(body))
        elif isinstance(body, (dict, list)) and "content-type" not in lower:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        auth = None
        if runner.get("username") or runner.get("password"):
            auth = HTTPBasicAuth(runner.get("username") or "", runner.get("password") or "")
        if action.get("auth"):
            name, sep, value = str(action["auth"]).partition("=")
            if not sep or not name.strip():
                raise RunnerError('the auth parameter must look like "name=value" (sent as that header)',
                                  field="auth")
            headers[name.strip()] = value.strip()
        files = None
        if action.get("file_name") and action.get("file_content") is not None:
            entry = (action["file_name"], action["file_content"])
            if action.get("file_content_type"):
                entry += (action["file_content_type"],)
            files = {action["file_name"]: entry}
        proxies = {}
        if runner.get("http_proxy"):
            proxies["http"] = runner["http_proxy"]
        if runner.get("https_proxy"):
            proxies["https"] = runner["https_proxy"]
        return {
            "method": (action.get("method") or ("POST" if body or files else "GET")).upper(),
            "url": runner["url"],
            "params": action.get("params") or None,
            "data": body,
            "headers": headers,
            "cookies": runner.get("cookies") or None,
            "auth": auth,
            "timeout": float(action.get("timeout") or DEFAULT_TIMEOUT),
            "allow_redirects": bool(runner.get("allow_redirects", False)),
            "proxies": proxies or None,
            "files": files,
            "verify": bool(runner.get("verify_ssl_cert", True)),
        }

    def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        LOG.info("execution %s: %s %s", self.ctx.execution_id, request["method"], request["url"])
        with requests.Session() as session:
            response = session.request(**request)
            try:
                headers = dict(response.headers)
                body, parsed = parse_body(headers, response.text)
            finally:
                response.close()
        return {"status_code": response.status_code, "body": body, "parsed": parsed, "headers": headers}
