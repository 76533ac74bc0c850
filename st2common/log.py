"""Logging set-up for the services: one format, an AUDIT level, and secret masking."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

AUDIT = 25
logging.addLevelName(AUDIT, "AUDIT")

MASK = "********"
# key=value and "key": "value" forms of secret-looking fields, as StackStorm masks them.
SECRET_KEYS = ("password", "auth_token", "token", "secret", "credentials", "st2_auth_token",
               "api_key", "st2-api-key", "x-auth-token", "private_key", "passphrase")
_SECRET_RE = re.compile(
    r"""(?P<key>["']?(?:%s)["']?\s*[:=]\s*)(?P<quote>["']?)(?P<value>[^"'\s,}&]+)""" % "|".join(
        re.escape(k) for k in SECRET_KEYS),
    re.IGNORECASE,
)
_URL_PASSWORD_RE = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s/]+)(?P<at>@)", re.IGNORECASE)

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s [-] %(message)s"


def mask_secrets(text: str) -> str:
    """text with secret-looking values and URL passwords replaced by ********."""
    # Most lines name no secret key and no URL: a substring test rules that out at a tenth of the
    # regexes' cost. ASCII only: under IGNORECASE the regexes also match a few other letters (Kelvin K).
    if text.isascii() and "://" not in text:
        lowered = text.lower()
        if not any(key in lowered for key in SECRET_KEYS):
            return text
    text = _URL_PASSWORD_RE.sub(lambda m: m.group("pre") + MASK + m.group("at"), text)
    return _SECRET_RE.sub(lambda m: m.group("key") + m.group("quote") + MASK, text)


class SecretMaskingFilter(logging.Filter):
    """Masks secret values in every record's rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup(service: str, settings, stream=None) -> None:
    """Log to stderr (st2ctl redirects it to var/log/<service>.log) at [log] level."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    if settings.log.mask_secrets:
        handler.addFilter(SecretMaskingFilter())
    root.addHandler(handler)
    level = "DEBUG" if settings.system.debug else settings.log.level.upper()
    root.setLevel(level)
    # Libraries that are chatty at INFO.
    for name in ("amqp", "kombu", "pymongo", "urllib3", "eventlet.wsgi.server"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger(__name__).debug("logging for %s set up at %s", service, level)


def log_path(settings, service: str) -> Path:
    """Where st2ctl writes a service's log."""
    return Path(settings.log.path) / f"{service}.log"
