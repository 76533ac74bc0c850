"""Settings: one object built once from an INI file plus environment overrides.

The file uses StackStorm's section and option names (st2.conf). Every option
the platform reads is declared in OPTIONS below with its type and default;
anything else in the file is an error, so a typo never silently falls back to
a default. ``ST2_<SECTION>__<OPTION>`` environment variables override the file
(``ST2_DATABASE__PORT=27018``), as StackStorm's oslo.config setup does.

Relative paths are resolved against ``[system] base_path``, which itself, when
relative, is resolved against the folder holding the config file. The shipped
conf/st2.conf sets ``base_path = ..`` so a checkout runs from where it lies.
"""

from __future__ import annotations

import configparser
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from st2common.exceptions import ConfigError

ENV_PREFIX = "ST2_"
CONFIG_PATH_ENV = "ST2_CONFIG_PATH"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "conf" / "st2.conf"


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on", "y"):
        return True
    if lowered in ("0", "false", "no", "off", "n", ""):
        return False
    raise ValueError("not a boolean")


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.replace(":", ",").split(",") if part.strip())


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(value: str) -> int:
    return int(value.strip())


def _float(value: str) -> float:
    return float(value.strip())


def _str(value: str) -> str:
    return value.strip()


# Markers for values that need post-processing once base_path is known.
PATH = "path"
PATHS = "paths"
MONGO_URL = "mongo_url"
BUS_URL = "bus_url"
HTTP_URL = "http_url"


@dataclass(frozen=True)
class Option:
    """One declared option: how to parse it and its default (already typed)."""

    kind: str
    default: Any
    secret: bool = False


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": _str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "list": _csv,
    PATH: _str,
    PATHS: _list,
    MONGO_URL: _str,
    BUS_URL: _str,
    HTTP_URL: _str,
}


def _o(kind: str, default: Any = None, secret: bool = False) -> Option:
    return Option(kind, default, secret)


# The documented table of every option. Names follow StackStorm's st2.conf.
OPTIONS: dict[str, dict[str, Option]] = {
    "system": {
        "base_path": _o(PATH, "."),
        "debug": _o("bool", False),
        "validate_trigger_parameters": _o("bool", True),
        "validate_trigger_payload": _o("bool", True),
        "validate_output_schema": _o("bool", False),
        "admin_users": _o("list", ()),
    },
    "database": {
        # host may be a full mongodb:// URL, as StackStorm allows.
        "host": _o(MONGO_URL, "127.0.0.1"),
        "port": _o("int", 27017),
        "db_name": _o("str", "st2"),
        "username": _o("str", None),
        "password": _o("str", None, secret=True),
        "connection_timeout": _o("int", 3000),
        "connection_retry_max_delay_m": _o("int", 3),
        "connection_retry_backoff_max_s": _o("int", 10),
        "connection_retry_backoff_mul": _o("int", 1),
        "tls": _o("bool", False),
        "tls_ca_file": _o(PATH, None),
        "authentication_mechanism": _o("str", None),
        # Ours: when true, st2ctl runs the nx-27017 wire server on embedded_path.
        "embedded": _o("bool", False),
        "embedded_path": _o(PATH, "var/db/st2.sqlite"),
    },
    "messaging": {
        "url": _o(BUS_URL, "amqp://guest:guest@127.0.0.1:5672//"),
        "prefix": _o("str", "st2"),
        "connection_retries": _o("int", 10),
        "connection_retry_wait": _o("int", 10000),
        "compression": _o("str", None),
        # Ours: the filesystem:// transport's shared folder and polling interval.
        "filesystem_path": _o(PATH, "var/bus"),
        # Ours: keep the filesystem bus's message files in shared memory (st2common/transport/memfolder.py).
        "filesystem_memory": _o("bool", True),
        "filesystem_polling_interval": _o("float", 0.01),
        # Ours: how often a failing message is redelivered before the record fails.
        "max_redeliveries": _o("int", 3),
        "prefetch_count": _o("int", 64),
    },
    "coordination": {
        "url": _o("str", None),
        "lock_timeout": _o("int", 60),
        "service_registry": _o("bool", False),
    },
    "api": {
        "host": _o("str", "127.0.0.1"),
        "port": _o("int", 9101),
        "allow_origin": _o("list", ()),
        "mask_secrets": _o("bool", True),
        "max_page_size": _o("int", 100),
        "auth_cookie_secure": _o("bool", True),
        "auth_cookie_same_site": _o("str", "lax"),
        "logging": _o(PATH, None),
        "workers": _o("int", 1),
        "max_body_size": _o("int", 10 * 1024 * 1024),
    },
    "auth": {
        "enable": _o("bool", True),
        "mode": _o("str", "standalone"),
        "backend": _o("str", "flat_file"),
        "backend_kwargs": _o("str", None),
        "token_ttl": _o("int", 86400),
        "service_token_ttl": _o("int", 86400),
        "api_url": _o(HTTP_URL, None),
        "host": _o("str", "127.0.0.1"),
        "port": _o("int", 9100),
        "use_ssl": _o("bool", False),
        "logging": _o(PATH, None),
        # Ours: the flat_file backend's htpasswd file when backend_kwargs names none.
        "flat_file_path": _o(PATH, "var/auth/htpasswd"),
        # Ours: seconds a checked token or API key is trusted without a database read.
        "credential_cache_ttl": _o("float", 5.0),
    },
    "stream": {
        "host": _o("str", "127.0.0.1"),
        "port": _o("int", 9102),
        "heartbeat": _o("int", 25),
        "logging": _o(PATH, None),
    },
    "content": {
        "system_packs_base_path": _o(PATH, "contrib/packs"),
        "packs_base_paths": _o(PATHS, ("var/packs",)),
        "index_url": _o("str", "https://index.stackstorm.org/v1/index.json"),
        "pack_group": _o("str", "st2packs"),
        "configs_path": _o(PATH, "var/configs"),
    },
    "actionrunner": {
        "python_binary": _o(PATH, None),
        "virtualenv_binary": _o(PATH, None),
        "virtualenv_opts": _o("str", "--system-site-packages"),
        "pip_opts": _o("str", None),
        "python_runner_log_level": _o("str", "DEBUG"),
        "stream_output": _o("bool", True),
        "stream_output_buffer_size": _o("int", -1),
        "actions_pool_size": _o("int", 60),
        "workflows_pool_size": _o("int", 40),
        "graceful_shutdown": _o("bool", True),
        "exit_still_active_check": _o("int", 300),
        "still_active_check_interval": _o("int", 2),
        "logging": _o(PATH, None),
        # Ours: result size cap (bytes of JSON) before truncation with a marker.
        "max_result_size": _o("int", 4 * 1024 * 1024),
        # Ours: a worker whose heartbeat is older than this is dead.
        "heartbeat_interval": _o("float", 5.0),
        "worker_dead_after": _o("float", 30.0),
    },
    "scheduler": {
        "sleep_interval": _o("float", 0.1),
        "gc_interval": _o("float", 10),
        "pool_size": _o("int", 10),
        "retry_max_attempt": _o("int", 10),
        "retry_wait_msec": _o("int", 3000),
        "execution_scheduling_timeout_threshold_min": _o("float", 1),
        "logging": _o(PATH, None),
    },
    "workflow_engine": {
        "gc_max_idle_sec": _o("int", 0),
        "retry_stop_max_msec": _o("int", 60000),
        "retry_wait_fixed_msec": _o("int", 1000),
        "retry_max_jitter_msec": _o("int", 1000),
        "exit_still_active_check": _o("int", 300),
        "still_active_check_interval": _o("int", 2),
        "logging": _o(PATH, None),
    },
    "sensorcontainer": {
        "sensor_node_name": _o("str", "sensornode1"),
        "partition_provider": _o("str", "name:default"),
        "single_sensor_mode": _o("bool", False),
        "logging": _o(PATH, None),
    },
    "rulesengine": {
        "logging": _o(PATH, None),
        # Ours: trigger instances handled at once; their database writes go a quarter of them to a batch
        # (st2rulesengine.batches), so the matching of some overlaps the writes of others.
        "prefetch_count": _o("int", 512),
    },
    "notifier": {"logging": _o(PATH, None)},
    "timersengine": {
        "enable": _o("bool", True),
        "local_timezone": _o("str", "America/Los_Angeles"),
        "logging": _o(PATH, None),
    },
    "action_sensor": {
        "enable": _o("bool", True),
        "emit_when": _o("list", ("succeeded", "failed", "timeout", "canceled", "abandoned")),
    },
    "keyvalue": {
        "enable_encryption": _o("bool", True),
        "encryption_key_path": _o(PATH, "var/keys/datastore_key.json"),
        # Ours: seconds between st2api's purges of expired items, a fallback for the TTL index (0: never).
        "purge_interval": _o("float", 60.0),
    },
    "system_user": {
        "user": _o("str", "stanley"),
        "ssh_key_file": _o(PATH, "~/.ssh/stanley_rsa"),
    },
    "ssh_runner": {
        "remote_dir": _o("str", "/tmp"),
        "allow_partial_failure": _o("bool", False),
        "max_parallel_actions": _o("int", 50),
        "use_ssh_config": _o("bool", False),
        "ssh_config_file_path": _o(PATH, "~/.ssh/config"),
        "ssh_connect_timeout": _o("int", 60),
    },
    "log": {
        "mask_secrets": _o("bool", True),
        "mask_secrets_blacklist": _o("list", ()),
        "excludes": _o("list", ()),
        "redirect_stderr": _o("bool", False),
        # Ours: where service logs and pid files go, and the default level.
        "path": _o(PATH, "var/log"),
        "level": _o("str", "INFO"),
    },
    "packs": {"enable_common_libs": _o("bool", False)},
    "webui": {"webui_base_url": _o("str", "https://127.0.0.1")},
    # Ours: on by default (StackStorm's is off, which makes every user an admin), with
    # roles assigned in YAML files as StackStorm's rbac/assignments/ folder holds them.
    "rbac": {
        "enable": _o("bool", True),
        "backend": _o("str", "default"),
        "assignments_path": _o(PATH, "var/rbac/assignments"),
    },
    "garbagecollector": {
        "collection_interval": _o("int", 600),
        "action_executions_ttl": _o("int", None),
        "action_executions_output_ttl": _o("int", 7),
        "trigger_instances_ttl": _o("int", None),
    },
}

_MONGO_SCHEMES = ("mongodb", "mongodb+srv")
_BUS_SCHEMES = ("amqp", "amqps", "pyamqp", "filesystem", "memory")


def _check_url(section: str, option: str, kind: str, value: str | None) -> None:
    if value is None or kind not in (MONGO_URL, BUS_URL, HTTP_URL):
        return
    if kind == MONGO_URL:
        if "://" not in value:
            if not value or any(ch in value for ch in "/ @"):
                raise ConfigError(section, option, f"[{section}] {option}: malformed host {value!r}")
            return
        schemes = _MONGO_SCHEMES
    elif kind == BUS_URL:
        schemes = _BUS_SCHEMES
    else:
        schemes = ("http", "https")
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(section, option,
                          f"[{section}] {option}: malformed URL {value!r}: scheme must be one of {', '.join(schemes)}")
    if parts.scheme not in ("filesystem", "memory") and not parts.hostname:
        raise ConfigError(section, option, f"[{section}] {option}: malformed URL {value!r}: no host")
    try:
        parts.port
    except ValueError:
        raise ConfigError(section, option, f"[{section}] {option}: malformed URL {value!r}: bad port") from None


class Section(types.SimpleNamespace):
    """The options of one section, as attributes."""

    def __repr__(self) -> str:
        return f"Section({sorted(vars(self))})"


@dataclass(frozen=True)
class Settings:
    """The whole configuration: one attribute per section, plus where it came from."""

    sections: Mapping[str, Section]
    path: Path | None
    base_path: Path

    def __getattr__(self, name: str) -> Section:
        try:
            return self.sections[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def var_path(self) -> Path:
        """The folder for runtime state (pids, logs, the embedded database and bus)."""
        return self.base_path / "var"

    def database_url(self) -> str:
        """The MongoDB URL the platform connects to."""
        db = self.database
        if "://" in db.host:
            return db.host
        return f"mongodb://{db.host}:{db.port}/{db.db_name}"


def _raw_values(path: Path | None, env: Mapping[str, str]) -> dict[tuple[str, str], str]:
    raw: dict[tuple[str, str], str] = {}
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(None, None, f"cannot read config file {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(None, None, f"config file {path} is malformed: {exc}") from None
        for section in parser.sections():
            if section not in OPTIONS:
                raise ConfigError(section, None, f"unknown section [{section}] in {path}")
            for option, value in parser.items(section, raw=True):
                if option not in OPTIONS[section]:
                    raise ConfigError(section, option, f"unknown option {option} in [{section}] of {path}")
                raw[(section, option)] = value
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == CONFIG_PATH_ENV:
            continue
        section, _, option = name[len(ENV_PREFIX):].lower().partition("__")
        if section not in OPTIONS:
            # ST2_* variables also belong to the CLI (ST2_BASE_URL ...); only the
            # double-underscore form is ours, and an unknown section there is a typo.
            raise ConfigError(section, None, f"unknown section in environment variable {name}")
        if option not in OPTIONS[section]:
            raise ConfigError(section, option, f"unknown option in environment variable {name}")
        raw[(section, option)] = value
    return raw


def _resolve(base: Path, value: str | None) -> Path | None:
    if value is None or value == "":
        return None
    candidate = Path(os.path.expanduser(value))
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from a file (or ST2_CONFIG_PATH, or conf/st2.conf) and the environment."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_PATH_ENV) or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    config_path = Path(path).resolve() if path is not None else None
    raw = _raw_values(config_path, env)

    anchor = config_path.parent if config_path else Path.cwd()
    typed: dict[str, dict[str, Any]] = {}
    for section, options in OPTIONS.items():
        values: dict[str, Any] = {}
        for option, spec in options.items():
            if (section, option) in raw:
                text = raw[(section, option)]
                try:
                    value = _PARSERS[spec.kind](text)
                except ValueError:
                    raise ConfigError(
                        section, option, f"[{section}] {option} = {text!r} is not a valid {spec.kind}"
                    ) from None
            else:
                value = spec.default
            _check_url(section, option, spec.kind, value)
            values[option] = value
        typed[section] = values

    base_path = _resolve(anchor, typed["system"]["base_path"]) or anchor
    typed["system"]["base_path"] = base_path
    for section, options in OPTIONS.items():
        for option, spec in options.items():
            if section == "system" and option == "base_path":
                continue
            if spec.kind == PATH:
                typed[section][option] = _resolve(base_path, typed[section][option])
            elif spec.kind == PATHS:
                typed[section][option] = tuple(_resolve(base_path, p) for p in typed[section][option])
    sections = types.MappingProxyType({name: Section(**values) for name, values in typed.items()})
    return Settings(sections=sections, path=config_path, base_path=base_path)


def secret_options() -> set[tuple[str, str]]:
    """(section, option) pairs whose values must never be logged."""
    return {(s, o) for s, opts in OPTIONS.items() for o, spec in opts.items() if spec.secret}


def public_api_url(settings, versioned: bool = True) -> str:
    """The API's URL as clients and actions should use it: [auth] api_url, else [api] host and port; /v1 added."""
    base = (settings.auth.api_url or f"http://{settings.api.host}:{settings.api.port}").rstrip("/")
    return f"{base}/v1" if versioned else base
