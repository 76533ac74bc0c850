"""The Pack shape: PackDB out as StackStorm shows it."""

from __future__ import annotations

from typing import Any

from st2common.models.api.base import document_dict
from st2common.models.db.pack import PackDB

FIELDS = ("uid", "ref", "name", "description", "keywords", "version", "stackstorm_version",
          "python_versions", "author", "email", "contributors", "files", "path", "dependencies", "system")


def to_api(pack: PackDB) -> dict[str, Any]:
    """pack as GET /packs shows it (null fields dropped)."""
    return document_dict(pack, FIELDS)
