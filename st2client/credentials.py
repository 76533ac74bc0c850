"""Which credentials a CLI command runs with, in the order StackStorm's CLI picks them.

1. ``-t/--token`` or ``--api-key`` on the command, else ``ST2_AUTH_TOKEN`` /
   ``ST2_API_KEY`` in the environment, else ``[credentials] api_key`` in the
   config (see :func:`st2client.client.resolve_settings`);
2. else, when the config names ``[credentials] username``, that user's cached
   token ``~/.st2/token-<user>`` while it has more than 15 s left
   (``[cli] cache_token``, on by default);
3. else a new token from ``POST <auth_url>/tokens`` with the configured
   password, cached for the next command (unless ``cache_token`` is off);
4. an auth server that cannot be reached is a warning, and the command goes on
   without a token (the API then answers 401 if it needs one).

The cache file is JSON ``{"token", "expire_timestamp"}`` (seconds since the
epoch, UTC), readable by its owner only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from st2client.client import ConnectionFailed, St2ClientError
from st2client.formatting import parse_isodate

if TYPE_CHECKING:
    from st2client.client import Client

LOG = logging.getLogger(__name__)

CONFIG_DIRECTORY = os.path.join("~", ".st2")
# A cached token this close to its expiry is not used, so that a request does not
# fail because the token lapsed on the way to the server.
TOKEN_GRACE_SECONDS = 15


def config_directory() -> Path:
    """~/.st2, where the CLI keeps its config and cached tokens."""
    return Path(os.path.expanduser(CONFIG_DIRECTORY))


def token_cache_path(username: str) -> Path:
    """The file caching username's token: ~/.st2/token-<username>."""
    return config_directory() / f"token-{username}"


def read_cached_token(username: str, now: float | None = None) -> str | None:
    """username's cached token; None when there is none or it expires within TOKEN_GRACE_SECONDS."""
    path = token_cache_path(username)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        LOG.warning('Unable to retrieve cached token from "%s" (%s). Subsequent requests won\'t use a '
                    "cached token meaning they may be slower.", path, error)
        return None
    try:
        data = json.loads(text)
        token, expires = data["token"], int(data["expire_timestamp"])
    except (ValueError, KeyError, TypeError) as error:
        raise St2ClientError(f'File "{path}" with cached token is corrupted or invalid ({error}). '
                             "Please delete this file") from error
    now = time.time() if now is None else now
    if expires - TOKEN_GRACE_SECONDS < now:
        LOG.debug('Cached token from file "%s" has expired', path)
        return None
    return token


def cache_token(document: Mapping[str, Any]) -> Path | None:
    """Cache a POST /tokens answer ({user, token, expiry}) for its user; the file, or None when unwritable."""
    path = token_cache_path(document["user"])
    expires = int(parse_isodate(document["expiry"]).timestamp())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600 in one step: a chmod after open would leave a window where others can read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"token": document["token"], "expire_timestamp": expires}, handle)
        os.chmod(path, 0o600)
    except OSError as error:
        LOG.warning('Unable to write token to "%s" (%s). Subsequent requests won\'t use a cached token '
                    "meaning they may be slower.", path, error)
        return None
    LOG.debug('Token has been cached in "%s"', path)
    return path


def token_from_config(client: "Client", config: Mapping[str, Mapping[str, Any]]) -> str | None:
    """A token for the config's [credentials] username: the cached one, else a new one (then cached).

    None when no username is configured or the auth server cannot be reached.
    Refused credentials raise the server's HTTPError.
    """
    credentials = config.get("credentials") or {}
    username = credentials.get("username")
    if not username:
        return None
    use_cache = bool((config.get("cli") or {}).get("cache_token", True))
    token = read_cached_token(username) if use_cache else None
    if token:
        LOG.debug('Using cached token of user "%s"', username)
        return token
    try:
        document = client.create_token(username, credentials.get("password") or "")
    except ConnectionFailed as error:
        LOG.warning("Auth API server is not available, skipping authentication.")
        LOG.debug("%s", error)
        return None
    if use_cache:
        cache_token(document)
    return document["token"]
