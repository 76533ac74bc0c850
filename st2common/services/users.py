"""Users in an htpasswd-style flat file, StackStorm's ``flat_file`` auth backend.

One ``name:hash`` per line; blank lines and ``#`` comments are skipped. Only
bcrypt hashes (``$2a$``, ``$2b$``, ``$2y$``, as ``htpasswd -B`` writes) are
accepted: the MD5 and SHA-1 schemes htpasswd also knows are too weak to guard
a remote shell, so such a line is refused with a log line naming the scheme.
The file is re-read when it changes, so users added by hand take effect at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from pathlib import Path

import bcrypt

from st2common.exceptions import ConfigError, ValidationError

LOG = logging.getLogger(__name__)

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_ROUNDS = 12
ADMIN_USER = "st2admin"
ADMIN_PASSWORD_ENV = "ST2_ADMIN_PASSWORD"


def htpasswd_path(settings) -> Path:
    """The flat file's path: backend_kwargs' file_path as StackStorm names it, else [auth] flat_file_path."""
    raw = settings.auth.backend_kwargs
    if raw:
        try:
            kwargs = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"[auth] backend_kwargs is not valid JSON: {exc}") from None
        if isinstance(kwargs, dict) and kwargs.get("file_path"):
            return Path(settings.system.base_path, kwargs["file_path"])
    return Path(settings.auth.flat_file_path)


class FlatFileUsers:
    """Checks passwords against an htpasswd file, re-reading it when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[float, int] | None = None
        self._hashes: dict[str, bytes] = {}

    def _load(self) -> dict[str, bytes]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            LOG.warning("auth: the users file %s does not exist; nobody can log in", self.path)
            return {}
        with self._lock:
            if self._seen != (stat.st_mtime, stat.st_size):
                self._hashes = read_htpasswd(self.path)
                self._seen = (stat.st_mtime, stat.st_size)
            return self._hashes

    def authenticate(self, name: str, password: str) -> bool:
        """True when name is in the file and password matches its bcrypt hash."""
        hashed = self._load().get(name)
        if hashed is None:
            return False
        try:
            return bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            LOG.warning("auth: the hash of user %s in %s is not a valid bcrypt hash", name, self.path)
            return False


def read_htpasswd(path: Path) -> dict[str, bytes]:
    """{user: bcrypt hash} from an htpasswd file; lines with other schemes are logged and skipped."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name:
            LOG.warning("auth: %s line %d is not name:hash; skipped", path, number)
            continue
        if not hashed.startswith(BCRYPT_PREFIXES):
            scheme = hashed[:6] if hashed.startswith(("$", "{")) else "crypt/plain"
            LOG.warning("auth: %s line %d (user %s) uses %s, not bcrypt; skipped", path, number, name, scheme)
            continue
        users[name] = hashed.encode()
    return users


def add_user(path: Path, name: str, password: str, rounds: int = BCRYPT_ROUNDS) -> None:
    """Add name (or replace its password) in the htpasswd file, creating it 0600."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise ValidationError(f'Invalid user name "{name}"', field="name")
    if not password:
        raise ValidationError("The password must not be empty", field="password")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.partition(":")[0].strip() != name]
    text = "\n".join(kept + [f"{name}:{hashed}"]) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def ensure_admin(settings, environ: dict[str, str] | None = None) -> str | None:
    """Create st2admin on a fresh install; the generated password when one was made, else None.

    Fresh means the users file does not exist. The password comes from
    ST2_ADMIN_PASSWORD, or is generated and written to
    var/auth/st2admin.password (0600) for the operator to read once.
    """
    environ = os.environ if environ is None else environ
    path = htpasswd_path(settings)
    if path.exists():
        return None
    password = environ.get(ADMIN_PASSWORD_ENV)
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)
    add_user(path, ADMIN_USER, password)
    assign_admin_role(settings)
    if not generated:
        return None
    secret_file = admin_password_path(settings)
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    return password


def admin_password_path(settings) -> Path:
    """Where a generated st2admin password is kept for the operator."""
    return Path(settings.system.base_path, "var", "auth", f"{ADMIN_USER}.password")


def assign_admin_role(settings) -> None:
    """Write the role assignment file giving st2admin system_admin, unless one exists."""
    folder = Path(settings.rbac.assignments_path)
    target = folder / f"{ADMIN_USER}.yaml"
    if target.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(f"---\nusername: {ADMIN_USER}\ndescription: Created by st2ctl on a fresh install.\n"
                      "roles:\n  - system_admin\n")

