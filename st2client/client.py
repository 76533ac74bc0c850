"""The Python client: where the API is, how to authenticate, one manager per resource.

Endpoints and credentials come from, in this order: explicit arguments, the
``ST2_*`` environment variables StackStorm's client reads, the CLI config file
(``~/.st2/config``, or ``ST2_CONFIG_FILE``), then the defaults
(API ``http://127.0.0.1:9101/v1``, auth ``:9100``, stream ``:9102/v1``).
Requests carry ``X-Auth-Token`` or ``St2-Api-Key``. A response of 400 or more
raises :class:`HTTPError` carrying the server's ``faultstring``.
"""

from __future__ import annotations

import configparser
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import requests

from st2client import models
from st2client.models import Resource

LOG = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1"
DEFAULT_API_VERSION = "v1"
DEFAULT_API_PORT, DEFAULT_AUTH_PORT, DEFAULT_STREAM_PORT = 9101, 9100, 9102
DEFAULT_CONFIG_PATH = os.path.join("~", ".st2", "config")

# The CLI config file: section -> option -> (type, default), as StackStorm's client reads it.
CONFIG_OPTIONS: dict[str, dict[str, tuple[str, Any]]] = {
    "general": {"base_url": ("str", None), "api_version": ("str", None), "cacert": ("str", None),
                "silence_ssl_warnings": ("bool", False), "silence_schema_output": ("bool", True)},
    "cli": {"debug": ("bool", False), "cache_token": ("bool", True), "timezone": ("str", "UTC")},
    "credentials": {"username": ("str", None), "password": ("str", None), "api_key": ("str", None),
                    "basic_auth": ("str", None)},
    "api": {"url": ("str", None)},
    "auth": {"url": ("str", None)},
    "stream": {"url": ("str", None)},
}


class St2ClientError(Exception):
    """Root of the client's errors."""


class HTTPError(St2ClientError):
    """The API answered with a 4xx or 5xx; faultstring is the server's message."""

    def __init__(self, status_code: int, reason: str, url: str, faultstring: str | None = None):
        self.status_code, self.reason, self.url, self.faultstring = status_code, reason, url, faultstring
        kind = "Client" if status_code < 500 else "Server"
        message = f"{status_code} {kind} Error: {reason}"
        if faultstring:
            message += f"\nMESSAGE: {faultstring}"
        super().__init__(f"{message} for url: {url}")


class ConnectionFailed(St2ClientError):
    """Nothing answered at the endpoint."""


def config_path(env: Mapping[str, str] | None = None) -> str:
    """The CLI config file to read: ST2_CONFIG_FILE or ~/.st2/config."""
    env = os.environ if env is None else env
    return os.path.abspath(os.path.expanduser(env.get("ST2_CONFIG_FILE") or DEFAULT_CONFIG_PATH))


def default_config() -> dict[str, dict[str, Any]]:
    """The CLI config when there is no file: every option at its default."""
    return {section: {name: default for name, (_, default) in options.items()}
            for section, options in CONFIG_OPTIONS.items()}


def read_config(path: str | None = None) -> dict[str, dict[str, Any]]:
    """The CLI config as typed values; every option present, defaults for what the file lacks."""
    result = default_config()
    path = path or config_path()
    if not os.path.isfile(path):
        return result
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except configparser.Error as error:
        raise St2ClientError(f'Config file "{path}" is not valid: {error}') from error
    for section, options in CONFIG_OPTIONS.items():
        for name, (kind, _) in options.items():
            if not parser.has_option(section, name):
                continue
            try:
                value = parser.getboolean(section, name) if kind == "bool" else parser.get(section, name)
            except ValueError as error:
                raise St2ClientError(f'Config file "{path}": [{section}] {name}: {error}') from error
            result[section][name] = value
    return result


@dataclass(frozen=True)
class ClientSettings:
    """Where the client talks and with which credentials."""

    base_url: str
    api_url: str
    auth_url: str
    stream_url: str
    api_version: str
    cacert: str | bool | None = None
    token: str | None = None
    api_key: str | None = None
    basic_auth: tuple[str, str] | None = None
    debug: bool = False


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _cacert(value: Any) -> str | bool | None:
    if isinstance(value, str) and value.lower() in ("true", "1", "t", "y", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "f", "n", "no"):
        return False
    return value


def resolve_settings(options: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                     config: Mapping[str, Mapping[str, Any]] | None = None) -> ClientSettings:
    """Settings from explicit options > environment > CLI config > defaults, per option."""
    opts = dict(options or {})
    env = os.environ if env is None else env
    cfg = {section: dict((config or {}).get(section) or {}) for section in CONFIG_OPTIONS}

    base = _first(opts.get("base_url"), env.get("ST2_BASE_URL"), cfg["general"].get("base_url"),
                  DEFAULT_BASE_URL).rstrip("/")
    version = _first(opts.get("api_version"), env.get("ST2_API_VERSION"), cfg["general"].get("api_version"),
                     DEFAULT_API_VERSION)
    api_url = _first(opts.get("api_url"), env.get("ST2_API_URL"), cfg["api"].get("url"),
                     f"{base}:{DEFAULT_API_PORT}/{version}")
    auth_url = _first(opts.get("auth_url"), env.get("ST2_AUTH_URL"), cfg["auth"].get("url"),
                      f"{base}:{DEFAULT_AUTH_PORT}")
    stream_url = _first(opts.get("stream_url"), env.get("ST2_STREAM_URL"), cfg["stream"].get("url"),
                        f"{base}:{DEFAULT_STREAM_PORT}/{version}")
    basic_auth = _first(opts.get("basic_auth"), cfg["credentials"].get("basic_auth"))
    if basic_auth is not None and not isinstance(basic_auth, tuple):
        user, sep, password = str(basic_auth).partition(":")
        if not sep:
            raise St2ClientError("basic_auth must be in the username:password notation")
        basic_auth = (user, password)
    cacert = _cacert(_first(opts.get("cacert"), env.get("ST2_CACERT"), cfg["general"].get("cacert")))
    if isinstance(cacert, str) and not os.path.isfile(cacert):
        raise St2ClientError(f'CA cert file "{cacert}" does not exist.')
    return ClientSettings(
        base_url=base, api_url=api_url.rstrip("/"), auth_url=auth_url.rstrip("/"),
        stream_url=stream_url.rstrip("/"), api_version=version, cacert=cacert,
        token=_first(opts.get("token"), env.get("ST2_AUTH_TOKEN")),
        api_key=_first(opts.get("api_key"), env.get("ST2_API_KEY"), cfg["credentials"].get("api_key")),
        basic_auth=basic_auth, debug=bool(opts.get("debug") or cfg["cli"].get("debug")))


class ResourceManager:
    """List, get, create, update and delete one resource type over REST."""

    def __init__(self, client: "Client", resource: type[Resource], endpoint: str = "api"):
        self.client, self.resource, self.endpoint = client, resource, endpoint

    @property
    def path(self) -> str:
        return "/" + self.resource.get_url_path_name()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.client.request(method, path, endpoint=self.endpoint, **kwargs)

    def _many(self, response: requests.Response) -> list:
        return [self.resource.deserialize(item) for item in response.json()]

    def get_all(self, limit: int | None = None, offset: int | None = None, pack: str | None = None,
                params: dict | None = None, token: str | None = None, api_key: str | None = None,
                **filters: Any) -> list:
        """GET the collection; filters become query parameters."""
        query = dict(params or {}, **{k: v for k, v in filters.items() if v is not None})
        for name, value in (("limit", limit), ("offset", offset), ("pack", pack)):
            if value:
                query[name] = value
        return self._many(self._call("GET", self.path, params=query, token=token, api_key=api_key))

    def query_with_count(self, token: str | None = None, api_key: str | None = None,
                         params: dict | None = None, **filters: Any) -> tuple[list, int | None]:
        """GET /<res>/?filters; the rows and X-Total-Count (None when absent). A 404 is no rows."""
        query = dict(params or {}, **{k: v for k, v in filters.items() if v is not None})
        response = self._call("GET", self.path + "/", params=query, token=token, api_key=api_key, missing_ok=True)
        if response.status_code == 404:
            return [], None
        total = response.headers.get("X-Total-Count")
        return self._many(response), int(total) if total is not None else None

    def query(self, **filters: Any) -> list:
        """GET /<res>/?filters."""
        return self.query_with_count(**filters)[0]

    def get_by_id(self, id: str, params: dict | None = None, token: str | None = None,
                  api_key: str | None = None) -> Resource | None:
        """GET /<res>/<id>; None when it does not exist."""
        response = self._call("GET", f"{self.path}/{id}", params=params, token=token, api_key=api_key,
                              missing_ok=True)
        return None if response.status_code == 404 else self.resource.deserialize(response.json())

    def get_by_ref_or_id(self, ref_or_id: str, **kwargs: Any) -> Resource | None:
        """GET /<res>/<ref or id>; None when it does not exist."""
        return self.get_by_id(ref_or_id, **kwargs)

    def get_by_name(self, name: str, **kwargs: Any) -> Resource | None:
        """The one resource with this name, or None."""
        found = self.query(name=name, **kwargs)
        if len(found) > 1:
            raise St2ClientError(f'More than one {self.resource.__name__.lower()} named "{name}" are found.')
        return found[0] if found else None

    def get_property(self, id: str, name: str, token: str | None = None, api_key: str | None = None,
                     **params: Any) -> list | None:
        """GET /<res>/<id>/<name>/ as resources; None on 404."""
        response = self._call("GET", f"{self.path}/{id}/{name}/", params=params or None, token=token,
                              api_key=api_key, missing_ok=True)
        return None if response.status_code == 404 else self._many(response)

    def create(self, instance: Resource | dict, **kwargs: Any) -> Resource:
        """POST a new resource."""
        body = instance.serialize() if isinstance(instance, Resource) else instance
        return self.resource.deserialize(self._call("POST", self.path, json=body, **kwargs).json())

    def update(self, instance: Resource, **kwargs: Any) -> Resource:
        """PUT the resource at its id."""
        response = self._call("PUT", f"{self.path}/{instance.id}", json=instance.serialize(), **kwargs)
        return self.resource.deserialize(response.json())

    def delete(self, instance: Resource, **kwargs: Any) -> bool:
        """DELETE the resource; a 404 counts as done."""
        self._call("DELETE", f"{self.path}/{instance.id}", missing_ok=True, **kwargs)
        return True

    def delete_by_id(self, instance_id: str, **kwargs: Any) -> dict | bool:
        """DELETE /<res>/<id>; the response body when there is one."""
        response = self._call("DELETE", f"{self.path}/{instance_id}", missing_ok=True, **kwargs)
        try:
            return response.json() or True
        except ValueError:
            return True


class ActionManager(ResourceManager):
    """Actions, plus removal of their files and their entry point text."""

    def delete_action(self, instance: Resource, remove_files: bool = False, **kwargs: Any) -> bool:
        """DELETE an action, optionally removing its files from the pack."""
        self._call("DELETE", f"{self.path}/{instance.id}", json={"remove_files": remove_files},
                   missing_ok=True, **kwargs)
        return True

    def get_entrypoint(self, ref_or_id: str, **kwargs: Any) -> str:
        """The text of the action's entry point file."""
        return self._call("GET", f"{self.path}/views/entry_point/{ref_or_id}", **kwargs).text


class ExecutionManager(ResourceManager):
    """Executions: request, re-run, cancel, pause, resume, output, children."""

    def re_run(self, execution_id: str, parameters: dict | None = None, tasks: list | None = None,
               no_reset: list | None = None, delay: int = 0, **kwargs: Any) -> Resource:
        """POST /executions/<id>/re_run with parameter overrides."""
        tasks, no_reset = tasks or [], no_reset or []
        if set(no_reset) - set(tasks):
            raise St2ClientError("List of tasks to reset does not match the tasks to rerun.")
        body = {"parameters": parameters or {}, "tasks": tasks,
                "reset": sorted(set(tasks) - set(no_reset)), "delay": delay}
        response = self._call("POST", f"{self.path}/{execution_id}/re_run", json=body, **kwargs)
        return self.resource.deserialize(response.json())

    def cancel(self, execution_id: str, **kwargs: Any) -> dict | bool:
        """Request cancellation; the server's answer (it may carry a faultstring)."""
        return self.delete_by_id(execution_id, **kwargs)

    def pause(self, execution_id: str, **kwargs: Any) -> Resource:
        """Ask a workflow execution to pause."""
        return self._set_status(execution_id, "pausing", **kwargs)

    def resume(self, execution_id: str, **kwargs: Any) -> Resource:
        """Ask a paused workflow execution to resume."""
        return self._set_status(execution_id, "resuming", **kwargs)

    def _set_status(self, execution_id: str, status: str, **kwargs: Any) -> Resource:
        response = self._call("PUT", f"{self.path}/{execution_id}", json={"status": status}, **kwargs)
        return self.resource.deserialize(response.json())

    def get_output(self, execution_id: str, output_type: str | None = None, **kwargs: Any) -> str:
        """The stored stdout/stderr of an execution as text."""
        params = {"output_type": output_type} if output_type else None
        return self._call("GET", f"{self.path}/{execution_id}/output", params=params, **kwargs).text

    def get_result(self, execution_id: str, **kwargs: Any) -> str:
        """The result as JSON text."""
        return self._call("GET", f"{self.path}/{execution_id}/result", **kwargs).text

    def get_children(self, execution_id: str, depth: int = -1, **kwargs: Any) -> list:
        """The descendants of a workflow execution."""
        response = self._call("GET", f"{self.path}/{execution_id}/children", params={"depth": depth}, **kwargs)
        return self._many(response)


class RunnerManager(ResourceManager):
    """Runner types, addressed by name."""

    def get_by_name_or_id(self, name_or_id: str, **kwargs: Any) -> Resource | None:
        """By ?name= first, then by /runnertypes/<id>, as StackStorm's CLI looks them up."""
        return self.get_by_name(name_or_id, **kwargs) or self.get_by_id(name_or_id, **kwargs)


class PackManager(ResourceManager):
    """Packs, plus register / install / remove requests."""

    def register(self, packs: list[str] | None = None, types: list[str] | None = None, **kwargs: Any) -> dict:
        """POST /packs/register; the counts of what was registered."""
        body = {k: v for k, v in (("packs", packs), ("types", types)) if v}
        return self._call("POST", f"{self.path}/register", json=body, **kwargs).json()

    def install(self, packs: list[str], force: bool = False, skip_dependencies: bool = False,
                **kwargs: Any) -> dict:
        """POST /packs/install; {"execution_id"} of the install workflow."""
        body = {"packs": packs, "force": force, "skip_dependencies": skip_dependencies}
        return self._call("POST", f"{self.path}/install", json=body, **kwargs).json()

    def remove(self, packs: list[str], **kwargs: Any) -> dict:
        """POST /packs/uninstall; {"execution_id"} of the uninstall workflow."""
        return self._call("POST", f"{self.path}/uninstall", json={"packs": packs}, **kwargs).json()


class KeyValuePairManager(ResourceManager):
    """Datastore items, addressed by name within a scope."""

    def get_by_name(self, name: str, token: str | None = None, api_key: str | None = None,
                    **params: Any) -> Resource | None:
        """GET /keys/<name>?scope=...; None when absent."""
        response = self._call("GET", f"{self.path}/{name}", params=params or None, token=token,
                              api_key=api_key, missing_ok=True)
        return None if response.status_code == 404 else self.resource.deserialize(response.json())


class RuleManager(ResourceManager):
    """Rules, plus the rule tester."""

    def test(self, rule: dict | None = None, rule_ref: str | None = None, trigger_instance_id: str | None = None,
             trigger_instance: dict | None = None, **kwargs: Any) -> dict:
        """POST /rules/test: would a rule (a document, or the stored one with rule_ref) match this stored or
        given trigger instance, and with what action parameters; nothing is run.
        The answer is {matched, reason, error?, criteria, action, rule, trigger_instance}."""
        parts = {"rule": rule, "rule_ref": rule_ref, "trigger_instance_id": trigger_instance_id,
                 "trigger_instance": trigger_instance}
        body = {name: value for name, value in parts.items() if value is not None}
        return self._call("POST", f"{self.path}/test", json=body, **kwargs).json()


class InquiryManager(ResourceManager):
    """Inquiries, plus answering one."""

    def respond(self, inquiry_id: str, inquiry_response: dict, **kwargs: Any) -> Resource:
        """PUT /inquiries/<id> {id, response}; {id, response} as accepted."""
        body = {"id": inquiry_id, "response": inquiry_response}
        return self.resource.deserialize(self._call("PUT", f"{self.path}/{inquiry_id}", json=body, **kwargs).json())


class TriggerInstanceManager(ResourceManager):
    """Trigger instances, plus re-emitting one."""

    def re_emit(self, trigger_instance_id: str, **kwargs: Any) -> dict:
        """POST /triggerinstances/<id>/re_emit; {message, payload}."""
        return self._call("POST", f"{self.path}/{trigger_instance_id}/re_emit", **kwargs).json()


# Resource model -> (Client attribute, manager class, endpoint).
MANAGERS: dict[type[Resource], tuple[str, type[ResourceManager], str]] = {
    models.Action: ("actions", ActionManager, "api"),
    models.Execution: ("executions", ExecutionManager, "api"),
    models.RunnerType: ("runners", RunnerManager, "api"),
    models.Pack: ("packs", PackManager, "api"),
    models.KeyValuePair: ("keys", KeyValuePairManager, "api"),
    models.Rule: ("rules", RuleManager, "api"),
    models.RuleEnforcement: ("ruleenforcements", ResourceManager, "api"),
    models.TriggerType: ("triggertypes", ResourceManager, "api"),
    models.Trigger: ("triggers", ResourceManager, "api"),
    models.TriggerInstance: ("triggerinstances", TriggerInstanceManager, "api"),
    models.Sensor: ("sensors", ResourceManager, "api"),
    models.Policy: ("policies", ResourceManager, "api"),
    models.PolicyType: ("policytypes", ResourceManager, "api"),
    models.ActionAlias: ("actionaliases", ResourceManager, "api"),
    models.Inquiry: ("inquiries", InquiryManager, "api"),
    models.Trace: ("trace", ResourceManager, "api"),
    models.Webhook: ("webhooks", ResourceManager, "api"),
    models.Timer: ("timers", ResourceManager, "api"),
    models.ApiKey: ("apikeys", ResourceManager, "api"),
    models.Token: ("tokens", ResourceManager, "auth"),
}


class Client:
    """A StackStorm API client; ``client.actions``, ``client.executions`` ... are its managers."""

    def __init__(self, base_url: str | None = None, auth_url: str | None = None, api_url: str | None = None,
                 stream_url: str | None = None, api_version: str | None = None, cacert: str | bool | None = None,
                 debug: bool = False, token: str | None = None, api_key: str | None = None,
                 basic_auth: str | tuple[str, str] | None = None, *, env: Mapping[str, str] | None = None,
                 config: Mapping[str, Mapping[str, Any]] | None = None):
        env = os.environ if env is None else env
        if config is None:
            skip = str(env.get("ST2_CLI_SKIP_CONFIG", "0")).strip() not in ("", "0")
            config = {} if skip else read_config(config_path(env))
        self.settings = resolve_settings(
            {"base_url": base_url, "auth_url": auth_url, "api_url": api_url, "stream_url": stream_url,
             "api_version": api_version, "cacert": cacert, "debug": debug, "token": token,
             "api_key": api_key, "basic_auth": basic_auth}, env, config)
        self.token, self.api_key = self.settings.token, self.settings.api_key
        self.endpoints = {"base": self.settings.base_url, "api": self.settings.api_url,
                          "auth": self.settings.auth_url, "stream": self.settings.stream_url}
        self.session = requests.Session()
        self.managers: dict[str, ResourceManager] = {}
        for model, (attribute, manager_class, endpoint) in MANAGERS.items():
            manager = manager_class(self, model, endpoint)
            self.managers[model.__name__] = manager
            setattr(self, attribute, manager)
        self.managers["LiveAction"] = self.liveactions = self.executions

    def request(self, method: str, path: str, *, endpoint: str = "api", params: Mapping | None = None,
                json: Any = None, token: str | None = None, api_key: str | None = None,
                missing_ok: bool = False) -> requests.Response:
        """One HTTP call to an endpoint; raises HTTPError for 4xx/5xx (a 404 passes when missing_ok)."""
        url = self.endpoints[endpoint] + path
        headers = {}
        token, api_key = token or self.token, api_key or self.api_key
        if token:
            headers["X-Auth-Token"] = token
        elif api_key:
            headers["St2-Api-Key"] = api_key
        kwargs: dict[str, Any] = {"params": params, "headers": headers, "auth": self.settings.basic_auth}
        if json is not None:
            kwargs["json"] = json
        if url.startswith("https:"):
            kwargs["verify"] = self._verify()
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as error:
            raise ConnectionFailed(f"Cannot connect to {url}: {error}") from error
        if self.settings.debug:
            _print_debug(response)
        if response.status_code >= 400 and not (missing_ok and response.status_code == 404):
            raise _http_error(response)
        return response

    def create_token(self, username: str, password: str, ttl: int | None = None) -> dict:
        """POST <auth>/tokens with Basic auth; the token document {user, token, expiry ...}."""
        body = {"ttl": ttl} if ttl else {}
        url = self.endpoints["auth"] + "/tokens"
        try:
            response = self.session.post(url, json=body, auth=(username, password), verify=self._verify())
        except requests.ConnectionError as error:
            raise ConnectionFailed(f"Cannot connect to {url}: {error}") from error
        if response.status_code >= 400:
            raise _http_error(response)
        return response.json()

    def _verify(self) -> str | bool:
        # As StackStorm's client: without a CA bundle, https certificates are not checked.
        return self.settings.cacert if self.settings.cacert is not None else False

    def get_user_info(self) -> dict:
        """GET /user: who the credentials belong to."""
        return self.request("GET", "/user").json()


def _http_error(response: requests.Response) -> HTTPError:
    try:
        body = response.json()
        fault = body.get("faultstring") if isinstance(body, dict) else None
    except ValueError:
        fault = response.text.strip()[:500] or None
    return HTTPError(response.status_code, response.reason or "", response.url, fault)


def _print_debug(response: requests.Response) -> None:
    """Print the request as a curl command and the raw response, like StackStorm's --debug."""
    request = response.request
    parts = ["curl", "-X", request.method]
    for name, value in request.headers.items():
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    if request.body:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        parts += ["--data-binary", shlex.quote(body)]
    parts.append(shlex.quote(request.url))
    print("# -------- begin %d request ----------" % id(request), file=sys.stderr)
    print(" ".join(parts), file=sys.stderr)
    print("# -------- begin %d response ----------" % id(request), file=sys.stderr)
    print(response.text, file=sys.stderr)
    print("# -------- end %d response ------------" % id(request), file=sys.stderr)
    LOG.debug("%s %s -> %d", request.method, request.url, response.status_code)

