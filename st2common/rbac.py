"""Roles: the built-in system_admin, admin and observer, assigned to users in YAML files.

Assignments follow StackStorm's rbac/assignments layout, one file per user::

    ---
    username: alice
    description: optional
    roles:
      - observer

What each role may do: system_admin and admin anything; observer reads only
(GET, plus the few POSTs that change nothing, such as workflow inspection). A
user with no role may only ask who they are, as in StackStorm where a user
without permissions is refused everything. With ``[rbac] enable = false``
every authenticated user is an admin (StackStorm's no-op backend).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

LOG = logging.getLogger(__name__)

SYSTEM_ADMIN = "system_admin"
ADMIN = "admin"
OBSERVER = "observer"
BUILTIN_ROLES = (SYSTEM_ADMIN, ADMIN, OBSERVER)
ADMIN_ROLES = frozenset({SYSTEM_ADMIN, ADMIN})
ROLE_DESCRIPTIONS = {
    SYSTEM_ADMIN: "Role with all the permissions which can also manage other administrators.",
    ADMIN: "Role with all the permissions.",
    OBSERVER: "Role with view (read-only) permissions on all resources.",
}


@dataclass(frozen=True)
class Assignment:
    """One user's roles, and the file they came from."""

    user: str
    roles: tuple[str, ...]
    source: str
    description: str = ""


def load_assignments(folder: Path) -> dict[str, Assignment]:
    """{user: Assignment} from every *.yaml in folder; a bad file is logged and skipped, never fatal."""
    found: dict[str, Assignment] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            LOG.error("rbac: cannot read %s: %s", path, exc)
            continue
        user, roles = data.get("username"), data.get("roles") or []
        if not isinstance(user, str) or not user or not isinstance(roles, list):
            LOG.error("rbac: %s needs a string 'username' and a list 'roles'", path)
            continue
        unknown = [role for role in roles if role not in BUILTIN_ROLES]
        if unknown:
            LOG.error("rbac: %s assigns unknown roles %s (known: %s); they are ignored",
                      path, unknown, ", ".join(BUILTIN_ROLES))
        known = tuple(role for role in roles if role in BUILTIN_ROLES)
        previous = found.get(user)
        merged = tuple(dict.fromkeys((previous.roles if previous else ()) + known))
        found[user] = Assignment(user, merged, str(path), str(data.get("description") or ""))
    return found


class Roles:
    """Who holds which role, from the assignment files and [system] admin_users; re-read when files change."""

    def __init__(self, settings) -> None:
        self.enabled = settings.rbac.enable
        self.folder = Path(settings.rbac.assignments_path)
        self.admin_users = frozenset(settings.system.admin_users or ())
        self.system_user = settings.system_user.user
        self._stamp: tuple | None = None
        self._assignments: dict[str, Assignment] = {}

    def _current(self) -> dict[str, Assignment]:
        try:
            stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(self.folder.glob("*.yaml")))
        except OSError:
            stamp = ()
        if stamp != self._stamp:
            self._assignments = load_assignments(self.folder)
            self._stamp = stamp
            LOG.info("rbac: %d role assignments loaded from %s", len(self._assignments), self.folder)
        return self._assignments

    def of(self, user: str) -> list[str]:
        """The roles user holds."""
        roles = list(self._current().get(user, Assignment(user, (), "")).roles)
        if (user in self.admin_users or user == self.system_user) and SYSTEM_ADMIN not in roles:
            roles.insert(0, SYSTEM_ADMIN)
        return roles

    def is_admin(self, user: str) -> bool:
        """True when user may do anything (always, with RBAC off)."""
        return not self.enabled or bool(ADMIN_ROLES & set(self.of(user)))

    def may_read(self, user: str) -> bool:
        """True when user may read resources."""
        return not self.enabled or bool(set(self.of(user)) & set(BUILTIN_ROLES))

    def assignments(self) -> dict[str, Assignment]:
        """Every assignment, by user."""
        return dict(self._current())
